# The attack review's browser cases in a real Chromium: a disposition trick or a header injected
# through a form part never gets a page shown inline; the browser downloads it, as the policy says.
from __future__ import annotations

from pathlib import Path

import pytest
import trio
from playwright.sync_api import Error as PlaywrightError

from tests.browser.conftest import chromium_page, in_browser
from tests.conftest import CurlResult, Relay, curl, curl_into

PAGE = b"<html><head><title>shown</title></head><body><script>document.title='ran'</script>hi</body></html>"
BOUNDARY = "b0undaryXx"


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
async def test_a_malformed_disposition_never_shows_the_body_inline(
    relay: Relay, tmp_path: Path, disposition: str
) -> None:
    got: dict[str, CurlResult] = {}
    async with trio.open_nursery() as nursery:
        nursery.start_soon(
            lambda: curl_into(
                got,
                "s",
                "-T",
                "-",
                "-H",
                "Content-Type: text/html",
                "-H",
                f"Content-Disposition: {disposition}",
                f"{relay.url}/trick",
                stdin=PAGE,
            )
        )
        await relay.wait_for_pipe("/trick", sender=True)
        seen = await in_browser(lambda: _navigate(f"{relay.url}/trick"))
    assert "title" not in seen, seen  # never shown as a page
    assert seen["bytes"] == PAGE
    if disposition.startswith("filename="):
        assert seen["suggested"] == "shown.html"
    assert got["s"].stdout.decode().splitlines()[-1] == "[INFO] Transfer complete."


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
    got: dict[str, CurlResult] = {}
    async with trio.open_nursery() as nursery:
        nursery.start_soon(
            lambda: curl_into(
                got,
                "s",
                "--data-binary",
                "@-",
                "-H",
                f"Content-Type: multipart/form-data; boundary={BOUNDARY}",
                f"{relay.url}/form-lf",
                stdin=form,
            )
        )
        await relay.wait_for_pipe("/form-lf", sender=True)
        seen = await in_browser(lambda: _navigate(f"{relay.url}/form-lf?download"))
    assert "title" not in seen, seen
    assert seen["suggested"] == "page.html"
    assert seen["bytes"] == PAGE
    assert (await curl(f"{relay.url}/version")).stdout == b"pipe-relay 0.1.0\n"
