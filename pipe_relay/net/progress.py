# Progress boards: every registered pipe's latest state (synced by the hub, bytes by the relay), and watchers.
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
    next_state,
    rate_between,
    sse_event,
    sse_keepalive,
    sse_open,
)
from ..core.registry import PipeSnapshot
from ..core.routing import Request

if TYPE_CHECKING:
    from .link import Link


class Board:
    """One pipe's progress. Writers set fields and `wake()`; watchers wait for the next wake."""

    def __init__(self, expected: int) -> None:
        self.state = TransferState.WAITING
        self.bytes = 0
        self.total: int | None = None
        self.receivers = 0
        self.expected = expected
        self.started: float | None = None
        self.ended: float | None = None
        """When the transfer reached `done` or `aborted`: its elapsed time stops there."""
        self.watchers = 0
        self.limit: int | None = None
        """The transfer's rate cap (bytes a second), if it has one."""
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
        now = self.ended if self.ended is not None else trio.current_time()
        elapsed = now - self.started if self.started is not None else 0.0
        return Snapshot(
            self.state, self.bytes, self.total, self.receivers, self.expected, rate, elapsed, self.limit
        )


class Boards:
    """The board of every registered pipe: the hub syncs them with the registry and records how
    transfers end; the relay adds bytes; watchers read them and wait for one to appear."""

    def __init__(self) -> None:
        self._boards: dict[str, Board] = {}
        self.closed = False
        """The server drains: watchers of pipes that are not there end now."""
        self._changed: trio.Event | None = None  # made only while a watcher waits for a board

    def __repr__(self) -> str:
        return f"<Boards {len(self._boards)}{' closed' if self.closed else ''}>"

    def __contains__(self, key: str) -> bool:
        return key in self._boards

    def get(self, key: str) -> Board | None:
        return self._boards.get(key)

    def sync(self, key: str, pipe: PipeSnapshot | None, now: float) -> None:
        """The registry changed for `key`: its board follows (made, updated, or gone idle)."""
        board = self._boards.get(key)
        if pipe is None:
            if board is not None:
                del self._boards[key]
                board.state = next_state(board.state, None)
                if board.state is TransferState.IDLE:  # its parties left before it started
                    board.receivers = board.expected = 0
                board.wake()
            return
        if board is None:
            board = self._boards[key] = Board(pipe.n)
            self._wake()
        board.expected, board.receivers = pipe.n, pipe.receivers
        state = next_state(board.state, pipe.state)
        if state is TransferState.STREAMING and board.state is not TransferState.STREAMING:
            board.started = now
        board.state = state
        board.wake()

    def finish(self, key: str, state: TransferState) -> None:
        """The transfer on `key` ended (`done` or `aborted`): watchers get the final state."""
        board = self._boards.get(key)
        if board is not None and not board.state.final:
            board.state = state
            board.ended = trio.current_time()
            board.wake()

    def close(self) -> None:
        self.closed = True
        self._wake()

    async def appeared(self, key: str, deadline: float) -> Board | None:
        """`key`'s board once there is one (None if the deadline passes or the boards close)."""
        with trio.move_on_at(deadline):
            while key not in self._boards and not self.closed:
                if self._changed is None:
                    self._changed = trio.Event()
                await self._changed.wait()
        return self._boards.get(key)

    def _wake(self) -> None:
        if self._changed is not None:
            self._changed.set()
            self._changed = None


def _idle(expected: int = 0) -> Snapshot:
    return Snapshot(TransferState.IDLE, 0, None, 0, expected, 0.0, 0.0)


async def watch(boards: Boards, link: Link, request: Request, key: str, *, ttl: float) -> None:
    """An event stream of `key`'s progress until the transfer ends, the pipe TTL passes idle, the
    server drains, or the watcher hangs up (seen at once)."""
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_until_hang_up, link, nursery.cancel_scope)
        await _watch(boards, link, request, key, ttl)
        nursery.cancel_scope.cancel()


async def _until_hang_up(link: Link, scope: trio.CancelScope) -> None:
    """A watcher sends nothing after its head: anything from it means it left."""
    await link.wait_gone()
    scope.cancel()


async def _watch(boards: Boards, link: Link, request: Request, key: str, ttl: float) -> None:
    stream = link.open_stream(
        request, "text/event-stream; charset=utf-8", extra=(("X-Accel-Buffering", "no"),)
    )
    send = stream.send
    board = boards.get(key)
    if not await send(sse_open()):
        return
    idle_until = trio.current_time() + ttl
    sample = (trio.current_time(), board.bytes if board else 0)
    last_sent = trio.current_time()
    first = board.snapshot(0.0) if board else _idle()
    last_event, last_state, last_bytes = sse_event(first), first.state, first.bytes
    ok = await send(last_event)
    while ok:
        now = trio.current_time()
        keepalive_at = last_sent + KEEPALIVE_INTERVAL
        if board is None:
            if now >= idle_until or boards.closed:
                break
            board = await boards.appeared(key, min(idle_until, keepalive_at))
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
                ok = await send(sse_keepalive())
                last_sent = now
            continue
        current = (now, board.bytes)
        snapshot = board.snapshot(rate_between(sample, current))
        sample = current
        event = sse_event(snapshot)
        unchanged = event == last_event or (snapshot.state is last_state and current[1] == last_bytes)
        ok = await send(sse_keepalive() if unchanged else event)
        last_event, last_state, last_bytes = event, snapshot.state, current[1]
        last_sent = now
        if snapshot.state.final:
            break
        if boards.get(key) is not board:  # the pipe went away (its parties left): idle again
            board = None
            idle_until = now + ttl
            ok = ok and await send(sse_event(_idle()))
    if ok:
        await send(b"", end=True)
