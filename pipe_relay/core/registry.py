# Rendezvous registry: maps pipe keys to pending or active pipes and decides every join and leave.
# Invariant: a key is in at most one state; pending <= max_pending and active <= max_active always.
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from ..errors import ErrorCode, PipeError, pipe_error

P = TypeVar("P")
RETRY_AFTER_SECONDS = "5"


class PipeState(enum.Enum):
    PENDING = "pending"
    ACTIVE = "active"


@dataclass(eq=False)
class Pipe(Generic[P]):
    """One pipe: a key, its agreed receiver count and the parties that joined it."""

    key: str
    n: int
    deadline: float
    state: PipeState = PipeState.PENDING
    sender: P | None = None
    receivers: list[P] = field(default_factory=list)

    def __repr__(self) -> str:
        return (
            f"<Pipe {self.key!r} {self.state.value} n={self.n} "
            f"sender={self.sender is not None} receivers={len(self.receivers)}>"
        )


@dataclass(frozen=True, slots=True)
class PipeSnapshot:
    """What is known about one key at one moment (for observers; no party objects)."""

    state: PipeState
    n: int
    sender: bool
    receivers: int


@dataclass(frozen=True, slots=True)
class Waiting(Generic[P]):
    """The party joined a pending pipe and must wait. `sender` (if any) should hear the count."""

    key: str
    n: int
    receivers: int
    sender: P | None


@dataclass(frozen=True, slots=True)
class Established(Generic[P]):
    """The pipe is complete: stream from `sender` to `receivers`."""

    key: str
    n: int
    sender: P
    receivers: tuple[P, ...]


@dataclass(frozen=True, slots=True)
class Left(Generic[P]):
    """A party left a pending pipe. `sender` (if still there) should hear the new count."""

    key: str
    n: int
    receivers: int
    sender: P | None


@dataclass(frozen=True, slots=True)
class Expired(Generic[P]):
    """A pending pipe outlived its TTL and is gone: tell every party."""

    key: str
    n: int
    sender: P | None
    receivers: tuple[P, ...]


@dataclass(frozen=True, slots=True)
class Closed(Generic[P]):
    """The server is shutting down (or the operator ended the pipe): a pending pipe is gone, tell
    every party why (`code`)."""

    key: str
    n: int
    sender: P | None
    receivers: tuple[P, ...]
    code: ErrorCode = ErrorCode.SHUTTING_DOWN


class Registry(Generic[P]):
    """The rendezvous state machine. Pure: callers pass the time and own the parties."""

    def __init__(self, *, max_pending: int, max_active: int, ttl: float) -> None:
        self.max_pending = max_pending
        self.max_active = max_active
        self.ttl = ttl
        # Pending pipes in creation order: with one TTL, deadlines are non-decreasing in it.
        self._pending: dict[str, Pipe[P]] = {}
        self._active: dict[str, Pipe[P]] = {}

    def __repr__(self) -> str:
        return f"<Registry pending={len(self._pending)} active={len(self._active)}>"

    @property
    def pending_count(self) -> int:
        return len(self._pending)

    @property
    def active_count(self) -> int:
        return len(self._active)

    def state_of(self, key: str) -> PipeState | None:
        if key in self._active:
            return PipeState.ACTIVE
        if key in self._pending:
            return PipeState.PENDING
        return None

    def snapshot(self, key: str) -> PipeSnapshot | None:
        pipe = self._active.get(key) or self._pending.get(key)
        if pipe is None:
            return None
        return PipeSnapshot(pipe.state, pipe.n, pipe.sender is not None, len(pipe.receivers))

    def pending_sender(self, key: str) -> P | None:
        """The sender waiting on a pending pipe, if there is one."""
        pipe = self._pending.get(key)
        return pipe.sender if pipe is not None else None

    def add_sender(self, key: str, n: int, party: P, now: float) -> Waiting[P] | Established[P]:
        if key in self._active:
            raise pipe_error(ErrorCode.ACTIVE_TRANSFER, path=key)
        pipe = self._pending.get(key)
        if pipe is None:
            pipe = self._new_pipe(key, n, now)
        elif pipe.sender is not None:
            raise pipe_error(ErrorCode.DUPLICATE_SENDER, path=key)
        elif pipe.n != n:
            raise pipe_error(ErrorCode.N_MISMATCH, path=key, expected=pipe.n, got=n)
        if len(pipe.receivers) == n:
            self._check_active_room(pipe)
            pipe.sender = party
            return self._establish(pipe)
        pipe.sender = party
        self._pending[key] = pipe
        return Waiting(key, n, len(pipe.receivers), None)

    def add_receiver(self, key: str, n: int, party: P, now: float) -> Waiting[P] | Established[P]:
        if key in self._active:
            raise pipe_error(ErrorCode.ACTIVE_TRANSFER, path=key)
        pipe = self._pending.get(key)
        if pipe is None:
            pipe = self._new_pipe(key, n, now)
        elif pipe.n != n:
            raise pipe_error(ErrorCode.N_MISMATCH, path=key, expected=pipe.n, got=n)
        elif len(pipe.receivers) >= n:
            raise pipe_error(ErrorCode.RECEIVER_SLOTS_FULL, path=key, n=n)
        if pipe.sender is not None and len(pipe.receivers) + 1 == n:
            self._check_active_room(pipe)
            pipe.receivers.append(party)
            return self._establish(pipe)
        pipe.receivers.append(party)
        self._pending[key] = pipe
        return Waiting(key, n, len(pipe.receivers), pipe.sender)

    def leave(self, key: str, party: P) -> Left[P] | None:
        """A party gave up before its pipe was established. None if it is no longer pending."""
        pipe = self._pending.get(key)
        if pipe is None:
            return None
        if pipe.sender is party:
            pipe.sender = None
        elif any(r is party for r in pipe.receivers):
            pipe.receivers = [r for r in pipe.receivers if r is not party]
        else:
            return None
        if pipe.sender is None and not pipe.receivers:
            del self._pending[key]
        return Left(key, pipe.n, len(pipe.receivers), pipe.sender)

    def finish(self, key: str) -> None:
        """An active transfer ended (in any way): the key is free again."""
        self._active.pop(key, None)

    def next_deadline(self) -> float | None:
        for pipe in self._pending.values():
            return pipe.deadline
        return None

    def expire(self, now: float) -> list[Expired[P]]:
        """Evict every pending pipe whose deadline has passed, oldest first."""
        expired: list[Expired[P]] = []
        while self._pending:
            key, pipe = next(iter(self._pending.items()))
            if pipe.deadline > now:
                break
            del self._pending[key]
            expired.append(Expired(key, pipe.n, pipe.sender, tuple(pipe.receivers)))
        return expired

    def close_pending(self) -> list[Closed[P]]:
        """Evict every pending pipe (the server is shutting down); active ones are left to finish."""
        closed = [
            Closed(key, pipe.n, pipe.sender, tuple(pipe.receivers)) for key, pipe in self._pending.items()
        ]
        self._pending.clear()
        return closed

    def close(self, key: str) -> Closed[P] | None:
        """The operator ends the pending pipe on `key` (None: no pipe is pending there)."""
        pipe = self._pending.pop(key, None)
        if pipe is None:
            return None
        return Closed(key, pipe.n, pipe.sender, tuple(pipe.receivers), ErrorCode.TERMINATED)

    def pipes(self) -> list[Pipe[P]]:
        """Every pipe now: pending ones (oldest first), then active ones."""
        return [*self._pending.values(), *self._active.values()]

    def _new_pipe(self, key: str, n: int, now: float) -> Pipe[P]:
        if len(self._pending) >= self.max_pending:
            raise pipe_error(ErrorCode.TOO_MANY_PENDING, ("Retry-After", RETRY_AFTER_SECONDS))
        return Pipe(key=key, n=n, deadline=now + self.ttl)

    def _check_active_room(self, pipe: Pipe[P]) -> None:
        if len(self._active) >= self.max_active:
            raise PipeError(ErrorCode.TOO_MANY_ACTIVE, {}, (("Retry-After", RETRY_AFTER_SECONDS),))

    def _establish(self, pipe: Pipe[P]) -> Established[P]:
        assert pipe.sender is not None
        self._pending.pop(pipe.key, None)
        pipe.state = PipeState.ACTIVE
        self._active[pipe.key] = pipe
        return Established(pipe.key, pipe.n, pipe.sender, tuple(pipe.receivers))
