# Registry edges the mutation run showed unpinned: expiry exactly at the deadline, a pipe's repr.
# Invariant: pure and sync; the caller passes the time, every assertion is an exact value.
from __future__ import annotations

from pipe_relay.core.registry import Expired, Pipe, PipeState, Registry


def test_a_pipe_expires_exactly_at_its_deadline() -> None:
    reg: Registry[str] = Registry(max_pending=4, max_active=4, ttl=10.0)
    reg.add_sender("/a", 1, "sender", 0.0)
    assert reg.next_deadline() == 10.0
    assert reg.expire(9.999) == []
    assert reg.expire(10.0) == [Expired("/a", 1, "sender", ())]
    assert reg.pending_count == 0


def test_pipe_repr() -> None:
    pipe: Pipe[str] = Pipe(key="/x", n=2, deadline=1.0)
    assert repr(pipe) == "<Pipe '/x' pending n=2 sender=False receivers=0>"
    pipe.sender = "s"
    pipe.receivers.append("r")
    pipe.state = PipeState.ACTIVE
    assert repr(pipe) == "<Pipe '/x' active n=2 sender=True receivers=1>"
