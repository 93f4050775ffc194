# Memory checks for pipe-relay: RSS per idle connection, pipe and watcher, with many waiting pipes, and
# through a long fan-out to one fast and one rate-limited receiver. Loopback only; every wait has a deadline.
"""Usage:

    .venv/bin/python loadtests/memory.py idle --pipes 1000
    .venv/bin/python loadtests/memory.py soak --size 10G --limit-rate 20M
    .venv/bin/python loadtests/memory.py costs --count 2000

`idle` opens N receivers on N paths (each waits for a sender) and reports the server's RSS.
`soak` streams SIZE bytes (generated, not stored) with `curl -T -` to ?n=2: one receiver at full
speed, one with `curl --limit-rate`; the server's RSS is sampled every second; the peak is reported.
`soak --http2`: every party over HTTP/2 (h2c, prior knowledge), so flow control does the pacing.
`costs` opens COUNT idle connections, waiting pipes, ?progress watchers (a fresh server each) and
reports the RSS each adds. The script starts its own server (`--engine` passes through, its log in
a temporary folder) and stops it when done.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time

from harness import (  # type: ignore[import-not-found]
    HOST,
    BenchError,
    RssSampler,
    parse_size,
    rss_mib,
    running_relay,
)

QUIET = ["--log-level", "warning"]


def idle(args: argparse.Namespace) -> int:
    # every pipe comes from this one address: its per-client limits are off for the measurement
    no_client_limits = ["--client-max-pending", "0", "--client-max-connections", "0"]
    extra = [*QUIET, "--max-pending", str(args.pipes + 10), *no_client_limits]
    with running_relay(args.engine, extra) as server:
        sockets: list[socket.socket] = []
        try:
            base = rss_mib(server.pid)
            for index in range(args.pipes):
                client = socket.create_connection((HOST, server.port), timeout=10)
                client.sendall(f"GET /idle-{index} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
                sockets.append(client)
            time.sleep(2)  # let the server read every head (bounded; RSS is what is measured)
            loaded = rss_mib(server.pid)
            print(f"idle: {args.pipes} waiting pipes: server RSS {loaded:.1f} MiB (empty: {base:.1f} MiB)")
            return 0 if loaded < args.max_rss else 1
        finally:
            for client in sockets:
                client.close()


COSTS = {
    "idle connection": b"GET /held HTTP/1.1\r\n",  # part of a head: accepted, then held
    "waiting pipe": b"GET /pipe-%d HTTP/1.1\r\nHost: x\r\n\r\n",
    "progress watcher": b"GET /watched-%d?progress HTTP/1.1\r\nHost: x\r\n\r\n",
}


def costs(args: argparse.Namespace) -> int:
    """What one idle connection, one waiting pipe and one ?progress watcher cost in server RSS."""
    limits_off = ["--client-max-pending", "0", "--client-max-connections", "0", "--client-max-watchers", "0"]
    many = str(args.count + 10)
    extra = [*QUIET, "--max-pending", many, "--max-watchers", many, "--header-timeout", "600", *limits_off]
    for name, request in COSTS.items():
        with running_relay(args.engine, extra) as server:
            sockets: list[socket.socket] = []
            try:
                time.sleep(1)
                base = rss_mib(server.pid)
                for index in range(args.count):
                    client = socket.create_connection((HOST, server.port), timeout=10)
                    client.sendall(request % index if b"%d" in request else request)
                    sockets.append(client)
                time.sleep(3)  # let the server read every head (bounded; RSS is what is measured)
                grown = rss_mib(server.pid) - base
                each = grown * 1024 / args.count
                print(f"costs: {args.count} x {name}: +{grown:.1f} MiB, {each:.1f} KiB each")
            finally:
                for client in sockets:
                    client.close()
    return 0


def soak(args: argparse.Namespace) -> int:
    with running_relay(args.engine, QUIET) as server:
        url = server.url("/soak?n=2")
        max_time = str(int(args.size / parse_size(args.limit_rate) * 1.5) + 60)
        http2 = ["--http2-prior-knowledge"] if args.http2 else []
        receive = ["curl", "-sS", *http2, "--max-time", max_time, "-o", "/dev/null", "-w", "%{size_download}"]
        receivers = [
            subprocess.Popen([*receive, url], stdout=subprocess.PIPE),
            subprocess.Popen([*receive, "--limit-rate", args.limit_rate, url], stdout=subprocess.PIPE),
        ]
        send = ["curl", "-sS", *http2, "--max-time", max_time, "-T", "-", url]
        sender = subprocess.Popen(send, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
        started = time.monotonic()
        try:
            with RssSampler(server.pid, interval=1.0) as sampler:
                assert sender.stdin is not None
                block = os.urandom(1 << 20)
                remaining = args.size
                while remaining:
                    piece = block[: min(len(block), remaining)]
                    sender.stdin.write(piece)
                    remaining -= len(piece)
                sender.stdin.close()
                sender.wait(timeout=float(max_time))
                sizes = [int(r.communicate(timeout=float(max_time))[0] or 0) for r in receivers]
        finally:
            for process in (sender, *receivers):
                if process.poll() is None:
                    process.kill()
    seconds = time.monotonic() - started
    samples = [kib / 1024 for kib in sampler.samples]
    peak = sampler.peak / 1024
    first = samples[: max(1, len(samples) // 10)]
    print(
        f"soak{' (h2c)' if args.http2 else ''}: {args.size} bytes to 2 receivers "
        f"(one at {args.limit_rate}/s) in {seconds:.0f} s; "
        f"received {sizes}; server RSS peak {peak:.1f} MiB (first 10%: {max(first):.1f} MiB, "
        f"last: {samples[-1]:.1f} MiB)"
    )
    return 0 if sizes == [args.size, args.size] and peak < args.max_rss else 1


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--engine", choices=("auto", "splice", "buffer"))
    sub = parser.add_subparsers(dest="mode", required=True)
    idle_parser = sub.add_parser("idle", help="RSS with many waiting pipes")
    idle_parser.add_argument("--pipes", type=int, default=1000)
    idle_parser.add_argument("--max-rss", type=float, default=100.0, help="MiB; exit 1 above it")
    soak_parser = sub.add_parser("soak", help="RSS through a long transfer with a slow receiver")
    soak_parser.add_argument("--size", type=parse_size, default=parse_size("10G"))
    soak_parser.add_argument("--limit-rate", default="20M", help="curl --limit-rate of the slow receiver")
    soak_parser.add_argument("--max-rss", type=float, default=64.0, help="MiB; exit 1 above it")
    soak_parser.add_argument("--http2", action="store_true", help="every party over h2c (prior knowledge)")
    costs_parser = sub.add_parser("costs", help="RSS per idle connection, waiting pipe and watcher")
    costs_parser.add_argument("--count", type=int, default=2000)
    args = parser.parse_args()
    try:
        return {"idle": idle, "soak": soak, "costs": costs}[args.mode](args)
    except BenchError as exc:
        print(f"memory: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
