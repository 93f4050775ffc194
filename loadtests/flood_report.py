# The flood benchmark's rows and report: what one window measured, the targets it meets, the table.
# Invariant: formats figures only (no I/O but the load average); a missing figure shows as "–", never guessed.
"""Used by floods.py (which runs the windows) and its tests."""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from harness import fmt_size  # type: ignore[import-not-found]
from report import fmt  # type: ignore[import-not-found]

SIDE_ADDRESS = "127.0.0.2"
"""The side transfers' and health probes' source address: another client than the attacker."""
IDLE = "(idle)"
SIDE_TARGET, P99_TARGET, RSS_TARGET, ENDED_TARGET = 70.0, 100.0, 64.0, 2.0
H2_ERRORS = (  # RFC 9113, section 7, codes 0x0-0xd
    "NO_ERROR PROTOCOL_ERROR INTERNAL_ERROR FLOW_CONTROL_ERROR SETTINGS_TIMEOUT STREAM_CLOSED "
    "FRAME_SIZE_ERROR REFUSED_STREAM CANCEL COMPRESSION_ERROR CONNECT_ERROR ENHANCE_YOUR_CALM "
    "INADEQUATE_SECURITY HTTP_1_1_REQUIRED"
)


def percentile(values: Sequence[float], q: float) -> float | None:
    """The nearest-rank q-th percentile (q in 0-100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q / 100 * len(ordered))) - 1]


def code_name(code: int) -> str:
    names = H2_ERRORS.split()
    return names[code] if 0 <= code < len(names) else f"0x{code:x}"


def ending_text(ending: dict[str, Any]) -> str:
    """How one attacker connection ended, from its JSON line (an h2attacks ``Ending``)."""
    if ending.get("notes") and not ending.get("sent"):
        return "not run: " + "; ".join(ending["notes"])
    if ending.get("goaway") is not None:
        debug = f" ({ending['goaway_debug']})" if ending.get("goaway_debug") else ""
        text = f"GOAWAY {code_name(ending['goaway'])}{debug} after {ending['goaway_at']:.2f} s"
        return text if ending.get("closed_by_server") else text + ", not closed"
    if ending.get("closed_by_server"):
        return f"closed after {ending['seconds']:.2f} s"
    return f"never ({ending['seconds']:.0f} s)"


def _ended_after(ending: dict[str, Any]) -> float:
    after = ending.get("ended_after")
    return math.inf if after is None else float(after)


@dataclass
class Row:
    """One window: an attack (or IDLE) against one server, and what was measured during it."""

    attack: str
    server: str
    seconds: float = 0.0
    side_bytes: int = 0
    side_seconds: float = 0.0
    side_done: int = 0
    side_errors: list[str] = field(default_factory=list)
    sha256_ok: bool | None = None
    idle_mbps: float | None = None
    health_ms: list[float] = field(default_factory=list)
    health_failures: int = 0
    rss_before_mib: float = 0.0
    rss_peak_mib: float = 0.0
    cpu_seconds: float = 0.0
    attacker_cpu_seconds: float = 0.0
    """The attacker process's own CPU (it shares the machine with the server and the side transfers)."""
    endings: list[dict[str, Any]] = field(default_factory=list)
    remarks: list[str] = field(default_factory=list)
    load_average: float = 0.0
    """The machine's 1-minute load average at the window's end (other work shares the CPUs)."""

    @property
    def mbps(self) -> float | None:
        return self.side_bytes / self.side_seconds / 1e6 if self.side_seconds > 0 else None

    @property
    def percent_of_idle(self) -> float | None:
        mbps = self.mbps
        return 100 * mbps / self.idle_mbps if mbps is not None and self.idle_mbps else None

    @property
    def rss_growth_mib(self) -> float:
        return max(0.0, self.rss_peak_mib - self.rss_before_mib)

    @property
    def ended(self) -> str:
        """The slowest connection's ending (with ``(slowest of C)`` for several), or what went wrong."""
        if self.attack == IDLE or not self.endings:
            return "–" if self.attack == IDLE else "no report from the attacker"
        many = f" (slowest of {len(self.endings)})" if len(self.endings) > 1 else ""
        return ending_text(max(self.endings, key=_ended_after)) + many

    def misses(self) -> list[str]:
        """The targets this row misses (empty: it meets them all)."""
        pct, p99 = self.percent_of_idle, percentile(self.health_ms, 99)
        missed = {
            "side": pct is None or pct < SIDE_TARGET or bool(self.side_errors) or self.sha256_ok is False,
            "p99": p99 is None or p99 >= P99_TARGET,
            "RSS": self.rss_growth_mib >= RSS_TARGET,
            "end": self.attack != IDLE
            and max(map(_ended_after, self.endings), default=math.inf) > ENDED_TARGET,
        }
        return [target for target, miss in missed.items() if miss]

    def cells(self) -> list[str]:
        missed = self.misses()
        return [
            self.attack,
            self.server,
            fmt(self.mbps, ".0f"),
            fmt(self.percent_of_idle, ".0f"),
            fmt(percentile(self.health_ms, 50), ".1f"),
            fmt(percentile(self.health_ms, 99), ".1f"),
            f"{self.health_failures}/{len(self.health_ms)}",
            f"{self.rss_growth_mib:.1f}",
            f"{self.cpu_seconds:.2f}",
            f"{self.attacker_cpu_seconds:.2f}",
            self.ended,
            "miss: " + ", ".join(missed) if missed else "pass",
            f"{self.load_average:.1f}",
        ]

    def notes(self) -> list[str]:
        notes = [f"{len(self.side_errors)} side error(s), first: {e}" for e in self.side_errors[:1]]
        notes += ["the first side transfer's sha256 differs"] if self.sha256_ok is False else []
        return notes + self.remarks

    def as_json(self) -> dict[str, Any]:
        extra = {"mbps": self.mbps, "percent_of_idle": self.percent_of_idle, "ended": self.ended}
        extra |= {"p50_ms": percentile(self.health_ms, 50), "p99_ms": percentile(self.health_ms, 99)}
        extra |= {"rss_growth_mib": self.rss_growth_mib, "misses": self.misses()}
        return dataclasses.asdict(self) | extra


HEAD = ["attack", "server", "side MB/s", "% of idle", "health p50 ms", "health p99 ms", "health fails"]
HEAD += ["RSS growth MiB", "server CPU s", "attacker CPU s", "attacker ended", "targets", "load"]


def markdown_table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    return [f"| {' | '.join(line)} |" for line in [head, ["---"] * len(head), *rows]]


def report(args: argparse.Namespace, command: str, env: list[str], rows: list[Row]) -> str:
    order = [IDLE, *args.attacks]
    table = sorted(rows, key=lambda r: order.index(r.attack))  # (stable: the servers in run order)
    out = [f"Command: `{command}`", ""]
    out += [f"- {line}" for line in env]
    out += [
        "- HTTPS: one self-signed certificate (tls.py); the attacker offers ALPN h2 (http/1.1 for pipelined)",
        "- load average at the end " + " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "",
        f"Windows of {args.seconds:g} s, each on a fresh server: {args.connections} attacking "
        f"connection(s) from 127.0.0.1 to the HTTPS port; {fmt_size(args.size)} side transfers back to back "
        f"and GET /version every 100 ms from {SIDE_ADDRESS} to the plain port (a failed probe counts as "
        f"2000 ms). % of idle: over the median of 3 side transfers on the same server just before its "
        f"attack. Targets: side >= {SIDE_TARGET:g} % of idle, health p99 < {P99_TARGET:g} ms, RSS "
        f"growth < {RSS_TARGET:g} MiB, attacker ended (GOAWAY or close) within {ENDED_TARGET:g} s. Load: "
        "the machine's 1-minute load average at the window's end.",
        "",
    ]
    out += markdown_table(HEAD, [r.cells() for r in table])
    notes = [f"- {r.attack} {r.server}: {note}" for r in rows for note in r.notes()]
    return "\n".join([*out, "", *notes] if notes else out)
