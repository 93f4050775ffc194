# Progress boards: the latest state of each registered pipe, published by the hub and relay, read by watchers.
# Invariant: publishing never waits or queues; a watcher reads the latest state at most 4 times a second.
from __future__ import annotations

import math
from typing import TYPE_CHECKING

import trio

from ..core.progress import (
    KEEPALIVE_INTERVAL,
    MIN_INTERVAL,
    Snapshot,
    TransferState,
    rate_between,
    sse_event,
    sse_keepalive,
    sse_open,
)
from ..core.quotas import Quota
from ..core.registry import RETRY_AFTER_SECONDS
from ..core.replies import StreamedReply
from ..core.routing import Request
from ..errors import ErrorCode, PipeError, pipe_error

if TYPE_CHECKING:
    from .connection import HttpConnection
    from .hub import Hub


class Board:
    """One pipe's progress. Writers set fields and `wake()`; watchers wait for the next wake."""

    def __init__(self, expected: int) -> None:
        self.state = TransferState.WAITING
        self.bytes = 0
        self.total: int | None = None
        self.receivers = 0
        self.expected = expected
        self.started: float | None = None
        self.watchers = 0
        self._changed: trio.Event | None = None  # made only while a watcher waits
        self._last_wake = -math.inf

    def __repr__(self) -> str:
        return f"<Board {self.state.value} {self.bytes}/{self.total} watchers={self.watchers}>"

    def wake(self) -> None:
        if self._changed is not None:
            self._changed.set()
            self._changed = None
        if self.watchers:  # (only `add_bytes` with watchers looks at it)
            self._last_wake = trio.current_time()

    def add_bytes(self, moved: int) -> None:
        """Called by the relay for every step: a counter, and a wake at most 4 times a second."""
        self.bytes += moved
        if self.watchers and trio.current_time() - self._last_wake >= MIN_INTERVAL:
            self.wake()

    async def changed(self, deadline: float) -> None:
        if self._changed is None:
            self._changed = trio.Event()
        with trio.move_on_at(deadline):
            await self._changed.wait()

    def snapshot(self, rate: float) -> Snapshot:
        elapsed = trio.current_time() - self.started if self.started is not None else 0.0
        return Snapshot(self.state, self.bytes, self.total, self.receivers, self.expected, rate, elapsed)


def _idle(expected: int = 0) -> Snapshot:
    return Snapshot(TransferState.IDLE, 0, None, 0, expected, 0.0, 0.0)


async def serve_watcher(hub: Hub, conn: HttpConnection, request: Request, key: str, client: str = "") -> None:
    """An event stream of `key`'s progress until the transfer ends, the pipe TTL passes idle, or
    the watcher hangs up (seen at once). Within `--max-watchers` and the client's watcher quota."""
    try:
        if hub.watchers >= hub.config.max_watchers:
            raise pipe_error(ErrorCode.TOO_MANY_WATCHERS, ("Retry-After", RETRY_AFTER_SECONDS))
        hub.quotas.take(Quota.WATCHERS, client)
    except PipeError as exc:
        await conn.send_error(exc, request.header("origin"), last=True)
        return
    hub.watchers += 1
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_until_hang_up, conn, nursery.cancel_scope)
            await _watch(hub, conn, request, key)
            nursery.cancel_scope.cancel()
    finally:
        hub.watchers -= 1
        hub.quotas.give(Quota.WATCHERS, client)


async def _until_hang_up(conn: HttpConnection, scope: trio.CancelScope) -> None:
    """A watcher sends nothing after its head: its socket turns readable only when it leaves."""
    await trio.lowlevel.wait_readable(conn.sock)
    scope.cancel()


async def _watch(hub: Hub, conn: HttpConnection, request: Request, key: str) -> None:
    stream = StreamedReply(request.http_version)
    frame = stream.frame
    head = stream.head(
        "text/event-stream; charset=utf-8",
        origin=request.header("origin"),
        extra=(("X-Accel-Buffering", "no"),),
    )
    board = hub.boards.get(key)
    if not await conn.send_raw(head + frame(sse_open())):
        return
    ttl = hub.config.pending_ttl
    idle_until = trio.current_time() + ttl
    sample = (trio.current_time(), board.bytes if board else 0)
    last_sent = trio.current_time()
    first = board.snapshot(0.0) if board else _idle()
    last_event, last_state, last_bytes = sse_event(first), first.state, first.bytes
    ok = await conn.send_raw(frame(last_event))
    while ok:
        now = trio.current_time()
        keepalive_at = last_sent + KEEPALIVE_INTERVAL
        if board is None:
            if now >= idle_until or hub.draining:
                break
            with trio.move_on_at(min(idle_until, keepalive_at)):
                await hub.wait_for(lambda: key in hub.boards or hub.draining)
            board = hub.boards.get(key)
        else:
            board.watchers += 1
            try:
                await board.changed(keepalive_at)
                await trio.sleep_until(last_sent + MIN_INTERVAL)  # at most 4 updates a second
            finally:
                board.watchers -= 1
        now = trio.current_time()
        if board is None:
            if now >= keepalive_at:
                ok = await conn.send_raw(frame(sse_keepalive()))
                last_sent = now
            continue
        current = (now, board.bytes)
        snapshot = board.snapshot(rate_between(sample, current))
        sample = current
        event = sse_event(snapshot)
        unchanged = event == last_event or (snapshot.state is last_state and current[1] == last_bytes)
        ok = await conn.send_raw(frame(sse_keepalive() if unchanged else event))
        last_event, last_state, last_bytes = event, snapshot.state, current[1]
        last_sent = now
        if snapshot.state.final:
            break
        if hub.boards.get(key) is not board:  # the pipe went away (its parties left): idle again
            board = None
            idle_until = now + ttl
            ok = ok and await conn.send_raw(frame(sse_event(_idle())))
    if ok:
        await conn.send_raw(stream.end)
