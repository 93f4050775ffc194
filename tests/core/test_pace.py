# core.pace: a rate cap as virtual time, per transfer or shared by a user's transfers (and workers).
# Invariant: pure; times are numbers handed in; the shared table is a bytearray both "workers" map.
from __future__ import annotations

import pytest

from pipe_relay.core.pace import Pace, Paces
from pipe_relay.core.quotas import KINDS
from pipe_relay.core.shared_counts import SharedCounts

RATE = 1000


def _read(pace: Pace, size: int, now: float) -> float:
    """A read that waits until the pace says it is due, as body.Paced does; when it was taken."""
    taken = max(now, pace.due)
    pace.took(size, taken)
    return taken


def test_one_transfer_is_held_to_its_rate_and_an_idle_pace_saves_nothing_up() -> None:
    pace = Paces().join(None, RATE)
    times = [_read(pace, 100, now=0.0) for _ in range(5)]
    assert times == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4])
    assert _read(pace, 100, now=10.0) == 10.0  # (idle for 9.5 s: no burst after it)
    assert pace.due == pytest.approx(10.1)


def test_a_users_transfers_share_one_pace_and_each_gets_its_part() -> None:
    paces = Paces()
    first, second = paces.join("alice", RATE), paces.join("alice", RATE)
    assert first is second and first.transfers == 2 and len(paces) == 1
    taken = 0
    now = 0.0
    while now < 10.0:  # (the two read in turns, each as soon as it is due)
        now = _read(first, 100, now)
        now = _read(second, 100, now)
        taken += 200
    assert taken <= RATE * now + 200  # (the user's rate, not twice it)
    assert taken >= RATE * now - 200
    other = paces.join("bob", RATE)
    assert other is not first and len(paces) == 2


def test_rate_limit_paces_are_per_transfer() -> None:
    paces = Paces()
    one, two = paces.join(None, RATE), paces.join(None, RATE)
    assert one is not two and len(paces) == 0
    assert _read(one, 100, 0.0) == _read(two, 100, 0.0) == 0.0
    assert one.due == two.due == pytest.approx(0.1)


def test_a_users_pace_is_forgotten_with_its_last_transfer_and_a_reload_changes_its_rate() -> None:
    paces = Paces()
    first = paces.join("alice", RATE)
    again = paces.join("alice", 2 * RATE)  # (the policy was reloaded with a new rate)
    assert again is first and first.rate == 2 * RATE
    paces.leave(first)
    assert len(paces) == 1
    paces.leave(again)
    assert len(paces) == 0
    assert paces.join("alice", RATE) is not first


def test_under_workers_each_worker_takes_its_share_of_a_users_rate() -> None:
    memory = bytearray(SharedCounts.size(slots=64, kinds=KINDS, workers=2))
    views = [
        SharedCounts(memoryview(memory), slots=64, kinds=KINDS, workers=2, worker=w, key=b"k") for w in (0, 1)
    ]
    zero, one = Paces(views[0]), Paces(views[1])
    here = zero.join("alice", RATE)
    assert here.share() == 1.0
    there = [one.join("alice", RATE), one.join("alice", RATE)]  # (alice's other two transfers)
    assert here.share() == pytest.approx(1 / 3) and there[0].share() == pytest.approx(2 / 3)
    _read(here, 100, 0.0)
    assert here.due == pytest.approx(0.3)  # (100 bytes at a third of the rate)
    one.leave(there[0])
    one.leave(there[1])
    assert here.share() == 1.0 and one.join("bob", RATE).share() == 1.0
