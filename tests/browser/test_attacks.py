# The attack review's browser cases in a real Chromium: a disposition trick or a header injected
# through a form part never gets a page shown inline; the browser downloads it, as the policy says.
from __future__ import annotations

from pathlib import Path

import pytest
import trio
from playwright.sync_api import Error as PlaywrightError

from tests.browser.conftest import chromium_page, in_browser
from tests.clients import CurlResult, Relay, curl, curl_into

PAGE = b"<html><head><title>shown</title></head><body><script>document.title='ran'</script>hi</body></html>"
BOUNDARY = "b0undaryXx"


async def _sent_then_opened(
    relay: Relay, key: str, url: str, *curl_args: str, body: bytes
) -> dict[str, object]:
    """A curl sender waits on `key` first; then Chromium opens `url` (the receiver). What Chromium
    did with it (`_navigate`); the sender must have completed."""
    got: dict[str, CurlResult] = {}
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: curl_into(got, "s", *curl_args, f"{relay.url}{key}", stdin=body))
        await relay.wait_for_pipe(key, sender=True)
        seen = await in_browser(lambda: _navigate(url))
    assert got["s"].stdout.decode().splitlines()[-1] == "[INFO] Transfer complete."
    return seen


def _navigate(url: str) -> dict[str, object]:
    """Open `url` in Chromium; what happened: a download (its name, its bytes) or a shown page."""
    seen: dict[str, object] = {}
    with chromium_page() as (page, log):
        try:
            with page.expect_download(timeout=15_000) as download:
                try:
                    page.goto(url, timeout=15_000)
                except PlaywrightError as exc:  # Chromium answers a download with an aborted navigation
                    seen["navigation"] = str(exc).splitlines()[0]
            seen["suggested"] = download.value.suggested_filename
            seen["bytes"] = Path(download.value.path()).read_bytes()
        except PlaywrightError:
            seen["title"] = page.title()  # no download: the body was shown as a page
        seen["problems"] = log.errors
    return seen


@pytest.mark.parametrize("disposition", ['"inline"', "inline,", "inline x", "filename=shown.html"])
async def test_a_malformed_disposition_never_shows_the_body_inline(relay: Relay, disposition: str) -> None:
    seen = await _sent_then_opened(
        relay,
        "/trick",
        f"{relay.url}/trick",
        "-T",
        "-",
        "-H",
        "Content-Type: text/html",
        "-H",
        f"Content-Disposition: {disposition}",
        body=PAGE,
    )
    assert "title" not in seen, seen  # never shown as a page
    assert seen["bytes"] == PAGE
    if disposition.startswith("filename="):
        assert seen["suggested"] == "shown.html"


async def test_a_bare_lf_in_a_form_part_cannot_break_the_head_chromium_reads(relay: Relay) -> None:
    """The part's charset carried a bare LF: the head ended there for Chromium, `?download`'s
    disposition and nosniff fell into the body and the page was shown. Now the head is whole."""
    form = (
        (
            f"--{BOUNDARY}\r\n"
            'Content-Disposition: form-data; name="f"; filename="page.html"\r\n'
            'Content-Type: text/html; charset="utf-8\n"\r\n\r\n'
        ).encode()
        + PAGE
        + f"\r\n--{BOUNDARY}--\r\n".encode()
    )
    content_type = f"Content-Type: multipart/form-data; boundary={BOUNDARY}"
    url = f"{relay.url}/form-lf?download"
    seen = await _sent_then_opened(
        relay, "/form-lf", url, "--data-binary", "@-", "-H", content_type, body=form
    )
    assert "title" not in seen, seen
    assert seen["suggested"] == "page.html"
    assert seen["bytes"] == PAGE
    assert (await curl(f"{relay.url}/version")).stdout == b"pipe-relay 0.1.0\n"
