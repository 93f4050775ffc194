# Pipe ownership across workers and the shared per-client table: pure functions over plain memory.
# Invariant: no process, no socket; the table is a bytearray as the workers' shared mapping would be.
from __future__ import annotations

import hashlib
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipe_relay.core.owners import owner_of, pipe_key
from pipe_relay.core.quotas import Quota, Quotas
from pipe_relay.core.routing import Request, route
from pipe_relay.core.shared_counts import SharedCounts
from pipe_relay.errors import ErrorCode, PipeError


def test_the_owner_is_the_documented_hash() -> None:
    """BLAKE2b-64 of the key's UTF-8, big-endian, modulo the workers: what a proxy or a script can
    compute to know which worker serves a path (written down in docs/scale-out.md)."""
    for key in ("/a", "/日本/fü", "/api-key/x?y"):
        digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
        assert owner_of(key, 7) == int.from_bytes(digest, "big") % 7
    assert owner_of("/anything", 1) == 0


@given(st.text(min_size=1, max_size=40), st.integers(min_value=1, max_value=64))
def test_an_owner_is_one_of_the_workers(key: str, workers: int) -> None:
    assert 0 <= owner_of("/" + key, workers) < workers


def test_keys_spread_evenly_over_the_workers() -> None:
    counts = Counter(owner_of(f"/file-{i}", 4) for i in range(4000))
    assert set(counts) == {0, 1, 2, 3}
    assert all(900 <= count <= 1100 for count in counts.values()), counts


@pytest.mark.parametrize(
    ("method", "target", "headers", "keyed"),
    [
        ("PUT", "/p", (), "/p"),
        ("GET", "/p", (), "/p"),
        ("GET", "/api/v1/pipe/p", (), "/p"),
        ("GET", "/p?progress", (("accept", "text/event-stream"),), "/p"),
        ("GET", "/p?progress", (("accept", "text/html"),), None),  # the page itself: anyone's
        ("GET", "/help", (), None),
        ("GET", "/", (), None),
    ],
)
def test_what_must_reach_the_owner(
    method: str, target: str, headers: tuple[tuple[str, str], ...], keyed: str | None
) -> None:
    request = Request(method, target, (("host", "x"), *headers))
    assert pipe_key(route(request, max_path_length=1024, max_receivers=16)) == keyed


def _table(workers: int, worker: int, memory: bytearray) -> SharedCounts:
    return SharedCounts(
        memoryview(memory), slots=64, kinds=len(Quota), workers=workers, worker=worker, key=b"k"
    )


def test_a_client_is_counted_across_workers_each_writing_its_own_column() -> None:
    memory = bytearray(SharedCounts.size(slots=64, kinds=len(Quota), workers=3))
    quotas = [Quotas({Quota.PENDING: 2}, _table(3, index, memory)) for index in range(3)]
    quotas[0].take(Quota.PENDING, "198.51.100.7")
    quotas[2].take(Quota.PENDING, "198.51.100.7")
    with pytest.raises(PipeError) as refused:
        quotas[1].take(Quota.PENDING, "198.51.100.7")
    assert refused.value.code is ErrorCode.CLIENT_PENDING_LIMIT
    assert all(q.held(Quota.PENDING, "198.51.100.7") == 2 for q in quotas)
    quotas[2].give(Quota.PENDING, "198.51.100.7")
    quotas[1].take(Quota.PENDING, "198.51.100.7")  # room again
    quotas[1].give(Quota.PENDING, "198.51.100.7")
    quotas[1].give(Quota.PENDING, "198.51.100.7")  # (more gives than takes here: never below 0)
    assert quotas[0].held(Quota.PENDING, "198.51.100.7") == 1
    assert quotas[0].held(Quota.PENDING, "203.0.113.9") == 0


def test_a_restarted_worker_clears_only_its_own_column() -> None:
    memory = bytearray(SharedCounts.size(slots=64, kinds=len(Quota), workers=2))
    first, second = _table(2, 0, memory), _table(2, 1, memory)
    first.add("a", 0, 3)
    second.add("a", 0, 2)
    _table(2, 1, memory).clear_worker(1)
    assert first.total("a", 0) == 3


def test_a_buffer_too_small_is_refused() -> None:
    with pytest.raises(ValueError, match="too small"):
        SharedCounts(memoryview(bytearray(10)), slots=64, kinds=5, workers=2, worker=0, key=b"k")
