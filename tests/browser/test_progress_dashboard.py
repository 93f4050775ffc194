# The ?progress dashboard in a real Chromium: a transfer streaming, then done with its average rate
# and its rate chart, an aborted one, and an unused path said in words; no Content-Security-Policy
# violation on the page (the chart is built under the page's strict CSP).
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import trio
from playwright.sync_api import ConsoleMessage, Page

from tests.browser.conftest import (
    chromium_page,
    in_browser,
    require_chromium,
    to_trio,
    to_trio_async,
)
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
        with chromium_page(width=800, height=600) as (page, _):

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
            to_trio_async(finish)
            page.wait_for_selector("#state.done")
            seen["done_bytes"] = page.text_content("#bytes")
            seen["done_rate"] = page.text_content("#rate")
            seen["done_elapsed"] = page.text_content("#elapsed")
            seen["fill"] = page.eval_on_selector("#fill", "el => el.style.width")
            page.screenshot(path=str(screenshots / "progress-done.png"))
        seen["problems"] = problems
        return seen

    seen = await in_browser(browse, limit=60)
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
        with chromium_page(width=800, height=600) as (page, _):
            page.goto(f"{relay.url}/nobody-yet?progress", wait_until="domcontentloaded")
            page.wait_for_selector("#state.idle")
            page.screenshot(path=str(screenshots / "progress-unused.png"))
            return [
                page.text_content(f"#{id}") for id in ("state", "explain", "receivers", "rate", "elapsed")
            ]

    shown = await in_browser(browse, limit=30)
    assert shown == [
        "nobody here yet",
        "Nobody is on this path yet. This page follows it as soon as a sender or a receiver comes.",
        "none yet",
        "-",
        "-",
    ]


ONE_ENGINE = pytest.mark.parametrize("engine", ["buffer"])  # (the page is tested, not the bytes' path)
MiB = 1 << 20
UNITS = {"B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}
RATE = r"([0-9.]+ (?:B|KiB|MiB|GiB)/s)"
PACE = 1.6 * MiB
"""Bytes a second the slow sender sends: 4 MiB in about 2.5 s, some ten events on the page."""

WATCH_CSP = """window.cspViolations = [];
document.addEventListener("securitypolicyviolation", (e) =>
  window.cspViolations.push(e.violatedDirective + " blocked " + (e.blockedURI || e.sample || "?")));"""
"""An init script: the page keeps every `securitypolicyviolation` event (not only the console's word)."""

FAKE_EVENT_SOURCE = """window.EventSource = class {
  constructor(url) { this.url = url; this.readyState = 1; window.fakeSource = this; }
  close() { this.readyState = 2; }
};
window.EventSource.CLOSED = 2;"""
"""An init script: the page's EventSource is one the test feeds (`window.fakeSource.onmessage`)."""

READ_CHART = """svg => ({
  role: svg.getAttribute("role"),
  label: svg.getAttribute("aria-label"),
  classes: svg.getAttribute("class"),
  viewBox: svg.querySelector("svg").getAttribute("viewBox"),
  points: svg.querySelector("polyline").getAttribute("points"),
  dash: svg.querySelector("polyline").getAttribute("stroke-dasharray"),
  height: svg.getBoundingClientRect().height,
})"""


def bytes_per_second(shown: str) -> float:
    """A rate as Fmt shows it ("1.6 MiB/s"), in bytes a second."""
    number, unit = shown.removesuffix("/s").split(" ")
    return float(number) * UNITS[unit]


def shown_within(shown: str, value: float) -> bool:
    """`shown` is `value` as Fmt shows it: rounded to a byte, then to a tenth of its unit."""
    unit = UNITS[shown.removesuffix("/s").split(" ")[1]]
    return abs(bytes_per_second(shown) - value) <= 0.05 * unit + 0.5 + 1e-6


def plotted(chart: dict[str, Any]) -> list[tuple[float, float]]:
    """The polyline's points, each checked to be numeric and inside the plot's viewBox."""
    left, top, width, height = (float(n) for n in chart["viewBox"].split())
    points = [tuple(float(n) for n in pair.split(",")) for pair in chart["points"].split()]
    for x, y in points:
        assert left <= x <= left + width and top <= y <= top + height, (x, y, chart["viewBox"])
    return [(x, y) for x, y in points]


def record_events(page: Page) -> list[dict[str, Any]]:
    """Every message the page's EventSource receives, as Chromium's network log reports it."""
    events: list[dict[str, Any]] = []
    cdp = page.context.new_cdp_session(page)
    cdp.on("Network.eventSourceMessageReceived", lambda event: events.append(json.loads(event["data"])))
    cdp.send("Network.enable")
    return events


def console_errors(page: Page) -> list[str]:
    errors: list[str] = []
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    return errors


async def paced_transfer(
    relay: Relay, raw_clients: list[RawClient], path: bytes, total: int, *, abort_at: int | None = None
) -> None:
    """`total` bytes through `path` from a sender that sends PACE bytes a second (the relay can
    move no faster; a slow receiver would not do: the sockets' buffers take megabytes at once), to a
    receiver that takes them as they come. With `abort_at`, the sender resets after that many."""
    receiver = await RawClient.connect(relay)
    sender = await RawClient.connect(relay)
    raw_clients += [receiver, sender]
    await receiver.send(b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % path)
    await relay.wait_for_pipe(path.decode(), receivers=1)
    await sender.send(b"PUT %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (path, total))
    await receiver.read_until(b"\r\n\r\n")
    goal = total if abort_at is None else abort_at

    async def send() -> None:
        start, sent, piece = trio.current_time(), 0, 64 << 10
        while sent < goal:
            await sender.send(b"r" * min(piece, goal - sent))
            sent += min(piece, goal - sent)
            await trio.sleep_until(start + sent / PACE)  # pacing, not waiting for readiness

    async with trio.open_nursery() as nursery:
        nursery.start_soon(send)
        assert len(await receiver.read_exactly(goal)) == goal
    if abort_at is not None:
        await sender.reset()


async def test_dashboard_charts_the_rate_and_tells_the_average(
    relay: Relay, raw_clients: list[RawClient], screenshots: Path
) -> None:
    """A real 4 MiB transfer of about 2.5 s: an SVG chart with a point for each event the page got,
    scaled to the peak, and the average rate in words once done; no CSP violation on the way."""
    total = 4 * MiB
    seen: dict[str, Any] = {}

    def browse() -> None:
        with chromium_page(width=800, height=700, init_script=WATCH_CSP) as (page, log):
            errors = console_errors(page)
            events = record_events(page)
            page.goto(f"{relay.url}/chart?progress", wait_until="domcontentloaded")
            page.wait_for_selector("#state.idle")  # the page follows the path
            seen["chart_before"] = page.is_hidden("#chart"), page.query_selector("#chart svg")
            to_trio(nursery.start_soon, lambda: paced_transfer(relay, raw_clients, b"/chart", total))
            page.wait_for_selector("#state.streaming")
            seen["chart_streaming"] = page.is_visible("#chart > svg")
            page.wait_for_selector("#state.done", timeout=15_000)
            seen["chart"] = page.eval_on_selector("#chart > svg", READ_CHART)
            seen["rate"] = page.text_content("#rate")
            page.screenshot(path="/tmp/progress-chart.png", full_page=True)
            page.screenshot(path=str(screenshots / "progress-chart.png"), full_page=True)
            seen["events"] = list(events)
            seen["problems"] = page.evaluate("window.cspViolations") + log.csp + log.errors + errors

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            await in_browser(browse, limit=25)
    assert seen["chart_before"] == (True, None)  # no chart before a byte moves
    assert seen["chart_streaming"]
    events, chart = seen["events"], seen["chart"]
    done = events[-1]
    assert (done["state"], done["bytes"]) == ("done", total)
    states = [e["state"] for e in events]
    assert states[:3] == ["idle", "waiting", "streaming"]
    samples = [(e["elapsed"], e["rate"]) for e in events if e["state"] in ("streaming", "done")]
    assert [t for t, _ in samples] == sorted(set(t for t, _ in samples))  # one sample per event
    assert samples[0][0] > 0
    samples.insert(0, (0.0, samples[0][1]))  # seen from the start: the first rate is since then
    assert chart["role"] == "img"
    assert chart["height"] == 120
    points = plotted(chart)
    assert len(points) >= 3
    assert len(points) == len(samples)
    peak, last = max(r for _, r in samples), samples[-1][0]
    assert peak > 0
    for (x, y), (t, r) in zip(points, samples, strict=True):  # x: elapsed, y: the rate up to the peak
        assert abs(x - 600 * t / last) <= 0.05 and abs(y - (100 - 100 * r / peak)) <= 0.05, (x, y, t, r)
    label = re.fullmatch(
        rf"Transfer rate over time: latest {RATE}, peak {RATE}, (average {RATE} over ([0-9.]+) s)",
        chart["label"],
    )
    assert label, chart["label"]
    assert shown_within(label[1], samples[-1][1]) and shown_within(label[2], peak)
    assert bytes_per_second(label[2]) > 0
    # the average in words, from the final event the page received (rounded as Fmt rounds)
    assert seen["rate"] == label[3]
    assert shown_within(label[4], done["bytes"] / done["elapsed"]), (label[4], done)
    assert abs(float(label[5]) - done["elapsed"]) <= 0.05 + 1e-9, (label[5], done)
    assert 1.5 < done["elapsed"] < 6  # the pace held: this was a transfer over time, not a burst
    assert seen["problems"] == []


@ONE_ENGINE
async def test_chart_of_an_aborted_transfer_stays_greyed_and_dashed(
    relay: Relay, raw_clients: list[RawClient], screenshots: Path
) -> None:
    """Aborted half-way: the chart keeps its shape, in the muted colour and dashed; seen in the dark
    colour scheme (the chart's colours follow the page's)."""
    seen: dict[str, Any] = {}

    def browse() -> None:
        with chromium_page(width=800, height=700, init_script=WATCH_CSP) as (page, log):
            errors = console_errors(page)
            events = record_events(page)
            page.emulate_media(color_scheme="dark")
            page.goto(f"{relay.url}/cut?progress", wait_until="domcontentloaded")
            page.wait_for_selector("#state.idle")
            to_trio(
                nursery.start_soon,
                lambda: paced_transfer(relay, raw_clients, b"/cut", 4 * MiB, abort_at=2 * MiB),
            )
            page.wait_for_selector("#state.aborted", timeout=15_000)
            seen["chart"] = page.eval_on_selector("#chart > svg", READ_CHART)
            seen["rate"] = page.text_content("#rate")
            page.screenshot(path=str(screenshots / "progress-chart-aborted-dark.png"), full_page=True)
            seen["events"] = list(events)
            seen["problems"] = page.evaluate("window.cspViolations") + log.csp + log.errors + errors

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            await in_browser(browse, limit=25)
    chart = seen["chart"]
    assert seen["events"][-1]["state"] == "aborted"
    assert len(plotted(chart)) >= 3  # its shape up to the cut is kept
    assert "muted" in chart["classes"].split()  # base.css's muted colour
    assert chart["dash"] == "6 4"
    assert chart["label"].endswith("; the transfer stopped before the end")
    assert seen["rate"] == "-"
    assert seen["problems"] == []


@ONE_ENGINE
async def test_chart_memory_is_bounded(relay: Relay) -> None:
    """1,201 events (5 min at 4 a second) fed to the page's own script: at most 600 points, still
    spanning the whole transfer, and the peak label keeps a peak its halving averaged away."""
    events = [
        {
            "state": "streaming",
            "bytes": i * MiB,
            "total": None,
            "receivers": {"connected": 1, "expected": 1},
            "rate": 50.0 * MiB if i == 2 else float(MiB + (i % 10) * 10240),
            "elapsed": i / 4,
        }
        for i in range(1, 1202)
    ]

    def browse() -> tuple[dict[str, Any], list[str]]:
        with chromium_page(init_script=FAKE_EVENT_SOURCE + WATCH_CSP) as (page, log):
            page.goto(f"{relay.url}/long?progress", wait_until="domcontentloaded")
            page.evaluate(
                "events => events.forEach((e) => window.fakeSource.onmessage({ data: JSON.stringify(e) }))",
                events,
            )
            chart = page.eval_on_selector("#chart > svg", READ_CHART)
            return chart, page.evaluate("window.cspViolations") + log.csp + log.errors

    with trio.fail_after(30):
        chart, problems = await in_browser(browse, limit=25)
    points = plotted(chart)
    assert 300 <= len(points) <= 600
    xs = [x for x, _ in points]
    assert xs == sorted(set(xs)) and xs[-1] == 600
    assert xs[0] == round(600 * 2 / 300.25, 1)  # three halvings keep one sample in 8: the first at 2 s
    assert "peak 50.0 MiB/s" in chart["label"]
    assert min(y for _, y in points) > 0  # the spike was averaged with its neighbour: below the peak
    assert problems == []
