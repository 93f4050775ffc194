# Every rejection of issue 2's error table, end to end: real server, curl and raw sockets.
# Each error is checked exactly: status, X-Pipe-Error, one `[ERROR] ...` line, Content-Length, CORS.
from __future__ import annotations

from pathlib import Path

import pytest
import trio

from tests.clients import RawClient, Relay, StartRelay, parse_head, raw_exchange
from tests.responses import TEXT_PLAIN, assert_error, assert_raw_error, http, spawn, split_response

PIPE_ALLOW = "GET, POST, PUT, OPTIONS"
SERVICE_ALLOW = "GET, HEAD, OPTIONS"


def assert_free(relay: Relay, key: str) -> None:
    """A rejected request left nothing behind in the registry."""
    assert relay.hub.registry.snapshot(key) is None


@pytest.fixture
def small_file(tmp_path: Path) -> Path:
    path = tmp_path / "small.txt"
    path.write_bytes(b"hello, pipe\n")
    return path


# INVALID_N ---------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["0", "-1", "abc", "3abc", "257"])
async def test_invalid_n_on_get(relay: Relay, value: str) -> None:
    with trio.fail_after(10):
        response = await http(relay, f"/inv?n={value}")
        assert_error(
            response,
            400,
            "INVALID_N",
            f"[ERROR] Invalid 'n' parameter '{value}': must be an integer between 1 and 256.",
        )
        assert_free(relay, "/inv")


@pytest.mark.parametrize("value", ["0", "-1", "abc", "3abc", "257"])
async def test_invalid_n_on_put(relay: Relay, small_file: Path, value: str) -> None:
    with trio.fail_after(10):
        response = await http(relay, f"/inv?n={value}", "-T", str(small_file))
        assert_error(
            response,
            400,
            "INVALID_N",
            f"[ERROR] Invalid 'n' parameter '{value}': must be an integer between 1 and 256.",
        )
        assert_free(relay, "/inv")


async def test_invalid_n_respects_max_receivers(start_relay: StartRelay) -> None:
    with trio.fail_after(10):
        relay = await start_relay(max_receivers=4)
        response = await http(relay, "/inv?n=5")
        assert_error(
            response,
            400,
            "INVALID_N",
            "[ERROR] Invalid 'n' parameter '5': must be an integer between 1 and 4.",
        )


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


# RESERVED_PATH -----------------------------------------------------------------------------

RESERVED = ["/help", "/noscript", "/favicon.ico", "/robots.txt", "/version", "/health"]


@pytest.mark.parametrize("method", ["PUT", "POST"])
@pytest.mark.parametrize(
    "path", [*RESERVED, *("/api/v1/pipe" + p for p in RESERVED if p != "/health")]
)  # (POST /api/v1/pipe/health is 405: test_strict.py)
async def test_reserved_path_rejects_senders(relay: Relay, small_file: Path, method: str, path: str) -> None:
    with trio.fail_after(10):
        response = await http(relay, path, "-X", method, "--data-binary", f"@{small_file}")
        assert_error(
            response,
            400,
            "RESERVED_PATH",
            f"[ERROR] '{path}' is a reserved path. Use a custom path like '/myfile' or '/transfer123'.",
        )


@pytest.mark.parametrize("method", ["PUT", "POST"])
@pytest.mark.parametrize("path", ["/", "/api/v1/pipe", "/api/v1/pipe/"])
async def test_reserved_index_rejects_senders(relay: Relay, small_file: Path, method: str, path: str) -> None:
    with trio.fail_after(10):
        response = await http(relay, path, "-X", method, "--data-binary", f"@{small_file}")
        shown = response.body.decode().split("'")[1]
        assert shown in ("/", path)
        assert_error(
            response,
            400,
            "RESERVED_PATH",
            f"[ERROR] '{shown}' is a reserved path. Use a custom path like '/myfile' or '/transfer123'.",
        )


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


# SERVICE_WORKER / CONTENT_RANGE ------------------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "PUT", "POST"])
async def test_service_worker_rejected(relay: Relay, method: str) -> None:
    with trio.fail_after(10):
        args = ["-H", "Service-Worker: script"]
        if method != "GET":
            args += ["-X", method, "--data-binary", "payload"]
        response = await http(relay, "/sw.js", *args)
        assert_error(
            response,
            400,
            "SERVICE_WORKER",
            "[ERROR] Service Worker registration via pipe paths is not allowed.",
        )
        assert_free(relay, "/sw.js")


@pytest.mark.parametrize("method", ["PUT", "POST"])
async def test_content_range_rejected(relay: Relay, small_file: Path, method: str) -> None:
    with trio.fail_after(10):
        size = small_file.stat().st_size
        response = await http(
            relay,
            "/ranged",
            "-X",
            method,
            "--data-binary",
            f"@{small_file}",
            "-H",
            f"Content-Range: bytes 0-{size - 1}/{size}",
        )
        assert_error(
            response,
            400,
            "CONTENT_RANGE",
            "[ERROR] Content-Range is not supported for streaming transfers; send the whole body.",
        )
        assert_free(relay, "/ranged")


# METHOD_NOT_ALLOWED ------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["DELETE", "PATCH"])
@pytest.mark.parametrize("path", ["/mypipe", "/api/v1/pipe/mypipe"])
async def test_method_not_allowed_on_pipe(relay: Relay, method: str, path: str) -> None:
    with trio.fail_after(10):
        response = await http(relay, path, "-X", method)
        assert_error(
            response,
            405,
            "METHOD_NOT_ALLOWED",
            f"[ERROR] Method {method} is not allowed. Use GET, POST, or PUT.",
        )
        assert response.headers["allow"] == PIPE_ALLOW
        assert_free(relay, "/mypipe")


async def test_head_on_pipe_path_is_405_without_body(relay: Relay) -> None:
    with trio.fail_after(10):
        raw = await raw_exchange(relay, b"HEAD /mypipe HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        assert raw, "the server closed without answering HEAD"
        response = split_response(raw)
        assert response.status == 405
        assert response.body == b""
        assert response.headers["allow"] == PIPE_ALLOW
        assert response.headers["x-pipe-error"] == "METHOD_NOT_ALLOWED"
        assert response.headers["content-type"] == TEXT_PLAIN
        assert response.headers["access-control-allow-origin"] == "*"
        assert_free(relay, "/mypipe")
        # and the server is still serving
        assert (await http(relay, "/version")).status == 200


# PATH_TOO_LONG -----------------------------------------------------------------------------


@pytest.mark.parametrize("prefix", ["", "/api/v1/pipe"])
@pytest.mark.parametrize("method", ["GET", "PUT"])
async def test_path_too_long(relay: Relay, prefix: str, method: str) -> None:
    with trio.fail_after(10):
        path = prefix + "/" + "a" * 1024  # key of 1025 characters
        args = ["-X", "PUT", "--data-binary", "x"] if method == "PUT" else []
        response = await http(relay, path, *args)
        assert_error(response, 414, "PATH_TOO_LONG", "[ERROR] Path too long (max 1024 characters).")


async def test_path_of_exactly_max_length_works(relay: Relay, small_file: Path) -> None:
    with trio.fail_after(10):
        key = "/" + "b" * 1023
        async with trio.open_nursery() as nursery:
            receiver = spawn(nursery, relay, "/api/v1/pipe" + key)
            await relay.wait_for_pipe(key, receivers=1)
            sent = await http(relay, key, "-T", str(small_file))
            assert sent.status == 200
            received = await receiver.result()
            assert received.status == 200
            assert received.body == small_file.read_bytes()


async def test_path_too_long_with_configured_limit(start_relay: StartRelay) -> None:
    with trio.fail_after(10):
        relay = await start_relay(max_path_length=8)
        response = await http(relay, "/abcdefgh")  # 9 characters
        assert_error(response, 414, "PATH_TOO_LONG", "[ERROR] Path too long (max 8 characters).")
        # exactly 8 characters is a pipe path: n=0 is judged, not the length
        response = await http(relay, "/abcdefg?n=0")
        assert response.headers["x-pipe-error"] == "INVALID_N"


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


# Malformed request heads -------------------------------------------------------------------


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GARBAGE\r\n\r\n",
        b"GET /x HTTP/1.1 extra\r\nHost: t\r\n\r\n",
        b"GET /x HTTP/1.1\r\nHost: t\r\nNo colon here\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",
    ],
    ids=["garbage-line", "extra-token", "bad-header", "tls-hello"],
)
async def test_garbage_request_is_bad_request(relay: Relay, request_bytes: bytes) -> None:
    with trio.fail_after(10):
        raw = await raw_exchange(relay, request_bytes)
        assert_raw_error(raw, 400, "BAD_REQUEST", lambda t: t.startswith("[ERROR] Malformed request: "))
        assert (await http(relay, "/version")).status == 200


async def test_target_without_slash_is_bad_request(relay: Relay) -> None:
    with trio.fail_after(10):
        raw = await raw_exchange(relay, b"GET mypipe HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        response = split_response(raw)
        assert_error(
            response,
            400,
            "BAD_REQUEST",
            "[ERROR] Malformed request: the request target must start with '/'.",
        )


@pytest.mark.parametrize("size", [70_000, 1 << 20], ids=["70KB", "1MiB"])
async def test_huge_head_is_431(relay: Relay, size: int) -> None:
    with trio.fail_after(10):
        head = b"GET /version HTTP/1.1\r\nHost: t\r\nConnection: close\r\nX-Big: " + b"a" * size + b"\r\n\r\n"
        raw = await raw_exchange(relay, head)
        assert_raw_error(
            raw,
            431,
            "HEAD_TOO_LARGE",
            lambda t: t == "[ERROR] Request head too large (max 65536 bytes).\n",
        )


# A rejected upload never hangs the uploader ------------------------------------------------


@pytest.mark.parametrize("expect", [True, False], ids=["expect-100", "no-expect"])
@pytest.mark.parametrize("path", ["/help", "/up?n=0"])
async def test_rejected_curl_upload_does_not_hang(
    relay: Relay, tmp_path: Path, expect: bool, path: str
) -> None:
    big = tmp_path / "big.bin"
    big.write_bytes(b"\xa5" * (4 << 20))
    with trio.fail_after(10):
        args = ["-T", str(big)] + ([] if expect else ["-H", "Expect:"])
        started = trio.current_time()
        response = await http(relay, path, *args)
        assert trio.current_time() - started < 5
        assert response.status == 400
        assert response.headers["x-pipe-error"] in ("RESERVED_PATH", "INVALID_N")
        assert response.headers["content-length"] == str(len(response.body))


async def test_rejected_chunked_upload_does_not_hang(relay: Relay) -> None:
    with trio.fail_after(10):
        started = trio.current_time()
        response = await http(relay, "/robots.txt", "-T", "-", stdin=b"z" * (3 << 20))
        assert trio.current_time() - started < 5
        assert_error(
            response,
            400,
            "RESERVED_PATH",
            "[ERROR] '/robots.txt' is a reserved path. Use a custom path like '/myfile' or '/transfer123'.",
        )
