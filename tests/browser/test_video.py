# The ?video player in a real Chromium: it plays a WebM while curl is still sending it, through
# MediaSource; its one fetch is the path's receiver, and the page says it takes that slot.
from __future__ import annotations

from pathlib import Path

import pytest
import trio

from tests.browser.conftest import chromium_page, in_browser, to_trio, wait_for_value
from tests.clients import CurlResult, Relay, curl

DATA = Path(__file__).parent / "data"  # 3 s of test pattern, 160x120 (data/README.md)


@pytest.mark.parametrize(
    ("name", "sniffed"),
    [
        ("clip.webm", 'video/webm; codecs="vp8"'),
        ("clip.mp4", 'video/mp4; codecs="vp09.00.10.08"'),  # fragmented MP4
    ],
)
async def test_video_page_plays_while_it_arrives(
    relay: Relay, screenshots: Path, name: str, sniffed: str
) -> None:
    async def send() -> CurlResult:
        # the page's fetch is the one receiver; the page itself took none
        await relay.wait_for_pipe(f"/{name}", receivers=1)
        # about 2 s on the wire: playback starts before the last byte is sent
        return await curl("-T", str(DATA / name), "--limit-rate", "10K", f"{relay.url}/{name}")

    def watch() -> dict[str, object]:
        seen: dict[str, object] = {}
        with chromium_page(width=800, height=700) as (page, log):
            response = page.goto(f"{relay.url}/{name}?video")
            assert response is not None
            seen["type"] = response.headers["content-type"]
            page.wait_for_selector("#state.waiting")
            seen["waiting"] = page.text_content("#state")
            seen["note"] = page.text_content("section + p")
            page.screenshot(path=str(screenshots / f"video-{name}-waiting.png"))
            result: dict[str, CurlResult] = {}

            async def send_in_background() -> None:
                result["sent"] = await send()

            # start the sender without blocking this thread: playback must begin mid-transfer
            to_trio(nursery.start_soon, send_in_background)
            page.wait_for_selector("#state.playing", timeout=30_000)
            seen["format"] = page.text_content("#format")
            seen["time"] = wait_for_value(
                lambda: float(page.eval_on_selector("#video", "video => video.currentTime")),
                lambda t: t > 0,
            )
            seen["while_sending"] = "sent" not in result
            page.screenshot(path=str(screenshots / f"video-{name}-playing.png"))
            page.wait_for_selector("#state.ended", timeout=30_000)
            seen["problems"] = log.csp + log.errors
        seen["sent"] = result.get("sent")
        return seen

    with trio.fail_after(90):
        async with trio.open_nursery() as nursery:
            seen = await in_browser(watch, limit=80)
    assert seen["type"] == "text/html; charset=utf-8"
    assert seen["waiting"] == "waiting for the sender"
    assert seen["note"] == (
        f"Send to this path to play it here, for example curl -T movie.webm {relay.url}/{name}. "
        "The player is this path's receiver: while it waits or plays it takes one receiver slot, "
        f"as curl {relay.url}/{name} would, so another receiver of this path is refused "
        "(unless every side adds the same ?n=)."
    )
    assert seen["format"] == sniffed
    assert isinstance(seen["time"], float) and seen["time"] > 0
    assert seen["while_sending"] is True
    sent = seen["sent"]
    assert isinstance(sent, CurlResult) and sent.returncode == 0
    assert seen["problems"] == []
