# The header policy end to end: a real curl sender and real receivers, headers checked exactly.
# Content-Type, Content-Disposition, download control, metadata headers, CORS, preflight, framing.
from __future__ import annotations

from pathlib import Path

import pytest
import trio

from tests.clients import RawClient, Relay, curl, parse_head
from tests.responses import Response, http, spawn, split_response, transfer

METADATA_EXPOSE = "X-Piping, X-Hoody-Pipe"
BODY = b"<html><script>alert(1)</script></html>\n"


@pytest.fixture
def payload(tmp_path: Path) -> Path:
    path = tmp_path / "payload.bin"
    path.write_bytes(BODY)
    return path


def assert_pipe_headers(response: Response) -> None:
    """The fixed headers of every receiver response."""
    assert response.values("x-robots-tag") == ["none"]
    assert response.values("x-content-type-options") == ["nosniff"]


# Content-Type ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sent", "expected"),
    [
        ("text/html", "text/plain"),
        ("text/html; charset=utf-8", "text/plain; charset=utf-8"),
        ("image/svg+xml", "text/plain"),
        ("application/xhtml+xml", "text/plain"),
        ("application/rss+xml", "text/plain"),
        ("text/xml", "text/plain"),
        ("application/xml", "text/plain"),
        ("application/javascript", "text/plain"),
        ("text/javascript; charset=utf-8", "text/plain; charset=utf-8"),
        ("application/ecmascript", "text/plain"),
        ("not a media type", "application/octet-stream"),
        ("application/json; charset=utf-8; x=y", "application/json; charset=utf-8"),
        ("application/json; x=y", "application/json"),
        ('text/plain; charset="bad charset"', "text/plain"),
        ("image/png", "image/png"),
        ("IMAGE/PNG", "image/png"),
    ],
)
async def test_content_type_policy(relay: Relay, payload: Path, sent: str, expected: str) -> None:
    with trio.fail_after(10):
        result = await transfer(relay, "/ct", payload, "-H", f"Content-Type: {sent}")
        assert result.receiver.values("content-type") == [expected]
        assert_pipe_headers(result.receiver)


async def test_no_content_type_is_octet_stream(relay: Relay, payload: Path) -> None:
    with trio.fail_after(10):
        result = await transfer(relay, "/ct", payload)
        assert result.receiver.values("content-type") == ["application/octet-stream"]
        assert_pipe_headers(result.receiver)


# Content-Disposition -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content_type", "sent", "expected"),
    [
        ("application/zip", 'inline; filename="a.html"', 'attachment; filename="a.html"'),
        (None, 'inline; filename="a.html"', 'attachment; filename="a.html"'),
        ("application/zip", 'INLINE; filename="a.html"', 'attachment; filename="a.html"'),
        ("application/zip", "inline", "attachment"),
        ("image/png", 'inline; filename="a.png"', 'inline; filename="a.png"'),
        ("video/mp4", 'inline; filename="a.mp4"', 'inline; filename="a.mp4"'),
        ("application/pdf", "inline", "inline"),
        ("text/plain", "inline", "inline"),
        ("application/zip", 'attachment; filename="a.zip"', 'attachment; filename="a.zip"'),
    ],
)
async def test_content_disposition_policy(
    relay: Relay, payload: Path, content_type: str | None, sent: str, expected: str
) -> None:
    with trio.fail_after(10):
        args = ["-H", f"Content-Disposition: {sent}"]
        if content_type is not None:
            args += ["-H", f"Content-Type: {content_type}"]
        result = await transfer(relay, "/cd", payload, *args)
        assert result.receiver.values("content-disposition") == [expected]


async def test_no_content_disposition_when_none_sent(relay: Relay, payload: Path) -> None:
    with trio.fail_after(10):
        result = await transfer(relay, "/cd", payload, "-H", "Content-Type: image/png")
        assert result.receiver.values("content-disposition") == []


async def test_crlf_cannot_be_injected_through_filename(relay: Relay, payload: Path) -> None:
    with trio.fail_after(10):
        result = await transfer(
            relay, "/inj", payload, receiver_queries=("?filename=a%0D%0ASet-Cookie:%20x=1%00%09",)
        )
        receiver = result.receiver
        assert receiver.values("set-cookie") == []
        assert receiver.values("content-disposition") == [
            "attachment; filename=\"aSet-Cookie: x=1\"; filename*=UTF-8''aSet-Cookie%3A%20x%3D1"
        ]


async def test_a_folded_sender_header_is_refused(relay: Relay, raw_clients: list[RawClient]) -> None:
    """An obs-fold (CRLF + space) in a sender header is a 400 (RFC 9112 5.2): it never becomes a
    line break for the receiver, and the waiting receiver still gets the next good sender."""
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            waiting = spawn(nursery, relay, "/fold")
            await relay.wait_for_pipe("/fold", receivers=1)
            sender = await RawClient.connect(relay)
            raw_clients.append(sender)
            await sender.send(
                b"PUT /fold HTTP/1.1\r\nHost: t\r\nContent-Type: application/zip\r\n"
                b'Content-Disposition: attachment;\r\n filename="x.zip"\r\n'
                b"X-Piping: one\r\n\ttwo\r\n"
                b"Content-Length: 5\r\n\r\nhello"
            )
            refused, _ = await sender.read_to_end()
            assert parse_head(refused)[0] == 400
            assert refused.endswith(
                b"\r\n\r\n[ERROR] Malformed request: a header line is folded (obs-fold).\n"
            )
            assert relay.hub.registry.snapshot("/fold") is not None  # the receiver still waits
            assert (await curl("-T", "-", f"{relay.url}/fold", stdin=b"hello")).returncode == 0
            receiver = await waiting.result()
        assert receiver.body == b"hello"
        assert receiver.values("x-piping") == []


async def test_bare_cr_in_sender_header_is_rejected(relay: Relay) -> None:
    with trio.fail_after(10):
        stream = await trio.open_tcp_stream(relay.host, relay.port)
        async with stream:
            await stream.send_all(
                b"PUT /cr HTTP/1.1\r\nHost: t\r\n"
                b"Content-Disposition: attachment\rSet-Cookie: x=1\r\n"
                b"Content-Length: 1\r\n\r\nx"
            )
            raw = b""
            while chunk := await stream.receive_some(65536):
                raw += chunk
        response = split_response(raw)
        assert response.status == 400
        assert response.headers["x-pipe-error"] == "BAD_REQUEST"
        assert relay.hub.registry.snapshot("/cr") is None


async def test_metadata_control_characters_stripped(relay: Relay, payload: Path) -> None:
    with trio.fail_after(10):
        result = await transfer(relay, "/ctl", payload, "-H", "X-Piping: a\tb")
        assert result.receiver.values("x-piping") == ["ab"]


# ?download / ?filename ---------------------------------------------------------------------

SENT_DISPOSITION = 'inline; filename="pic.png"'


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("", [SENT_DISPOSITION]),
        ("?download", ['attachment; filename="pic.png"']),
        ("?download=true", ['attachment; filename="pic.png"']),
        ("?download=yes", ['attachment; filename="pic.png"']),
        ("?download=1", ['attachment; filename="pic.png"']),
        ("?download=false", []),
        ("?download=no", []),
        ("?download=0", []),
        ("?filename=report.pdf", ["attachment; filename=\"report.pdf\"; filename*=UTF-8''report.pdf"]),
        ("?filename=..%2Fx%22y.txt", ['attachment; filename="x\\"y.txt"; filename*=UTF-8\'\'x%22y.txt']),
        ("?filename=...%5Cetc%2Fpasswd", ["attachment; filename=\"etcpasswd\"; filename*=UTF-8''etcpasswd"]),
        (
            "?filename=%C3%A9t%C3%A9.txt",
            ["attachment; filename=\"_t_.txt\"; filename*=UTF-8''%C3%A9t%C3%A9.txt"],
        ),
        ("?filename=" + "f" * 300, [f"attachment; filename=\"{'f' * 255}\"; filename*=UTF-8''{'f' * 255}"]),
        ("?download=false&filename=b.bin", ["attachment; filename=\"b.bin\"; filename*=UTF-8''b.bin"]),
    ],
)
async def test_download_control(relay: Relay, payload: Path, query: str, expected: list[str]) -> None:
    with trio.fail_after(10):
        result = await transfer(
            relay,
            "/dl",
            payload,
            "-H",
            "Content-Type: image/png",
            "-H",
            f"Content-Disposition: {SENT_DISPOSITION}",
            receiver_queries=(query,),
        )
        assert result.receiver.values("content-disposition") == expected


async def test_download_without_sender_disposition(relay: Relay, payload: Path) -> None:
    with trio.fail_after(10):
        result = await transfer(relay, "/dl", payload, receiver_queries=("?download",))
        assert result.receiver.values("content-disposition") == ["attachment"]


async def test_two_receivers_with_different_download_settings(relay: Relay, payload: Path) -> None:
    with trio.fail_after(10):
        result = await transfer(
            relay,
            "/two",
            payload,
            "-H",
            "Content-Type: image/png",
            "-H",
            f"Content-Disposition: {SENT_DISPOSITION}",
            receiver_queries=("?n=2&download", "?n=2&download=false"),
        )
        downloading, inline = result.receivers
        assert downloading.values("content-disposition") == ['attachment; filename="pic.png"']
        assert inline.values("content-disposition") == []
        for receiver in result.receivers:
            assert receiver.values("content-type") == ["image/png"]


# X-Piping / X-Hoody-Pipe -------------------------------------------------------------------


async def test_metadata_headers_forwarded_in_order(relay: Relay, payload: Path) -> None:
    with trio.fail_after(10):
        exactly_max = "k" * 8192
        result = await transfer(
            relay,
            "/meta",
            payload,
            "-H",
            "X-Piping: one",
            "-H",
            "X-Hoody-Pipe: h1",
            "-H",
            "X-Piping: two",
            "-H",
            "X-Hoody-Pipe: " + "z" * 8193,
            "-H",
            f"X-Piping: {exactly_max}",
            "-H",
            "X-Hoody-Pipe: h2",
        )
        receiver = result.receiver
        assert receiver.values("x-piping") == ["one", "two", exactly_max]
        assert receiver.values("x-hoody-pipe") == ["h1", "h2"]
        assert receiver.values("access-control-expose-headers") == [METADATA_EXPOSE]


async def test_only_hoody_pipe_header(relay: Relay, payload: Path) -> None:
    with trio.fail_after(10):
        result = await transfer(relay, "/meta", payload, "-H", 'X-Hoody-Pipe: {"k": 1}')
        assert result.receiver.values("x-hoody-pipe") == ['{"k": 1}']
        assert result.receiver.values("x-piping") == []
        assert result.receiver.values("access-control-expose-headers") == [METADATA_EXPOSE]


async def test_no_metadata_no_expose_header(relay: Relay, payload: Path) -> None:
    with trio.fail_after(10):
        result = await transfer(relay, "/meta", payload)
        assert result.receiver.values("x-piping") == []
        assert result.receiver.values("x-hoody-pipe") == []
        assert result.receiver.values("access-control-expose-headers") == []


async def test_only_oversized_metadata_no_expose_header(relay: Relay, payload: Path) -> None:
    with trio.fail_after(10):
        result = await transfer(relay, "/meta", payload, "-H", "X-Piping: " + "q" * 9000)
        assert result.receiver.values("x-piping") == []
        assert result.receiver.values("access-control-expose-headers") == []


# CORS on transfers -------------------------------------------------------------------------


async def test_cors_reflects_origin_on_sender_and_receiver(relay: Relay, payload: Path) -> None:
    with trio.fail_after(10):
        origin = "https://app.example.com"
        result = await transfer(
            relay, "/cors", payload, "-H", f"Origin: {origin}", receiver_args=("-H", f"Origin: {origin}")
        )
        for response in (result.sender, result.receiver):
            assert response.values("access-control-allow-origin") == [origin]
            assert response.values("access-control-allow-credentials") == ["true"]
            assert response.values("vary") == ["Origin"]
        assert_pipe_headers(result.receiver)


@pytest.mark.parametrize("origin", [None, "null"])
async def test_cors_without_usable_origin_is_star(relay: Relay, payload: Path, origin: str | None) -> None:
    with trio.fail_after(10):
        args = ("-H", f"Origin: {origin}") if origin is not None else ()
        result = await transfer(relay, "/cors", payload, *args, receiver_args=args)
        for response in (result.sender, result.receiver):
            assert response.values("access-control-allow-origin") == ["*"]
            assert response.values("access-control-allow-credentials") == []
            assert response.values("vary") == []


# OPTIONS preflight -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path", ["/anything", "/api/v1/pipe/anything", "/", "/help", "/api/v1/pipe/health", "/health", "/x?n=0"]
)
async def test_preflight_on_any_path(relay: Relay, path: str) -> None:
    with trio.fail_after(10):
        origin = "https://app.example.com"
        response = await http(
            relay,
            path,
            "-X",
            "OPTIONS",
            "-H",
            f"Origin: {origin}",
            "-H",
            "Access-Control-Request-Method: PUT",
        )
        assert response.status == 200
        assert response.body == b""
        assert response.values("content-length") == ["0"]
        assert response.values("access-control-allow-origin") == [origin]
        assert response.values("access-control-allow-credentials") == ["true"]
        assert response.values("vary") == ["Origin"]
        assert response.values("access-control-allow-methods") == ["GET, POST, PUT, OPTIONS"]
        assert response.values("access-control-allow-headers") == [
            "Content-Type, Content-Disposition, Authorization, X-Piping, X-Hoody-Pipe"
        ]
        assert response.values("access-control-max-age") == ["86400"]
        assert response.values("access-control-allow-private-network") == []
        assert relay.hub.registry.snapshot(path.split("?")[0]) is None


async def test_preflight_private_network(relay: Relay) -> None:
    with trio.fail_after(10):
        response = await http(
            relay,
            "/anything",
            "-X",
            "OPTIONS",
            "-H",
            "Origin: http://intranet.example",
            "-H",
            "Access-Control-Request-Private-Network: true",
        )
        assert response.status == 200
        assert response.values("access-control-allow-private-network") == ["true"]
        assert response.values("access-control-allow-origin") == ["http://intranet.example"]


async def test_an_origin_that_is_null_once_its_tab_is_stripped_gets_star(relay: Relay) -> None:
    with trio.fail_after(10):
        response = await http(relay, "/version", "-H", "Origin: nu\tll")
        assert response.status == 200
        assert response.values("access-control-allow-origin") == ["*"]
        assert response.values("access-control-allow-credentials") == []


@pytest.mark.parametrize("origin", [None, "null"])
async def test_preflight_without_usable_origin(relay: Relay, origin: str | None) -> None:
    with trio.fail_after(10):
        args = ["-H", f"Origin: {origin}"] if origin is not None else []
        response = await http(relay, "/anything", "-X", "OPTIONS", *args)
        assert response.status == 200
        assert response.values("access-control-allow-origin") == ["*"]
        assert response.values("access-control-allow-credentials") == []
        assert response.values("access-control-max-age") == ["86400"]


# Framing forwarded -------------------------------------------------------------------------


async def test_content_length_upload_forwards_length(relay: Relay, tmp_path: Path) -> None:
    path = tmp_path / "sized.bin"
    path.write_bytes(bytes(range(256)) * 1000)
    with trio.fail_after(10):
        result = await transfer(relay, "/len", path)
        assert result.receiver.values("content-length") == ["256000"]
        assert result.receiver.values("transfer-encoding") == []


async def test_chunked_upload_forwards_chunked(relay: Relay, tmp_path: Path) -> None:
    path = tmp_path / "streamed.bin"
    path.write_bytes(bytes(range(256)) * 1000)
    with trio.fail_after(10):
        result = await transfer(relay, "/chunk", path, chunked=True)
        assert result.receiver.values("transfer-encoding") == ["chunked"]
        assert result.receiver.values("content-length") == []
        assert_pipe_headers(result.receiver)
