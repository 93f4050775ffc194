# One cluster per session: three hosts in namespaces, two HAProxies and an nginx in front, waiting receivers.
# Invariant: it lives from the first deploy test to the session's end; then everything it made is gone.
from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import trio

from tests.deploy.hosts import HOST_PORT, Host, Network, hosts, namespaces
from tests.deploy.parties import curl_waiting, served_by, transfer
from tests.deploy.proxies import Proxy, free_port, haproxy_config, nginx_config, run_proxy

LONG_WAIT = 90.0
"""How long the waiting receivers wait behind a proxy before their sender comes (the issue's 90 s)."""


@dataclass
class Waiting:
    """A receiver that entered through `proxy` when the cluster started and waits for `sender_via`;
    LONG_WAIT later a background thread sends to it (`send_late`), while other tests run."""

    key: str
    proxy: Proxy
    sender_via: Proxy
    host: Host
    process: subprocess.Popen[bytes]
    output: Path
    started: float
    body: Path
    sender: subprocess.CompletedProcess[bytes] | None = None
    waited_for_it: bool = False
    """The receiver was still waiting when its sender came."""
    failure: BaseException | None = None
    thread: threading.Thread | None = None

    def send_late(self) -> None:
        try:
            # (one second more: curl's own clock starts a little after `started`, taken at its spawn)
            time.sleep(max(0.0, self.started + LONG_WAIT + 1.0 - time.monotonic()))
            self.waited_for_it = self.process.poll() is None
            self.sender = subprocess.run(
                ["curl", "-sS", "--max-time", "60", "-T", str(self.body), self.sender_via.url(self.key)],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=90,
                check=False,
            )
        except BaseException as exc:  # (kept for the test to report: a thread must not raise)
            self.failure = exc


@dataclass
class Cluster:
    network: Network
    hosts: list[Host]
    haproxy_a: Proxy
    haproxy_b: Proxy
    nginx: Proxy
    workdir: Path
    waiting: list[Waiting] = field(default_factory=list)


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    workdir = tmp_path_factory.mktemp("deploy")
    with ExitStack() as stack:
        network = stack.enter_context(namespaces(3))
        started = stack.enter_context(hosts(network, workdir))
        upstreams = [f"{host.address}:{HOST_PORT}" for host in started]
        proxies = []
        for name in ("haproxy-a", "haproxy-b", "nginx"):
            port = free_port()
            if name == "nginx":
                text = nginx_config(port, upstreams, workdir / name)
            else:
                text = haproxy_config(port, upstreams)
            proxies.append(stack.enter_context(run_proxy(name, text, workdir / name, port)))
        haproxy_a, haproxy_b, nginx = proxies
        made = Cluster(network, started, haproxy_a, haproxy_b, nginx, workdir)
        for proxy, sender_via in ((made.haproxy_a, made.haproxy_b), (made.nginx, made.nginx)):
            made.waiting.append(_start_waiting(made, proxy, sender_via, stack))
        yield made


def _start_waiting(cluster: Cluster, proxy: Proxy, sender_via: Proxy, stack: ExitStack) -> Waiting:
    """A receiver on a key whose host is first found by one transfer (so that a drain can spare it)."""
    key = f"/waits-{LONG_WAIT:g}-s-behind-{proxy.name}-{os.getpid()}"
    probe = cluster.workdir / f"probe-{proxy.name}"

    async def find_host() -> Host:
        with trio.fail_after(30):
            outcome = await transfer(proxy.url(key), [proxy.url(key)], b"probe", probe)
            assert outcome.receiver_codes == ["200"], outcome
            return await served_by(cluster.hosts, key)

    host = trio.run(find_host)
    output = cluster.workdir / f"waited-{proxy.name}"
    body = cluster.workdir / f"late-{proxy.name}"
    body.write_bytes(os.urandom(500_000))
    process = curl_waiting(proxy.url(key), output)
    stack.callback(_stop, process)
    waiting = Waiting(key, proxy, sender_via, host, process, output, time.monotonic(), body)
    waiting.thread = threading.Thread(target=waiting.send_late, name=f"late sender {proxy.name}", daemon=True)
    waiting.thread.start()
    return waiting


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.kill()
    process.communicate(timeout=10)
