# The hand-off cost benchmark runs, moves every byte on each of its three paths and prints its figures.
# Invariant: a small run (8 MiB, one round, 50 hand-offs) on 127.0.0.1 and Unix sockets only.
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_a_small_run_prints_every_path_and_the_hand_off() -> None:
    result = subprocess.run(
        [sys.executable, "loadtests/handoff_costs.py", "--size", "8M", "--rounds", "1", "--handoffs", "50"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    rows = re.findall(r"^\s+(\d+) MB/s\s+(cpu s/GiB owner [\d.]+)(.*)$", result.stdout, re.M)
    assert len(rows) == 3, result.stdout
    assert all(int(speed) > 0 for speed, _, _ in rows)
    assert [("hop" in rest) for _, _, rest in rows] == [False, True, True]
    assert re.search(
        r"^descriptor hand-off with 1 KiB read: [\d.]+ us .*accept: [\d.]+ us$", result.stdout, re.M
    )
