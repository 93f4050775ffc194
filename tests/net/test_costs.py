# What a client can make the server hold: a head of many headers keeps only the few the server reads.
# RSS is read from /proc with glibc's free memory trimmed (the server runs in this process); bound far above.
from __future__ import annotations

import ctypes
import gc
from pathlib import Path

import hpack
import pytest
import trio

from loadtests.attack_plans import END_HEADERS, END_STREAM, HEADERS, frame, opening, request_block
from pipe_relay.core.heads import kept_headers
from tests.clients import RawClient, StartRelay

HEADERS_PER_HEAD = 100
HEAD_HEADERS = b"".join(b"X-Filler-%02d: %s\r\n" % (i, b"v" * 600) for i in range(HEADERS_PER_HEAD - 1))


def _rss_bytes() -> int:
    """VmRSS once garbage is collected and glibc's free memory is trimmed: the pages that hold live data.

    Untrimmed, RSS counts free memory too, and the server keeps it (`tune_malloc`: no trim below
    128 MiB): what an earlier test (or the other engine's case) freed is reused without RSS growing (the
    splice case read 0.0 MiB after the buffer one, with 58 MiB held), and transients freed before the
    reading count. Still in the figure: the test's own 1,000 clients (0.6 MiB); not in it: what earlier
    tests left free in Python's small-object arenas and this test reuses (4.5 MiB after three test files)."""
    gc.collect()
    trim = getattr(ctypes.CDLL(None), "malloc_trim", None)  # (glibc; elsewhere RSS is read as it is)
    if trim is not None:
        trim(0)
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


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads RSS from /proc")
@pytest.mark.parametrize("engine", ["buffer"])  # (no byte moves: one engine is enough)
async def test_1000_waiting_http2_heads_of_60_kib_hold_under_50_mib(
    start_relay: StartRelay, raw_clients: list[RawClient], many_descriptors: None
) -> None:
    """The same over h2c: each client's first packet is the preface, SETTINGS and a request of 60 KiB
    of headers (in one read); a waiting receiver keeps what it needs, not that read."""
    relay = await start_relay(client_max_pending=0, client_max_connections=0)
    filler = [
        hpack.NeverIndexedHeaderTuple(f"x-filler-{i:02d}", "v" * 600) for i in range(HEADERS_PER_HEAD - 1)
    ]
    fields = hpack.Encoder().encode(filler, huffman=False)  # (no table entry: the same bytes fit any block)
    with trio.fail_after(60):
        before = _rss_bytes()
        for index in range(1000):
            client = await RawClient.connect(relay)
            raw_clients.append(client)
            block = request_block(f"/heavy2-{index}") + fields
            await client.send(opening() + frame(HEADERS, END_STREAM | END_HEADERS, 1, block))
        await relay.hub.wait_for(lambda: relay.hub.registry.pending_count == 1000)
        grown = _rss_bytes() - before
    assert len(block) * 1000 > 50 << 20  # what arrived is more than the bound: it cannot all be held
    assert grown < 50 << 20, f"RSS grew {grown / 2**20:.1f} MiB for 1000 waiting HTTP/2 heads"
