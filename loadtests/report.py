# The benchmark report: the environment, then markdown tables of the large and small transfers.
# Invariant: formats results (asks only tool versions); a missing figure shows as "–", never guessed.
"""Tables as in the top-level README, section Performance."""

from __future__ import annotations

import argparse
import os
import platform
import statistics

from harness import (  # type: ignore[import-not-found]
    GIB,
    LABELS,
    NODE,
    NODE_VERSION,
    RELAY,
    Server,
    fmt_size,
    relay_command,
    tool_version,
)
from large import CaseResult  # type: ignore[import-not-found]
from small import SMALL_BODY_SIZE, SmallResult  # type: ignore[import-not-found]


def environment(engine: str | None, with_node: bool) -> list[str]:
    """The versions and machine the figures come from, one line each."""
    env = [
        f"pipe-relay: {tool_version([*relay_command(), '--version'])}"
        + (f", --engine {engine}" if engine else ""),
        "curl " + " ".join(tool_version(["curl", "--version"]).split()[1:2]),
        f"Python {platform.python_version()}, {platform.system()} {platform.release()}, "
        f"{os.cpu_count()} CPU(s), load average at start " + " ".join(f"{x:.2f}" for x in os.getloadavg()),
    ]
    if with_node:
        env.insert(1, f"Node piping-server {NODE_VERSION} on node {tool_version(['node', '--version'])}")
    return env


def ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or b == 0:
        return "–"
    return f"{a / b:.2f}x"


def fmt(value: float | None, spec: str) -> str:
    return "–" if value is None else format(value, spec)


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
        head = ["case", "pipe-relay MB/s"]
        if has_node:
            head += ["Node MB/s", "MB/s ratio"]
        head += ["pipe-relay CPU s/GiB"]
        if has_node:
            head += ["Node CPU s/GiB", "CPU ratio"]
        head += ["pipe-relay peak RSS MiB"]
        if has_node:
            head += ["Node peak RSS MiB"]
        out.append("| " + " | ".join(head) + " |")
        out.append("|" + "---|" * len(head))
        for case in args.cases:
            med: dict[str, tuple[float, float, float]] = {}
            for key in keys:
                r = results.get((case, key))
                if r and r.samples:
                    mbps = statistics.median(args.size / s.seconds / 1e6 for s in r.samples)
                    cpu = statistics.median(s.cpu_seconds / (args.size / GIB) for s in r.samples)
                    med[key] = (mbps, cpu, r.peak_rss_kib / 1024)
            rel = med.get(RELAY)
            nod = med.get(NODE)
            row = [case, fmt(rel and rel[0], ".0f")]
            if has_node:
                row += [fmt(nod and nod[0], ".0f"), ratio(rel and rel[0], nod and nod[0])]
            row += [fmt(rel and rel[1], ".2f")]
            if has_node:
                row += [fmt(nod and nod[1], ".2f"), ratio(rel and rel[1], nod and nod[1])]
            row += [fmt(rel and rel[2], ".0f")]
            if has_node:
                row += [fmt(nod and nod[2], ".0f")]
            out.append("| " + " | ".join(row) + " |")
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
                        f"- {case} {LABELS[key]}: MB/s {', '.join(f'{x:.0f}' for x in rounds)}; "
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
                LABELS[key],
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
                    out.append(f"- {LABELS[key]} first error: {run.first_error}")
        out.append("")
    return "\n".join(out)
