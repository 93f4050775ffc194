# The ?progress dashboard in a real Chromium: it shows a transfer streaming and then done,
# with no Content-Security-Policy violation on the page.
from __future__ import annotations

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
    assert seen["fill"] == "100%"
    assert seen["problems"] == []
