# The soak run's wire tools: the body pattern and its checker, a strict dechunker, a raw socket that
# can die with a FIN or a RST, curl processes. Invariant: every check is exact (byte for byte, framing).
from __future__ import annotations

import random
import socket
import struct
import subprocess
from pathlib import Path

import trio

HOST = "127.0.0.1"
PATTERN_LEN = (1 << 20) + 7
"""Not a power of two: a repeated, dropped or misplaced step of a body never lines up with it."""
RECV_SIZE = 256 * 1024
MAX_LINE = 4096


class Pattern:
    """The bytes of every body: body `shift` at offset p is pattern[(shift + p) % PATTERN_LEN]."""

    def __init__(self, seed: int) -> None:
        block = random.Random(seed).randbytes(PATTERN_LEN)
        self.view = memoryview(block + block)

    def piece(self, shift: int, pos: int, limit: int) -> memoryview:
        start = (shift + pos) % PATTERN_LEN
        return self.view[start : start + min(limit, PATTERN_LEN)]

    def write_file(self, path: Path, shift: int, size: int) -> None:
        with path.open("wb") as out:
            pos = 0
            while pos < size:
                piece = self.piece(shift, pos, size - pos)
                out.write(piece)
                pos += len(piece)


class Checker:
    """Compares a received body, piece by piece, with the one that was sent."""

    def __init__(self, pattern: Pattern, shift: int, size: int) -> None:
        self.pattern, self.shift, self.size = pattern, shift, size
        self.pos = 0
        self.ok = True

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data)
        while view and self.ok:
            if self.pos >= self.size:
                self.ok = False  # more bytes than were sent
                break
            expected = self.pattern.piece(self.shift, self.pos, min(len(view), self.size - self.pos))
            if expected != view[: len(expected)]:
                self.ok = False
            self.pos += len(expected)
            view = view[len(expected) :]
        self.pos += len(view)

    @property
    def correct(self) -> bool:
        return self.ok and self.pos == self.size


class Dechunker:
    """Strict incremental `Transfer-Encoding: chunked` decoding; `done` after the last chunk's blank line."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.left = 0
        self.state = "size"
        self.done = False

    def feed(self, data: bytes) -> list[bytes]:
        self.buf += data
        out: list[bytes] = []
        buf = self.buf
        while not self.done:
            if self.state == "data":
                if not buf:
                    break
                take = min(self.left, len(buf))
                out.append(bytes(buf[:take]))
                del buf[:take]
                self.left -= take
                if not self.left:
                    self.state = "crlf"
                continue
            if self.state == "crlf":
                if len(buf) < 2:
                    break
                if buf[:2] != b"\r\n":
                    raise ValueError("chunk data not followed by CRLF")
                del buf[:2]
                self.state = "size"
                continue
            end = buf.find(b"\r\n")
            if end < 0:
                if len(buf) > MAX_LINE:
                    raise ValueError("chunk line too long")
                break
            line = bytes(buf[:end])
            del buf[: end + 2]
            if self.state == "trailer":
                self.done = not line
                continue
            size_text = line.split(b";")[0]
            if not size_text or size_text.strip(b"0123456789abcdefABCDEF"):
                raise ValueError(f"bad chunk size line {line[:40]!r}")
            self.left = int(size_text, 16)
            self.state = "data" if self.left else "trailer"
        return out


def parse_head(head: bytes) -> tuple[int, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    return status, headers


class Conn:
    """A non-blocking stdlib socket driven by trio's waits; `kill` ends it with a FIN or a RST."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = bytearray()

    @classmethod
    async def open(cls, port: int) -> Conn:
        sock = socket.socket()
        sock.setblocking(False)
        try:
            sock.connect((HOST, port))
        except BlockingIOError:
            await trio.lowlevel.wait_writable(sock)
            error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if error:
                sock.close()
                raise OSError(error, "connect failed") from None
        return cls(sock)

    async def send_all(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        while view:
            try:
                sent = self.sock.send(view)
            except BlockingIOError:
                await trio.lowlevel.wait_writable(self.sock)
                continue
            view = view[sent:]

    async def recv(self) -> bytes:
        """Bytes, b"" at a clean end; ConnectionResetError on a reset."""
        if self.buf:
            out = bytes(self.buf)
            self.buf.clear()
            return out
        while True:
            try:
                return self.sock.recv(RECV_SIZE)
            except BlockingIOError:
                await trio.lowlevel.wait_readable(self.sock)

    def pending(self) -> bool:
        """Are bytes already here (buffered or in the kernel)?"""
        if self.buf:
            return True
        try:
            return bool(self.sock.recv(1, socket.MSG_PEEK))
        except BlockingIOError:
            return False
        except OSError:
            return True

    async def read_until(self, marker: bytes, start: int = 0) -> int:
        """Read into `buf` until `marker` is in it (after `start`); the index just past it."""
        while marker not in self.buf[start:]:
            while True:
                try:
                    data = self.sock.recv(RECV_SIZE)
                    break
                except BlockingIOError:
                    await trio.lowlevel.wait_readable(self.sock)
            if not data:
                raise EOFError(f"closed before {marker!r}")
            self.buf += data
        return self.buf.index(marker, start) + len(marker)

    async def read_head(self) -> bytes:
        end = await self.read_until(b"\r\n\r\n")
        head = bytes(self.buf[:end])
        del self.buf[:end]
        return head

    def kill(self, how: str) -> None:
        if how == "rst":
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        else:  # drain what is here so close() sends a FIN, not a reset for unread data
            try:
                while self.sock.recv(RECV_SIZE):
                    pass
            except OSError:
                pass
        self.sock.close()

    def close(self) -> None:
        self.sock.close()


async def open_curl(command: list[str], stdin: bool = False) -> trio.Process:
    return await trio.lowlevel.open_process(
        command,
        stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


async def first_of(*events: trio.Event) -> None:
    """Wait until any of `events` is set."""
    async with trio.open_nursery() as nursery:
        for event in events:

            async def wait(event: trio.Event = event) -> None:
                await event.wait()
                nursery.cancel_scope.cancel()

            nursery.start_soon(wait)


async def collect(
    stream: trio.abc.ReceiveStream | None, into: bytearray, marker: bytes, seen: trio.Event
) -> None:
    """Read `stream` to its end into `into`; set `seen` once `marker` is in it."""
    assert stream is not None
    while data := await stream.receive_some(65536):
        into += data
        if marker in into:
            seen.set()
