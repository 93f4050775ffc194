# Request bodies: the sender's side of a transfer (framing, socket reads into one buffer, form parts).
# Invariant: a read's pieces stay valid until the next read; SO_RCVLOWAT is back to 1 once released.
from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import Protocol

import trio

from ..core.forms import FormExtractor, FormState, PartData, PartEnd, PartStart
from ..core.framing import BodyDecoder, ChunkedDecoder, EmptyDecoder, FramingError, LengthDecoder
from ..core.pace import Pace
from ..core.routing import Request
from ..errors import PipeError, TransferError, TransferFailure
from .engine import Segment, Source, wait_ready

INITIAL_BUFFER = 64 * 1024
MAX_SEGMENTS = 32
"""More payload pieces than this in one read are joined into one (writev takes at most 1024)."""
FAST_READ = 32 * 1024
"""A read at least this big means the sender outruns us: from then on, wait for fuller reads."""
SEEK_STEP = 16 * 1024
"""A multipart body is parsed this much at a time (then other tasks run) until its content part."""
SEEK_SHARE = 0.1
"""At most this share of the event loop goes to parsing forms towards their content parts."""
SENDER_PATIENCE = 0.005
"""How long a read of a fast sender waits for a fuller socket before it takes what is there."""


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
        if not await wait_ready(partial(trio.lowlevel.wait_readable, fd), idle):
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


class BodySocket(Protocol):
    """What a body reads from: a plain socket, or one with TLS on it."""

    def fileno(self) -> int: ...

    def setsockopt(self, level: int, option: int, value: int, /) -> None: ...


class SocketBody:
    """A framed request body read from a socket into one reusable buffer (the portable path)."""

    def __init__(
        self,
        sock: BodySocket,
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
    def splice_fd(self) -> int | None:
        """The plain socket splice(2) may read the body from (None: not a plain socket)."""
        return self.fd

    def buffered_inside(self) -> bool:
        """Are body bytes held above the socket, where epoll cannot see them (TLS)?"""
        return False

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
        if self._lowat > 1 and not self.buffered_inside():
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


class SeekBudget:
    """The share of the event loop that parsing towards forms' content parts may take, all
    transfers together: a form of thousands of tiny fields parses at a few MB/s, and a few such
    senders must not stall every other transfer. One step at a time, each followed by a rest
    `(1 - share) / share` times as long as the step took."""

    def __init__(self, share: float = SEEK_SHARE) -> None:
        self._lock = trio.Lock()
        self._rest = (1 - share) / share

    def __repr__(self) -> str:
        return f"<SeekBudget rest={self._rest:g}x busy={self._lock.locked()}>"

    async def step(self, extractor: FormExtractor, data: bytes) -> list[PartStart | PartData | PartEnd]:
        async with self._lock:
            started = time.perf_counter()
            try:
                return extractor.feed(data)
            finally:
                await trio.sleep((time.perf_counter() - started) * self._rest)


class FormBody:
    """The streamed part of a multipart/form-data body, on top of the framed body."""

    def __init__(self, raw: Source, extractor: FormExtractor, budget: SeekBudget) -> None:
        self.raw = raw
        self.extractor = extractor
        self.budget = budget
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
            data = b"".join(segments)
            if self.extractor.state is not FormState.SEEKING:
                return self.extractor.feed(data)
            return await self._seek(data)
        except PipeError as exc:
            raise TransferError(TransferFailure.BAD_UPLOAD, exc.message) from None

    async def _seek(self, data: bytes) -> list[PartStart | PartData | PartEnd]:
        """Parse towards the content part in small steps within the shared `SeekBudget`: a form of
        many tiny fields parses slowly, and must not hold up every other transfer while it does."""
        events: list[PartStart | PartData | PartEnd] = []
        for start in range(0, len(data), SEEK_STEP):
            if self.extractor.state is not FormState.SEEKING:  # found: the rest in one go
                return events + self.extractor.feed(data[start:])
            events += await self.budget.step(self.extractor, data[start : start + SEEK_STEP])
        return events

    def _data(self, events: Sequence[PartStart | PartData | PartEnd]) -> list[Segment]:
        out: list[Segment] = []
        for event in events:
            if isinstance(event, PartData):
                out.append(event.data)
            elif isinstance(event, PartEnd):
                self._ended = True
        return out


class Prepend:
    """A source that yields some already-read pieces before the rest of another source."""

    def __init__(self, first_pieces: list[Segment], rest: Source) -> None:
        self._first = first_pieces
        self._rest = rest

    async def read(self) -> list[Segment]:
        if self._first:
            pieces, self._first = self._first, []
            return pieces
        return await self._rest.read()

    @property
    def ready(self) -> bool:
        return bool(self._first) or self._rest.ready

    @property
    def done(self) -> bool:
        return not self._first and self._rest.done

    @property
    def wire(self) -> None:
        return None  # only multipart bodies are prepended to: their part's data is framed anew


class Paced:
    """A source read through a rate cap (core.pace, maybe shared by a user's transfers): each read
    first sleeps until the pace says it is due (no polling); the transfer's steps are sized to about
    a tenth of a second of the rate (`paced_step`), so the pace is smooth."""

    def __init__(self, inner: Source, pace: Pace) -> None:
        self._inner = inner
        self._pace = pace

    async def read(self) -> list[Segment]:
        await trio.sleep_until(self._pace.due)
        pieces = await self._inner.read()
        self._pace.took(sum(len(piece) for piece in pieces), trio.current_time())
        return pieces

    @property
    def ready(self) -> bool:
        return self._inner.ready and trio.current_time() >= self._pace.due

    @property
    def done(self) -> bool:
        return self._inner.done

    @property
    def wire(self) -> list[Segment] | None:
        return self._inner.wire


def paced_step(rate: int, buffer_size: int) -> int:
    """The step of a transfer capped at `rate` bytes a second: a tenth of a second of it (4 KiB at least)."""
    return max(4096, min(buffer_size, rate // 10))


def body_decoder(request: Request) -> LengthDecoder | ChunkedDecoder:
    """How the sender's body ends, as h11 validated it: chunked, Content-Length, or empty."""
    return framed_by(request.header("transfer-encoding"), request.header("content-length"))


def framed_by(transfer_encoding: str | None, content_length: str | None) -> LengthDecoder | ChunkedDecoder:
    """How a body framed by these (h11-validated) headers ends: chunked, its length, or empty (a
    request's, or a reply carried from another worker)."""
    if transfer_encoding is not None:
        return ChunkedDecoder()
    return LengthDecoder(int(content_length)) if content_length is not None else EmptyDecoder()
