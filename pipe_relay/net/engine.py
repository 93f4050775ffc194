# Byte engine: moves a framed body from one source to k receivers' writers in lockstep, one buffer each.
# Invariant: a chunk is written to every live receiver before the next is read; memory ~ one buffer.
from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Protocol

import trio

from ..core.framing import (
    CRLF,
    LAST_CHUNK,
    Framing,
    chunk_head,
)
from ..errors import TransferError, TransferFailure

Segment = memoryview | bytes


class Source(Protocol):
    """The sender's side of a transfer: payload pieces until the body ends."""

    async def read(self) -> list[Segment]:
        """The next payload pieces (valid until the next call); [] once the body is complete."""
        ...

    @property
    def ready(self) -> bool:
        """Would `read()` return at once (payload already buffered, or the body complete)?"""
        ...

    @property
    def done(self) -> bool:
        """Is the body complete (the next `read()` returns [])?"""
        ...

    @property
    def wire(self) -> list[Segment] | None:
        """The last read's payload already in chunked framing (the sender's own, where it is
        canonical) for chunked receivers, valid until the next read; None: frame it ourselves."""
        ...


async def wait_ready(waiter: Callable[[], Awaitable[None]], idle: float) -> bool:
    """Wait for readiness; False if `idle` seconds (0 = no limit) passed first."""
    if idle <= 0:
        await waiter()
        return True
    with trio.move_on_after(idle):
        await waiter()
        return True
    return False


class Writer(Protocol):
    """Where one receiver's bytes go: a socket, a TLS socket, an HTTP/2 stream, memory."""

    def write_now(self, pieces: list[Segment]) -> int:
        """Write what can go without waiting; the byte count (> 0). BlockingIOError if nothing
        can go now; another OSError if the receiver is gone."""
        ...

    async def wait_writable(self) -> None:
        """Return when `write_now` may take bytes again."""
        ...

    @property
    def splice_fd(self) -> int | None:
        """A plain socket that splice(2) may write to, or None."""
        ...


class SocketWriter:
    """A plain non-blocking socket: `writev`, waits through trio's epoll."""

    __slots__ = ("fd",)

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def __repr__(self) -> str:
        return f"<SocketWriter fd={self.fd}>"

    def write_now(self, pieces: list[Segment]) -> int:
        return os.writev(self.fd, pieces)

    async def wait_writable(self) -> None:
        await trio.lowlevel.wait_writable(self.fd)

    @property
    def splice_fd(self) -> int:
        return self.fd


@dataclass(eq=False)
class Sink:
    """One receiver's side of a transfer: where bytes go and how they are framed."""

    writer: Writer
    framing: Framing
    head: bytes
    """The response head, sent in front of the first bytes."""
    alive: bool = True
    sent: int = 0
    head_sent: bool = False

    def frame(self, plain: list[Segment], chunked: list[Segment]) -> list[Segment]:
        """The head (if not sent yet), then one step as this sink takes it: `chunked` (framed, for
        chunked receivers) or `plain`. The lists are shared between sinks and never changed."""
        body = chunked if self.framing is Framing.CHUNKED else plain
        if self.head_sent:
            return body
        self.head_sent = True
        return [self.head, *body]

    def opening(self) -> list[Segment]:
        if self.head_sent:
            return []
        self.head_sent = True
        return [self.head]

    def closing(self) -> list[Segment]:
        pieces: list[Segment] = []
        if not self.head_sent:
            pieces.append(self.head)
            self.head_sent = True
        if self.framing is Framing.CHUNKED:
            pieces.append(LAST_CHUNK)
        return pieces


class RelayEvents(Protocol):
    def progress(self, moved: int) -> None:
        """`moved` more payload bytes reached every live receiver."""

    async def receiver_dropped(self, sink: Sink, alive: int) -> None:
        """A receiver failed and was dropped; `alive` receivers remain."""


class ByteEngine(Protocol):
    """Moves a body from a source to sinks in lockstep, reporting progress and drops."""

    async def relay(self, source: Source, sinks: Sequence[Sink], events: RelayEvents) -> None:
        """Return when every live sink has the whole body (and its end); raise TransferError."""
        ...


def _advance(pieces: list[Segment], count: int) -> list[Segment]:
    """`pieces` without the `count` bytes written from its front (a new list; `pieces` is kept)."""
    index = 0
    while index < len(pieces) and count >= len(pieces[index]):
        count -= len(pieces[index])
        index += 1
    rest = pieces[index:]
    if rest and count:
        rest[0] = memoryview(rest[0])[count:]
    return rest


async def broadcast(
    sinks: Sequence[Sink],
    build: Callable[[Sink], list[Segment]],
    events: RelayEvents,
    *,
    idle: float,
) -> None:
    """Write `build(sink)` to every live sink, in lockstep: return when all have it (or are dropped).

    Non-blocking `writev` to each first; only the receivers that could not take everything are
    waited for, concurrently. Raises RECEIVERS_GONE when the last one is dropped.
    """
    dropped: list[Sink] = []
    stragglers: list[tuple[Sink, list[Segment]]] = []
    for sink in sinks:
        if not sink.alive:
            continue
        pieces = build(sink)
        if not pieces:
            continue
        try:
            rest = _advance(pieces, sink.writer.write_now(pieces))
        except BlockingIOError:
            rest = pieces
        except OSError:
            sink.alive = False
            dropped.append(sink)
            continue
        if rest:
            stragglers.append((sink, rest))
    if len(stragglers) == 1:
        await _write_rest(*stragglers[0], dropped, idle)
    elif stragglers:
        async with trio.open_nursery() as nursery:
            for sink, rest in stragglers:
                nursery.start_soon(_write_rest, sink, rest, dropped, idle)
    await report_drops(sinks, dropped, events)


async def deliver(
    sinks: Sequence[Sink],
    segments: list[Segment],
    events: RelayEvents,
    *,
    idle: float,
    last: bool = False,
    wire: list[Segment] | None = None,
) -> None:
    """One step of payload to every live sink (in its framing), counted and reported as progress.

    Chunked receivers get `wire` (the step already in chunked framing) if given, else one chunk of
    it. Heads not sent yet go in front, in the same write; `last` (the body is complete) appends
    each sink's end, so a small body is one write per receiver.
    """
    size = sum(len(piece) for piece in segments)
    chunked: list[Segment] = []
    if any(sink.framing is Framing.CHUNKED for sink in sinks):  # (else no chunk framing is made)
        if wire is None:
            wire = [chunk_head(size), *segments, CRLF] if size else []
        chunked = [*wire, LAST_CHUNK] if last else wire
    await broadcast(sinks, partial(Sink.frame, plain=segments, chunked=chunked), events, idle=idle)
    count_sent(sinks, size)
    events.progress(size)


def count_sent(sinks: Sequence[Sink], size: int) -> None:
    for sink in sinks:
        if sink.alive:
            sink.sent += size


async def report_drops(sinks: Sequence[Sink], dropped: list[Sink], events: RelayEvents) -> None:
    alive = sum(1 for s in sinks if s.alive)
    for sink in dropped:
        await events.receiver_dropped(sink, alive)
    if dropped and alive == 0:
        raise TransferError(TransferFailure.RECEIVERS_GONE)


async def _write_rest(sink: Sink, pieces: list[Segment], dropped: list[Sink], idle: float) -> None:
    """Write the rest to one slow receiver; drop it if it fails or stalls past the idle limit."""
    writer = sink.writer
    while pieces:
        if not await wait_ready(writer.wait_writable, idle):
            break
        try:
            pieces = _advance(pieces, writer.write_now(pieces))
        except BlockingIOError:
            continue
        except OSError:
            break
    else:
        return
    sink.alive = False
    dropped.append(sink)


class BufferEngine:
    """The portable engine: one reusable buffer per transfer, `writev` to every receiver."""

    name = "buffer"

    def __init__(self, *, idle_timeout: float) -> None:
        self.idle_timeout = idle_timeout

    def __repr__(self) -> str:
        return "<BufferEngine>"

    async def relay(self, source: Source, sinks: Sequence[Sink], events: RelayEvents) -> None:
        idle = self.idle_timeout
        if not source.ready:  # receivers get their heads now, not when the sender's first bytes come
            await broadcast(sinks, Sink.opening, events, idle=idle)
        while True:
            segments = await source.read()
            if not segments:
                break
            last = source.done
            await deliver(sinks, segments, events, idle=idle, last=last, wire=source.wire)
            if last:
                return
        await broadcast(sinks, Sink.closing, events, idle=idle)
