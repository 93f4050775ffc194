# Refusals by the pipe's state, end to end: n mismatch, a second sender, busy paths, full slots, limits, TTL.
# Invariant: each error is exact (status, code, one line, CORS); the parties already on the path go on.
from __future__ import annotations

from pathlib import Path

import pytest
import trio

from tests.clients import RawClient, Relay, StartRelay, parse_head
from tests.responses import TEXT_PLAIN, assert_error, assert_free, http, spawn

# N_MISMATCH --------------------------------------------------------------------------------


async def test_n_mismatch_sender_against_waiting_receivers(relay: Relay, small_file: Path) -> None:
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            first = spawn(nursery, relay, "/nm?n=2")
            await relay.wait_for_pipe("/nm", receivers=1)
            response = await http(relay, "/nm?n=3", "-T", str(small_file))
            assert_error(
                response,
                400,
                "N_MISMATCH",
                "[ERROR] Receiver count mismatch on '/nm': this path expects n=2, got n=3.",
            )
            # the waiting receiver is untouched and can still be served with the right n
            second = spawn(nursery, relay, "/nm?n=2")
            await relay.wait_for_pipe("/nm", sender=False, receivers=2)
            sender = await http(relay, "/nm?n=2", "-T", str(small_file))
            assert sender.status == 200
            for pending in (first, second):
                received = await pending.result()
                assert received.status == 200
                assert received.body == small_file.read_bytes()


async def test_n_mismatch_receiver_against_waiting_sender(relay: Relay, small_file: Path) -> None:
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            sender = spawn(nursery, relay, "/nm2", "-T", str(small_file))
            await relay.wait_for_pipe("/nm2", sender=True)
            response = await http(relay, "/nm2?n=2")
            assert_error(
                response,
                400,
                "N_MISMATCH",
                "[ERROR] Receiver count mismatch on '/nm2': this path expects n=1, got n=2.",
            )
            received = await http(relay, "/nm2?n=1")
            assert received.status == 200
            assert received.body == small_file.read_bytes()
            assert (await sender.result()).status == 200


# DUPLICATE_SENDER --------------------------------------------------------------------------


async def test_duplicate_sender(relay: Relay, small_file: Path, tmp_path: Path) -> None:
    other = tmp_path / "other.txt"
    other.write_bytes(b"the second sender\n")
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            first = spawn(nursery, relay, "/dup", "-T", str(small_file))
            await relay.wait_for_pipe("/dup", sender=True)
            for path in ("/dup", "/api/v1/pipe/dup"):
                response = await http(relay, path, "-T", str(other))
                assert_error(
                    response,
                    400,
                    "DUPLICATE_SENDER",
                    "[ERROR] Path '/dup' already has a sender connected.",
                )
            # the first sender still owns the path
            received = await http(relay, "/dup")
            assert received.status == 200
            assert received.body == small_file.read_bytes()
            assert (await first.result()).status == 200


# ACTIVE_TRANSFER / TOO_MANY_ACTIVE: a transfer held open by a raw sender --------------------


async def hold_transfer(relay: Relay, key: str, raw_clients: list[RawClient]) -> tuple[RawClient, RawClient]:
    """A transfer in progress: the sender has sent 3 of its 10 bytes and keeps the socket open."""
    sender = await RawClient.connect(relay)
    raw_clients.append(sender)
    await sender.send(f"PUT {key} HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nabc".encode())
    status, _, _ = parse_head(await sender.read_until(b"\r\n\r\n"))
    assert status == 200
    await relay.wait_for_pipe(key, sender=True, receivers=0)
    receiver = await RawClient.connect(relay)
    raw_clients.append(receiver)
    await receiver.send(f"GET {key} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
    status, headers, _ = parse_head(await receiver.read_until(b"\r\n\r\n"))
    assert status == 200
    assert headers["content-length"] == "10"
    assert await receiver.read_exactly(3) == b"abc"
    return sender, receiver


async def finish_transfer(relay: Relay, key: str, sender: RawClient, receiver: RawClient) -> None:
    await sender.send(b"defghij")
    assert await receiver.read_exactly(7) == b"defghij"
    rest, clean = await receiver.read_to_end()
    assert (rest, clean) == (b"", True)
    status_stream, _ = await sender.read_to_end()
    assert b"[INFO] Transfer complete.\n" in status_stream
    await relay.wait_until_free(key)


async def test_active_transfer(relay: Relay, raw_clients: list[RawClient]) -> None:
    with trio.fail_after(10):
        sender, receiver = await hold_transfer(relay, "/busy", raw_clients)
        message = "[ERROR] Path '/busy' is already in use by an active transfer."
        assert_error(await http(relay, "/busy"), 400, "ACTIVE_TRANSFER", message)
        assert_error(await http(relay, "/api/v1/pipe/busy"), 400, "ACTIVE_TRANSFER", message)
        response = await http(relay, "/busy", "-X", "PUT", "--data-binary", "intruder")
        assert_error(response, 400, "ACTIVE_TRANSFER", message)
        # the transfer itself is unharmed
        await finish_transfer(relay, "/busy", sender, receiver)


async def test_too_many_active(
    start_relay: StartRelay, raw_clients: list[RawClient], small_file: Path
) -> None:
    with trio.fail_after(10):
        relay = await start_relay(max_active=1)
        sender, receiver = await hold_transfer(relay, "/one", raw_clients)
        async with trio.open_nursery() as nursery:
            waiting = spawn(nursery, relay, "/two")
            await relay.wait_for_pipe("/two", receivers=1)
            response = await http(relay, "/two", "-T", str(small_file))
            assert_error(
                response, 503, "TOO_MANY_ACTIVE", "[ERROR] Too many active transfers. Try again later."
            )
            retry = response.headers["retry-after"]
            assert retry.isdigit() and int(retry) > 0
            # once the first transfer ends there is room: the same sender goes through
            await finish_transfer(relay, "/one", sender, receiver)
            sent = await http(relay, "/two", "-T", str(small_file))
            assert sent.status == 200
            received = await waiting.result()
            assert received.status == 200
            assert received.body == small_file.read_bytes()


# RECEIVER_SLOTS_FULL -----------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 2])
async def test_receiver_slots_full(relay: Relay, small_file: Path, n: int) -> None:
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            waiting = [spawn(nursery, relay, f"/full?n={n}") for _ in range(n)]
            await relay.wait_for_pipe("/full", sender=False, receivers=n)
            response = await http(relay, f"/full?n={n}")
            assert_error(
                response,
                400,
                "RECEIVER_SLOTS_FULL",
                f"[ERROR] All {n} receiver slot(s) on '/full' are taken.",
            )
            sent = await http(relay, f"/full?n={n}", "-T", str(small_file))
            assert sent.status == 200
            for pending in waiting:
                assert (await pending.result()).body == small_file.read_bytes()


# TOO_MANY_PENDING --------------------------------------------------------------------------


async def test_too_many_pending(start_relay: StartRelay, small_file: Path) -> None:
    with trio.fail_after(10):
        relay = await start_relay(max_pending=1)
        async with trio.open_nursery() as nursery:
            waiting = spawn(nursery, relay, "/p1")
            await relay.wait_for_pipe("/p1", receivers=1)
            message = "[ERROR] Too many pending transfers. Try again later."
            for args in ([], ["-T", str(small_file)]):
                response = await http(relay, "/p2", *args)
                assert_error(response, 503, "TOO_MANY_PENDING", message)
                retry = response.headers["retry-after"]
                assert retry.isdigit() and int(retry) > 0
                assert_free(relay, "/p2")
            # joining the pending pipe is still allowed
            sent = await http(relay, "/p1", "-T", str(small_file))
            assert sent.status == 200
            assert (await waiting.result()).body == small_file.read_bytes()


# TTL_EXPIRED -------------------------------------------------------------------------------


async def test_ttl_expired_receiver(start_relay: StartRelay) -> None:
    with trio.fail_after(10):
        relay = await start_relay(pending_ttl=0.5)
        started = trio.current_time()
        response = await http(relay, "/late")
        assert_error(response, 408, "TTL_EXPIRED", "[ERROR] Timed out waiting for sender.")
        assert trio.current_time() - started >= 0.45
        await relay.wait_until_free("/late")


async def test_ttl_expired_sender(start_relay: StartRelay, small_file: Path) -> None:
    with trio.fail_after(10):
        relay = await start_relay(pending_ttl=0.5)
        response = await http(relay, "/lonely", "-T", str(small_file))
        assert response.status == 200
        assert response.headers["content-type"] == TEXT_PLAIN
        assert response.headers["access-control-allow-origin"] == "*"
        assert response.body == (
            b"[INFO] Waiting for 1 receiver(s) to connect...\n[ERROR] Timed out waiting for 1 receiver(s).\n"
        )
        await relay.wait_until_free("/lonely")


async def test_ttl_expired_partial_fan_out(start_relay: StartRelay, small_file: Path) -> None:
    with trio.fail_after(10):
        relay = await start_relay(pending_ttl=0.5)
        async with trio.open_nursery() as nursery:
            sender = spawn(nursery, relay, "/half?n=2", "-T", str(small_file))
            await relay.wait_for_pipe("/half", sender=True)
            receiver = await http(relay, "/half?n=2")
            assert_error(receiver, 408, "TTL_EXPIRED", "[ERROR] Timed out waiting for sender.")
            sent = await sender.result()
            assert sent.status == 200
            assert sent.body == (
                b"[INFO] Waiting for 2 receiver(s) to connect...\n"
                b"[INFO] 1 of 2 receiver(s) connected.\n"
                b"[ERROR] Timed out waiting for 2 receiver(s).\n"
            )
        await relay.wait_until_free("/half")
