# The rendezvous registry's joins in both orders and every refusal: duplicates, n mismatches, slots, limits.
# Invariant: pure and sync; every assertion is an exact value (results, snapshots, error codes and messages).
from __future__ import annotations

from collections.abc import Callable

import pytest

from pipe_relay.core.registry import Established, PipeSnapshot, PipeState, Waiting
from pipe_relay.errors import ErrorCode, PipeError
from tests.registry_parties import Party, active_pipe, make


def rejected(call: Callable[..., object], *args: object) -> PipeError:
    with pytest.raises(PipeError) as info:
        call(*args)
    return info.value


def test_sender_first_then_receiver_n1() -> None:
    reg = make()
    s, r = Party("s"), Party("r")
    assert reg.add_sender("/x", 1, s, 0.0) == Waiting("/x", 1, 0, None)
    assert reg.state_of("/x") is PipeState.PENDING
    assert (reg.pending_count, reg.active_count) == (1, 0)
    result = reg.add_receiver("/x", 1, r, 1.0)
    assert result == Established("/x", 1, s, (r,))
    assert reg.state_of("/x") is PipeState.ACTIVE
    assert (reg.pending_count, reg.active_count) == (0, 1)


def test_receiver_first_then_sender_n1() -> None:
    reg = make()
    s, r = Party("s"), Party("r")
    assert reg.add_receiver("/x", 1, r, 0.0) == Waiting("/x", 1, 1, None)
    assert reg.snapshot("/x") == PipeSnapshot(PipeState.PENDING, 1, False, 1)
    assert reg.add_sender("/x", 1, s, 1.0) == Established("/x", 1, s, (r,))
    assert reg.snapshot("/x") == PipeSnapshot(PipeState.ACTIVE, 1, True, 1)
    assert (reg.pending_count, reg.active_count) == (0, 1)


def test_sender_first_then_three_receivers() -> None:
    reg = make()
    s = Party("s")
    r1, r2, r3 = Party("r1"), Party("r2"), Party("r3")
    assert reg.add_sender("/x", 3, s, 0.0) == Waiting("/x", 3, 0, None)
    assert reg.add_receiver("/x", 3, r1, 1.0) == Waiting("/x", 3, 1, s)
    assert reg.add_receiver("/x", 3, r2, 2.0) == Waiting("/x", 3, 2, s)
    assert reg.snapshot("/x") == PipeSnapshot(PipeState.PENDING, 3, True, 2)
    assert reg.add_receiver("/x", 3, r3, 3.0) == Established("/x", 3, s, (r1, r2, r3))
    assert (reg.pending_count, reg.active_count) == (0, 1)


def test_three_receivers_first_then_sender() -> None:
    reg = make()
    s = Party("s")
    r1, r2, r3 = Party("r1"), Party("r2"), Party("r3")
    assert reg.add_receiver("/x", 3, r1, 0.0) == Waiting("/x", 3, 1, None)
    assert reg.add_receiver("/x", 3, r2, 0.0) == Waiting("/x", 3, 2, None)
    assert reg.add_receiver("/x", 3, r3, 0.0) == Waiting("/x", 3, 3, None)
    assert reg.snapshot("/x") == PipeSnapshot(PipeState.PENDING, 3, False, 3)
    assert reg.add_sender("/x", 3, s, 1.0) == Established("/x", 3, s, (r1, r2, r3))
    assert reg.state_of("/x") is PipeState.ACTIVE


def test_sender_between_receivers_n3() -> None:
    reg = make()
    s = Party("s")
    r1, r2, r3 = Party("r1"), Party("r2"), Party("r3")
    assert reg.add_receiver("/x", 3, r1, 0.0) == Waiting("/x", 3, 1, None)
    assert reg.add_sender("/x", 3, s, 0.0) == Waiting("/x", 3, 1, None)
    assert reg.add_receiver("/x", 3, r2, 0.0) == Waiting("/x", 3, 2, s)
    assert reg.add_receiver("/x", 3, r3, 0.0) == Established("/x", 3, s, (r1, r2, r3))


def test_different_keys_are_independent() -> None:
    reg = make()
    s1, s2 = Party("s1"), Party("s2")
    reg.add_sender("/a", 1, s1, 0.0)
    reg.add_sender("/b", 2, s2, 0.0)
    assert reg.pending_count == 2
    assert reg.snapshot("/a") == PipeSnapshot(PipeState.PENDING, 1, True, 0)
    assert reg.snapshot("/b") == PipeSnapshot(PipeState.PENDING, 2, True, 0)
    assert reg.snapshot("/c") is None
    assert reg.state_of("/c") is None


def test_duplicate_sender() -> None:
    reg = make()
    reg.add_sender("/x", 1, Party("s1"), 0.0)
    error = rejected(reg.add_sender, "/x", 1, Party("s2"), 0.0)
    assert error.code is ErrorCode.DUPLICATE_SENDER
    assert error.status == 400
    assert error.message == "[ERROR] Path '/x' already has a sender connected."
    assert reg.snapshot("/x") == PipeSnapshot(PipeState.PENDING, 1, True, 0)


@pytest.mark.parametrize("role", ["sender", "receiver"])
def test_active_transfer(role: str) -> None:
    reg = make()
    active_pipe(reg, "/mypath")
    add = reg.add_sender if role == "sender" else reg.add_receiver
    error = rejected(add, "/mypath", 1, Party("late"), 1.0)
    assert error.code is ErrorCode.ACTIVE_TRANSFER
    assert error.status == 400
    assert error.message == "[ERROR] Path '/mypath' is already in use by an active transfer."
    assert (reg.pending_count, reg.active_count) == (0, 1)


def test_n_mismatch_receiver_against_sender() -> None:
    reg = make()
    reg.add_sender("/x", 2, Party("s"), 0.0)
    error = rejected(reg.add_receiver, "/x", 1, Party("r"), 0.0)
    assert error.code is ErrorCode.N_MISMATCH
    assert error.status == 400
    assert error.message == "[ERROR] Receiver count mismatch on '/x': this path expects n=2, got n=1."
    assert reg.snapshot("/x") == PipeSnapshot(PipeState.PENDING, 2, True, 0)


def test_n_mismatch_sender_against_receivers() -> None:
    reg = make()
    reg.add_receiver("/x", 2, Party("r"), 0.0)
    error = rejected(reg.add_sender, "/x", 3, Party("s"), 0.0)
    assert error.code is ErrorCode.N_MISMATCH
    assert error.message == "[ERROR] Receiver count mismatch on '/x': this path expects n=2, got n=3."
    assert reg.snapshot("/x") == PipeSnapshot(PipeState.PENDING, 2, False, 1)


def test_n_mismatch_receiver_against_receivers() -> None:
    reg = make()
    reg.add_receiver("/x", 3, Party("r1"), 0.0)
    error = rejected(reg.add_receiver, "/x", 2, Party("r2"), 0.0)
    assert error.code is ErrorCode.N_MISMATCH
    assert error.message == "[ERROR] Receiver count mismatch on '/x': this path expects n=3, got n=2."


def test_receiver_slots_full() -> None:
    reg = make()
    reg.add_receiver("/x", 2, Party("r1"), 0.0)
    reg.add_receiver("/x", 2, Party("r2"), 0.0)
    error = rejected(reg.add_receiver, "/x", 2, Party("r3"), 0.0)
    assert error.code is ErrorCode.RECEIVER_SLOTS_FULL
    assert error.status == 400
    assert error.message == "[ERROR] All 2 receiver slot(s) on '/x' are taken."
    assert reg.snapshot("/x") == PipeSnapshot(PipeState.PENDING, 2, False, 2)


@pytest.mark.parametrize("role", ["sender", "receiver"])
def test_too_many_pending(role: str) -> None:
    reg = make(max_pending=2)
    reg.add_sender("/a", 1, Party("a"), 0.0)
    reg.add_receiver("/b", 1, Party("b"), 0.0)
    add = reg.add_sender if role == "sender" else reg.add_receiver
    error = rejected(add, "/c", 1, Party("c"), 0.0)
    assert error.code is ErrorCode.TOO_MANY_PENDING
    assert error.status == 503
    assert error.message == "[ERROR] Too many pending transfers. Try again later."
    assert error.extra_headers == (("Retry-After", "5"),)
    assert reg.pending_count == 2
    assert reg.state_of("/c") is None


def test_joining_an_existing_pending_pipe_is_allowed_at_the_pending_limit() -> None:
    reg = make(max_pending=1)
    s = Party("s")
    r1, r2 = Party("r1"), Party("r2")
    reg.add_sender("/a", 2, s, 0.0)
    assert reg.add_receiver("/a", 2, r1, 0.0) == Waiting("/a", 2, 1, s)
    assert reg.add_receiver("/a", 2, r2, 0.0) == Established("/a", 2, s, (r1, r2))
    assert (reg.pending_count, reg.active_count) == (0, 1)


def test_too_many_active_when_the_last_receiver_arrives() -> None:
    reg = make(max_active=1)
    active_pipe(reg, "/busy")
    s, r1, r2 = Party("s"), Party("r1"), Party("r2")
    reg.add_sender("/x", 2, s, 0.0)
    reg.add_receiver("/x", 2, r1, 0.0)
    error = rejected(reg.add_receiver, "/x", 2, r2, 0.0)
    assert error.code is ErrorCode.TOO_MANY_ACTIVE
    assert error.status == 503
    assert error.message == "[ERROR] Too many active transfers. Try again later."
    assert error.extra_headers == (("Retry-After", "5"),)
    # the pipe stays pending for the parties already there; the rejected one is not registered
    assert reg.snapshot("/x") == PipeSnapshot(PipeState.PENDING, 2, True, 1)
    assert reg.leave("/x", r2) is None
    assert (reg.pending_count, reg.active_count) == (1, 1)
    # once the active transfer ends, the next receiver completes the pipe
    reg.finish("/busy")
    r3 = Party("r3")
    assert reg.add_receiver("/x", 2, r3, 1.0) == Established("/x", 2, s, (r1, r3))
    assert (reg.pending_count, reg.active_count) == (0, 1)


def test_too_many_active_when_the_sender_arrives_last() -> None:
    reg = make(max_active=1)
    active_pipe(reg, "/busy")
    r = Party("r")
    reg.add_receiver("/x", 1, r, 0.0)
    s = Party("s")
    error = rejected(reg.add_sender, "/x", 1, s, 0.0)
    assert error.code is ErrorCode.TOO_MANY_ACTIVE
    assert error.extra_headers == (("Retry-After", "5"),)
    assert reg.snapshot("/x") == PipeSnapshot(PipeState.PENDING, 1, False, 1)
    assert reg.leave("/x", s) is None
    reg.finish("/busy")
    s2 = Party("s2")
    assert reg.add_sender("/x", 1, s2, 1.0) == Established("/x", 1, s2, (r,))
