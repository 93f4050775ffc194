# What a client can make the server hold: a head of many headers keeps only the few the server reads.
# RSS is read from /proc (the server runs in this process); bounds are far above the measured cost.
from __future__ import annotations

from pathlib import Path

import pytest
import trio

from pipe_relay.core.heads import kept_headers
from tests.clients import RawClient, StartRelay

HEADERS_PER_HEAD = 100
HEAD_HEADERS = b"".join(b"X-Filler-%02d: %s\r\n" % (i, b"v" * 600) for i in range(HEADERS_PER_HEAD - 1))


def _rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_only_the_headers_the_server_reads_are_kept() -> None:
    raw = [
        (b"Host", b"h"),
        (b"X-Filler", b"x"),
        (b"Content-Length", b"5"),
        (b"X-Piping", b"m" * 8192),
        (b"X-Hoody-Pipe", b"m" * 8193),
        (b"User-Agent", b"curl/8"),
        (b"Cookie", b"secret"),
        (b"Transfer-Encoding", b"c" * 9000),
    ]
    assert kept_headers(raw) == (
        ("host", "h"),
        ("content-length", "5"),
        ("x-piping", "m" * 8192),
        ("user-agent", "curl/8"),
        ("transfer-encoding", "c" * 9000),  # framing headers are never dropped: the strict checks see them
    )


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads RSS from /proc")
async def test_1000_waiting_heads_of_100_headers_hold_under_50_mib(
    start_relay: StartRelay, raw_clients: list[RawClient], many_descriptors: None
) -> None:
    relay = await start_relay(client_max_pending=0, client_max_connections=0)
    with trio.fail_after(60):
        before = _rss_bytes()
        for index in range(1000):
            client = await RawClient.connect(relay)
            raw_clients.append(client)
            await client.send(b"GET /heavy-%d HTTP/1.1\r\nHost: t\r\n" % index + HEAD_HEADERS + b"\r\n")
        await relay.hub.wait_for(lambda: relay.hub.registry.pending_count == 1000)
        grown = _rss_bytes() - before
    head_size = len(HEAD_HEADERS) + 40
    assert head_size * 1000 > 50 << 20  # what arrived is more than the bound: it cannot all be held
    assert grown < 50 << 20, f"RSS grew {grown / 2**20:.1f} MiB for 1000 waiting heads"
