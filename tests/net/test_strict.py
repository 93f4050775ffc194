# Strict request parsing end to end: each malformed head gets its status, code and one [ERROR] line,
# the connection is closed after it, and the server goes on serving (raw sockets: no client fixes it).
from __future__ import annotations

import pytest
import trio

from tests.clients import RawClient, Relay, StartRelay, raw_exchange
from tests.responses import assert_error, assert_raw_error, http, split_response


def _exact(message: str) -> object:
    return lambda text: text == message + "\n"


@pytest.mark.parametrize("version", [b"2.0", b"3.0", b"9.9", b"0.9"])
async def test_http_versions_other_than_1_0_and_1_1_get_505(relay: Relay, version: bytes) -> None:
    with trio.fail_after(10):
        raw = await raw_exchange(relay, b"GET /v HTTP/" + version + b"\r\nHost: t\r\n\r\n")
    message = f"[ERROR] HTTP version {version.decode()} is not supported: use HTTP/1.1."
    assert_raw_error(raw, 505, "UNSUPPORTED_VERSION", _exact(message))
    assert raw.startswith(b"HTTP/1.1 505 HTTP Version Not Supported\r\n")
    assert relay.hub.registry.snapshot("/v") is None


@pytest.mark.parametrize("path", [b"/%", b"/%4", b"/%zz", b"/%G1", b"/a%4"])
async def test_a_broken_percent_escape_is_400(relay: Relay, path: bytes) -> None:
    with trio.fail_after(10):
        raw = await raw_exchange(relay, b"GET " + path + b" HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    message = "[ERROR] Malformed request: a malformed percent-escape in the path."
    assert_raw_error(raw, 400, "BAD_REQUEST", _exact(message))


@pytest.mark.parametrize("path", [b"/%00", b"/a%0D%0Ab", b"/%7f"])
async def test_an_encoded_control_character_is_400(relay: Relay, path: bytes) -> None:
    with trio.fail_after(10):
        raw = await raw_exchange(
            relay, b"PUT " + path + b" HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: 1\r\n\r\nx"
        )
    message = "[ERROR] Malformed request: an encoded control character in the path."
    assert_raw_error(raw, 400, "BAD_REQUEST", _exact(message))


@pytest.mark.parametrize(("lines", "status"), [(100, 200), (101, 431), (501, 431)])
async def test_more_than_100_header_lines_is_431(relay: Relay, lines: int, status: int) -> None:
    """`lines` header lines in all (Host, Connection and the rest): 100 pass, 101 do not."""
    head = b"GET /version HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
    head += b"".join(b"X-H%d: v\r\n" % i for i in range(lines - 2)) + b"\r\n"
    with trio.fail_after(10):
        raw = await raw_exchange(relay, head)
    if status == 200:
        assert split_response(raw).status == 200
    else:
        assert_raw_error(raw, 431, "TOO_MANY_HEADERS", _exact("[ERROR] Too many header lines (max 100)."))


@pytest.mark.parametrize("length", [b"18446744073709551616", b"9223372036854775808", b"1,2", b"0x10"])
async def test_an_invalid_content_length_is_400(relay: Relay, length: bytes) -> None:
    with trio.fail_after(10):
        raw = await raw_exchange(
            relay, b"PUT /cl HTTP/1.1\r\nHost: t\r\nContent-Length: " + length + b"\r\n\r\n"
        )
    response = split_response(raw)
    assert response.status == 400 and response.headers["x-pipe-error"] == "BAD_REQUEST"
    assert response.body.startswith(b"[ERROR] Malformed request: ")
    assert relay.hub.registry.snapshot("/cl") is None


async def test_the_largest_content_length_is_accepted(relay: Relay, raw_clients: list[RawClient]) -> None:
    with trio.fail_after(10):
        sender = await RawClient.connect(relay)
        raw_clients.append(sender)
        await sender.send(b"PUT /cl-max HTTP/1.1\r\nHost: t\r\nContent-Length: 9223372036854775807\r\n\r\n")
        assert (await sender.read_until(b"\r\n\r\n")).startswith(b"HTTP/1.1 200 OK\r\n")
        await relay.wait_for_pipe("/cl-max", sender=True)


async def test_transfer_encoding_with_content_length_is_400_and_closes(relay: Relay) -> None:
    """No smuggling: the second request in the same bytes is never answered (RFC 9112 6.1)."""
    smuggled = b"GET /version HTTP/1.1\r\nHost: t\r\n\r\n"
    data = (
        b"PUT /te-cl HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"0\r\n\r\n"
        + smuggled
    )
    with trio.fail_after(10):
        raw = await raw_exchange(relay, data)
    message = "[ERROR] Malformed request: both Transfer-Encoding and Content-Length."
    assert_raw_error(raw, 400, "BAD_REQUEST", _exact(message))
    assert raw.count(b"HTTP/1.1 ") == 1
    assert relay.hub.registry.snapshot("/te-cl") is None


async def test_a_transfer_coding_other_than_chunked_is_400(relay: Relay) -> None:
    with trio.fail_after(10):
        raw = await raw_exchange(
            relay, b"PUT /gz HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
        )
    assert_raw_error(
        raw,
        400,
        "BAD_REQUEST",
        lambda t: t.startswith("[ERROR] Malformed request: unsupported transfer coding"),
    )


@pytest.mark.parametrize("fold", [b"\r\n b", b"\r\n\tb"])
async def test_obs_fold_is_400(relay: Relay, fold: bytes) -> None:
    with trio.fail_after(10):
        raw = await raw_exchange(relay, b"GET /version HTTP/1.1\r\nHost: t\r\nX-A: a" + fold + b"\r\n\r\n")
    message = "[ERROR] Malformed request: a header line is folded (obs-fold)."
    assert_raw_error(raw, 400, "BAD_REQUEST", _exact(message))


async def test_a_keep_alive_connection_is_still_strict_on_its_second_request(relay: Relay) -> None:
    data = b"GET /version HTTP/1.1\r\nHost: t\r\n\r\n" + b"GET /version HTTP/2.0\r\nHost: t\r\n\r\n"
    with trio.fail_after(10):
        raw = await raw_exchange(relay, data)
    first, _, second = raw.partition(b"pipe-relay 0.1.0\n")
    assert first.startswith(b"HTTP/1.1 200 OK\r\n")
    assert_raw_error(second, 505, "UNSUPPORTED_VERSION", lambda t: "2.0" in t)


async def test_past_max_connections_a_new_connection_gets_a_fast_503(
    start_relay: StartRelay, raw_clients: list[RawClient]
) -> None:
    relay = await start_relay(max_connections=3)
    with trio.fail_after(10):
        waiting = []
        for index in range(3):
            client = await RawClient.connect(relay)
            raw_clients.append(client)
            await client.send(b"GET /held-%d HTTP/1.1\r\nHost: t\r\n\r\n" % index)
            await relay.wait_for_pipe(f"/held-{index}", receivers=1)
            waiting.append(client)
        started = trio.current_time()
        refused = await http(relay, "/version")
        assert trio.current_time() - started < 2
        assert_error(refused, 503, "TOO_MANY_CONNECTIONS", "[ERROR] Too many connections. Try again later.")
        assert refused.headers["retry-after"] == "5"
        assert refused.headers["connection"] == "close"
        await waiting[0].aclose()
        await relay.wait_until_free("/held-0")
        served = await http(relay, "/version")
    assert served.status == 200 and served.body == b"pipe-relay 0.1.0\n"
