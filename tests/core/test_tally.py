# The tally's int64 slots: their layout, each record's slots (against a model), histograms, totals, limits.
# Invariant: pure and sync; the model below is written from the documented layout, not from Tally's code.
from __future__ import annotations

import bisect
import dataclasses
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipe_relay.config import Config
from pipe_relay.core import tally
from pipe_relay.core.abuse import Budget, Violation
from pipe_relay.core.tally import (
    ABORT_REASONS,
    ABORTED,
    ABUSE,
    ABUSE_KINDS,
    ACTIVE,
    BYTES_IN,
    BYTES_OUT,
    COMPLETED,
    CONNECTIONS,
    DURATION,
    ERROR_CODES,
    ERRORS,
    GAUGES,
    LIMITS,
    PENDING,
    PROTOCOLS,
    READY,
    RECEIVERS,
    REQUESTS,
    SIZE,
    SLOTS,
    STARTED,
    Histogram,
    Tally,
    by_name,
    errors,
    histogram,
    total,
)
from pipe_relay.errors import ErrorCode, status_of
from tests.fuzzing import fuzz_settings

SINGLE = {
    "STARTED": STARTED,
    "COMPLETED": COMPLETED,
    "BYTES_IN": BYTES_IN,
    "BYTES_OUT": BYTES_OUT,
    "PENDING": PENDING,
    "ACTIVE": ACTIVE,
    "REQUESTS": REQUESTS,
    "READY": READY,
}
HISTOGRAMS = {"DURATION": DURATION, "SIZE": SIZE, "RECEIVERS": RECEIVERS}


def _ranges() -> dict[str, range]:
    ranges = {name: range(slot, slot + 1) for name, slot in SINGLE.items()}
    ranges["CONNECTIONS"] = range(CONNECTIONS, CONNECTIONS + len(PROTOCOLS))
    ranges["ABORTED"] = range(ABORTED, ABORTED + len(ABORT_REASONS))
    ranges["ERRORS"] = range(ERRORS, ERRORS + len(ERROR_CODES))
    ranges["ABUSE"] = range(ABUSE, ABUSE + len(ABUSE_KINDS))
    for name, shape in HISTOGRAMS.items():
        # one slot per bound, the +Inf bucket, the sum
        ranges[name] = range(shape.start, shape.start + len(shape.bounds) + 2)
    return ranges


def _shared_row() -> Any:
    """A row as a worker keeps it in shared memory: int64 slots over a bytearray."""
    return memoryview(bytearray(SLOTS * 8)).cast("q")


# layout -----------------------------------------------------------------------------------------


def test_named_slots_and_histograms_are_disjoint_and_fill_the_row() -> None:
    ranges = _ranges()
    owner: dict[int, str] = {}
    for name, span in ranges.items():
        assert len(span) > 0, name
        for slot in span:
            assert 0 <= slot < SLOTS, (name, slot)
            assert slot not in owner, f"slot {slot} is both {owner[slot]} and {name}"
            owner[slot] = name
    assert sorted(owner) == list(range(SLOTS)), "a slot no name owns"


@pytest.mark.parametrize("shape", HISTOGRAMS.values(), ids=HISTOGRAMS.keys())
def test_histogram_slots(shape: Histogram) -> None:
    assert list(shape.bounds) == sorted(set(shape.bounds)), "bounds strictly increasing"
    assert shape.sum_slot == shape.start + len(shape.bounds) + 1
    assert shape.bucket(float("inf")) == shape.sum_slot - 1  # the +Inf bucket, just before the sum


def test_gauges_are_pending_active_ready_and_the_connections() -> None:
    assert {PENDING, ACTIVE, READY, *range(CONNECTIONS, CONNECTIONS + len(PROTOCOLS))} == GAUGES


def test_names_are_unique() -> None:
    for names in (PROTOCOLS, ABORT_REASONS, ABUSE_KINDS):
        assert len(set(names)) == len(names)
    assert set(ERROR_CODES) == set(ErrorCode)
    assert "operator" in ABORT_REASONS and "shutdown" in ABORT_REASONS and "internal" in ABORT_REASONS


# one record, one slot ---------------------------------------------------------------------------


def _record_each(t: Tally) -> None:
    t.request()
    t.ready()
    t.connection("h2c", 1)
    t.connection("tls", 1)
    t.connection("tls", -1)
    t.pipes(3, 2)
    t.started(4)
    t.moved(1000, 3000)
    t.ended(None, 0.5, 1000)
    t.ended("operator", 12.0, 5 << 20)
    t.error(ErrorCode.TOO_MANY_PENDING)
    t.abuse(Budget.CONTROL)
    t.abuse(Violation.HEADER_BLOCK)


def test_a_list_and_a_shared_memory_row_tally_alike() -> None:
    plain, shared = Tally(), Tally(_shared_row())
    assert len(plain.slots) == SLOTS and len(shared.slots) == SLOTS
    _record_each(plain)
    _record_each(shared)
    assert list(shared.slots) == plain.slots
    assert repr(plain) == repr(shared) == "<Tally started=1 completed=1 pending=3 active=2>"
    assert plain.slots[READY] == 1
    plain.clear_gauges()
    shared.clear_gauges()
    assert list(shared.slots) == plain.slots
    assert plain.slots[PENDING] == plain.slots[ACTIVE] == plain.slots[READY] == 0
    assert plain.slots[STARTED] == 1  # (a counter stays)


def test_a_tally_writes_into_the_memory_it_is_handed() -> None:
    buffer = bytearray(SLOTS * 8)
    t = Tally(memoryview(buffer).cast("q"))
    t.request()
    t.moved(7, 14)
    row = memoryview(buffer).cast("q")
    assert (row[REQUESTS], row[BYTES_IN], row[BYTES_OUT]) == (1, 7, 14)
    assert sum(row) == 22


def test_a_shared_row_holds_int64_counts() -> None:
    t = Tally(_shared_row())
    t.moved(1 << 40, 3 << 40)
    t.moved(1 << 40, 3 << 40)
    assert (t.slots[BYTES_IN], t.slots[BYTES_OUT]) == (2 << 40, 6 << 40)


def test_unknown_names_are_refused() -> None:
    t = Tally()
    with pytest.raises(KeyError):
        t.connection("h3", 1)
    with pytest.raises(KeyError):
        t.ended("bored", 1.0, 1)
    assert t.slots == [0] * SLOTS


# the model: a random sequence of records -------------------------------------------------------


def _bucket(bounds: tuple[float, ...], value: float) -> int:
    """Index of the first bucket whose bound is >= value (Prometheus `le`); len(bounds): +Inf."""
    return bisect.bisect_left(bounds, value)


@dataclasses.dataclass
class Model:
    counters: dict[str, int] = dataclasses.field(default_factory=dict)
    connections: dict[str, int] = dataclasses.field(default_factory=dict)
    aborted: dict[str, int] = dataclasses.field(default_factory=dict)
    errors: dict[ErrorCode, int] = dataclasses.field(default_factory=dict)
    abuse: dict[str, int] = dataclasses.field(default_factory=dict)
    buckets: dict[tuple[str, int], int] = dataclasses.field(default_factory=dict)
    sums: dict[str, int] = dataclasses.field(default_factory=dict)
    pending: int = 0
    active: int = 0
    ready: int = 0

    def bump(self, table: dict[Any, int], key: Any, by: int = 1) -> None:
        table[key] = table.get(key, 0) + by

    def observe(self, name: str, value: float, summed: int) -> None:
        self.bump(self.buckets, (name, _bucket(HISTOGRAMS[name].bounds, value)))
        self.bump(self.sums, name, summed)

    def row(self) -> list[int]:
        row = [0] * SLOTS
        for name in ("STARTED", "COMPLETED", "BYTES_IN", "BYTES_OUT", "REQUESTS"):
            row[SINGLE[name]] = self.counters.get(name, 0)
        row[PENDING], row[ACTIVE], row[READY] = self.pending, self.active, self.ready
        for index, protocol in enumerate(PROTOCOLS):
            row[CONNECTIONS + index] = self.connections.get(protocol, 0)
        for index, reason in enumerate(ABORT_REASONS):
            row[ABORTED + index] = self.aborted.get(reason, 0)
        for index, code in enumerate(ERROR_CODES):
            row[ERRORS + index] = self.errors.get(code, 0)
        for index, kind in enumerate(ABUSE_KINDS):
            row[ABUSE + index] = self.abuse.get(kind, 0)
        for name, shape in HISTOGRAMS.items():
            for index in range(len(shape.bounds) + 1):
                row[shape.start + index] = self.buckets.get((name, index), 0)
            row[shape.sum_slot] = self.sums.get(name, 0)
        return row


Record = tuple[Callable[[Tally], None], Callable[[Model], None]]


def _started(receivers: int) -> Record:
    def model(m: Model) -> None:
        m.bump(m.counters, "STARTED")
        m.observe("RECEIVERS", receivers, receivers)

    return (lambda t: t.started(receivers)), model


def _moved(read: int, written: int) -> Record:
    def model(m: Model) -> None:
        m.bump(m.counters, "BYTES_IN", read)
        m.bump(m.counters, "BYTES_OUT", written)

    return (lambda t: t.moved(read, written)), model


def _ended(reason: str | None, seconds: float, size: int) -> Record:
    def model(m: Model) -> None:
        if reason is None:
            m.bump(m.counters, "COMPLETED")
        else:
            m.bump(m.aborted, reason)
        m.observe("DURATION", seconds, round(seconds * 1_000_000))
        m.observe("SIZE", size, size)

    return (lambda t: t.ended(reason, seconds, size)), model


def _error(code: ErrorCode) -> Record:
    return (lambda t: t.error(code)), (lambda m: m.bump(m.errors, code))


def _abuse(kind: Budget | Violation) -> Record:
    return (lambda t: t.abuse(kind)), (lambda m: m.bump(m.abuse, kind.name.lower()))


def _connection(protocol: str, delta: int) -> Record:
    return (lambda t: t.connection(protocol, delta)), (lambda m: m.bump(m.connections, protocol, delta))


def _pipes(pending: int, active: int) -> Record:
    def model(m: Model) -> None:
        m.pending, m.active = pending, active

    return (lambda t: t.pipes(pending, active)), model


def _clear(_: None) -> Record:
    def model(m: Model) -> None:
        m.pending = m.active = m.ready = 0
        m.connections.clear()

    return (lambda t: t.clear_gauges()), model


def _request(_: None) -> Record:
    return (lambda t: t.request()), (lambda m: m.bump(m.counters, "REQUESTS"))


def _ready(_: None) -> Record:
    def model(m: Model) -> None:
        m.ready = 1

    return (lambda t: t.ready()), model


def _near_bounds(bounds: tuple[float, ...]) -> st.SearchStrategy[float]:
    """Values on a bound, either side of one, and anywhere."""
    on = st.sampled_from(bounds)
    return st.one_of(
        on,
        on.map(lambda b: b * (1 + 1e-9)),
        on.map(lambda b: b * (1 - 1e-9)),
        st.floats(min_value=0, max_value=bounds[-1] * 4, allow_nan=False),
    )


sizes = st.one_of(
    st.sampled_from([int(b) + d for b in SIZE.bounds for d in (-1, 0, 1)]),
    st.integers(min_value=0, max_value=1 << 40),
)
records = st.one_of(
    st.builds(_started, st.integers(min_value=1, max_value=300)),
    st.builds(_moved, st.integers(0, 1 << 30), st.integers(0, 1 << 32)),
    st.builds(
        _ended, st.one_of(st.none(), st.sampled_from(ABORT_REASONS)), _near_bounds(DURATION.bounds), sizes
    ),
    st.builds(_error, st.sampled_from(ERROR_CODES)),
    st.builds(_abuse, st.sampled_from([*Budget, *Violation])),
    st.builds(_connection, st.sampled_from(PROTOCOLS), st.sampled_from([1, -1])),
    st.builds(_pipes, st.integers(0, 10_000), st.integers(0, 10_000)),
    st.builds(_clear, st.none()),
    st.builds(_request, st.none()),
    st.builds(_ready, st.none()),
)


@fuzz_settings(200)
@given(st.lists(records, max_size=40))
def test_records_touch_exactly_their_slots(sequence: list[Record]) -> None:
    plain, shared, model = Tally(), Tally(_shared_row()), Model()
    for record, expect in sequence:
        record(plain)
        record(shared)
        expect(model)
        assert plain.slots == model.row()
    assert list(shared.slots) == plain.slots


# histograms ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", HISTOGRAMS.values(), ids=HISTOGRAMS.keys())
def test_a_value_on_a_bound_goes_in_that_bucket(shape: Histogram) -> None:
    assert shape.bucket(0) == shape.start
    for index, bound in enumerate(shape.bounds):
        assert shape.bucket(bound) == shape.start + index
        above = shape.start + index + 1
        assert shape.bucket(bound + (1e-6 if shape.scale > 1 else 1)) == above
    assert shape.bucket(shape.bounds[-1] * 10) == shape.start + len(shape.bounds)  # +Inf


def test_histogram_totals_are_cumulative_with_sums_in_units() -> None:
    t = Tally()
    for seconds in (0.01, 0.0100001, 0.5, 60.0, 3600.0, 3600.5, 90_000.0):
        t.ended(None, seconds, 0)
    totals = histogram(t.slots, DURATION)
    assert [bound for bound, _ in totals.buckets] == [*DURATION.bounds, float("inf")]
    assert [count for _, count in totals.buckets] == [1, 2, 3, 3, 4, 4, 4, 5, 7]
    assert totals.count == 7
    assert totals.sum == pytest.approx(0.01 + 0.0100001 + 0.5 + 60.0 + 3600.0 + 3600.5 + 90_000.0)
    assert t.slots[DURATION.sum_slot] == 97_261_020_000  # microseconds


def test_size_and_receiver_histograms() -> None:
    t = Tally()
    for size in (0, 1024, 1025, 1 << 36, (1 << 36) + 1):
        t.ended("receivers_gone", 1.0, size)
    for receivers in (1, 1, 2, 4, 256):
        t.started(receivers)
    sizes = histogram(t.slots, SIZE)
    assert sizes.buckets[0] == (1024.0, 2)
    assert sizes.buckets[1] == (65536.0, 3)
    assert sizes.buckets[-2] == (float(1 << 36), 4)
    assert sizes.buckets[-1] == (float("inf"), 5)
    assert sizes.sum == 1024 + 1025 + (1 << 36) + (1 << 36) + 1
    receivers = histogram(t.slots, RECEIVERS)
    assert dict(receivers.buckets) == {
        1.0: 2,
        2.0: 3,
        3.0: 3,
        5.0: 4,
        10.0: 4,
        20.0: 4,
        50.0: 4,
        100.0: 4,
        float("inf"): 5,
    }
    assert (receivers.sum, receivers.count) == (264, 5)


def test_an_empty_histogram() -> None:
    totals = histogram([0] * SLOTS, SIZE)
    assert totals.count == 0 and totals.sum == 0
    assert all(count == 0 for _, count in totals.buckets)


# totals and readers ----------------------------------------------------------------------------


def test_total_sums_every_row() -> None:
    rows: list[Any] = [Tally(), Tally(_shared_row()), Tally(_shared_row())]
    for index, row in enumerate(rows):
        for _ in range(index + 1):
            row.request()
            row.error(ErrorCode.INVALID_N)
        row.connection("h2", 1)
        row.moved(10 * (index + 1), 20)
    summed = total([row.slots for row in rows])
    assert len(summed) == SLOTS
    assert summed[REQUESTS] == 6
    assert summed[BYTES_IN] == 60 and summed[BYTES_OUT] == 60
    assert by_name(summed, CONNECTIONS, PROTOCOLS) == {"http1": 0, "tls": 0, "h2": 3, "h2c": 0, "unix": 0}
    assert errors(summed)[ErrorCode.INVALID_N] == 6
    assert sum(errors(summed).values()) == 6
    assert [row.slots[REQUESTS] for row in rows] == [1, 2, 3]  # (the rows are only read)


def test_total_of_no_rows_is_zero() -> None:
    assert total([]) == [0] * SLOTS


def test_by_name_reads_each_group() -> None:
    t = Tally()
    t.ended("shutdown", 1.0, 1)
    t.abuse(Budget.RESETS)
    assert by_name(t.slots, ABORTED, ABORT_REASONS) == {r: int(r == "shutdown") for r in ABORT_REASONS}
    assert by_name(t.slots, ABUSE, ABUSE_KINDS) == {k: int(k == "resets") for k in ABUSE_KINDS}
    assert set(errors(t.slots)) == set(ErrorCode)


# limits ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("code", list(LIMITS), ids=lambda code: code.value)
def test_limits_are_rejections_of_a_limit(code: ErrorCode) -> None:
    assert status_of(code) in (429, 503, 414, 431)


def test_limit_names_are_unique_and_name_a_setting() -> None:
    names = list(LIMITS.values())
    assert len(set(names)) == len(names)
    fields = {field.name for field in dataclasses.fields(Config)}
    # (max_headers is fixed: no flag sets it)
    assert {name for name in names if name not in fields} == {"max_headers"}


def test_no_status_503_for_a_drain_or_restart_is_a_limit() -> None:
    assert ErrorCode.SHUTTING_DOWN not in LIMITS
    assert ErrorCode.WORKER_UNAVAILABLE not in LIMITS
    # every 429 is a client's limit
    assert {code for code in ErrorCode if status_of(code) == 429} <= set(LIMITS)


def test_module_has_no_stray_slot_constants() -> None:
    """Every int constant of the module in upper case is a slot this file knows (or SLOTS)."""
    known = {*SINGLE, "CONNECTIONS", "ABORTED", "ERRORS", "ABUSE", "SLOTS"}
    found = {
        name
        for name, value in vars(tally).items()
        if name.isupper() and isinstance(value, int) and not isinstance(value, bool)
    }
    assert found == known
    shapes = {name for name, value in vars(tally).items() if isinstance(value, Histogram)}
    assert shapes == set(HISTOGRAMS)
