# The hub's timers under trio's MockClock: TTL expiry, heartbeats and the disconnect tick, to the tick.
# Invariant: no real time passes; a party talks to the hub over a socketpair, exactly as a connection would.
from __future__ import annotations

import itertools
import re
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import pytest
import trio
import trio.testing

from pipe_relay.config import Config
from pipe_relay.core.routing import Receive, Request, Send, route
from pipe_relay.net.connection import HttpConnection
from pipe_relay.net.hub import POLL_INTERVAL, Hub

EPSILON = 1e-9
"""Virtual time is exact up to float rounding."""
STATUS_LINE = re.compile(rb"\[(?:INFO|ERROR)\] [^\n]*\n")


@dataclass
class Peer:
    """The client end of a socketpair: what it read, and when (virtual time)."""

    sock: trio.socket.SocketType
    received: list[tuple[float, bytes]]

    async def read_more(self) -> None:
        data = await self.sock.recv(65536)
        assert data, "closed by the hub's side"
        self.received.append((trio.current_time(), data))

    async def read_until(self, marker: bytes) -> None:
        while marker not in b"".join(data for _, data in self.received):
            await self.read_more()

    def lines(self) -> list[tuple[float, bytes]]:
        """Status lines with the time each arrived (each arrives whole in one read here)."""
        return [(at, line) for at, data in self.received for line in STATUS_LINE.findall(data)]


@asynccontextmanager
async def party(
    hub: Hub, method: str, key: str
) -> AsyncIterator[tuple[HttpConnection, Request, Send | Receive, Peer]]:
    """A connection as the server hands it to the hub: its socket, request head and decision."""
    mine, theirs = socket.socketpair()
    mine.setblocking(False)
    headers = (("host", "x"), ("content-length", "5")) if method == "PUT" else (("host", "x"),)
    request = Request(method, key, headers)
    config = hub.config
    decision = route(request, max_path_length=config.max_path_length, max_receivers=config.max_receivers)
    assert isinstance(decision, Send | Receive)
    peer = Peer(trio.socket.from_stdlib_socket(theirs), [])
    try:
        yield HttpConnection(mine, config), request, decision, peer
    finally:
        mine.close()
        peer.sock.close()


@asynccontextmanager
async def running_hub(**overrides: float) -> AsyncIterator[Hub]:
    hub = Hub(Config(hosts=("127.0.0.1",), port=0, engine="buffer", **overrides))  # type: ignore[arg-type]
    async with trio.open_nursery() as nursery:
        await nursery.start(hub.run)
        yield hub
        nursery.cancel_scope.cancel()


async def test_a_waiting_receiver_expires_exactly_at_the_ttl(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running_hub(pending_ttl=7) as hub, party(hub, "GET", "/ttl") as (conn, req, dec, peer):
        assert isinstance(dec, Receive)
        start = trio.current_time()
        await hub.serve_receiver(conn, req, dec)
        waited = trio.current_time() - start
        await peer.read_until(b"\n")
        assert hub.registry.snapshot("/ttl") is None
    assert waited == pytest.approx(7, abs=EPSILON)
    response = b"".join(data for _, data in peer.received)
    assert response.startswith(b"HTTP/1.1 408 Request Timeout\r\n")
    assert response.endswith(b"\r\n\r\n[ERROR] Timed out waiting for sender.\n")


async def test_a_waiting_sender_gets_its_heartbeats_then_expires_at_the_ttl(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with (
        running_hub(pending_ttl=2, heartbeat=0.3) as hub,
        party(hub, "PUT", "/ttl-beats") as (conn, req, dec, peer),
    ):
        assert isinstance(dec, Send)
        start = trio.current_time()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(hub.serve_sender, conn, req, dec)
            await peer.read_until(b"0\r\n\r\n")  # the end of the chunked status stream
        assert hub.registry.snapshot("/ttl-beats") is None
    lines = peer.lines()
    assert [line for _, line in lines] == [
        b"[INFO] Waiting for 1 receiver(s) to connect...\n",
        *[b"[INFO] Still waiting for 1 receiver(s)...\n"] * 6,  # at 0.3, 0.6, ... 1.8 s
        b"[ERROR] Timed out waiting for 1 receiver(s).\n",
    ]
    assert lines[0][0] == pytest.approx(start, abs=EPSILON)
    assert lines[-1][0] - start == pytest.approx(2, abs=EPSILON)


@pytest.mark.parametrize("beat", [0.3, 0.7, 2.0])
async def test_heartbeats_are_never_early_and_at_most_one_tick_late(
    autojump_clock: trio.testing.MockClock, beat: float
) -> None:
    tick = min(POLL_INTERVAL, beat)
    async with (
        running_hub(pending_ttl=100, heartbeat=beat) as hub,
        party(hub, "PUT", "/beats") as (conn, req, dec, peer),
    ):
        assert isinstance(dec, Send)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(hub.serve_sender, conn, req, dec)
            while len(peer.lines()) < 6:  # the waiting line and five heartbeats
                await peer.read_more()
            nursery.cancel_scope.cancel()
    times = [at for at, _ in peer.lines()]
    gaps = [after - before for before, after in itertools.pairwise(times)]
    assert len(gaps) == 5
    assert all(beat - EPSILON <= gap <= beat + tick + EPSILON for gap in gaps), gaps


async def test_no_heartbeat_when_it_is_off(autojump_clock: trio.testing.MockClock) -> None:
    async with (
        running_hub(pending_ttl=60, heartbeat=0) as hub,
        party(hub, "PUT", "/silent") as (conn, req, dec, peer),
    ):
        assert isinstance(dec, Send)
        await hub.serve_sender(conn, req, dec)
        await peer.read_until(b"0\r\n\r\n")
    assert [line for _, line in peer.lines()] == [
        b"[INFO] Waiting for 1 receiver(s) to connect...\n",
        b"[ERROR] Timed out waiting for 1 receiver(s).\n",
    ]


async def test_a_receiver_that_leaves_is_noticed_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running_hub(pending_ttl=60) as hub, party(hub, "GET", "/gone") as (conn, req, dec, peer):
        assert isinstance(dec, Receive)
        start = trio.current_time()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(hub.serve_receiver, conn, req, dec)
            await trio.sleep(2.2)  # virtual time: between the ticks at 2.0 and 2.5: no tick needed
            peer.sock.close()
        assert hub.registry.snapshot("/gone") is None
        noticed = trio.current_time() - start
    assert noticed == pytest.approx(2.2, abs=EPSILON)  # its hang-up wakes it, not the tick
