# Browser tests: Playwright's sync API drives Debian's Chromium from a worker thread, so the trio
# server under test keeps running in the test's own event loop. No browser is downloaded.
from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
import trio
from playwright.sync_api import ConsoleMessage, Download, Page, sync_playwright

T = TypeVar("T")

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
]


@pytest.fixture(params=["buffer"])
def engine(request: pytest.FixtureRequest) -> str:
    """A browser test runs on one byte engine: it tests the pages, and each engine is tested under
    curl and raw clients in tests/net, on every front end, large bodies included. (A test that needs
    both asks with `@pytest.mark.parametrize("engine", ENGINES, indirect=True)`.)"""
    return str(request.param)


@pytest.fixture(scope="session")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where each page's screenshot goes (printed, so a person can look at them)."""
    path = tmp_path_factory.mktemp("screenshots")
    print(f"\nscreenshots: {path}")
    return path


def require_chromium() -> None:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"Chromium not found at {CHROMIUM}: run `make test` (it installs Debian's chromium)")


NO_SAVE_PICKER = "delete Window.prototype.showSaveFilePicker; delete window.showSaveFilePicker;"
"""An init script: the page behaves as in a browser without the File System Access API."""

OPFS_SAVE_PICKER = """window.showSaveFilePicker = async () =>
  (await navigator.storage.getDirectory()).getFileHandle("out.bin", { create: true });"""
"""An init script: the save picker (which headless Chromium cannot show) answers at once with
out.bin in the origin-private file system, a real file written by the real FileSystemWritableFileStream."""


@dataclass
class PageLog:
    """What a page reported while a test drove it."""

    csp: list[str] = field(default_factory=list)
    """Content-Security-Policy violations (Chromium reports each one on the console)."""
    errors: list[str] = field(default_factory=list)
    """Uncaught exceptions in the page's scripts."""
    downloads: list[Download] = field(default_factory=list)


@contextmanager
def chromium_page(
    *,
    javascript: bool = True,
    width: int = 1000,
    height: int = 900,
    init_script: str | None = None,
    profile: Path | None = None,
    trust_any_certificate: bool = False,
) -> Iterator[tuple[Page, PageLog]]:
    """A fresh headless Chromium page (its own browser), with CSP violations and errors recorded.

    `init_script` runs before each document's own scripts. With `profile` (a new folder) the browser
    keeps its storage there, on disk, rather than in memory with a small quota. Call from a worker
    thread (`in_browser`): Playwright's sync API runs its own event loop.
    """
    require_chromium()
    log = PageLog()
    options: dict[str, Any] = {
        "java_script_enabled": javascript,
        "viewport": {"width": width, "height": height},
        "accept_downloads": True,
        "ignore_https_errors": trust_any_certificate,  # (a test server's own CA)
    }
    with sync_playwright() as playwright:
        if profile is None:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            close = browser.close
        else:
            # no speculative connections (a profile on disk predicts them): they would idle unused
            (profile / "Default").mkdir(parents=True)
            prefs = {"net": {"network_prediction_options": 2}}
            (profile / "Default" / "Preferences").write_text(json.dumps(prefs))
            persistent = playwright.chromium.launch_persistent_context(
                profile, executable_path=CHROMIUM, args=CHROMIUM_ARGS, **options
            )
            close = persistent.close
        try:
            context = browser.new_context(**options) if profile is None else persistent
            if init_script is not None:
                context.add_init_script(init_script)
            page = context.new_page()

            def on_console(message: ConsoleMessage) -> None:
                if "Content Security Policy" in message.text:
                    log.csp.append(message.text)

            page.on("console", on_console)
            page.on("pageerror", lambda error: log.errors.append(str(error)))
            page.on("download", lambda download: log.downloads.append(download))
            yield page, log
        finally:
            close()


async def in_browser(work: Callable[[], T], *, limit: float = 60) -> T:
    """Run browser-driving `work` in a worker thread while this test's trio server keeps serving."""
    with trio.fail_after(limit):
        return await trio.to_thread.run_sync(work, abandon_on_cancel=True)


def wait_for_value(read: Callable[[], T], accept: Callable[[T], bool], *, timeout: float = 20) -> T:
    """Poll `read()` (a Playwright query, allowed under the page's CSP) until `accept` holds."""
    deadline = time.monotonic() + timeout
    while True:
        value = read()
        if accept(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out; last value {value!r}")
        time.sleep(0.05)
