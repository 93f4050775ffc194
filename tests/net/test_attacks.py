# The attack review's findings, each end to end against a real server: what used to break no longer does.
# Invalid Origins, disposition and type tricks, cache poisoning of /help, secret paths in logs, health.
from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import trio

from tests.clients import RawClient, Relay, StartRelay, curl, raw_exchange
from tests.responses import http, split_response, transfer


@pytest.fixture
def page(tmp_path: Path) -> Path:
    path = tmp_path / "page.html"
    path.write_bytes(b"<html><script>alert(document.domain)</script></html>\n")
    return path


@pytest.mark.parametrize("origin", [b"https://\xff.example", b"https://\xe6\x97\xa5.example", b"\x01"])
@pytest.mark.parametrize("path", [b"/version", b"/api/v1/pipe/health", b"/nothing-here?n=0"])
async def test_a_non_ascii_origin_is_no_origin_and_never_a_crash(
    relay: Relay, caplog: pytest.LogCaptureFixture, origin: bytes, path: bytes
) -> None:
    with trio.fail_after(10):
        raw = await raw_exchange(
            relay,
            b"GET " + path + b" HTTP/1.1\r\nHost: t\r\nConnection: close\r\nOrigin: " + origin + b"\r\n\r\n",
        )
    response = split_response(raw)
    assert response.status in (200, 400)
    assert response.headers.get("access-control-allow-origin", "*") == "*"
    assert "access-control-allow-credentials" not in response.headers
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR]


async def test_a_non_ascii_origin_on_a_transfer(relay: Relay, raw_clients: list[RawClient]) -> None:
    with trio.fail_after(10):
        receiver = await RawClient.connect(relay)
        raw_clients.append(receiver)
        await receiver.send(b"GET /o HTTP/1.1\r\nHost: t\r\nOrigin: https://\xff.example\r\n\r\n")
        await relay.wait_for_pipe("/o", receivers=1)
        sent = await curl("-T", "-", "-H", "Origin: https://\xe9.example", f"{relay.url}/o", stdin=b"fine")
        got, _ = await receiver.read_to_end()
    assert sent.stdout.decode().splitlines()[-1] == "[INFO] Transfer complete."
    response = split_response(got)
    assert response.headers["access-control-allow-origin"] == "*"


@pytest.mark.parametrize(
    ("sent", "expected"),
    [
        ('"inline"', "attachment"),
        ("inline,", "attachment"),
        ("inline x", "attachment"),
        ("filename=x.html", "attachment; filename=\"x.html\"; filename*=UTF-8''x.html"),
        ("inline", "inline"),  # well-formed, and the page is text/plain now: safe to show as text
    ],
)
async def test_no_disposition_trick_shows_a_page_inline(
    relay: Relay, page: Path, sent: str, expected: str
) -> None:
    with trio.fail_after(10):
        result = await transfer(
            relay, "/trick", page, "-H", f"Content-Disposition: {sent}", "-H", "Content-Type: text/html"
        )
    receiver = result.receiver
    assert receiver.values("content-disposition") == [expected]
    assert receiver.headers["content-type"] == "text/plain"
    assert receiver.headers["content-security-policy"] == "sandbox"
    assert receiver.headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize("sent", ["unknown/unknown", "*/*", "text/*", "not a type"])
async def test_wildcard_and_unknown_types_are_octet_streams(relay: Relay, page: Path, sent: str) -> None:
    with trio.fail_after(10):
        result = await transfer(relay, "/unknown", page, "-H", f"Content-Type: {sent}")
    assert result.receiver.headers["content-type"] == "application/octet-stream"


async def test_help_is_never_kept_by_a_shared_cache(relay: Relay) -> None:
    with trio.fail_after(10):
        response = await http(relay, "/help", "-H", "Host: evil.example", "-H", "X-Forwarded-Proto: http")
    assert response.status == 200
    assert b"http://evil.example/" in response.body  # built from the request, so it must not be cached
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["vary"] == "Host, X-Forwarded-Proto"


@pytest.mark.parametrize("log_paths", [False, True])
async def test_a_failed_transfer_logs_its_path_only_when_asked(
    start_relay: StartRelay, raw_clients: list[RawClient], caplog: pytest.LogCaptureFixture, log_paths: bool
) -> None:
    caplog.set_level(logging.INFO, logger="pipe_relay")
    relay = await start_relay(log_paths=log_paths)
    with trio.fail_after(10):
        receiver = await RawClient.connect(relay)
        sender = await RawClient.connect(relay)
        raw_clients += [receiver, sender]
        await receiver.send(b"GET /my-secret-path HTTP/1.1\r\nHost: t\r\n\r\n")
        await relay.wait_for_pipe("/my-secret-path", receivers=1)
        await sender.send(b"PUT /my-secret-path HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\nshort")
        await receiver.read_until(b"short")
        await sender.aclose()  # the sender leaves mid-body: a failure, logged at info
        await relay.wait_until_free("/my-secret-path")
    lines = [record.getMessage() for record in caplog.records if "failed" in record.getMessage()]
    assert len(lines) == 1, caplog.text
    if log_paths:
        assert lines[0].startswith("transfer /my-secret-path n=1 failed (")
    else:
        assert "my-secret-path" not in caplog.text
        assert lines[0].startswith("transfer pipe#")


@pytest.mark.parametrize("origin", [None, "https://evil.example", "null"])
async def test_health_details_are_never_readable_cross_origin(relay: Relay, origin: str | None) -> None:
    with trio.fail_after(10):
        args = ["-H", f"Origin: {origin}"] if origin else []
        response = await http(relay, "/api/v1/pipe/health", *args)
    assert response.status == 200
    assert json.loads(response.body)["pid"] > 0  # a curl (no browser) still reads it all
    assert not [name for name in response.headers if name.startswith("access-control-")]
