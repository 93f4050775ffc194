# Refusals of the request alone, live: bad n, reserved paths, workers, ranges, methods, lengths, bad heads.
# Invariant: each refusal is exact: status, X-Pipe-Error, one `[ERROR] ...` line, Content-Length, CORS.
from __future__ import annotations

from pathlib import Path

import pytest
import trio

from tests.clients import Relay, StartRelay, raw_exchange
from tests.responses import (
    TEXT_PLAIN,
    assert_error,
    assert_free,
    assert_raw_error,
    http,
    spawn,
    split_response,
)

PIPE_ALLOW = "GET, POST, PUT, OPTIONS"


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
