# Linux zero-copy engine: splice(2) the sender's socket into a pipe, tee(2) it per receiver, splice out.
# Invariant: a pipe-full reaches every live receiver before the next read; every pipe is closed in `finally`.
from __future__ import annotations

import contextlib
import ctypes
import fcntl
import logging
import os
from collections.abc import Sequence
from functools import partial

import trio

from ..config import Config
from ..core.framing import Framing, LengthDecoder
from .body import SocketBody
from .engine import (
    BufferEngine,
    ByteEngine,
    RelayEvents,
    Sink,
    Source,
    broadcast,
    count_sent,
    deliver,
    report_drops,
    wait_ready,
)
from .libc import tee_function

log = logging.getLogger("pipe_relay")

F_SETPIPE_SZ = 1031
PIPE_SIZE = 1 << 20
_NONBLOCK = getattr(os, "SPLICE_F_NONBLOCK", 2)
_MOVE = getattr(os, "SPLICE_F_MOVE", 1)


_TEE = tee_function()


def splice_available() -> bool:
    """splice(2) and tee(2) are both usable here (Linux)."""
    return _TEE is not None


def tee(fd_in: int, fd_out: int, count: int) -> int:
    """tee(2), non-blocking: duplicate up to `count` bytes from pipe `fd_in` into pipe `fd_out`."""
    assert _TEE is not None
    result = _TEE(fd_in, fd_out, count, _NONBLOCK)
    if result < 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))
    return int(result)


class _Pipe:
    """A non-blocking pipe sized with F_SETPIPE_SZ, and how many bytes wait in it."""

    def __init__(self, size: int) -> None:
        self.read_fd, self.write_fd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            self.size = fcntl.fcntl(self.write_fd, F_SETPIPE_SZ, size)
        except OSError:
            self.close()
            raise
        self.held = 0

    def __repr__(self) -> str:
        return f"<_Pipe r={self.read_fd} w={self.write_fd} size={self.size} held={self.held}>"

    def close(self) -> None:
        for fd in (self.read_fd, self.write_fd):
            with contextlib.suppress(OSError):
                os.close(fd)


class SpliceEngine:
    """Zero-copy relay for Content-Length bodies; anything else goes to the fallback engine.

    Each step splices up to one pipe-full from the sender's socket into a source pipe, tees it into
    one pipe per extra receiver (tee copies without consuming), then splices every pipe out to its
    receiver. It holds 2n file descriptors and n pipes per transfer; when the kernel refuses them
    (fd or pipe-page budget), the transfer uses the fallback engine instead.
    """

    name = "splice"

    def __init__(
        self,
        *,
        idle_timeout: float,
        fallback: ByteEngine,
        pipe_size: int = PIPE_SIZE,
    ) -> None:
        self.idle_timeout = idle_timeout
        self.fallback = fallback
        self.pipe_size = pipe_size
        self._devnull: int | None = None
        self.carried = 0
        """Transfers moved with splice/tee (the rest went to the fallback engine)."""
        self.fallbacks = 0

    def __repr__(self) -> str:
        return f"<SpliceEngine pipe_size={self.pipe_size} fallback={self.fallback!r}>"

    def can_carry(self, source: Source, sinks: Sequence[Sink]) -> bool:
        """A Content-Length body with bytes still to come from a plain socket, going out unframed
        (no chunked receiver) to plain sockets."""
        return (
            splice_available()
            and isinstance(source, SocketBody)
            and source.splice_fd is not None
            and isinstance(source.decoder, LengthDecoder)
            and source.decoder.remaining > 0
            and all(
                sink.framing is not Framing.CHUNKED and sink.writer.splice_fd is not None for sink in sinks
            )
        )

    async def relay(self, source: Source, sinks: Sequence[Sink], events: RelayEvents) -> None:
        pipes = self._open_pipes(len(sinks)) if self.can_carry(source, sinks) else None
        if pipes is None:
            self.fallbacks += 1
            return await self.fallback.relay(source, sinks, events)
        assert isinstance(source, SocketBody)
        self.carried += 1
        try:
            await self._relay(source, sinks, events, pipes)
        finally:
            for pipe in pipes:
                pipe.close()

    def _open_pipes(self, count: int) -> list[_Pipe] | None:
        pipes: list[_Pipe] = []
        try:
            for _ in range(count):
                pipes.append(_Pipe(self.pipe_size))
        except OSError as exc:
            for pipe in pipes:
                pipe.close()
            log.warning("splice engine: no pipes (%s); using the buffer engine", exc.strerror)
            return None
        return pipes

    async def _relay(
        self, source: SocketBody, sinks: Sequence[Sink], events: RelayEvents, pipes: list[_Pipe]
    ) -> None:
        idle = self.idle_timeout
        decoder = source.decoder
        assert isinstance(decoder, LengthDecoder)
        first = source.buffered()
        if first:  # with the heads, in one write (and the end too, if that was the whole body)
            await deliver(sinks, first, events, idle=idle, last=decoder.done)
        else:
            await broadcast(sinks, Sink.opening, events, idle=idle)
        step = min(pipe.size for pipe in pipes)
        # The last receiver drains the source pipe itself; the others read their own tee'd copies.
        routes = [(sink, pipes[index + 1]) for index, sink in enumerate(sinks[:-1])]
        routes.append((sinks[-1], pipes[0]))
        while decoder.remaining:
            moved = await self._fill(source, pipes[0], min(decoder.remaining, step))
            decoder.skip(moved)
            source.received += moved
            await self._fan_out(routes, pipes[0], moved, sinks, events)
            count_sent(sinks, moved)
            events.progress(moved)
        await broadcast(sinks, Sink.closing, events, idle=idle)

    async def _fill(self, source: SocketBody, pipe: _Pipe, want: int) -> int:
        """Splice up to `want` bytes from the sender's socket into the (empty) source pipe."""
        splice_in = partial(os.splice, source.fd, pipe.write_fd, want, flags=_MOVE | _NONBLOCK)
        pipe.held = await source.pull(splice_in, want)
        return pipe.held

    async def _fan_out(
        self,
        routes: list[tuple[Sink, _Pipe]],
        source_pipe: _Pipe,
        moved: int,
        sinks: Sequence[Sink],
        events: RelayEvents,
    ) -> None:
        # Copy first: tee reads the source pipe without consuming it, so it must precede draining.
        for sink, pipe in routes:
            if sink.alive and pipe is not source_pipe:
                copied = tee(source_pipe.read_fd, pipe.write_fd, moved)
                if copied != moved:  # the target pipe is always empty here: a short tee is a bug
                    raise RuntimeError(f"short tee: {copied} of {moved} bytes")
                pipe.held = moved
        dropped: list[Sink] = []
        stragglers: list[tuple[Sink, _Pipe]] = []
        for sink, pipe in routes:
            if sink.alive and not self._drain_now(sink, pipe, dropped):
                stragglers.append((sink, pipe))
        if len(stragglers) == 1:
            await self._drain(*stragglers[0], dropped)
        elif stragglers:
            async with trio.open_nursery() as nursery:
                for sink, pipe in stragglers:
                    nursery.start_soon(self._drain, sink, pipe, dropped)
        if source_pipe.held:  # its receiver was dropped: empty it for the next step
            self._discard(source_pipe)
        await report_drops(sinks, dropped, events)

    @staticmethod
    def _drain_now(sink: Sink, pipe: _Pipe, dropped: list[Sink]) -> bool:
        """Splice what the socket takes without waiting. True when the pipe is empty or dropped."""
        fd = sink.writer.splice_fd
        assert fd is not None  # (can_carry)
        try:
            while pipe.held:
                pipe.held -= os.splice(pipe.read_fd, fd, pipe.held, flags=_MOVE | _NONBLOCK)
        except BlockingIOError:
            return False
        except OSError:
            sink.alive = False
            dropped.append(sink)
        return True

    async def _drain(self, sink: Sink, pipe: _Pipe, dropped: list[Sink]) -> None:
        """Empty one receiver's pipe into its socket, waiting for room; drop it on failure or stall."""
        while pipe.held:
            if not await wait_ready(sink.writer.wait_writable, self.idle_timeout):
                sink.alive = False
                dropped.append(sink)
                return
            if self._drain_now(sink, pipe, dropped) and not sink.alive:
                return

    def _discard(self, pipe: _Pipe) -> None:
        if self._devnull is None:
            self._devnull = os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)
        while pipe.held:
            pipe.held -= os.splice(pipe.read_fd, self._devnull, pipe.held, flags=_MOVE | _NONBLOCK)


def make_engine(config: Config) -> ByteEngine:
    """The byte engine for `config.engine`. `auto` is the buffer engine: measured side by side with
    the C reference (docs/performance.md), it is faster than splice/tee at n=1 and at n=3 on this
    kernel; `splice` trades speed for CPU (about half the buffer engine's at n=1), and falls back
    to the buffer engine for what it cannot carry (chunked or multipart bodies, no pipes, not Linux)."""
    buffer = BufferEngine(idle_timeout=config.idle_timeout)
    if config.engine != "splice" or not splice_available():
        return buffer
    return SpliceEngine(idle_timeout=config.idle_timeout, fallback=buffer)
