# The HTTP/2 guards one at a time, with the raw h2 client: reset streams and the stream cap, bodies nobody
# reads, replies held per client, our HPACK table, the outbound cap. Invariant: each fails if its guard goes.
from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h2.errors
import h2.settings
import pytest
import trio

import pipe_relay.net.http2 as http2_module
import pipe_relay.net.respond as respond_module
from loadtests.attack_plans import PING, frame
from pipe_relay.core.abuse import FloodLimits
from pipe_relay.core.http2 import MAX_FRAME
from tests.cli_process import cli_server
from tests.clients import Relay, StartRelay
from tests.h2client import H2Client

ROOT = Path(__file__).resolve().parents[2]
ONE_ENGINE = pytest.mark.parametrize("engine", ["buffer"])  # (no transfer: one engine is enough)
pytestmark = ONE_ENGINE
MiB = 1 << 20


def _fields(method: str, path: str, *extra: tuple[bytes, bytes]) -> list[tuple[bytes, bytes]]:
    return [
        (b":method", method.encode()),
        (b":scheme", b"http"),
        (b":authority", b"relay"),
        (b":path", path.encode()),
        *extra,
    ]


def _recording(original: Callable[..., Any], keys: list[str]) -> Callable[..., Any]:
    def add(key: str, *args: Any) -> Any:
        keys.append(key)
        return original(key, *args)

    return add


async def test_a_stream_reset_in_the_read_that_opened_it_never_runs(
    relay: Relay, monkeypatch: pytest.MonkeyPatch
) -> None:
    """HEADERS and RST_STREAM in one write: the request is never routed (no task, no party)."""
    joined: list[str] = []
    registry = relay.hub.registry
    monkeypatch.setattr(registry, "add_receiver", _recording(registry.add_receiver, joined))
    with trio.fail_after(10):
        client = await H2Client.connect(relay.host, relay.port)
        stream_id = client.h2.get_next_available_stream_id()
        client.h2.send_headers(stream_id, _fields("GET", "/never"), end_stream=True)
        client.h2.reset_stream(stream_id)
        await client.flush()
        later = await client.request("GET", "/later", end=False)  # (a receiver that does run)
        await relay.wait_for_pipe("/later", receivers=1)
        await client.reset(later)
        await relay.wait_until_free("/later")
        await client.aclose()
    assert joined == ["/later"]


async def test_a_reset_stream_still_served_counts_against_the_stream_cap(start_relay: StartRelay) -> None:
    """128 waiting receivers; one is reset and, in the same write, stream 129 opens: h2 counts 127
    open streams, but the reset one's task still runs, so 129 is refused (REFUSED_STREAM)."""
    relay = await start_relay(client_max_pending=0)
    with trio.fail_after(20):
        client = await H2Client.connect(relay.host, relay.port)
        ids = [await client.request("GET", f"/cap-{index}") for index in range(http2_module.MAX_STREAMS)]
        await relay.hub.wait_for(lambda: relay.hub.registry.pending_count == http2_module.MAX_STREAMS)
        client.h2.reset_stream(ids[0])
        extra = client.h2.get_next_available_stream_id()
        client.h2.send_headers(extra, _fields("GET", "/version"), end_stream=True)
        client.responses[extra] = type(client.responses[ids[0]])()
        await client.flush()
        refused = await client.until_over(extra)
        assert refused.reset == h2.errors.ErrorCodes.REFUSED_STREAM
        await relay.hub.wait_for(lambda: relay.hub.registry.pending_count == http2_module.MAX_STREAMS - 1)
        again = await client.request("GET", "/version", end=True)
        answered = await client.until_over(again)
        assert (answered.status, answered.ended, answered.reset) == (200, True, None)
        await client.aclose()


async def test_replies_a_client_never_reads_are_capped_and_their_uploads_dropped(
    start_relay: StartRelay,
) -> None:
    """100 page requests with our window shut: 64 replies (--client-max-pages) wait for it, the rest
    are refused with CLIENT_PAGE_LIMIT; 16 MiB of DATA on the waiting ones (twice the connection's
    window) all go through, since a body nobody reads is dropped and its window given back."""
    relay = await start_relay()
    with trio.fail_after(30):
        client = await H2Client.connect(relay.host, relay.port, window=0, auto_ack=False)
        ids = [await client.request("GET", "/") for _ in range(100)]
        await client.until(lambda: all(client.responses[i].status for i in ids))
        statuses = [client.responses[i].status for i in ids]
        assert statuses.count(200) == relay.config.client_max_pages == 64
        refused = [client.responses[i] for i in ids if client.responses[i].status == 429]
        assert len(refused) == 36
        assert {r.headers["x-pipe-error"] for r in refused} == {"CLIENT_PAGE_LIMIT"}
        waiting = [i for i in ids if client.responses[i].status == 200]
        for stream_id in waiting:
            await client.send_body(stream_id, b"u" * (256 << 10), end=False)
        assert sum(client.sent.values()) == 16 * MiB
        await client.aclose()


async def test_our_hpack_table_stays_at_4096_whatever_the_client_offers(relay: Relay) -> None:
    """The client allows 2^31-1 bytes of table and sends 20 new Origins of 290 bytes (reflected in
    the replies): its decoder's table mirrors our encoder's, which keeps 4,096 at most."""
    with trio.fail_after(20):
        client = await H2Client.connect(relay.host, relay.port)
        client.h2.update_settings({h2.settings.SettingCodes.HEADER_TABLE_SIZE: (1 << 31) - 1})
        await client.flush()
        for index in range(20):
            origin = f"https://{index:04d}{'o' * 270}.example"
            stream_id = await client.request("GET", "/version", ("origin", origin), end=True)
            answered = await client.until_over(stream_id)
            assert answered.headers["access-control-allow-origin"] == origin
        table = client.h2.decoder.header_table
        held = sum(len(name) + len(value) + 32 for name, value in table.dynamic_entries)
        assert 3000 < held <= 4096, held  # (6,440 with no cap)
        await client.aclose()


class _Recording(http2_module.Http2Connection):
    """The server's HTTP/2 connection, noting the most bytes it ever held for its client."""

    peak = 0

    def flush(self) -> None:
        super().flush()
        _Recording.peak = max(_Recording.peak, self.buffered)


async def test_a_client_that_reads_none_of_our_answers_is_not_read_either(
    start_relay: StartRelay, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the control-frame budget out of the way, a PING flood that never reads (a small receive
    buffer, so the kernels hold little): past OUT_PAUSE bytes waiting for it, we stop reading it,
    and close it when nothing moved for WRITE_TIMEOUT (2 s here)."""
    monkeypatch.setattr(http2_module, "WRITE_TIMEOUT", 2.0)
    monkeypatch.setattr(respond_module, "Http2Connection", _Recording)
    relay = await start_relay(flood_limits=FloodLimits(control=(1e12, 1e12)))
    command = [sys.executable, "-m", "loadtests.h2attacks", "ping", "--port", str(relay.port)]
    with trio.fail_after(60):
        done = await trio.run_process(
            [*command, "--seconds", "40", "--no-read", "--rcvbuf", "4096"],
            cwd=ROOT,
            capture_stdout=True,
            check=False,
        )
    ending = json.loads(done.stdout)
    assert ending["closed_by_server"] and ending["seconds"] < 20, ending
    assert http2_module.OUT_PAUSE < _Recording.peak < http2_module.OUT_PAUSE + 64 * 1024, _Recording.peak


async def test_the_server_announces_its_limits(relay: Relay) -> None:
    """SETTINGS: the header list a request may have (as over HTTP/1.1), the streams, the frame size."""
    with trio.fail_after(10):
        client = await H2Client.connect(relay.host, relay.port)
        stream_id = await client.request("GET", "/version", end=True)
        await client.until_over(stream_id)  # (the server's SETTINGS came before its reply)
        await client.aclose()
    settings = client.h2.remote_settings
    assert settings.max_header_list_size == relay.config.max_head_size == 64 * 1024
    assert settings.max_concurrent_streams == http2_module.MAX_STREAMS == 128
    assert settings.max_frame_size == MAX_FRAME


async def test_a_reply_waiting_for_its_window_ends_with_its_connection(engine: str) -> None:
    """A page's reply waits for the client's window when the client spends a budget (a PING flood):
    the reply's task ends with the connection, and the server goes on serving. (It once spun for
    ever: its wait for room returned at once on the shut connection, before its streams were told.)
    The server is a process of its own here, so that a spin would fail the health check below
    instead of stalling this test's own loop."""
    with trio.fail_after(20):
        async with cli_server("--host", "127.0.0.1", "--http-port", "0", "--engine", engine) as (_, line):
            port = int(line.rsplit(":", 1)[1])
            client = await H2Client.connect("127.0.0.1", port, window=0, auto_ack=False)
            stream_id = await client.request("GET", "/", end=True)
            await client.until(lambda: client.responses[stream_id].status == 200)  # (its DATA waits)
            await client.stream.send_all(frame(PING, 0, 0, b"12345678") * 1100)  # (past the burst)
            await client.until(lambda: client.goaway is not None)
            assert client.goaway is not None
            assert client.goaway.error_code == h2.errors.ErrorCodes.ENHANCE_YOUR_CALM
            assert client.goaway.additional_data == b"control"
            await client.aclose()
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            await stream.send_all(b"GET /version HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            answer = b""
            while chunk := await stream.receive_some(4096):
                answer += chunk
            await stream.aclose()
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
