# One party must not stall the others: a 200 MB transfer timed on an idle server, then beside senders
# of forms of thousands of tiny fields (slow to parse). Loopback only; bounded rounds and deadlines.
"""Usage:

    .venv/bin/python loadtests/hostile_forms.py --size 200M --hostile 4 --rounds 3

Each round times `curl -T file` of SIZE to one curl receiver, first alone, then while HOSTILE pairs
(a raw receiver and a raw sender each) post forms of 5,000 tiny fields in a loop to fresh paths
(each refused after 1,000 parts). Prints the seconds of every run and the median ratio.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from harness import HOST, make_source, parse_size, running_relay  # type: ignore[import-not-found]

BOUNDARY = b"hostileB0undary"
FORM = b"".join(
    b"--" + BOUNDARY + b'\r\nContent-Disposition: form-data; name="f%d"\r\n\r\nx\r\n' % i for i in range(5000)
)
FORM += b"--" + BOUNDARY + b"--\r\n"


def hostile_pair(port: int, index: int, stop_at: threading.Event, sent: list[int]) -> None:
    """Post tiny-field forms until told to stop; each to a fresh path with its own receiver."""
    round_ = 0
    while not stop_at.is_set():
        key = f"/hostile-{index}-{round_}".encode()
        round_ += 1
        with (
            socket.create_connection((HOST, port), timeout=10) as receiver,
            socket.create_connection((HOST, port), timeout=10) as sender,
        ):
            receiver.sendall(b"GET " + key + b" HTTP/1.1\r\nHost: t\r\n\r\n")
            time.sleep(0.01)
            head = (
                b"POST "
                + key
                + b" HTTP/1.1\r\nHost: t\r\nContent-Type: multipart/form-data; boundary="
                + BOUNDARY
                + b"\r\nContent-Length: %d\r\n\r\n" % len(FORM)
            )
            try:
                sender.sendall(head + FORM)
                while sender.recv(65536):
                    pass
                while receiver.recv(65536):
                    pass
            except OSError:
                pass
        sent[index] += 1


def timed_transfer(port: int, payload: Path, key: str) -> float:
    receiver = subprocess.Popen(["curl", "-sS", "-o", "/dev/null", f"http://{HOST}:{port}{key}"])
    time.sleep(0.2)
    started = time.monotonic()
    subprocess.run(
        ["curl", "-sS", "-o", "/dev/null", "-T", str(payload), f"http://{HOST}:{port}{key}"],
        check=True,
        timeout=300,
    )
    receiver.wait(timeout=300)
    return time.monotonic() - started


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=parse_size, default=parse_size("200M"))
    parser.add_argument("--hostile", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    limits_off = ["--client-max-pending", "0", "--client-max-active", "0", "--client-max-connections", "0"]
    idle: list[float] = []
    loaded: list[float] = []
    forms = [0] * args.hostile
    with running_relay(None, limits_off) as server, tempfile.TemporaryDirectory() as tmp:
        port = server.port
        payload = Path(tmp) / "payload.bin"
        make_source(payload, args.size)
        for round_ in range(args.rounds):
            idle.append(timed_transfer(port, payload, f"/idle-{round_}"))
            stop_at = threading.Event()
            threads = [
                threading.Thread(target=hostile_pair, args=(port, i, stop_at, forms), daemon=True)
                for i in range(args.hostile)
            ]
            for thread in threads:
                thread.start()
            time.sleep(0.5)  # the hostile senders are in full swing
            loaded.append(timed_transfer(port, payload, f"/loaded-{round_}"))
            stop_at.set()
            for thread in threads:
                thread.join(timeout=30)
            shown = f"idle {idle[-1]:.2f} s, beside {args.hostile} hostile senders {loaded[-1]:.2f} s"
            print(f"round {round_ + 1}: {shown}", flush=True)
    ratio = statistics.median(loaded) / statistics.median(idle)
    medians = f"median idle {statistics.median(idle):.2f} s, loaded {statistics.median(loaded):.2f} s"
    print(f"{args.size / 1e6:.0f} MB: {medians}, ratio {ratio:.2f}x; hostile forms posted: {sum(forms)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
