# Concurrent large transfers with curl: many n=1 pairs at once, then many n=3 fan-outs at once, per server.
# Invariant: every receiver's byte count (in the untimed first round its sha256) matches the source.
"""bench.py ``--concurrent``: ``--concurrent-pairs`` (16) sender/receiver pairs at once, then
``--concurrent-fanouts`` (8) senders to ``?n=3`` at once, each transfer ``--concurrent-size`` (64 MiB)
of random bytes sent with ``curl -T FILE``, servers taken in turn. All receivers of a round are started
first; once their connections are established every sender is started, all at one moment (each
waits for its line from one FIFO, written at once). Per server and scenario, one
untimed round writes every receiver's output to a file and checks its sha256; the timed rounds write to
/dev/null and check the byte count curl reports. Figures:

- aggregate MB/s: source bytes of the round (10^6) per second from the first sender's start to the last
  receiver's exit (median over the rounds); delivered MB/s counts every receiver's bytes
- CPU s/GiB: the server's utime+stime over the round per GiB of source bytes (median)
- per-transfer MB/s: each transfer's size over its sender's start to its last receiver's exit, over
  all timed rounds: min, median, max, and max/min (how evenly the server shares itself)

The C reference relay serves one transfer at a time, so it is left out of this mode.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import statistics
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from harness import (  # type: ignore[import-not-found]
    CLK_TCK,
    GIB,
    NODE,
    BenchError,
    Server,
    cpu_ticks,
    established_to_port,
    fmt_size,
    label,
    sha256_file,
)

CONNECT_WAIT_DEADLINE = 10.0


@dataclass
class Scenario:
    name: str
    n: int
    transfers: int


@dataclass
class Round:
    seconds: float
    cpu_seconds: float
    rates: list[float]  # MB/s of each transfer


@dataclass
class ScenarioResult:
    rounds: list[Round] = field(default_factory=list)
    verified: bool = False


class _Proc:
    """A curl process and the moment it exited, waited for in its own thread."""

    def __init__(self, cmd: list[str], deadline: float) -> None:
        self.popen = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        self.deadline = deadline
        self.out = b""
        self.err = b""
        self.ended = 0.0
        self.thread = threading.Thread(target=self._wait, daemon=True)
        self.thread.start()

    def _wait(self) -> None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.out, self.err = self.popen.communicate(timeout=max(0.1, self.deadline - time.monotonic()))
        self.ended = time.perf_counter()

    def join(self, what: str) -> bytes:
        self.thread.join(max(0.1, self.deadline - time.monotonic() + 5))
        if self.popen.poll() is None:
            raise BenchError(f"{what} still running past its deadline")
        if self.popen.returncode != 0:
            msg = self.err.decode(errors="replace").strip()
            raise BenchError(f"{what} exited with status {self.popen.returncode}: {msg}")
        return self.out

    def kill(self) -> None:
        if self.popen.poll() is None:
            with contextlib.suppress(OSError):
                self.popen.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=5)


def run_round(
    server: Server,
    sc: Scenario,
    source: Path,
    size: int,
    sha: str,
    max_time: float,
    workdir: Path,
    verify: bool,
) -> Round:
    """One round: sc.transfers transfers of sc.n receivers each, all at once, on ``server``."""
    curl = ["curl", "-sS", "--max-time", f"{max_time:g}"]
    deadline = time.monotonic() + max_time + 30
    paths = [
        f"/conc-{sc.name}-{i}-{secrets.token_hex(6)}" + (f"?n={sc.n}" if sc.n > 1 else "")
        for i in range(sc.transfers)
    ]
    files = [[workdir / f"conc-{t}-{r}.bin" for r in range(sc.n)] for t in range(sc.transfers)]
    procs: list[_Proc] = []
    before = established_to_port(server.port)
    try:
        receivers = [
            [
                _Proc(
                    [*curl, "-o", str(f) if verify else os.devnull, "-w", "%{size_download}", server.url(p)],
                    deadline,
                )
                for f in row
            ]
            for p, row in zip(paths, files, strict=True)
        ]
        procs += [r for row in receivers for r in row]
        wait_until = time.monotonic() + CONNECT_WAIT_DEADLINE
        while before >= 0 and time.monotonic() < wait_until:
            if established_to_port(server.port) >= before + len(procs):
                break
            if any(p.popen.poll() is not None for p in procs):
                break
            time.sleep(0.005)
        # Every sender waits at one gate (a line each from a FIFO) and all start when it opens:
        # spawned one by one, the first would run alone for a while and look faster than the rest.
        gate = workdir / f"gate-{secrets.token_hex(4)}"
        os.mkfifo(gate)
        gate_fd = os.open(gate, os.O_RDWR)  # (a reader's open never blocks while this is open)
        try:
            senders = [
                _Proc(
                    [
                        "sh",
                        "-c",
                        'read go < "$0"; exec "$@"',
                        str(gate),
                        *curl,
                        "-T",
                        str(source),
                        "-o",
                        os.devnull,
                        server.url(p),
                    ],
                    deadline,
                )
                for p in paths
            ]
            procs += senders
            cpu_before = cpu_ticks(server.pid)
            t0 = time.perf_counter()
            os.write(gate_fd, b"go\n" * len(senders))
        finally:
            os.close(gate_fd)
            gate.unlink()
        starts = [t0] * len(senders)
        counts = [
            [int(r.join(f"{sc.name} receiver {t}.{i}").decode().strip() or "0") for i, r in enumerate(row)]
            for t, row in enumerate(receivers)
        ]
        for t, s in enumerate(senders):
            s.join(f"{sc.name} sender {t}")
        cpu_after = cpu_ticks(server.pid)
    finally:
        for p in procs:
            p.kill()
    server.check_alive()
    for t, row in enumerate(counts):
        for i, got in enumerate(row):
            if got != size:
                raise BenchError(
                    f"{server.label} {sc.name}: receiver {t}.{i} got {got} bytes, expected {size}"
                )
    if verify:
        for t, row in enumerate(files):
            for i, f in enumerate(row):
                digest = sha256_file(f)
                f.unlink()
                if digest != sha:
                    raise BenchError(f"{server.label} {sc.name}: receiver {t}.{i} sha256 {digest} != source")
    ends = [max(r.ended for r in row) for row in receivers]
    rates = [size / (end - start) / 1e6 for start, end in zip(starts, ends, strict=True)]
    return Round(seconds=max(ends) - t0, cpu_seconds=(cpu_after - cpu_before) / CLK_TCK, rates=rates)


def run_concurrent(
    servers: list[Server],
    scenarios: list[Scenario],
    rounds: int,
    source: Path,
    size: int,
    sha: str,
    max_time: float,
    workdir: Path,
    verify: bool,
) -> dict[tuple[str, str], ScenarioResult]:
    """Every scenario on every server: the untimed sha256 round (unless not ``verify``), then
    ``rounds`` timed rounds, servers in turn, each printed as it ends."""
    results: dict[tuple[str, str], ScenarioResult] = {}
    for sc in scenarios:
        for s in servers:
            results[(sc.name, s.key)] = ScenarioResult()
            if verify:
                run_round(s, sc, source, size, sha, max_time, workdir, verify=True)
                results[(sc.name, s.key)].verified = True
                print(f"# concurrent {sc.name} {s.label}: sha256 ok", flush=True)
        for rnd in range(rounds):
            for s in servers:
                r = run_round(s, sc, source, size, sha, max_time, workdir, verify=False)
                results[(sc.name, s.key)].rounds.append(r)
                print(
                    f"# concurrent {sc.name} round {rnd + 1}/{rounds} {s.label}: "
                    f"{sc.transfers * size / r.seconds / 1e6:.0f} MB/s aggregate, "
                    f"{r.cpu_seconds / (sc.transfers * size / GIB):.2f} CPU s/GiB, per transfer "
                    f"{min(r.rates):.0f}-{max(r.rates):.0f} MB/s",
                    flush=True,
                )
    return results


def concurrent_report(
    servers: list[Server],
    scenarios: list[Scenario],
    results: dict[tuple[str, str], ScenarioResult],
    size: int,
    rounds: int,
) -> str:
    """The concurrency table in markdown, one row per scenario and server."""
    has_node = any(s.key == NODE for s in servers)
    out = [
        f"Concurrent transfers: {fmt_size(size)} random per transfer, `curl -T FILE`, all of a round at "
        f"once, servers in turn, median of {rounds} round(s). Aggregate MB/s = 10^6 source bytes per second "
        "(first sender start to last receiver exit), delivered counts every receiver; CPU = server "
        "utime+stime per GiB of source bytes; per-transfer MB/s over all timed rounds. The C reference "
        "relay serves one transfer at a time and is not in this table.",
        "",
    ]
    head = ["scenario", "server", "aggregate MB/s", "delivered MB/s", "CPU s/GiB"]
    head += ["per-transfer MB/s min / median / max", "max/min"]
    if has_node:
        head += ["aggregate ÷ Node", "CPU ÷ Node"]
    out += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for sc in scenarios:
        source_bytes = sc.transfers * size
        med: dict[str, tuple[float, float]] = {}
        for s in servers:
            r = results.get((sc.name, s.key))
            if r and r.rounds:
                med[s.key] = (
                    statistics.median(source_bytes / x.seconds / 1e6 for x in r.rounds),
                    statistics.median(x.cpu_seconds / (source_bytes / GIB) for x in r.rounds),
                )
        for s in servers:
            r = results.get((sc.name, s.key))
            if s.key not in med or r is None:
                continue
            mbps, cpu = med[s.key]
            rates = [x for rnd in r.rounds for x in rnd.rates]
            row = [
                f"{sc.transfers} x n={sc.n}",
                label(s.key),
                f"{mbps:.0f}",
                f"{mbps * sc.n:.0f}",
                f"{cpu:.2f}",
            ]
            row += [f"{min(rates):.0f} / {statistics.median(rates):.0f} / {max(rates):.0f}"]
            row += [f"{max(rates) / min(rates):.2f}"]
            if has_node:
                nod = med.get(NODE)
                row += (
                    [f"{mbps / nod[0]:.2f}x", f"{cpu / nod[1]:.2f}x"]
                    if nod and nod[0] and nod[1]
                    else ["–", "–"]
                )
            out.append("| " + " | ".join(row) + " |")
    checked = [
        f"{sc.name} {label(s.key)}" for sc in scenarios for s in servers if results[(sc.name, s.key)].verified
    ]
    out += ["", "sha256 checked in an untimed round: " + (", ".join(checked) if checked else "none"), ""]
    return "\n".join(out)
