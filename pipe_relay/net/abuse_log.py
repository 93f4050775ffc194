# The abuse log: one warning per client ended for spending a budget, at most one line a second.
# Invariant: a flood of ended clients costs one log line a second, and the lines say how many they stand for.
from __future__ import annotations

import logging
import math

import trio

from ..core.abuse import Budget, Violation
from .telemetry import TALLY

log = logging.getLogger("pipe_relay")

_next_line = -math.inf
_unlogged = 0


def ended_for_abuse(peer: str, how: str, why: Budget | Violation) -> None:
    """`peer` was ended (`how`: GOAWAY ENHANCE_YOUR_CALM, closed) for `why` (a budget spent)."""
    global _next_line, _unlogged
    TALLY.abuse(why)
    now = trio.current_time()
    if now < _next_line:
        _unlogged += 1
        return
    more = f" ({_unlogged} more since the last line)" if _unlogged else ""
    log.warning("client %s ended (%s): %s%s", peer, how, why.value, more)
    _next_line, _unlogged = now + 1.0, 0
