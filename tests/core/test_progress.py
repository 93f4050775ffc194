# Transfer progress as watchers see it: final states, snapshot JSON, SSE framing, the rate.
# Invariant: pure and sync; every assertion is an exact value (bytes or JSON text).
from __future__ import annotations

import pytest

from pipe_relay.core.progress import (
    Snapshot,
    TransferState,
    rate_between,
    sse_event,
    sse_keepalive,
    sse_open,
    wants_event_stream,
)


@pytest.mark.parametrize(
    ("state", "final"),
    [
        (TransferState.IDLE, False),
        (TransferState.WAITING, False),
        (TransferState.STREAMING, False),
        (TransferState.DONE, True),
        (TransferState.ABORTED, True),
    ],
)
def test_only_done_and_aborted_are_final(state: TransferState, final: bool) -> None:
    assert state.final is final


SNAPSHOT = Snapshot(
    state=TransferState.STREAMING,
    bytes=1500,
    total=4096,
    receivers=2,
    expected=3,
    rate=1234.5678,
    elapsed=1.23456,
)


def test_snapshot_json_is_compact_and_rounded() -> None:
    assert SNAPSHOT.to_json() == (
        '{"state":"streaming","bytes":1500,"total":4096,'
        '"receivers":{"connected":2,"expected":3},"rate":1234.6,"elapsed":1.235}'
    )


def test_snapshot_json_with_unknown_total() -> None:
    snapshot = Snapshot(TransferState.WAITING, 0, None, 0, 1, 0.0, 0.0)
    assert snapshot.to_json() == (
        '{"state":"waiting","bytes":0,"total":null,'
        '"receivers":{"connected":0,"expected":1},"rate":0.0,"elapsed":0.0}'
    )


def test_sse_framing() -> None:
    assert sse_open() == b"retry: 2000\n\n"
    assert sse_event(SNAPSHOT) == b"data: " + SNAPSHOT.to_json().encode() + b"\n\n"
    assert sse_keepalive() == b": keep-alive\n\n"


@pytest.mark.parametrize(
    ("accept", "stream"),
    [
        (None, True),
        ("", True),
        ("text/event-stream", True),
        ("*/*", True),
        ("text/html,application/xhtml+xml;q=0.9", False),
        ("TEXT/HTML", False),
    ],
)
def test_wants_event_stream(accept: str | None, stream: bool) -> None:
    assert wants_event_stream(accept) is stream


@pytest.mark.parametrize(
    ("before", "after", "rate"),
    [
        ((10.0, 100), (12.0, 300), 100.0),
        ((1.0, 0), (1.5, 100), 200.0),
        ((5.0, 100), (5.0, 900), 0.0),  # no time passed
        ((6.0, 100), (5.0, 900), 0.0),  # the clock went back
    ],
)
def test_rate_between(before: tuple[float, int], after: tuple[float, int], rate: float) -> None:
    assert rate_between(before, after) == rate
