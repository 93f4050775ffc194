# Pins on TLS HTTP/1.1 parties: a paused TLS receiver still gets every byte; a TLS sender's bare FIN
# mid-body is a cut. Invariant: real TLS (trustme, trio.SSLStream) and bytes judged by sha256 on the wire.
from __future__ import annotations

import hashlib
import logging
import os
import re
import socket

import h2.exceptions
import pytest
import trio

from tests.clients import Relay, StartRelay, TlsFiles, parse_head
from tests.h2client import H2Client


@pytest.fixture
async def tls_relay(start_relay: StartRelay, tls_files: TlsFiles) -> Relay:
    return await start_relay(**tls_files.overrides())


async def _tls_client(
    relay: Relay, files: TlsFiles, *, narrow: bool = False
) -> trio.SSLStream[trio.SocketStream]:
    """A TLS client (ALPN http/1.1) to the relay's HTTPS port. `narrow`: a tiny SO_RCVBUF and MSS,
    set before it connects, so the server's kernel takes only some 25 KB for it (its send buffer is
    sized from the MSS)."""
    assert relay.tls_port is not None
    sock = trio.socket.socket()
    if narrow:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 256)
    await sock.connect((relay.host, relay.tls_port))
    context = files.client_context()
    context.set_alpn_protocols(["http/1.1"])
    stream = trio.SSLStream(
        trio.SocketStream(sock), context, server_hostname="127.0.0.1", https_compatible=True
    )
    await stream.do_handshake()
    return stream


def _causes(exc: BaseException) -> str:
    """What broke a stream: the chain of causes under trio's BrokenResourceError."""
    causes = []
    cause = exc.__cause__
    while cause is not None:
        causes.append(repr(cause))
        cause = cause.__cause__
    return " <- ".join(causes) or repr(exc)


async def _read_for(
    stream: trio.SSLStream[trio.SocketStream], count: int, seconds: float
) -> tuple[bytes, str]:
    """Up to `count` bytes, until the server closes, the TLS stream breaks, or `seconds` pass; and
    how the reading ended (`count`, `closed`, `timeout` or the TLS error)."""
    got = bytearray()
    ending = "timeout"
    with trio.move_on_after(seconds):
        while len(got) < count:
            try:
                chunk = await stream.receive_some(65536)
            except trio.BrokenResourceError as exc:
                return bytes(got), _causes(exc)
            if not chunk:
                return bytes(got), "closed"
            got += chunk
        ending = "count"
    return bytes(got), ending


async def test_a_paused_tls_receiver_still_gets_every_byte(tls_relay: Relay, tls_files: TlsFiles) -> None:
    """A TLS HTTP/1.1 receiver whose kernel takes little reads its response head, then pauses while
    the sender's 60,000-byte body comes in one step: the server cannot get that step's ciphertext
    into the kernel, and must not count it as written (the transfer would end and the close drop
    the rest). Once it reads, the receiver gets every byte."""
    data = os.urandom(60_000)  # (one read of the sender's body: at most its first buffer, 64 KiB)
    with trio.fail_after(15):
        receiver = await _tls_client(tls_relay, tls_files, narrow=True)
        sender = await _tls_client(tls_relay, tls_files)
        try:
            await receiver.send_all(b"GET /tls-paused HTTP/1.1\r\nHost: x\r\n\r\n")
            await tls_relay.wait_for_pipe("/tls-paused", receivers=1)
            await sender.send_all(b"PUT /tls-paused HTTP/1.1\r\nHost: x\r\nContent-Length: 60000\r\n\r\n")
            head = b""
            while b"\r\n\r\n" not in head:  # (sent before any body byte came: nothing more in it)
                head += await receiver.receive_some(1024)
            status, headers, _ = parse_head(head)
            assert (status, headers["content-length"]) == (200, str(len(data)))
            await sender.send_all(data)
            await trio.lowlevel.wait_readable(
                receiver.transport_stream.socket
            )  # (the server wrote what its kernel took)
            rest, ending = await _read_for(receiver, len(data), 5)
            body = head.partition(b"\r\n\r\n")[2] + rest
        finally:
            await receiver.aclose()
            await sender.aclose()
    assert len(body) == len(data), f"the paused receiver got {len(body)} of {len(data)} bytes ({ending})"
    assert hashlib.sha256(body).hexdigest() == hashlib.sha256(data).hexdigest()


async def test_a_tls_senders_bare_fin_mid_body_is_a_cut(
    tls_relay: Relay, tls_files: TlsFiles, caplog: pytest.LogCaptureFixture
) -> None:
    """A TLS sender announces 1 MiB, sends 100,000 bytes and then a FIN without close_notify: the
    h2 receiver's stream is reset (never ended), the transfer is logged as failed because the sender
    left, and the sender is treated as gone (its connection is reset, not closed in order)."""
    caplog.set_level(logging.INFO, logger="pipe_relay")
    relay = tls_relay
    data = os.urandom(100_000)
    with trio.fail_after(15):
        client = await H2Client.connect(relay.host, relay.port)
        sender = await _tls_client(relay, tls_files)
        transport = sender.transport_stream
        try:
            sid = await client.request("GET", "/tls-fin", end=True)
            await relay.wait_for_pipe("/tls-fin", receivers=1)
            await sender.send_all(b"PUT /tls-fin HTTP/1.1\r\nHost: x\r\nContent-Length: 1048576\r\n\r\n")
            await sender.send_all(data)
            await client.until(lambda: len(client.responses[sid].data) >= len(data))
            await transport.send_eof()  # (the TCP FIN alone: no TLS close_notify first)
            try:
                response = await client.until_over(sid)
            except h2.exceptions.InvalidBodyLengthError as exc:  # (h2 checks END_STREAM's length)
                raise AssertionError(f"the cut body ended as if complete ({exc})") from None
            status, ending = await _read_for(sender, 1 << 16, 5)  # (to the server's TLS alert, or its close)
            if "ConnectionResetError" not in ending:  # then how its TCP connection ended
                with trio.move_on_after(5):
                    try:
                        ending = "in order (FIN)" if not await transport.receive_some(65536) else "data"
                    except trio.BrokenResourceError as exc:
                        ending = _causes(exc)
            await relay.wait_until_free("/tls-fin")
        finally:
            await client.aclose()
            await transport.aclose()  # (no close_notify after the FIN)
    assert response.status == 200 and bytes(response.data) == data
    assert response.reset is not None and not response.ended, "the cut body ended as if complete"
    assert status.startswith(b"HTTP/1.1 200 OK\r\n") and b"[INFO] Streaming to 1 receiver(s)..." in status
    assert "ConnectionResetError" in ending, f"the sender's connection ended {ending}, not with a reset"
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("transfer ")]
    assert len(lines) == 1, lines
    gone = r"transfer pipe#\w{16} n=1 failed \(the sender disconnected before the end of its body(: .*)?\)"
    assert re.fullmatch(gone + r": 100000 bytes in [\d.]+ s", lines[0]), lines
