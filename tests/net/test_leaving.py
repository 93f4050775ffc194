# A waiting party that leaves is forgotten at once (its hang-up wakes it, not the next tick), so the
# party that replaces it 50 ms later gets the transfer. The tick is made 30 s long here to prove it.
from __future__ import annotations

import signal
from functools import partial

import pytest
import trio

import pipe_relay.net.hub
from tests.clients import CurlResult, RawClient, Relay, StartRelay, curl, curl_into

SEEN_WITHIN = 0.25
"""docs/protocol.md promises 50 ms; this is that with room for a loaded 2-core CI (the tick is 30 s)."""


@pytest.fixture
async def relay(start_relay: StartRelay, monkeypatch: pytest.MonkeyPatch) -> Relay:
    monkeypatch.setattr(pipe_relay.net.hub, "POLL_INTERVAL", 30.0)  # only a hang-up can wake a party now
    return await start_relay(heartbeat=0)


async def _forgotten_within(relay: Relay, key: str, predicate_receivers: int | None) -> float:
    start = trio.current_time()
    if predicate_receivers is None:
        await relay.wait_until_free(key)
    else:
        await relay.wait_for_pipe(key, receivers=predicate_receivers)
    return trio.current_time() - start


@pytest.mark.parametrize("how", ["close", "reset"])
async def test_a_waiting_receiver_that_leaves_is_forgotten_at_once(
    relay: Relay, raw_clients: list[RawClient], how: str
) -> None:
    with trio.fail_after(10):
        stays = await RawClient.connect(relay)
        leaves = await RawClient.connect(relay)
        raw_clients += [stays, leaves]
        for client in (stays, leaves):
            await client.send(b"GET /leave-r?n=2 HTTP/1.1\r\nHost: x\r\n\r\n")
        await relay.wait_for_pipe("/leave-r", receivers=2)
        await leaves.leave(how)
        seconds = await _forgotten_within(relay, "/leave-r", 1)
        assert seconds < SEEN_WITHIN
        got: dict[str, CurlResult] = {}
        async with trio.open_nursery() as nursery:
            await trio.sleep(0.05)  # the replacement comes 50 ms after the kill
            nursery.start_soon(curl_into, got, "r", f"{relay.url}/leave-r?n=2")
            await relay.wait_for_pipe("/leave-r", receivers=2)
            nursery.start_soon(
                partial(curl_into, got, "s", "-T", "-", f"{relay.url}/leave-r?n=2", stdin=b"for two")
            )
        rest, _ = await stays.read_to_end()
    assert got["r"].stdout == b"for two" and got["r"].returncode == 0
    assert rest.endswith(b"\r\n\r\n7\r\nfor two\r\n0\r\n\r\n")
    assert b"[WARN]" not in got["s"].stdout
    assert got["s"].stdout.decode().splitlines()[-1] == "[INFO] Transfer complete."


@pytest.mark.parametrize("how", ["close", "reset"])
async def test_a_waiting_sender_that_leaves_is_forgotten_at_once(
    relay: Relay, raw_clients: list[RawClient], how: str
) -> None:
    with trio.fail_after(10):
        sender = await RawClient.connect(relay)
        raw_clients.append(sender)
        await sender.send(b"PUT /leave-s HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nfirst")
        await relay.wait_for_pipe("/leave-s", sender=True)
        await sender.leave(how)
        assert await _forgotten_within(relay, "/leave-s", None) < SEEN_WITHIN
        await trio.sleep(0.05)
        got: dict[str, CurlResult] = {}
        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                partial(curl_into, got, "s", "-T", "-", f"{relay.url}/leave-s", stdin=b"second")
            )
            await relay.wait_for_pipe("/leave-s", sender=True)
            nursery.start_soon(curl_into, got, "r", f"{relay.url}/leave-s")
    assert got["r"].stdout == b"second"
    assert got["s"].stdout.decode().splitlines()[-1] == "[INFO] Transfer complete."


async def test_a_receiver_killed_with_ctrl_c_is_replaced_50_ms_later(relay: Relay) -> None:
    """As a user does it: curl waiting on n=2, Ctrl-C, the same command again 50 ms later."""
    with trio.fail_after(15):
        got: dict[str, CurlResult] = {}
        async with trio.open_nursery() as nursery:
            nursery.start_soon(curl_into, got, "stays", f"{relay.url}/ctrl-c?n=2")
            await relay.wait_for_pipe("/ctrl-c", receivers=1)
            # (env resets SIGINT for curl: a run started in the background, `make test &`, ignores
            # it, and ignored signals are inherited, so Ctrl-C would not reach this curl)
            killed = await trio.lowlevel.open_process(
                ["env", "--default-signal=INT", "curl", "-sS", "-o", "/dev/null", f"{relay.url}/ctrl-c?n=2"]
            )
            await relay.wait_for_pipe("/ctrl-c", receivers=2)
            killed.send_signal(signal.SIGINT)
            assert await killed.wait() != 0
            assert await _forgotten_within(relay, "/ctrl-c", 1) < SEEN_WITHIN
            await trio.sleep(0.05)
            nursery.start_soon(curl_into, got, "again", f"{relay.url}/ctrl-c?n=2")
            await relay.wait_for_pipe("/ctrl-c", receivers=2)
            sent = await curl("-T", "-", f"{relay.url}/ctrl-c?n=2", stdin=b"both get this")
    assert got["stays"].stdout == got["again"].stdout == b"both get this"
    assert b"[WARN]" not in sent.stdout
    assert "[INFO] 2 of 2 receiver(s) connected." in sent.stdout.decode()


async def test_a_body_arriving_does_not_count_as_leaving(relay: Relay, raw_clients: list[RawClient]) -> None:
    """The sender's body bytes make its socket readable; only a hang-up may wake it."""
    with trio.fail_after(10):
        sender = await RawClient.connect(relay)
        raw_clients.append(sender)
        await sender.send(b"PUT /stays HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nhello")
        await relay.wait_for_pipe("/stays", sender=True)
        await sender.send(b"world")
        await trio.sleep(0.3)
        assert relay.hub.registry.snapshot("/stays") is not None
        got = await curl(f"{relay.url}/stays")
    assert got.stdout == b"helloworld"
