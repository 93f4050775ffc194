# Rate caps as virtual time: one transfer's (--rate-limit), or one user's, shared by all of their transfers.
# Invariant: what reads through a Pace never runs ahead of its rate; pure (times handed in, no clock).
"""A read is due at `Pace.due`; a read of `size` bytes moves `due` on by size / (rate * share), from
when it was taken (an idle pace saves up nothing). Transfers sharing one Pace take turns: two of them
each get half the rate. Under --workers a user's transfers may run in several workers: each worker's
Pace then takes its share of the rate, its own transfers of the user over those of every worker
(counted in the workers' shared table, as a client's are)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from .quotas import USER_KIND
from .shared_counts import SharedCounts

USER_PREFIX = "\0user "
"""How a user is named in the shared table (no client address starts so)."""


@dataclass
class Pace:
    """`rate` bytes a second for the transfers that read through it (`transfers` of them here)."""

    rate: int
    user: str | None = None
    shared: SharedCounts | None = None
    due: float = -math.inf
    transfers: int = 0

    def share(self) -> float:
        """This worker's part of the rate: its transfers of the user over every worker's (1 alone)."""
        if self.shared is None or self.user is None or not self.transfers:
            return 1.0
        total = self.shared.total(USER_PREFIX + self.user, USER_KIND)
        return self.transfers / total if total > self.transfers else 1.0

    def took(self, size: int, now: float) -> None:
        """`size` bytes were read at `now`: the next read is due once they have had their time."""
        self.due = max(self.due, now) + size / (self.rate * self.share())


@dataclass
class Paces:
    """The users' paces in this worker: one per user with a rate and a transfer running."""

    shared: SharedCounts | None = None
    _by_user: dict[str, Pace] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self._by_user)

    def join(self, user: str | None, rate: int) -> Pace:
        """A transfer capped at `rate` starts: `user`'s pace (its rate set to `rate`, which a reload
        may have changed), or a pace of its own (`user` None: `--rate-limit`, per transfer)."""
        if user is None:
            pace = Pace(rate)
        else:
            pace = self._by_user.setdefault(user, Pace(rate, user, self.shared))
            pace.rate = rate
            if self.shared is not None:
                self.shared.add(USER_PREFIX + user, USER_KIND, 1)
        pace.transfers += 1
        return pace

    def leave(self, pace: Pace) -> None:
        """A transfer that joined `pace` ended: a user's pace with none left is forgotten."""
        pace.transfers -= 1
        if pace.user is None:
            return
        if self.shared is not None:
            self.shared.add(USER_PREFIX + pace.user, USER_KIND, -1)
        if not pace.transfers:
            self._by_user.pop(pace.user, None)
