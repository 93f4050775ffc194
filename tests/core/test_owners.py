# Pipe ownership across workers and the shared per-client table: pure functions over plain memory.
# Invariant: no process, no socket; the table is a bytearray as the workers' shared mapping would be.
from __future__ import annotations

import hashlib
import itertools
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipe_relay.core.owners import early_key, owner_of, pipe_key
from pipe_relay.core.quotas import Quota, Quotas
from pipe_relay.core.routing import Request, route
from pipe_relay.core.shared_counts import SharedCounts
from pipe_relay.errors import ErrorCode, PipeError
from tests.fuzzing import fuzz_settings, targets


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


@pytest.mark.parametrize(
    ("first", "key"),
    [
        (b"PUT /p HTTP/1.1\r\nHost: x\r\n\r\nbody", "/p"),
        (b"GET /api/v1/pipe/p?n=2 HTTP/1.1\r\nHost: x\r\n", "/p"),
        (b"POST /a%2fb%7e HTTP/1.0\r\n", "/a%2Fb~"),
        (b"GET /p HTTP/1.1\n", "/p"),
        (b"GET http://relay/p HTTP/1.1\r\n", "/p"),
        # the head decides: the line is not all there, or not a pipe's, or not HTTP/1.x
        (b"GET /p HTTP/1.1", None),
        (b"GET /p?progress HTTP/1.1\r\n", None),
        (b"GET /p?video HTTP/1.1\r\n", None),
        (b"GET / HTTP/1.1\r\n", None),
        (b"GET /help HTTP/1.1\r\n", None),
        (b"GET /api/v1/pipe/health HTTP/1.1\r\n", None),
        (b"HEAD /p HTTP/1.1\r\n", None),
        (b"OPTIONS /p HTTP/1.1\r\n", None),
        (b"DELETE /p HTTP/1.1\r\n", None),
        (b"get /p HTTP/1.1\r\n", None),
        (b"GET /p HTTP/2.0\r\n", None),
        (b"GET  /p HTTP/1.1\r\n", None),
        (b"GET /p%zz HTTP/1.1\r\n", None),
        (b"GET /\xc3\xa9 HTTP/1.1\r\n", None),
        (b"GET /" + b"a" * 2000 + b" HTTP/1.1\r\n", None),
        (b"\r\nGET /p HTTP/1.1\r\n", None),
        (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", None),
    ],
)
def test_what_moves_to_the_owner_on_its_request_line(first: bytes, key: str | None) -> None:
    assert early_key(first, max_path_length=1024) == key


_METHODS = ["GET", "PUT", "POST", "HEAD", "OPTIONS", "DELETE"]
_PATHS = [
    "/",
    "/p",
    "/a/b",
    "/a%2Fb",
    "/%7e",
    "/%zz",
    "/help",
    "/api/v1/pipe/p",
    "/api/v1/pipe",
    "/api/v1/pipe/health",
]
_QUERIES = [
    "",
    "?",
    "?n=3",
    "?n=0",
    "?progress",
    "?progress=false",
    "?video",
    "?video=1",
    "?n=3&progress",
    "?x=1",
]
_ACCEPTS = [(), (("accept", "text/html"),), (("accept", "text/event-stream"),)]


def _agrees_with_route(method: str, raw: bytes, headers: tuple[tuple[str, str], ...]) -> bool:
    """Where the request line alone names a key, `route` (given the whole head) names that key too,
    or refuses the request (as the owner then does)."""
    key = early_key(method.encode() + b" " + raw + b" HTTP/1.1\r\n", max_path_length=64)
    if key is None:
        return True
    request = Request(method, raw.decode("latin-1"), (("host", "x"), *headers))  # (as the server reads it)
    try:
        decision = route(request, max_path_length=64, max_receivers=16)
    except PipeError:
        return True
    return pipe_key(decision) == key


def test_a_request_line_never_moves_a_request_elsewhere_than_its_whole_head_would() -> None:
    """Every method, pipe and page path, query option and Accept of the product: the worker a
    connection moves to on its request line is the one its whole head would choose."""
    cases = itertools.product(_METHODS, _PATHS, _QUERIES, _ACCEPTS)
    wrong = [case for case in cases if not _agrees_with_route(case[0], (case[1] + case[2]).encode(), case[3])]
    assert wrong == []


@fuzz_settings(300)
@given(st.sampled_from(_METHODS), targets, st.sampled_from(_ACCEPTS))
def test_nor_does_a_strange_target(method: str, target: str, headers: tuple[tuple[str, str], ...]) -> None:
    assert _agrees_with_route(method, target.encode("utf-8", "surrogatepass"), headers)


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
