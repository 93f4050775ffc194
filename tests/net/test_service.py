# Service endpoints end to end: health, version, help, robots, favicon, pages, HEAD and keep-alive.
# Real server on port 0, real curl processes and raw sockets; bodies and headers checked exactly.
from __future__ import annotations

import json
import os
import re
from datetime import UTC, datetime

import pytest
import trio

from tests.clients import RawClient, Relay, parse_head, raw_exchange
from tests.responses import TEXT_PLAIN, Response, assert_error, assert_exact_length, http, split_response

HTML = "text/html; charset=utf-8"
VERSION_LINE = b"pipe-relay 0.1.0\n"
HEALTH_FIELDS = {"status", "service", "built", "started", "memory", "fds", "pid", "ip", "userAgent"}


async def raw_request(relay: Relay, method: str, path: str, *headers: str) -> Response:
    """One request on its own connection (Connection: close); everything the server sent back."""
    lines = [f"{method} {path} HTTP/1.1", "Host: t", "Connection: close", *headers, "", ""]
    raw = await raw_exchange(relay, "\r\n".join(lines).encode())
    assert raw, f"the server closed without answering {method} {path}"
    return split_response(raw)


def assert_text(response: Response, body: bytes) -> None:
    assert response.status == 200
    assert response.headers["content-type"] == TEXT_PLAIN
    assert response.body == body
    assert_exact_length(response)
    assert response.headers["access-control-allow-origin"] == "*"
    assert response.headers["x-content-type-options"] == "nosniff"


# health ------------------------------------------------------------------------------------


async def test_health_document(relay: Relay) -> None:
    with trio.fail_after(10):
        agent = "pipe-relay-tests/1.0 (e2e; +https://example.com)"
        before = datetime.now(UTC)
        response = await http(relay, "/api/v1/pipe/health", "-A", agent)
        assert response.status == 200
        assert response.headers["content-type"].split(";")[0] == "application/json"
        assert_exact_length(response)
        assert not [name for name in response.headers if name.startswith("access-control-")]
        document = json.loads(response.body)
        assert set(document) == HEALTH_FIELDS
        assert document["status"] == "ok"
        assert document["service"] == "pipe-relay"
        for name in ("built", "started"):
            stamp = document[name]
            assert isinstance(stamp, str) and stamp.endswith("Z"), stamp
            moment = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
            assert moment.tzinfo is not None
            assert moment <= before
        assert set(document["memory"]) == {"rss", "heap"}
        for value in (document["memory"]["rss"], document["memory"]["heap"], document["fds"]):
            assert type(value) is int and value > 0
        assert document["pid"] == os.getpid()  # the fixture runs the server in this process
        assert document["ip"] == "127.0.0.1"
        assert document["userAgent"] == agent


async def test_health_without_user_agent(relay: Relay) -> None:
    with trio.fail_after(10):
        response = await http(relay, "/api/v1/pipe/health", "-A", "")
        assert response.status == 200
        assert json.loads(response.body)["userAgent"] == ""


async def test_bare_health_is_404(relay: Relay) -> None:
    with trio.fail_after(10):
        response = await http(relay, "/health")
        assert_error(
            response,
            404,
            "NOT_FOUND",
            "[ERROR] '/health' is not a valid path. Use '/api/v1/pipe/health'.",
        )


async def test_head_on_bare_health_is_404_without_body(relay: Relay) -> None:
    with trio.fail_after(10):
        response = await raw_request(relay, "HEAD", "/health")
        assert response.status == 404
        assert response.body == b""
        assert response.headers["x-pipe-error"] == "NOT_FOUND"
        assert (await http(relay, "/version")).body == VERSION_LINE


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
async def test_other_methods_on_health_are_405(relay: Relay, method: str) -> None:
    """The spec: anything but GET, HEAD and OPTIONS on /api/v1/pipe/health (a send too) is 405."""
    with trio.fail_after(10):
        body = ["--data-binary", "x"] if method in ("POST", "PUT") else []
        response = await http(relay, "/api/v1/pipe/health", "-X", method, *body)
        assert_error(response, 405, "METHOD_NOT_ALLOWED", f"[ERROR] Method {method} is not allowed.")
        assert response.headers["allow"] == "GET, HEAD, OPTIONS"


@pytest.mark.parametrize("path", ["/help", "/version", "/robots.txt", "/api/v1/pipe/help"])
async def test_delete_on_reserved_paths_is_405(relay: Relay, path: str) -> None:
    with trio.fail_after(10):
        response = await http(relay, path, "-X", "DELETE")
        assert_error(response, 405, "METHOD_NOT_ALLOWED", "[ERROR] Method DELETE is not allowed.")
        assert response.headers["allow"] == "GET, HEAD, OPTIONS"


# version, robots, favicon ------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/version", "/api/v1/pipe/version"])
async def test_version(relay: Relay, path: str) -> None:
    with trio.fail_after(10):
        assert_text(await http(relay, path), VERSION_LINE)


@pytest.mark.parametrize("path", ["/robots.txt", "/api/v1/pipe/robots.txt"])
async def test_robots(relay: Relay, path: str) -> None:
    with trio.fail_after(10):
        assert_text(await http(relay, path), b"User-agent: *\nDisallow: /\n")


@pytest.mark.parametrize("path", ["/favicon.ico", "/api/v1/pipe/favicon.ico"])
async def test_favicon_is_204(relay: Relay, path: str) -> None:
    with trio.fail_after(10):
        response = await raw_request(relay, "GET", path)
        assert response.status == 204
        assert response.body == b""
        assert response.headers.get("content-length", "0") == "0"
        assert "transfer-encoding" not in response.headers
        assert response.headers["access-control-allow-origin"] == "*"


# help --------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/help", "/api/v1/pipe/help"])
async def test_help_uses_host(relay: Relay, path: str) -> None:
    with trio.fail_after(10):
        response = await http(relay, path, "-H", "Host: pipe.example.com:9000")
        assert response.status == 200
        assert response.headers["content-type"] == TEXT_PLAIN
        assert_exact_length(response)
        text = response.body.decode()
        assert "curl http://pipe.example.com:9000/mypath\n" in text
        assert "curl -T myfile http://pipe.example.com:9000/mypath\n" in text
        assert "https://" not in text
        for needle in (
            "curl -T -",
            "tar czf - ",
            "zip ",
            "?n=",
            "?download",
            "?filename=",
            "?video",
            "?progress",
            "openssl aes-256-cbc",
            "-pbkdf2",
        ):
            assert needle in text, needle


async def test_help_with_forwarded_https(relay: Relay) -> None:
    with trio.fail_after(10):
        response = await http(
            relay, "/help", "-H", "Host: pipe.example.com:9000", "-H", "X-Forwarded-Proto: https"
        )
        text = response.body.decode()
        assert "curl https://pipe.example.com:9000/mypath\n" in text
        assert "http://pipe.example.com" not in text


@pytest.mark.parametrize(
    "host",
    [
        "evil.example<script>alert(1)</script>",
        "pipe.example.com evil.example",
        "evil.example/path?x=<b>",
        'evil.example"onload="x',
    ],
)
async def test_help_never_shows_a_malicious_host(relay: Relay, host: str) -> None:
    with trio.fail_after(10):
        response = await http(relay, "/help", "-H", f"Host: {host}")
        assert response.status == 200
        text = response.body.decode()
        assert "<script>" not in text
        assert "evil.example" not in text
        assert host not in text
        assert_exact_length(response)


# pages -------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/", "/api/v1/pipe", "/api/v1/pipe/", "/noscript", "/api/v1/pipe/noscript"])
async def test_pages_are_html_with_csp(relay: Relay, path: str) -> None:
    with trio.fail_after(10):
        response = await http(relay, path)
        assert response.status == 200
        assert response.headers["content-type"] == HTML
        assert_exact_length(response)
        assert response.body.lower().startswith(b"<!doctype html")
        csp = response.headers["content-security-policy"]
        assert "default-src 'none'" in csp
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["access-control-allow-origin"] == "*"


# HEAD on reserved paths --------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/",
        "/api/v1/pipe",
        "/help",
        "/api/v1/pipe/help",
        "/noscript",
        "/version",
        "/api/v1/pipe/version",
        "/robots.txt",
        "/favicon.ico",
    ],
)
async def test_head_equals_get_without_body(relay: Relay, path: str) -> None:
    with trio.fail_after(10):
        get = await raw_request(relay, "GET", path)
        head = await raw_request(relay, "HEAD", path)
        assert head.status == get.status
        assert head.body == b""
        # the pages carry a fresh CSP nonce per response; everything else is identical
        assert [p for p in head.pairs if p[0] != "content-security-policy"] == [
            p for p in get.pairs if p[0] != "content-security-policy"
        ]
        assert ("content-security-policy" in head.headers) == ("content-security-policy" in get.headers)
        if get.status == 200:
            assert head.headers["content-length"] == str(len(get.body))


async def test_head_on_health(relay: Relay) -> None:
    with trio.fail_after(10):
        get = await raw_request(relay, "GET", "/api/v1/pipe/health")
        head = await raw_request(relay, "HEAD", "/api/v1/pipe/health")
        assert head.status == 200
        assert head.body == b""
        assert [name for name, _ in head.pairs] == [name for name, _ in get.pairs]
        assert head.headers["content-type"] == get.headers["content-type"]
        assert int(head.headers["content-length"]) > 0


# keep-alive --------------------------------------------------------------------------------


async def read_response(client: RawClient) -> Response:
    status, headers, pairs = parse_head(await client.read_until(b"\r\n\r\n"))
    body = await client.read_exactly(int(headers["content-length"]))
    return Response(status, headers, pairs, body)


async def test_keep_alive_two_requests_on_one_connection(relay: Relay, raw_clients: list[RawClient]) -> None:
    with trio.fail_after(10):
        client = await RawClient.connect(relay)
        raw_clients.append(client)
        request = b"GET /version HTTP/1.1\r\nHost: t\r\n\r\n"
        for _ in range(2):
            await client.send(request)
            response = await read_response(client)
            assert response.status == 200
            assert response.body == VERSION_LINE
            assert response.headers.get("connection", "keep-alive").lower() != "close"


async def test_keep_alive_pipelined_requests(relay: Relay, raw_clients: list[RawClient]) -> None:
    with trio.fail_after(10):
        client = await RawClient.connect(relay)
        raw_clients.append(client)
        await client.send(
            b"GET /version HTTP/1.1\r\nHost: t\r\n\r\n"
            b"GET /api/v1/pipe/version HTTP/1.1\r\nHost: t\r\n\r\n"
            b"GET /robots.txt HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
        )
        bodies = [(await read_response(client)).body for _ in range(3)]
        assert bodies == [VERSION_LINE, VERSION_LINE, b"User-agent: *\nDisallow: /\n"]
        rest, clean = await client.read_to_end()
        assert (rest, clean) == (b"", True)


async def test_keep_alive_after_an_error(relay: Relay, raw_clients: list[RawClient]) -> None:
    with trio.fail_after(10):
        client = await RawClient.connect(relay)
        raw_clients.append(client)
        await client.send(b"GET /x?n=0 HTTP/1.1\r\nHost: t\r\n\r\n")
        response = await read_response(client)
        assert response.status == 400
        assert response.headers["x-pipe-error"] == "INVALID_N"
        await client.send(b"GET /version HTTP/1.1\r\nHost: t\r\n\r\n")
        assert (await read_response(client)).body == VERSION_LINE


# ?video --------------------------------------------------------------------------------------

BROWSER_ACCEPT = "Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


@pytest.mark.parametrize("path", ["/clip.webm?video", "/api/v1/pipe/clip.webm?video=1"])
async def test_video_page_for_a_browser_takes_no_receiver_slot(relay: Relay, path: str) -> None:
    with trio.fail_after(10):
        response = await raw_request(relay, "GET", path, BROWSER_ACCEPT)
    assert response.status == 200
    assert response.headers["content-type"] == HTML
    assert response.headers["x-content-type-options"] == "nosniff"
    assert_exact_length(response)
    csp = response.headers["content-security-policy"]
    nonce = re.search(r"script-src 'nonce-([^']+)'", csp)
    assert nonce is not None
    assert "default-src 'none'" in csp and "media-src 'self' blob:" in csp and "unsafe" not in csp
    scripts = re.findall(rb"<script([^>]*)>", response.body)
    assert scripts == [f' nonce="{nonce[1]}"'.encode()]
    assert b'<video id="video"' in response.body
    assert relay.hub.registry.snapshot("/clip.webm") is None  # a page, not a receiver


@pytest.mark.parametrize(
    ("path", "accept"),
    [
        ("/v2.webm?video", "Accept: */*"),
        ("/v2.webm?video=false", BROWSER_ACCEPT),
        ("/v2.webm?video", "X-No: 1"),
    ],
)
async def test_video_without_html_or_with_false_is_a_receiver(
    relay: Relay, raw_clients: list[RawClient], path: str, accept: str
) -> None:
    with trio.fail_after(10):
        client = await RawClient.connect(relay)
        raw_clients.append(client)
        await client.send(f"GET {path} HTTP/1.1\r\nHost: t\r\n{accept}\r\n\r\n".encode())
        await relay.wait_for_pipe("/v2.webm", receivers=1)


async def test_video_page_escapes_a_raw_path(relay: Relay) -> None:
    with trio.fail_after(10):
        response = await raw_request(
            relay, "GET", '/x"onload=alert(1)<script>alert(2)</script>?video', BROWSER_ACCEPT
        )
    assert response.status == 200
    assert b"alert(2)</script>" not in response.body
    assert b'"onload' not in response.body
    assert b"<code>/x&quot;onload=alert(1)&lt;script&gt;alert(2)&lt;/script&gt;</code>" in response.body


async def test_index_page_never_echoes_a_malicious_host(relay: Relay) -> None:
    request = b'GET / HTTP/1.1\r\nHost: "><script>alert(1)</script>\r\nConnection: close\r\n\r\n'
    with trio.fail_after(10):
        response = split_response(await raw_exchange(relay, request))
    assert response.status == 200
    assert b"alert(1)" not in response.body
    assert b"curl -T myfile http://localhost/mypath" in response.body
