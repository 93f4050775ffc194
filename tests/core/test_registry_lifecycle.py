# The rendezvous registry after the joins: leaving, finishing, expiry by deadline, and a randomized model run.
# Invariant: pure and sync, the caller passes the time; the model's invariants are checked after every step.
from __future__ import annotations

import random
from dataclasses import dataclass, field

import pytest

from pipe_relay.core.registry import Established, Expired, Left, PipeSnapshot, PipeState, Registry, Waiting
from pipe_relay.errors import ErrorCode, PipeError
from tests.registry_parties import TTL, Party, active_pipe, make


def test_leave_sender() -> None:
    reg = make()
    s, r = Party("s"), Party("r")
    reg.add_sender("/x", 2, s, 0.0)
    reg.add_receiver("/x", 2, r, 0.0)
    assert reg.leave("/x", s) == Left("/x", 2, 1, None)
    assert reg.snapshot("/x") == PipeSnapshot(PipeState.PENDING, 2, False, 1)
    # a new sender may take the place
    s2 = Party("s2")
    assert reg.add_sender("/x", 2, s2, 1.0) == Waiting("/x", 2, 1, None)


def test_leave_receiver_tells_the_sender_the_new_count() -> None:
    reg = make()
    s, r1, r2 = Party("s"), Party("r1"), Party("r2")
    reg.add_sender("/x", 3, s, 0.0)
    reg.add_receiver("/x", 3, r1, 0.0)
    reg.add_receiver("/x", 3, r2, 0.0)
    assert reg.leave("/x", r1) == Left("/x", 3, 1, s)
    assert reg.snapshot("/x") == PipeSnapshot(PipeState.PENDING, 3, True, 1)
    r3, r4 = Party("r3"), Party("r4")
    assert reg.add_receiver("/x", 3, r3, 0.0) == Waiting("/x", 3, 2, s)
    assert reg.add_receiver("/x", 3, r4, 0.0) == Established("/x", 3, s, (r2, r3, r4))


def test_leave_frees_a_receiver_slot() -> None:
    reg = make()
    r1, r2 = Party("r1"), Party("r2")
    reg.add_receiver("/x", 2, r1, 0.0)
    reg.add_receiver("/x", 2, r2, 0.0)
    assert reg.leave("/x", r2) == Left("/x", 2, 1, None)
    assert reg.add_receiver("/x", 2, Party("r3"), 0.0) == Waiting("/x", 2, 2, None)


def test_leave_of_unknown_party_or_key() -> None:
    reg = make()
    s = Party("s")
    reg.add_sender("/x", 1, s, 0.0)
    assert reg.leave("/x", Party("stranger")) is None
    assert reg.leave("/nope", s) is None
    assert reg.snapshot("/x") == PipeSnapshot(PipeState.PENDING, 1, True, 0)


def test_leave_after_establishment_is_none() -> None:
    reg = make()
    s, r = Party("s"), Party("r")
    reg.add_sender("/x", 1, s, 0.0)
    reg.add_receiver("/x", 1, r, 0.0)
    assert reg.leave("/x", s) is None
    assert reg.leave("/x", r) is None
    assert reg.state_of("/x") is PipeState.ACTIVE


@pytest.mark.parametrize("role", ["sender", "receiver"])
def test_last_party_leaving_removes_the_pipe(role: str) -> None:
    reg = make(max_pending=1)
    party = Party(role)
    add = reg.add_sender if role == "sender" else reg.add_receiver
    add("/x", 3, party, 0.0)
    assert reg.leave("/x", party) == Left("/x", 3, 0, None)
    assert reg.snapshot("/x") is None
    assert reg.pending_count == 0
    assert reg.next_deadline() is None
    # the key is free: a new pipe with another n can start there, and the pending slot is back
    assert reg.add_sender("/x", 1, Party("new"), 5.0) == Waiting("/x", 1, 0, None)
    assert reg.next_deadline() == 5.0 + TTL


def test_finish_frees_the_key() -> None:
    reg = make(max_active=1)
    active_pipe(reg, "/x")
    reg.finish("/x")
    assert reg.state_of("/x") is None
    assert reg.active_count == 0
    s, r = Party("s2"), Party("r2")
    assert reg.add_receiver("/x", 1, r, 1.0) == Waiting("/x", 1, 1, None)
    assert reg.add_sender("/x", 1, s, 1.0) == Established("/x", 1, s, (r,))


def test_finish_of_unknown_or_pending_key_changes_nothing() -> None:
    reg = make()
    reg.add_sender("/p", 1, Party("s"), 0.0)
    reg.finish("/nope")
    reg.finish("/p")
    assert reg.snapshot("/p") == PipeSnapshot(PipeState.PENDING, 1, True, 0)
    assert (reg.pending_count, reg.active_count) == (1, 0)


def test_expire_only_past_the_deadline_oldest_first() -> None:
    reg = make(ttl=10.0)
    s_a = Party("s_a")
    r_b1, r_b2 = Party("r_b1"), Party("r_b2")
    s_c = Party("s_c")
    reg.add_sender("/a", 1, s_a, 0.0)
    reg.add_receiver("/b", 3, r_b1, 1.0)
    reg.add_receiver("/b", 3, r_b2, 4.0)
    reg.add_sender("/c", 1, s_c, 5.0)
    assert reg.next_deadline() == 10.0
    assert reg.expire(9.5) == []
    assert reg.pending_count == 3
    assert reg.expire(11.5) == [Expired("/a", 1, s_a, ()), Expired("/b", 3, None, (r_b1, r_b2))]
    assert reg.state_of("/a") is None
    assert reg.state_of("/b") is None
    assert reg.next_deadline() == 15.0
    assert reg.expire(14.9) == []
    assert reg.expire(100.0) == [Expired("/c", 1, s_c, ())]
    assert reg.next_deadline() is None
    assert reg.pending_count == 0


def test_expire_leaves_active_pipes_alone() -> None:
    reg = make(ttl=10.0)
    active_pipe(reg, "/x")
    assert reg.next_deadline() is None
    assert reg.expire(1000.0) == []
    assert reg.state_of("/x") is PipeState.ACTIVE


def test_deadline_is_set_by_the_first_party() -> None:
    reg = make(ttl=10.0)
    s, r = Party("s"), Party("r")
    reg.add_sender("/x", 2, s, 0.0)
    reg.add_receiver("/x", 2, r, 8.0)
    assert reg.next_deadline() == 10.0
    assert reg.expire(10.5) == [Expired("/x", 2, s, (r,))]


def test_next_deadline_of_a_recreated_key_follows_creation_order() -> None:
    reg = make(ttl=10.0)
    a, b = Party("a"), Party("b")
    reg.add_sender("/a", 1, a, 0.0)
    reg.add_sender("/b", 1, b, 1.0)
    reg.leave("/a", a)
    a2 = Party("a2")
    reg.add_sender("/a", 1, a2, 2.0)
    assert reg.next_deadline() == 11.0
    assert reg.expire(11.5) == [Expired("/b", 1, b, ())]
    assert reg.next_deadline() == 12.0


def test_expired_key_is_free_again() -> None:
    reg = make(max_pending=1, ttl=10.0)
    reg.add_sender("/x", 1, Party("s"), 0.0)
    reg.expire(20.0)
    assert reg.add_sender("/x", 2, Party("s2"), 20.0) == Waiting("/x", 2, 0, None)


def test_snapshot_of_unknown_key_is_none() -> None:
    assert make().snapshot("/x") is None


# A randomized sequence of operations against a small model of what the registry should hold.


@dataclass
class ModelPipe:
    n: int
    deadline: float
    sender: Party | None = None
    receivers: list[Party] = field(default_factory=list)


def check_invariants(reg: Registry[Party], pending: dict[str, ModelPipe], active: set[str]) -> None:
    assert reg.pending_count == len(pending) <= reg.max_pending
    assert reg.active_count == len(active) <= reg.max_active
    assert not (set(pending) & active)
    for key, pipe in pending.items():
        snap = reg.snapshot(key)
        assert snap == PipeSnapshot(PipeState.PENDING, pipe.n, pipe.sender is not None, len(pipe.receivers))
        assert snap.receivers <= snap.n
        # a pending pipe is never complete
        assert not (snap.sender and snap.receivers == snap.n)
        assert snap.sender or snap.receivers > 0
    for key in active:
        assert reg.state_of(key) is PipeState.ACTIVE


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_randomized_sequences_keep_the_invariants(seed: int) -> None:
    rng = random.Random(seed)
    reg = make(max_pending=3, max_active=2, ttl=50.0)
    keys = [f"/k{i}" for i in range(6)]
    pending: dict[str, ModelPipe] = {}
    active: set[str] = set()
    now = 0.0
    seen_codes: set[ErrorCode] = set()
    outcomes = {"established": 0, "left": 0, "expired": 0}
    for step in range(3000):
        now += rng.random()
        op = rng.choices(["sender", "receiver", "leave", "finish", "expire"], weights=[4, 6, 2, 1, 1])[0]
        key = rng.choice(keys)
        n = rng.choice([1, 2, 3])
        if op in ("sender", "receiver"):
            party = Party(f"{op}{step}")
            # the model's expected outcome
            expected: ErrorCode | str
            pipe = pending.get(key)
            if key in active:
                expected = ErrorCode.ACTIVE_TRANSFER
            elif pipe is None and len(pending) >= 3:
                expected = ErrorCode.TOO_MANY_PENDING
            elif pipe is not None and op == "sender" and pipe.sender is not None:
                expected = ErrorCode.DUPLICATE_SENDER
            elif pipe is not None and pipe.n != n:
                expected = ErrorCode.N_MISMATCH
            elif pipe is not None and op == "receiver" and len(pipe.receivers) >= n:
                expected = ErrorCode.RECEIVER_SLOTS_FULL
            else:
                have_sender = op == "sender" or (pipe is not None and pipe.sender is not None)
                count = (len(pipe.receivers) if pipe else 0) + (op == "receiver")
                complete = have_sender and count == n
                if complete and len(active) >= 2:
                    expected = ErrorCode.TOO_MANY_ACTIVE
                else:
                    expected = "established" if complete else "waiting"
            add = reg.add_sender if op == "sender" else reg.add_receiver
            try:
                result = add(key, n, party, now)
            except PipeError as error:
                assert error.code == expected, (step, op, key, n)
                seen_codes.add(error.code)
            else:
                if expected == "established":
                    assert pipe is not None or op == "receiver"
                    assert isinstance(result, Established)
                    sender = party if op == "sender" else pipe.sender if pipe else None
                    receivers = [*(pipe.receivers if pipe else []), *([party] if op == "receiver" else [])]
                    assert result == Established(key, n, sender, tuple(receivers))
                    pending.pop(key, None)
                    active.add(key)
                    outcomes["established"] += 1
                else:
                    assert expected == "waiting", (step, op, key, n, expected)
                    model = pending.setdefault(key, ModelPipe(n, now + 50.0))
                    if op == "sender":
                        model.sender = party
                    else:
                        model.receivers.append(party)
                    assert result == Waiting(
                        key, n, len(model.receivers), model.sender if op == "receiver" else None
                    )
        elif op == "leave":
            pipe = pending.get(key)
            parties = ([pipe.sender] if pipe and pipe.sender else []) + (pipe.receivers if pipe else [])
            if not parties:
                assert reg.leave(key, Party("nobody")) is None
                continue
            party = rng.choice(parties)
            assert pipe is not None
            if party is pipe.sender:
                pipe.sender = None
            else:
                pipe.receivers.remove(party)
            assert reg.leave(key, party) == Left(key, pipe.n, len(pipe.receivers), pipe.sender)
            if pipe.sender is None and not pipe.receivers:
                del pending[key]
            outcomes["left"] += 1
        elif op == "finish":
            reg.finish(key)
            active.discard(key)
        else:
            gone = reg.expire(now)
            for item in gone:
                model = pending.pop(item.key)
                assert model.deadline <= now
                assert item == Expired(item.key, model.n, model.sender, tuple(model.receivers))
            assert all(pipe.deadline > now for pipe in pending.values())
            assert [pipe.deadline for pipe in pending.values()] == sorted(
                p.deadline for p in pending.values()
            )
            assert reg.next_deadline() == min((p.deadline for p in pending.values()), default=None)
            outcomes["expired"] += len(gone)
        check_invariants(reg, pending, active)
    # the sequence really exercised the interesting paths
    assert seen_codes >= {
        ErrorCode.ACTIVE_TRANSFER,
        ErrorCode.TOO_MANY_PENDING,
        ErrorCode.DUPLICATE_SENDER,
        ErrorCode.N_MISMATCH,
        ErrorCode.RECEIVER_SLOTS_FULL,
        ErrorCode.TOO_MANY_ACTIVE,
    }
    assert all(count > 0 for count in outcomes.values()), outcomes
