# Locust's fan-out figures for pipe-relay and the Node piping-server side by side, servers in turn.
# Invariant: a figure is locust's own count of verified transfers (locustfile.py); CPU is read from /proc.
"""Run: ``.venv/bin/python loadtests/locust_compare.py --users 20 --seconds 30 --rounds 2``

Each round runs the same headless locust (``loadtests/locustfile.py``: a sender plus ``--n``
receivers on fresh paths, every body's size and sha256 checked) against each server for
``--seconds``; the table shows the median transfers/s, MB/s delivered to receivers, failures and the
server's CPU seconds per GiB delivered. Locust (gevent, http.client, sha256 in Python) is the heavier
side here: the figures say what a locust user sees, the large-case benchmark what the servers can do.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from harness import (  # type: ignore[import-not-found]
    CLK_TCK,
    GIB,
    NODE,
    RELAY,
    BenchError,
    Server,
    cpu_ticks,
    label,
    start_relay,
    stop_server,
)
from node import DEFAULT_NODE_DIR, start_node  # type: ignore[import-not-found]

LOCUSTFILE = Path(__file__).resolve().with_name("locustfile.py")
_FIGURES = re.compile(
    rb"pipe-relay load: (\d+) transfers ok, (\d+) failed, ([\d.]+) transfers/s, ([\d.]+) MB/s"
)


def locust_round(server: Server, args: argparse.Namespace) -> tuple[int, int, float, float, float]:
    """One headless locust run: (ok, failed, transfers/s, MB/s delivered, server CPU s per GiB delivered)."""
    locust = Path(sys.executable).with_name("locust")
    env = {**os.environ, "PIPE_N": str(args.n), "PIPE_SIZE": str(args.size)}
    command = [
        str(locust), "-f", str(LOCUSTFILE), "--headless", "-u", str(args.users), "-r", str(args.users),
        "-t", f"{args.seconds:g}s", "--host", f"http://127.0.0.1:{server.port}", "--only-summary",
    ]  # fmt: skip
    before = cpu_ticks(server.pid)
    done = subprocess.run(command, env=env, capture_output=True, timeout=args.seconds + 60, check=False)
    cpu = (cpu_ticks(server.pid) - before) / CLK_TCK
    found = _FIGURES.search(done.stdout + done.stderr)
    if found is None:
        raise BenchError(f"locust printed no figures for {server.label}:\n{done.stderr[-2000:].decode()}")
    ok, failed = int(found[1]), int(found[2])
    delivered = ok * args.size * args.n
    return ok, failed, float(found[3]), float(found[4]), cpu / (delivered / GIB) if delivered else 0.0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--users", type=int, default=20)
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--n", type=int, default=3, help="receivers per transfer")
    p.add_argument("--size", type=int, default=1 << 20, help="body bytes")
    args = p.parse_args(argv)
    figures: dict[str, list[tuple[int, int, float, float, float]]] = {RELAY: [], NODE: []}
    with tempfile.TemporaryDirectory(prefix="pipe-relay-locust-") as tmp:
        servers: list[Server] = []
        try:
            servers.append(start_relay(Path(tmp), None))
            servers.append(start_node(Path(tmp), DEFAULT_NODE_DIR))
            for rnd in range(args.rounds):
                for server in servers:
                    got = locust_round(server, args)
                    figures[server.key].append(got)
                    print(
                        f"# round {rnd + 1} {server.label}: {got[2]:.1f} transfers/s, {got[1]} failed",
                        flush=True,
                    )
        finally:
            for server in servers:
                stop_server(server)
    print(f"\nLocust: {args.users} users, each a sender + {args.n} receivers of {args.size} bytes, "
          f"{args.seconds:g} s per run, median of {args.rounds}; every body's sha256 checked.\n")  # fmt: skip
    print("| server | transfers/s | MB/s delivered | failed | server CPU s per GiB delivered |")
    print("|---|---|---|---|---|")
    for key, runs in figures.items():
        print(
            f"| {label(key)} | {statistics.median(r[2] for r in runs):.1f} "
            f"| {statistics.median(r[3] for r in runs):.1f} | {sum(r[1] for r in runs)} "
            f"| {statistics.median(r[4] for r in runs):.2f} |"
        )
    return 1 if any(r[1] for runs in figures.values() for r in runs) else 0


if __name__ == "__main__":
    sys.exit(main())
