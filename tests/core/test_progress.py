# Transfer progress as watchers see it: final states, snapshot JSON, SSE framing, the rate.
# Invariant: pure and sync; every assertion is an exact value (bytes or JSON text).
from __future__ import annotations

import pytest

from pipe_relay.core.progress import (
    Snapshot,
    TransferState,
    next_state,
    rate_between,
    sse_event,
    sse_keepalive,
    sse_open,
)
from pipe_relay.core.registry import PipeState
from pipe_relay.core.routing import wants_html


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
def test_progress_streams_events_unless_html_is_asked_for(accept: str | None, stream: bool) -> None:
    """One Accept parser (routing.wants_html) decides both ?progress and ?video."""
    assert wants_html(accept) is not stream


@pytest.mark.parametrize(
    ("current", "pipe", "after"),
    [
        (TransferState.WAITING, None, TransferState.IDLE),
        (TransferState.STREAMING, None, TransferState.IDLE),
        (TransferState.IDLE, PipeState.PENDING, TransferState.WAITING),
        (TransferState.WAITING, PipeState.ACTIVE, TransferState.STREAMING),
        (TransferState.STREAMING, PipeState.ACTIVE, TransferState.STREAMING),
        (TransferState.DONE, None, TransferState.DONE),
        (TransferState.ABORTED, PipeState.ACTIVE, TransferState.ABORTED),
        (TransferState.DONE, PipeState.PENDING, TransferState.DONE),
    ],
)
def test_the_state_watchers_see_follows_the_registry(
    current: TransferState, pipe: PipeState | None, after: TransferState
) -> None:
    assert next_state(current, pipe) is after


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
