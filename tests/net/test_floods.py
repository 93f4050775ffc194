# Floods from one client (each attacker its own process): the attacker is ended, the server's memory stays
# bounded, and a transfer from another client completes with its sha256. Invariant: every attack is bounded.
"""The attacks are loadtests/h2attacks.py's, run as `python -m loadtests.h2attacks` so the attacker
shares neither this process's memory (RSS is the server's, read from /proc/self) nor its event loop.
Each test states its bounds: ended within ENDED_WITHIN seconds with GOAWAY ENHANCE_YOUR_CALM (or
closed), RSS growth under RSS_BOUND while it ran. Attacks the budgets let run (pipelined HTTP/1.1,
DATA nobody reads) must not starve the rest: the side transfer completes while they still run."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio

from loadtests.attack_plans import ENHANCE_YOUR_CALM
from pipe_relay.core.abuse import FloodLimits
from tests.clients import Payload, Relay, StartRelay, TlsFiles, curl, raw_exchange, sha256_file

ROOT = Path(__file__).resolve().parents[2]
ONE_ENGINE = pytest.mark.parametrize("engine", ["buffer"])  # (the engines move the side transfer alike)
ENDED_WITHIN = 5.0
"""Seconds from an attack's first byte to its GOAWAY or close (0.01-0.3 s on an idle machine)."""
RSS_BOUND = 32 << 20
"""Growth of this process's RSS (the server's) while an attack and the side transfer run."""
MiB = 1 << 20

pytestmark = [ONE_ENGINE, pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads RSS")]


@dataclass
class Attack:
    """What an attack's processes printed: one Ending (as a dict) per connection."""

    endings: list[dict[str, object]]

    def ended_with(self, code: int, reason: str) -> bool:
        """Every connection got a GOAWAY with `code` naming `reason` (the budget), then was closed."""
        return all(
            (e["goaway"], e["goaway_debug"], e["closed_by_server"]) == (code, reason, True)
            for e in self.endings
        )

    @property
    def slowest_end(self) -> float:
        times = [e["ended_after"] for e in self.endings]
        return max(float(t) if t is not None else float("inf") for t in times)  # type: ignore[arg-type]


def _rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


async def _attack(
    port: int, name: str, *, seconds: float, connections: int = 1, read: bool = True, tls: bool = False
) -> Attack:
    command = [sys.executable, "-m", "loadtests.h2attacks", name, "--port", str(port)]
    command += ["--seconds", str(seconds), "--connections", str(connections)]
    command += [] if read else ["--no-read"]
    command += ["--tls"] if tls else []
    done = await trio.run_process(command, cwd=ROOT, capture_stdout=True, capture_stderr=True, check=False)
    assert done.returncode == 0, done.stderr.decode()
    endings = [json.loads(line) for line in done.stdout.decode().splitlines()]
    assert len(endings) == connections, endings
    return Attack(endings)


class Watch:
    """The server's RSS, sampled every 20 ms from `start` until `stop`: the largest growth seen."""

    def __init__(self) -> None:
        self.before = _rss()
        self.peak = self.before
        self.running = True

    async def run(self) -> None:
        while self.running:
            self.peak = max(self.peak, _rss())
            await trio.sleep(0.02)

    @property
    def grown(self) -> int:
        return max(self.peak, _rss()) - self.before


async def _side_transfer(relay: Relay, payload: Payload, out: Path, key: str = "/side") -> None:
    """A curl receiver then a curl sender of `payload`, both plain HTTP/1.1 from their own connections;
    the body lands in `out` (not in this process's memory) and must match its sha256."""
    results: dict[str, int] = {}

    async def receive() -> None:
        results["receiver"] = (await curl("-o", str(out), relay.url + key, max_time=120)).returncode

    async with trio.open_nursery() as nursery:
        nursery.start_soon(receive)
        await relay.wait_for_pipe(key, receivers=1)
        sent = await curl("-T", str(payload.path), relay.url + key, max_time=120)
    assert sent.returncode == 0 and sent.stdout.endswith(b"[INFO] Transfer complete.\n"), sent
    assert results["receiver"] == 0
    assert sha256_file(out) == payload.sha256


async def _healthy(relay: Relay) -> None:
    raw = await raw_exchange(relay, b"GET /version HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    assert raw.startswith(b"HTTP/1.1 200 OK\r\n"), raw[:100]


async def _under(relay: Relay, payload: Payload, tmp_path: Path, attack: object, **kwargs: object) -> Attack:
    """Run the attack (to its end) beside a side transfer and a health check; RSS watched throughout."""
    watch = Watch()
    results: list[Attack] = []

    async def attacker() -> None:
        results.append(await _attack(relay.port, str(attack), **kwargs))  # type: ignore[arg-type]

    async with trio.open_nursery() as nursery:
        nursery.start_soon(watch.run)
        async with trio.open_nursery() as work:
            work.start_soon(attacker)
            await _side_transfer(relay, payload, tmp_path / "side.bin")
            await _healthy(relay)
        watch.running = False
    assert watch.grown < RSS_BOUND, f"RSS grew {watch.grown / MiB:.1f} MiB under {attack}"
    return results[0]


@pytest.mark.parametrize(
    ("name", "connections", "reason"),
    [
        ("rapid_reset", 1, "resets"),
        ("rapid_reset", 4, "resets"),
        ("continuation", 8, "header_block"),
        ("hpack", 1, "header_bytes"),
        ("huffman", 1, "header_bytes"),  # (paced under the decoded bytes' budget: the encoded ones count)
        ("pages", 1, "streams"),
        ("ping", 1, "control"),
        ("settings", 1, "control"),
        ("window_update", 1, "window_updates"),
        ("priority", 1, "control"),
        ("empty_data", 1, "control"),
        ("discarded_data", 1, "control"),
    ],
)
async def test_a_flood_is_ended_with_enhance_your_calm(
    start_relay: StartRelay,
    payloads: dict[int, Payload],
    tmp_path: Path,
    name: str,
    connections: int,
    reason: str,
) -> None:
    relay = await start_relay()
    with trio.fail_after(90):
        attack = await _under(relay, payloads[64 * MiB], tmp_path, name, seconds=30, connections=connections)
    assert attack.ended_with(ENHANCE_YOUR_CALM, reason), attack.endings
    assert attack.slowest_end < ENDED_WITHIN, attack.endings


async def test_rapid_reset_over_tls_is_ended_too(
    start_relay: StartRelay, tls_files: TlsFiles, payloads: dict[int, Payload], tmp_path: Path
) -> None:
    relay = await start_relay(**tls_files.overrides())
    assert relay.tls_port is not None
    with trio.fail_after(90):
        watch = Watch()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch.run)
            attack = await _attack(relay.tls_port, "rapid_reset", seconds=30, connections=2, tls=True)
            await _side_transfer(relay, payloads[64 * MiB], tmp_path / "side.bin")
            watch.running = False
    assert attack.ended_with(ENHANCE_YOUR_CALM, "resets"), attack.endings
    assert attack.slowest_end < ENDED_WITHIN
    assert watch.grown < RSS_BOUND


@pytest.mark.parametrize("name", ["ping", "settings"])
async def test_a_flood_that_never_reads_is_ended(
    start_relay: StartRelay, payloads: dict[int, Payload], tmp_path: Path, name: str
) -> None:
    """It sees no GOAWAY (it reads nothing): its connection is closed under it."""
    relay = await start_relay()
    with trio.fail_after(90):
        attack = await _under(relay, payloads[64 * MiB], tmp_path, name, seconds=30, read=False)
    (ending,) = attack.endings
    assert ending["closed_by_server"] and float(ending["seconds"]) < ENDED_WITHIN, ending  # type: ignore[arg-type]


async def test_pipelined_http11_requests_past_the_budget_end_the_connection(
    start_relay: StartRelay, payloads: dict[int, Payload], tmp_path: Path
) -> None:
    """HTTP/1.1 has the budget HTTP/2 has for streams that are not parties: a client past it gets
    its last reply with `Connection: close`, and the connection closes."""
    relay = await start_relay()
    with trio.fail_after(90):
        attack = await _under(relay, payloads[64 * MiB], tmp_path, "pipelined", seconds=30)
    (ending,) = attack.endings
    assert ending["told_to_close"] and ending["closed_by_server"], ending
    assert attack.slowest_end < ENDED_WITHIN, ending
    budget = relay.config.flood_limits.streams[0]
    assert budget <= ending["answered"] < budget + 200, ending  # (the burst, and what came back meanwhile)


@pytest.mark.parametrize(("name", "frontend"), [("pipelined", "HTTP/1.1"), ("discarded_data", "h2c")])
async def test_a_client_that_never_lets_its_socket_run_dry_does_not_hold_the_loop(
    start_relay: StartRelay, payloads: dict[int, Payload], tmp_path: Path, name: str, frontend: str
) -> None:
    """With the budgets out of the way (each has its test above), pipelined requests, or DATA in
    small frames on a stream whose body nobody reads (dropped, its window given back at once): the
    server's socket never runs dry. The side transfer and a health check must complete while the
    attack still runs: a read loop that never yields would stall them for all of its 60 s, past
    the fail_after."""
    endless = (1e12, 1e12)
    relay = await start_relay(flood_limits=FloodLimits(streams=endless, control=endless))
    watch = Watch()
    command = [sys.executable, "-m", "loadtests.h2attacks", name, "--port", str(relay.port)]
    process = await trio.lowlevel.open_process(
        [*command, "--seconds", "60", "--announce"], cwd=ROOT, stdout=subprocess.PIPE
    )
    try:
        with trio.fail_after(45):
            assert process.stdout is not None
            assert await process.stdout.receive_some(8) == b"started\n"  # (its first batch is out)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(watch.run)
                await _side_transfer(relay, payloads[64 * MiB], tmp_path / "side.bin")
                await _healthy(relay)
                watch.running = False
            assert process.poll() is None, f"the {frontend} attack ended before the side transfer did"
    finally:
        watch.running = False
        process.kill()
        with trio.move_on_after(5):
            await process.wait()
        if process.stdout is not None:
            await process.stdout.aclose()
    assert watch.grown < RSS_BOUND, f"RSS grew {watch.grown / MiB:.1f} MiB"
