# The ?progress dashboard in a real Chromium: a transfer streaming, then done with its average rate,
# and an unused path said in words; no Content-Security-Policy violation on the page.
from __future__ import annotations

import re
from pathlib import Path

import trio
from playwright.sync_api import ConsoleMessage, sync_playwright

from tests.browser.conftest import CHROMIUM, CHROMIUM_ARGS, require_chromium
from tests.clients import RawClient, Relay


async def test_dashboard_shows_streaming_then_done(
    relay: Relay, raw_clients: list[RawClient], screenshots: Path
) -> None:
    require_chromium()
    total = 1 << 20
    receiver = await RawClient.connect(relay)
    sender = await RawClient.connect(relay)
    raw_clients += [receiver, sender]
    await receiver.send(b"GET /board HTTP/1.1\r\nHost: x\r\n\r\n")
    await relay.wait_for_pipe("/board", receivers=1)
    await sender.send(b"PUT /board HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % total)
    await receiver.read_until(b"\r\n\r\n")

    async def move(piece: bytes) -> None:
        """Send and receive concurrently: the relay paces the sender by the receiver (lockstep)."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sender.send, piece)
            assert await receiver.read_exactly(len(piece)) == piece

    await move(b"a" * (total // 2))  # half now: the page must show it streaming

    async def finish() -> None:
        await move(b"b" * (total - total // 2))

    def browse() -> dict[str, object]:
        seen: dict[str, object] = {}
        problems: list[str] = []
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 800, "height": 600})

                def on_console(message: ConsoleMessage) -> None:
                    if message.type == "error" or "Content Security Policy" in message.text:
                        problems.append(message.text)

                page.on("console", on_console)
                page.goto(f"{relay.url}/board?progress", wait_until="domcontentloaded")
                # selectors, not wait_for_function: the page's CSP (rightly) forbids eval
                page.wait_for_selector("#state.streaming")
                seen["streaming_bytes"] = page.text_content("#bytes")
                seen["receivers"] = page.text_content("#receivers")
                page.screenshot(path=str(screenshots / "progress-streaming.png"))
                trio.from_thread.run(finish)
                page.wait_for_selector("#state.done")
                seen["done_bytes"] = page.text_content("#bytes")
                seen["done_rate"] = page.text_content("#rate")
                seen["done_elapsed"] = page.text_content("#elapsed")
                seen["fill"] = page.eval_on_selector("#fill", "el => el.style.width")
                page.screenshot(path=str(screenshots / "progress-done.png"))
            finally:
                browser.close()
        seen["problems"] = problems
        return seen

    with trio.fail_after(60):
        seen = await trio.to_thread.run_sync(browse, abandon_on_cancel=True)
    assert seen["streaming_bytes"] == "512.0 KiB of 1.0 MiB"
    assert seen["receivers"] == "1 of 1"
    assert seen["done_bytes"] == "1.0 MiB of 1.0 MiB"
    average = r"average [0-9.]+ (B|KiB|MiB|GiB)/s over [0-9.]+ s"
    assert re.fullmatch(average, str(seen["done_rate"])), seen["done_rate"]
    assert re.fullmatch(r"[0-9]+\.[0-9] s", str(seen["done_elapsed"])), seen["done_elapsed"]
    assert seen["fill"] == "100%"
    assert seen["problems"] == []


async def test_dashboard_of_an_unused_path_says_nobody_is_there(relay: Relay, screenshots: Path) -> None:
    """No sender nor receiver on the path: the page says so in words, not "idle" and "0 of ?"."""
    require_chromium()

    def browse() -> list[str | None]:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 800, "height": 600})
                page.goto(f"{relay.url}/nobody-yet?progress", wait_until="domcontentloaded")
                page.wait_for_selector("#state.idle")
                page.screenshot(path=str(screenshots / "progress-unused.png"))
                return [
                    page.text_content(f"#{id}") for id in ("state", "explain", "receivers", "rate", "elapsed")
                ]
            finally:
                browser.close()

    with trio.fail_after(30):
        shown = await trio.to_thread.run_sync(browse, abandon_on_cancel=True)
    assert shown == [
        "nobody here yet",
        "Nobody is on this path yet. This page follows it as soon as a sender or a receiver comes.",
        "none yet",
        "-",
        "-",
    ]
