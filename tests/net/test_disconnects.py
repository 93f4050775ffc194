# Parties that leave, die or stall: the path is freed, and a cut-short body never looks complete.
# Receivers see a reset or a short read; senders hear [WARN]/[ERROR] lines when they are still there.
from __future__ import annotations

import trio

from pipe_relay.core.registry import PipeState
from tests.clients import (
    CurlResult,
    RawClient,
    Relay,
    StartRelay,
    curl,
    curl_into,
    parse_head,
    read_status_until,
)


async def _open(relay: Relay, raw_clients: list[RawClient], request: bytes) -> RawClient:
    client = await RawClient.connect(relay)
    raw_clients.append(client)
    await client.send(request)
    return client


async def _wait_active(relay: Relay, key: str) -> None:
    def active() -> bool:
        snap = relay.hub.registry.snapshot(key)
        return snap is not None and snap.state is PipeState.ACTIVE

    await relay.hub.wait_for(active)


async def test_receiver_that_leaves_before_start_frees_the_path(
    relay: Relay, raw_clients: list[RawClient]
) -> None:
    with trio.fail_after(10):
        receiver = await _open(relay, raw_clients, b"GET /gone HTTP/1.1\r\nHost: x\r\n\r\n")
        await relay.wait_for_pipe("/gone", receivers=1)
        await receiver.aclose()
        await relay.wait_until_free("/gone")
        got: dict[str, CurlResult] = {}
        async with trio.open_nursery() as nursery:
            nursery.start_soon(curl_into, got, "r", f"{relay.url}/gone")
            await relay.wait_for_pipe("/gone", receivers=1)
            assert (await curl("-T", "-", f"{relay.url}/gone", stdin=b"fresh")).returncode == 0
    assert got["r"].stdout == b"fresh"


async def test_sender_that_leaves_before_start_frees_the_path(
    relay: Relay, raw_clients: list[RawClient]
) -> None:
    with trio.fail_after(10):
        sender = await _open(
            relay, raw_clients, b"PUT /left HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
        )
        await relay.wait_for_pipe("/left", sender=True)
        await sender.aclose()
        await relay.wait_until_free("/left")
        again = await curl("-i", "-X", "PUT", "--data-binary", "x", "--max-time", "1", f"{relay.url}/left")
        # the path is free: the new sender is accepted (200 and waiting), not DUPLICATE_SENDER
        assert again.stdout.startswith(b"HTTP/1.1 200 OK")
        assert b"[INFO] Waiting for 1 receiver(s) to connect..." in again.stdout


async def test_receiver_leaving_updates_the_waiting_sender(
    relay: Relay, raw_clients: list[RawClient]
) -> None:
    with trio.fail_after(10):
        sender = await _open(
            relay, raw_clients, b"PUT /count?n=2 HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\n"
        )
        await sender.read_until(b"\r\n\r\n")
        await read_status_until(sender, b"[INFO] Waiting for 2 receiver(s) to connect...\n")
        receiver = await _open(relay, raw_clients, b"GET /count?n=2 HTTP/1.1\r\nHost: x\r\n\r\n")
        await read_status_until(sender, b"[INFO] 1 of 2 receiver(s) connected.\n")
        await receiver.aclose()
        await read_status_until(sender, b"[INFO] 0 of 2 receiver(s) connected.\n")
        await relay.wait_for_pipe("/count", sender=True, receivers=0)


async def test_sender_dying_mid_body_under_content_length(relay: Relay, raw_clients: list[RawClient]) -> None:
    with trio.fail_after(10):
        receiver = await _open(relay, raw_clients, b"GET /cut HTTP/1.1\r\nHost: x\r\n\r\n")
        await relay.wait_for_pipe("/cut", receivers=1)
        sender = await _open(
            relay,
            raw_clients,
            b"PUT /cut HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n" + b"a" * 1000,
        )
        head = await receiver.read_until(b"\r\n\r\n")
        status, headers, _ = parse_head(head)
        assert status == 200 and headers["content-length"] == "100000"
        assert await receiver.read_exactly(1000) == b"a" * 1000
        await sender.aclose()
        rest, clean = await receiver.read_to_end()
    assert rest == b""
    assert not clean, "a cut-short body must end in a reset, not a clean close"


async def test_sender_dying_mid_body_under_chunked(relay: Relay, raw_clients: list[RawClient]) -> None:
    with trio.fail_after(10):
        receiver = await _open(relay, raw_clients, b"GET /cut2 HTTP/1.1\r\nHost: x\r\n\r\n")
        await relay.wait_for_pipe("/cut2", receivers=1)
        sender = await _open(
            relay,
            raw_clients,
            b"PUT /cut2 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
        )
        head = await receiver.read_until(b"\r\n\r\n")
        assert parse_head(head)[1]["transfer-encoding"] == "chunked"
        assert await receiver.read_exactly(10) == b"5\r\nhello\r\n"
        await sender.aclose()
        rest, clean = await receiver.read_to_end()
    assert b"0\r\n\r\n" not in rest
    assert not clean


async def test_curl_receiver_fails_when_sender_dies(relay: Relay, raw_clients: list[RawClient]) -> None:
    with trio.fail_after(10):
        got: dict[str, CurlResult] = {}
        async with trio.open_nursery() as nursery:
            nursery.start_soon(curl_into, got, "r", f"{relay.url}/cut3")
            await relay.wait_for_pipe("/cut3", receivers=1)
            sender = await _open(
                relay,
                raw_clients,
                b"PUT /cut3 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n",
            )
            await _wait_active(relay, "/cut3")
            await sender.aclose()
    assert got["r"].returncode != 0, "curl must report the cut-short transfer as failed"


async def test_sender_gone_before_any_byte_gives_receivers_an_error(
    relay: Relay, raw_clients: list[RawClient]
) -> None:
    with trio.fail_after(10):
        receiver = await _open(relay, raw_clients, b"GET /multi-gone HTTP/1.1\r\nHost: x\r\n\r\n")
        await relay.wait_for_pipe("/multi-gone", receivers=1)
        boundary = b"XyZ"
        sender = await _open(
            relay,
            raw_clients,
            b"POST /multi-gone HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=XyZ\r\n"
            b"Content-Length: 500\r\n\r\n--" + boundary + b"\r\n",
        )
        await relay.hub.wait_for(
            lambda: (
                (s := relay.hub.registry.snapshot("/multi-gone")) is not None and s.state.value == "active"
            )
        )
        await sender.aclose()
        response, _ = await receiver.read_to_end()
    status, headers, _ = parse_head(response)
    assert status == 502
    assert headers["x-pipe-error"] == "SENDER_FAILED"
    assert response.endswith(
        b"\r\n\r\n[ERROR] The transfer failed before it started: "
        b"the sender disconnected before the end of its body.\n"
    )


async def test_one_receiver_dying_leaves_the_others_streaming(
    relay: Relay, raw_clients: list[RawClient]
) -> None:
    with trio.fail_after(15):
        quitter = await _open(relay, raw_clients, b"GET /fan?n=2 HTTP/1.1\r\nHost: x\r\n\r\n")
        stayer = await _open(relay, raw_clients, b"GET /fan?n=2 HTTP/1.1\r\nHost: x\r\n\r\n")
        await relay.wait_for_pipe("/fan", receivers=2)
        sender = await _open(
            relay, raw_clients, b"PUT /fan?n=2 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        await sender.read_until(b"\r\n\r\n")
        await read_status_until(sender, b"[INFO] Streaming to 2 receiver(s)...\n")
        for client in (quitter, stayer):
            await client.read_until(b"\r\n\r\n")
        await quitter.aclose()
        sent = bytearray()
        warned = False
        async with trio.open_nursery() as nursery:

            async def watch() -> None:
                nonlocal warned
                await read_status_until(
                    sender, b"[WARN] A receiver disconnected; streaming to 1 receiver(s).\n"
                )
                warned = True

            nursery.start_soon(watch)
            while not warned:
                piece = b"x" * 4096
                await sender.send(b"1000\r\n" + piece + b"\r\n")
                sent += piece
                await stayer.read_exactly(len(b"1000\r\n") + 4096 + 2)
                await trio.sleep(0.01)  # pacing only; the wait is bounded by fail_after
        await sender.send(b"4\r\ntail\r\n0\r\n\r\n")
        assert await stayer.read_exactly(9) == b"4\r\ntail\r\n"
        assert await stayer.read_exactly(5) == b"0\r\n\r\n"
        await read_status_until(sender, b"[INFO] Transfer complete.\n")


async def test_all_receivers_gone_ends_the_sender(relay: Relay, raw_clients: list[RawClient]) -> None:
    with trio.fail_after(15):
        receiver = await _open(relay, raw_clients, b"GET /alone HTTP/1.1\r\nHost: x\r\n\r\n")
        await relay.wait_for_pipe("/alone", receivers=1)
        sender = await _open(
            relay, raw_clients, b"PUT /alone HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        await sender.read_until(b"\r\n\r\n")
        await read_status_until(sender, b"[INFO] Streaming to 1 receiver(s)...\n")
        await receiver.read_until(b"\r\n\r\n")
        await receiver.aclose()
        ended = False
        async with trio.open_nursery() as nursery:

            async def watch() -> None:
                nonlocal ended
                await read_status_until(sender, b"[ERROR] All receivers disconnected.\n")
                ended = True

            nursery.start_soon(watch)
            while not ended:
                try:
                    await sender.send(b"1000\r\n" + b"y" * 4096 + b"\r\n")
                except trio.BrokenResourceError:
                    break
                await trio.sleep(0.01)  # pacing only
        assert ended
        await relay.wait_until_free("/alone")


async def test_waiting_sender_gets_heartbeats(start_relay: StartRelay, raw_clients: list[RawClient]) -> None:
    relay = await start_relay(heartbeat=0.2)
    with trio.fail_after(10):
        sender = await _open(
            relay, raw_clients, b"PUT /beat HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\n"
        )
        await sender.read_until(b"\r\n\r\n")
        seen = await read_status_until(sender, b"[INFO] Still waiting for 1 receiver(s)...\n")
        assert seen.startswith(b"[INFO] Waiting for 1 receiver(s) to connect...\n")


async def test_pending_sender_times_out(start_relay: StartRelay, raw_clients: list[RawClient]) -> None:
    relay = await start_relay(pending_ttl=0.5, heartbeat=0)
    with trio.fail_after(10):
        sender = await _open(
            relay, raw_clients, b"PUT /ttl?n=2 HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\n"
        )
        await sender.read_until(b"\r\n\r\n")
        seen = await read_status_until(sender, b"[ERROR] Timed out waiting for 2 receiver(s).\n")
        assert seen == (
            b"[INFO] Waiting for 2 receiver(s) to connect...\n[ERROR] Timed out waiting for 2 receiver(s).\n"
        )
        assert await sender.read_exactly(5) == b"0\r\n\r\n"
        await relay.wait_until_free("/ttl")


async def test_idle_sender_is_cut_off(start_relay: StartRelay, raw_clients: list[RawClient]) -> None:
    relay = await start_relay(idle_timeout=0.5)
    with trio.fail_after(10):
        receiver = await _open(relay, raw_clients, b"GET /idle HTTP/1.1\r\nHost: x\r\n\r\n")
        await relay.wait_for_pipe("/idle", receivers=1)
        sender = await _open(
            relay, raw_clients, b"PUT /idle HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nab"
        )
        await sender.read_until(b"\r\n\r\n")
        await read_status_until(sender, b"[ERROR] Timed out: the sender sent nothing for too long.\n")
        received, clean = await receiver.read_to_end()
    assert received.endswith(b"\r\n\r\nab")
    assert not clean


async def test_malformed_chunked_body_aborts(relay: Relay, raw_clients: list[RawClient]) -> None:
    with trio.fail_after(10):
        receiver = await _open(relay, raw_clients, b"GET /bad HTTP/1.1\r\nHost: x\r\n\r\n")
        await relay.wait_for_pipe("/bad", receivers=1)
        sender = await _open(
            relay,
            raw_clients,
            b"PUT /bad HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n",
        )
        await sender.read_until(b"\r\n\r\n")
        await receiver.read_until(b"2\r\nok\r\n")
        await sender.send(b"zz\r\n")
        await read_status_until(sender, b"[ERROR] Malformed request body: invalid chunk size.\n")
        received, clean = await receiver.read_to_end()
    assert received == b""
    assert not clean


async def test_incomplete_head_is_cut_off_at_the_head_deadline(
    start_relay: StartRelay, raw_clients: list[RawClient]
) -> None:
    relay = await start_relay(header_timeout=0.5)
    with trio.fail_after(10):
        started = trio.current_time()
        slow = await _open(relay, raw_clients, b"GET /slowloris HTTP/1.1\r\nHost: x\r\n")  # no blank line
        received, _ = await slow.read_to_end()
        seconds = trio.current_time() - started
        # an idle keep-alive connection ends after one answered request, silently: nothing was asked
        idle = await _open(relay, raw_clients, b"GET /version HTTP/1.1\r\nHost: x\r\n\r\n")
        answered, _ = await idle.read_to_end()
    assert 0.45 <= seconds <= 2.5
    assert received.startswith(b"HTTP/1.1 408 Request Timeout\r\n")
    assert b"\r\nX-Pipe-Error: HEAD_TIMEOUT\r\n" in received
    assert received.endswith(b"\r\n\r\n[ERROR] Timed out waiting for the request head (0.5 s).\n")
    assert relay.hub.registry.snapshot("/slowloris") is None
    assert answered.startswith(b"HTTP/1.1 200 OK\r\n")
    assert answered.endswith(b"pipe-relay 0.1.0\n")


async def test_a_trickled_head_is_cut_off_at_the_deadline_from_accept(
    start_relay: StartRelay, raw_clients: list[RawClient]
) -> None:
    """Slowloris: a byte every 50 ms never buys more time; the deadline counts from the accept."""
    relay = await start_relay(header_timeout=0.5)
    head = b"GET /trickle HTTP/1.1\r\nHost: x\r\nX-Long: " + b"a" * 200

    async def trickle(client: RawClient) -> None:
        for index in range(len(head)):
            try:
                await client.send(head[index : index + 1])
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return  # the server closed: the head deadline passed
            await trio.sleep(0.05)

    with trio.fail_after(10):
        started = trio.current_time()
        slow = await RawClient.connect(relay)
        raw_clients.append(slow)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trickle, slow)
            received, _ = await slow.read_to_end()
            seconds = trio.current_time() - started
            nursery.cancel_scope.cancel()
    assert 0.45 <= seconds <= 2.5, seconds
    assert received.startswith(b"HTTP/1.1 408 Request Timeout\r\n")
