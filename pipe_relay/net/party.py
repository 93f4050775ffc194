# Parties: a sender or a receiver taking part in a pipe (over any Link), and how the waiting ones nap.
# Invariant: a napping party wakes when poked, at the next tick, or at once when its peer hangs up.
from __future__ import annotations

import enum
import math
import select
from dataclasses import dataclass

import trio

from ..core import status
from ..core.registry import Closed, Established, Expired
from ..core.replies import TEXT_PLAIN
from ..core.routing import Receive, Request, Send
from ..errors import PipeError
from .link import CloseMode, Link, Stream

POLL_INTERVAL = 0.5
"""How often a waiting party looks at its heartbeat (and, where hang-ups are not watched, its socket)."""
CHECK_SPACING = 1.0
"""A waiting sender is checked for another address's sender at most this often (its line each time)."""
_HANGUP = getattr(select, "EPOLLRDHUP", 0)


Outcome = Established["Party"] | Expired["Party"] | Closed["Party"]


class Party:
    """A sender or receiver taking part in a pipe: its connection (`link`), what it asked, how its
    wait ended (`outcome`, set once), and its nap while it waits."""

    def __init__(
        self,
        link: Link,
        request: Request,
        decision: Send | Receive,
        naps: Naps,
        client: str = "",
    ) -> None:
        self.link = link
        self.request = request
        self.decision = decision
        self.client = client
        """The address its per-client limits count under."""
        self.outcome: Outcome | None = None
        self.waiting = False
        """Counted in its client's pending quota (set and cleared by the hub)."""
        self._naps = naps
        self._poked = False
        self._napper: trio.lowlevel.Task | None = None  # the party's task, while it naps
        link.on_gone(self.poke)  # (a link that hears its client leave wakes the nap at once)

    def __repr__(self) -> str:
        state = type(self.outcome).__name__ if self.outcome else "waiting"
        return f"<{type(self).__name__} {self.decision.key!r} {state}>"

    @property
    def key(self) -> str:
        return self.decision.key

    @property
    def n(self) -> int:
        return self.decision.n

    def settle(self, outcome: Outcome) -> None:
        assert self.outcome is None, f"{self!r} settled twice"
        self.outcome = outcome
        self.poke()

    def poke(self) -> None:
        """Something happened to this party (or it is time to look at its socket): end its nap."""
        self._poked = True
        napper = self._napper
        if napper is not None:
            self._napper = None
            trio.lowlevel.reschedule(napper)

    async def nap(self) -> None:
        """Sleep until something happens to this party (since its last nap) or the next tick of
        the hub's `Naps` (every POLL_INTERVAL at most). No deadline of its own (no cancel scope),
        no Event: the napping task itself is rescheduled by `poke`."""
        if self._poked:
            await trio.lowlevel.checkpoint()
        else:
            self._napper = trio.lowlevel.current_task()
            self._naps.add(self)
            try:
                await trio.lowlevel.wait_task_rescheduled(self._abort_nap)
            finally:
                self._naps.discard(self)
        self._poked = False

    def _abort_nap(self, _: trio.lowlevel.RaiseCancelT) -> trio.lowlevel.Abort:
        self._napper = None
        return trio.lowlevel.Abort.SUCCEEDED


class Sender(Party):
    """The sending party: its body is the transfer's source; it reads a status stream meanwhile."""

    def __init__(self, link: Link, request: Request, decision: Send, naps: Naps, client: str = "") -> None:
        super().__init__(link, request, decision, naps, client)
        self.receivers_now = 0
        """Receivers connected now; `receivers_told`, the count last said to the sender."""
        self.receivers_told = 0
        self._unsent = b""
        self._status_stream: Stream | None = None
        self._check: trio.Event | None = None
        self.next_check = -math.inf
        """Before this time, only a sender from its own address may have it checked again."""

    @property
    def check_wanted(self) -> bool:
        return self._check is not None

    def want_check(self) -> trio.Event:
        """Another sender wants this path: this sender's task says a status line and waits for
        its client's answer (`Link.still_there`). The event is set once it did, or left."""
        if self._check is None:
            self._check = trio.Event()
            self.poke()
        return self._check

    def checked(self) -> None:
        """The check asked for (if any) is done: the sender answered, or it left the registry."""
        check, self._check = self._check, None
        if check is not None:
            self.next_check = trio.current_time() + CHECK_SPACING
            check.set()

    def count_changed(self, receivers: int) -> None:
        self.receivers_now = receivers
        self.poke()

    def start_status_stream(self) -> None:
        """Open the 200 status stream (its head goes with the first line), answering
        `Expect: 100-continue` where the protocol has it: the body is wanted."""
        self._status_stream = self.link.open_stream(self.request, TEXT_PLAIN, answer_continue=True)

    async def say(self, *lines: str, end: bool = False) -> bool:
        """Status lines to the sender in one write (`end`: and close the stream). False if it is gone."""
        assert self._status_stream is not None, "say before start_status_stream"
        self.defer(*lines)
        text, self._unsent = self._unsent, b""
        return await self._status_stream.send(text, end=end)

    def defer(self, *lines: str) -> None:
        """Status lines that go out with the next `say` (in the same write, ahead of its lines)."""
        self._unsent += "".join(line + "\n" for line in lines if line).encode("utf-8")

    def count_line(self) -> str:
        """`J of K receiver(s) connected.` if the count changed since last told (fan-out only)."""
        if self.n == 1 or self.receivers_now == self.receivers_told:
            return ""
        self.receivers_told = self.receivers_now
        return status.connected(self.receivers_now, self.n)


class Ending(enum.Enum):
    """How a transfer ended for one receiver."""

    COMPLETED = "completed"
    """It has the whole body and its end."""
    ABORTED = "aborted"
    """Cut short: its connection is reset, so it can never take the body for a whole one."""
    FAILED = "failed"
    """Nothing reached it yet: it gets an error reply instead."""
    REQUEUED = "requeued"
    """The sender was found gone before anything reached it: it waits for a sender again."""


@dataclass(frozen=True, slots=True)
class ReceiverEnd:
    ending: Ending
    error: PipeError | None = None
    """The reply of a FAILED receiver."""

    @property
    def close_mode(self) -> CloseMode:
        """The one place a receiver's close follows from its end: a cut one is reset."""
        return CloseMode.ABORT if self.ending is Ending.ABORTED else CloseMode.NORMAL


COMPLETED = ReceiverEnd(Ending.COMPLETED)
ABORTED = ReceiverEnd(Ending.ABORTED)
REQUEUED = ReceiverEnd(Ending.REQUEUED)


class Receiver(Party):
    """A receiving party: the sender's task writes its response body, then says how it ended."""

    def __init__(self, link: Link, request: Request, decision: Receive, naps: Naps, client: str = "") -> None:
        super().__init__(link, request, decision, naps, client)
        self.end: ReceiverEnd | None = None
        self.released = trio.Event()
        """Set (with `end`) when the sender's task no longer writes to this receiver."""

    def __repr__(self) -> str:
        end = f" {self.end.ending.value}" if self.end else ""
        return super().__repr__()[:-1] + end + ">"

    def release(self, end: ReceiverEnd) -> None:
        """The sender's task is done with this receiver, for this reason (said once)."""
        if self.end is None:
            self.end = end
            self.released.set()


class Naps:
    """The parties napping now; one ticker pokes them all every `interval` seconds (so each looks
    at its heartbeat: cheaper than a deadline per nap), and one epoll set of our own, waited on
    through trio, pokes a party at once when its peer closes or resets (Linux: EPOLLRDHUP; a
    request's body bytes do not wake it)."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._parties: set[Party] = set()
        self._idle: trio.Event | None = None  # the ticker sleeps on it while nobody naps
        self._by_fd: dict[int, Party] = {}
        self._epoll = select.epoll() if _HANGUP and hasattr(select, "epoll") else None

    def __len__(self) -> int:
        return len(self._parties)

    def add(self, party: Party) -> None:
        self._parties.add(party)
        fd = party.link.hangup_fd
        if self._epoll is not None and fd is not None:
            try:
                self._epoll.register(fd, _HANGUP | select.EPOLLONESHOT)
                self._by_fd[fd] = party
            except OSError:  # (a socket already gone: the tick covers it)
                pass
        if self._idle is not None:
            self._idle.set()
            self._idle = None

    def discard(self, party: Party) -> None:
        self._parties.discard(party)
        fd = party.link.hangup_fd
        if self._epoll is not None and fd is not None and self._by_fd.pop(fd, None) is not None:
            try:
                self._epoll.unregister(fd)
            except OSError:  # (hot path: no context manager)
                return

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            async with trio.open_nursery() as nursery:
                if self._epoll is not None:
                    nursery.start_soon(self._watch_hangups, self._epoll)
                task_status.started()
                await self._tick()
        finally:
            if self._epoll is not None:
                self._epoll.close()

    async def _tick(self) -> None:
        while True:
            if not self._parties:
                self._idle = trio.Event()
                await self._idle.wait()
            await trio.sleep(self.interval)
            for party in list(self._parties):
                party.poke()

    async def _watch_hangups(self, epoll: select.epoll) -> None:
        while True:
            await trio.lowlevel.wait_readable(epoll.fileno())
            for fd, _ in epoll.poll(0):
                party = self._by_fd.get(fd)
                if party is not None:
                    party.poke()  # (one-shot: reported once; its nap's end unregisters it)
