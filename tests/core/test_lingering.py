# core.lingering: when an answered stream's upload is cut off, and what window the connection gets back.
# Invariant: pure; times are numbers handed in.
from __future__ import annotations

from pipe_relay.core.lingering import ACK_STEP, MOST, SECONDS, Lingering


def test_a_stream_lingers_until_its_deadline_then_is_expired_once() -> None:
    lingering = Lingering()
    assert lingering.add(1, now=100.0)
    assert 1 in lingering and lingering.next_deadline() == 100.0 + SECONDS
    assert lingering.expired(100.0 + SECONDS - 0.001) == []
    assert lingering.expired(100.0 + SECONDS) == [1]
    assert 1 not in lingering and lingering.expired(1e9) == []
    assert lingering.next_deadline() == float("inf")


def test_a_stream_the_client_ends_is_forgotten_and_never_reset() -> None:
    lingering = Lingering()
    lingering.add(1, now=0.0)
    lingering.add(3, now=0.5)
    lingering.forget(1)
    lingering.forget(99)  # (a stream that never lingered: nothing happens)
    assert lingering.next_deadline() == 0.5 + SECONDS
    assert lingering.expired(10.0) == [3]


def test_past_most_the_next_stream_is_refused_the_linger() -> None:
    lingering = Lingering()
    assert all(lingering.add(2 * i + 1, now=0.0) for i in range(MOST))
    assert not lingering.add(2 * MOST + 1, now=0.0)
    assert 2 * MOST + 1 not in lingering
    assert sorted(lingering.all()) == [2 * i + 1 for i in range(MOST)]
    assert lingering.add(1001, now=0.0)  # (a drain emptied it: room again)


def test_dropped_bytes_open_the_connection_window_in_steps_and_none_is_lost() -> None:
    lingering = Lingering()
    sizes = [1000, ACK_STEP - 1001, 1, 5, ACK_STEP * 3, 7]
    opened = [lingering.drop(size) for size in sizes]
    assert opened == [0, 0, ACK_STEP, 0, ACK_STEP * 3 + 5, 0]
    assert sum(opened) + lingering.dropped == sum(sizes)
