# The web UI over HTTPS (Chromium negotiates HTTP/2 by ALPN): it sends and receives files, sha256 checked.
# Invariant: the other side is curl (over plain HTTP or TLS); the page reports no CSP violation or error.
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import trio

from tests.browser.conftest import NO_SAVE_PICKER, chromium_page, in_browser, to_trio_async
from tests.clients import CurlResult, StartRelay, TlsFiles, curl, curl_into

PROTOCOL = "performance.getEntriesByType('navigation')[0].nextHopProtocol"


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def test_the_ui_over_https_sends_a_file_to_a_plain_http_receiver(
    start_relay: StartRelay, tls_files: TlsFiles, tmp_path: Path, screenshots: Path
) -> None:
    relay = await start_relay(**tls_files.overrides())
    upload = tmp_path / "over-tls.bin"
    upload.write_bytes(os.urandom(3 << 20))
    got: dict[str, CurlResult] = {}
    seen: dict[str, str] = {}

    def send() -> list[str]:
        with chromium_page(trust_any_certificate=True) as (page, log):
            page.goto(f"{relay.tls_url}/")
            seen["protocol"] = page.evaluate(PROTOCOL)
            page.set_input_files("#files", str(upload))
            page.fill("#send-path", "ui-tls")
            page.click("#send-start")
            # (over HTTP/2 Chromium shows no response before its upload ends: the bar stops at the
            # stream's window, 1 MiB, until a receiver comes; the status lines come at the end)
            to_trio_async(relay.wait_for_pipe, "/ui-tls")
            to_trio_async(curl_into, got, "r", f"{relay.url}/ui-tls")
            page.wait_for_selector("#send-state.done")
            seen["bytes"] = page.text_content("#send-bytes") or ""
            page.screenshot(path=str(screenshots / "ui-https-send-done.png"), full_page=True)
            return log.csp + log.errors

    problems = await in_browser(send, limit=90)
    assert seen["protocol"] == "h2"
    assert seen["bytes"] == "3.0 MiB of 3.0 MiB (100%)"
    assert got["r"].returncode == 0 and _sha(got["r"].stdout) == _sha(upload.read_bytes())
    assert problems == []


async def test_the_ui_over_https_receives_a_file_curl_sent_over_tls(
    start_relay: StartRelay, tls_files: TlsFiles, tmp_path: Path, screenshots: Path
) -> None:
    relay = await start_relay(**tls_files.overrides())
    data = os.urandom((2 << 20) + 77)
    saved = tmp_path / "saved.bin"
    sent: dict[str, CurlResult] = {}

    async def send() -> None:
        await relay.wait_for_pipe("/ui-tls-recv", receivers=1)
        sent["s"] = await curl(
            "--cacert",
            str(tls_files.ca_pem),
            "-T",
            "-",
            "-H",
            "Content-Disposition: attachment; filename=tls.bin",
            f"{relay.tls_url}/ui-tls-recv",
            stdin=data,
        )

    def receive() -> tuple[str, list[str]]:  # (the browser's own download: headless has no save picker)
        with chromium_page(trust_any_certificate=True, init_script=NO_SAVE_PICKER) as (page, log):
            page.goto(f"{relay.tls_url}/")
            protocol = page.evaluate(PROTOCOL)
            page.click("#tab-receive")
            page.fill("#recv-path", "ui-tls-recv")
            with page.expect_download() as download:
                page.click("#recv-start")
                to_trio_async(send)  # (the browser's download manager takes the body)
            download.value.save_as(saved)
            page.screenshot(path=str(screenshots / "ui-https-receive-done.png"), full_page=True)
            return protocol, log.csp + log.errors

    with trio.fail_after(90):
        protocol, problems = await in_browser(receive, limit=90)
    assert protocol == "h2"
    assert sent["s"].returncode == 0 and sent["s"].stdout.endswith(b"[INFO] Transfer complete.\n")
    assert _sha(saved.read_bytes()) == _sha(data)
    assert problems == []
