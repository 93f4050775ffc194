# Slow and idle clients against a server of this checkout: trickled heads beside a big transfer, and
# thousands of idle connections (RSS). Invariant: loopback only, every wait bounded, the server stopped.
"""Usage:

    .venv/bin/python loadtests/slowloris.py trickle --connections 1000 --size 1G
    .venv/bin/python loadtests/slowloris.py idle --connections 10000

`trickle`: a 1 GiB `curl -T file` to one curl receiver, timed alone (after a warm-up; median of
--rounds); then again while N connections
send a request head one byte per second. Each of them must be answered `408 HEAD_TIMEOUT` (or
closed) within --header-timeout + --margin seconds of its first byte; prints how many were, their
close times and the transfer's MB/s both ways. Exit 1 if one was not, or a transfer failed.

`idle`: N connections that each send one byte of a head and then nothing (the server accepts
them and waits for the rest; --header-timeout is set long enough to hold them); prints the
server's VmRSS before, with them, per connection, and after they closed. The script raises its
own soft open-file limit to the hard one (the server does the same for itself).
"""

from __future__ import annotations

import argparse
import resource
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

import trio

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from loadtests.harness import make_source, parse_size, rss_mib, start_server, stop

HOST = "127.0.0.1"
HEAD = b"GET /slowloris HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 4096


async def transfer(port: int, source: Path, size: int) -> float:
    """One `curl -T` of `source` to one curl receiver (started first); MB/s, sender start to receiver end."""
    url = f"http://{HOST}:{port}/big"
    receive = ["curl", "-sS", "--max-time", "300", "-o", "/dev/null", "-w", "%{size_download}", url]
    got: list[bytes] = []
    async with trio.open_nursery() as nursery:

        async def receiver() -> None:
            got.append((await trio.run_process(receive, capture_stdout=True)).stdout)

        nursery.start_soon(receiver)
        await trio.sleep(0.3)  # (the receiver is connected and waiting by then on loopback)
        started = trio.current_time()
        await trio.run_process(
            ["curl", "-sS", "--max-time", "300", "-T", str(source), url], capture_stdout=True
        )
    seconds = trio.current_time() - started
    if got != [str(size).encode()]:
        raise SystemExit(f"slowloris: the receiver got {got!r} of {size} bytes")
    return size / seconds / 1e6


async def trickle_head(host: str, port: int, head: bytes, interval: float) -> tuple[float, bytes]:
    """Send `head` one byte every `interval` seconds until the server answers or closes; the
    seconds that took and what the server sent (shared with tests/net/test_slowloris.py)."""
    stream = await trio.open_tcp_stream(host, port)
    started = trio.current_time()
    received = b""
    async with stream, trio.open_nursery() as nursery:

        async def send() -> None:
            for index in range(len(head)):
                try:
                    await stream.send_all(head[index : index + 1])
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    return
                await trio.sleep(interval)

        nursery.start_soon(send)
        while True:
            try:
                chunk = await stream.receive_some(65536)
            except trio.BrokenResourceError:
                break
            if not chunk:
                break
            received += chunk
        nursery.cancel_scope.cancel()
    return trio.current_time() - started, received


async def trickler(port: int, results: list[tuple[float, bool]]) -> None:
    """One slowloris client at a byte a second: (seconds until the close, answered 408)."""
    seconds, received = await trickle_head(HOST, port, HEAD, 1.0)
    results.append((seconds, received.startswith(b"HTTP/1.1 408 ")))


async def trickle(args: argparse.Namespace) -> int:
    extra = ["--header-timeout", f"{args.header_timeout:g}", "--max-connections", str(args.connections + 100)]
    server, port = await trio.to_thread.run_sync(start_server, args.engine, extra)
    try:
        with tempfile.TemporaryDirectory(prefix="pipe-relay-slowloris-") as tmp:
            source = Path(tmp) / "source.bin"
            await trio.to_thread.run_sync(make_source, source, args.size)
            await transfer(port, source, args.size)  # a warm-up, not counted
            alone = statistics.median([await transfer(port, source, args.size) for _ in range(args.rounds)])
            results: list[tuple[float, bool]] = []
            started = trio.current_time()
            limit = args.header_timeout + args.margin
            with trio.fail_after(limit + 300):
                async with trio.open_nursery() as nursery:
                    for _ in range(args.connections):
                        nursery.start_soon(trickler, port, results)
                    await trio.sleep(1.0)
                    loaded = statistics.median(
                        [await transfer(port, source, args.size) for _ in range(args.rounds)]
                    )
                    if trio.current_time() - started > args.header_timeout:
                        print("trickle: (the loaded transfers outlasted the trickled heads; try --rounds 1)")
            rss = rss_mib(server.pid)
    finally:
        stop(server)
    times = sorted(seconds for seconds, _ in results)
    answered = sum(ok for _, ok in results)
    late = sum(seconds > limit for seconds in times)
    print(
        f"trickle: {len(results)} connections at 1 byte/s, --header-timeout {args.header_timeout:g}: "
        f"{answered} answered 408, {len(results) - answered} closed without it, {late} after {limit:g} s; "
        f"closed after {times[0]:.2f}-{times[-1]:.2f} s (median {statistics.median(times):.2f})"
    )
    print(
        f"trickle: {args.size} bytes (median of {args.rounds}) alone {alone:.0f} MB/s, "
        f"beside them {loaded:.0f} MB/s "
        f"({loaded / alone:.2f}x); server RSS {rss:.1f} MiB"
    )
    return 1 if late or len(results) != args.connections else 0


def idle(args: argparse.Namespace) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if hard < args.connections + 100:
        raise SystemExit(f"slowloris: the open-file limit is {hard}; {args.connections} need more")
    extra = ["--header-timeout", "600", "--max-connections", str(args.connections + 100)]
    server, port = start_server(args.engine, extra)
    clients: list[socket.socket] = []
    try:
        time.sleep(1.0)
        before = rss_mib(server.pid)
        deadline = time.monotonic() + 120
        for _ in range(args.connections):
            client = socket.create_connection((HOST, port), timeout=10)
            client.sendall(b"G")  # one byte of a head: accepted (TCP_DEFER_ACCEPT), then it waits
            clients.append(client)
            if time.monotonic() > deadline:
                raise SystemExit("slowloris: connecting took too long")
        time.sleep(3.0)  # the server reads each byte (bounded; what is measured is its RSS)
        held = rss_mib(server.pid)
        alive = sum(1 for c in clients if _open(c))
        for client in clients:
            client.close()
        clients.clear()
        time.sleep(3.0)
        after = rss_mib(server.pid)
    finally:
        for client in clients:
            client.close()
        stop(server)
    per = (held - before) * 1024 / args.connections
    print(
        f"idle: {args.connections} connections held ({alive} still open after 3 s): server RSS "
        f"{before:.1f} MiB before, {held:.1f} MiB with them ({per:.1f} KiB each), {after:.1f} MiB after"
    )
    return 0 if alive == args.connections else 1


def _open(client: socket.socket) -> bool:
    client.setblocking(False)
    try:
        return client.recv(1, socket.MSG_PEEK) != b""
    except BlockingIOError:
        return True
    except OSError:
        return False


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--engine", choices=("auto", "splice", "buffer"))
    sub = parser.add_subparsers(dest="mode", required=True)
    t = sub.add_parser("trickle", help="heads at one byte a second beside a big transfer")
    t.add_argument("--connections", type=int, default=1000)
    t.add_argument("--header-timeout", type=float, default=10.0)
    t.add_argument("--margin", type=float, default=2.0, help="seconds past the timeout still on time")
    t.add_argument("--size", type=parse_size, default=parse_size("1G"))
    t.add_argument("--rounds", type=int, default=3, help="timed transfers each way (median)")
    i = sub.add_parser("idle", help="RSS with many idle connections")
    i.add_argument("--connections", type=int, default=10_000)
    args = parser.parse_args()
    if args.mode == "trickle":
        return trio.run(trickle, args)
    return idle(args)


if __name__ == "__main__":
    sys.exit(main())
