# Timers end to end: sender heartbeats, the pending TTL, idle and keep-alive `?progress` watchers,
# and the write deadline. Invariant: every timing is checked from both sides (not sooner, not later).
from __future__ import annotations

import hashlib
import itertools
import json
import re
import socket
from collections.abc import Callable
from pathlib import Path

import pytest
import trio

from pipe_relay.net import hub as hub_module
from tests.clients import CurlResult, Payload, RawClient, Relay, StartRelay, curl, curl_into
from tests.net.test_progress import Watcher, _states
from tests.responses import TEXT_PLAIN, assert_error, spawn

CI_MARGIN = 0.5
"""Scheduling slack a loaded 2-core CI may add to one timer, in seconds."""


def _data_events(text: str) -> list[dict[str, object]]:
    return [json.loads(m) for m in re.findall(r"^data: (.*)$", text, re.M)]


async def _read_within(client: RawClient, marker: bytes, limit: float) -> bytes:
    """`client.read_until(marker)`, failing (not hanging) if it takes longer than `limit` s."""
    with trio.move_on_after(limit):
        return await client.read_until(marker)
    raise AssertionError(f"no {marker!r} within {limit} s; got {bytes(client.buffer)!r}")


async def _waiting_sender(relay: Relay, raw_clients: list[RawClient], key: str) -> RawClient:
    """A raw HTTP/1.1 sender on `key` that has read its 200 head and its first waiting line."""
    sender = await RawClient.connect(relay)
    raw_clients.append(sender)
    await sender.send(f"PUT {key} HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n".encode())
    head = await sender.read_until(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    await sender.read_until(b"[INFO] Waiting for 1 receiver(s) to connect...\n")
    return sender


# Heartbeats ----------------------------------------------------------------------------------

BEAT = 0.3
STILL_WAITING = b"[INFO] Still waiting for 1 receiver(s)...\n"


async def test_heartbeat_lines_repeat_at_the_heartbeat(
    start_relay: StartRelay, raw_clients: list[RawClient]
) -> None:
    relay = await start_relay(heartbeat=BEAT)
    tick = min(hub_module.POLL_INTERVAL, BEAT)  # the hub's ticker runs at most one heartbeat apart
    latest = BEAT + tick + CI_MARGIN
    with trio.fail_after(10):
        sender = await _waiting_sender(relay, raw_clients, "/beats")
        times = [trio.current_time()]
        lines = []
        for _ in range(4):
            lines.append(await _read_within(sender, STILL_WAITING, latest + 1))
            times.append(trio.current_time())
    gaps = [after - before for before, after in itertools.pairwise(times)]
    assert all(0.8 * BEAT <= gap <= latest for gap in gaps), gaps
    # each heartbeat is one chunk of its own: nothing else was said in between
    assert lines == [b"\r\n%x\r\n%s" % (len(STILL_WAITING), STILL_WAITING)] * 4, lines


async def test_heartbeat_zero_sends_none(start_relay: StartRelay, raw_clients: list[RawClient]) -> None:
    relay = await start_relay(heartbeat=0)
    with trio.fail_after(10):
        sender = await _waiting_sender(relay, raw_clients, "/quiet")
        with trio.move_on_after(1.2) as quiet:
            await sender.read_until(b"[INFO] Still waiting")
    assert quiet.cancelled_caught
    assert sender.buffer == b"\r\n"  # only the end of the waiting line's chunk


# Pending TTL -----------------------------------------------------------------------------------

TTL = 1.0
TTL_LATEST = 3.0


def pending_since(relay: Relay) -> float:
    """When the server registered the one pending pipe: its deadline minus the TTL.

    Seeing the pipe from the test can lag its creation on a loaded machine, so the
    wait is measured from the server's own clock reading, not from when we looked."""
    deadline = relay.hub.registry.next_deadline()
    assert deadline is not None
    return deadline - TTL


async def test_pending_ttl_expires_a_waiting_receiver_on_time(start_relay: StartRelay) -> None:
    relay = await start_relay(pending_ttl=TTL)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            receiver = spawn(nursery, relay, "/late")
            await relay.wait_for_pipe("/late", receivers=1)
            registered = pending_since(relay)
            response = await receiver.result()
            waited = trio.current_time() - registered
        await relay.wait_until_free("/late")
    assert_error(response, 408, "TTL_EXPIRED", "[ERROR] Timed out waiting for sender.")
    assert 0.9 * TTL <= waited <= TTL_LATEST, waited


async def test_pending_ttl_expires_a_waiting_sender_on_time(start_relay: StartRelay, tmp_path: Path) -> None:
    relay = await start_relay(pending_ttl=TTL)
    body = tmp_path / "body.txt"
    body.write_bytes(b"never delivered\n")
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            sender = spawn(nursery, relay, "/lonely", "-T", str(body))
            await relay.wait_for_pipe("/lonely", sender=True)
            registered = pending_since(relay)
            response = await sender.result()
            waited = trio.current_time() - registered
        await relay.wait_until_free("/lonely")
    assert response.status == 200
    assert response.headers["content-type"] == TEXT_PLAIN
    assert response.body == (
        b"[INFO] Waiting for 1 receiver(s) to connect...\n[ERROR] Timed out waiting for 1 receiver(s).\n"
    )
    assert 0.9 * TTL <= waited <= TTL_LATEST, waited


# `?progress` watchers --------------------------------------------------------------------------


async def test_idle_watcher_ends_after_the_pending_ttl(
    start_relay: StartRelay, raw_clients: list[RawClient]
) -> None:
    relay = await start_relay(pending_ttl=TTL)
    with trio.fail_after(15):
        watcher = await Watcher.open(relay, raw_clients, "/nobody-comes")
        opened = trio.current_time()
        text = await watcher.read_to_end()
        lasted = trio.current_time() - opened
    assert [e["state"] for e in _data_events(text)] == ["idle"]
    assert 0.9 * TTL <= lasted <= TTL_LATEST, lasted


KEEPALIVE = 0.6  # above the 4-updates-a-second floor (0.25 s), so a shorter interval shows
KEEPALIVE_CHUNK = b"\r\n%x\r\n: keep-alive\n\n" % len(b": keep-alive\n\n")


@pytest.mark.parametrize("receiver_waits", [False, True], ids=["idle-path", "waiting-pipe"])
async def test_keepalives_come_while_nothing_changes(
    start_relay: StartRelay,
    raw_clients: list[RawClient],
    monkeypatch: pytest.MonkeyPatch,
    receiver_waits: bool,
) -> None:
    monkeypatch.setattr("pipe_relay.net.progress.KEEPALIVE_INTERVAL", KEEPALIVE)
    relay = await start_relay()
    key = f"/kept-{receiver_waits}"
    state = "waiting" if receiver_waits else "idle"
    latest = KEEPALIVE + CI_MARGIN
    with trio.fail_after(10):
        if receiver_waits:
            receiver = await RawClient.connect(relay)
            raw_clients.append(receiver)
            await receiver.send(f"GET {key} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            await relay.wait_for_pipe(key, receivers=1)
        watcher = await Watcher.open(relay, raw_clients, key)
        first = await _read_within(watcher.client, b"}\n\n", latest)
        times = [trio.current_time()]
        chunks = []
        for _ in range(3):
            chunks.append(await _read_within(watcher.client, b": keep-alive\n\n", latest + 1))
            times.append(trio.current_time())
    assert [e["state"] for e in _data_events(first.decode())] == [state]
    gaps = [after - before for before, after in itertools.pairwise(times)]
    assert all(0.8 * KEEPALIVE <= gap <= latest for gap in gaps), gaps
    assert chunks == [KEEPALIVE_CHUNK] * 3, chunks  # comments only: no data event in between


async def _watch_until(watcher: Watcher, done: Callable[[list[dict[str, object]]], bool]) -> None:
    """Read the event stream chunk by chunk until `done(events so far)`."""
    while not done(_data_events(watcher.text)):
        assert not watcher.ended, watcher.text
        await watcher._more()  # one more chunk of the event stream


def _clean_idle(events: list[dict[str, object]]) -> bool:
    return bool(events) and events[-1] == {
        "state": "idle", "bytes": 0, "total": None,
        "receivers": {"connected": 0, "expected": 0}, "rate": 0.0, "elapsed": 0.0,
    }  # fmt: skip


async def _receiver_leaves_a_watched_pipe(relay: Relay, raw_clients: list[RawClient], key: str) -> Watcher:
    """A receiver waits on `key`, a watcher sees `waiting`, the receiver closes its socket."""
    receiver = await RawClient.connect(relay)
    await receiver.send(f"GET {key} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    await relay.wait_for_pipe(key, receivers=1)
    watcher = await Watcher.open(relay, raw_clients, key)
    await watcher.events_until("waiting")
    await receiver.aclose()
    await relay.wait_until_free(key)
    return watcher


async def test_watcher_goes_back_to_idle_when_the_waiting_receiver_leaves(
    relay: Relay, raw_clients: list[RawClient]
) -> None:
    with trio.fail_after(10):
        watcher = await _receiver_leaves_a_watched_pipe(relay, raw_clients, "/comeback")
        await _watch_until(watcher, _clean_idle)
        assert _states(_data_events(watcher.text)) == ["waiting", "idle"]
        # the stream goes on, and follows the next pipe on that path
        again = await RawClient.connect(relay)
        raw_clients.append(again)
        await again.send(b"GET /comeback HTTP/1.1\r\nHost: x\r\n\r\n")
        await _watch_until(watcher, lambda events: events[-1]["state"] == "waiting")
    assert _states(_data_events(watcher.text)) == ["waiting", "idle", "waiting"]
    assert not watcher.ended


async def test_an_idle_event_counts_no_receivers(relay: Relay, raw_clients: list[RawClient]) -> None:
    """`idle` means no pipe on the path: no event may say idle with receivers still connected."""
    with trio.fail_after(10):
        watcher = await _receiver_leaves_a_watched_pipe(relay, raw_clients, "/counted")
        await _watch_until(watcher, _clean_idle)
    idle = [e for e in _data_events(watcher.text) if e["state"] == "idle"]
    assert all(e["receivers"] == {"connected": 0, "expected": 0} for e in idle), idle


# Write deadline ----------------------------------------------------------------------------------

WRITE_TIMEOUT = 1.0


async def _stalled_sender(relay: Relay, key: str) -> RawClient:
    """A sender whose receive buffer is tiny and which never reads its status stream. Its small
    MSS (as on a small-MTU link) also keeps the server's send buffer from autotuning to megabytes,
    so a few hundred status lines fill both buffers."""
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)  # before connect: sets the window
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 88)
    await sock.connect((relay.host, relay.port))
    client = RawClient(trio.SocketStream(sock))
    await client.send(f"PUT {key} HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n".encode())
    return client


async def test_a_sender_that_never_reads_is_dropped_after_the_write_timeout(
    start_relay: StartRelay,
    raw_clients: list[RawClient],
    monkeypatch: pytest.MonkeyPatch,
    payloads: dict[int, Payload],
) -> None:
    monkeypatch.setattr("pipe_relay.net.connection.WRITE_TIMEOUT", WRITE_TIMEOUT)
    # heartbeats as fast as the hub's ticker goes (about one a millisecond) fill the buffers in well
    # under a second; then one write waits WRITE_TIMEOUT and the sender is dropped
    relay = await start_relay(heartbeat=0.0001)
    with trio.fail_after(10):
        stalled = await _stalled_sender(relay, "/stalled")
        raw_clients.append(stalled)
        await relay.wait_for_pipe("/stalled", sender=True)
        registered = trio.current_time()
        await relay.wait_until_free("/stalled")
        held = trio.current_time() - registered
        _, clean = await stalled.read_to_end()
        assert not clean  # reset: the server gave up on it
        # the path works again
        payload = payloads[1 << 20]
        got: dict[str, CurlResult] = {}
        async with trio.open_nursery() as nursery:
            nursery.start_soon(curl_into, got, "r", f"{relay.url}/stalled")
            await relay.wait_for_pipe("/stalled", receivers=1)
            sent = await curl("-T", str(payload.path), f"{relay.url}/stalled")
    assert sent.returncode == 0, sent.stderr
    assert sent.stdout.endswith(b"[INFO] Transfer complete.\n"), sent.stdout
    assert got["r"].returncode == 0
    assert hashlib.sha256(got["r"].stdout).hexdigest() == payload.sha256
    assert 0.8 * WRITE_TIMEOUT <= held <= WRITE_TIMEOUT + 3, held
