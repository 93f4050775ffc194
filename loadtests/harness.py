# Shared pieces of the loadtests: sizes, ports, procfs figures, files, tool versions, server start/stop.
# Invariant: standard library only; one of each helper; every wait has a deadline, every server is stoppable.
"""Used by bench.py (and its large.py, small.py, report.py, concurrency.py, tls.py), memory.py and
hostile_forms.py. pipe-relay is started as ``python -m pipe_relay`` from the checkout root, so the
code measured is this checkout's; the Node piping-server (installed with npm on demand) is run with
node directly, so the process measured is the server itself; the C reference relay is the binary
cref.py builds (node.py installs and starts Node). Each server writes its output to a log file."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from argparse import ArgumentTypeError
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

ROOT = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"
GIB = 1 << 30
MIB = 1 << 20
CLK_TCK = os.sysconf("SC_CLK_TCK")
SERVER_START_DEADLINE = 30.0
SERVER_STOP_DEADLINE = 10.0
NODE_VERSION = "1.12.9"

RELAY = "pipe-relay"
NODE = "node"
CREF_RW, CREF_SPLICE = "cref-rw", "cref-splice"
CREFS = (CREF_RW, CREF_SPLICE)
LABELS = {RELAY: RELAY, NODE: f"Node piping-server {NODE_VERSION}", CREF_RW: "C rw", CREF_SPLICE: "C splice"}


def variant_key(engine: str) -> str:
    """The key (and label) of an extra pipe-relay in the same run, with another byte engine."""
    return f"{RELAY} --engine {engine}"


def checkout_key(root: Path) -> str:
    """The key (and label) of an extra pipe-relay in the same run, run from another checkout (the
    code before a change, say: `git worktree add ../before HEAD~3`)."""
    return f"{RELAY} @ {root.name}"


def label(key: str) -> str:
    return LABELS.get(key, key)


class BenchError(Exception):
    """A failure that ends a benchmark with a message (wrong bytes, a server that would not start)."""


# Sizes


def parse_size(text: str) -> int:
    """Parse ``1073741824``, ``256M``, ``1G``, ``512MiB``, ``1.5G`` (K/M/G/T are powers of 1024)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*", text, re.IGNORECASE)
    if not m:
        raise ArgumentTypeError(f"not a size: {text!r} (try 1G, 256M, 65536)")
    value = float(m.group(1)) * (1 << (10 * " kmgt".index(m.group(2).lower() or " ")))
    if value < 1:
        raise ArgumentTypeError(f"size must be at least 1 byte: {text!r}")
    return int(value)


def fmt_size(n: int) -> str:
    for unit, scale in (("GiB", GIB), ("MiB", MIB), ("KiB", 1024)):
        if n >= scale and n % scale == 0:
            return f"{n // scale} {unit}"
    return f"{n} B"


# Ports


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


# procfs


def process_tree(pid: int) -> list[int]:
    """A server process and its live descendants (pipe-relay --workers N: the supervisor and its
    workers), so its CPU and memory are the whole server's."""
    tree = [pid]
    for parent in tree:
        try:
            for task in Path(f"/proc/{parent}/task").iterdir():
                tree += [int(child) for child in (task / "children").read_text().split()]
        except OSError:
            continue
    return tree


def _own_ticks(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[11]) + int(fields[12])


def cpu_ticks(pid: int) -> int:
    """utime + stime of a process and its live descendants, in clock ticks (fields 14 and 15 of
    /proc/PID/stat). OSError once the process itself is gone (a zombie still reads)."""
    total = _own_ticks(pid)
    for child in process_tree(pid)[1:]:
        with contextlib.suppress(OSError):  # (a worker that just ended)
            total += _own_ticks(child)
    return total


def _own_status_kib(pid: int, key: str) -> int | None:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    m = re.search(rf"^{key}:\s+(\d+)\s+kB", text, re.MULTILINE)
    return int(m.group(1)) if m else None


def proc_status_kib(pid: int, key: str) -> int | None:
    """A ``kB`` field of /proc/PID/status (VmRSS, VmHWM) summed over the process and its live
    descendants, or None if the process or field is gone."""
    own = _own_status_kib(pid, key)
    if own is None:
        return None
    return own + sum(_own_status_kib(child, key) or 0 for child in process_tree(pid)[1:])


def rss_mib(pid: int) -> float:
    """Current RSS (VmRSS) in MiB; 0.0 if it cannot be read."""
    return (proc_status_kib(pid, "VmRSS") or 0) / 1024


def reset_peak_rss(pid: int) -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0, own processes), for the process and its
    descendants. False if not possible."""
    try:
        for each in process_tree(pid):
            Path(f"/proc/{each}/clear_refs").write_text("5")
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


class RssSampler:
    """VmRSS (KiB) of a process every ``interval`` s in a thread, first after one interval: the peak
    and every sample. The fallback when VmHWM cannot be reset, and the soak's series."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        self.pid = pid
        self.interval = interval
        self.peak = 0
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            rss = proc_status_kib(self.pid, "VmRSS")
            if rss is not None:
                self.samples.append(rss)
                self.peak = max(self.peak, rss)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


# Files and tools


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
    """The first line a ``--version`` command prints (run from the checkout root), or "unknown"."""
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False, cwd=ROOT).stdout
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return out.strip().splitlines()[0] if out.strip() else "unknown"


# Servers


@dataclass
class Server:
    key: str
    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path
    log_file: IO[bytes]
    command: list[str] = field(default_factory=list)
    scheme: str = "http"  # "https" for a TLS listener (tls.py)

    @property
    def label(self) -> str:
        return label(self.key)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def url(self, path: str) -> str:
        return f"{self.scheme}://{HOST}:{self.port}{path}"

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise BenchError(f"{self.label} exited with status {self.proc.returncode}:\n{self.log_tail()}")

    def log_tail(self, lines: int = 10) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def stop_server(server: Server, deadline: float = SERVER_STOP_DEADLINE) -> None:
    """SIGTERM to the server's process group, wait up to ``deadline`` seconds, then SIGKILL and
    reap; close its log. Never raises."""
    proc = server.proc
    if proc.poll() is None:
        with contextlib.suppress(OSError):
            os.killpg(proc.pid, signal.SIGTERM)  # its own session: the group is the server
        try:
            proc.wait(timeout=deadline)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(OSError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=deadline)
    server.log_file.close()


def _spawn_server(key: str, cmd: list[str], port: int, log_path: Path, root: Path = ROOT) -> Server:
    log_file = log_path.open("wb")
    proc = subprocess.Popen(
        cmd,
        cwd=root,
        stdin=subprocess.DEVNULL,
        stdout=log_file,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    return Server(key, proc, port, log_path, log_file, cmd)


def relay_command() -> list[str]:
    """pipe-relay as this interpreter's ``-m pipe_relay``; run from ROOT it is this checkout's code."""
    return [sys.executable, "-m", "pipe_relay"]


def start_relay(
    workdir: Path, engine: str | None, extra: Sequence[str] = (), key: str = RELAY, root: Path = ROOT
) -> Server:
    """Start pipe-relay (the code of the checkout at ``root``) on a free port with its log in
    ``workdir``; return once it listens."""
    port = free_port()
    cmd = [*relay_command(), "--host", HOST, "--http-port", str(port), *extra]
    if engine is not None:
        cmd += ["--engine", engine]
    log_name = key.replace(" ", "").replace("--", "-").replace("@", "-").replace("/", "-") + ".log"
    server = _spawn_server(key, cmd, port, workdir / log_name, root)
    try:
        deadline = time.monotonic() + SERVER_START_DEADLINE
        # pipe-relay prints "pipe-relay X listening on http://127.0.0.1:PORT" when ready.
        while True:
            server.check_alive()
            m = re.search(rb"listening on http://[^:\s]+:(\d+)", server.log_path.read_bytes())
            if m:
                if int(m.group(1)) != port:
                    raise BenchError(f"pipe-relay listens on {m.group(1).decode()}, asked for {port}")
                break
            if time.monotonic() > deadline:
                raise BenchError(f"pipe-relay did not report listening in time:\n{server.log_tail()}")
            time.sleep(0.05)
        wait_for_tcp(port, deadline, server.proc)
    except BaseException:
        stop_server(server)
        raise
    return server


@contextlib.contextmanager
def running_relay(engine: str | None, extra: Sequence[str] = ()) -> Iterator[Server]:
    """pipe-relay for the length of a with block, its log in a temporary folder; stopped after."""
    with tempfile.TemporaryDirectory(prefix="pipe-relay-load-") as tmp:
        server = start_relay(Path(tmp), engine, extra)
        try:
            yield server
        finally:
            stop_server(server)


def start_cref(workdir: Path, binary: Path, key: str) -> Server:
    """Start the C reference relay (``binary``, from cref.py) as CREF_RW or CREF_SPLICE on a free port."""
    port = free_port()
    return start_listening(key, [str(binary), "--" + key.removeprefix("cref-"), str(port)], port, workdir)


def start_listening(key: str, cmd: list[str], port: int, workdir: Path) -> Server:
    server = _spawn_server(key, cmd, port, workdir / f"{key}.log")
    try:
        wait_for_tcp(port, time.monotonic() + SERVER_START_DEADLINE, server.proc)
    except BaseException:
        stop_server(server)
        raise
    return server


def start_server(
    engine: str | None, extra: Sequence[str], log: IO[bytes] | None = None
) -> tuple[subprocess.Popen[bytes], int]:
    """A server of this checkout on a port it picks (`--http-port 0`), its log to `log` (else
    inherited); (process, port) once it listens. For the soak and slowloris runs."""
    command = [*relay_command(), "--host", HOST, "--http-port", "0", "--log-level", "warning", *extra]
    if engine:
        command += ["--engine", engine]
    server = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=log, start_new_session=True)
    assert server.stdout is not None
    deadline = time.monotonic() + SERVER_START_DEADLINE
    line = b""
    while not line.endswith(b"\n"):
        if time.monotonic() > deadline or server.poll() is not None:
            stop(server)
            raise BenchError("pipe-relay did not start")
        line += server.stdout.read(1)
    return server, int(line.decode().rsplit(":", 1)[1])


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the process group (a drain), SIGKILL if it is still there after 10 s."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
