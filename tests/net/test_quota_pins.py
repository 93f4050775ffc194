# Pins on the per-client quotas: HTTP/2 streams count as HTTP/1.1 requests do, and a transfer between
# two parties of one address holds (and gives back) one active slot. Invariant: counts judged by refusals.
from __future__ import annotations

import trio

from pipe_relay.core.quotas import Quota
from tests.clients import RawClient, Relay, StartRelay, parse_head
from tests.h2client import H2Client, H2Response

SAME, OTHER = "127.0.0.2", "127.0.0.3"
Reply = tuple[int, str, bytes]
PENDING_REFUSAL: Reply = (
    429,
    "CLIENT_PENDING_LIMIT",
    b"[ERROR] Too many waiting transfers from your address (max 2). Try again later.\n",
)
ACTIVE_REFUSAL: Reply = (
    429,
    "CLIENT_ACTIVE_LIMIT",
    b"[ERROR] Too many active transfers from your address (max 1). Try again later.\n",
)


async def _h1_reply(relay: Relay, raw_clients: list[RawClient], path: str, local: str | None = None) -> Reply:
    """Status, X-Pipe-Error and body of the reply to an HTTP/1.1 GET of `path` (read by its length)."""
    client = await RawClient.connect(relay, local=local)
    raw_clients.append(client)
    await client.send(b"GET %s HTTP/1.1\r\nHost: t\r\n\r\n" % path.encode())
    with trio.move_on_after(2):
        status, headers, _ = parse_head(await client.read_until(b"\r\n\r\n"))
        body = await client.read_exactly(int(headers["content-length"]))
        return status, headers.get("x-pipe-error", ""), body
    raise AssertionError(f"no reply to GET {path} within 2 s (it was let in to wait)")


async def _h2_reply(client: H2Client, path: str) -> Reply:
    """Status, X-Pipe-Error and body of an h2 GET of `path` once its stream ended (or after 2 s)."""
    sid = await client.request("GET", path, end=True)
    response: H2Response = client.responses[sid]
    with trio.move_on_after(2):
        await client.until_over(sid)
    assert response.ended, f"no reply on the h2 stream for {path}: {response}"
    return response.status, response.headers.get("x-pipe-error", ""), bytes(response.data)


async def test_h2_streams_count_against_the_clients_pending_and_active_quotas(
    start_relay: StartRelay, raw_clients: list[RawClient]
) -> None:
    """client_max_pending=2, client_max_active=1, every party from 127.0.0.1: the third waiting h2
    stream and, once a transfer runs, any new h2 stream are refused with the 429 an HTTP/1.1 request
    from the same address gets."""
    relay = await start_relay(client_max_pending=2, client_max_active=1)
    with trio.fail_after(15):
        client = await H2Client.connect(relay.host, relay.port)
        try:
            first = await client.request("GET", "/q-a", end=True)
            second = await client.request("GET", "/q-b", end=True)
            await relay.wait_for_pipe("/q-a", receivers=1)
            await relay.wait_for_pipe("/q-b", receivers=1)
            h2_refusal = await _h2_reply(client, "/q-c")
            assert h2_refusal == PENDING_REFUSAL
            assert await _h1_reply(relay, raw_clients, "/q-c") == h2_refusal
            assert relay.hub.registry.snapshot("/q-c") is None
            await client.reset(second)  # one pending slot back, for the sender below
            await relay.wait_until_free("/q-b")
            put = await client.request("PUT", "/q-a", ("content-length", "2"))
            await client.send_body(put, b"x", end=False)
            await client.until(lambda: client.responses[first].data == b"x")  # active, from 127.0.0.1
            h2_refusal = await _h2_reply(client, "/q-d")
            assert h2_refusal == ACTIVE_REFUSAL
            assert await _h1_reply(relay, raw_clients, "/q-d") == h2_refusal
            assert relay.hub.registry.snapshot("/q-d") is None
            await client.send_body(put, b"y")
            assert (await client.until_over(first)).data == b"xy"
        finally:
            await client.aclose()
    assert relay.hub.quotas.held(Quota.PENDING, "127.0.0.1") == 0


async def _stalled_transfer(
    relay: Relay, receiver: RawClient, key: str, local: str, raw_clients: list[RawClient]
) -> RawClient:
    """A sender from `local` joins the waiting `receiver` on `key` with a 4-byte body and sends 2."""
    sender = await RawClient.connect(relay, local=local)
    raw_clients.append(sender)
    await sender.send(b"PUT %s HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n\r\nab" % key.encode())
    status, _, _ = parse_head(await receiver.read_until(b"\r\n\r\n"))
    assert status == 200 and await receiver.read_exactly(2) == b"ab"
    return sender


async def test_a_transfer_within_one_address_gives_back_one_active_slot_not_two(
    start_relay: StartRelay, raw_clients: list[RawClient]
) -> None:
    """client_max_active=1. SAME waits on /p1 and /p2; SAME sends on /p1 (one transfer: SAME holds 1);
    OTHER sends on /p2 (SAME holds 2). /p1 ends: SAME still holds /p2's slot, so its next pipe is
    refused; after /p2 ends, it joins again."""
    relay = await start_relay(client_max_active=1)
    with trio.fail_after(15):
        receivers = []
        for key in ("/p1", "/p2"):
            receiver = await RawClient.connect(relay, local=SAME)
            raw_clients.append(receiver)
            await receiver.send(b"GET %s HTTP/1.1\r\nHost: t\r\n\r\n" % key.encode())
            await relay.wait_for_pipe(key, receivers=1)
            receivers.append(receiver)
        first = await _stalled_transfer(relay, receivers[0], "/p1", SAME, raw_clients)
        assert relay.hub.quotas.held(Quota.ACTIVE, SAME) == 1  # (a transfer counts once per address)
        assert await _h1_reply(relay, raw_clients, "/p3", SAME) == ACTIVE_REFUSAL
        second = await _stalled_transfer(relay, receivers[1], "/p2", OTHER, raw_clients)
        await first.send(b"cd")  # /p1 ends
        assert await receivers[0].read_exactly(2) == b"cd"
        await relay.wait_until_free("/p1")
        assert await _h1_reply(relay, raw_clients, "/p4", SAME) == ACTIVE_REFUSAL
        assert relay.hub.quotas.held(Quota.ACTIVE, SAME) == 1
        await second.send(b"cd")  # /p2 ends: SAME is free to join again
        assert await receivers[1].read_exactly(2) == b"cd"
        await relay.wait_until_free("/p2")
        again = await RawClient.connect(relay, local=SAME)
        raw_clients.append(again)
        await again.send(b"GET /p5 HTTP/1.1\r\nHost: t\r\n\r\n")
        await relay.wait_for_pipe("/p5", receivers=1)
    assert relay.hub.quotas.held(Quota.ACTIVE, SAME) == 0
    assert relay.hub.quotas.held(Quota.ACTIVE, OTHER) == 0
