# Slow and crowding clients in small: trickled heads are cut at the head timeout while a big transfer
# runs; past max_pending a pipe is refused, and the server recovers when the crowd leaves.
from __future__ import annotations

import hashlib
from pathlib import Path

import trio

from loadtests.slowloris import trickle_head
from tests.clients import CurlResult, Payload, RawClient, StartRelay, curl, curl_into
from tests.responses import assert_error, http, spawn

HEAD = b"GET /slow HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 100


async def trickle(relay_port: int, host: str, closed: list[float], answers: list[bytes]) -> None:
    """Send HEAD one byte every 0.1 s until the server ends the connection; note when and what came."""
    seconds, received = await trickle_head(host, relay_port, HEAD, 0.1)
    closed.append(seconds)
    answers.append(received)


async def test_trickled_heads_are_cut_at_the_head_timeout_while_a_big_transfer_runs(
    start_relay: StartRelay, payloads: dict[int, Payload], tmp_path: Path
) -> None:
    relay = await start_relay(header_timeout=1)
    payload = payloads[64 << 20]
    closed: list[float] = []
    answers: list[bytes] = []
    out = tmp_path / "received.bin"
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            for _ in range(50):
                nursery.start_soon(trickle, relay.port, relay.host, closed, answers)
            results: dict[str, CurlResult] = {}
            nursery.start_soon(curl_into, results, "receiver", "-f", "-o", str(out), f"{relay.url}/big")
            await relay.wait_for_pipe("/big", receivers=1)
            sent = await curl("-T", str(payload.path), f"{relay.url}/big")
        assert sent.returncode == 0, sent.stderr
        assert results["receiver"].returncode == 0, results["receiver"].stderr
    digest = hashlib.sha256(out.read_bytes()).hexdigest()
    assert digest == payload.sha256
    assert len(closed) == 50
    assert min(closed) >= 0.9 and max(closed) <= 4.0, (min(closed), max(closed))
    expected = b"\r\n\r\n[ERROR] Timed out waiting for the request head (1 s).\n"
    assert all(a.startswith(b"HTTP/1.1 408 Request Timeout\r\n") and a.endswith(expected) for a in answers)


async def test_past_max_pending_a_pipe_is_refused_and_the_server_recovers_when_they_leave(
    start_relay: StartRelay, raw_clients: list[RawClient]
) -> None:
    """(The refusal itself for a receiver and a sender, with max_pending=1: test_errors_pipes
    test_too_many_pending. Here: a crowd of 20, their hang-ups seen at once, then room again.)"""
    relay = await start_relay(max_pending=20)
    with trio.fail_after(20):
        crowd = []
        for index in range(20):
            client = await RawClient.connect(relay)
            raw_clients.append(client)
            await client.send(b"GET /crowd-%d HTTP/1.1\r\nHost: x\r\n\r\n" % index)
            crowd.append(client)
        await relay.hub.wait_for(lambda: relay.hub.registry.pending_count == 20)
        message = "[ERROR] Too many pending transfers. Try again later."
        for args in ([], ["-T", "-"]):
            refused = await http(relay, "/one-more", *args, stdin=b"x" if args else None)
            assert_error(refused, 503, "TOO_MANY_PENDING", message)
            assert refused.values("retry-after") == ["5"]
        assert relay.hub.registry.snapshot("/one-more") is None
        left_at = trio.current_time()
        for client in crowd:
            await client.aclose()
        raw_clients.clear()
        await relay.hub.wait_for(lambda: relay.hub.registry.pending_count == 0)
        assert trio.current_time() - left_at < 1.0  # not the TTL (300 s), not a heartbeat tick
        async with trio.open_nursery() as nursery:
            waiting = spawn(nursery, relay, "/one-more")
            await relay.wait_for_pipe("/one-more", receivers=1)
            assert (await http(relay, "/one-more", "-T", "-", stdin=b"room again\n")).status == 200
            assert (await waiting.result()).body == b"room again\n"
