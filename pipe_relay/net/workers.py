# A worker among siblings: which pipes it owns, and the Unix sockets that move connections to an owner.
# Invariant: a connection handed off is the owner's alone (ours is closed, never shut down, once sent).
"""Each worker listens on two Unix sockets in the supervisor's private directory (mode 0700, so only
siblings connect): `handoff-I.sock` (SOCK_SEQPACKET) takes a plain connection's descriptor with the
bytes already read from it, one message each (SCM_RIGHTS); `carry-I.sock` (SOCK_STREAM) takes one
carried request per connection (a TLS or HTTP/2 client cannot change process), after a first line
that names the real client and its protocol: `PIPE-RELAY-CARRY <address> <http1|tls|h2|h2c|unix>`."""

from __future__ import annotations

import contextlib
import json
import mmap
import os
import socket
import struct
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import trio

from ..core import tally
from ..core.owners import owner_of
from ..core.quotas import KINDS
from ..core.registry import RETRY_AFTER_SECONDS
from ..core.shared_counts import SharedCounts
from ..errors import ErrorCode, PipeError, pipe_error

ENV = "PIPE_RELAY_WORKER"
HEADER = 64
"""Bytes at the start of the shared memory, spare (each worker says it is ready in its tally row)."""
SLOTS = 16384
"""Rows of the shared per-client table (clients sharing a row share its counts)."""
MESSAGE_LIMIT = 256 * 1024
"""A hand-off message: the head and what came with it (each at most 64 KiB), and the address."""
CONNECT_TIMEOUT = 2.0
"""How long a hand-off waits for an owner that is being restarted, or that is slow to take what it
was sent (the queue to an owner holds its channel's send buffer: 2 * MESSAGE_LIMIT)."""
PREAMBLE_LIMIT = 512
_PEER = struct.Struct("!H")


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    """What the supervisor tells a worker: who it is, its siblings' directory, what it inherits."""

    index: int
    count: int
    directory: str
    plain: tuple[int, ...]
    secure: tuple[int, ...]
    unix: tuple[int, ...]
    shared_fd: int
    shared_key: str
    ready_fd: int
    """A pipe to the supervisor: one byte once this worker accepts connections."""
    lifeline_fd: int
    """A pipe from the supervisor, never written: its end means the supervisor is gone."""
    admin: tuple[int, ...] = ()
    """The admin listener's sockets (every worker serves it)."""

    def to_env(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_env(cls, text: str) -> WorkerSpec:
        fields = json.loads(text)
        for name in ("plain", "secure", "unix", "admin"):
            fields[name] = tuple(fields[name])
        return cls(**fields)

    def socket_path(self, kind: str, index: int) -> str:
        return str(Path(self.directory) / f"{kind}-{index}.sock")


def _tally_offset(workers: int) -> int:
    return HEADER + SharedCounts.size(slots=SLOTS, kinds=KINDS, workers=workers)


def shared_size(workers: int) -> int:
    """The header, the per-client table, then each worker's row of the tally (the metrics)."""
    return _tally_offset(workers) + workers * tally.SLOTS * 8


def tally_row(memory: mmap.mmap, index: int, workers: int) -> memoryview:
    """Worker `index`'s row of the tally: int64 slots only it writes, any worker reads."""
    start = _tally_offset(workers) + index * tally.SLOTS * 8
    return memoryview(memory)[start : start + tally.SLOTS * 8].cast("q")


def map_shared(fd: int, workers: int) -> mmap.mmap:
    return mmap.mmap(fd, shared_size(workers))


OnConnection = Callable[[socket.socket, str, bytes], None]
OnCarried = Callable[[socket.socket], Awaitable[None]]


class Siblings:
    """This worker's view of the others: who owns a key, and the ways to an owner."""

    def __init__(self, spec: WorkerSpec) -> None:
        self.spec = spec
        self.index = spec.index
        self.count = spec.count
        self._memory = map_shared(spec.shared_fd, spec.count)
        self.counts = SharedCounts(
            memoryview(self._memory)[HEADER:],
            slots=SLOTS,
            kinds=KINDS,
            workers=spec.count,
            worker=spec.index,
            key=bytes.fromhex(spec.shared_key),
        )
        self.counts.clear_worker(spec.index)  # (a restarted worker: what its former self held is gone)
        self._channels: dict[int, socket.socket] = {}
        self._sending: dict[int, trio.Lock] = {}
        """One sender at a time to an owner: waiting for room on a channel is one task's, in trio, and
        two tasks connecting at once would each make a channel."""
        self.handed_off = 0
        self.taken = 0
        self.carried = 0

    def __repr__(self) -> str:
        return f"<Siblings worker {self.index} of {self.count}>"

    @property
    def alive(self) -> int:
        """The workers that accept connections now: started and ready, not yet ended."""
        return sum(row[tally.READY] for row in self.tally_rows())

    def tally_row(self, index: int | None = None) -> memoryview:
        return tally_row(self._memory, self.index if index is None else index, self.count)

    def tally_rows(self) -> list[memoryview]:
        """Every worker's row (a dead worker's counters stay; its gauges were zeroed)."""
        return [self.tally_row(index) for index in range(self.count)]

    def facts(self) -> dict[str, int]:
        """For the health document: which worker answers, of how many, and what moved between them."""
        return {
            "index": self.index,
            "workers": self.count,
            "alive": self.alive,
            "handedOff": self.handed_off,
            "taken": self.taken,
            "carried": self.carried,
        }

    def owner(self, key: str) -> int:
        return owner_of(key, self.count)

    def owns(self, key: str) -> bool:
        return self.owner(key) == self.index

    # sending ---------------------------------------------------------------------------------

    async def hand_off(self, owner: int, sock: socket.socket, data: bytes, peer: str) -> bool:
        """Give `sock` (and `data`, read from it already) to `owner`. False if the owner cannot be
        reached in time (then the caller still has the connection and answers it)."""
        encoded = peer.encode("utf-8", "surrogateescape")
        message = _PEER.pack(len(encoded)) + encoded + data
        sending = self._sending.setdefault(owner, trio.Lock())
        with trio.move_on_after(CONNECT_TIMEOUT):
            async with sending:
                for _ in range(2):  # (a cached channel to an owner that was restarted fails once)
                    channel = await self._channel(owner)
                    if channel is None:
                        return False
                    try:
                        await _send_with_fd(channel, message, sock.fileno())
                    except OSError:
                        self._drop(owner)
                        continue
                    self.handed_off += 1
                    return True
        return False

    async def _channel(self, owner: int) -> socket.socket | None:
        channel = self._channels.get(owner)
        if channel is not None:
            return channel
        channel = await _connect(socket.SOCK_SEQPACKET, self.spec.socket_path("handoff", owner))
        if channel is not None:
            channel.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 2 * MESSAGE_LIMIT)
            self._channels[owner] = channel
        return channel

    def _drop(self, owner: int) -> None:
        channel = self._channels.pop(owner, None)
        if channel is not None:
            trio.lowlevel.notify_closing(channel)
            channel.close()

    async def carry_to(self, owner: int, peer: str, protocol: str) -> socket.socket | None:
        """A new connection to `owner`'s carry socket, its first line sent; None if unreachable."""
        sock = await _connect(socket.SOCK_STREAM, self.spec.socket_path("carry", owner))
        if sock is None:
            return None
        line = f"PIPE-RELAY-CARRY {peer or '-'} {protocol}\r\n".encode("utf-8", "surrogateescape")
        try:
            sock.send(line)  # (a fresh socket's buffer takes a short line whole)
        except OSError:
            sock.close()
            return None
        self.carried += 1
        return sock

    def close(self) -> None:
        for owner in list(self._channels):
            self._drop(owner)

    # receiving -------------------------------------------------------------------------------

    async def run_inboxes(
        self,
        on_connection: OnConnection,
        on_carried: OnCarried,
        nursery: trio.Nursery,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Take siblings' hand-offs and carried requests until cancelled; each sibling's channel and
        each carried connection runs in `nursery` (the server's connections')."""
        handoff = _listen(socket.SOCK_SEQPACKET, self.spec.socket_path("handoff", self.index))
        carry = _listen(socket.SOCK_STREAM, self.spec.socket_path("carry", self.index))
        try:
            async with trio.open_nursery() as accepting:
                accepting.start_soon(_accept, handoff, nursery, partial(self._read_handoffs, on_connection))
                accepting.start_soon(_accept, carry, nursery, on_carried)
                task_status.started()
        finally:
            for sock in (handoff, carry):
                sock.close()

    async def _read_handoffs(self, on_connection: OnConnection, channel: socket.socket) -> None:
        """One sibling's hand-offs, one message each, until it closes its end."""
        try:
            while True:
                try:
                    message, fds, _, _ = socket.recv_fds(channel, MESSAGE_LIMIT, 1)
                except BlockingIOError:
                    await trio.lowlevel.wait_readable(channel)
                    continue
                if not message and not fds:
                    return
                if not fds:
                    continue
                (length,) = _PEER.unpack_from(message)
                peer = message[_PEER.size : _PEER.size + length].decode("utf-8", "surrogateescape")
                sock = socket.socket(fileno=fds[0])
                sock.setblocking(False)
                self.taken += 1
                on_connection(sock, peer, message[_PEER.size + length :])
                await trio.lowlevel.checkpoint()
        except OSError:
            return
        finally:
            channel.close()


async def _accept(
    listener: socket.socket, nursery: trio.Nursery, handle: Callable[[socket.socket], Awaitable[None]]
) -> None:
    while True:
        try:
            sock, _ = listener.accept()
        except BlockingIOError:
            await trio.lowlevel.wait_readable(listener)
            continue
        except OSError:
            await trio.sleep(0.1)  # (out of descriptors: back off)
            continue
        sock.setblocking(False)
        nursery.start_soon(handle, sock)


async def _send_with_fd(channel: socket.socket, message: bytes, fd: int) -> None:
    """One message and a descriptor, once the channel has room (its caller is its only sender)."""
    while True:
        try:
            socket.send_fds(channel, [message], [fd])
            return
        except BlockingIOError:
            await trio.lowlevel.wait_writable(channel)


def _listen(kind: int, path: str) -> socket.socket:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    sock = socket.socket(socket.AF_UNIX, kind)
    sock.bind(path)
    sock.listen(128)
    sock.setblocking(False)
    return sock


async def _connect(kind: int, path: str) -> socket.socket | None:
    """Connect to a sibling's socket, waiting up to CONNECT_TIMEOUT for one being restarted."""
    with trio.move_on_after(CONNECT_TIMEOUT):
        while True:
            sock = socket.socket(socket.AF_UNIX, kind)
            sock.setblocking(False)
            try:
                sock.connect(path)
                return sock
            except (FileNotFoundError, ConnectionRefusedError):
                sock.close()
                await trio.sleep(0.05)
            except BlockingIOError:
                await trio.lowlevel.wait_writable(sock)
                if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
                    return sock
                sock.close()
                await trio.sleep(0.05)
    return None


def owner_unavailable() -> PipeError:
    """The answer when the worker that owns a pipe cannot be reached (being restarted)."""
    return pipe_error(ErrorCode.WORKER_UNAVAILABLE, ("Retry-After", RETRY_AFTER_SECONDS))


async def read_to_end(fd: int) -> None:
    """Read and drop what comes on a pipe until it ends: the lifeline (its end: the supervisor is
    gone, killed or crashed), or the ready pipe (restarted workers say they are ready too)."""
    os.set_blocking(fd, False)
    while True:
        await trio.lowlevel.wait_readable(fd)
        try:
            if not os.read(fd, 64):
                return
        except BlockingIOError:
            continue


async def read_preamble(sock: socket.socket, deadline: float) -> tuple[str, str, bytes] | None:
    """A carried connection's first line: (client address, its protocol, bytes read past it)."""
    data = b""
    with trio.move_on_at(deadline):
        while b"\r\n" not in data and len(data) < PREAMBLE_LIMIT:
            try:
                chunk = sock.recv(4096)
            except BlockingIOError:
                await trio.lowlevel.wait_readable(sock)
                continue
            if not chunk:
                return None
            data += chunk
    line, sep, rest = data.partition(b"\r\n")
    parts = line.decode("utf-8", "surrogateescape").split(" ")
    if not sep or len(parts) != 3 or parts[0] != "PIPE-RELAY-CARRY" or parts[2] not in tally.PROTOCOLS:
        return None
    return ("" if parts[1] == "-" else parts[1]), parts[2], rest
