# Pins on HTTP/2 behaviours no other test held: refused uploads reset, head refusals answered, cuts shown,
# the out buffer bounded, idle connections closed. Invariant: raw h2 clients judge the wire, frame by frame.
from __future__ import annotations

import hashlib
import os
import socket
from typing import Any, ClassVar

import h2.events
import pytest
import trio

import pipe_relay.net.respond
from pipe_relay.core.lingering import ACK_STEP
from pipe_relay.net.http2 import OUT_LIMIT, STREAM_WINDOW, Http2Connection
from tests.clients import RawClient, Relay, StartRelay, curl, parse_head, read_payload
from tests.h2client import H2Client, H2Response

NO_ERROR = 0
TEXT_PLAIN = "text/plain; charset=utf-8"


async def _over_within(client: H2Client, stream_id: int, seconds: float) -> H2Response:
    """The stream as it stands once it ended or was reset, or after `seconds` (then maybe unanswered)."""
    with trio.move_on_after(seconds):
        await client.until_over(stream_id)
    return client.responses[stream_id]


async def _reset_within(client: H2Client, stream_id: int, seconds: float) -> int | None:
    """The stream's RST_STREAM code once one came, or None if none did within `seconds`."""
    response = client.responses[stream_id]
    with trio.move_on_after(seconds):
        await client.until(lambda: response.reset is not None)
    return response.reset


def _assert_refusal(response: H2Response, status: int, code: str, message: bytes) -> None:
    """A whole error reply on an HTTP/2 stream: status, code header, one `[ERROR]` line, END_STREAM."""
    assert response.status == status, response
    assert response.ended, response
    assert response.headers["x-pipe-error"] == code
    assert response.headers["content-type"] == TEXT_PLAIN
    assert bytes(response.data) == b"[ERROR] " + message + b"\n"
    assert response.headers["content-length"] == str(len(response.data))


async def test_a_refused_h2_upload_gets_its_400_then_a_no_error_reset(relay: Relay) -> None:
    """A PUT refused at its head (bad n=) with its body still to come: the whole 400 with END_STREAM,
    then (the client having had a second to read it: core.lingering) RST_STREAM(NO_ERROR), so the
    client stops sending the refused body; the connection serves on."""
    with trio.fail_after(10):
        client = await H2Client.connect(relay.host, relay.port)
        try:
            sid = await client.request("PUT", "/refused?n=0", ("content-length", str(8 << 20)))
            await client.send_body(sid, b"r" * 16384, end=False)
            response = await _over_within(client, sid, 5)
            message = b"Invalid 'n' parameter '0': must be an integer between 1 and 256."
            _assert_refusal(response, 400, "INVALID_N", message)
            assert await _reset_within(client, sid, 2) == NO_ERROR, "no RST_STREAM after the refusal"
            again = await client.request("GET", "/version", end=True)
            assert (await client.until_over(again)).data.startswith(b"pipe-relay ")
        finally:
            await client.aclose()


async def test_a_refused_upload_that_ends_its_body_soon_is_never_reset(relay: Relay) -> None:
    """The refusal first, no reset with it: the client may end its body (here, after reading the
    400) and the stream closes cleanly. A reset that overtakes the answer makes curl 7.88 fail such
    an upload ("Stream error in the HTTP/2 framing layer", no reply shown), about 1 time in 10
    under --workers; no reset either for the DATA that comes after the answer (h2's own
    RST_STREAM STREAM_CLOSED for frames on a stream it reset)."""
    with trio.fail_after(10):
        client = await H2Client.connect(relay.host, relay.port)
        try:
            sid = await client.request("PUT", "/soon?n=0", ("content-length", "100000"))
            response = await _over_within(client, sid, 5)
            message = b"Invalid 'n' parameter '0': must be an integer between 1 and 256."
            _assert_refusal(response, 400, "INVALID_N", message)
            await client.send_body(sid, bytes(100_000))
            await client.round_trip()
            assert response.reset is None, "a reset came with or after the refusal"
            again = await client.request("GET", "/version", end=True)
            assert (await client.until_over(again)).data.startswith(b"pipe-relay ")
        finally:
            await client.aclose()


async def test_a_lingering_upload_sends_no_more_than_its_window_and_the_connection_gets_its_back(
    relay: Relay,
) -> None:
    """After its refusal a stream's upload is dropped: the client may fill the stream's window (1 MiB)
    but it is not opened again, while the connection's window is (another stream can upload); then
    RST_STREAM(NO_ERROR) ends the stream."""
    with trio.fail_after(10):
        client = await H2Client.connect(relay.host, relay.port)
        try:
            await client.round_trip()  # (the server's SETTINGS and its connection window are in)
            window = client.h2.outbound_flow_control_window
            sid = await client.request("PUT", "/window?n=0")
            response = await _over_within(client, sid, 5)
            assert response.status == 400 and response.reset is None, response
            stream_window = client.h2.local_flow_control_window(sid)
            assert stream_window == STREAM_WINDOW
            await client.send_body(sid, bytes(stream_window), end=False)
            await client.round_trip()
            if response.reset is None:  # (still lingering: the stream's window stays shut)
                assert client.h2.local_flow_control_window(sid) == 0
            assert client.h2.outbound_flow_control_window >= window - ACK_STEP
            assert await _reset_within(client, sid, 5) == NO_ERROR
        finally:
            await client.aclose()


async def test_head_checks_over_h2_answer_their_400_not_a_bare_reset(relay: Relay) -> None:
    """Content-Lengths h2 parses but our head checks refuse (20 digits, 2^63): each stream gets
    `:status 400`, X-Pipe-Error, the `[ERROR]` line and END_STREAM, then (its body unread, after
    the linger) NO_ERROR."""
    with trio.fail_after(10):
        client = await H2Client.connect(relay.host, relay.port)
        try:
            streams = [
                await client.request("PUT", path, ("content-length", length))
                for path, length in (("/cl-digits", "9" * 20), ("/cl-big", str(2**63)))
            ]
            for sid in streams:
                response = await _over_within(client, sid, 5)
                _assert_refusal(response, 400, "BAD_REQUEST", b"Malformed request: invalid Content-Length.")
                assert await _reset_within(client, sid, 2) == NO_ERROR
        finally:
            await client.aclose()
    assert relay.hub.registry.snapshot("/cl-digits") is None
    assert relay.hub.registry.snapshot("/cl-big") is None


async def test_an_h2_sender_reset_without_length_never_ends_a_chunked_receiver(
    relay: Relay, raw_clients: list[RawClient]
) -> None:
    """No Content-Length: the body ends at END_STREAM only. A reset mid-body must reach the chunked
    HTTP/1.1 receiver as a cut: every byte sent so far, then the close, never the last chunk."""
    data = os.urandom(100_000)
    with trio.fail_after(10):
        receiver = await RawClient.connect(relay)
        raw_clients.append(receiver)
        await receiver.send(b"GET /cut-chunked HTTP/1.1\r\nHost: x\r\n\r\n")
        await relay.wait_for_pipe("/cut-chunked", receivers=1)
        client = await H2Client.connect(relay.host, relay.port)
        try:
            sid = await client.request("PUT", "/cut-chunked")
            await client.send_body(sid, data, end=False)
            status, headers, _ = parse_head(await receiver.read_until(b"\r\n\r\n"))
            assert (status, headers["transfer-encoding"]) == (200, "chunked")
            got = await read_payload(receiver, len(data), chunked=True)
            await client.reset(sid)
            rest, _ = await receiver.read_to_end()
        finally:
            await client.aclose()
    assert hashlib.sha256(got).hexdigest() == hashlib.sha256(data).hexdigest()
    assert rest == b"", f"after the cut the receiver got {rest!r}: a complete body"


class _Watched(Http2Connection):
    """An Http2Connection that records the most it ever held in its outbound buffer (it grows only
    in `flush`)."""

    made: ClassVar[list[_Watched]] = []

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.peak = 0
        _Watched.made.append(self)

    def flush(self) -> None:
        super().flush()
        self.peak = max(self.peak, self.buffered)


async def test_a_wide_open_h2_receiver_that_reads_nothing_costs_at_most_the_out_limit(
    relay: Relay, raw_clients: list[RawClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An h2 receiver opens 2 GiB windows (stream and connection) and stops reading its socket while
    16 MiB come: the server holds at most OUT_LIMIT (+ frame headers) for it; then every byte arrives."""
    monkeypatch.setattr(_Watched, "made", [])
    monkeypatch.setattr(pipe_relay.net.respond, "Http2Connection", _Watched)
    data = os.urandom(16 << 20)
    wide = 2**31 - 1
    with trio.fail_after(30):
        sock = trio.socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        await sock.connect((relay.host, relay.port))
        client = H2Client(trio.SocketStream(sock), window=wide, auto_ack=False)
        client.h2.initiate_connection()
        client.h2.increment_flow_control_window(wide - 65535)
        await client.flush()
        try:
            sid = await client.request("GET", "/flood", end=True)
            await relay.wait_for_pipe("/flood", receivers=1)
            sender = await RawClient.connect(relay)
            raw_clients.append(sender)
            async with trio.open_nursery() as nursery:
                head = b"PUT /flood HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(data)
                nursery.start_soon(sender.send, head + data)
                await relay.wait_for_bytes("/flood", 1)
                board = relay.hub.boards.get("/flood")
                assert board is not None
                moved, still = -1, trio.current_time()
                while board.bytes < len(data) and trio.current_time() - still < 0.5:  # until it stalls
                    if board.bytes != moved:
                        moved, still = board.bytes, trio.current_time()
                    await trio.sleep(0.02)
                [connection] = _Watched.made
                peak = connection.peak
                await client.until(lambda: client.responses[sid].ended)
        finally:
            await client.aclose()
    assert peak <= OUT_LIMIT + 16384, f"the server buffered {peak} bytes for one h2 receiver"
    assert hashlib.sha256(bytes(client.responses[sid].data)).hexdigest() == hashlib.sha256(data).hexdigest()


async def test_an_idle_h2c_connection_gets_goaway_at_the_head_deadline_and_frees_its_slot(
    start_relay: StartRelay, raw_clients: list[RawClient]
) -> None:
    """header_timeout=1, max_connections=1: a client that sends only the preface and SETTINGS holds
    the one slot (the next connection gets 503) until GOAWAY(NO_ERROR) and the close, 1-3 s on; then
    the slot is free again."""
    relay = await start_relay(header_timeout=1, max_connections=1)
    with trio.fail_after(15):
        opened = trio.current_time()
        idle = await H2Client.connect(relay.host, relay.port)  # (preface + SETTINGS, nothing more)
        try:
            refused = await RawClient.connect(relay)
            raw_clients.append(refused)
            await refused.send(b"GET /version HTTP/1.1\r\nHost: x\r\n\r\n")
            status, headers, _ = parse_head(await refused.read_until(b"\r\n\r\n"))
            assert (status, headers["x-pipe-error"]) == (503, "TOO_MANY_CONNECTIONS")
            goaway: int | None = None
            closed_at: float | None = None
            with trio.move_on_after(5):
                while True:
                    try:
                        data = await idle.stream.receive_some(65536)
                    except trio.BrokenResourceError:
                        data = b""
                    if not data:
                        closed_at = trio.current_time() - opened
                        break
                    for event in idle.h2.receive_data(data):
                        if isinstance(event, h2.events.ConnectionTerminated):
                            goaway = int(event.error_code or 0)
        finally:
            await idle.aclose()
        assert closed_at is not None, "the idle h2c connection was never closed"
        assert goaway == NO_ERROR
        assert 0.9 <= closed_at <= 3.0, closed_at
        served = await curl(f"{relay.url}/version")
    assert served.stdout.startswith(b"pipe-relay "), served.stderr
