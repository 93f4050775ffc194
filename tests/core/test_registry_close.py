# Shutdown of the rendezvous registry: every pending pipe is closed with its parties, active ones stay.
# Invariant: pure and sync; every assertion is an exact value.
from __future__ import annotations

from pipe_relay.core.registry import Closed, Established, Registry


def test_close_pending_returns_every_pending_pipe_and_leaves_active_ones() -> None:
    reg: Registry[str] = Registry(max_pending=8, max_active=8, ttl=10.0)
    reg.add_sender("/a", 2, "sender-a", 0.0)
    reg.add_receiver("/a", 2, "receiver-a1", 0.0)
    reg.add_receiver("/b", 3, "receiver-b1", 1.0)
    reg.add_receiver("/b", 3, "receiver-b2", 1.0)
    reg.add_sender("/c", 1, "sender-c", 2.0)
    assert reg.add_receiver("/c", 1, "receiver-c", 2.0) == Established("/c", 1, "sender-c", ("receiver-c",))
    assert reg.close_pending() == [
        Closed("/a", 2, "sender-a", ("receiver-a1",)),
        Closed("/b", 3, None, ("receiver-b1", "receiver-b2")),
    ]
    assert repr(reg) == "<Registry pending=0 active=1>"
    assert reg.next_deadline() is None
    assert reg.close_pending() == []


def test_close_pending_of_an_empty_registry_is_empty() -> None:
    reg: Registry[str] = Registry(max_pending=8, max_active=8, ttl=10.0)
    assert reg.close_pending() == []
