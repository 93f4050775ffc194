# Hostile input end to end: header injection, script-capable types, traversal-looking paths, Origin null.
# Invariant: a receiver's head has exactly the expected lines (CRLF, no injected name), its body is exact.
from __future__ import annotations

import re

import pytest
import trio

from pipe_relay.core.paths import normalize_escapes
from tests.clients import RawClient, Relay, curl, parse_head
from tests.responses import Response, http, spawn, split_response

BODY = b"<svg onload=alert(1)><script>alert(2)</script></svg>\n"
FIXED = [
    "content-length",
    "connection",
    "x-robots-tag",
    "cache-control",
    "content-security-policy",
    "x-content-type-options",
    "access-control-allow-origin",
]
EXPOSE = ["access-control-expose-headers"]
_NAME = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


def strict_head(raw: bytes) -> list[tuple[str, str]]:
    """The header lines of a response head, checked: CRLF only, token names, no control bytes."""
    assert raw.endswith(b"\r\n\r\n")
    lines = raw[:-4].split(b"\r\n")
    assert lines[0] == b"HTTP/1.1 200 OK", lines[0]
    pairs = []
    for line in lines[1:]:
        assert b"\r" not in line and b"\n" not in line, line
        assert not any(byte < 0x20 or byte == 0x7F for byte in line), line
        name, sep, value = line.partition(b":")
        assert sep and _NAME.fullmatch(name), line
        pairs.append((name.decode().lower(), value.strip().decode("latin-1")))
    return pairs


async def transfer(
    relay: Relay, raw_clients: list[RawClient], key: str, sender_headers: bytes, query: str = ""
) -> list[tuple[str, str]]:
    """A raw receiver (`?query`) meets a raw sender of BODY with these header lines; the receiver's
    checked header lines are returned and its body must be BODY exactly."""
    receiver, sender = await RawClient.connect(relay), await RawClient.connect(relay)
    raw_clients += [receiver, sender]
    await receiver.send(f"GET {key}{query} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    await relay.wait_for_pipe(key, receivers=1)
    await sender.send(
        b"PUT %s HTTP/1.1\r\nHost: x\r\n%sContent-Length: %d\r\n\r\n%s"
        % (key.encode(), sender_headers, len(BODY), BODY)
    )
    pairs = strict_head(await receiver.read_until(b"\r\n\r\n"))
    body, clean = await receiver.read_to_end()
    assert (body, clean) == (BODY, True)
    return pairs


async def curl_head(relay: Relay, path: str, *args: str) -> Response:
    """One curl request with `Origin: null`; its response (a stream cut by `-m` is fine)."""
    stdin = b"x" if "-T" in args else None
    result = await curl("-i", "-H", "Origin: null", *args, relay.url + path, stdin=stdin, max_time=8)
    return split_response(result.stdout)


def names(pairs: list[tuple[str, str]]) -> list[str]:
    return sorted(name for name, _ in pairs)


# Header injection ----------------------------------------------------------------------------
# (pinned elsewhere: CR LF NUL TAB through ?filename, percent-encoded, test_headers_e2e
# test_crlf_cannot_be_injected_through_filename; a folded line and a bare CR in a sender header are
# refused, test_a_folded_sender_header_is_refused, test_bare_cr_in_sender_header_is_rejected; TAB in
# X-Piping stripped, test_metadata_control_characters_stripped.)


@pytest.mark.parametrize("name", [b"X-Piping", b"X-Hoody-Pipe"])
async def test_a_bare_lf_in_a_metadata_header_ends_it_and_injects_nothing(
    relay: Relay, raw_clients: list[RawClient], name: bytes
) -> None:
    with trio.fail_after(10):
        pairs = await transfer(relay, raw_clients, "/lf", name + b": a\nSet-Cookie: x=1\r\n")
    assert names(pairs) == sorted([*FIXED, *EXPOSE, "content-type", name.decode().lower()])
    assert (name.decode().lower(), "a") in pairs


@pytest.mark.parametrize(
    "header",
    [
        b"X-Piping: a%0D%0ASet-Cookie:%20x=1",
        b"X-Hoody-Pipe: %0aSet-Cookie: x=1%00",
        b'Content-Disposition: attachment; filename="a%0d%0aSet-Cookie: x=1"',
    ],
)
async def test_percent_encoded_line_breaks_in_headers_stay_text(
    relay: Relay, raw_clients: list[RawClient], header: bytes
) -> None:
    with trio.fail_after(10):
        pairs = await transfer(relay, raw_clients, "/pct", header + b"\r\n")
    name, _, value = header.decode().partition(": ")
    assert (name.lower(), value) in pairs  # forwarded as sent: percent signs are plain text
    assert "set-cookie" not in names(pairs)


@pytest.mark.parametrize("control", [b"\x00", b"\x0b", b"\x0c"])
@pytest.mark.parametrize("name", [b"X-Piping", b"X-Hoody-Pipe", b"Content-Disposition"])
async def test_nul_vt_ff_in_a_sender_header_are_refused(
    relay: Relay, raw_clients: list[RawClient], name: bytes, control: bytes
) -> None:
    """They make the head malformed (h11): 400 for the sender; the waiting receiver meets the next one."""
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            waiting = spawn(nursery, relay, "/nul")
            await relay.wait_for_pipe("/nul", receivers=1)
            sender = await RawClient.connect(relay)
            raw_clients.append(sender)
            await sender.send(b"PUT /nul HTTP/1.1\r\nHost: x\r\n%s: a%sSet-Cookie: x=1\r\n"
                              b"Content-Length: 5\r\n\r\nhello" % (name, control))  # fmt: skip
            refused, _ = await sender.read_to_end()
            assert parse_head(refused)[0] == 400
            assert split_response(refused).headers["x-pipe-error"] == "BAD_REQUEST"
            assert (await http(relay, "/nul", "-T", "-", stdin=b"fine")).status == 200
            receiver = await waiting.result()
    assert receiver.body == b"fine"
    assert receiver.values("set-cookie") == []
    assert receiver.values(name.decode().lower()) == []


@pytest.mark.parametrize("control", [b"\x01", b"\x08", b"\x1b", b"\x1f", b"\x7f"])
@pytest.mark.parametrize("name", [b"X-Piping", b"X-Hoody-Pipe", b"Content-Disposition"])
async def test_other_controls_in_a_sender_header_are_stripped(
    relay: Relay, raw_clients: list[RawClient], name: bytes, control: bytes
) -> None:
    with trio.fail_after(10):
        header = b"%s: a%sSet-Cookie: x=1%s\r\n" % (name, control, control)
        pairs = await transfer(relay, raw_clients, "/ctl", header)
    lower = name.decode().lower()
    expose = EXPOSE if name != b"Content-Disposition" else []
    assert names(pairs) == sorted([*FIXED, *expose, "content-type", lower])
    # (not a disposition type: it becomes a plain `attachment`, see test_attacks.py)
    assert (lower, "attachment" if lower == "content-disposition" else "aSet-Cookie: x=1") in pairs


async def test_a_non_ascii_line_separator_in_x_piping_is_no_line_break(
    relay: Relay, raw_clients: list[RawClient]
) -> None:
    """NEL (C2 85) and U+2028 are obs-text to HTTP/1.1: forwarded inside the one header line."""
    with trio.fail_after(10):
        pairs = await transfer(
            relay, raw_clients, "/nel", b"X-Piping: a\xc2\x85b\xe2\x80\xa8Set-Cookie: x=1\r\n"
        )
    assert names(pairs) == sorted([*FIXED, *EXPOSE, "content-type", "x-piping"])


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("?filename=a%0Ab", "attachment; filename=\"ab\"; filename*=UTF-8''ab"),
        ("?filename=a%1Bb%7F", "attachment; filename=\"ab\"; filename*=UTF-8''ab"),
        (
            "?filename=a%E2%80%A8b%C2%85c",
            "attachment; filename=\"a_b_c\"; filename*=UTF-8''a%E2%80%A8b%C2%85c",
        ),
        ("?filename=%0D%0A", "attachment"),
    ],
)
async def test_filename_controls_never_reach_the_head(
    relay: Relay, raw_clients: list[RawClient], query: str, expected: str
) -> None:
    with trio.fail_after(10):
        pairs = await transfer(relay, raw_clients, "/fn", b"", query)
    assert names(pairs) == sorted([*FIXED, "content-type", "content-disposition"])
    assert ("content-disposition", expected) in pairs


async def test_a_raw_control_in_the_request_target_is_refused(relay: Relay) -> None:
    with trio.fail_after(10):
        stream = await trio.open_tcp_stream(relay.host, relay.port)
        async with stream:
            await stream.send_all(b"GET /t?filename=a\x01b HTTP/1.1\r\nHost: x\r\n\r\n")
            raw = b""
            while chunk := await stream.receive_some(65536):
                raw += chunk
    assert split_response(raw).status == 400
    assert split_response(raw).headers["x-pipe-error"] == "BAD_REQUEST"
    assert relay.hub.registry.snapshot("/t") is None


@pytest.mark.parametrize(
    ("host", "status"),
    [
        (b"evil.example\x0bx", 400),  # a control h11 refuses in any header value
        (b"evil.example\x01x", 200),
        (b"evil.example%0d%0aX-Evil: 1", 200),
        (b"evil.example%00", 200),
        (b"evil.example\xc2\x85x", 200),
    ],
)
async def test_help_never_shows_a_host_with_controls_or_escapes(
    relay: Relay, host: bytes, status: int
) -> None:
    """(Script, space, slash and quotes in Host: test_service test_help_never_shows_a_malicious_host.)"""
    with trio.fail_after(10):
        stream = await trio.open_tcp_stream(relay.host, relay.port)
        async with stream:
            await stream.send_all(b"GET /help HTTP/1.1\r\nHost: " + host + b"\r\nConnection: close\r\n\r\n")
            raw = b""
            while chunk := await stream.receive_some(65536):
                raw += chunk
    response = split_response(raw)
    assert response.status == status
    if status == 400:  # h11's reason, without the line it quotes: one plain-text line
        assert response.headers["content-type"] == "text/plain; charset=utf-8"
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.body == b"[ERROR] Malformed request: illegal header line.\n"
        return
    assert b"evil" not in response.body
    assert b"curl http://localhost/mypath\n" in response.body


# Script-capable types --------------------------------------------------------------------------
# (pinned elsewhere: the lower-case forms end to end, test_headers_e2e test_content_type_policy;
# casing and parameters of the pure policy, tests/core/test_headers_types.py test_safe_content_type.)


@pytest.mark.parametrize(
    ("sent", "expected"),
    [
        ("TeXt/HtMl; charset=UTF-8; x=<script>", "text/plain; charset=UTF-8"),
        ("IMAGE/SVG+XML; q=1", "text/plain"),
        ("Application/XHTML+XML", "text/plain"),
        ('text/JavaScript; charset="utf-8"', "text/plain; charset=utf-8"),
        ("application/X-JavaScript", "text/plain"),
        ("TEXT/XML ; charset=utf-8", "text/plain; charset=utf-8"),
        ("text/html;", "text/plain"),
        ("text/html, image/png", "application/octet-stream"),  # not one media type: no type at all
    ],
)
async def test_a_script_capable_sender_type_is_served_as_plain_text(
    relay: Relay, raw_clients: list[RawClient], sent: str, expected: str
) -> None:
    with trio.fail_after(10):
        pairs = await transfer(relay, raw_clients, "/type", f"Content-Type: {sent}\r\n".encode())
    assert [value for name, value in pairs if name == "content-type"] == [expected]
    assert ("x-content-type-options", "nosniff") in pairs


@pytest.mark.parametrize("part_type", ["text/html", "Image/Svg+Xml", "application/xhtml+xml"])
async def test_a_script_capable_form_part_is_served_as_plain_text(relay: Relay, part_type: str) -> None:
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            waiting = spawn(nursery, relay, "/form")
            await relay.wait_for_pipe("/form", receivers=1)
            form = f"file=@-;filename=x.html;type={part_type}"
            assert (await http(relay, "/form", "-F", form, stdin=BODY)).status == 200
            receiver = await waiting.result()
    assert receiver.body == BODY
    assert receiver.values("content-type") == ["text/plain"]
    assert receiver.values("x-content-type-options") == ["nosniff"]


# Paths that look like traversal ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "other"),
    [
        ("/../etc/passwd", "/etc/passwd"),
        ("/%2e%2e/x", "/x"),
        ("/a/../b", "/b"),
        ("//x", "/x"),
        ("/a/./b", "/a/b"),
        ("/%2E%2E%2Fetc", "/etc"),
    ],
)
async def test_a_traversal_looking_path_is_a_plain_key(relay: Relay, path: str, other: str) -> None:
    """The path is the key (its escapes normalized only: `%2e` is `.`, `%2F` stays), never resolved:
    a transfer on it works, and a receiver on the path dot segments would resolve it to does not
    meet its sender."""
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            elsewhere = spawn(nursery, relay, other, "--path-as-is")
            await relay.wait_for_pipe(other, receivers=1)
            waiting = spawn(nursery, relay, path, "--path-as-is")
            await relay.wait_for_pipe(normalize_escapes(path), receivers=1)
            sent = await http(relay, path, "--path-as-is", "-T", "-", stdin=BODY)
            receiver = await waiting.result()
            assert (sent.status, receiver.status, receiver.body) == (200, 200, BODY)
            snapshot = relay.hub.registry.snapshot(other)
            assert snapshot is not None and (snapshot.sender, snapshot.receivers) == (False, 1)
            assert (await http(relay, other, "--path-as-is", "-T", "-", stdin=b"other")).status == 200
            assert (await elsewhere.result()).body == b"other"


# Origin: null ------------------------------------------------------------------------------------
# (pinned elsewhere for a transfer's sender and receiver and for the preflight: test_headers_e2e
# test_cors_without_usable_origin_is_star, test_preflight_without_usable_origin.)


@pytest.mark.parametrize(
    ("path", "args"),
    [
        ("/help", ()),
        ("/version", ()),
        ("/api/v1/pipe/health", ()),
        ("/robots.txt", ()),
        ("/x?n=0", ()),  # an error reply
        ("/help", ("-T", "-")),  # a refused send (reserved path)
        ("/x?progress", ("-m", "1", "-N")),
    ],
)
async def test_origin_null_never_gets_credentials(relay: Relay, path: str, args: tuple[str, ...]) -> None:
    with trio.fail_after(10):
        result = await curl_head(relay, path, *args)
    # (the health document carries no CORS at all: test_attacks.py)
    expected_origin = [] if path.startswith("/api/v1/pipe/health") else ["*"]
    assert result.values("access-control-allow-origin") == expected_origin
    assert result.values("access-control-allow-credentials") == []
    assert "Origin" not in ", ".join(result.values("vary"))  # (/help varies by Host, never by Origin)
