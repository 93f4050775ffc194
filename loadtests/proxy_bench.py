# The cost of the proxy hop: one pipe-relay direct, behind deploy/haproxy.cfg and behind deploy/nginx.conf.
# Invariant: every server and proxy is stopped, every curl killed on any exit; each path checks sha256 once.
"""Large transfers (``curl -T FILE``, one receiver) through each path, one at a time, round-robin:

- ``direct``    curl to pipe-relay on 127.0.0.1
- ``haproxy``   curl to HAProxy (deploy/haproxy.cfg, its one server the relay) to pipe-relay
- ``nginx``     curl to nginx (deploy/nginx.conf: grpc_pass, h2c to the relay) to pipe-relay

With ``--tls``, three more, over HTTPS/1.1 with a self-signed certificate (tls.py):

- ``direct-tls``       pipe-relay's own HTTPS listener
- ``haproxy-tls``      TLS ends in HAProxy (its commented `bind :443 ssl` line), plain to the relay
- ``passthrough-tls``  HAProxy in mode tcp passes TLS to the relay's HTTPS listener (no key routing)
- ``nginx-tls``        TLS ends in nginx (its commented `listen 443 ssl` lines), h2c to the relay

Per path: MB/s (source bytes per second of wall time, median of the rounds) and CPU seconds per GiB of
the relay and of the proxy (utime+stime of the process and its children's threads: nginx's workers).

Run:  .venv/bin/python loadtests/proxy_bench.py --size 256M --rounds 3 [--tls]
Standard library only; every curl has --max-time; HAProxy and nginx must be installed (make system-deps).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import signal
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from harness import (  # type: ignore[import-not-found]
    CLK_TCK,
    GIB,
    HOST,
    ROOT,
    BenchError,
    Server,
    fmt_size,
    free_port,
    make_source,
    parse_size,
    start_relay,
    stop_server,
    tool_version,
    wait_for_tcp,
)
from large import CurlRunner  # type: ignore[import-not-found]
from tls import Cert, make_cert, start_relay_tls  # type: ignore[import-not-found]

DEPLOY = ROOT / "deploy"


def tree_ticks(pid: int) -> int:
    """utime+stime of `pid` and of its children (nginx's workers), in clock ticks."""
    total = 0
    pids = [pid]
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            pids += [int(c) for c in (task / "children").read_text().split()]
    for p in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
    return total


def _sub(text: str, pattern: str, replacement: str) -> str:
    new, count = re.subn(pattern, replacement, text, count=1, flags=re.MULTILINE)
    if count != 1:
        raise BenchError(f"the shipped config has no line matching {pattern!r}")
    return new


def haproxy_cfg(port: int, upstream: str, tls: tuple[int, Path] | None) -> str:
    text = (DEPLOY / "haproxy.cfg").read_text()
    bind = f"    bind {HOST}:{port}"
    if tls is not None:
        bind = f"    bind {HOST}:{tls[0]} ssl crt {tls[1]} alpn h2,http/1.1"
    text = _sub(text, r"^    bind :80$", bind)
    return _sub(text, r"^    server h1 .*\n(    server .*\n)*", f"    server h1 {upstream} id 1\n")


def passthrough_cfg(port: int, upstream: str) -> str:
    return (
        "defaults\n    mode tcp\n    timeout connect 5s\n    timeout client 330s\n    timeout server 330s\n"
        f"listen passthrough\n    bind {HOST}:{port}\n    server h1 {upstream}\n"
    )


def nginx_cfg(port: int, upstream: str, workdir: Path, cert: Cert | None) -> str:
    text = (DEPLOY / "nginx.conf").read_text()
    listen = f"    listen {HOST}:{port};"
    if cert is not None:
        listen = f"    listen {HOST}:{port} ssl;\n    ssl_certificate {cert.crt};\n"
        listen += f"    ssl_certificate_key {cert.key};"
    text = _sub(text, r"^    listen 80;$", listen)
    text = _sub(text, r"^    server 10\.0\.0\.11:.*\n(    server .*\n)*", f"    server {upstream};\n")
    return (
        f"daemon off;\nworker_processes 1;\npid {workdir}/nginx.pid;\nerror_log {workdir}/error.log;\n"
        f"events {{}}\nhttp {{\n    access_log off;\n    client_body_temp_path {workdir}/body;\n{text}}}\n"
    )


def start_proxy(key: str, config: str, port: int, workdir: Path, scheme: str = "http") -> Server:
    engine = "haproxy" if key.startswith(("haproxy", "passthrough")) else "nginx"
    binary = shutil.which(engine) or shutil.which(engine, path="/usr/sbin")
    if binary is None:
        raise BenchError(f"{engine} is not installed (make system-deps)")
    path = workdir / f"{key}.conf"
    path.write_text(config)
    if engine == "haproxy":
        command = [binary, "-db", "-f", str(path)]
    else:
        command = [binary, "-c", str(path), "-p", str(workdir), "-e", str(workdir / "error.log")]
    log_path = workdir / f"{key}.log"
    log_file = log_path.open("wb")
    proc = subprocess.Popen(
        command, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True
    )
    server = Server(key, proc, port, log_path, log_file, command, scheme=scheme)
    try:
        wait_for_tcp(port, time.monotonic() + 15, proc)
    except BaseException:
        stop_server(server)
        raise
    return server


@contextlib.contextmanager
def paths(workdir: Path, tls: bool) -> Iterator[list[tuple[str, Server, Server, list[str]]]]:
    """(name, relay, the server curl talks to, curl flags) per path; everything stopped after."""
    started: list[Server] = []
    try:
        relay = start_relay(workdir, None, ["--log-level", "warning"])
        started.append(relay)
        upstream = f"{HOST}:{relay.port}"
        made = [("direct", relay, relay, [])]
        for key, text_of in (
            ("haproxy", lambda p: haproxy_cfg(p, upstream, None)),
            ("nginx", lambda p: nginx_cfg(p, upstream, workdir, None)),
        ):
            port = free_port()
            started.append(start_proxy(key, text_of(port), port, workdir))
            made.append((key, relay, started[-1], []))
        if tls:
            cert = make_cert(workdir)
            pem = workdir / "tls.pem"
            pem.write_text(cert.crt.read_text() + cert.key.read_text())
            secure = start_relay_tls(workdir, None, cert, key="pipe-relay-tls")
            started.append(secure)
            flags = ["--cacert", str(cert.crt), "--http1.1"]
            made.append(("direct-tls", secure, secure, flags))
            cases = (
                ("haproxy-tls", lambda p: haproxy_cfg(p, upstream, (p, pem))),
                ("passthrough-tls", lambda p: passthrough_cfg(p, f"{HOST}:{secure.port}")),
                ("nginx-tls", lambda p: nginx_cfg(p, upstream, workdir, cert)),
            )
            for key, text_of in cases:
                port = free_port()
                started.append(start_proxy(key, text_of(port), port, workdir, scheme="https"))
                made.append((key, secure if key == "passthrough-tls" else relay, started[-1], flags))
        yield made
    finally:
        for server in reversed(started):
            stop_server(server)


def _nginx_version() -> str:
    done = subprocess.run(["nginx", "-v"], capture_output=True, text=True, timeout=10, check=False)
    return done.stderr.strip() or "nginx unknown"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=parse_size, default=parse_size("256M"))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tls", action="store_true", help="also the HTTPS paths")
    parser.add_argument("--max-time", type=float, default=120.0, help="seconds a curl may take")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    with tempfile.TemporaryDirectory(prefix="pipe-relay-proxy-bench-") as tmp:
        workdir = Path(tmp)
        source = workdir / "source.bin"
        sha = make_source(source, args.size)
        results: dict[str, list[tuple[float, float, float]]] = {}
        with paths(workdir, args.tls) as made:
            runner = CurlRunner(source, args.size, sha, args.max_time, workdir)
            for rnd in range(args.rounds + 1):  # round 0: untimed, sha256 checked
                for name, relay, front, flags in made:
                    runner.curl_args = flags
                    relay_before, proxy_before = tree_ticks(relay.pid), tree_ticks(front.pid)
                    sample = runner.transfer(front, "file-n1", verify=rnd == 0)
                    relay_cpu = (tree_ticks(relay.pid) - relay_before) / CLK_TCK
                    proxy_cpu = (
                        (tree_ticks(front.pid) - proxy_before) / CLK_TCK if front is not relay else 0.0
                    )
                    if rnd:
                        gib = args.size / GIB
                        results.setdefault(name, []).append(
                            (args.size / sample.seconds / 1e6, relay_cpu / gib, proxy_cpu / gib)
                        )
                        print(
                            f"# round {rnd} {name}: {args.size / sample.seconds / 1e6:.0f} MB/s", flush=True
                        )
    versions = f"{tool_version(['haproxy', '-v'])}; {_nginx_version()}; {os.cpu_count()} CPUs"
    print(f"\n{fmt_size(args.size)} per transfer, file-n1, median of {args.rounds}; {versions}")
    print(f"{'path':<16} {'MB/s':>6} {'relay CPU s/GiB':>16} {'proxy CPU s/GiB':>16}")
    for name, rows in results.items():
        mbps, relay, proxy = (statistics.median(column) for column in zip(*rows, strict=True))
        print(f"{name:<16} {mbps:>6.0f} {relay:>16.2f} {proxy:>16.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
