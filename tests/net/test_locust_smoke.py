# A 10-second Locust smoke run against a real server: transfers complete with correct sizes.
# It asserts correctness and counts, never a speed (speed is for loadtests/bench.py).
from __future__ import annotations

import csv
import os
import re
import sys
from pathlib import Path

import pytest
import trio

from tests.clients import Relay

LOCUSTFILE = Path(__file__).resolve().parents[2] / "loadtests" / "locustfile.py"


@pytest.fixture
def engine() -> str:
    """(The locustfile is under test here, not the engine: the buffer engine only, 10 s saved.)"""
    return "buffer"


async def test_locust_smoke_run(relay: Relay, tmp_path: Path) -> None:
    size, n = 65536, 2
    env = {**os.environ, "PIPE_SIZE": str(size), "PIPE_N": str(n), "PIPE_TIMEOUT": "20"}
    locust = Path(sys.executable).with_name("locust")
    command = [
        str(locust), "-f", str(LOCUSTFILE), "--headless", "-u", "3", "-r", "3", "-t", "4s",
        "--host", relay.url, "--only-summary", "--csv", str(tmp_path / "run"), "--stop-timeout", "10",
    ]  # fmt: skip
    with trio.fail_after(60):
        result = await trio.run_process(
            command, env=env, capture_stdout=True, capture_stderr=True, check=False
        )
    output = (result.stdout + result.stderr).decode()
    assert result.returncode == 0, output[-2000:]
    with (tmp_path / "run_stats.csv").open() as stats_file:
        rows = {row["Name"]: row for row in csv.DictReader(stats_file)}
    row = rows[f"sender + {n} receiver(s), {size} bytes"]  # a periodic snapshot of the stats
    assert int(row["Failure Count"]) == 0
    assert float(row["Average Content Size"]) == size * n
    summary = re.search(r"pipe-relay load: (\d+) transfers ok, (\d+) failed", output)
    assert summary is not None, output[-2000:]
    assert int(summary[1]) >= 3
    assert int(summary[2]) == 0
