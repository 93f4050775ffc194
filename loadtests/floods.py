# The flood benchmark: each h2attacks.py attack on a fresh pipe-relay and Node piping-server over TLS, with
# side transfers and health probes from another address. Invariant: bounded in time; every server stopped.
"""Usage: ``.venv/bin/python loadtests/floods.py [--attacks ping,hpack] [--seconds 15] [--size 64M]``
(see loadtests/README.md). Per server (pipe-relay, then the Node piping-server) an idle window, then one
window per attack, each on a fresh server with HTTPS (tls.py's certificate). A window lasts --seconds
from the attacker's first batch (``python -m loadtests.h2attacks NAME --tls``, from 127.0.0.1, to the
HTTPS port); meanwhile, from 127.0.0.2 to the plain port: ``curl -T`` side transfers back to back (the
first one's sha256 checked, the others' byte counts) and a ``GET /version`` every 100 ms on a fresh
connection (2 s timeout; a failure counts as 2000 ms); the server's RSS and CPU are read from /proc."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from pathlib import Path

import trio
from attack_plans import PLANS  # type: ignore[import-not-found]
from bench import terminate_as_interrupt  # type: ignore[import-not-found]
from flood_report import IDLE, SIDE_ADDRESS, Row, report  # type: ignore[import-not-found]
from harness import (  # type: ignore[import-not-found]
    CLK_TCK,
    HOST,
    NODE,
    RELAY,
    ROOT,
    BenchError,
    RssSampler,
    Server,
    cpu_ticks,
    label,
    make_source,
    parse_size,
    rss_mib,
    sha256_file,
    stop_server,
)
from node import DEFAULT_NODE_DIR  # type: ignore[import-not-found]
from report import environment  # type: ignore[import-not-found]
from tls import make_cert, start_node_tls, start_relay_tls  # type: ignore[import-not-found]

SERVERS = {"relay": RELAY, "node": NODE}
HEALTH_INTERVAL, HEALTH_TIMEOUT = 0.1, 2.0
IDLE_TRANSFERS = 3
"""Side transfers on each fresh server before its attack: their median is the window's idle rate."""
HEALTH_REQUEST = b"GET /version HTTP/1.1\r\nHost: flood-health\r\nConnection: close\r\n\r\n"
ATTACKER_GRACE = 20.0
"""Seconds an attacker may run past --seconds (start-up, TLS, 5 s waiting for a close after GOAWAY)."""


def plain_port(server: Server) -> int:
    """The server's plain HTTP port (a TLS ``Server``'s own port is its HTTPS one)."""
    return int(server.command[server.command.index("--http-port") + 1])


async def side_transfers(row: Row, port: int, args: argparse.Namespace, until: float) -> None:
    """Transfers back to back (receiver and sender started together) until ``until``; the one running
    then is finished (curl's --max-time bounds it)."""
    index = 0
    while trio.current_time() < until:
        seconds, ok = await side_transfer(row, port, args, f"flood-side-{index}", index == 0)
        row.side_seconds += seconds
        if ok:
            row.side_bytes += args.size
            row.side_done += 1
        index += 1


async def idle_reference(row: Row, port: int, args: argparse.Namespace) -> None:
    """The same fresh server's rate before the attack: the median of IDLE_TRANSFERS side transfers
    (one idle window per server drifts with the machine by about a quarter)."""
    rates = []
    for index in range(IDLE_TRANSFERS):
        seconds, ok = await side_transfer(row, port, args, f"flood-idle-{index}", False)
        if ok and seconds > 0:
            rates.append(args.size / seconds / 1e6)
    row.idle_mbps = statistics.median(rates) if rates else None


async def side_transfer(
    row: Row, port: int, args: argparse.Namespace, key: str, keep: bool
) -> tuple[float, bool]:
    """One side transfer on ``/key`` (kept in ``args.first_out`` if ``keep``): its seconds, and
    whether every byte arrived (a failure is noted in ``row.side_errors``)."""
    curl = ["curl", "-sS", "--fail", "--interface", SIDE_ADDRESS, "--max-time", f"{args.max_time:g}"]
    url = f"http://{HOST}:{port}/{key}"
    out = args.first_out if keep else Path(os.devnull)
    receive = [*curl, "-o", str(out), "-w", "%{size_download}", url]
    results: dict[str, subprocess.CompletedProcess[bytes]] = {}
    started = trio.current_time()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_run, results, "receiver", receive)
        nursery.start_soon(_run, results, "sender", [*curl, "-T", str(args.source), url])
    seconds = trio.current_time() - started
    got = results["receiver"].stdout.decode().strip()
    bad = [f"{name} exit {done.returncode}" for name, done in results.items() if done.returncode]
    if bad or got != str(args.size):
        err = b" ".join(done.stderr.strip() for done in results.values()).decode(errors="replace")
        row.side_errors.append(f"{key}: {', '.join(bad)}, got {got or 0} B {err[:200]}".strip())
        return seconds, False
    return seconds, True


async def _run(results: dict[str, subprocess.CompletedProcess[bytes]], key: str, command: list[str]) -> None:
    results[key] = await trio.run_process(command, capture_stdout=True, capture_stderr=True, check=False)


async def health_probe(port: int) -> bool:
    """One ``GET /version`` on a fresh connection from SIDE_ADDRESS: True if it was answered 200."""
    try:
        stream = await trio.open_tcp_stream(HOST, port, local_address=SIDE_ADDRESS)
        async with stream:
            await stream.send_all(HEALTH_REQUEST)
            answer = b""
            while chunk := await stream.receive_some(65536):
                answer += chunk
    except (OSError, trio.BrokenResourceError):
        return False
    return answer.startswith(b"HTTP/1.1 200 ")


async def health(row: Row, port: int, until: float) -> None:
    """A probe every HEALTH_INTERVAL until ``until`` (ticks that a slow probe overran are skipped)."""
    tick = trio.current_time()
    while tick < until:
        await trio.sleep_until(tick)
        started = trio.current_time()
        ok = False
        with trio.move_on_after(HEALTH_TIMEOUT):
            ok = await health_probe(port)
        row.health_ms.append((trio.current_time() - started) * 1000 if ok else HEALTH_TIMEOUT * 1000)
        row.health_failures += not ok
        tick = max(tick + HEALTH_INTERVAL, trio.current_time())


async def attacker(row: Row, port: int, args: argparse.Namespace, started: trio.Event) -> None:
    """The attack as its own process; sets ``started`` once its first batch is out (or it ended)."""
    command = [sys.executable, "-m", "loadtests.h2attacks", row.attack, "--port", str(port), "--tls"]
    command += ["--seconds", f"{args.seconds:g}", "--connections", str(args.connections), "--announce"]
    out = bytearray()
    run = partial(
        trio.run_process, command, cwd=ROOT, check=False, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        with trio.move_on_after(args.seconds + ATTACKER_GRACE) as scope:
            async with trio.open_nursery() as nursery:
                process = await nursery.start(run)
                nursery.start_soon(_attacker_cpu, row, process)
                async for chunk in process.stdout:
                    out += chunk
                    if b"started\n" in out:
                        started.set()
    finally:
        started.set()
    lines = [line for line in out.decode(errors="replace").splitlines() if line != "started"]
    row.endings = [json.loads(line) for line in lines if line.startswith("{")]
    if scope.cancelled_caught:
        row.remarks.append(f"the attacker still ran after {args.seconds + ATTACKER_GRACE:g} s: killed")
    elif process.returncode:
        row.remarks.append(f"the attacker exited {process.returncode}: " + " ".join(lines)[-300:])


async def _attacker_cpu(row: Row, process: trio.Process) -> None:
    """The process's CPU time, read every 50 ms until it is reaped (a zombie's still reads)."""
    while True:
        with contextlib.suppress(OSError):
            row.attacker_cpu_seconds = cpu_ticks(process.pid) / CLK_TCK
        if process.returncode is not None:
            return
        await trio.sleep(0.05)


async def until_signalled(body: Callable[[], Awaitable[None]]) -> None:
    """Run ``body``; SIGTERM or SIGHUP cancels it (its processes are killed) and raises KeyboardInterrupt."""
    caught: list[int] = []
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGHUP) as signals:
        async with trio.open_nursery() as nursery:

            async def watch() -> None:
                async for signum in signals:
                    caught.append(signum)
                    nursery.cancel_scope.cancel()

            nursery.start_soon(watch)
            await body()
            nursery.cancel_scope.cancel()
    if caught:
        raise KeyboardInterrupt(f"signal {caught[0]}")


async def window(row: Row, server: Server, args: argparse.Namespace) -> None:
    """The attack (if any), and from its first batch the side transfers and health probes for
    --seconds; the server's RSS and CPU from the attacker's start to the window's end."""
    row.rss_before_mib = rss_mib(server.pid)
    ticks = cpu_ticks(server.pid)
    begun = trio.current_time()
    bound = args.seconds + args.max_time + ATTACKER_GRACE
    if row.attack != IDLE:
        await idle_reference(row, plain_port(server), args)
        row.rss_before_mib = rss_mib(server.pid)
        ticks = cpu_ticks(server.pid)
    with RssSampler(server.pid) as sampler, trio.move_on_after(bound) as scope:
        async with trio.open_nursery() as nursery:
            started = trio.Event()
            if row.attack == IDLE:
                started.set()
            else:
                nursery.start_soon(attacker, row, server.port, args, started)
            await started.wait()
            begun = trio.current_time()
            nursery.start_soon(health, row, plain_port(server), begun + args.seconds)
            await side_transfers(row, plain_port(server), args, begun + args.seconds)
    row.seconds = trio.current_time() - begun
    row.remarks += [f"the window was cut after {bound:g} s"] if scope.cancelled_caught else []
    row.cpu_seconds = (cpu_ticks(server.pid) - ticks) / CLK_TCK
    row.load_average = os.getloadavg()[0]
    row.rss_peak_mib = max(sampler.peak / 1024, rss_mib(server.pid), row.rss_before_mib)


def run_server(key: str, args: argparse.Namespace) -> list[Row]:
    """The idle window, then every attack's, each on a fresh server of ``key``; one row each."""
    rows: list[Row] = []
    for attack in [IDLE, *args.attacks]:
        row = Row(attack, label(key))
        if key == RELAY:
            server = start_relay_tls(args.workdir, None, args.cert)
        else:
            server = start_node_tls(args.workdir, args.node_dir, args.cert)
        try:
            trio.run(until_signalled, partial(window, row, server, args))
            if server.proc.poll() is not None:
                row.remarks.append(
                    f"the server exited with status {server.proc.returncode}: {server.log_tail(3)}"
                )
        finally:
            stop_server(server)
        if row.side_done and args.first_out.exists():
            row.sha256_ok = sha256_file(args.first_out) == args.sha256
        args.first_out.unlink(missing_ok=True)
        if row.attack == IDLE:
            row.idle_mbps = row.mbps
        rows.append(row)
        print(f"# {row.server} {row.attack}: " + " | ".join(row.cells()[2:]), flush=True)
    return rows


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Floods (loadtests/h2attacks.py) against pipe-relay and the Node piping-server over TLS, "
        "with side transfers and health probes from another address.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--attacks", default=",".join(PLANS), help="comma list of h2attacks.py attacks")
    p.add_argument("--seconds", type=float, default=15.0, help="length of each window (and attack)")
    p.add_argument("--size", type=parse_size, default="64M", help="size of each side transfer")
    p.add_argument("--connections", type=int, default=1, help="attacking connections (one address)")
    p.add_argument("--servers", default="relay,node", help="comma list of relay, node")
    p.add_argument("--no-node", action="store_true", help="leave the Node piping-server out")
    p.add_argument("--node-dir", type=Path, default=DEFAULT_NODE_DIR, help="npm prefix of the Node server")
    p.add_argument("--max-time", type=float, default=60.0, help="curl --max-time of a side transfer")
    p.add_argument("--json", type=Path, help="also write the rows to this file as JSON")
    args = p.parse_args(argv)
    args.attacks = [a.strip() for a in args.attacks.split(",") if a.strip()]
    names = [n.strip() for n in args.servers.split(",") if n.strip() not in ("", "node" * args.no_node)]
    if bad := [a for a in args.attacks if a not in PLANS] + [n for n in names if n not in SERVERS]:
        p.error(f"unknown: {', '.join(bad)} (attacks: {', '.join(PLANS)}; servers: relay, node)")
    args.servers = [SERVERS[n] for n in dict.fromkeys(names)]
    if not args.servers or args.seconds <= 0 or args.connections < 1 or args.max_time <= 0:
        p.error("needs a server, and positive --seconds, --connections, --max-time")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    command = shlex.join([sys.executable, "loadtests/floods.py", *argv])
    workdir = Path(tempfile.mkdtemp(prefix="pipe-relay-floods-"))
    rows: list[Row] = []
    env: list[str] = []
    status = 0
    try:
        with terminate_as_interrupt():
            print(f"# {command}\n# work folder {workdir}", flush=True)
            env = environment(None, with_node=NODE in args.servers, with_cref=False)
            args.workdir, args.cert = workdir, make_cert(workdir)
            args.source, args.first_out = workdir / "side.bin", workdir / "first.bin"
            args.sha256 = make_source(args.source, args.size)
            for key in args.servers:
                rows += run_server(key, args)
    except BenchError as exc:
        print(f"floods: error: {exc}", file=sys.stderr)
        status = 1  # (the rows so far are still reported)
    except KeyboardInterrupt as exc:
        print(f"floods: interrupted {exc}".strip(), file=sys.stderr)
        return 130
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print()
    print(report(args, command, env, rows), flush=True)
    if args.json:
        args.json.write_text(json.dumps([r.as_json() for r in rows], indent=1) + "\n")
    return 1 if status or any(r.sha256_ok is False for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
