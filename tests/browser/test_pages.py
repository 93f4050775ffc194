# Every page in a real Chromium: zero Content-Security-Policy violations once its script has run,
# the security headers, a screenshot each; and no path or file name ever becomes markup (XSS).
from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest
from playwright.sync_api import Error as PlaywrightError

from tests.browser.conftest import OPFS_SAVE_PICKER, chromium_page, in_browser, to_trio_async
from tests.clients import CurlResult, Relay, curl

# (page, a selector that exists only once the page's script ran; None for script-free pages)
PAGES = [
    ("/", "#send-curl:has-text('curl ')"),
    ("/api/v1/pipe", "#send-curl:has-text('curl ')"),
    ("/noscript", None),
    ("/api/v1/pipe/noscript?mode=text", None),
    ("/watched?progress", "#state.idle"),
    ("/api/v1/pipe/watched?progress", "#state.idle"),
    ("/movie.webm?video", "#state.waiting"),
]


@pytest.mark.parametrize(("path", "ready"), PAGES)
async def test_page_has_no_csp_violation(
    relay: Relay, screenshots: Path, path: str, ready: str | None
) -> None:
    def visit() -> tuple[dict[str, str], int, list[str]]:
        with chromium_page() as (page, log):
            response = page.goto(relay.url + path)
            assert response is not None
            if ready is not None:
                page.wait_for_selector(ready)
            name = path.strip("/").replace("/", "_").replace("?", "-") or "index"
            page.screenshot(path=str(screenshots / f"page-{name}.png"), full_page=True)
            scripts = len(page.query_selector_all("script"))
            return response.headers, scripts, log.csp + log.errors

    headers, scripts, problems = await in_browser(visit)
    assert problems == []
    assert headers["content-type"] == "text/html; charset=utf-8"
    assert headers["x-content-type-options"] == "nosniff"
    csp = headers["content-security-policy"]
    assert csp.startswith("default-src 'none'; ")
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert scripts == (0 if ready is None else 1)
    assert ("script-src" in csp) == (ready is not None)


XSS_PATH = '/x"onload=alert(1)<script>alert(2)</script>'


async def test_no_xss_from_the_path_on_progress_and_video_pages(relay: Relay) -> None:
    def visit() -> list[tuple[str | None, int, list[str]]]:
        seen = []
        with chromium_page() as (page, log):
            for query in ("progress", "video"):
                page.goto(f"{relay.url}{XSS_PATH}?{query}")
                page.wait_for_selector("#state.idle" if query == "progress" else "#state.waiting")
                seen.append(
                    (
                        page.text_content("h1 code"),
                        len(page.query_selector_all("script")),
                        log.csp + log.errors,
                    )
                )
        return seen

    for shown, scripts, problems in await in_browser(visit):
        # the browser sends the path percent-encoded; the page shows it as text, never as markup
        assert shown == "/x%22onload=alert(1)%3Cscript%3Ealert(2)%3C/script%3E"
        assert scripts == 1
        assert problems == []


async def test_no_xss_from_the_noscript_path(relay: Relay) -> None:
    def visit() -> tuple[str | None, str | None, int]:
        with chromium_page(javascript=False) as (page, _):
            page.goto(f"{relay.url}/noscript?path=%22onload%3Dalert(1)%3Cscript%3Ealert(2)%3C/script%3E")
            return (
                page.get_attribute("form", "action"),
                page.text_content("button"),
                len(page.query_selector_all("script")),
            )

    action, button, scripts = await in_browser(visit)
    assert action == "/onloadalert1scriptalert2/script"  # only URL-safe characters survive
    assert button == "Send to /onloadalert1scriptalert2/script"
    assert scripts == 0


async def test_no_xss_from_file_names_in_the_web_ui(relay: Relay, tmp_path: Path) -> None:
    """A hostile name shown on the send side (chosen file) and the receive side (Content-Disposition)."""
    hostile = '"><img src=x onerror=alert(1)>.bin'
    chosen = tmp_path / hostile
    chosen.write_bytes(os.urandom(1000))
    data = os.urandom(5000)

    async def send() -> CurlResult:
        disposition = 'Content-Disposition: attachment; filename="<img src=x onerror=alert(2)>.bin"'
        return await curl("-T", "-", "-H", disposition, f"{relay.url}/xss-name", stdin=data)

    def visit() -> dict[str, object]:
        seen: dict[str, object] = {}
        with chromium_page(init_script=OPFS_SAVE_PICKER) as (page, log):
            page.goto(f"{relay.url}/")
            page.set_input_files("#files", str(chosen))
            seen["command"] = page.text_content("#send-curl")
            page.click("#tab-receive")
            page.fill("#recv-path", "xss-name")
            page.click("#recv-start")
            page.wait_for_selector("#recv-state.waiting >> text=waiting for the sender")
            seen["sent"] = to_trio_async(send)
            page.wait_for_selector("#recv-state.done")
            seen["saved"] = page.text_content("#recv-name")
            seen["images"] = len(page.query_selector_all("img"))
            seen["problems"] = log.csp + log.errors
        return seen

    seen = await in_browser(visit)
    command = seen["command"]
    assert isinstance(command, str)
    assert command.startswith(f"curl {relay.url}/")
    assert command.endswith(""" > '"><img src=x onerror=alert(1)>.bin'""")
    assert seen["saved"] == "Saved out.bin, 4.9 KiB (the sender named it <img src=x onerror=alert(2)>.bin)."
    assert seen["images"] == 0
    assert seen["problems"] == []


async def test_the_csp_check_itself_sees_a_violation(relay: Relay) -> None:
    """The zero-violation checks above are only worth something if a violation is seen."""

    def visit() -> tuple[list[str], str | None]:
        with chromium_page() as (page, log):
            page.goto(f"{relay.url}/")
            page.wait_for_selector("#send-curl:has-text('curl ')")
            with (
                page.expect_console_message(lambda m: "Content Security Policy" in m.text),
                contextlib.suppress(PlaywrightError),  # Playwright may report the blocked tag too
            ):
                page.add_script_tag(content="document.body.dataset.injected = 'yes'")  # no nonce
            return log.csp, page.get_attribute("body", "data-injected")

    csp, injected = await in_browser(visit)
    assert injected is None  # the inline script did not run
    assert len(csp) == 1 and "Executing inline script violates" in csp[0]
