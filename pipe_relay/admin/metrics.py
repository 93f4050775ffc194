# `GET /metrics`: the tally of every worker, summed, in the Prometheus text format (by prometheus-client).
# Invariant: a scrape only reads the tally; every family is made anew from it (no state between scrapes).
from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from prometheus_client.core import (
    CollectorRegistry,
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import generate_latest
from prometheus_client.utils import floatToGoString

from ..core import tally
from ..core.tally import HistogramTotals, MutableSlots

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""The classic text format (every Prometheus reads it); our names need none of 1.0.0's escaping."""


@dataclass(frozen=True, slots=True)
class Facts:
    """What a scrape says besides the tally: the server's settings."""

    version: str
    engine: str
    limits: Mapping[str, float] = field(default_factory=dict)
    """Each configured limit by its name (`max_pending`...), as configured for the whole server."""
    workers: int = 1
    alive: int = 1


def exposition(rows: Sequence[MutableSlots], facts: Facts) -> bytes:
    """The text a scrape gets: every row (worker) of the tally summed."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(tally.total(rows), facts))
    return generate_latest(registry)


class _Collector:
    def __init__(self, values: list[int], facts: Facts) -> None:
        self.values = values
        self.facts = facts

    def collect(self) -> Iterator[Metric]:
        v, facts = self.values, self.facts
        info = GaugeMetricFamily(
            "pipe_relay_info", "The server's version and byte engine.", labels=["version", "engine"]
        )
        info.add_metric([facts.version, facts.engine], 1)
        yield info
        workers = GaugeMetricFamily(
            "pipe_relay_workers",
            "Worker processes: configured, and alive (accepting connections).",
            labels=["state"],
        )
        workers.add_metric(["configured"], facts.workers)
        workers.add_metric(["alive"], facts.alive)
        yield workers
        limit = GaugeMetricFamily("pipe_relay_limit", "The configured limits, by flag.", labels=["name"])
        for name, value in facts.limits.items():
            limit.add_metric([name], value)
        yield limit
        pipes = GaugeMetricFamily("pipe_relay_pipes", "Pipes now, by state.", labels=["state"])
        pipes.add_metric(["pending"], v[tally.PENDING])
        pipes.add_metric(["active"], v[tally.ACTIVE])
        yield pipes
        yield _labelled(
            GaugeMetricFamily,
            "pipe_relay_connections",
            "Open client connections, by protocol.",
            "protocol",
            tally.by_name(v, tally.CONNECTIONS, tally.PROTOCOLS),
        )
        yield CounterMetricFamily("pipe_relay_requests", "Requests answered.", v[tally.REQUESTS])
        yield CounterMetricFamily(
            "pipe_relay_transfers_started", "Transfers started (all parties there).", v[tally.STARTED]
        )
        yield CounterMetricFamily(
            "pipe_relay_transfers_completed", "Transfers whose whole body went through.", v[tally.COMPLETED]
        )
        yield _labelled(
            CounterMetricFamily,
            "pipe_relay_transfers_aborted",
            "Transfers started that did not complete, by reason.",
            "reason",
            tally.by_name(v, tally.ABORTED, tally.ABORT_REASONS),
        )
        yield CounterMetricFamily(
            "pipe_relay_received_bytes", "Body bytes read from senders.", v[tally.BYTES_IN]
        )
        yield CounterMetricFamily(
            "pipe_relay_sent_bytes", "Body bytes written to receivers (all of them).", v[tally.BYTES_OUT]
        )
        errors = tally.errors(v)
        yield _labelled(
            CounterMetricFamily,
            "pipe_relay_errors",
            "Rejections sent, by X-Pipe-Error code.",
            "code",
            {code.value: count for code, count in errors.items()},
        )
        yield _labelled(
            CounterMetricFamily,
            "pipe_relay_rejections",
            "Rejections by a limit, by the limit's name.",
            "limit",
            {name: errors[code] for code, name in tally.LIMITS.items()},
        )
        yield _labelled(
            CounterMetricFamily,
            "pipe_relay_abuse_ended",
            "Connections ended for spending a flood budget (or breaking a frame rule), by kind.",
            "kind",
            tally.by_name(v, tally.ABUSE, tally.ABUSE_KINDS),
        )
        yield _histogram(
            "pipe_relay_transfer_duration_seconds",
            "How long started transfers took.",
            tally.histogram(v, tally.DURATION),
        )
        yield _histogram(
            "pipe_relay_transfer_size_bytes",
            "Body bytes read from the sender of each ended transfer.",
            tally.histogram(v, tally.SIZE),
        )
        yield _histogram(
            "pipe_relay_transfer_receivers",
            "Receivers per started transfer.",
            tally.histogram(v, tally.RECEIVERS),
        )


def _labelled(
    kind: type[CounterMetricFamily] | type[GaugeMetricFamily],
    name: str,
    documentation: str,
    label: str,
    values: Mapping[str, int],
) -> Metric:
    family = kind(name, documentation, labels=[label])
    for value_name, value in values.items():
        family.add_metric([value_name], value)
    return family


def _histogram(name: str, documentation: str, totals: HistogramTotals) -> Metric:
    buckets = [(_bound(bound), float(count)) for bound, count in totals.buckets]
    return HistogramMetricFamily(name, documentation, buckets=buckets, sum_value=totals.sum)


def _bound(bound: float) -> str:
    return str(floatToGoString(bound))  # type: ignore[no-untyped-call]  # ("1.0", "+Inf": as prometheus-client's own histograms write them)
