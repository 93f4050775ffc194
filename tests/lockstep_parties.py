# The lockstep tests' raw parties: a sender that counts what its socket took, readers that hash as they go.
# Invariant: no body is held (readers keep a digest and counts); kernel figures come from /proc, TCP_INFO.
from __future__ import annotations

import hashlib
import os
import random
import socket
import struct
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from tests.clients import RawClient, Relay

MiB = 1 << 20
BODY_SIZE = 64 * MiB
PIECE = 256 * 1024
"""The raw sender writes (and, chunked, frames) its body in pieces of this size."""
STALLED_RCVBUF = 4096
"""SO_RCVBUF of a stalled receiver, set before it connects (Linux doubles it: 8 KiB)."""
SENDER_SNDBUF = 64 * 1024
COMPLETE = b"[INFO] Upload complete.\n[INFO] Transfer complete.\n"


@dataclass(frozen=True)
class Body:
    data: bytes
    sha256: str

    def prefix(self, size: int) -> Body:
        return Body(self.data[:size], hashlib.sha256(self.data[:size]).hexdigest())


def random_body() -> Body:
    """The BODY_SIZE body, the same bytes every run."""
    data = random.Random(0x10C57E9).randbytes(BODY_SIZE)
    return Body(data, hashlib.sha256(data).hexdigest())


def receive_queue(local: tuple[str, int], remote: tuple[str, int]) -> int:
    """Bytes in the receive queue of the IPv4 TCP socket `local` -> `remote` (/proc/net/tcp)."""

    def hexaddr(addr: tuple[str, int]) -> str:
        packed = int.from_bytes(socket.inet_aton(addr[0]), sys.byteorder)
        return f"{packed:08X}:{addr[1]:04X}"

    want = [hexaddr(local), hexaddr(remote)]
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1:3] == want:
            return int(fields[4].split(":")[1], 16)
    raise AssertionError(f"no TCP socket {local} -> {remote}")


def not_sent(sock: trio.socket.SocketType) -> int:
    """Bytes written to `sock` that have not gone out yet: tcpi_notsent_bytes, at byte 144 of
    Linux's struct tcp_info (which only grows at its end)."""
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
    return int(struct.unpack_from("I", info, 144)[0])


@dataclass
class Reader:
    """A raw receiver's body, hashed as it comes (never held), with its progress."""

    client: RawClient
    got: int = 0
    moved_at: float = field(default_factory=trio.current_time)
    longest_gap: float = 0.0
    digest: Any = field(default_factory=hashlib.sha256)

    async def _payload(self, count: int) -> None:
        while count:
            piece = await self.client.read_some(min(count, MiB))
            now = trio.current_time()
            if self.got:
                self.longest_gap = max(self.longest_gap, now - self.moved_at)
            self.digest.update(piece)
            self.got += len(piece)
            self.moved_at = now
            count -= len(piece)

    async def read_body(self, length: int, *, chunked: bool) -> None:
        """The whole body (`length` payload bytes), then a clean close right after its end."""
        client = self.client
        if chunked:
            while size := int(await client.read_until(b"\r\n"), 16):
                await self._payload(size)
                assert await client.read_exactly(2) == b"\r\n"
            assert await client.read_exactly(2) == b"\r\n"
        else:
            await self._payload(length)
        assert self.got == length
        assert await client.read_to_end() == (b"", True)


@dataclass
class Sender:
    """A raw sender that counts the bytes its socket took."""

    client: RawClient
    sent: int = 0

    async def _send(self, data: bytes | memoryview) -> None:
        # A plain write after the wait, not `await sock.send()`: trio yields after a send that
        # succeeded at once, and a test looking then would see bytes the kernel took but `sent`
        # not yet counting them. Here nothing runs between the write and the count.
        fd = self.client.stream.socket.fileno()
        view = memoryview(data)
        while view:
            await trio.lowlevel.wait_writable(fd)
            try:
                count = os.write(fd, view)
            except BlockingIOError:
                continue
            self.sent += count
            view = view[count:]

    async def send_body(self, data: bytes, *, chunked: bool) -> None:
        view = memoryview(data)
        for start in range(0, len(data), PIECE):
            piece = view[start : start + PIECE]
            await self._send(b"".join((b"%x\r\n" % len(piece), piece, b"\r\n")) if chunked else piece)
        if chunked:
            await self._send(b"0\r\n\r\n")

    def server_read(self, relay: Relay) -> int:
        """Bytes of the body that the server process has read: what left this socket, less what
        waits in the server's receive queue. (Not what this socket took less what it holds: on
        loopback, bytes not acked yet are already in the server's queue, and would count twice.)"""
        sock = self.client.stream.socket
        server = ((relay.host, relay.port), sock.getsockname())
        # The two kernel figures are read a moment apart, and bytes may move from our send queue
        # into the server's receive queue in between (counted in both: an under-count). Read
        # until our queue held still across the other reading.
        for _ in range(100):
            before = not_sent(sock)
            queued = receive_queue(*server)
            if not_sent(sock) == before:
                break
        else:
            raise AssertionError("the sender's queue never held still")
        return self.sent - before - queued


def streaming_lines(n: int) -> bytes:
    """The sender's status lines up to streaming (receivers came first)."""
    count = b"[INFO] %d of %d receiver(s) connected.\n" % (n, n) if n > 1 else b""
    return count + b"[INFO] Streaming to %d receiver(s)...\n" % n
