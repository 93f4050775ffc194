# The sans-IO HTTP/2 abuse accounting: token buckets, the budgets, the frame scanner's batches and refusals.
# Invariant: plain sync tests with the time passed in; frames built byte by byte here, no h2 library.
from __future__ import annotations

import itertools
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipe_relay.core.abuse import (
    BATCH_BLOCKS,
    BATCH_FRAMES,
    MAX_CONTROL_FRAME,
    Batch,
    Budget,
    FloodLimits,
    FrameScanner,
    Glitches,
    Meter,
    Violation,
)

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, PRIORITY, RST, SETTINGS, PING, WINDOW_UPDATE, CONTINUATION = 0, 1, 2, 3, 4, 6, 8, 9
END_STREAM, END_HEADERS = 0x1, 0x4


def frame(kind: int, flags: int = 0, stream_id: int = 1, payload: bytes = b"") -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes((kind, flags)) + struct.pack(">I", stream_id) + payload


def scan_all(scanner: FrameScanner, data: bytes) -> list[Batch]:
    batches: list[Batch] = []
    start = 0
    while start < len(data):
        batch = scanner.next_batch(data, start)
        batches.append(batch)
        if batch.violation is not None:
            break
        start = batch.end
    return batches


def test_a_meter_gives_its_burst_then_its_rate() -> None:
    meter = Meter(rate=10, burst=100)
    assert meter.spend(100, now=0.0)
    assert not meter.spend(1, now=0.0)  # empty
    assert meter.spend(9, now=1.0)  # 1 s later: 10 more, 1 owed before
    assert not meter.spend(1, now=1.0)
    assert meter.spend(50, now=100.0)  # refills to its burst, never above
    assert meter.spend(50, now=100.0) and not meter.spend(1, now=100.0)


def test_a_meter_refund_never_overflows_the_burst() -> None:
    meter = Meter(rate=0, burst=5)
    meter.refund(100)
    assert meter.spend(5, now=0.0) and not meter.spend(1, now=0.0)


def test_each_budget_runs_out_on_its_own() -> None:
    limits = FloodLimits(resets=(2, 0), streams=(3, 0), control=(4, 0), window_updates=(5, 0))
    glitches = Glitches(limits)
    for budget, burst in ((Budget.RESETS, 2), (Budget.STREAMS, 3), (Budget.CONTROL, 4)):
        assert all(glitches.charge(budget, 1, now=0.0) for _ in range(burst)), budget
        assert not glitches.charge(budget, 1, now=0.0), budget
    assert glitches.charge(Budget.WINDOW_UPDATES, 5, now=0.0)
    assert glitches.charge(Budget.HEADER_BYTES, 1 << 20, now=0.0)


def test_a_party_stream_is_refunded_and_data_sent_pays_for_window_updates() -> None:
    glitches = Glitches(FloodLimits(streams=(1, 0), window_updates=(2, 0), window_refund=1000))
    assert glitches.charge(Budget.STREAMS, 1, now=0.0)
    glitches.refund(Budget.STREAMS, 1)
    assert glitches.charge(Budget.STREAMS, 1, now=0.0)
    assert glitches.charge(Budget.WINDOW_UPDATES, 2, now=0.0)
    glitches.data_sent(3000)  # 3 window updates' worth, capped at the burst of 2
    assert glitches.charge(Budget.WINDOW_UPDATES, 2, now=0.0)
    assert not glitches.charge(Budget.WINDOW_UPDATES, 1, now=0.0)


def test_nothing_costs_nothing() -> None:
    glitches = Glitches(FloodLimits(control=(0, 0)))
    assert glitches.charge(Budget.CONTROL, 0, now=0.0)
    assert not glitches.charge(Budget.CONTROL, 1, now=0.0)


def test_the_preface_is_skipped_and_frames_are_told_apart() -> None:
    data = (
        PREFACE
        + frame(SETTINGS, stream_id=0, payload=b"\x00\x04\x00\x01\x00\x00")
        + frame(WINDOW_UPDATE, stream_id=0, payload=b"\x00\x00\x01\x00")
        + frame(HEADERS, END_HEADERS, payload=b"\x82")
        + frame(DATA, 0, payload=b"")  # empty, not the end: a control frame
        + frame(DATA, END_STREAM, payload=b"")  # the end of a body: not one
        + frame(PING, stream_id=0, payload=b"12345678")
        + frame(PRIORITY, stream_id=3, payload=b"\x00\x00\x00\x00\x10")
        + frame(0x42, stream_id=0, payload=b"ext")  # unknown type: a control frame
        + frame(RST, payload=b"\x00\x00\x00\x08")
        + frame(DATA, 0, payload=b"x" * 70000)
    )
    batches = scan_all(FrameScanner(max_header_block=65536), data)
    assert len(batches) == 1
    assert batches[0] == Batch(len(data), frames=10, control=5, window_updates=1, blocks=1, encoded=1)


def test_batches_end_at_the_frame_or_block_limit_and_cover_everything() -> None:
    pings = frame(PING, stream_id=0, payload=b"12345678") * (BATCH_FRAMES + 5)
    batches = scan_all(FrameScanner(max_header_block=65536), PREFACE + pings)
    assert [batch.frames for batch in batches] == [BATCH_FRAMES, 5]
    assert batches[-1].end == len(PREFACE + pings)
    requests = frame(HEADERS, END_HEADERS | END_STREAM, payload=b"\x82\x84") * (BATCH_BLOCKS * 2 + 1)
    batches = scan_all(FrameScanner(max_header_block=65536), PREFACE + requests)
    assert [batch.blocks for batch in batches] == [BATCH_BLOCKS, BATCH_BLOCKS, 1]
    assert batches[0].end == len(PREFACE) + BATCH_BLOCKS * 11  # (a batch ends after a whole frame)


@pytest.mark.parametrize("frame_size", [16384, 1 << 20])
def test_a_header_block_is_refused_as_it_grows_past_its_limit(frame_size: int) -> None:
    """HEADERS then CONTINUATIONs without END_HEADERS: refused at the frame that would pass the
    limit, before its payload is taken (the CONTINUATION flood)."""
    limit = 65536
    start = frame(HEADERS, 0, payload=b"\x82" * 1000)
    filler = frame(CONTINUATION, 0, payload=b"\x00" * frame_size)
    data = PREFACE + start + filler * 8
    batches = scan_all(FrameScanner(max_header_block=limit), data)
    last = batches[-1]
    assert last.violation is Violation.HEADER_BLOCK
    taken = sum(1 for batch in batches for _ in range(batch.frames))
    assert 1000 + (taken - 1) * frame_size <= limit < 1000 + taken * frame_size
    assert last.end == len(PREFACE) + len(start) + (taken - 1) * len(filler)


def test_a_header_block_at_its_limit_is_taken_and_the_next_starts_afresh() -> None:
    scanner = FrameScanner(max_header_block=1000)
    data = (
        PREFACE + frame(HEADERS, 0, payload=b"a" * 600) + frame(CONTINUATION, END_HEADERS, payload=b"b" * 400)
    )
    data += frame(HEADERS, END_HEADERS, stream_id=3, payload=b"c" * 1000)
    (batch,) = scan_all(scanner, data)
    assert (batch.violation, batch.blocks, batch.end) == (None, 2, len(data))
    (over,) = scan_all(scanner, frame(HEADERS, END_HEADERS, stream_id=5, payload=b"d" * 1001))
    assert (over.violation, over.end, over.frames) == (Violation.HEADER_BLOCK, 0, 0)


def test_a_control_frame_larger_than_the_default_frame_size_is_refused() -> None:
    scanner = FrameScanner(max_header_block=65536)
    ok = frame(SETTINGS, stream_id=0, payload=b"\x00" * MAX_CONTROL_FRAME)
    (batch,) = scan_all(scanner, PREFACE + ok)
    assert batch.violation is None
    (batch,) = scan_all(scanner, frame(SETTINGS, stream_id=0, payload=b"\x00" * (MAX_CONTROL_FRAME + 6)))
    assert batch.violation is Violation.CONTROL_FRAME


def test_empty_continuations_inside_a_block_are_control_frames() -> None:
    data = PREFACE + frame(HEADERS, 0, payload=b"\x82") + frame(CONTINUATION, 0) * 3
    data += frame(CONTINUATION, END_HEADERS)
    (batch,) = scan_all(FrameScanner(max_header_block=65536), data)
    assert (batch.frames, batch.control, batch.blocks) == (5, 3, 1)


STREAM = (
    PREFACE
    + frame(SETTINGS, stream_id=0)
    + frame(HEADERS, 0, payload=b"h" * 300)
    + frame(CONTINUATION, END_HEADERS, payload=b"c" * 200)
    + frame(DATA, 0, payload=b"d" * 5000)
    + frame(DATA, 0)
    + frame(PING, stream_id=0, payload=b"12345678") * 3
    + frame(WINDOW_UPDATE, stream_id=0, payload=b"\x00\x00\x00\x01") * 2
    + frame(HEADERS, END_HEADERS, stream_id=3, payload=b"x" * 900)
)


@given(st.lists(st.integers(min_value=1, max_value=len(STREAM)), max_size=12))
def test_any_split_of_the_bytes_counts_the_same(cuts: list[int]) -> None:
    """However the socket splits the stream, the same frames are counted and the same block refused."""
    for limit, refused in ((4096, False), (800, True)):
        scanner = FrameScanner(max_header_block=limit)
        totals = [0, 0, 0, 0, 0]
        violation = None
        points = sorted({0, *cuts, len(STREAM)})
        for begin, end in itertools.pairwise(points):
            piece = STREAM[begin:end]
            for batch in scan_all(scanner, piece):
                totals = [a + b for a, b in zip(totals, _counts(batch), strict=True)]
                violation = violation or batch.violation
            if violation:
                break
        if refused:
            assert violation is Violation.HEADER_BLOCK and totals == [10, 5, 2, 1, 500]
        else:
            assert violation is None and totals == [11, 5, 2, 2, 1400]


def _counts(batch: Batch) -> list[int]:
    return [batch.frames, batch.control, batch.window_updates, batch.blocks, batch.encoded]
