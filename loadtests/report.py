# The benchmark report: the environment, then markdown tables of the large and small transfers.
# Invariant: formats results (asks only tool versions); a missing figure shows as "–", never guessed.
"""Tables as in docs/performance.md (the newest one is copied into the README)."""

from __future__ import annotations

import argparse
import os
import platform
import statistics

from cref import compiler  # type: ignore[import-not-found]
from harness import (  # type: ignore[import-not-found]
    CREFS,
    GIB,
    NODE,
    NODE_VERSION,
    RELAY,
    Server,
    fmt_size,
    label,
    relay_command,
    tool_version,
)
from large import CaseResult  # type: ignore[import-not-found]
from small import SMALL_BODY_SIZE, SmallResult  # type: ignore[import-not-found]


def environment(engine: str | None, with_node: bool, with_cref: bool) -> list[str]:
    """The versions and machine the figures come from, one line each."""
    env = [
        f"pipe-relay: {tool_version([*relay_command(), '--version'])}"
        + (f", --engine {engine}" if engine else ""),
        "curl " + " ".join(tool_version(["curl", "--version"]).split()[1:2]),
        f"Python {platform.python_version()}, {platform.system()} {platform.release()}, "
        f"{os.cpu_count()} CPU(s), load average at start " + " ".join(f"{x:.2f}" for x in os.getloadavg()),
    ]
    if with_cref:
        cc = compiler() or "cc"
        env.insert(1, f"C reference relay: loadtests/cref.c, {tool_version([cc, '--version'])} -O2")
    if with_node:
        env.insert(1, f"Node piping-server {NODE_VERSION} on node {tool_version(['node', '--version'])}")
    return env


def ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or b == 0:
        return "–"
    return f"{a / b:.2f}x"


def fmt(value: float | None, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def case_label(args: argparse.Namespace, case: str) -> str:
    """The case with its transport when not plain HTTP: ``file-n1 (https/1.1)``."""
    transport = getattr(args, "transport", None)
    return f"{case} ({transport.label})" if transport else case


def large_table(
    args: argparse.Namespace, servers: list[Server], results: dict[tuple[str, str], CaseResult]
) -> list[str]:
    """One row per case and server: MB/s, CPU s/GiB, peak RSS, both over Node's, % of the best C mode."""
    has_node = any(s.key == NODE for s in servers)
    has_cref = any(s.key in CREFS for s in servers)
    head = ["case", "server", "MB/s", "CPU s/GiB", "peak RSS MiB"]
    head += ["MB/s ÷ Node", "CPU ÷ Node"] if has_node else []
    head += ["% of best C"] if has_cref else []
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for case in args.cases:
        med: dict[str, tuple[float, float, float]] = {}
        for s in servers:
            r = results.get((case, s.key))
            if r and r.samples:
                mbps = statistics.median(args.size / x.seconds / 1e6 for x in r.samples)
                cpu = statistics.median(x.cpu_seconds / (args.size / GIB) for x in r.samples)
                med[s.key] = (mbps, cpu, r.peak_rss_kib / 1024)
        nod = med.get(NODE)
        best_c = max((med[k][0] for k in CREFS if k in med), default=None)
        for s in servers:
            got = med.get(s.key)
            row = [
                case_label(args, case),
                label(s.key),
                fmt(got and got[0], ".0f"),
                fmt(got and got[1], ".2f"),
            ]
            row += [fmt(got and got[2], ".0f")]
            if has_node:
                row += [ratio(got and got[0], nod and nod[0]), ratio(got and got[1], nod and nod[1])]
            if has_cref:
                row += [f"{100 * got[0] / best_c:.0f} %" if got and best_c else "–"]
            out.append("| " + " | ".join(row) + " |")
    return out


def report(
    args: argparse.Namespace,
    command: str,
    servers: list[Server],
    results: dict[tuple[str, str], CaseResult],
    small: dict[str, list[SmallResult]],
    env: list[str],
) -> str:
    keys = [s.key for s in servers]
    has_node = NODE in keys
    out: list[str] = []
    out.append(f"Command: `{command}`")
    out.append("")
    out += [f"- {line}" for line in env]
    out.append("")
    if results:
        out.append(
            f"Large transfers: {fmt_size(args.size)} random, median of {args.rounds} round(s), "
            "one transfer at a time, servers round-robin. MB/s = 10^6 source bytes per second "
            "(sender start to last receiver exit); CPU = server utime+stime per GiB of source bytes; "
            "RSS = server peak RSS during the case."
        )
        out.append("")
        if any(key in CREFS for key in keys):
            out.append(
                "C rw and C splice: loadtests/cref.c, a minimal blocking C relay, one transfer at a time "
                "(rw: read/write through one 1 MiB buffer; splice: splice/tee, Content-Length bodies only, "
                "so no chunked case: –). % of best C = MB/s over the faster C mode's in the case."
            )
            out.append("")
        out += large_table(args, servers, results)
        out.append("")
        out.append("Per-round MB/s (sorted), for the spread:")
        out.append("")
        for case in args.cases:
            for key in keys:
                r = results.get((case, key))
                if r and r.samples:
                    rounds = sorted(args.size / s.seconds / 1e6 for s in r.samples)
                    cpus = sorted(s.cpu_seconds / (args.size / GIB) for s in r.samples)
                    out.append(
                        f"- {case_label(args, case)} {label(key)}: "
                        f"MB/s {', '.join(f'{x:.0f}' for x in rounds)}; "
                        f"CPU s/GiB {', '.join(f'{x:.2f}' for x in cpus)}; "
                        f"sha256 {'ok' if r.verified else 'not checked'}"
                    )
        out.append("")
    if small:
        out.append(
            f"Small transfers: {SMALL_BODY_SIZE}-byte bodies, {args.small_pairs} concurrent sender/receiver "
            f"pairs, {args.small_seconds:g} s per run, median of {args.small_rounds} run(s); fresh "
            "connections with Connection: close; every received body compared with the one sent."
        )
        out.append("")
        out.append(
            "| server | transfers/s | ratio | server CPU s per 1000 transfers | server CPU % "
            "| client CPU % | peak RSS MiB | errors |"
        )
        out.append("|---|---|---|---|---|---|---|---|")
        med_tps: dict[str, float] = {}
        for key in keys:
            runs = small.get(key)
            if runs:
                med_tps[key] = statistics.median(r.per_second for r in runs)
        for key in keys:
            runs = small.get(key)
            if not runs:
                continue
            mid = sorted(runs, key=lambda r: r.per_second)[len(runs) // 2]
            per_k = mid.cpu_seconds / mid.transfers * 1000 if mid.transfers else None
            row = [
                label(key),
                f"{med_tps[key]:.0f}",
                ratio(med_tps.get(RELAY), med_tps.get(NODE)) if key == RELAY and has_node else "",
                fmt(per_k, ".3f"),
                f"{100 * mid.cpu_seconds / mid.seconds:.0f}",
                f"{100 * mid.client_cpu_seconds / mid.seconds:.0f}",
                f"{max(r.peak_rss_kib for r in runs) / 1024:.0f}",
                str(sum(r.errors for r in runs)),
            ]
            out.append("| " + " | ".join(row) + " |")
        for key in keys:
            for run in small.get(key, []):
                if run.first_error:
                    out.append(f"- {label(key)} first error: {run.first_error}")
        out.append("")
    return "\n".join(out)
