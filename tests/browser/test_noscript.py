# The /noscript form in Chromium with JavaScript disabled: text and file mode both reach a curl
# receiver byte for byte; the page sanitizes ?path= and blocks every script with its CSP.
from __future__ import annotations

import hashlib
from pathlib import Path

import trio

from tests.browser.conftest import chromium_page, in_browser, require_chromium
from tests.clients import CurlResult, Relay, curl, curl_into, parse_head


def _submit(url: str, *, text: str | None, file: Path | None, shot: Path) -> str:
    """Open the form with JavaScript off, fill it, submit; the sender's status lines must complete in
    the page's own frame, under the form, with the page (and its way back) still there. Returns them."""
    with chromium_page(javascript=False) as (page, _):
        page.goto(url)
        if text is not None:
            page.fill("textarea[name=text]", text)
        if file is not None:
            page.set_input_files("input[name=file]", str(file))
        page.screenshot(path=str(shot))
        page.click("button[type=submit]")
        status = page.frame_locator("#status").locator("body")
        status.get_by_text("[INFO] Transfer complete.").wait_for()
        page.screenshot(path=str(shot.with_name(shot.stem + "-sent.png")))
        assert page.get_attribute("footer a[href$='/noscript']", "href") == "/noscript"
        assert page.is_visible("button[type=submit]")  # the form is still here: send again
        return status.inner_text()


async def test_noscript_text_mode(relay: Relay, screenshots: Path) -> None:
    require_chromium()
    text = "hello from a browser without JavaScript ✓"
    got: dict[str, CurlResult] = {}
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(curl_into, got, "r", "-i", f"{relay.url}/ns-text")
            await relay.wait_for_pipe("/ns-text", receivers=1)
            url = f"{relay.url}/noscript?path=ns-text&mode=text"
            lines = await in_browser(
                lambda: _submit(url, text=text, file=None, shot=screenshots / "noscript-text.png")
            )
    head, _, body = got["r"].stdout.partition(b"\r\n\r\n")
    _, headers, _ = parse_head(head + b"\r\n\r\n")
    assert body.decode() == text
    assert lines == (
        "[INFO] Streaming to 1 receiver(s)...\n[INFO] Upload complete.\n[INFO] Transfer complete.\n"
    )  # in the page's frame, under the form and its links
    assert headers["content-type"] == "text/plain; charset=utf-8"
    assert headers["content-disposition"] == 'form-data; name="text"'


async def test_noscript_file_mode(relay: Relay, screenshots: Path, tmp_path: Path) -> None:
    require_chromium()
    upload = tmp_path / "photo.bin"
    upload.write_bytes(bytes(range(256)) * 4000)
    got: dict[str, CurlResult] = {}
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(curl_into, got, "r", "-i", f"{relay.url}/ns-file")
            await relay.wait_for_pipe("/ns-file", receivers=1)
            url = f"{relay.url}/noscript?path=/ns-file"  # leading slash: stripped by the page
            await in_browser(
                lambda: _submit(url, text=None, file=upload, shot=screenshots / "noscript-file.png")
            )
    head, _, body = got["r"].stdout.partition(b"\r\n\r\n")
    _, headers, _ = parse_head(head + b"\r\n\r\n")
    assert hashlib.sha256(body).hexdigest() == hashlib.sha256(upload.read_bytes()).hexdigest()
    assert headers["content-disposition"] == 'form-data; name="file"; filename="photo.bin"'  # the part's own


async def test_noscript_page_sanitizes_path_and_forbids_scripts(relay: Relay) -> None:
    with trio.fail_after(10):
        page = await curl("-i", f"{relay.url}/noscript?path=//a%22%3E%3Cscript%3Ex&mode=text")
    head, _, body = page.stdout.partition(b"\r\n\r\n")
    status, headers, _ = parse_head(head + b"\r\n\r\n")
    assert status == 200
    csp = headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src" not in csp  # so no script may run at all
    assert b"<script" not in body
    assert b'action="/ascriptx"' in body  # leading slashes stripped, only URL-safe characters kept
