# The flood benchmark (loadtests/floods.py): percentiles, endings, rows, arguments, and one tiny real run.
# Invariant: the real run is pipe-relay only, one attack, 2 s windows: its row is there, the flood was ended.
from __future__ import annotations

import dataclasses
import importlib
import json
import math
import shutil
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from loadtests.attack_plans import ENHANCE_YOUR_CALM, PLANS, Ending

LOADTESTS = Path(__file__).resolve().parents[2] / "loadtests"
MiB = 1 << 20


@pytest.fixture(scope="module")
def floods() -> ModuleType:
    return _sibling("floods")


@pytest.fixture(scope="module")
def rows() -> ModuleType:
    return _sibling("flood_report")


def _sibling(name: str) -> ModuleType:
    """A loadtests script as bench.py's siblings import one another: with their folder on sys.path
    while it loads."""
    sys.path.insert(0, str(LOADTESTS))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(LOADTESTS))


def record(ending: Ending) -> dict[str, Any]:
    """An Ending as `python -m loadtests.h2attacks` prints it (one JSON line), read back."""
    fields = dataclasses.asdict(ending) | {"ended_after": ending.ended_after, "first_status": ""}
    return json.loads(json.dumps(fields))  # type: ignore[no-any-return]


def test_percentile_is_the_nearest_rank(rows: ModuleType) -> None:
    assert rows.percentile([], 99) is None
    assert rows.percentile([7.0], 50) == rows.percentile([7.0], 99) == 7.0
    hundred = [float(x) for x in range(100, 0, -1)]  # (unsorted on purpose)
    assert (rows.percentile(hundred, 50), rows.percentile(hundred, 99)) == (50.0, 99.0)
    assert rows.percentile([float(x) for x in range(1, 201)], 99) == 198.0
    assert rows.percentile([1.0, 2000.0], 50) == 1.0 and rows.percentile([1.0, 2000.0], 99) == 2000.0


def test_an_attackers_json_line_says_how_it_was_ended(rows: ModuleType) -> None:
    def text(**fields: Any) -> str:
        return rows.ending_text(record(Ending("attack", **fields)))  # type: ignore[no-any-return]

    calm = {"goaway": ENHANCE_YOUR_CALM, "goaway_at": 0.071, "goaway_debug": "resets"}
    assert (
        text(seconds=0.08, closed_by_server=True, sent=9, **calm)
        == "GOAWAY ENHANCE_YOUR_CALM (resets) after 0.07 s"
    )
    assert text(seconds=5.2, goaway=0, goaway_at=0.2, sent=9) == "GOAWAY NO_ERROR after 0.20 s, not closed"
    assert (
        text(seconds=1, closed_by_server=True, goaway=0x42, goaway_at=0.5, sent=9)
        == "GOAWAY 0x42 after 0.50 s"
    )
    assert text(seconds=1.234, closed_by_server=True, sent=9) == "closed after 1.23 s"
    assert text(seconds=15.0004, sent=9) == "never (15 s)"
    refused = "connect failed: [Errno 111] Connection refused"
    assert text(notes=[refused]) == f"not run: {refused}"


def test_a_row_shows_its_figures_and_the_targets_it_misses(rows: ModuleType) -> None:
    calm = record(Ending("ping", seconds=0.06, closed_by_server=True, sent=1))
    calm |= {"goaway": ENHANCE_YOUR_CALM, "goaway_at": 0.05, "goaway_debug": "control", "ended_after": 0.05}
    good = rows.Row("ping", "pipe-relay", side_bytes=640 * MiB, side_seconds=2.0, side_done=10)
    good.idle_mbps, good.health_ms, good.endings = 400.0, [3.0] * 99 + [40.0], [calm]
    good.rss_before_mib, good.rss_peak_mib, good.cpu_seconds = 50.0, 52.5, 1.234
    assert good.cells() == [
        "ping",
        "pipe-relay",
        "336",  # (640 MiB in 2 s)
        "84",
        "3.0",
        "3.0",
        "0/100",
        "2.5",
        "1.23",
        "0.00",
        "GOAWAY ENHANCE_YOUR_CALM (control) after 0.05 s",
        "pass",
        "0.0",
    ]
    never = record(Ending("pipelined", seconds=15.0, sent=1))
    bad = rows.Row("pipelined", "node", side_bytes=64 * MiB, side_seconds=1.0, side_done=1, idle_mbps=400)
    bad.health_ms, bad.health_failures = [2000.0, 2.0], 1
    bad.rss_before_mib, bad.rss_peak_mib, bad.endings = 10.0, 80.0, [calm, never]
    assert bad.misses() == ["side", "p99", "RSS", "end"]
    assert bad.cells()[-3:-1] == ["never (15 s) (slowest of 2)", "miss: side, p99, RSS, end"]
    assert bad.cells()[6] == "1/2" and len(bad.cells()) == len(rows.HEAD)
    idle = rows.Row(rows.IDLE, "pipe-relay", side_bytes=64 * MiB, side_seconds=0.2, health_ms=[1.0])
    idle.idle_mbps = idle.mbps
    assert (idle.ended, idle.misses(), idle.cells()[3]) == ("–", [], "100")
    silent = rows.Row("hpack", "pipe-relay", remarks=["the attacker exited 1: Traceback"])
    assert silent.ended == "no report from the attacker" and "end" in silent.misses()
    assert silent.cells()[2:4] == ["–", "–"] and silent.notes() == ["the attacker exited 1: Traceback"]
    assert json.loads(json.dumps(bad.as_json()))["misses"] == ["side", "p99", "RSS", "end"]


def test_the_table_is_markdown(rows: ModuleType) -> None:
    assert rows.markdown_table(["a", "b"], [["1", "2"]]) == ["| a | b |", "| --- | --- |", "| 1 | 2 |"]


def test_the_arguments_name_attacks_and_servers(floods: ModuleType) -> None:
    args = floods.parse_args([])
    assert args.attacks == list(PLANS) and args.servers == [floods.RELAY, floods.NODE]
    assert (args.seconds, args.size, args.connections) == (15.0, 64 * MiB, 1)
    assert floods.parse_args(["--no-node"]).servers == [floods.RELAY]
    assert floods.parse_args(["--servers", "node", "--attacks", "ping,hpack"]).attacks == ["ping", "hpack"]
    for wrong in (["--attacks", "ping,nope"], ["--servers", "nginx"], ["--servers", "node", "--no-node"]):
        with pytest.raises(SystemExit):
            floods.parse_args(wrong)


def test_a_tiny_run_against_pipe_relay_ends_the_ping_flood(
    floods: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The real thing, small: pipe-relay with HTTPS, an idle window and a ping flood's, 2 s each, curl
    side transfers of 4 MiB and health probes from 127.0.0.2. Bounded by the benchmark's own deadlines
    (a sync test: main() runs its own trio loops and signal handlers, as on the command line)."""
    if shutil.which("curl") is None or shutil.which("openssl") is None:
        pytest.skip("floods.py needs curl and openssl on PATH")
    rows_file = tmp_path / "rows.json"
    argv = ["--no-node", "--attacks", "ping", "--seconds", "2", "--size", "4M", "--json", str(rows_file)]
    assert floods.main(argv) == 0
    out = capsys.readouterr().out
    rows = json.loads(rows_file.read_text())
    assert [(row["attack"], row["server"]) for row in rows] == [
        ("(idle)", "pipe-relay"),
        ("ping", "pipe-relay"),
    ]
    idle, ping = rows
    [ending] = ping["endings"]
    assert (ending["goaway"], ending["goaway_debug"], ending["closed_by_server"]) == (
        ENHANCE_YOUR_CALM,
        "control",
        True,
    ), ending
    assert ping["ended"].startswith("GOAWAY ENHANCE_YOUR_CALM (control) after "), ping["ended"]
    assert "end" not in ping["misses"]
    for row in rows:
        assert row["side_done"] >= 1 and row["sha256_ok"] and not row["side_errors"], row["side_errors"]
        assert row["health_ms"] and row["health_failures"] == 0 and row["cpu_seconds"] > 0
        assert not row["remarks"] and math.isfinite(row["mbps"])
    assert ping["attacker_cpu_seconds"] > 0 and idle["attacker_cpu_seconds"] == 0
    assert ping["idle_mbps"] > 0 and ping["idle_mbps"] != idle["mbps"]  # (its own server's, just before)
    assert "| ping | pipe-relay |" in out and "--attacks ping --seconds 2" in out
