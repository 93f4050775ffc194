# The benchmark's command line: pipe-relay against the Node piping-server and a C reference relay.
# Invariant: every server is stopped and every curl killed on any exit (error, Ctrl-C, SIGTERM).
"""Throughput benchmark: pipe-relay against the Node piping-server, side by side on 127.0.0.1, with
a minimal blocking C relay (``cref.c``, built with cc on first use) in two modes as the measuring
stick: ``C rw`` (read/write through one 1 MiB buffer) and ``C splice`` (splice/tee; Content-Length
bodies only, so it skips the chunked cases).

The servers are started idle. Large transfers are taken one at a time, round-robin between the
servers, with real curl processes:

- ``file-n1``     ``curl -T FILE``, one receiver
- ``chunked-n1``  ``cat FILE | curl -T -`` (chunked request body), one receiver
- ``file-n3``     ``curl -T FILE`` to ``?n=3``, three receivers
- ``chunked-n3``  ``cat FILE | curl -T -`` to ``?n=3``, three receivers

Receivers are started first; once their connections are established the sender starts. A transfer's
time runs from the start of the sender to the exit of the last receiver. Per case and server, one
untimed warm-up transfer writes every receiver's output to a file and checks its sha256 against the
source; the timed rounds write to /dev/null and check the byte count that curl reports. Results are
medians over the rounds:

- MB/s: source bytes (10^6 bytes) per second of wall time
- CPU s/GiB: the server process's utime+stime (/proc/PID/stat) per GiB of source bytes
- peak RSS: the server's VmHWM over the case (reset via /proc/PID/clear_refs before it), else the
  largest sampled VmRSS
- ÷ Node: MB/s and CPU s/GiB over Node's for the case; % of best C: MB/s over the faster C mode's

The small-transfers mode runs 50 concurrent sender/receiver pairs of 1 KiB bodies for a bounded time
(raw HTTP/1.1 over non-blocking sockets driven by one selector loop, every received body compared
with the one sent) and reports transfers per second (pipe-relay and Node only).

``--tls`` runs the large cases over HTTPS HTTP/1.1 instead (tls.py: a self-signed certificate made
with openssl, curl ``--cacert CRT --http1.1``), pipe-relay and Node only (the C relay has no TLS);
the cases are labelled ``file-n1 (https/1.1)`` and so on. No small transfers with it.

``--concurrent`` runs the concurrency mode instead (concurrency.py: many transfers at once, pipe-relay
and Node only, as the C relay serves one transfer at a time).

Run:  .venv/bin/python loadtests/bench.py --size 256M --rounds 3
Only the Python 3.11 standard library is used. Every curl has --max-time, every wait a deadline, and
both servers are stopped in a finally block (also on Ctrl-C and SIGTERM).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import shlex
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from concurrency import Scenario, concurrent_report, run_concurrent  # type: ignore[import-not-found]
from cref import CrefBuildError, build_cref  # type: ignore[import-not-found]
from harness import (  # type: ignore[import-not-found]
    CREFS,
    GIB,
    NODE,
    NODE_VERSION,
    RELAY,
    BenchError,
    Server,
    checkout_key,
    fmt_size,
    make_source,
    parse_size,
    start_cref,
    start_relay,
    stop_server,
    tool_version,
    variant_key,
)
from large import ALL_CASES, CaseResult, CurlRunner, run_case  # type: ignore[import-not-found]
from node import DEFAULT_NODE_DIR, NODE_PACKAGE, start_node  # type: ignore[import-not-found]
from report import environment, report  # type: ignore[import-not-found]
from small import SmallResult, run_small  # type: ignore[import-not-found]
from tls import (  # type: ignore[import-not-found]
    H2C,
    TRANSPORTS,
    h2c_environment,
    make_cert,
    start_node_tls,
    start_relay_tls,
    tls_environment,
)


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Benchmark pipe-relay against the Node piping-server and a C reference relay with curl "
        "on 127.0.0.1.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--size", type=parse_size, default=GIB, help="source file size (e.g. 1G, 256M, 65536)")
    p.add_argument("--rounds", type=int, default=5, help="timed rounds per case and server (median)")
    p.add_argument(
        "--cases",
        default=",".join(ALL_CASES),
        help="comma list of " + ", ".join(ALL_CASES) + "; none: only the small-transfers mode",
    )
    p.add_argument("--engine", default=None, help="pass --engine X to pipe-relay (not passed unless given)")
    p.add_argument(
        "--also-engine",
        action="append",
        default=[],
        choices=["auto", "splice", "buffer"],
        help="one more pipe-relay with --engine X in the same round-robin (repeatable; large cases only)",
    )
    p.add_argument(
        "--also-checkout",
        action="append",
        default=[],
        type=Path,
        help="one more pipe-relay run from this checkout (its own code: `git worktree add DIR COMMIT`) "
        "in the same round-robin, for before/after figures (repeatable)",
    )
    p.add_argument(
        "--also-workers",
        action="append",
        default=[],
        type=int,
        help="one more pipe-relay with --workers N in the same round-robin (repeatable; plain HTTP only)",
    )
    p.add_argument(
        "--also-args",
        action="append",
        default=[],
        help="one more pipe-relay with these extra flags in the same round-robin, e.g. "
        "'--policy FILE' (repeatable; plain HTTP only)",
    )
    p.add_argument(
        "--h2c",
        action="store_true",
        help="the large cases over HTTP/2 by prior knowledge on the plain port (pipe-relay only)",
    )
    p.add_argument("--max-time", type=float, default=300.0, help="curl --max-time per process, seconds")
    p.add_argument(
        "--tls",
        nargs="?",
        const="http/1.1",
        choices=list(TRANSPORTS),
        default=None,
        help="the large cases over HTTPS with this protocol (bare --tls: http/1.1); pipe-relay and Node "
        "only, no small transfers",
    )
    p.add_argument(
        "--small",
        action=argparse.BooleanOptionalAction,
        default=argparse.SUPPRESS,
        help="small-transfers mode (default: on, off with --tls)",
    )
    p.add_argument("--small-seconds", type=float, default=10.0, help="duration of one small-transfers run")
    p.add_argument("--small-pairs", type=int, default=50, help="concurrent sender/receiver pairs")
    p.add_argument("--small-rounds", type=int, default=1, help="small-transfers runs per server (median)")
    p.add_argument(
        "--node-dir",
        type=Path,
        default=DEFAULT_NODE_DIR,
        help=f"npm prefix where {NODE_PACKAGE}@{NODE_VERSION} is installed on demand",
    )
    p.add_argument("--no-node", action="store_true", help="skip the Node piping-server (no ratios)")
    p.add_argument("--no-cref", action="store_true", help="skip the C reference relay (loadtests/cref.c)")
    p.add_argument(
        "--concurrent",
        action="store_true",
        help="run the concurrency mode (many transfers at once) instead of the large and small transfers",
    )
    p.add_argument("--concurrent-size", type=parse_size, default=64 << 20, help="size of each transfer")
    p.add_argument("--concurrent-pairs", type=int, default=16, help="concurrent n=1 sender/receiver pairs")
    p.add_argument("--concurrent-fanouts", type=int, default=8, help="concurrent n=3 fan-outs")
    p.add_argument("--concurrent-rounds", type=int, default=3, help="timed rounds per scenario and server")
    p.add_argument("--skip-verify", action="store_true", help="skip the untimed sha256 transfer per case")
    args = p.parse_args(argv)
    cases = [c.strip() for c in args.cases.split(",") if c.strip() and c.strip() != "none"]
    bad = [c for c in cases if c not in ALL_CASES]
    if bad:
        p.error(f"unknown case(s) {', '.join(bad)}; choose from {', '.join(ALL_CASES)}")
    args.cases = cases
    args.transport = TRANSPORTS[args.tls] if args.tls else H2C if args.h2c else None
    args.small = getattr(args, "small", not (args.tls or args.h2c))
    if (args.tls or args.h2c) and (args.small or args.concurrent):
        p.error("--tls and --h2c run the large cases only (no --small, no --concurrent)")
    if args.tls and args.h2c:
        p.error("--tls and --h2c exclude each other")
    for root in args.also_checkout:
        if not (root / "pipe_relay" / "__main__.py").is_file():
            p.error(f"--also-checkout {root}: no pipe_relay/__main__.py there")
    counts = (args.rounds, args.small_rounds, args.small_pairs, args.concurrent_rounds)
    if min(counts) < 1 or min(args.concurrent_pairs, args.concurrent_fanouts) < 0:
        p.error("--rounds, --small-rounds, --small-pairs, --concurrent-rounds must be at least 1")
    if args.max_time <= 0 or args.small_seconds <= 0:
        p.error("--max-time and --small-seconds must be positive")
    return args


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """Turn SIGTERM (and SIGHUP) into KeyboardInterrupt so the finally blocks stop the servers."""

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    old = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)


def workers_key(count: int) -> str:
    """The key (and label) of an extra pipe-relay in the same run, with `--workers count`."""
    return f"{RELAY} --workers {count}"


def start_servers(args: argparse.Namespace, workdir: Path, servers: list[Server]) -> None:
    """pipe-relay, then Node and the two C modes unless left out, appended to ``servers`` as they
    start (so the caller stops every one that did). The C relay serves one transfer at a time: it
    is not started for the concurrency mode; it has no TLS: not for ``--tls`` either. With ``--tls``
    pipe-relay and Node serve HTTPS with ``args.cert`` (their URLs are https://)."""
    starts: list[Callable[[], Server]]
    if args.cert is None:
        starts = [lambda: start_relay(workdir, args.engine)]
        starts += [
            functools.partial(start_relay, workdir, engine, key=variant_key(engine))
            for engine in args.also_engine
        ]
        starts += [
            functools.partial(start_relay, workdir, args.engine, key=checkout_key(root), root=root)
            for root in args.also_checkout
        ]
        starts += [
            functools.partial(start_relay, workdir, args.engine, ("--workers", str(n)), key=workers_key(n))
            for n in args.also_workers
        ]
        starts += [
            functools.partial(
                start_relay, workdir, args.engine, tuple(shlex.split(extra)), key=f"{RELAY} {extra}"
            )
            for extra in args.also_args
        ]
        starts += [] if args.no_node or args.h2c else [lambda: start_node(workdir, args.node_dir)]
    else:
        starts = [lambda: start_relay_tls(workdir, args.engine, args.cert)]
        starts += [
            functools.partial(
                start_relay_tls, workdir, args.engine, args.cert, key=checkout_key(root), root=root
            )
            for root in args.also_checkout
        ]
        starts += [] if args.no_node else [lambda: start_node_tls(workdir, args.node_dir, args.cert)]
    if args.cert is None and not args.no_cref and not args.concurrent and not args.h2c:
        try:
            binary = build_cref()
        except CrefBuildError as exc:
            raise BenchError(str(exc)) from exc
        print(f"# C reference relay: {binary}", flush=True)
        starts += [functools.partial(start_cref, workdir, binary, key) for key in CREFS]
    for start in starts:
        servers.append(start())
        print(f"# started {shlex.join(servers[-1].command)} (pid {servers[-1].pid})", flush=True)


def run_large_and_small(args: argparse.Namespace, command: str, servers: list[Server], workdir: Path) -> int:
    """The large cases (one transfer at a time, every server) and the small transfers (pipe-relay and
    Node); prints the report; 1 if a small transfer failed."""
    with_cref = any(s.key in CREFS for s in servers)
    env = environment(args.engine, with_node=any(s.key == NODE for s in servers), with_cref=with_cref)
    curl_args: list[str] = []
    if args.cert is not None:
        env += tls_environment(servers, args.cert, args.transport)
        curl_args = args.cert.curl_args(args.transport)
    elif args.h2c:
        env += h2c_environment(servers)
        curl_args = list(H2C.curl_args)
    for root in args.also_checkout:
        commit = tool_version(["git", "-C", str(root), "log", "-1", "--format=%h %s"])
        env.append(f"{checkout_key(root)}: the checkout at {root}, commit {commit}")
    results: dict[tuple[str, str], CaseResult] = {}
    if args.cases:
        print(f"# writing {fmt_size(args.size)} of random bytes", flush=True)
        source = workdir / "source.bin"
        source_sha = make_source(source, args.size)
        runner = CurlRunner(source, args.size, source_sha, args.max_time, workdir, curl_args)
        try:
            for case in args.cases:
                per = run_case(runner, servers, case, args.rounds, verify=not args.skip_verify)
                results.update({(case, key): result for key, result in per.items()})
        finally:
            runner.kill_all()
        source.unlink()

    small: dict[str, list[SmallResult]] = {}
    if args.small:
        for rnd in range(args.small_rounds):
            for s in servers:
                if s.key in CREFS or s.key in map(variant_key, args.also_engine):
                    continue
                r = run_small(s, args.small_pairs, args.small_seconds)
                small.setdefault(s.key, []).append(r)
                print(
                    f"# small round {rnd + 1}/{args.small_rounds} {s.label}: "
                    f"{r.per_second:.0f} transfers/s, {r.errors} error(s)",
                    flush=True,
                )

    print()
    print(report(args, command, servers, results, small, env), flush=True)
    return 1 if sum(r.errors for runs in small.values() for r in runs) else 0


def run_concurrency(args: argparse.Namespace, command: str, servers: list[Server], workdir: Path) -> int:
    """The concurrency mode (concurrency.py) on pipe-relay and Node; prints its report."""
    env = environment(args.engine, with_node=not args.no_node, with_cref=False)
    size = args.concurrent_size
    scenarios = [
        Scenario("pairs", 1, args.concurrent_pairs),
        Scenario("fan-outs", 3, args.concurrent_fanouts),
    ]
    scenarios = [sc for sc in scenarios if sc.transfers > 0]
    print(f"# writing {fmt_size(size)} of random bytes", flush=True)
    source = workdir / "source.bin"
    sha = make_source(source, size)
    results = run_concurrent(
        servers,
        scenarios,
        args.concurrent_rounds,
        source,
        size,
        sha,
        args.max_time,
        workdir,
        not args.skip_verify,
    )
    source.unlink()
    print()
    print(report(args, command, servers, {}, {}, env))
    print(concurrent_report(servers, scenarios, results, size, args.concurrent_rounds), flush=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    command = shlex.join([sys.executable, sys.argv[0], *argv])
    if shutil.which("curl") is None:
        print("curl not found", file=sys.stderr)
        return 2

    servers: list[Server] = []
    workdir = Path(tempfile.mkdtemp(prefix="pipe-relay-bench-"))
    try:
        with terminate_as_interrupt():
            print(f"# {command}", flush=True)
            print(f"# work folder {workdir}", flush=True)
            args.cert = make_cert(workdir) if args.tls else None
            start_servers(args, workdir, servers)
            run = run_concurrency if args.concurrent else run_large_and_small
            return run(args, command, servers, workdir)
    except BenchError as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as exc:
        print(f"bench: interrupted {exc}".strip(), file=sys.stderr)
        return 130
    finally:
        for s in servers:
            stop_server(s)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
