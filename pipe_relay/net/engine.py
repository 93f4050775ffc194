# Byte engine: moves a framed body from one socket to k sockets in lockstep, one buffer per transfer.
# Invariant: a chunk is written to every live receiver before the next is read; memory ~ one buffer.
from __future__ import annotations

import ctypes
import ctypes.util
import os
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Protocol

import trio

from ..core.forms import FormExtractor, PartData, PartEnd, PartStart
from ..core.framing import (
    CRLF,
    LAST_CHUNK,
    BodyDecoder,
    ChunkedDecoder,
    Framing,
    FramingError,
    LengthDecoder,
    chunk_head,
)
from ..errors import PipeError, TransferError, TransferFailure

Segment = memoryview | bytes
INITIAL_BUFFER = 64 * 1024
MAX_SEGMENTS = 32
"""More payload pieces than this in one read are joined into one (writev takes at most 1024)."""
FAST_READ = 32 * 1024
"""A read at least this big means the sender outruns us: from then on, wait for fuller reads."""
SENDER_PATIENCE = 0.005
"""How long a read of a fast sender waits for a fuller socket before it takes what is there."""


def tune_malloc() -> None:
    """Ask glibc not to mmap/trim large blocks: fresh large allocations page-fault every time."""
    name = ctypes.util.find_library("c")
    if name is None:
        return
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return
    m_trim_threshold, m_mmap_threshold = -1, -3
    mallopt(m_mmap_threshold, 32 * 1024 * 1024)
    mallopt(m_trim_threshold, 128 * 1024 * 1024)


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


async def wait_ready(waiter: Callable[[int], Awaitable[None]], fd: int, idle: float) -> bool:
    """Wait for fd readiness; False if `idle` seconds (0 = no limit) passed first."""
    if idle <= 0:
        await waiter(fd)
        return True
    with trio.move_on_after(idle):
        await waiter(fd)
        return True
    return False


async def from_sender(fd: int, attempt: Callable[[], int], idle: float) -> int:
    """Run a non-blocking read-like call on the sender's socket `fd` until it moves bytes.

    Waits while the socket is empty (SENDER_IDLE after `idle` seconds, 0 = no limit); an end of
    stream or a socket error is SENDER_GONE. Returns the byte count, never 0.
    """
    count = _try_sender(attempt)
    if count is not None:
        await trio.lowlevel.checkpoint()  # never starve other tasks when data is always there
        return count
    while True:
        if not await wait_ready(trio.lowlevel.wait_readable, fd, idle):
            raise TransferError(TransferFailure.SENDER_IDLE)
        count = _try_sender(attempt)
        if count is not None:
            return count


def _try_sender(attempt: Callable[[], int]) -> int | None:
    """`attempt()`'s byte count; None if the socket is empty; SENDER_GONE at its end or an error."""
    try:
        count = attempt()
    except BlockingIOError:
        return None
    except OSError as exc:
        raise TransferError(TransferFailure.SENDER_GONE, exc.strerror or "") from None
    if count == 0:
        raise TransferError(TransferFailure.SENDER_GONE)
    return count


class SocketBody:
    """A framed request body read from a socket into one reusable buffer (the portable path)."""

    def __init__(
        self,
        sock: socket.socket,
        decoder: BodyDecoder,
        prefix: bytes,
        *,
        buffer_size: int,
        idle_timeout: float,
    ) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.decoder = decoder
        self._prefix = prefix
        # Start small (a 1 KiB body should not pay for zeroing 1 MiB); grow while reads fill it.
        # Made at the first socket read: a body that came whole with the head needs none.
        self._limit = buffer_size
        self._buffer = bytearray()
        self._view = memoryview(self._buffer)
        self._last_count = 0
        self._idle = idle_timeout
        self.received = 0
        self.wire: list[Segment] | None = None
        self._fast = False  # the last read was big: the sender outruns us
        self._lowat = 1  # the socket's SO_RCVLOWAT as we set it

    def __repr__(self) -> str:
        return f"<SocketBody fd={self.fd} {self.decoder!r} received={self.received}>"

    @property
    def done(self) -> bool:
        return self.decoder.done

    @property
    def ready(self) -> bool:
        return bool(self._prefix) or self.decoder.done

    @property
    def complete_in_prefix(self) -> bool:
        """Did the whole (Content-Length) body arrive with the head? Then no socket read is needed."""
        decoder = self.decoder
        return isinstance(decoder, LengthDecoder) and len(self._prefix) >= decoder.remaining

    async def read(self) -> list[Segment]:
        while not self.decoder.done:
            if self._prefix:
                segments = self.buffered()
            else:
                self._grow()  # the previous read's pieces are written by now: its buffer is free
                self._last_count = await self._recv()
                segments = self._payload(self._buffer, self._view, self._last_count)
            if segments:
                return segments
        return []

    def buffered(self) -> list[Segment]:
        """Payload that arrived together with the request head (no socket read)."""
        prefix, self._prefix = self._prefix, b""
        return self._payload(prefix, memoryview(prefix), len(prefix)) if prefix else []

    def _payload(self, data: bytes | bytearray, view: memoryview, count: int) -> list[Segment]:
        """Feed `data[:count]` to the decoder; the payload pieces as views (`view` is over `data`)."""
        try:
            spans, _ = self.decoder.feed(data, count)
        except FramingError as exc:
            raise TransferError(TransferFailure.BAD_FRAMING, str(exc)) from None
        self.received += sum(end - start for start, end in spans)
        decoder = self.decoder
        if isinstance(decoder, ChunkedDecoder):  # its framing, checked, for chunked receivers
            wire = [view[p[0] : p[1]] if isinstance(p, tuple) else p for p in decoder.wire]
            self.wire = wire if len(wire) <= MAX_SEGMENTS else [b"".join(wire)]
        if len(spans) > MAX_SEGMENTS:
            return [b"".join(view[start:end] for start, end in spans)]
        return [view[start:end] for start, end in spans]

    async def _recv(self) -> int:
        return await self.pull(partial(os.readv, self.fd, [self._view]), len(self._buffer))

    async def pull(self, attempt: Callable[[], int], step: int) -> int:
        """Run `attempt` (a non-blocking read of at most `step` bytes from the socket) once the
        socket has bytes: `from_sender`, except that for a fast sender it first waits until the
        socket holds a whole step (SO_RCVLOWAT) or SENDER_PATIENCE has passed, so that a fast
        stream moves in few big steps rather than many small ones (each costs a wakeup)."""
        fd = self.fd
        decoder = self.decoder
        want = 1
        if self._fast:
            want = min(step, decoder.remaining) if isinstance(decoder, LengthDecoder) else step
        if want != self._lowat:
            self._set_lowat(want)
        count = None
        if self._lowat > 1:
            with trio.move_on_after(SENDER_PATIENCE):
                await trio.lowlevel.wait_readable(fd)
            count = _try_sender(attempt)
            if count is None:  # the sender paused: wait for its next byte, however few come
                self._set_lowat(1)
        if count is None:
            count = await from_sender(fd, attempt, self._idle)
        self._fast = count >= FAST_READ
        return count

    def _set_lowat(self, value: int) -> None:
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, value)
            self._lowat = value
        except OSError:  # not settable here: reads come as they come
            self._lowat = 1

    def release(self) -> None:
        """Put the socket's low-water mark back to 1 once the body is read (or given up on): a
        lingering close still reads from the socket, and must see every byte."""
        if self._lowat != 1:
            self._fast = False
            self._set_lowat(1)

    def _grow(self) -> None:
        """After a read filled the buffer, the sender is fast: take bigger steps from now on."""
        if self._last_count == len(self._buffer) < self._limit:
            size = min(self._last_count * 4, self._limit) if self._buffer else INITIAL_BUFFER
            self._buffer = bytearray(min(size, self._limit))
            self._view = memoryview(self._buffer)

    async def drain(self, *, limit: int, seconds: float) -> None:
        """Read and drop what is left of the body, within a byte and time budget."""
        try:
            with trio.move_on_after(seconds):
                while not self.decoder.done and self.received < limit:
                    await self.read()
        finally:
            self.release()


class FormBody:
    """The streamed part of a multipart/form-data body, on top of the framed body."""

    def __init__(self, raw: SocketBody, extractor: FormExtractor) -> None:
        self.raw = raw
        self.extractor = extractor
        self._ended = False

    @property
    def ready(self) -> bool:
        return self._ended

    @property
    def done(self) -> bool:
        return self._ended

    @property
    def wire(self) -> None:
        return None  # the part's data is framed anew

    async def start(self) -> tuple[PartStart, list[Segment]]:
        """Read until the streamed part's headers are known; return them and any data after."""
        while True:
            events = await self._events()
            for index, event in enumerate(events):
                if isinstance(event, PartStart):
                    return event, self._data(events[index + 1 :])

    async def read(self) -> list[Segment]:
        while not self._ended:
            data = self._data(await self._events())
            if data:
                return data
        return []

    async def _events(self) -> list[PartStart | PartData | PartEnd]:
        try:
            segments = await self.raw.read()
            if not segments:
                return self.extractor.end()
            return self.extractor.feed(b"".join(segments))
        except PipeError as exc:
            raise TransferError(TransferFailure.BAD_UPLOAD, exc.message) from None

    def _data(self, events: Sequence[PartStart | PartData | PartEnd]) -> list[Segment]:
        out: list[Segment] = []
        for event in events:
            if isinstance(event, PartData):
                out.append(event.data)
            elif isinstance(event, PartEnd):
                self._ended = True
        return out


@dataclass(eq=False)
class Sink:
    """One receiver's side of a transfer: where bytes go and how they are framed."""

    fd: int
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
            rest = _advance(pieces, os.writev(sink.fd, pieces))
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
    while pieces:
        if not await wait_ready(trio.lowlevel.wait_writable, sink.fd, idle):
            break
        try:
            pieces = _advance(pieces, os.writev(sink.fd, pieces))
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
