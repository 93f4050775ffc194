# An in-memory front end: a Link whose parties have no socket, for unit tests of the hub and the relay.
# Invariant: it offers only what net.link's protocols ask (no fd, no splice), so it proves the seam.
"""What a TLS socket or an HTTP/2 stream will be to the hub: `MemoryLink` implements `Link`,
`MemoryBody` the sender's `Body` (fed chunk by chunk, bounded: one chunk in flight), `MemoryWriter`
a receiver's `Writer` (it can be paused, to stand for a receiver that stops reading, or cut)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field

import trio

from pipe_relay.core.framing import Framing
from pipe_relay.core.routing import Receive, Request, Send, route
from pipe_relay.errors import PipeError, TransferError, TransferFailure
from pipe_relay.net.engine import Segment, Sink
from pipe_relay.net.link import CloseMode, Headers
from pipe_relay.net.telemetry import Exchange


class MemoryWriter:
    """A receiver's response body in memory. `paused`: it takes nothing (a receiver that stopped
    reading); `cut()`: its client is gone, the next write fails."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.paused = False
        self.gone = False
        self._room = trio.Event()

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    def write_now(self, pieces: list[Segment]) -> int:
        if self.gone:
            raise BrokenPipeError("receiver gone")
        if self.paused and any(pieces):  # (an empty head still goes: it stands for one that fits)
            raise BlockingIOError
        count = 0
        for piece in pieces:  # (an empty piece, such as this link's empty head, counts 0, as in writev)
            self.data += piece
            count += len(piece)
        return count

    async def wait_writable(self) -> None:
        while self.paused and not self.gone:
            await self._room.wait()
            self._room = trio.Event()

    def resume(self) -> None:
        self.paused = False
        self._room.set()

    def cut(self) -> None:
        self.gone = True
        self._room.set()

    @property
    def splice_fd(self) -> None:
        return None


class MemoryBody:
    """A sender's body fed by the test with `feed`, ended with `end` (complete) or `cut` (the sender
    is gone). One chunk waits at most: `feed` blocks until the relay took the previous one."""

    def __init__(self) -> None:
        self._send, self._receive = trio.open_memory_channel[bytes | None](0)
        self.done = False
        self.read_chunks = 0
        self.released = False
        self._cut = False

    ready = False
    wire = None
    complete_in_prefix = False

    async def feed(self, data: bytes) -> None:
        await self._send.send(data)

    async def end(self) -> None:
        await self._send.send(None)

    async def cut(self) -> None:
        self._cut = True
        await self._send.aclose()

    async def read(self) -> list[Segment]:
        if self.done:
            return []
        try:
            data = await self._receive.receive()
        except trio.EndOfChannel:
            raise TransferError(TransferFailure.SENDER_GONE) from None
        if data is None:
            self.done = True
            return []
        self.read_chunks += 1
        return [data]

    def release(self) -> None:
        self.released = True

    async def drain(self, *, limit: int, seconds: float) -> None:
        with trio.move_on_after(seconds):
            while not self.done:
                await self.read()


class MemoryStream:
    """A streamed response (status lines, events) collected in memory."""

    def __init__(self, link: MemoryLink, content_type: str) -> None:
        self.link = link
        self.content_type = content_type
        self.data = bytearray()
        self.ended = False

    async def send(self, data: bytes, *, end: bool = False) -> bool:
        if self.link.left:
            return False
        assert not self.ended, "data after the end"
        self.data += data
        self.ended = end
        return True


@dataclass
class MemoryLink:
    """A party's connection in memory: what the hub said to it, and how it was told to close."""

    body: MemoryBody = field(default_factory=MemoryBody)
    writer: MemoryWriter = field(default_factory=MemoryWriter)
    close_mode: CloseMode = CloseMode.NORMAL
    exchange: Exchange = field(default_factory=Exchange)
    left: bool = False
    errors: list[PipeError] = field(default_factory=list)
    stream: MemoryStream | None = None
    response_headers: Headers | None = None
    _gone: trio.Event = field(default_factory=trio.Event)
    left_unseen: bool = False

    hangup_fd = None

    def leave(self) -> None:
        """The client hangs up (a waiting party notices at the hub's next tick)."""
        self.left = True
        self._gone.set()

    def leave_unseen(self) -> None:
        """The client hangs up where nobody can see it (a close queued behind unread body bytes):
        only `still_there`, the answer to a status line, finds out."""
        self.left_unseen = True

    def peer_closed(self) -> bool:
        return self.left

    async def still_there(self) -> bool:
        await trio.lowlevel.checkpoint()
        return not (self.left or self.left_unseen)

    def on_gone(self, callback: Callable[[], None]) -> None:
        """(Never called: like a link that cannot tell, a party notices `leave` at the next tick.)"""

    async def wait_gone(self) -> None:
        await self._gone.wait()

    async def send_error(self, error: PipeError, origin: str | None, *, last: bool = False) -> None:
        self.errors.append(error)

    def open_stream(
        self, request: Request, content_type: str, *, extra: Headers = (), answer_continue: bool = False
    ) -> MemoryStream:
        self.stream = MemoryStream(self, content_type)
        return self.stream

    def open_body(self, request: Request, *, buffer_size: int, idle_timeout: float) -> MemoryBody:
        return self.body

    def open_response(
        self,
        request: Request,
        content_length: int | None,
        headers: Callable[[Headers], Headers],
        *,
        status: int = 200,
    ) -> Sink:
        framing = () if content_length is None else (("Content-Length", str(content_length)),)
        self.response_headers = headers(framing)
        return Sink(self.writer, Framing.CLOSE, b"")

    @property
    def status(self) -> str:
        """The status lines said to this party, as text."""
        return bytes(self.stream.data).decode() if self.stream else ""


def pipe_request(method: str, target: str, *headers: tuple[str, str]) -> tuple[Request, Send | Receive]:
    """A request head as the HTTP/1.1 front end would hand it over, and its routing decision."""
    request = Request(method, target, (("host", "memory"), *headers))
    decision = route(request, max_path_length=1024, max_receivers=16)
    assert isinstance(decision, Send | Receive)
    return request, decision
