# Pipe keys as RFC 3986 compares them: curl's lower-case escapes meet a browser's upper-case ones, and an
# escaped unreserved character meets the character. Invariant: real curl on both sides, bytes by sha256.
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
import trio

from tests.clients import CurlResult, RawClient, Relay, curl, curl_into

ONE_ENGINE = pytest.mark.parametrize("engine", ["buffer"])  # (the key is what is tested, not the bytes' path)
pytestmark = ONE_ENGINE
NON_ASCII = "/%E6%97%A5%E6%9C%AC/f%C3%BC"


@pytest.mark.parametrize(
    ("sent", "asked", "key"),
    [
        ("/日本/fü", NON_ASCII, NON_ASCII),  # (curl sends `/%e6%97%a5...`, a browser `/%E6%97%A5...`)
        (NON_ASCII.lower(), NON_ASCII, NON_ASCII),
        ("/%7ejo%2dx", "/~jo-x", "/~jo-x"),
    ],
    ids=["non-ascii", "lower-case-escapes", "unreserved"],
)
@pytest.mark.parametrize("flag", ["--http1.1", "--http2-prior-knowledge"], ids=["http/1.1", "h2c"])
async def test_a_sender_meets_a_receiver_that_escapes_otherwise(
    relay: Relay, tmp_path: Path, sent: str, asked: str, key: str, flag: str
) -> None:
    body = os.urandom(100_000)
    out = tmp_path / "received"
    results: dict[str, CurlResult] = {}
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(curl_into, results, "receiver", flag, "-o", str(out), relay.url + asked)
            await relay.wait_for_pipe(key, receivers=1)
            sent_result = await curl(flag, "-T", "-", relay.url + sent, stdin=body)
    assert sent_result.stdout.endswith(b"[INFO] Transfer complete.\n"), sent_result
    assert results["receiver"].returncode == 0, results["receiver"].stderr
    assert hashlib.sha256(out.read_bytes()).digest() == hashlib.sha256(body).digest()


async def test_letters_case_and_a_trailing_slash_are_the_keys_own(relay: Relay) -> None:
    """Only escapes are normalized: `/Case/` and `/case` are other pipes than `/case/`."""
    with trio.fail_after(10):
        receiver = await RawClient.connect(relay)
        await receiver.send(b"GET /case/ HTTP/1.1\r\nHost: t\r\n\r\n")
        await relay.wait_for_pipe("/case/", receivers=1)
        assert relay.hub.registry.snapshot("/Case/") is None and relay.hub.registry.snapshot("/case") is None
        await receiver.aclose()
