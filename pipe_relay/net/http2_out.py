# An HTTP/2 connection's outbound side: h2's frames in one buffer, written as far as the socket takes them.
# Invariant: bytes leave in the order they were made; a flusher task runs while any wait for the socket.
"""`Outbound` holds what the socket did not take at once. Writers (the streams) look at `buffered`
and wait for `room()`, which opens when a window opens or the buffer has drained; the connection's
reader waits for `drained()` before it reads more from a client that leaves our answers unread."""

from __future__ import annotations

import socket
from collections.abc import Callable

import h2.connection
import trio

from .tls import TlsSocket


class Outbound:
    """The bytes on their way to one HTTP/2 client."""

    def __init__(
        self, sock: socket.socket | TlsSocket, conn: h2.connection.H2Connection, on_broken: Callable[[], None]
    ) -> None:
        self._sock = sock
        self._h2 = conn
        self._on_broken = on_broken
        self._out = bytearray()
        self._waiting = trio.Event()  # the flusher's: set when bytes wait for the socket
        self._room = trio.Event()  # writers': set when a window opens or the buffer drains
        self.broken = False
        """The socket failed: nothing more can be written to it."""

    def __repr__(self) -> str:
        return f"<Outbound buffered={len(self._out)} broken={self.broken}>"

    @property
    def buffered(self) -> int:
        return len(self._out)

    def flush(self, extra: bytes = b"") -> None:
        """Move h2's frames (then `extra`: a frame of ours) to the buffer; write what the socket takes."""
        data = self._h2.data_to_send() + extra
        if self.broken:
            return
        if self._out:  # (what waits goes first: the new frames queue behind it)
            self._out += data
            data = bytes(self._out)
            self._out.clear()
        if not data:
            return
        try:
            sent = self._sock.send(data)
        except BlockingIOError:
            sent = 0
        except OSError:
            self.broken = True
            self._on_broken()
            return
        if sent < len(data):
            self._out += memoryview(data)[sent:]
            self._waiting.set()
        else:
            self.wake()

    async def run(self) -> None:
        """The flusher: writes what waits whenever the socket takes more."""
        while True:
            await self._waiting.wait()
            self._waiting = trio.Event()
            while self._out and not self.broken:
                await trio.lowlevel.wait_writable(self._sock)
                self.flush()
            self.wake()

    def wake(self) -> None:
        """Writers look again (a window opened, the buffer drained, a stream ended)."""
        self._room.set()
        self._room = trio.Event()

    async def room(self) -> None:
        await self._room.wait()

    async def drained(self, limit: int, seconds: float) -> bool:
        """Wait until at most `limit` bytes wait for the socket: False if `seconds` pass first."""
        with trio.move_on_after(seconds):
            while len(self._out) > limit and not self.broken:
                await self._room.wait()
            return True
        return False

    async def drain(self, seconds: float) -> None:
        """Before the close: let what is buffered go out (a bounded wait)."""
        with trio.move_on_after(seconds):
            while self._out and not self.broken:
                await trio.lowlevel.wait_writable(self._sock)
                self.flush()
