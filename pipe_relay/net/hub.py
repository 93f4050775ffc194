# The rendezvous hub: registers senders and receivers, keeps them waiting, expires them, starts transfers.
# Invariant: every party leaves the registry exactly once (left, expired, or finished by its sender's task).
from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import trio

from ..config import Config
from ..core import status
from ..core.clients import parse_networks
from ..core.pace import Pace, Paces
from ..core.progress import TransferState
from ..core.quotas import Quota, Quotas
from ..core.registry import RETRY_AFTER_SECONDS, Closed, Established, Expired, Registry, Waiting
from ..core.routing import Receive, Request, Send
from ..core.shared_counts import SharedCounts
from ..errors import ErrorCode, PipeError, TransferFailure, pipe_error
from .access import Access
from .body import SeekBudget
from .engine import ByteEngine
from .link import CloseMode, Link
from .party import ABORTED, POLL_INTERVAL, Ending, Naps, Party, Receiver, Sender
from .progress import Boards, watch
from .relay import run_transfer
from .splice import make_engine
from .telemetry import TALLY

REQUEUE_LIMIT = 8
"""How many senders found gone before their start a receiver waits past (then it gets the error)."""
CHECK_TIMEOUT = 2.0
"""How long a second sender waits for the check of the sender in its way (its answer is quicker)."""


class Hub:
    """Owns the registry and the waiting parties; the server runs one per process."""

    def __init__(
        self, config: Config, engine: ByteEngine | None = None, shared: SharedCounts | None = None
    ) -> None:
        self.config = config
        self.engine: ByteEngine = engine or make_engine(config)
        self.registry: Registry[Party] = Registry(
            max_pending=config.max_pending, max_active=config.max_active, ttl=config.pending_ttl
        )
        self._reaper_wake = trio.Event()
        beat = config.heartbeat
        self.naps = Naps(min(POLL_INTERVAL, beat) if beat > 0 else POLL_INTERVAL)
        self._changed: trio.Event | None = None  # made only while someone is in `wait_for`
        self.boards = Boards()
        """Progress of every registered pipe (for `?progress` watchers); same keys as the registry."""
        self.quotas = Quotas(
            {
                Quota.PENDING: config.client_max_pending,
                Quota.ACTIVE: config.client_max_active,
                Quota.WATCHERS: config.client_max_watchers,
                Quota.CONNECTIONS: config.client_max_connections,
                Quota.PAGES: config.client_max_pages,
            },
            shared,
        )
        """What each client address holds (pending, active, watchers, connections) against its limits."""
        self.paces = Paces(shared)
        """The rate caps of users with transfers running (core.pace)."""
        self.trusted = parse_networks(config.trusted_proxies)
        """Our own proxies: the only peers whose X-Forwarded-For is believed."""
        self.watchers = 0
        """`?progress` watchers now, against `--max-watchers`."""
        self._active_clients: dict[str, tuple[str, ...]] = {}  # key -> the clients of its transfer
        self._stops: dict[str, trio.CancelScope] = {}  # key -> the scope that ends its transfer
        self.seek_budget = SeekBudget()
        """Shared by every multipart transfer while it looks for its content part."""
        self.draining = False
        """Shutting down: no new pipes; waiting parties were told and let go."""
        self.drain_started = trio.Event()
        self.access = Access(config.policy_path) if config.policy_path else None
        """Who may send and receive (`--policy`), or None: anyone may."""

    def __repr__(self) -> str:
        return f"<Hub {self.registry!r}>"

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The hub's own tasks, for as long as the server runs: the TTL reaper and the nap ticker."""
        async with trio.open_nursery() as nursery:
            await nursery.start(self.naps.run)
            await nursery.start(self._run_reaper)
            if self.access is not None:
                await nursery.start(self.access.watch)
            task_status.started()

    async def _run_reaper(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Expire pending pipes at their deadlines."""
        task_status.started()
        while True:
            deadline = self.registry.next_deadline()
            if deadline is None:
                await self._reaper_wake.wait()
                self._reaper_wake = trio.Event()
                continue
            await trio.sleep_until(deadline)
            self._evict(self.registry.expire(trio.current_time()))

    def drain(self) -> None:
        """Shut down gently: from now on no new pipe; every waiting party hears so and goes now. The
        server stops accepting and gives the active transfers `--drain-timeout` to end."""
        if self.draining:
            return
        self.draining = True
        self._evict(self.registry.close_pending())
        self.boards.close()
        self.drain_started.set()

    def _evict(self, gone: Sequence[Expired[Party] | Closed[Party]]) -> None:
        """Pending pipes left the registry (expired, or closed by a drain): tell their parties."""
        for pipe in gone:
            self.boards.finish(pipe.key, TransferState.ABORTED)
        self._touch(*(pipe.key for pipe in gone))
        for pipe in gone:
            for party in (*((pipe.sender,) if pipe.sender is not None else ()), *pipe.receivers):
                self._stop_waiting(party)
                party.settle(pipe)

    def _join(self, party: Party) -> Waiting[Party] | Established[Party]:
        """Register a new party, within the limits (server-wide in the registry, per client here)."""
        if self.draining:
            raise pipe_error(ErrorCode.SHUTTING_DOWN)
        client, decision = party.client, party.decision
        self.quotas.check(Quota.ACTIVE, client)  # a client at its transfer limit joins no more pipes
        self.quotas.take(Quota.PENDING, client)
        party.waiting = True
        add = self.registry.add_sender if isinstance(party, Sender) else self.registry.add_receiver
        try:
            result = add(decision.key, decision.n, party, trio.current_time())
        except PipeError:
            self._stop_waiting(party)
            raise
        self._touch(decision.key)
        if isinstance(result, Established):
            self._established(result)
        return result

    def _stop_waiting(self, party: Party) -> None:
        """The party no longer waits (matched, evicted or gone): its pending quota comes back."""
        if party.waiting:
            party.waiting = False
            self.quotas.give(Quota.PENDING, party.client)

    def _touch(self, *keys: str) -> None:
        """The registry changed (for `keys`): publish it, wake the reaper and anyone in `wait_for`."""
        now = trio.current_time()
        for key in keys:
            self.boards.sync(key, self.registry.snapshot(key), now)
        TALLY.pipes(self.registry.pending_count, self.registry.active_count)
        self._reaper_wake.set()
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    async def wait_for(self, predicate: Callable[[], bool]) -> None:
        """Wait until `predicate()` holds; it is re-checked after every registry change."""
        while not predicate():
            if self._changed is None:
                self._changed = trio.Event()
            await self._changed.wait()

    def _established(self, established: Established[Party]) -> None:
        clients = {established.sender.client, *(r.client for r in established.receivers)}
        self._active_clients[established.key] = tuple(clients)
        for client in clients:
            self.quotas.add(Quota.ACTIVE, client)  # (checked when each joined)
        sender = established.sender
        assert isinstance(sender, Sender)
        sender.receivers_now = established.n
        for party in (established.sender, *established.receivers):
            self._stop_waiting(party)
            party.settle(established)

    def _transfer_over(self, key: str) -> None:
        self.registry.finish(key)
        for client in self._active_clients.pop(key, ()):
            self.quotas.give(Quota.ACTIVE, client)

    def terminate(self, key: str) -> bool:
        """The operator ends the pipe on `key`: a transfer's receivers are cut and its sender reads
        `[ERROR] Transfer terminated by the operator.`; waiting parties get that, with 410. False:
        no pipe there (or it is ending already)."""
        stop = self._stops.get(key)
        if stop is not None:
            if stop.cancel_called:
                return False
            stop.cancel()
            return True
        closed = self.registry.close(key)
        if closed is None:
            return False
        self._evict([closed])
        return True

    # senders -----------------------------------------------------------------------------

    async def serve_sender(self, link: Link, request: Request, decision: Send, client: str = "") -> None:
        party = Sender(link, request, decision, self.naps, client)
        origin = request.header("origin")
        try:
            result = await self._join_sender(party)
        except PipeError as exc:
            await link.send_error(exc, origin, last=True)
            return
        link.close_mode = CloseMode.LINGER
        ended = TransferState.ABORTED  # unless the transfer says otherwise
        try:
            party.start_status_stream()
            if isinstance(result, Waiting) and not await self._wait_as_sender(party, result.receivers):
                return
            outcome = party.outcome
            if isinstance(outcome, Expired):
                await party.say(status.timed_out_waiting(decision.n), end=True)
                return
            if isinstance(outcome, Closed):
                await party.say(pipe_error(outcome.code).message, end=True)
                return
            assert isinstance(outcome, Established)
            stop = self._stops[outcome.key] = trio.CancelScope()
            pace = self._pace_of(party)
            try:
                with stop:
                    ended = await run_transfer(
                        outcome,
                        config=self.config,
                        engine=self.engine,
                        board=self.boards.get(outcome.key),
                        seek_budget=self.seek_budget,
                        stop=stop,
                        pace=pace,
                    )
            finally:
                del self._stops[outcome.key]
                if pace is not None:
                    self.paces.leave(pace)
            if stop.cancelled_caught:  # the operator ended it: its receivers are cut, the sender told
                link.close_mode = CloseMode.LINGER
                await party.say(pipe_error(ErrorCode.TERMINATED).message, end=True)
        finally:
            self._sender_done(party, ended)

    def _pace_of(self, sender: Sender) -> Pace | None:
        """The transfer's rate cap: its sender's user's (`--policy`: shared by all of that user's
        transfers), else its own at `--rate-limit`; None: uncapped."""
        user = sender.link.exchange.user
        rate = self.access.policy.rates.get(user) if user and self.access is not None else None
        if rate:
            return self.paces.join(user, rate)
        return self.paces.join(None, self.config.rate_limit) if self.config.rate_limit else None

    async def _join_sender(self, party: Sender) -> Waiting[Party] | Established[Party]:
        """Join as the path's sender; if one waits there already, it is checked first (it may be
        gone unseen: a killed curl whose close waits behind its body), and if gone, replaced."""
        try:
            return self._join(party)
        except PipeError as exc:
            if exc.code is not ErrorCode.DUPLICATE_SENDER or not await self._first_sender_gone(party):
                raise
        return self._join(party)

    async def _first_sender_gone(self, party: Sender) -> bool:
        first = self.registry.pending_sender(party.key)
        if not isinstance(first, Sender):
            return False
        if party.client != first.client and trio.current_time() < first.next_check:
            return False  # (another address may not have a sender's status lines written at will)
        with trio.move_on_after(CHECK_TIMEOUT):
            await first.want_check().wait()
        return self.registry.pending_sender(party.key) is not first

    async def _wait_as_sender(self, party: Sender, receivers: int) -> bool:
        """Status lines while the pipe is pending. False if the sender left before it settled."""
        party.receivers_now = receivers
        ok = await party.say(status.waiting(party.n))
        beat = self.config.heartbeat
        next_beat = trio.current_time() + beat if beat > 0 else math.inf
        while ok and party.outcome is None:
            now = trio.current_time()
            beat_line = ""
            if now >= next_beat or party.check_wanted:
                beat_line = status.still_waiting(party.n)
                next_beat = now + beat if beat > 0 else math.inf
            count_line = party.count_line()
            if count_line or beat_line:
                # every line is also a check: a client gone unseen answers it with a reset
                ok = await party.say(count_line, beat_line) and await party.link.still_there()
            if party.link.peer_closed():
                ok = False
            if ok:
                party.checked()
                await party.nap()  # until something happens, or the next tick (<= the heartbeat)
        if party.outcome is None:
            party.link.close_mode = CloseMode.ABORT  # gone: `_sender_done` unregisters it
            return False
        party.checked()
        return True  # settled; the transfer checks the sender once more before its first byte

    def _sender_done(self, party: Sender, ended: TransferState) -> None:
        """The sender's task is done with its pipe: its registration goes, and a transfer's end
        (`done` or `aborted`, as `run_transfer` said) is recorded here, once."""
        outcome = party.outcome
        if outcome is None:
            self.registry.leave(party.key, party)
            self._stop_waiting(party)
        elif isinstance(outcome, Established):
            self.boards.finish(outcome.key, ended)
            self._transfer_over(outcome.key)
            for receiver in outcome.receivers:
                assert isinstance(receiver, Receiver)
                receiver.release(ABORTED)  # (unless the transfer said how it ended already)
        party.checked()  # (gone from the registry: a sender that asked for a check may join now)
        self._touch(party.key)

    # watchers ----------------------------------------------------------------------------

    async def serve_watcher(self, link: Link, request: Request, key: str, client: str = "") -> None:
        """`?progress` as an event stream, within `--max-watchers` and the client's quota."""
        try:
            if self.watchers >= self.config.max_watchers:
                raise pipe_error(ErrorCode.TOO_MANY_WATCHERS, ("Retry-After", RETRY_AFTER_SECONDS))
            self.quotas.take(Quota.WATCHERS, client)
        except PipeError as exc:
            await link.send_error(exc, request.header("origin"), last=True)
            return
        self.watchers += 1
        try:
            await watch(self.boards, link, request, key, ttl=self.config.pending_ttl)
        finally:
            self.watchers -= 1
            self.quotas.give(Quota.WATCHERS, client)

    # receivers ---------------------------------------------------------------------------

    async def serve_receiver(self, link: Link, request: Request, decision: Receive, client: str = "") -> None:
        for tries_left in range(REQUEUE_LIMIT, -1, -1):
            party = Receiver(link, request, decision, self.naps, client)
            if not await self._receive(party, requeue=tries_left > 0):
                return

    async def _receive(self, party: Receiver, *, requeue: bool) -> bool:
        """One wait for a sender and its transfer; True if its sender was found gone before the
        start and the receiver is to wait for another (`requeue`; else it gets the error)."""
        link, origin = party.link, party.request.header("origin")
        try:
            result = self._join(party)
        except PipeError as exc:
            await link.send_error(exc, origin, last=True)
            return False
        try:
            if isinstance(result, Waiting):
                _count_changed(result.sender, result.receivers)
                while party.outcome is None and not link.peer_closed():
                    await party.nap()
                if party.outcome is None:
                    return False  # gone while waiting: the finally unregisters it
            if isinstance(party.outcome, Expired):
                await link.send_error(pipe_error(ErrorCode.TTL_EXPIRED), origin, last=True)
                return False
            if isinstance(party.outcome, Closed):
                await link.send_error(pipe_error(party.outcome.code), origin, last=True)
                return False
            # The sender's task streams into this response now; wait until it is done with it.
            if not party.released.is_set():  # (set already: no need to yield once more)
                await party.released.wait()
            end = party.end
            assert end is not None
            if end.ending is Ending.REQUEUED and requeue:
                return True
            error = end.error
            if end.ending is Ending.REQUEUED:
                error = pipe_error(ErrorCode.SENDER_FAILED, detail=TransferFailure.SENDER_GONE.value)
            if error is not None:
                await link.send_error(error, origin, last=True)
            else:
                link.close_mode = end.close_mode
            return False
        finally:
            if party.outcome is None:
                left = self.registry.leave(party.key, party)
                self._stop_waiting(party)
                self._touch(party.key)
                if left is not None:
                    _count_changed(left.sender, left.receivers)


def _count_changed(sender: Party | None, receivers: int) -> None:
    """A waiting sender hears how many receivers are there now (fan-out count lines)."""
    if isinstance(sender, Sender):
        sender.count_changed(receivers)
