# `?progress`: the event stream of a pipe's state (no receiver slot taken) and its HTML dashboard.
# Watchers are raw HTTP clients reading the chunked event stream; states must come in order.
from __future__ import annotations

import json
import re

import trio
import trio.testing

from pipe_relay.core.progress import TransferState
from pipe_relay.core.registry import PipeSnapshot, PipeState
from pipe_relay.net.progress import Boards
from tests.clients import CurlResult, RawClient, Relay, StartRelay, curl, curl_into, parse_head


class Watcher:
    """A raw `?progress` client: decodes the chunked event stream into events."""

    def __init__(self, client: RawClient) -> None:
        self.client = client
        self.text = ""
        self.ended = False

    @classmethod
    async def open(cls, relay: Relay, raw_clients: list[RawClient], key: str) -> Watcher:
        client = await RawClient.connect(relay)
        raw_clients.append(client)
        await client.send(
            f"GET {key}?progress HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n".encode()
        )
        status, headers, _ = parse_head(await client.read_until(b"\r\n\r\n"))
        assert status == 200
        assert headers["content-type"] == "text/event-stream; charset=utf-8"
        assert headers["cache-control"] == "no-store"
        assert headers["transfer-encoding"] == "chunked"
        return cls(client)

    async def _more(self) -> None:
        size = int((await self.client.read_until(b"\r\n")).strip(), 16)
        if size == 0:
            assert await self.client.read_exactly(2) == b"\r\n"
            self.ended = True
            return
        self.text += (await self.client.read_exactly(size + 2))[:-2].decode()

    async def events_until(self, state: str) -> list[dict[str, object]]:
        """All data events up to and including the first in `state`."""
        while True:
            events = [json.loads(m) for m in re.findall(r"^data: (.*)$", self.text, re.M)]
            if any(e["state"] == state for e in events):
                return events
            assert not self.ended, f"stream ended before {state!r}: {self.text!r}"
            await self._more()

    async def read_to_end(self) -> str:
        while not self.ended:
            await self._more()
        return self.text


def _states(events: list[dict[str, object]]) -> list[object]:
    """The sequence of states with repeats collapsed."""
    out: list[object] = []
    for event in events:
        if not out or out[-1] != event["state"]:
            out.append(event["state"])
    return out


async def test_progress_stream_follows_a_transfer(relay: Relay, raw_clients: list[RawClient]) -> None:
    body = bytes(range(256)) * 4096  # 1 MiB
    with trio.fail_after(20):
        watcher = await Watcher.open(relay, raw_clients, "/watched")
        idle = await watcher.events_until("idle")
        assert idle[0] == {
            "state": "idle", "bytes": 0, "total": None,
            "receivers": {"connected": 0, "expected": 0}, "rate": 0.0, "elapsed": 0.0,
        }  # fmt: skip
        assert watcher.text.startswith("retry: 2000\n\n")
        got: dict[str, CurlResult] = {}
        async with trio.open_nursery() as nursery:
            nursery.start_soon(curl_into, got, "r", f"{relay.url}/watched?n=1")
            await relay.wait_for_pipe("/watched", receivers=1)
            # the watcher took no slot: the one receiver above is all n=1 needs
            await watcher.events_until("waiting")
            sender = await RawClient.connect(relay)
            raw_clients.append(sender)
            await sender.send(b"PUT /watched HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body))
            await watcher.events_until("streaming")
            await sender.send(body)
            events = await watcher.events_until("done")
        text = await watcher.read_to_end()
    assert got["r"].stdout == body
    assert _states(events) == ["idle", "waiting", "streaming", "done"]
    final = events[-1]
    assert final["bytes"] == len(body) and final["total"] == len(body)
    assert final["receivers"] == {"connected": 1, "expected": 1}
    assert watcher.ended and text.endswith("\n\n")


async def test_elapsed_stops_when_the_transfer_ends(autojump_clock: trio.testing.MockClock) -> None:
    """A watcher reads the final state up to 1/4 s late (or much later, a new one): the elapsed time
    (and the dashboard's average rate, bytes / elapsed) ends with the transfer, not at the reading."""
    boards = Boards()
    boards.sync("/k", PipeSnapshot(PipeState.PENDING, 1, True, 0), trio.current_time())
    await trio.sleep(7)  # waiting does not count
    boards.sync("/k", PipeSnapshot(PipeState.ACTIVE, 1, True, 1), trio.current_time())
    board = boards.get("/k")
    assert board is not None
    await trio.sleep(2)
    assert board.snapshot(0.0).elapsed == 2.0
    boards.finish("/k", TransferState.DONE)
    await trio.sleep(5)
    final = board.snapshot(0.0)
    assert (final.state, final.elapsed) == (TransferState.DONE, 2.0)


async def test_progress_reports_an_aborted_transfer(relay: Relay, raw_clients: list[RawClient]) -> None:
    with trio.fail_after(15):
        receiver = await RawClient.connect(relay)
        raw_clients.append(receiver)
        await receiver.send(b"GET /doomed HTTP/1.1\r\nHost: x\r\n\r\n")
        await relay.wait_for_pipe("/doomed", receivers=1)
        watcher = await Watcher.open(relay, raw_clients, "/doomed")
        sender = await RawClient.connect(relay)
        raw_clients.append(sender)
        await sender.send(
            b"PUT /doomed HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n"
        )
        await watcher.events_until("streaming")
        await sender.aclose()
        events = await watcher.events_until("aborted")
        await watcher.read_to_end()
    assert _states(events) == ["waiting", "streaming", "aborted"]
    assert events[-1]["total"] is None


async def test_idle_watcher_ends_at_the_pipe_ttl(
    start_relay: StartRelay, raw_clients: list[RawClient]
) -> None:
    relay = await start_relay(pending_ttl=0.5)
    with trio.fail_after(10):
        watcher = await Watcher.open(relay, raw_clients, "/nobody")
        text = await watcher.read_to_end()
    events = [json.loads(m) for m in re.findall(r"^data: (.*)$", text, re.M)]
    assert [e["state"] for e in events] == ["idle"]


async def test_many_watchers_do_not_hold_up_a_transfer(relay: Relay, raw_clients: list[RawClient]) -> None:
    size = 32 << 20
    with trio.fail_after(30):
        watchers = [await Watcher.open(relay, raw_clients, "/crowd") for _ in range(20)]
        got: dict[str, CurlResult] = {}
        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                curl_into, got, "r", "-o", "/dev/null", "-w", "%{size_download}", f"{relay.url}/crowd"
            )
            await relay.wait_for_pipe("/crowd", receivers=1)
            sent = await curl("-T", "-", f"{relay.url}/crowd", stdin=b"w" * size)
        finals = [(await w.events_until("done"))[-1] for w in watchers]
    assert sent.returncode == 0
    assert got["r"].stdout == str(size).encode()
    assert all(final["bytes"] == size and final["state"] == "done" for final in finals)


async def test_progress_dashboard_page(relay: Relay) -> None:
    with trio.fail_after(10):
        page = await curl("-i", "-H", "Accept: text/html", f"{relay.url}/a%3Cscript%3Eb?progress")
    head, _, body = page.stdout.partition(b"\r\n\r\n")
    status, headers, _ = parse_head(head + b"\r\n\r\n")
    assert status == 200
    assert headers["content-type"] == "text/html; charset=utf-8"
    csp = headers["content-security-policy"]
    nonce = re.search(r"script-src 'nonce-([^']+)'", csp)
    assert nonce is not None and "default-src 'none'" in csp and "connect-src 'self'" in csp
    scripts = re.findall(rb"<script([^>]*)>", body)
    assert scripts and all(f'nonce="{nonce[1]}"'.encode() in attrs for attrs in scripts)
    assert b"<code>/a%3Cscript%3Eb</code>" in body
    assert relay.hub.registry.snapshot("/a%3Cscript%3Eb") is None  # a page, not a receiver


async def test_progress_page_escapes_a_raw_angle_bracket_path(
    relay: Relay, raw_clients: list[RawClient]
) -> None:
    with trio.fail_after(10):
        client = await RawClient.connect(relay)
        raw_clients.append(client)
        await client.send(
            b'GET /x"<img>?progress HTTP/1.1\r\nHost: x\r\nAccept: text/html\r\nConnection: close\r\n\r\n'
        )
        response, _ = await client.read_to_end()
    assert response.startswith(b"HTTP/1.1 200 OK")
    assert b"<img>" not in response
    assert b"/x&quot;&lt;img&gt;" in response
