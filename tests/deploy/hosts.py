# pipe-relay hosts in network namespaces this test makes: a namespace, a veth pair and a /24 per host.
# Invariant: only names and addresses made here are touched, and all of them are deleted on exit.
from __future__ import annotations

import os
import re
import select
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.cli_process import ROOT

HOST_PORT = 8080
START_DEADLINE = 30.0
STOP_DEADLINE = 10.0
IP_DEADLINE = 10.0
_TRANSFER_LINE = re.compile(r"DEBUG transfer (\S+) n=(\d+) complete: (\d+) bytes")


def _ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=IP_DEADLINE, check=False)


def _free_third_octet(count: int) -> int:
    """A first third octet of `count` consecutive 10.231.x.0/24 that no address or route here uses."""
    used = _ip("-o", "addr").stdout + _ip("route").stdout
    for first in range(os.getpid() % 200, 250, 1):
        if all(f"10.231.{first + k}." not in used for k in range(count)):
            return first
    pytest.skip("no free 10.231.x.0/24 for the test's hosts")


@dataclass
class Network:
    """Host k lives in namespace `namespaces[k]`, at `10.231.(octet+k).2`; the root namespace (where
    the proxies and the clients run) is `.1` on the other end of its veth pair."""

    tag: str
    octet: int
    namespaces: list[str] = field(default_factory=list)

    def host_address(self, k: int) -> str:
        return f"10.231.{self.octet + k}.2"

    def proxy_address(self, k: int) -> str:
        return f"10.231.{self.octet + k}.1"


@contextmanager
def namespaces(count: int) -> Iterator[Network]:
    """`count` namespaces, each linked to the root namespace by a veth pair; skipped with the reason
    where a namespace cannot be made (not root, no CAP_SYS_ADMIN, no `ip`)."""
    if shutil.which("ip") is None:
        pytest.skip("no `ip` command (iproute2): the hosts' network namespaces cannot be made")
    network = Network(tag=f"pr{os.getpid() % 100000}", octet=_free_third_octet(count))
    links: list[str] = []
    try:
        for k in range(count):
            name = f"{network.tag}h{k}"
            made = _ip("netns", "add", name)
            if made.returncode != 0:
                pytest.skip(f"`ip netns add` failed, so no hosts in namespaces: {made.stderr.strip()}")
            network.namespaces.append(name)
            outer, inner = f"{network.tag}v{k}", f"{network.tag}p{k}"
            steps = [
                ("link", "add", outer, "type", "veth", "peer", "name", inner, "netns", name),
                ("addr", "add", f"{network.proxy_address(k)}/24", "dev", outer),
                ("link", "set", outer, "up"),
                ("-n", name, "addr", "add", f"{network.host_address(k)}/24", "dev", inner),
                ("-n", name, "link", "set", inner, "up"),
                ("-n", name, "link", "set", "lo", "up"),
            ]
            for step in steps:
                done = _ip(*step)
                assert done.returncode == 0, f"ip {' '.join(step)}: {done.stderr.strip()}"
                if step[:2] == ("link", "add"):
                    links.append(outer)
        yield network
    finally:
        for link in links:
            _ip("link", "del", link)  # (and its peer with it)
        for name in network.namespaces:
            _ip("netns", "del", name)


@dataclass
class Host:
    """One pipe-relay process in its namespace; its log (debug, paths shown) is the routing oracle."""

    name: str
    address: str
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://{self.address}:{HOST_PORT}"

    def transfers(self) -> list[tuple[str, int, int]]:
        """(key, n, bytes) of every transfer this host completed so far."""
        text = self.log_path.read_text(errors="replace")
        return [(m[1], int(m[2]), int(m[3])) for m in _TRANSFER_LINE.finditer(text)]

    def drain(self) -> None:
        self.process.send_signal(signal.SIGTERM)


def _first_line(process: subprocess.Popen[bytes], deadline: float) -> str:
    """The server's first start-up line (`... listening on URL`), read as it is printed."""
    assert process.stdout is not None
    fd = process.stdout.fileno()
    data = b""
    while not data.endswith(b"\n"):
        left = deadline - time.monotonic()
        assert left > 0, f"no start-up line in {START_DEADLINE:g} s: {data!r}"
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            chunk = os.read(fd, 1)
            assert chunk, f"the server exited after printing {data!r}"
            data += chunk
    return data.decode()


@contextmanager
def hosts(network: Network, log_dir: Path, *flags: str) -> Iterator[list[Host]]:
    """A pipe-relay in each namespace on HOST_PORT, trusting its proxies' address (the root end of its
    veth pair) for X-Forwarded-For; killed on exit."""
    with ExitStack() as stack:
        started: list[Host] = []
        for k, name in enumerate(network.namespaces):  # all start at once; then each is waited for
            address = network.host_address(k)
            log_path = log_dir / f"host{k}.log"
            command = ["ip", "netns", "exec", name, sys.executable, "-m", "pipe_relay"]
            command += ["--host", address, "--http-port", str(HOST_PORT), "--log-level", "debug"]
            command += ["--log-paths", "--trusted-proxies", f"{network.proxy_address(k)}/32", *flags]
            with log_path.open("wb") as log:
                process = subprocess.Popen(
                    command,
                    cwd=ROOT,
                    env={**os.environ, "PYTHONPATH": str(ROOT)},
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=log,
                )
            stack.callback(_stop, process)
            started.append(Host(name, address, process, log_path))
        deadline = time.monotonic() + START_DEADLINE
        for host in started:
            line = _first_line(host.process, deadline)
            assert f"http://{host.address}:{HOST_PORT}" in line, line
        yield started


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.kill()
    process.wait(timeout=STOP_DEADLINE)
    if process.stdout is not None:
        process.stdout.close()
