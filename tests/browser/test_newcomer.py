# What a newcomer meets in the web UI: a send that says it waits for its receiver, the server's own
# receiver limit, a refused send, curl's text shown as text, and non-ASCII paths between curl and Chromium.
from __future__ import annotations

import hashlib
import os
import re
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
from playwright.sync_api import Response

from tests.browser.bigfiles import DIGEST_STEP, OPFS_DIGESTS
from tests.browser.conftest import OPFS_SAVE_PICKER, chromium_page, in_browser, to_trio, to_trio_async
from tests.clients import CurlResult, Relay, StartRelay, curl, curl_into, raw_exchange

# what is shown here is the page's doing, not the byte engine's: one engine is enough
pytestmark = pytest.mark.parametrize("engine", ["buffer"])

PATH = "日本/データ.bin"
LOWER = "/%e6%97%a5%e6%9c%ac/%e3%83%87%e3%83%bc%e3%82%bf.bin"  # as curl writes it
UPPER = LOWER.upper().replace(".BIN", ".bin")  # as Chromium writes it, and the pipe's key
AVERAGE = re.compile(r"[0-9.]+ (B|KiB|MiB|GiB)/s \(average\)")


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def test_a_send_waits_for_its_receiver_then_curl_takes_it_on_a_non_ascii_path(
    relay: Relay, screenshots: Path, tmp_path: Path
) -> None:
    """Chromium sends to /日本/データ.bin (upper-case escapes) before anyone receives; curl receives
    with lower-case escapes. Until curl comes, the page says it waits instead of counting bytes."""
    upload = tmp_path / "upload.bin"
    upload.write_bytes(os.urandom(3 << 20))
    out = tmp_path / "out.bin"
    got: dict[str, CurlResult] = {}
    seen: dict[str, Any] = {}

    def send() -> list[str]:
        with chromium_page() as (page, log):
            page.goto(f"{relay.url}/")
            page.set_input_files("#files", str(upload))
            page.fill("#send-path", PATH)
            seen["url"] = page.input_value("#send-url")
            page.click("#send-start")
            page.wait_for_selector("#send-state.waiting")
            seen["waiting"] = [page.text_content(f"#send-{id}") for id in ("state", "bytes", "rate")]
            page.screenshot(path=str(screenshots / "newcomer-send-waiting.png"), full_page=True)
            to_trio_async(curl_into, got, "r", "-v", "-o", str(out), f"{relay.url}/{PATH}")
            page.wait_for_selector("#send-state.done")
            seen["done"] = [page.text_content(f"#send-{id}") for id in ("state", "bytes", "rate")]
            page.screenshot(path=str(screenshots / "newcomer-send-done.png"), full_page=True)
            return log.csp + log.errors

    problems = await in_browser(send, limit=60)
    assert seen["url"] == f"{relay.url}{UPPER}"
    assert f"> GET {LOWER} HTTP/1.1" in got["r"].stderr.decode()
    assert got["r"].returncode == 0
    assert sha(out.read_bytes()) == sha(upload.read_bytes())
    assert seen["waiting"] == [
        "waiting for 1 receiver(s)",
        "nothing yet: waiting for 1 receiver(s)",
        "-",
    ]
    state, sent, rate = seen["done"]
    assert (state, sent) == ("done", "3.0 MiB of 3.0 MiB (100%)")
    assert AVERAGE.fullmatch(rate), rate
    assert problems == []


async def test_curl_sends_to_the_page_on_a_non_ascii_path_and_raw_utf8_is_refused(
    relay: Relay, screenshots: Path, tmp_path: Path
) -> None:
    """curl's lower-case escapes meet the page's upper-case ones. A request line with the path's raw
    UTF-8 bytes is not HTTP/1.1 (RFC 9112: the target is ASCII): the server answers 400 and the
    waiting page is not disturbed."""
    upload = tmp_path / "upload.bin"
    upload.write_bytes(os.urandom((1 << 20) + 5))
    raw_path = ("/" + PATH).encode()
    seen: dict[str, Any] = {}

    async def raw_utf8_then_curl() -> None:
        await relay.wait_for_pipe(UPPER, receivers=1)
        seen["raw"] = [
            await raw_exchange(
                relay, b"PUT " + raw_path + b" HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi"
            ),
            await raw_exchange(relay, b"GET " + raw_path + b" HTTP/1.1\r\nHost: x\r\n\r\n"),
        ]
        snapshot = relay.hub.registry.snapshot(UPPER)
        seen["after_raw"] = None if snapshot is None else (snapshot.sender, snapshot.receivers)
        seen["sent"] = await curl("-v", "-T", str(upload), f"{relay.url}/{PATH}")

    def receive() -> list[str]:
        with chromium_page(init_script=OPFS_SAVE_PICKER) as (page, log):
            fetched: list[str] = []
            page.on("request", lambda request: fetched.append(request.url))
            page.goto(f"{relay.url}/")
            page.click("#tab-receive")
            page.fill("#recv-path", PATH)
            page.click("#recv-start")
            page.wait_for_selector("#recv-state.waiting >> text=waiting for the sender")
            to_trio_async(raw_utf8_then_curl)
            page.wait_for_selector("#recv-state.done")
            page.screenshot(path=str(screenshots / "newcomer-receive-non-ascii.png"), full_page=True)
            seen["fetched"] = [url for url in fetched if "/%" in url]
            seen["file"] = page.evaluate(OPFS_DIGESTS, DIGEST_STEP)
            seen["rate"] = page.text_content("#recv-rate")
            return log.csp + log.errors

    problems = await in_browser(receive, limit=60)
    for answer in seen["raw"]:
        assert answer.startswith(b"HTTP/1.1 400 Bad Request\r\n")
        assert b"\r\nX-Pipe-Error: BAD_REQUEST\r\n" in answer
        assert answer.endswith(b"\r\n\r\n[ERROR] Malformed request: illegal request line.\n")
    assert seen["after_raw"] == (False, 1)  # still the page alone, waiting
    sent = seen["sent"]
    assert sent.returncode == 0
    assert f"> PUT {LOWER} HTTP/1.1" in sent.stderr.decode()
    assert seen["fetched"] == [f"{relay.url}{UPPER}"]
    assert seen["file"] == {"size": (1 << 20) + 5, "digests": [sha(upload.read_bytes())]}
    assert AVERAGE.fullmatch(seen["rate"]), seen["rate"]
    assert problems == []


TEXT_CASES = [
    (b"hello\n", "hello\n"),  # `echo hello | curl -T -`
    (b"a" * (64 << 10), "a" * (64 << 10)),  # 64 KiB of any type: still shown
    (b"a" * ((64 << 10) + 1), ""),  # one byte more: only saved
    ("ünïcode ✓\n".encode() + b"\xff", ""),  # not UTF-8: only saved
]


async def test_a_small_utf8_body_is_shown_as_text_whatever_its_type(relay: Relay, screenshots: Path) -> None:
    """curl -T - sends no type (the receiver gets application/octet-stream): up to 64 KiB of valid
    UTF-8 is shown as text all the same, and saved too."""
    seen: list[tuple[str, str | None, str | None, bool]] = []
    types: list[str | None] = []

    def receive() -> list[str]:
        with chromium_page(init_script=OPFS_SAVE_PICKER) as (page, log):

            def on_response(response: Response) -> None:
                if response.url.endswith("/curl-text"):
                    types.append(response.headers.get("content-type"))

            page.on("response", on_response)
            page.goto(f"{relay.url}/?path=curl-text")
            for i, (body, _) in enumerate(TEXT_CASES):
                page.click("#recv-start")
                page.wait_for_selector("#recv-state.waiting >> text=waiting for the sender")
                sent = to_trio_async(partial(curl, "-T", "-", f"{relay.url}/curl-text", stdin=body))
                assert sent.returncode == 0
                page.wait_for_selector("#recv-state.done")
                if i == 0:
                    page.screenshot(path=str(screenshots / "newcomer-receive-curl-text.png"), full_page=True)
                seen.append(
                    (
                        page.input_value("#recv-text"),
                        page.text_content("#recv-name"),
                        page.text_content("#recv-state"),
                        page.is_visible("#recv-text-box"),
                    )
                )
            return log.csp + log.errors + [d.url for d in log.downloads]

    problems = await in_browser(receive, limit=60)
    assert types == ["application/octet-stream"] * len(TEXT_CASES)
    sizes = ["6 B", "64.0 KiB", "64.0 KiB", "15 B"]
    for (body, text), size, (shown, name, state, visible) in zip(TEXT_CASES, sizes, seen, strict=True):
        assert (shown, visible) == (text, bool(text)), body[:20]
        assert name == f"Saved out.bin, {size}."
        assert state == "done"
    assert problems == []


async def test_receivers_beyond_the_server_limit_and_a_refused_send(relay: Relay, screenshots: Path) -> None:
    """The Receivers boxes go up to the server's --max-receivers (256 here, not 1000); beyond it the
    page says so and sends nothing. A send the server refuses never reads as sent."""
    seen: dict[str, Any] = {}

    def visit() -> list[str]:
        with chromium_page() as (page, log):
            page.goto(f"{relay.url}/")
            seen["max"] = [page.get_attribute(f"#{id}", "max") for id in ("send-n", "recv-n")]
            page.check("input[name=mode][value=text]")
            page.fill("#text", "second")
            page.fill("#send-path", "taken")
            page.fill("#send-n", "300")
            page.click("#send-start")
            page.wait_for_selector("#send-state.error")
            seen["limit"] = page.text_content("#send-state")
            snapshot = to_trio(relay.hub.registry.snapshot, "/taken")
            seen["after_limit"] = None if snapshot is None else (snapshot.sender, snapshot.receivers)
            page.fill("#send-n", "1")
            page.click("#send-start")
            page.wait_for_selector("#send-state.error:has-text('[ERROR]')")
            seen["refused"] = [page.text_content(f"#send-{id}") for id in ("state", "bytes", "rate")]
            seen["fill"] = page.eval_on_selector("#send-fill", "el => el.style.width + ' ' + el.className")
            page.screenshot(path=str(screenshots / "newcomer-send-refused.png"), full_page=True)
            return log.csp + log.errors

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            got: dict[str, CurlResult] = {}
            nursery.start_soon(partial(curl_into, got, "s", "-T", "-", f"{relay.url}/taken", stdin=b"first"))
            await relay.wait_for_pipe("/taken", sender=True)
            problems = await in_browser(visit)
            received = await curl(f"{relay.url}/taken")
    assert seen["max"] == ["256", "256"]
    assert seen["limit"] == "receivers: 1 to 256 on this server"
    assert seen["after_limit"] == (True, 0)  # only curl's send: the page sent nothing
    assert seen["refused"] == [
        "[ERROR] Path '/taken' already has a sender connected.",
        "nothing: the server refused the send",
        "-",
    ]
    assert seen["fill"] == "0px fill bad"
    assert received.stdout == b"first" and got["s"].returncode == 0
    assert problems == []


async def test_the_page_takes_the_receiver_limit_from_the_server(start_relay: StartRelay) -> None:
    relay = await start_relay(max_receivers=5)
    with trio.fail_after(10):
        page = await curl(f"{relay.url}/")
    assert page.stdout.count(b' max="5" ') == 2
    assert b' data-max-receivers="5">' in page.stdout
