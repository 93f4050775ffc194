# Large transfers with real curl processes: one transfer at a time, receivers connected before the sender.
# Invariant: each receiver's byte count (and on the warm-up its sha256) matches the source, else BenchError.
"""The four cases (``file-n1``, ``chunked-n1``, ``file-n3``, ``chunked-n3``) and how one is timed;
bench.py's docstring describes the method. C splice skips the chunked cases."""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import (  # type: ignore[import-not-found]
    CLK_TCK,
    CREF_SPLICE,
    GIB,
    BenchError,
    RssSampler,
    Server,
    cpu_ticks,
    established_to_port,
    proc_status_kib,
    reset_peak_rss,
    sha256_file,
)

ALL_CASES = ("file-n1", "chunked-n1", "file-n3", "chunked-n3")
CONNECT_WAIT_DEADLINE = 5.0


@dataclass
class Sample:
    seconds: float
    cpu_seconds: float


@dataclass
class CaseResult:
    samples: list[Sample] = field(default_factory=list)
    peak_rss_kib: int = 0
    verified: bool = False


class CurlRunner:
    def __init__(
        self,
        source: Path,
        size: int,
        source_sha: str,
        max_time: float,
        workdir: Path,
        curl_args: Sequence[str] = (),
    ) -> None:
        """``curl_args`` go to every curl (tls.py's --cacert and HTTP version for --tls)."""
        self.source = source
        self.size = size
        self.source_sha = source_sha
        self.max_time = max_time
        self.workdir = workdir
        self.curl_args = list(curl_args)
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
        curl = ["curl", "-sS", "--max-time", f"{self.max_time:g}", *self.curl_args]
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


def serves(server: Server, case: str) -> bool:
    """C splice takes Content-Length bodies only (a chunked one goes its rw way): no chunked case."""
    return not (server.key == CREF_SPLICE and case.startswith("chunked"))


def run_case(
    runner: CurlRunner, servers: list[Server], case: str, rounds: int, verify: bool
) -> dict[str, CaseResult]:
    """One case on every server that serves it: the sha256 warm-up (unless not ``verify``), then
    ``rounds`` timed rounds round-robin, each printed as it ends; the peak RSS is taken over the case."""
    servers = [s for s in servers if serves(s, case)]
    per = {s.key: CaseResult() for s in servers}
    reset_ok = {s.key: reset_peak_rss(s.pid) for s in servers}
    samplers = {s.key: RssSampler(s.pid) for s in servers}
    with contextlib.ExitStack() as stack:
        for sampler in samplers.values():
            stack.enter_context(sampler)
        if verify:
            for s in servers:
                runner.transfer(s, case, verify=True)
                per[s.key].verified = True
                print(f"# {case} {s.label}: sha256 ok", flush=True)
        for rnd in range(rounds):
            for s in servers:
                sample = runner.transfer(s, case, verify=False)
                per[s.key].samples.append(sample)
                print(
                    f"# {case} round {rnd + 1}/{rounds} {s.label}: "
                    f"{runner.size / sample.seconds / 1e6:.0f} MB/s, "
                    f"{sample.cpu_seconds / (runner.size / GIB):.2f} CPU s/GiB",
                    flush=True,
                )
    for s in servers:
        hwm = proc_status_kib(s.pid, "VmHWM") if reset_ok[s.key] else None
        per[s.key].peak_rss_kib = max(hwm or 0, samplers[s.key].peak)
    return per
