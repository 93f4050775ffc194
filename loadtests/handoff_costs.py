# What a worker hand-off costs on this machine: a descriptor passed to another process, or a stream's
# bytes carried through one more process over a Unix socket. Bounded: a size and a count, then it ends.
"""The scale-out design question in numbers (docs/scale-out.md): a pipe is owned by one worker,
and a connection accepted by another either moves (the descriptor and the bytes already read, over
a Unix socket with SCM_RIGHTS) or, where it cannot (TLS without kTLS, an HTTP/2 connection carrying
streams of several owners), has each stream's bytes carried to the owner over a local socket.

    python loadtests/handoff_costs.py [--size 1G] [--rounds 3] [--handoffs 5000]

Prints, for each way a sender's bytes can reach the process that writes them to the receiver, the
median MB/s and the CPU seconds per GiB of each process, and the cost of one descriptor hand-off.
Only 127.0.0.1 and Unix sockets in a temporary directory are used."""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

BUFFER = 256 * 1024
GIB = 1 << 30


def _cpu(pid: int) -> float:
    """User + system CPU seconds of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _copy(source: socket.socket, sink: socket.socket, *, splice: bool) -> None:
    """Copy until the source ends, as a relay's inner loop does (or with splice through a pipe)."""
    if splice:
        read_end, write_end = os.pipe()
        try:
            while True:
                moved = os.splice(source.fileno(), write_end, 1 << 20)
                if moved == 0:
                    break
                while moved:
                    moved -= os.splice(read_end, sink.fileno(), moved)
        finally:
            os.close(read_end)
            os.close(write_end)
    else:
        buffer = bytearray(BUFFER)
        view = memoryview(buffer)
        while True:
            count = source.recv_into(buffer)
            if count == 0:
                break
            sink.sendall(view[:count])
    sink.shutdown(socket.SHUT_WR)


def _serve_owner(sources: socket.socket, sinks: socket.socket) -> None:
    """The owner: takes a sender (TCP, or the hop's Unix connection), then a receiver (TCP), and
    copies one to the other; forever (the parent kills it)."""
    while True:
        source, _ = sources.accept()
        sink, _ = sinks.accept()
        with source, sink:
            _copy(source, sink, splice=False)


def _serve_hop(listener: socket.socket, owner: str, splice: bool) -> None:
    """The accepting worker that does not own the pipe: carries the sender's bytes to the owner."""
    while True:
        source, _ = listener.accept()
        with source, socket.socket(socket.AF_UNIX) as upstream:
            upstream.connect(owner)
            _copy(source, upstream, splice=splice)


def _fork(target: object, *args: object) -> int:
    pid = os.fork()
    if pid == 0:
        try:
            target(*args)  # type: ignore[operator]
        finally:
            os._exit(0)
    return pid


def _transfer(sender_address: object, receiver_address: object, size: int) -> float:
    """Send `size` bytes in, read them out; seconds taken."""
    chunk = memoryview(bytes(BUFFER))
    sender = socket.create_connection(sender_address)  # type: ignore[arg-type]
    receiver = socket.create_connection(receiver_address)  # type: ignore[arg-type]
    got = 0

    def send() -> None:
        left = size
        while left:
            left -= sender.send(chunk[: min(left, BUFFER)])
        sender.shutdown(socket.SHUT_WR)

    started = time.perf_counter()
    thread = threading.Thread(target=send)
    thread.start()
    buffer = bytearray(BUFFER)
    while count := receiver.recv_into(buffer):
        got += count
    took = time.perf_counter() - started
    thread.join()
    sender.close()
    receiver.close()
    if got != size:
        raise SystemExit(f"lost bytes: {got} of {size}")
    return took


def _measure_path(name: str, size: int, rounds: int, splice: bool, hop: bool) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        sinks = socket.create_server(("127.0.0.1", 0), backlog=16)
        pids: dict[str, int] = {}
        if hop:
            # the sender enters the hop, which reaches the owner over the owner's Unix socket
            owner_path = str(Path(tmp) / "owner.sock")
            sources = socket.socket(socket.AF_UNIX)
            sources.bind(owner_path)
            sources.listen(16)
            hop_listener = socket.create_server(("127.0.0.1", 0), backlog=16)
            pids["owner"] = _fork(_serve_owner, sources, sinks)
            pids["hop"] = _fork(_serve_hop, hop_listener, owner_path, splice)
            sender_at: object = hop_listener.getsockname()
        else:
            sources = socket.create_server(("127.0.0.1", 0), backlog=16)
            pids["owner"] = _fork(_serve_owner, sources, sinks)
            sender_at = sources.getsockname()
        try:
            speeds: list[float] = []
            cpu: dict[str, list[float]] = {role: [] for role in pids}
            for _ in range(rounds):
                before = {role: _cpu(pid) for role, pid in pids.items()}
                took = _transfer(sender_at, sinks.getsockname(), size)
                speeds.append(size / took / 1e6)
                for role, pid in pids.items():
                    cpu[role].append((_cpu(pid) - before[role]) / (size / GIB))
            return {
                "path": name,
                "MB/s": statistics.median(speeds),
                **{f"cpu s/GiB {role}": statistics.median(values) for role, values in cpu.items()},
            }
        finally:
            for pid in pids.values():
                os.kill(pid, 9)
                os.waitpid(pid, 0)


def _measure_handoffs(count: int) -> tuple[float, float]:
    """Microseconds per descriptor hand-off (with 1 KiB already read) and per plain accept."""
    head = b"x" * 1024
    parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    listener = socket.create_server(("127.0.0.1", 0), backlog=128)
    pid = os.fork()
    if pid == 0:
        parent.close()
        for _ in range(count):
            _, fds, _, _ = socket.recv_fds(child, 2048, 1)
            for fd in fds:
                os.close(fd)
            child.sendall(b"k")
        os._exit(0)
    child.close()
    clients = [socket.create_connection(listener.getsockname()) for _ in range(min(count, 100))]
    accepted = []
    started = time.perf_counter()
    for _ in range(len(clients)):
        accepted.append(listener.accept()[0])
    accept_us = (time.perf_counter() - started) / len(clients) * 1e6
    started = time.perf_counter()
    for index in range(count):
        sock = accepted[index % len(accepted)]
        socket.send_fds(parent, [head], [sock.fileno()])
        parent.recv(1)
    handoff_us = (time.perf_counter() - started) / count * 1e6
    os.waitpid(pid, 0)
    for sock in (*clients, *accepted, listener, parent):
        sock.close()
    return handoff_us, accept_us


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", default="1G", help="bytes per transfer (K, M, G suffixes)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--handoffs", type=int, default=5000)
    args = parser.parse_args(argv)
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    size = int(args.size[:-1]) * units[args.size[-1]] if args.size[-1] in units else int(args.size)
    if size <= 0 or args.rounds < 1 or args.handoffs < 1:
        parser.error("--size, --rounds and --handoffs must be positive")
    rows = [
        _measure_path(
            "direct: one process reads the sender, writes the receiver", size, args.rounds, False, False
        ),
        _measure_path(
            "carried: one more process, recv/send over a Unix socket", size, args.rounds, False, True
        ),
        _measure_path("carried: one more process, splice over a Unix socket", size, args.rounds, True, True),
    ]
    print(f"{size / GIB:g} GiB per transfer, median of {args.rounds}")
    for row in rows:
        extras = "  ".join(f"{key} {value:.2f}" for key, value in row.items() if key.startswith("cpu"))
        print(f"  {row['MB/s']:8.0f} MB/s  {extras}  {row['path']}")
    handoff, accept = _measure_handoffs(args.handoffs)
    print(
        f"descriptor hand-off with 1 KiB read: {handoff:.1f} us (round trip to the owner); "
        f"accept: {accept:.1f} us"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
