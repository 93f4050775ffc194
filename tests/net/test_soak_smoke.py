# The soak run in small: 100 randomized transfers (fixed seed) over a buffer and a splice server, with
# parties killed at random moments. Invariant: no corrupted, false-complete or lost receiver; clean servers.
from __future__ import annotations

import pytest
import trio

from loadtests.soak import make_plans, receiver_verdict, soak
from loadtests.soak_parties import Kill, Outcome, Party

SEED = 7


async def test_a_hundred_randomized_transfers_with_kills_end_clean() -> None:
    with trio.fail_after(90):
        counts, problems = await soak(100, seed=SEED, concurrency=8, seconds=60)
    assert problems == []
    assert counts["transfers"] == 100
    assert (counts["corrupted"], counts["false-complete"], counts["lost"], counts["senders lost"]) == (
        0,
        0,
        0,
        0,
    )
    assert counts["completed"] > 100  # most receivers get their body
    assert counts["transfers with a kill"] > 10  # and the kills did happen
    killed = sum(v for k, v in counts.items() if k.startswith("killed "))
    assert killed > 10
    assert any(k.startswith("killed waiting") for k in counts) and counts["replacements"] > 0


def test_the_plan_covers_every_kind_of_party() -> None:
    plans = make_plans(100, SEED, 0.2, 64 << 20)
    assert {p.sender.kind for p in plans} == {"raw-length", "raw-chunked", "curl-file", "curl-chunked"}
    assert {p.n for p in plans} == {1, 2, 3, 4}
    assert {p.server for p in plans} == {0, 1}
    kills = [party.kill for plan in plans for party in plan.parties if party.kill]
    assert {(k.when, k.how) for k in kills} >= {
        ("waiting", "rst"),
        ("streaming", "fin"),
        ("streaming", "sigkill"),
    }
    sizes = [p.size for p in plans]
    assert min(sizes) < 100 and max(sizes) > 8 << 20


@pytest.mark.parametrize(
    ("clean", "correct", "finished", "expected"),
    [
        (True, True, [True], "completed"),
        (True, False, [True], "corrupted"),
        (True, True, [False], "false-complete"),  # e.g. all data but no chunked terminator
        (True, True, [False, None], "completed"),  # a curl -T file sender may have sent it all
        (True, True, [False, True], "completed"),  # a replacement sender finished
        (False, False, [False], "aborted"),
    ],
)
def test_receiver_verdicts(clean: bool, correct: bool, finished: list[bool | None], expected: str) -> None:
    senders = [
        Outcome(Party("sender", "raw-chunked", 0.0, Kill("streaming", "fin", 1.0)), finished=f)
        for f in finished
    ]
    receiver = Outcome(Party("receiver", "raw", 0.0), clean=clean, correct=correct)
    assert receiver_verdict(senders, receiver) == expected
