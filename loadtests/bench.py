"""Throughput benchmark: pipe-relay against the Node piping-server, side by side on 127.0.0.1.

Both servers are started idle. Large transfers are taken one at a time, round-robin between the
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

The small-transfers mode runs 50 concurrent sender/receiver pairs of 1 KiB bodies for a bounded time
(raw HTTP/1.1 over non-blocking sockets driven by one selector loop, every received body compared
with the one sent) and reports transfers per second.

Run:  .venv/bin/python loadtests/bench.py --size 256M --rounds 3
Only the Python 3.11 standard library is used. Every curl has --max-time, every wait a deadline, and
both servers are stopped in a finally block (also on Ctrl-C and SIGTERM).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import hashlib
import os
import platform
import re
import secrets
import selectors
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

NODE_PACKAGE = "piping-server"
NODE_VERSION = "1.12.9"
HOST = "127.0.0.1"
ALL_CASES = ("file-n1", "chunked-n1", "file-n3", "chunked-n3")
GIB = 1 << 30
MIB = 1 << 20
CLK_TCK = os.sysconf("SC_CLK_TCK")
SERVER_START_DEADLINE = 30.0
SERVER_STOP_DEADLINE = 10.0
CONNECT_WAIT_DEADLINE = 5.0
NPM_DEADLINE = 600.0
SMALL_BODY_SIZE = 1024
SMALL_TRANSFER_TIMEOUT = 10.0
SMALL_DRAIN_DEADLINE = 15.0

RELAY = "pipe-relay"
NODE = "node"
LABELS = {RELAY: "pipe-relay", NODE: f"Node piping-server {NODE_VERSION}"}


class BenchError(Exception):
    """A failure that ends the benchmark with a message (wrong bytes, a server that would not start)."""


# --------------------------------------------------------------------------------------------------
# Small helpers


def parse_size(text: str) -> int:
    """Parse ``1073741824``, ``256M``, ``1G``, ``512MiB``, ``1.5G`` (K/M/G/T are powers of 1024)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*", text, re.IGNORECASE)
    if not m:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (try 1G, 256M, 65536)")
    value = float(m.group(1)) * (1 << (10 * " kmgt".index(m.group(2).lower() or " ")))
    if value < 1:
        raise argparse.ArgumentTypeError(f"size must be at least 1 byte: {text!r}")
    return int(value)


def fmt_size(n: int) -> str:
    for unit, scale in (("GiB", GIB), ("MiB", MIB), ("KiB", 1024)):
        if n >= scale and n % scale == 0:
            return f"{n // scale} {unit}"
    return f"{n} B"


def free_port() -> int:
    """An ephemeral port on 127.0.0.1 that was free a moment ago (bind port 0, read it, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


def wait_for_tcp(port: int, deadline: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    """Poll a TCP connect to 127.0.0.1:port until it succeeds or the monotonic deadline passes."""
    while True:
        if proc is not None and proc.poll() is not None:
            raise BenchError(f"server exited with status {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection((HOST, port), timeout=0.5):
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise BenchError(f"nothing listening on {HOST}:{port} within the deadline")
        time.sleep(0.05)


def cpu_ticks(pid: int) -> int:
    """utime + stime of a process, in clock ticks (fields 14 and 15 of /proc/PID/stat)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[11]) + int(fields[12])


def proc_status_kib(pid: int, key: str) -> int | None:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    m = re.search(rf"^{key}:\s+(\d+)\s+kB", text, re.MULTILINE)
    return int(m.group(1)) if m else None


def reset_peak_rss(pid: int) -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0, own processes). False if not possible."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def established_to_port(port: int) -> int:
    """How many server-side sockets on 127.0.0.1:port are ESTABLISHED (from /proc/net/tcp)."""
    count = 0
    try:
        lines = Path("/proc/net/tcp").read_text().splitlines()[1:]
    except OSError:
        return -1
    want = f"0100007F:{port:04X}"
    for line in lines:
        parts = line.split()
        if len(parts) > 3 and parts[1] == want and parts[3] == "01":
            count += 1
    return count


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(4 * MIB):
            h.update(chunk)
    return h.hexdigest()


def make_source(path: Path, size: int) -> str:
    """Write ``size`` random bytes to ``path`` and return their sha256."""
    h = hashlib.sha256()
    left = size
    with path.open("wb") as f:
        while left:
            chunk = os.urandom(min(left, 4 * MIB))
            h.update(chunk)
            f.write(chunk)
            left -= len(chunk)
    return h.hexdigest()


def tool_version(cmd: Sequence[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return out.strip().splitlines()[0] if out.strip() else "unknown"


# --------------------------------------------------------------------------------------------------
# Servers


@dataclass
class Server:
    key: str
    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path
    log_file: IO[bytes]

    @property
    def label(self) -> str:
        return LABELS[self.key]

    @property
    def pid(self) -> int:
        return self.proc.pid

    def url(self, path: str) -> str:
        return f"http://{HOST}:{self.port}{path}"

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise BenchError(f"{self.label} exited with status {self.proc.returncode}:\n{self.log_tail()}")

    def log_tail(self, lines: int = 10) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def stop_process(proc: subprocess.Popen[Any], deadline: float = SERVER_STOP_DEADLINE) -> None:
    """SIGTERM, wait up to ``deadline`` seconds, then SIGKILL and reap. Never raises."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(OSError):
        proc.terminate()
    try:
        proc.wait(timeout=deadline)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(OSError):
            proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=deadline)


def relay_command() -> list[str]:
    exe = Path(sys.executable).parent / "pipe-relay"
    if exe.exists():
        return [str(exe)]
    found = shutil.which("pipe-relay")
    if found:
        return [found]
    return [sys.executable, "-m", "pipe_relay"]


def start_relay(workdir: Path, engine: str | None) -> Server:
    port = free_port()
    cmd = [*relay_command(), "--host", HOST, "--http-port", str(port)]
    if engine is not None:
        cmd += ["--engine", engine]
    log_path = workdir / "pipe-relay.log"
    log_file = log_path.open("wb")
    proc = subprocess.Popen(
        cmd, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True
    )
    server = Server(RELAY, proc, port, log_path, log_file)
    try:
        deadline = time.monotonic() + SERVER_START_DEADLINE
        # pipe-relay prints "pipe-relay X listening on http://127.0.0.1:PORT" when ready.
        while True:
            server.check_alive()
            m = re.search(rb"listening on http://[^:\s]+:(\d+)", log_path.read_bytes())
            if m:
                if int(m.group(1)) != port:
                    raise BenchError(f"pipe-relay listens on {m.group(1).decode()}, asked for {port}")
                break
            if time.monotonic() > deadline:
                raise BenchError(f"pipe-relay did not report listening in time:\n{server.log_tail()}")
            time.sleep(0.05)
        wait_for_tcp(port, deadline, proc)
    except BaseException:
        stop_process(proc)
        log_file.close()
        raise
    print(f"# started {shlex.join(cmd)} (pid {proc.pid})", flush=True)
    return server


def ensure_node_server(node_dir: Path) -> Path:
    """Install piping-server@NODE_VERSION with npm into node_dir unless already there; return its entry."""
    pkg_dir = node_dir / "node_modules" / NODE_PACKAGE
    pkg_json = pkg_dir / "package.json"
    installed = None
    if pkg_json.exists():
        m = re.search(r'"version"\s*:\s*"([^"]+)"', pkg_json.read_text())
        installed = m.group(1) if m else None
    if installed != NODE_VERSION:
        npm = shutil.which("npm")
        if npm is None:
            raise BenchError("npm not found; install Node.js >= 18 or pass --no-node")
        node_dir.mkdir(parents=True, exist_ok=True)
        cmd = [
            npm,
            "install",
            "--no-audit",
            "--no-fund",
            "--prefix",
            str(node_dir),
            f"{NODE_PACKAGE}@{NODE_VERSION}",
        ]
        print(f"# installing: {shlex.join(cmd)}", flush=True)
        try:
            subprocess.run(cmd, check=True, timeout=NPM_DEADLINE, stdin=subprocess.DEVNULL)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
            raise BenchError(f"npm install failed: {exc}") from exc
    # The package's bin ("piping-server": "dist/src/index.js") is a node script; run it with node
    # directly so the process we measure is the server itself.
    entry = pkg_dir / "dist" / "src" / "index.js"
    if not entry.exists():
        raise BenchError(f"{entry} is missing; remove {node_dir} and retry")
    return entry


def start_node(workdir: Path, node_dir: Path) -> Server:
    entry = ensure_node_server(node_dir)
    node = shutil.which("node")
    if node is None:
        raise BenchError("node not found; install Node.js >= 18 or pass --no-node")
    port = free_port()
    cmd = [node, str(entry), "--host", HOST, "--http-port", str(port)]
    log_path = workdir / "node.log"
    log_file = log_path.open("wb")
    proc = subprocess.Popen(
        cmd, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        wait_for_tcp(port, time.monotonic() + SERVER_START_DEADLINE, proc)
    except BaseException:
        stop_process(proc)
        log_file.close()
        raise
    print(f"# started {shlex.join(cmd)} (pid {proc.pid})", flush=True)
    return Server(NODE, proc, port, log_path, log_file)


# --------------------------------------------------------------------------------------------------
# Large transfers with curl


@dataclass
class Sample:
    seconds: float
    cpu_seconds: float


@dataclass
class CaseResult:
    samples: list[Sample] = field(default_factory=list)
    peak_rss_kib: int = 0
    verified: bool = False


class RssSampler:
    """Samples VmRSS of a process every 50 ms in a thread; the fallback when VmHWM cannot be reset."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            rss = proc_status_kib(self.pid, "VmRSS")
            if rss is not None:
                self.peak = max(self.peak, rss)
            self._stop.wait(0.05)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


class CurlRunner:
    def __init__(self, source: Path, size: int, source_sha: str, max_time: float, workdir: Path) -> None:
        self.source = source
        self.size = size
        self.source_sha = source_sha
        self.max_time = max_time
        self.workdir = workdir
        self.live: set[subprocess.Popen[bytes]] = set()

    def _spawn(self, cmd: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        proc: subprocess.Popen[bytes] = subprocess.Popen(cmd, **kwargs)
        self.live.add(proc)
        return proc

    def kill_all(self) -> None:
        for proc in list(self.live):
            if proc.poll() is None:
                with contextlib.suppress(OSError):
                    proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
        self.live.clear()

    def _wait(self, proc: subprocess.Popen[bytes], deadline: float, what: str) -> bytes:
        timeout = max(0.1, deadline - time.monotonic())
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise BenchError(f"{what} still running past its deadline") from exc
        finally:
            self.live.discard(proc)
        if proc.returncode != 0:
            msg = (err or b"").decode(errors="replace").strip()
            raise BenchError(f"{what} exited with status {proc.returncode}: {msg}")
        return out or b""

    def transfer(self, server: Server, case: str, verify: bool) -> Sample:
        """One transfer: start the receivers, wait until they are connected, start the sender, wait."""
        chunked = case.startswith("chunked")
        n = int(case.rsplit("-n", 1)[1])
        path = f"/bench-{case}-{secrets.token_hex(8)}" + (f"?n={n}" if n > 1 else "")
        url = server.url(path)
        curl = ["curl", "-sS", "--max-time", f"{self.max_time:g}"]
        deadline = time.monotonic() + self.max_time + 30
        before_established = established_to_port(server.port)
        receivers: list[tuple[subprocess.Popen[bytes], Path | None]] = []
        try:
            for i in range(n):
                out = self.workdir / f"recv-{i}.bin" if verify else None
                cmd = [*curl, "-o", str(out) if out else os.devnull, "-w", "%{size_download}", url]
                proc = self._spawn(
                    cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
                )
                receivers.append((proc, out))
            # Give the receivers' requests a chance to reach the server before the sender starts, so
            # that curl's start-up is not in the measurement. Bounded; proceeds on timeout.
            wait_until = time.monotonic() + CONNECT_WAIT_DEADLINE
            while before_established >= 0 and time.monotonic() < wait_until:
                if established_to_port(server.port) >= before_established + n:
                    break
                if any(p.poll() is not None for p, _ in receivers):
                    break
                time.sleep(0.002)

            cpu_before = cpu_ticks(server.pid)
            t0 = time.perf_counter()
            feeder: subprocess.Popen[bytes] | None = None
            if chunked:
                feeder = self._spawn(
                    ["cat", str(self.source)], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE
                )
                sender = self._spawn(
                    [*curl, "-T", "-", "-o", os.devnull, url],
                    stdin=feeder.stdout,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                )
                assert feeder.stdout is not None
                feeder.stdout.close()  # the sender holds the read end now
            else:
                sender = self._spawn(
                    [*curl, "-T", str(self.source), "-o", os.devnull, url],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                )
            outputs = [self._wait(p, deadline, f"{case} receiver {i}") for i, (p, _) in enumerate(receivers)]
            t1 = time.perf_counter()
            self._wait(sender, deadline, f"{case} sender")
            if feeder is not None:
                self._wait(feeder, deadline, f"{case} cat")
            cpu_after = cpu_ticks(server.pid)
        finally:
            self.kill_all()

        server.check_alive()
        for i, raw in enumerate(outputs):
            got = int(raw.decode().strip() or "0")
            if got != self.size:
                raise BenchError(f"{server.label} {case}: receiver {i} got {got} bytes, expected {self.size}")
        if verify:
            for i, (_, out) in enumerate(receivers):
                assert out is not None
                digest = sha256_file(out)
                out.unlink()
                if digest != self.source_sha:
                    raise BenchError(f"{server.label} {case}: receiver {i} sha256 {digest} != source")
        return Sample(seconds=t1 - t0, cpu_seconds=(cpu_after - cpu_before) / CLK_TCK)


# --------------------------------------------------------------------------------------------------
# Small transfers: raw HTTP/1.1 over non-blocking sockets, one selector loop


@dataclass
class SmallResult:
    transfers: int
    seconds: float
    errors: int
    cpu_seconds: float
    client_cpu_seconds: float
    peak_rss_kib: int
    first_error: str = ""

    @property
    def per_second(self) -> float:
        return self.transfers / self.seconds if self.seconds > 0 else 0.0


def parse_response(raw: bytes) -> tuple[int, bytes]:
    """Status and decoded body of a complete HTTP/1.1 response that ended at connection close."""
    head, sep, rest = raw.partition(b"\r\n\r\n")
    if not sep:
        raise ValueError(f"incomplete response head: {raw[:80]!r}")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
        body = bytearray()
        pos = 0
        while True:
            eol = rest.index(b"\r\n", pos)
            length = int(rest[pos:eol].split(b";")[0], 16)
            if length == 0:
                break
            start = eol + 2
            body += rest[start : start + length]
            if rest[start + length : start + length + 2] != b"\r\n":
                raise ValueError("bad chunk framing")
            pos = start + length + 2
        return status, bytes(body)
    if b"content-length" in headers:
        length = int(headers[b"content-length"])
        if len(rest) != length:
            raise ValueError(f"body of {len(rest)} bytes, Content-Length {length}")
    return status, rest


class _Exchange:
    """One HTTP/1.1 request on its own non-blocking connection, its response read until EOF."""

    __slots__ = ("chunks", "ended", "pair", "request", "sent", "sock")

    def __init__(self, port: int, request: bytes, pair: _Pair) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setblocking(False)
        self.request = request
        self.sent = 0
        self.chunks: list[bytes] = []
        self.pair = pair
        self.ended = False
        code = self.sock.connect_ex((HOST, port))
        if code not in (0, errno.EINPROGRESS):
            self.sock.close()
            raise OSError(code, os.strerror(code))

    def close(self) -> None:
        self.ended = True
        self.sock.close()


class _Pair:
    """A receiver's GET and a sender's PUT of one random 1 KiB body on a fresh path."""

    __slots__ = ("body", "deadline", "receiver", "sender")

    def __init__(self, port: int, deadline: float) -> None:
        path = f"/small-{secrets.token_hex(8)}".encode()
        self.body = os.urandom(SMALL_BODY_SIZE)
        self.deadline = deadline
        host = f"Host: {HOST}:{port}\r\n".encode()
        get = b"GET " + path + b" HTTP/1.1\r\n" + host + b"Connection: close\r\n\r\n"
        put = (
            b"PUT " + path + b" HTTP/1.1\r\n" + host + b"Content-Type: application/octet-stream\r\n"
            b"Content-Length: " + str(len(self.body)).encode() + b"\r\nConnection: close\r\n\r\n" + self.body
        )
        self.receiver = _Exchange(port, get, self)
        try:
            self.sender = _Exchange(port, put, self)
        except OSError:
            self.receiver.close()
            raise

    def check(self) -> None:
        """Raise ValueError unless both responses are 200 and the receiver got the body sent."""
        status, got = parse_response(b"".join(self.receiver.chunks))
        if status != 200 or got != self.body:
            raise ValueError(f"receiver: status {status}, {len(got)} bytes, body matches: {got == self.body}")
        send_status, _ = parse_response(b"".join(self.sender.chunks))
        if send_status != 200:
            raise ValueError(f"sender: status {send_status}")


def small_run(port: int, pairs: int, seconds: float) -> tuple[int, float, int, str]:
    """``pairs`` concurrent loops of transfers for ``seconds``, driven by one selector loop (a
    client much cheaper than asyncio streams, so that the servers, not the client, set the pace).
    Returns count, elapsed, errors, first error. Transfers still open at the end get
    SMALL_DRAIN_DEADLINE more to finish (not counted), then are closed."""
    done = errors = 0
    first_error = ""
    selector = selectors.DefaultSelector()
    live: set[_Pair] = set()
    start = time.monotonic()
    stop_at = start + seconds

    def count_error(exc: BaseException) -> None:
        nonlocal errors, first_error
        errors += 1
        first_error = first_error or f"{type(exc).__name__}: {exc}"

    def fail(pair: _Pair, exc: BaseException) -> None:
        count_error(exc)
        finish(pair)

    def finish(pair: _Pair) -> None:
        for exchange in (pair.receiver, pair.sender):
            if not exchange.ended:
                selector.unregister(exchange.sock)
                exchange.close()
        live.discard(pair)

    def launch() -> None:
        now = time.monotonic()
        if now >= stop_at:
            return
        try:
            pair = _Pair(port, now + SMALL_TRANSFER_TIMEOUT)
        except OSError as exc:
            count_error(exc)
            return
        live.add(pair)
        selector.register(pair.receiver.sock, selectors.EVENT_WRITE, pair.receiver)
        selector.register(pair.sender.sock, selectors.EVENT_WRITE, pair.sender)

    def on_event(exchange: _Exchange, mask: int) -> None:
        nonlocal done
        pair = exchange.pair
        if mask & selectors.EVENT_WRITE:
            exchange.sent += exchange.sock.send(exchange.request[exchange.sent :])
            if exchange.sent == len(exchange.request):
                selector.modify(exchange.sock, selectors.EVENT_READ, exchange)
            return
        data = exchange.sock.recv(65536)
        if data:
            exchange.chunks.append(data)
            return
        selector.unregister(exchange.sock)
        exchange.close()  # Connection: close, so the response ends at EOF
        if pair.receiver.ended and pair.sender.ended:
            live.discard(pair)
            pair.check()
            if time.monotonic() <= stop_at:
                done += 1
            launch()

    try:
        for _ in range(pairs):
            launch()
        hard_stop = stop_at + SMALL_DRAIN_DEADLINE
        while live and time.monotonic() < hard_stop:
            for key, mask in selector.select(timeout=0.05):
                exchange = key.data
                if exchange.ended:
                    continue
                try:
                    on_event(exchange, mask)
                except (OSError, ValueError, IndexError) as exc:
                    fail(exchange.pair, exc)
                    launch()
            now = time.monotonic()
            for pair in [p for p in live if p.deadline < now]:
                fail(pair, TimeoutError(f"no complete transfer in {SMALL_TRANSFER_TIMEOUT:g} s"))
                launch()
    finally:
        for pair in list(live):
            finish(pair)
        selector.close()
    return done, seconds, errors, first_error


def run_small(server: Server, pairs: int, seconds: float) -> SmallResult:
    reset_ok = reset_peak_rss(server.pid)
    cpu_before = cpu_ticks(server.pid)
    client_before = time.process_time()
    with RssSampler(server.pid) as sampler:
        done, elapsed, errors, first_error = small_run(server.port, pairs, seconds)
    client_cpu = time.process_time() - client_before
    cpu = (cpu_ticks(server.pid) - cpu_before) / CLK_TCK
    server.check_alive()
    hwm = proc_status_kib(server.pid, "VmHWM") if reset_ok else None
    return SmallResult(done, elapsed, errors, cpu, client_cpu, max(hwm or 0, sampler.peak), first_error)


# --------------------------------------------------------------------------------------------------
# Report


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


# --------------------------------------------------------------------------------------------------
# Main


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Benchmark pipe-relay against the Node piping-server with curl on 127.0.0.1.",
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
    p.add_argument("--max-time", type=float, default=300.0, help="curl --max-time per process, seconds")
    p.add_argument(
        "--small", action=argparse.BooleanOptionalAction, default=True, help="small-transfers mode"
    )
    p.add_argument("--small-seconds", type=float, default=10.0, help="duration of one small-transfers run")
    p.add_argument("--small-pairs", type=int, default=50, help="concurrent sender/receiver pairs")
    p.add_argument("--small-rounds", type=int, default=1, help="small-transfers runs per server (median)")
    p.add_argument(
        "--node-dir",
        type=Path,
        default=Path.home() / ".cache" / "pipe-relay-bench" / "node",
        help=f"npm prefix where {NODE_PACKAGE}@{NODE_VERSION} is installed on demand",
    )
    p.add_argument("--no-node", action="store_true", help="skip the Node piping-server (no ratios)")
    p.add_argument("--skip-verify", action="store_true", help="skip the untimed sha256 transfer per case")
    args = p.parse_args(argv)
    cases = [c.strip() for c in args.cases.split(",") if c.strip() and c.strip() != "none"]
    bad = [c for c in cases if c not in ALL_CASES]
    if bad:
        p.error(f"unknown case(s) {', '.join(bad)}; choose from {', '.join(ALL_CASES)}")
    args.cases = cases
    if args.rounds < 1 or args.small_rounds < 1 or args.small_pairs < 1:
        p.error("--rounds, --small-rounds and --small-pairs must be at least 1")
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


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    command = shlex.join([sys.executable, sys.argv[0], *argv])
    if shutil.which("curl") is None:
        print("curl not found", file=sys.stderr)
        return 2

    servers: list[Server] = []
    runner: CurlRunner | None = None
    workdir = Path(tempfile.mkdtemp(prefix="pipe-relay-bench-"))
    try:
        with terminate_as_interrupt():
            print(f"# {command}", flush=True)
            print(f"# work folder {workdir}", flush=True)
            servers.append(start_relay(workdir, args.engine))
            if not args.no_node:
                servers.append(start_node(workdir, args.node_dir))
            env = [
                f"pipe-relay: {tool_version([*relay_command(), '--version'])}"
                + (f", --engine {args.engine}" if args.engine else ""),
                "curl " + " ".join(tool_version(["curl", "--version"]).split()[1:2]),
                f"Python {platform.python_version()}, {platform.system()} {platform.release()}, "
                f"{os.cpu_count()} CPU(s), load average at start "
                + " ".join(f"{x:.2f}" for x in os.getloadavg()),
            ]
            if not args.no_node:
                env.insert(
                    1, f"Node piping-server {NODE_VERSION} on node {tool_version(['node', '--version'])}"
                )

            results: dict[tuple[str, str], CaseResult] = {}
            if args.cases:
                print(f"# writing {fmt_size(args.size)} of random bytes", flush=True)
                source = workdir / "source.bin"
                source_sha = make_source(source, args.size)
                runner = CurlRunner(source, args.size, source_sha, args.max_time, workdir)
                for case in args.cases:
                    per = {s.key: CaseResult() for s in servers}
                    for s in servers:
                        results[(case, s.key)] = per[s.key]
                    reset_ok = {s.key: reset_peak_rss(s.pid) for s in servers}
                    samplers = {s.key: RssSampler(s.pid) for s in servers}
                    with contextlib.ExitStack() as stack:
                        for sampler in samplers.values():
                            stack.enter_context(sampler)
                        if not args.skip_verify:
                            for s in servers:
                                runner.transfer(s, case, verify=True)
                                per[s.key].verified = True
                                print(f"# {case} {s.label}: sha256 ok", flush=True)
                        for rnd in range(args.rounds):
                            for s in servers:
                                sample = runner.transfer(s, case, verify=False)
                                per[s.key].samples.append(sample)
                                print(
                                    f"# {case} round {rnd + 1}/{args.rounds} {s.label}: "
                                    f"{args.size / sample.seconds / 1e6:.0f} MB/s, "
                                    f"{sample.cpu_seconds / (args.size / GIB):.2f} CPU s/GiB",
                                    flush=True,
                                )
                    for s in servers:
                        hwm = proc_status_kib(s.pid, "VmHWM") if reset_ok[s.key] else None
                        per[s.key].peak_rss_kib = max(hwm or 0, samplers[s.key].peak)
                source.unlink()

            small: dict[str, list[SmallResult]] = {}
            if args.small:
                for rnd in range(args.small_rounds):
                    for s in servers:
                        r = run_small(s, args.small_pairs, args.small_seconds)
                        small.setdefault(s.key, []).append(r)
                        print(
                            f"# small round {rnd + 1}/{args.small_rounds} {s.label}: "
                            f"{r.per_second:.0f} transfers/s, {r.errors} error(s)",
                            flush=True,
                        )

            print()
            print(report(args, command, servers, results, small, env), flush=True)
            small_errors = sum(r.errors for runs in small.values() for r in runs)
            return 1 if small_errors else 0
    except BenchError as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bench: interrupted", file=sys.stderr)
        return 130
    finally:
        if runner is not None:
            runner.kill_all()
        for s in servers:
            stop_process(s.proc)
            s.log_file.close()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
