# The seek budget: parsing towards forms' content parts takes turns and rests, whatever the senders.
from __future__ import annotations

import itertools
import time

import trio

from pipe_relay.core.forms import FormExtractor, PartData, PartEnd, PartStart
from pipe_relay.net.body import SeekBudget

STEP = 0.02


class _SlowExtractor(FormExtractor):
    """A form whose every feed costs STEP seconds of CPU, as thousands of tiny fields do."""

    def __init__(self, spans: list[tuple[float, float]]) -> None:
        super().__init__("multipart/form-data; boundary=x")
        self.spans = spans

    def feed(self, data: bytes) -> list[PartStart | PartData | PartEnd]:
        started = time.perf_counter()
        while time.perf_counter() - started < STEP:
            pass
        self.spans.append((started, time.perf_counter()))
        return []


async def test_steps_of_many_senders_take_turns_and_rest_nine_times_as_long() -> None:
    budget = SeekBudget(share=0.1)
    spans: list[tuple[float, float]] = []
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            for _ in range(3):
                nursery.start_soon(budget.step, _SlowExtractor(spans), b"x")
    spans.sort()
    assert len(spans) == 3
    for (_, end), (start, _) in itertools.pairwise(spans):
        gap = start - end
        assert 9 * STEP * 0.9 <= gap <= 9 * STEP * 3 + 0.5, gap  # one at a time, then a rest
