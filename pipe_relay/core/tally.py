# The server's tally: what the metrics count (transfers, bytes, errors, connections), as int64 slots.
# Invariant: recording is a slot addition or two per event (never per byte); the slots are plain data.
"""One worker writes only its own row of slots (in shared memory under `--workers`, so any worker
can sum every row for a scrape, and a restarted worker goes on counting where it left off: no
counter ever goes back). Pure: the caller hands in the memory; `Totals` is what a scrape reads."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Protocol

from ..errors import ErrorCode, TransferFailure
from .abuse import Budget, Violation

PROTOCOLS: Final = ("http1", "tls", "h2", "h2c", "unix")
"""Open connections by protocol: HTTP/1.1, HTTPS/1.1, HTTP/2 over TLS, h2c, the Unix socket."""
ABORT_REASONS: Final = (
    *(failure.name.lower() for failure in TransferFailure),
    "sender_gone_before_start",
    "operator",
    "shutdown",
    "internal",
)
"""Why a started transfer did not complete: its failure, its sender found gone before the first byte,
the operator's DELETE, the drain's timeout, a bug."""
LIMITS: Final[dict[ErrorCode, str]] = {
    ErrorCode.TOO_MANY_PENDING: "max_pending",
    ErrorCode.TOO_MANY_ACTIVE: "max_active",
    ErrorCode.TOO_MANY_CONNECTIONS: "max_connections",
    ErrorCode.TOO_MANY_WATCHERS: "max_watchers",
    ErrorCode.CLIENT_PENDING_LIMIT: "client_max_pending",
    ErrorCode.CLIENT_ACTIVE_LIMIT: "client_max_active",
    ErrorCode.CLIENT_WATCHER_LIMIT: "client_max_watchers",
    ErrorCode.CLIENT_CONNECTION_LIMIT: "client_max_connections",
    ErrorCode.CLIENT_PAGE_LIMIT: "client_max_pages",
    ErrorCode.PATH_TOO_LONG: "max_path_length",
    ErrorCode.HEAD_TOO_LARGE: "max_head_size",
    ErrorCode.TOO_MANY_HEADERS: "max_headers",
}
"""The errors that are a limit's rejection, by the limit's name (as its flag, `--max-pending`...)."""
ABUSE_KINDS: Final = tuple(kind.name.lower() for kind in (*Budget, *Violation))
ERROR_CODES: Final = tuple(ErrorCode)


@dataclass(frozen=True, slots=True)
class Histogram:
    """A histogram's slots: one per bucket (not cumulative), then the sum (in 1/`scale` units)."""

    start: int
    bounds: tuple[float, ...]
    scale: int = 1

    def bucket(self, value: float) -> int:
        """The slot of the first bucket whose bound is >= value (le), the last one +Inf."""
        return self.start + bisect_left(self.bounds, value)

    @property
    def sum_slot(self) -> int:
        return self.start + len(self.bounds) + 1


class _Layout:
    def __init__(self) -> None:
        self.size = 0

    def take(self, count: int) -> int:
        start, self.size = self.size, self.size + count
        return start


_layout = _Layout()
STARTED: Final = _layout.take(1)
COMPLETED: Final = _layout.take(1)
BYTES_IN: Final = _layout.take(1)
BYTES_OUT: Final = _layout.take(1)
PENDING: Final = _layout.take(1)
ACTIVE: Final = _layout.take(1)
REQUESTS: Final = _layout.take(1)
CONNECTIONS: Final = _layout.take(len(PROTOCOLS))
ABORTED: Final = _layout.take(len(ABORT_REASONS))
ERRORS: Final = _layout.take(len(ERROR_CODES))
ABUSE: Final = _layout.take(len(ABUSE_KINDS))
READY: Final = _layout.take(1)
"""1 while this row's worker accepts connections (a worker started but not yet listening reads 0)."""


def _histogram(bounds: tuple[float, ...], scale: int = 1) -> Histogram:
    return Histogram(_layout.take(len(bounds) + 2), bounds, scale)


DURATION: Final = _histogram((0.01, 0.1, 1.0, 10.0, 60.0, 300.0, 1800.0, 3600.0), scale=1_000_000)
"""Seconds (the sum kept in microseconds)."""
SIZE: Final = _histogram(tuple(float(1 << shift) for shift in (10, 16, 20, 24, 28, 30, 34, 36)))
"""Bytes read from the sender: 1 KiB to 64 GiB."""
RECEIVERS: Final = _histogram((1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 50.0, 100.0))
SLOTS: Final = _layout.size
"""int64 slots in one worker's row."""
GAUGES: Final = frozenset({PENDING, ACTIVE, READY, *range(CONNECTIONS, CONNECTIONS + len(PROTOCOLS))})
"""The slots that say what is now (a dead worker's are zeroed); all others only grow."""

_PROTOCOL_SLOT = {name: CONNECTIONS + index for index, name in enumerate(PROTOCOLS)}
_REASON_SLOT = {name: ABORTED + index for index, name in enumerate(ABORT_REASONS)}
_ERROR_SLOT = {code: ERRORS + index for index, code in enumerate(ERROR_CODES)}
_ABUSE_SLOT = {name: ABUSE + index for index, name in enumerate(ABUSE_KINDS)}


class Tally:
    """One worker's row: `slots` is a sequence of int64 (a `memoryview.cast("q")` or a list)."""

    __slots__ = ("slots",)

    def __init__(self, slots: MutableSlots | None = None) -> None:
        self.slots: MutableSlots = slots if slots is not None else [0] * SLOTS

    def __repr__(self) -> str:
        s = self.slots
        return (
            f"<Tally started={s[STARTED]} completed={s[COMPLETED]} pending={s[PENDING]} active={s[ACTIVE]}>"
        )

    def request(self) -> None:
        self.slots[REQUESTS] += 1

    def ready(self) -> None:
        """This row's worker accepts connections now (zeroed with the gauges when it ends)."""
        self.slots[READY] = 1

    def connection(self, protocol: str, delta: int) -> None:
        """A connection of `protocol` opened (+1) or closed (-1)."""
        self.slots[_PROTOCOL_SLOT[protocol]] += delta

    def pipes(self, pending: int, active: int) -> None:
        """The registry's counts now."""
        self.slots[PENDING] = pending
        self.slots[ACTIVE] = active

    def started(self, receivers: int) -> None:
        self.slots[STARTED] += 1
        self.slots[RECEIVERS.bucket(receivers)] += 1
        self.slots[RECEIVERS.sum_slot] += receivers

    def moved(self, read: int, written: int) -> None:
        """One step of a transfer: `read` from its sender, `written` to its receivers in all."""
        self.slots[BYTES_IN] += read
        self.slots[BYTES_OUT] += written

    def ended(self, reason: str | None, seconds: float, size: int) -> None:
        """A started transfer ended: completed (`reason` None) or aborted for `reason`."""
        slots = self.slots
        slots[COMPLETED if reason is None else _REASON_SLOT[reason]] += 1
        slots[DURATION.bucket(seconds)] += 1
        slots[DURATION.sum_slot] += round(seconds * DURATION.scale)
        slots[SIZE.bucket(size)] += 1
        slots[SIZE.sum_slot] += size

    def error(self, code: ErrorCode) -> None:
        """A rejection went out with this `X-Pipe-Error` code."""
        self.slots[_ERROR_SLOT[code]] += 1

    def abuse(self, kind: Budget | Violation) -> None:
        """A connection was ended for spending this budget (or breaking this rule)."""
        self.slots[_ABUSE_SLOT[kind.name.lower()]] += 1

    def clear_gauges(self) -> None:
        for slot in GAUGES:
            self.slots[slot] = 0


class MutableSlots(Protocol):
    """What a list of ints and a `memoryview.cast("q")` both are."""

    def __getitem__(self, index: int, /) -> int: ...

    def __setitem__(self, index: int, value: int, /) -> None: ...

    def __len__(self) -> int: ...


@dataclass(frozen=True, slots=True)
class HistogramTotals:
    buckets: tuple[tuple[float, int], ...]
    """(upper bound, cumulative count), the last bound +Inf."""
    sum: float
    count: int


def histogram(values: Sequence[int], shape: Histogram) -> HistogramTotals:
    counts = values[shape.start : shape.start + len(shape.bounds) + 1]
    cumulative, running = [], 0
    for bound, count in zip((*shape.bounds, float("inf")), counts, strict=True):
        running += count
        cumulative.append((bound, running))
    return HistogramTotals(tuple(cumulative), values[shape.sum_slot] / shape.scale, running)


def total(rows: Sequence[MutableSlots]) -> list[int]:
    """Every worker's row summed: the whole server's tally."""
    summed = [0] * SLOTS
    for row in rows:
        for index in range(SLOTS):
            summed[index] += row[index]
    return summed


def by_name(values: Sequence[int], start: int, names: Sequence[str]) -> dict[str, int]:
    return {name: values[start + index] for index, name in enumerate(names)}


def errors(values: Sequence[int]) -> dict[ErrorCode, int]:
    return {code: values[ERRORS + index] for index, code in enumerate(ERROR_CODES)}
