# HTTP/2 on the same hub: h2c by prior knowledge, h2 over TLS by ALPN, mixed with HTTP/1.x parties.
# Invariant: real clients (curl, httpx, the raw h2 client); bytes by sha256; cuts judged on the wire.
from __future__ import annotations

import hashlib
import os
import ssl

import httpx
import pytest
import trio

from tests.clients import CurlResult, Payload, RawClient, Relay, StartRelay, TlsFiles, curl, curl_into
from tests.h2client import H2Client

H2C = "--http2-prior-knowledge"


@pytest.fixture
async def both(start_relay: StartRelay, tls_files: TlsFiles) -> Relay:
    return await start_relay(**tls_files.overrides())


def _hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("sender_first", [True, False], ids=["sender-first", "receiver-first"])
@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "end-stream"])
async def test_h2c_sender_to_h2c_receiver(
    relay: Relay, payloads: dict[int, Payload], sender_first: bool, chunked: bool
) -> None:
    """`curl --http2-prior-knowledge` on both sides; without Content-Length the body ends at END_STREAM."""
    payload = payloads[1 << 20]
    path = f"/h2c-{int(sender_first)}{int(chunked)}"
    url = relay.url + path
    source = ("-T", "-") if chunked else ("-T", str(payload.path))
    stdin = payload.path.read_bytes() if chunked else None
    results: dict[str, CurlResult] = {}

    async def send() -> None:
        results["sender"] = await curl(H2C, "-w", "\n%{http_version}", *source, url, stdin=stdin)

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            if sender_first:
                nursery.start_soon(send)
                await relay.wait_for_pipe(path, sender=True)
            nursery.start_soon(curl_into, results, "receiver", H2C, "-w", "\n%{http_version}", url)
            if not sender_first:
                await relay.wait_for_pipe(path, receivers=1)
                nursery.start_soon(send)
    receiver, sender = results["receiver"], results["sender"]
    assert receiver.returncode == 0 and sender.returncode == 0, (receiver.stderr, sender.stderr)
    body, _, version = receiver.stdout.rpartition(b"\n")
    assert version == b"2" and _hash(body) == payload.sha256
    status, _, sender_version = sender.stdout.rpartition(b"\n")
    assert sender_version == b"2" and status.endswith(b"[INFO] Transfer complete.\n")


async def test_fan_out_over_three_protocols_at_once(
    both: Relay, tls_files: TlsFiles, payloads: dict[int, Payload]
) -> None:
    """n=3: an h2c receiver, an HTTP/1.1 receiver and an h2-over-TLS receiver; an h2 sender over TLS."""
    payload = payloads[1 << 20]
    path = "/three?n=3"
    ca = ("--cacert", str(tls_files.ca_pem), "-w", "\n%{http_version}")
    receivers = {
        "h2c": (H2C, "-w", "\n%{http_version}", both.url + path),
        "h1": ("--http1.1", "-w", "\n%{http_version}", both.url + path),
        "h2-tls": ("--http2", *ca, both.tls_url + path),
    }
    results: dict[str, CurlResult] = {}
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            for name, args in receivers.items():
                nursery.start_soon(curl_into, results, name, *args)
            await both.wait_for_pipe("/three", receivers=3)
            nursery.start_soon(
                curl_into, results, "sender", "--http2", *ca, "-T", str(payload.path), both.tls_url + path
            )
    for name, version in (("h2c", b"2"), ("h1", b"1.1"), ("h2-tls", b"2")):
        body, _, seen = results[name].stdout.rpartition(b"\n")
        assert results[name].returncode == 0, results[name].stderr
        assert (seen, _hash(body)) == (version, payload.sha256), name
    assert results["sender"].stdout.rpartition(b"\n")[2] == b"2"


@pytest.mark.parametrize("direction", ["h1-to-h2", "h2-to-h1"])
async def test_mixed_pairs(relay: Relay, payloads: dict[int, Payload], direction: str) -> None:
    payload = payloads[64 << 20]
    send_flag, receive_flag = ("--http1.1", H2C) if direction == "h1-to-h2" else (H2C, "--http1.1")
    results: dict[str, CurlResult] = {}
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(curl_into, results, "receiver", receive_flag, relay.url + "/mixed")
            await relay.wait_for_pipe("/mixed", receivers=1)
            nursery.start_soon(
                curl_into, results, "sender", send_flag, "-T", str(payload.path), relay.url + "/mixed"
            )
    assert results["receiver"].returncode == 0, results["receiver"].stderr
    assert _hash(results["receiver"].stdout) == payload.sha256


async def test_httpx_http2_receives_over_tls(
    both: Relay, tls_files: TlsFiles, payloads: dict[int, Payload]
) -> None:
    payload = payloads[1 << 20]
    context = ssl.create_default_context()
    tls_files.ca.configure_trust(context)
    results: dict[str, CurlResult] = {}
    with trio.fail_after(30):
        async with httpx.AsyncClient(http2=True, verify=context) as client, trio.open_nursery() as nursery:

            async def receive() -> None:
                response = await client.get(both.tls_url + "/httpx")
                results["httpx"] = CurlResult(
                    0, response.content, b"", dict(response.headers), response.status_code
                )
                assert response.http_version == "HTTP/2"

            nursery.start_soon(receive)
            await both.wait_for_pipe("/httpx", receivers=1)
            nursery.start_soon(
                curl_into,
                results,
                "sender",
                "--cacert",
                str(tls_files.ca_pem),
                "-T",
                str(payload.path),
                both.tls_url + "/httpx",
            )
    got = results["httpx"]
    assert got.status == 200 and _hash(got.stdout) == payload.sha256
    assert got.headers["content-length"] == str(payload.size)


async def test_a_cut_sender_resets_the_h2_receivers_stream_never_ends_it(
    relay: Relay, raw_clients: list[RawClient]
) -> None:
    """An HTTP/1.1 sender announces 1 MiB, sends some and resets: the h2 receiver's stream gets
    RST_STREAM, no END_STREAM; and its connection still serves another stream after."""
    with trio.fail_after(20):
        client = await H2Client.connect(relay.host, relay.port)
        try:
            stream_id = await client.request("GET", "/cut-h2", end=True)
            await relay.wait_for_pipe("/cut-h2", receivers=1)
            sender = await RawClient.connect(relay)
            raw_clients.append(sender)
            await sender.send(
                b"PUT /cut-h2 HTTP/1.1\r\nHost: x\r\nContent-Length: 1048576\r\n\r\n" + b"y" * 100_000
            )
            await client.until(lambda: len(client.responses[stream_id].data) >= 100_000)
            await sender.reset()
            response = await client.until_over(stream_id)
            assert response.reset is not None and not response.ended
            assert response.status == 200 and bytes(response.data) == b"y" * 100_000
            again = await client.request("GET", "/version", end=True)
            assert (await client.until_over(again)).data.startswith(b"pipe-relay ")
        finally:
            await client.aclose()


async def test_a_cut_h2_sender_resets_its_stream_only(relay: Relay) -> None:
    """The h2 sender resets its stream mid-body: the HTTP/1.1 receiver's transfer fails (curl sees a
    short body under Content-Length); the same h2 connection then serves a whole new transfer."""
    results: dict[str, CurlResult] = {}
    with trio.fail_after(20):
        client = await H2Client.connect(relay.host, relay.port)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(curl_into, results, "receiver", relay.url + "/cut-sender")
                await relay.wait_for_pipe("/cut-sender", receivers=1)
                sid = await client.request("PUT", "/cut-sender", ("content-length", "1048576"))
                await client.send_body(sid, b"z" * 65536, end=False)
                await relay.wait_for_bytes("/cut-sender", 65536)
                await client.reset(sid)
            assert results["receiver"].returncode in (18, 56), results["receiver"].stderr  # (short, or reset)
            data = os.urandom(200_000)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(curl_into, results, "again", relay.url + "/after-cut")
                await relay.wait_for_pipe("/after-cut", receivers=1)
                sid = await client.request("PUT", "/after-cut", ("content-length", str(len(data))))
                await client.send_body(sid, data)
                status = await client.until_over(sid)
            assert status.ended and status.data.endswith(b"[INFO] Transfer complete.\n")
            assert _hash(results["again"].stdout) == _hash(data)
        finally:
            await client.aclose()


async def test_a_stalled_h2_receiver_paces_the_sender(relay: Relay) -> None:
    """An h2 receiver that opens no window after the first 64 KiB: the server reads no more than a
    window or two of the sender's body; once it reads again, every byte arrives."""
    data = os.urandom(8 << 20)
    with trio.fail_after(30):
        client = await H2Client.connect(relay.host, relay.port, window=65535, auto_ack=False)
        try:
            sid = await client.request("GET", "/stall-h2", end=True)
            await relay.wait_for_pipe("/stall-h2", receivers=1)
            sender = await H2Client.connect(relay.host, relay.port)
            try:
                put = await sender.request("PUT", "/stall-h2", ("content-length", str(len(data))))
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(sender.send_body, put, data)
                    await client.until(lambda: len(client.responses[sid].data) >= 65535)
                    with trio.move_on_after(1.0):  # (nothing may come: the window is shut)
                        await client.read_more()
                    board = relay.hub.boards.get("/stall-h2")
                    assert board is not None
                    assert len(client.responses[sid].data) == 65535
                    # the server took no more than its step and the stream's window (8 MiB: all of it)
                    assert sender.sent[put] <= 3 << 20
                    while not client.responses[sid].ended:
                        client.acknowledge(sid)
                        await client.flush()
                        await client.read_more()
                assert _hash(bytes(client.responses[sid].data)) == _hash(data)
            finally:
                await sender.aclose()
        finally:
            await client.aclose()


async def test_errors_keep_their_status_and_code_over_h2(relay: Relay) -> None:
    with trio.fail_after(10):
        client = await H2Client.connect(relay.host, relay.port)
        try:
            sid = await client.request("GET", "/bad?n=0", end=True)
            response = await client.until_over(sid)
        finally:
            await client.aclose()
    assert response.status == 400 and response.ended
    assert response.headers["x-pipe-error"] == "INVALID_N"
    assert response.data.startswith(b"[ERROR] ")
    assert "connection" not in response.headers


async def test_a_progress_watch_beside_a_send_on_one_connection(relay: Relay) -> None:
    """A browser may send on one stream and watch `?progress` on another of the same connection."""
    with trio.fail_after(20):
        client = await H2Client.connect(relay.host, relay.port)
        try:
            watch = await client.request("GET", "/both?progress", ("accept", "text/event-stream"), end=True)
            put = await client.request("PUT", "/both", ("content-length", "5"))
            await client.until(lambda: b"waiting" in client.responses[watch].data)
            receiver = await curl_result(relay.url + "/both", client, put)
            status = await client.until_over(put)
            await client.until(lambda: b'"done"' in client.responses[watch].data)
        finally:
            await client.aclose()
    assert receiver.stdout == b"hello" and status.ended
    assert client.responses[watch].headers["content-type"].startswith("text/event-stream")


async def curl_result(url: str, client: H2Client, put: int) -> CurlResult:
    results: dict[str, CurlResult] = {}
    async with trio.open_nursery() as nursery:
        nursery.start_soon(curl_into, results, "receiver", url)
        await client.send_body(put, b"hello")
    return results["receiver"]


@pytest.mark.parametrize("method", ["GET", "PUT"], ids=["receiver", "sender"])
async def test_a_waiting_h2_party_that_resets_is_forgotten_at_once(relay: Relay, method: str) -> None:
    """A waiting party whose stream is reset leaves the registry at once: not at the hub's next tick
    (set to an hour here), and the path is free for a new party of the same role."""
    relay.hub.naps.interval = 3600.0  # (no party naps yet: the ticker reads it when one does)
    headers = (("content-length", "5"),) if method == "PUT" else ()
    role = {"sender": True} if method == "PUT" else {"receivers": 1}
    with trio.fail_after(10):
        client = await H2Client.connect(relay.host, relay.port)
        try:
            sid = await client.request(method, "/h2-leaves", *headers, end=method == "GET")
            await relay.wait_for_pipe("/h2-leaves", **role)
            await client.reset(sid)
            await relay.hub.wait_for(lambda: relay.hub.registry.snapshot("/h2-leaves") is None)
            again = await client.request(method, "/h2-leaves", *headers, end=method == "GET")
            await relay.wait_for_pipe("/h2-leaves", **role)
            await client.reset(again)
        finally:
            await client.aclose()
