# Per-client limits end to end: one address cannot shut everyone else out (loopback aliases are other
# clients); behind a trusted proxy the forwarded address counts; a watcher that leaves frees its slot.
from __future__ import annotations

import json

import pytest
import trio

from pipe_relay.core.quotas import Quota
from tests.clients import RawClient, StartRelay, curl, parse_head

SQUATTER, OTHER = "127.0.0.2", "127.0.0.3"


async def _reply(client: RawClient) -> tuple[int, str]:
    """Status and X-Pipe-Error of a small reply (read whole, by its Content-Length)."""
    status, headers, _ = parse_head(await client.read_until(b"\r\n\r\n"))
    await client.read_exactly(int(headers["content-length"]))
    return status, headers.get("x-pipe-error", "")


async def test_one_address_squatting_1000_paths_shuts_nobody_else_out(
    start_relay: StartRelay, raw_clients: list[RawClient], many_descriptors: None
) -> None:
    relay = await start_relay()
    with trio.fail_after(60):
        squatters: list[RawClient] = []
        for index in range(1000):
            try:
                client = await RawClient.connect(relay, local=SQUATTER)
            except OSError:
                break
            squatters.append(client)
            raw_clients.append(client)
            await client.send(b"GET /squat-%d HTTP/1.1\r\nHost: t\r\n\r\n" % index)
        assert len(squatters) == 1000
        # 64 wait; every other one is refused: its pending slot (429), or past 256 connections open
        # from that address, the connection itself (429 at the accept)
        refusals: list[tuple[int, str]] = []
        enough = trio.Event()

        async def read_refusal(client: RawClient) -> None:
            refusals.append(await _reply(client))
            if len(refusals) == 1000 - 64:
                enough.set()

        async with trio.open_nursery() as nursery:
            for client in squatters:
                nursery.start_soon(read_refusal, client)
            await enough.wait()
            nursery.cancel_scope.cancel()
        assert set(refusals) <= {(429, "CLIENT_PENDING_LIMIT"), (429, "CLIENT_CONNECTION_LIMIT")}
        assert relay.hub.registry.pending_count == 64
        # another address is served as if nothing happened
        receiver = await RawClient.connect(relay, local=OTHER)
        raw_clients.append(receiver)
        await receiver.send(b"GET /fine HTTP/1.1\r\nHost: t\r\n\r\n")
        await relay.wait_for_pipe("/fine", receivers=1)
        sent = await curl("--interface", OTHER, "-T", "-", f"{relay.url}/fine", stdin=b"still served")
        assert sent.stdout.decode().splitlines()[-1] == "[INFO] Transfer complete."
        got, _ = await receiver.read_to_end()
        assert got.endswith(b"\r\n\r\nc\r\nstill served\r\n0\r\n\r\n")
        for client in squatters:  # the squatter leaves: its slots come back at once
            await client.aclose()
        await relay.hub.wait_for(lambda: relay.hub.registry.pending_count == 0)
    assert relay.hub.quotas.held(Quota.PENDING, SQUATTER) == 0


async def test_connections_past_the_client_limit_get_429_at_the_accept(
    start_relay: StartRelay, raw_clients: list[RawClient]
) -> None:
    relay = await start_relay(client_max_connections=5)
    with trio.fail_after(10):
        held = []
        for index in range(5):  # part of a head each: accepted, and held open
            client = await RawClient.connect(relay, local=SQUATTER)
            raw_clients.append(client)
            await client.send(b"GET /p-%d HTTP/1.1\r\n" % index)
            held.append(client)
        sixth = await RawClient.connect(relay, local=SQUATTER)
        raw_clients.append(sixth)
        await sixth.send(b"GET /version HTTP/1.1\r\nHost: t\r\n\r\n")
        assert await _reply(sixth) == (429, "CLIENT_CONNECTION_LIMIT")
        other = await curl("--interface", OTHER, f"{relay.url}/version")
        assert other.stdout == b"pipe-relay 0.1.0\n"
    assert relay.hub.quotas.held(Quota.CONNECTIONS, SQUATTER) == 5


async def test_a_client_at_its_transfer_limit_joins_no_more_pipes(
    start_relay: StartRelay, raw_clients: list[RawClient]
) -> None:
    """Pairs of one's own transfers that trickle a byte now and then cannot hold every slot."""
    relay = await start_relay(client_max_active=2)
    with trio.fail_after(10):
        for index in range(2):  # two active transfers of the squatter, stalled mid-body
            receiver = await RawClient.connect(relay, local=SQUATTER)
            sender = await RawClient.connect(relay, local=SQUATTER)
            raw_clients += [receiver, sender]
            await receiver.send(b"GET /slow-%d HTTP/1.1\r\nHost: t\r\n\r\n" % index)
            await relay.wait_for_pipe(f"/slow-{index}", receivers=1)
            await sender.send(b"PUT /slow-%d HTTP/1.1\r\nHost: t\r\nContent-Length: 9\r\n\r\nx" % index)
            await receiver.read_until(b"\r\n\r\nx")
        third = await RawClient.connect(relay, local=SQUATTER)
        raw_clients.append(third)
        await third.send(b"GET /third HTTP/1.1\r\nHost: t\r\n\r\n")
        assert await _reply(third) == (429, "CLIENT_ACTIVE_LIMIT")
        assert relay.hub.registry.snapshot("/third") is None
        other = await RawClient.connect(relay, local=OTHER)
        raw_clients.append(other)
        await other.send(b"GET /third HTTP/1.1\r\nHost: t\r\n\r\n")
        await relay.wait_for_pipe("/third", receivers=1)  # another address still joins
    assert relay.hub.quotas.held(Quota.ACTIVE, SQUATTER) == 2


async def test_watchers_are_limited_per_client_and_overall_and_a_leaving_one_frees_its_slot(
    start_relay: StartRelay, raw_clients: list[RawClient]
) -> None:
    relay = await start_relay(client_max_watchers=2, max_watchers=3)

    async def watch(local: str) -> RawClient:
        client = await RawClient.connect(relay, local=local)
        raw_clients.append(client)
        await client.send(b"GET /watched?progress HTTP/1.1\r\nHost: t\r\n\r\n")
        return client

    with trio.fail_after(10):
        first, second = await watch(SQUATTER), await watch(SQUATTER)
        for client in (first, second):
            await client.read_until(b'"state":"idle"')
        assert await _reply(await watch(SQUATTER)) == (429, "CLIENT_WATCHER_LIMIT")
        third = await watch(OTHER)
        await third.read_until(b'"state":"idle"')
        assert await _reply(await watch("127.0.0.4")) == (503, "TOO_MANY_WATCHERS")
        await first.aclose()  # seen at once: its slot is free for the next watcher within a second
        started = trio.current_time()
        while True:
            again = await watch(SQUATTER)
            head = await again.read_until(b"\r\n\r\n")
            if head.startswith(b"HTTP/1.1 200 "):
                break
            assert trio.current_time() - started < 1.0, "a watcher that left still holds its slot"
            await trio.sleep(0.05)
        await again.read_until(b'"state":"idle"')


@pytest.mark.parametrize("forwarded", ["198.51.100.7", "6.6.6.6, 198.51.100.7"])
async def test_behind_a_trusted_proxy_the_forwarded_address_is_the_client(
    start_relay: StartRelay, raw_clients: list[RawClient], forwarded: str
) -> None:
    relay = await start_relay(client_max_pending=1, trusted_proxies=("127.0.0.1",))
    with trio.fail_after(10):

        async def receiver(key: str, local: str, xff: str) -> RawClient:
            client = await RawClient.connect(relay, local=local)
            raw_clients.append(client)
            await client.send(f"GET {key} HTTP/1.1\r\nHost: t\r\nX-Forwarded-For: {xff}\r\n\r\n".encode())
            return client

        await receiver("/a", "127.0.0.1", forwarded)
        await relay.wait_for_pipe("/a", receivers=1)
        assert await _reply(await receiver("/b", "127.0.0.1", forwarded)) == (429, "CLIENT_PENDING_LIMIT")
        await receiver("/c", "127.0.0.1", "203.0.113.1")  # another client behind the same proxy
        await relay.wait_for_pipe("/c", receivers=1)
        # from an address that is not a proxy, the header is never believed
        await receiver("/d", SQUATTER, "203.0.113.99")
        await relay.wait_for_pipe("/d", receivers=1)
        assert await _reply(await receiver("/e", SQUATTER, "203.0.113.100")) == (429, "CLIENT_PENDING_LIMIT")
    assert relay.hub.quotas.held(Quota.PENDING, "198.51.100.7") == 1
    assert relay.hub.quotas.held(Quota.PENDING, SQUATTER) == 1


async def test_a_proxy_that_adds_its_own_forwarded_line_is_not_fooled_by_the_clients(
    start_relay: StartRelay, raw_clients: list[RawClient]
) -> None:
    """HAProxy's `option forwardfor` adds a second X-Forwarded-For line instead of appending: the
    lines are one list (RFC 9110 5.3), so the client's forged first line cannot win. The health
    document names the client so found."""
    relay = await start_relay(client_max_pending=1, trusted_proxies=("127.0.0.1",))
    forged_then_real = "X-Forwarded-For: 203.0.113.66\r\nX-Forwarded-For: 198.51.100.8\r\n"
    with trio.fail_after(10):
        first = await RawClient.connect(relay)
        raw_clients.append(first)
        await first.send(f"GET /xff-a HTTP/1.1\r\nHost: t\r\n{forged_then_real}\r\n".encode())
        await relay.wait_for_pipe("/xff-a", receivers=1)
        second = await RawClient.connect(relay)
        raw_clients.append(second)
        # the same real client, forging another first line: still counted as itself
        await second.send(
            b"GET /xff-b HTTP/1.1\r\nHost: t\r\nX-Forwarded-For: 203.0.113.67\r\n"
            b"X-Forwarded-For: 198.51.100.8\r\n\r\n"
        )
        assert await _reply(second) == (429, "CLIENT_PENDING_LIMIT")
        health = await RawClient.connect(relay)
        raw_clients.append(health)
        await health.send(f"GET /api/v1/pipe/health HTTP/1.1\r\nHost: t\r\n{forged_then_real}\r\n".encode())
        head = await health.read_until(b"\r\n\r\n")
        length = int(parse_head(head)[1]["content-length"])
        document = json.loads(await health.read_exactly(length))
    assert relay.hub.quotas.held(Quota.PENDING, "198.51.100.8") == 1
    assert relay.hub.quotas.held(Quota.PENDING, "203.0.113.66") == 0
    assert document["ip"] == "198.51.100.8"
