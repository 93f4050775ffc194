# Graceful drain: waiting parties are told and let go, active transfers finish, the rest is cut so
# that it cannot look complete; in-process through `hub.drain()` and as a user sends SIGTERM.
from __future__ import annotations

import hashlib
import json
import os
import signal
import sys
from functools import partial

import pytest
import trio

from tests.clients import RawClient, parse_head, read_status_until, serving
from tests.responses import split_response


async def test_a_drain_lets_waiting_parties_go_and_active_transfers_finish(
    nursery: trio.Nursery, engine: str, raw_clients: list[RawClient]
) -> None:
    relay, ended = await serving(nursery, engine=engine, drain_timeout=10)
    body = os.urandom(1 << 20)
    with trio.fail_after(15):
        receiver = await RawClient.connect(relay)  # waits on /wait-r with no sender
        waiting_sender = await RawClient.connect(relay)  # waits on /wait-s with no receiver
        active_sender = await RawClient.connect(relay)
        active_receiver = await RawClient.connect(relay)
        idle = await RawClient.connect(relay)  # keep-alive, between requests
        on_its_way = await RawClient.connect(relay)  # half a head sent when the drain starts
        raw_clients += [receiver, waiting_sender, active_sender, active_receiver, idle, on_its_way]
        await receiver.send(b"GET /wait-r HTTP/1.1\r\nHost: t\r\n\r\n")
        await waiting_sender.send(b"PUT /wait-s HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc")
        await active_receiver.send(b"GET /busy HTTP/1.1\r\nHost: t\r\n\r\n")
        await active_sender.send(b"PUT /busy HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % len(body))
        await active_sender.send(body[:1000])
        await idle.send(b"GET /version HTTP/1.1\r\nHost: t\r\n\r\n")
        assert (await idle.read_until(b"pipe-relay 0.1.0\n")).startswith(b"HTTP/1.1 200 OK\r\n")
        await on_its_way.send(b"GET /api/v1/pipe/health HTTP/1.1\r\nHost: t\r\n")
        await relay.wait_for_pipe("/wait-r", receivers=1)
        await relay.wait_for_pipe("/wait-s", sender=True)
        await active_receiver.read_until(b"\r\n\r\n")

        relay.hub.drain()

        refused, _ = await receiver.read_to_end()
        assert split_response(refused).status == 503
        assert split_response(refused).headers["x-pipe-error"] == "SHUTTING_DOWN"
        assert split_response(refused).body == b"[ERROR] Server is shutting down.\n"
        assert split_response(refused).headers["connection"] == "close"  # a party's last reply says so
        assert (await waiting_sender.read_until(b"\r\n\r\n")).startswith(b"HTTP/1.1 200 OK\r\n")
        told = await read_status_until(waiting_sender, b"[ERROR] Server is shutting down.\n")
        assert told.endswith(
            b"[INFO] Waiting for 1 receiver(s) to connect...\n[ERROR] Server is shutting down.\n"
        )
        assert await idle.read_to_end() == (b"", True)  # an idle keep-alive connection closes at once
        with pytest.raises(OSError):  # no more accepts
            await trio.open_tcp_stream(relay.host, relay.port)
        await on_its_way.send(b"\r\n")  # a head on its way is still answered, then the connection closes
        health, clean = await on_its_way.read_to_end()
        assert clean
        assert split_response(health).status == 503
        assert json.loads(split_response(health).body)["status"] == "draining"

        await active_sender.send(body[1000:])  # the active transfer finishes
        received = await active_receiver.read_exactly(len(body))
        assert hashlib.sha256(received).digest() == hashlib.sha256(body).digest()
        await active_sender.read_until(b"\r\n\r\n")
        status = await read_status_until(active_sender, b"[INFO] Transfer complete.\n")
        assert b"[ERROR]" not in status
        await ended.wait()  # and then the server is gone
    assert relay.hub.registry.pending_count == relay.hub.registry.active_count == 0


@pytest.mark.parametrize("framing", ["length", "chunked"])
async def test_past_the_drain_timeout_a_transfer_is_cut_never_complete(
    nursery: trio.Nursery, engine: str, raw_clients: list[RawClient], framing: str
) -> None:
    relay, ended = await serving(nursery, engine=engine, drain_timeout=0.5)
    with trio.fail_after(15):
        receiver = await RawClient.connect(relay)
        sender = await RawClient.connect(relay)
        raw_clients += [receiver, sender]
        await receiver.send(b"GET /stuck HTTP/1.1\r\nHost: t\r\n\r\n")
        await relay.wait_for_pipe("/stuck", receivers=1)
        if framing == "length":
            await sender.send(b"PUT /stuck HTTP/1.1\r\nHost: t\r\nContent-Length: 10000\r\n\r\n" + b"x" * 100)
        else:
            await sender.send(
                b"PUT /stuck HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n64\r\n"
                + b"x" * 100
                + b"\r\n"
            )
        head = await receiver.read_until(b"\r\n\r\n")
        assert parse_head(head)[0] == 200
        started = trio.current_time()
        relay.hub.drain()
        rest, clean = await receiver.read_to_end()
        seconds = trio.current_time() - started
        await ended.wait()
    assert 0.4 <= seconds <= 3.0, seconds
    assert not clean  # a reset: never a clean end of a cut transfer
    assert b"0\r\n\r\n" not in rest


async def _read_until(stream: trio.SocketStream, marker: bytes) -> bytes:
    seen = b""
    while marker not in seen:
        chunk = await stream.receive_some(65536)
        assert chunk, seen
        seen += chunk
    return seen


async def test_sigterm_drains_a_real_server_and_it_exits_0() -> None:
    """As an operator stops it: SIGTERM mid-transfer; the waiting receiver is told, the transfer
    finishes, the process exits 0."""
    with trio.fail_after(30):
        command = [sys.executable, "-m", "pipe_relay", "--host", "127.0.0.1", "--http-port", "0"]
        process = await trio.lowlevel.open_process([*command, "--drain-timeout", "20"], stdout=-1)
        streams: list[trio.SocketStream] = []
        try:
            assert process.stdout is not None
            line = b""
            while not line.endswith(b"\n"):
                line += await process.stdout.receive_some(1)
            port = int(line.decode().rsplit(":", 1)[1])
            connect = partial(trio.open_tcp_stream, "127.0.0.1", port)
            body = os.urandom(256 * 1024)
            streams += [await connect() for _ in range(4)]
            waiting, watcher, receiver, sender = streams
            await waiting.send_all(b"GET /nobody-sends HTTP/1.1\r\nHost: t\r\n\r\n")
            await watcher.send_all(b"GET /nobody-sends?progress HTTP/1.1\r\nHost: t\r\n\r\n")
            await _read_until(watcher, b'"state":"waiting"')  # the waiting receiver is registered
            await receiver.send_all(b"GET /drained HTTP/1.1\r\nHost: t\r\n\r\n")
            await sender.send_all(
                b"PUT /drained HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % len(body)
            )
            await sender.send_all(body[:1000])
            await _read_until(sender, b"[INFO] Streaming to 1 receiver(s)...\n")
            process.send_signal(signal.SIGTERM)
            refused = await _read_until(waiting, b"\n\r\n")  # (the end of its one-line body)
            await sender.send_all(body[1000:])
            status = await _read_until(sender, b"[INFO] Transfer complete.\n")
            head_and_body = b""
            while True:
                chunk = await receiver.receive_some(65536)
                if not chunk:
                    break
                head_and_body += chunk
            code = await process.wait()
        finally:
            for stream in streams:
                await stream.aclose()
            if process.returncode is None:
                process.kill()
                await process.wait()
    assert code == 0
    assert b"[ERROR]" not in status
    response = split_response(refused)
    assert (response.status, response.headers["x-pipe-error"]) == (503, "SHUTTING_DOWN")
    received = split_response(head_and_body)
    assert received.status == 200
    assert hashlib.sha256(received.body).digest() == hashlib.sha256(body).digest()
