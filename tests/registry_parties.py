# The registry tests' stand-ins: a party compared by identity, a registry with given limits, an active pipe.
# Invariant: pure and sync; the caller passes the time, and active_pipe checks the state it makes.
from __future__ import annotations

from pipe_relay.core.registry import PipeState, Registry

TTL = 300.0


class Party:
    """A stand-in for a connection; compared by identity like the real ones."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"<Party {self.name}>"


def make(max_pending: int = 10, max_active: int = 10, ttl: float = TTL) -> Registry[Party]:
    return Registry(max_pending=max_pending, max_active=max_active, ttl=ttl)


def active_pipe(reg: Registry[Party], key: str = "/x") -> None:
    reg.add_sender(key, 1, Party("s"), 0.0)
    reg.add_receiver(key, 1, Party("r"), 0.0)
    assert reg.state_of(key) is PipeState.ACTIVE
