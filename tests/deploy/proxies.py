# HAProxy and nginx run with the configs shipped in deploy/, only their listen address and hosts replaced.
# Invariant: every other line is the shipped file's; each proxy runs in the foreground and is killed on exit.
from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.cli_process import ROOT

DEPLOY = ROOT / "deploy"
START_DEADLINE = 15.0
STOP_DEADLINE = 10.0


def _replace_once(text: str, pattern: str, replacement: str) -> str:
    new, count = re.subn(pattern, replacement, text, count=1, flags=re.MULTILINE)
    assert count == 1, f"the shipped config has no line matching {pattern!r}"
    return new


def haproxy_config(port: int, hosts: Sequence[str], text: str | None = None) -> str:
    """deploy/haproxy.cfg listening on 127.0.0.1:port, its `server` lines naming `hosts` (host:port),
    ids 1, 2, 3... as shipped."""
    text = (DEPLOY / "haproxy.cfg").read_text() if text is None else text
    text = _replace_once(text, r"^    bind :80$", f"    bind 127.0.0.1:{port}")
    servers = "".join(f"    server h{k + 1} {host} id {k + 1}\n" for k, host in enumerate(hosts))
    return _replace_once(text, r"^    server h1 .*\n(    server .*\n)*", servers)


def nginx_config(port: int, hosts: Sequence[str], workdir: Path, text: str | None = None) -> str:
    """A main nginx.conf for a foreground nginx in `workdir` whose http{} is deploy/nginx.conf, listening
    on 127.0.0.1:port, its `server` lines naming `hosts` (host:port)."""
    text = (DEPLOY / "nginx.conf").read_text() if text is None else text
    text = _replace_once(text, r"^    listen 80;$", f"    listen 127.0.0.1:{port};")
    servers = "".join(f"    server {host} max_fails=1 fail_timeout=10s;\n" for host in hosts)
    text = _replace_once(text, r"^    server 10\.0\.0\.11:.*\n(    server .*\n)*", servers)
    return (
        "daemon off;\nworker_processes 2;\n"
        f"pid {workdir}/nginx.pid;\nerror_log {workdir}/error.log;\nevents {{}}\n"
        "http {\n    access_log off;\n"
        f"    client_body_temp_path {workdir}/body;\n"
        f"{text}}}\n"
    )


@dataclass
class Proxy:
    name: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path
    """What it printed (HAProxy in the foreground prints each server that goes DOWN or UP)."""

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_listening(proxy: Proxy, log: Path) -> None:
    """The proxies print nothing once they listen: connect until one succeeds, within the deadline."""
    deadline = time.monotonic() + START_DEADLINE
    while True:
        assert proxy.process.poll() is None, f"{proxy.name} exited: {log.read_text(errors='replace')}"
        try:
            socket.create_connection(("127.0.0.1", proxy.port), timeout=1).close()
            return
        except OSError:
            assert time.monotonic() < deadline, f"{proxy.name} is not listening after {START_DEADLINE:g} s"
            time.sleep(0.02)


@contextmanager
def run_proxy(name: str, config_text: str, workdir: Path, port: int) -> Iterator[Proxy]:
    """`haproxy -db -f` or `nginx -c` (foreground) with this config; skipped if it is not installed."""
    engine = "haproxy" if name.startswith("haproxy") else "nginx"
    binary = shutil.which(engine) or shutil.which(engine, path="/usr/sbin:/sbin")
    if binary is None:
        pytest.skip(f"{engine} is not installed (`make system-deps` installs it with apt-get)")
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / f"{name}.conf"
    config.write_text(config_text)
    if engine == "haproxy":
        command = [binary, "-db", "-f", str(config)]
    else:
        command = [binary, "-c", str(config), "-p", str(workdir), "-e", str(workdir / "error.log")]
    log = workdir / f"{name}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            start_new_session=True,
        )
    proxy = Proxy(name, port, process, log)
    try:
        _wait_listening(proxy, log)
        yield proxy
    finally:
        stop_group(process)


def stop_group(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM (nginx's master then stops its workers), SIGKILL to the group past the deadline."""
    if process.poll() is None:
        process.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=STOP_DEADLINE)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)  # its own session: what is left of this proxy only
    process.wait(timeout=STOP_DEADLINE)
