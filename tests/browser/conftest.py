# Browser tests: Playwright's sync API drives Debian's Chromium (none downloaded) from one thread of its
# own, so each test's trio server keeps serving. Invariant: all share one Chromium, each in its own context.
from __future__ import annotations

import contextlib
import json
import queue
import shutil
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypeVar, TypeVarTuple

import pytest
import trio
from playwright.sync_api import Browser, ConsoleMessage, Download, Page, Playwright, sync_playwright

T = TypeVar("T")
Ts = TypeVarTuple("Ts")

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


class BrowserThread:
    """The thread that owns one Playwright driver and the Chromium it launches (both started on first
    use): Playwright's sync API answers only the thread that started it, so every test's browser
    `work` runs here, one at a time."""

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[tuple[Callable[[], Any], Future[Any]] | None] = queue.SimpleQueue()
        self._playwright: Playwright | None = None
        self._browser: Browser | None = None
        # a daemon: a job that never ends (its test long failed) must not keep the interpreter from exiting
        self.thread = threading.Thread(target=self._serve, name="chromium", daemon=True)
        self.thread.start()

    def submit(self, job: Callable[[], T]) -> Future[T]:
        future: Future[T] = Future()
        self._jobs.put((job, future))
        return future

    def retire(self) -> None:
        """Take no job after those already queued; then close Chromium and stop Playwright."""
        self._jobs.put(None)

    def playwright(self) -> Playwright:
        if self._playwright is None:
            self._playwright = sync_playwright().start()
        return self._playwright

    def browser(self) -> Browser:
        """The shared Chromium, launched again if it went away."""
        if self._browser is None or not self._browser.is_connected():
            self._browser = self.playwright().chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        return self._browser

    def _serve(self) -> None:
        _here.owner = self
        try:
            while (item := self._jobs.get()) is not None:
                job, future = item
                if future.set_running_or_notify_cancel():  # (not if its test gave up while it queued)
                    try:
                        result = job()
                    except BaseException as error:  # handed to the waiting test, like an executor does
                        future.set_exception(error)
                    else:
                        future.set_result(result)
        finally:
            # errors closing a browser no test uses any more decide nothing
            with contextlib.suppress(Exception):
                if self._browser is not None and self._browser.is_connected():
                    self._browser.close()
            with contextlib.suppress(Exception):
                if self._playwright is not None:
                    self._playwright.stop()


_here = threading.local()
"""In a browser thread: `owner`, its BrowserThread; while a test's work runs, `token`, that test's trio."""
_lock = threading.Lock()
_current: BrowserThread | None = None
_every: list[BrowserThread] = []


def _browser_thread() -> BrowserThread:
    global _current
    with _lock:
        if _current is None:
            _current = BrowserThread()
            _every.append(_current)
        return _current


def _abandon(owner: BrowserThread) -> None:
    """`owner` still runs the work of a test that gave up on it: later tests get a new thread and browser
    rather than queue behind it (and fail one after the other)."""
    global _current
    with _lock:
        if _current is owner:
            _current = None
    owner.retire()


@pytest.fixture(scope="package", autouse=True)
def _shared_chromium() -> Iterator[None]:
    """Close the shared Chromium and stop its Playwright driver once the last browser test is done, not
    at the end of a whole run (a thread still running the work of a test that gave up is left to end
    with the interpreter)."""
    global _current
    yield
    with _lock:
        _current, owners = None, list(_every)
    for owner in owners:
        owner.retire()
    deadline = time.monotonic() + 30
    for owner in owners:
        owner.thread.join(timeout=max(0.0, deadline - time.monotonic()))


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
    """A fresh page in a context of its own on the session's headless Chromium (closed at the end, the
    browser kept), with CSP violations and errors recorded.

    `init_script` runs before each document's own scripts. With `profile` (a new folder) the page gets
    a browser of its own that keeps its storage there, on disk, rather than in memory with a small
    quota. Call from `work` given to `in_browser` (the thread that owns Playwright).
    """
    require_chromium()
    owner: BrowserThread | None = getattr(_here, "owner", None)
    if owner is None:
        raise RuntimeError(
            "chromium_page() runs in the browser thread: call it from work given to in_browser"
        )
    log = PageLog()
    options: dict[str, Any] = {
        "java_script_enabled": javascript,
        "viewport": {"width": width, "height": height},
        "accept_downloads": True,
        "ignore_https_errors": trust_any_certificate,  # (a test server's own CA)
    }
    if profile is None:
        context = owner.browser().new_context(**options)
    else:
        # no speculative connections (a profile on disk predicts them): they would idle unused
        (profile / "Default").mkdir(parents=True)
        prefs = {"net": {"network_prediction_options": 2}}
        (profile / "Default" / "Preferences").write_text(json.dumps(prefs))
        context = owner.playwright().chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM, args=CHROMIUM_ARGS, **options
        )
    try:
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
        context.close()


def _as_test(work: Callable[[], T], token: trio.lowlevel.TrioToken) -> T:
    _here.token = token
    try:
        return work()
    finally:
        _here.token = None


async def in_browser(work: Callable[[], T], *, limit: float = 60) -> T:
    """Run browser-driving `work` in the browser thread while this test's trio server keeps serving;
    from `work`, `to_trio` and `to_trio_async` call into this test's event loop."""
    token = trio.lowlevel.current_trio_token()
    owner = _browser_thread()
    future = owner.submit(partial(_as_test, work, token))
    done = trio.Event()

    def wake(_: Future[T]) -> None:
        with contextlib.suppress(trio.RunFinishedError):  # (the test is over)
            token.run_sync_soon(done.set)

    future.add_done_callback(wake)
    try:
        with trio.fail_after(limit):
            await done.wait()
    except BaseException:
        if not future.cancel() and not future.done():  # running: it goes on in its thread, unwaited
            _abandon(owner)
        raise
    return future.result()


def to_trio(fn: Callable[[*Ts], T], *args: *Ts) -> T:
    """From `work` run by `in_browser`: call `fn(*args)` in the calling test's event loop."""
    return trio.from_thread.run_sync(fn, *args, trio_token=getattr(_here, "token", None))


def to_trio_async(afn: Callable[[*Ts], Awaitable[T]], *args: *Ts) -> T:
    """From `work` run by `in_browser`: await `afn(*args)` in the calling test's event loop."""
    return trio.from_thread.run(afn, *args, trio_token=getattr(_here, "token", None))


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
