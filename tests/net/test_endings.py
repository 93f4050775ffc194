# How connections and replies end: the same refusal on every front end, a reply that cannot be finished
# is reset, a drain sends HTTP/2 GOAWAY, TLS says close_notify. Invariant: judged on the wire, raw clients.
from __future__ import annotations

import hashlib
import os
from collections.abc import Callable

import h2.errors
import pytest
import trio

import pipe_relay.net.connection as connection_module
import pipe_relay.net.http2_stream as stream_module
from loadtests.attack_plans import (
    DATA,
    END_HEADERS,
    END_STREAM,
    GOAWAY,
    HEADERS,
    frame,
    opening,
    request_block,
)
from tests.clients import RawClient, Relay, StartRelay, TlsFiles, curl, parse_head, serving
from tests.h2client import H2Client
from tests.responses import split_response

ONE_ENGINE = pytest.mark.parametrize("engine", ["buffer"])
pytestmark = ONE_ENGINE

CONTROL_PATH = b"/a\x1bb"
MANY_HEADERS = [(f"x-h{index}", "v") for index in range(101)]


async def _over_http11(relay: Relay, target: bytes, headers: list[tuple[str, str]]) -> tuple[int, str, bytes]:
    client = await RawClient.connect(relay)
    lines = b"".join(f"{name}: {value}\r\n".encode() for name, value in headers)
    await client.send(b"GET " + target + b" HTTP/1.1\r\nHost: t\r\n" + lines + b"\r\n")
    raw, _ = await client.read_to_end()
    await client.aclose()
    response = split_response(raw)
    return response.status, response.headers["x-pipe-error"], response.body


async def _over_h2c(relay: Relay, target: bytes, headers: list[tuple[str, str]]) -> tuple[int, str, bytes]:
    client = await H2Client.connect(relay.host, relay.port)
    stream_id = await client.request("GET", target.decode("latin-1"), *headers, end=True)
    response = await client.until_over(stream_id)
    await client.aclose()
    assert response.ended and response.reset is None, response
    return response.status, response.headers["x-pipe-error"], bytes(response.data)


@pytest.mark.parametrize(
    ("target", "headers", "expected"),
    [
        (CONTROL_PATH, [], (400, "BAD_REQUEST", b"[ERROR] Malformed request: illegal request line.\n")),
        (b"/many", MANY_HEADERS, (431, "TOO_MANY_HEADERS", b"[ERROR] Too many header lines (max 100).\n")),
    ],
    ids=["control-character-in-path", "101-headers"],
)
async def test_http2_refuses_what_http11_refuses_with_the_same_error(
    relay: Relay, target: bytes, headers: list[tuple[str, str]], expected: tuple[int, str, bytes]
) -> None:
    with trio.fail_after(10):
        assert await _over_http11(relay, target, headers) == expected
        assert await _over_h2c(relay, target, headers) == expected  # (a stream error: the reply)


async def test_an_h2_reply_that_cannot_be_finished_is_reset_not_ended_short(
    relay: Relay, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Our window to the client is shut: the 17 bytes of /version cannot go. Past the write timeout
    the stream is reset (CANCEL), never ended with END_STREAM after 0 of its 17 bytes."""
    monkeypatch.setattr(stream_module, "WRITE_TIMEOUT", 0.5)
    with trio.fail_after(10):
        client = await H2Client.connect(relay.host, relay.port, window=0, auto_ack=False)
        stream_id = await client.request("GET", "/version", end=True)
        response = await client.until_over(stream_id)
        await client.aclose()
    assert (response.status, response.headers["content-length"]) == (200, "17")
    assert (response.ended, response.reset, bytes(response.data)) == (False, h2.errors.ErrorCodes.CANCEL, b"")


async def test_an_http11_reply_that_cannot_be_finished_is_a_reset(
    relay: Relay, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The web UI's page (tens of KB) to a client that reads nothing, with a tiny window: past the
    write timeout the connection is reset, so the client cannot take a short body for the page."""
    monkeypatch.setattr(connection_module, "WRITE_TIMEOUT", 0.5)
    # The kernels must hold less than the page: a tiny window and small segments on the client's side,
    # and a small send buffer on the server's (accepted sockets inherit the listener's; left to itself
    # Linux grows a send buffer past the whole page, and no write ever waits).
    relay.listeners[0].socket.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_SNDBUF, 4096)
    sock = trio.socket.socket()
    try:
        with trio.fail_after(10):
            sock.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_RCVBUF, 2048)
            sock.setsockopt(trio.socket.IPPROTO_TCP, trio.socket.TCP_MAXSEG, 256)
            await sock.connect((relay.host, relay.port))
            client = RawClient(trio.SocketStream(sock))
            await client.send(b"GET / HTTP/1.1\r\nHost: t\r\nAccept: text/html\r\n\r\n")
            await trio.sleep(1.5)  # (reading nothing while the write timeout passes: what is tested)
            raw, clean = await client.read_to_end()
    finally:
        sock.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    status, headers, _ = parse_head(head + b"\r\n\r\n")
    assert status == 200 and len(body) < int(headers["content-length"])
    assert not clean  # a reset, not a FIN after a short body


class _Frames:
    """A raw h2c client's view of what the server sent: every frame, whole, in order."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.frames: list[tuple[int, int, int, bytes]] = []
        self._buffer = b""
        self.closed = False

    async def until(self, done: Callable[[], bool]) -> None:
        while not done() and not self.closed:
            data = await self.stream.receive_some(1 << 20)
            self.closed = not data
            self._buffer += data
            while len(self._buffer) >= 9 and len(self._buffer) >= 9 + int.from_bytes(self._buffer[:3], "big"):
                length = int.from_bytes(self._buffer[:3], "big")
                kind, flags = self._buffer[3], self._buffer[4]
                stream_id = int.from_bytes(self._buffer[5:9], "big") & 0x7FFFFFFF
                self.frames.append((kind, flags, stream_id, self._buffer[9 : 9 + length]))
                self._buffer = self._buffer[9 + length :]

    def of(self, kind: int, stream_id: int | None = None) -> list[tuple[int, int, int, bytes]]:
        return [f for f in self.frames if f[0] == kind and stream_id in (None, f[2])]


async def test_a_drain_sends_goaway_to_http2_clients_and_lets_their_transfers_finish(
    nursery: trio.Nursery, engine: str, raw_clients: list[RawClient]
) -> None:
    """An h2c receiver mid-transfer and an idle h2c connection when the drain starts: both get
    GOAWAY (NO_ERROR, the last stream served); a stream opened after it is ignored (RFC 9113 6.8)
    and the client may retry it elsewhere; the transfer finishes; the server is done long before
    its 30 s drain timeout."""
    relay, ended = await serving(nursery, drain_timeout=30, engine=engine)
    body = os.urandom(1 << 20)
    with trio.fail_after(15):
        idle = _Frames(await trio.open_tcp_stream(relay.host, relay.port))
        busy = _Frames(await trio.open_tcp_stream(relay.host, relay.port))
        await idle.stream.send_all(opening())
        await busy.stream.send_all(
            opening() + frame(HEADERS, END_STREAM | END_HEADERS, 1, request_block("/dr"))
        )
        await relay.wait_for_pipe("/dr", receivers=1)
        sender = await RawClient.connect(relay)
        raw_clients.append(sender)
        await sender.send(b"PUT /dr HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % len(body))
        await sender.send(body[:1000])
        await busy.until(lambda: sum(len(f[3]) for f in busy.of(DATA, 1)) >= 1000)
        started = trio.current_time()

        relay.hub.drain()
        await idle.until(lambda: False)  # its GOAWAY, then the close
        await busy.until(lambda: bool(busy.of(GOAWAY)))
        await busy.stream.send_all(frame(HEADERS, END_STREAM | END_HEADERS, 3, request_block("/version")))
        await sender.send(body[1000:])
        await busy.until(lambda: False)
        await ended.wait()
        assert trio.current_time() - started < 10
        for client in (idle, busy):
            await client.stream.aclose()
    assert idle.closed and {f[3][:8] for f in idle.of(GOAWAY)} == {bytes(8)}  # last stream 0, NO_ERROR
    assert busy.of(GOAWAY) and {f[3][:8] for f in busy.of(GOAWAY)} == {bytes([0, 0, 0, 1]) + bytes(4)}
    received = b"".join(f[3] for f in busy.of(DATA, 1))
    assert hashlib.sha256(received).digest() == hashlib.sha256(body).digest()
    assert busy.of(DATA, 1)[-1][1] & END_STREAM
    assert not [f for f in busy.frames if f[2] == 3]  # the late stream: never answered, never reset


async def test_a_close_delimited_reply_over_tls_ends_with_close_notify(
    start_relay: StartRelay, tls_files: TlsFiles
) -> None:
    """An HTTP/1.0 receiver's body ends where the connection does: over TLS it must end with
    close_notify, or a cut could not be told from the end (a strict client reads a bare FIN as
    an error: trio's SSLStream without https_compatible raises on it)."""
    relay = await start_relay(**tls_files.overrides())
    assert relay.tls_port is not None
    body = os.urandom(300_000)
    with trio.fail_after(15):
        tcp = await trio.open_tcp_stream(relay.host, relay.tls_port)
        context = tls_files.client_context()
        context.set_alpn_protocols(["http/1.1"])
        stream = trio.SSLStream(tcp, context, server_hostname="127.0.0.1")
        await stream.send_all(b"GET /ten HTTP/1.0\r\nHost: t\r\n\r\n")
        await relay.wait_for_pipe("/ten", receivers=1)
        sent = await curl("-T", "-", relay.url + "/ten", stdin=body)
        assert sent.stdout.endswith(b"[INFO] Transfer complete.\n")
        received = bytearray()
        while chunk := await stream.receive_some(65536):  # (a bare FIN: BrokenResourceError)
            received += chunk
        await stream.aclose()
    head, _, got = bytes(received).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 200 OK\r\n") and b"content-length" not in head.lower()
    assert got == body
