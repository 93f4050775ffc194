# The bench over TLS: a self-signed certificate made with openssl, each server's HTTPS start, curl's flags.
# Invariant: a TLS server's URLs are https:// to its HTTPS port; its HTTP version is checked before timing.
"""``bench.py --tls`` runs the large cases over HTTPS. ``make_cert`` writes a self-signed P-256
certificate for 127.0.0.1 (subjectAltName IP:127.0.0.1) with the ``openssl`` command line into the
bench's temporary folder; pipe-relay and the Node piping-server are started with it and HTTPS
enabled, and the returned ``Server`` has ``scheme="https"`` and its HTTPS port (the one its URLs name
and whose connections are counted). curl verifies the certificate (``--cacert``) and is held to the
transport's HTTP version; ``probe`` makes one request per server, checks the HTTP version curl got and
reads the TLS version and cipher curl negotiated, for the report. The C reference relay has no TLS.

A transport is one entry of ``TRANSPORTS``, named by its ALPN protocol id: ``--tls http/1.1`` or
``--tls h2`` (HTTP/2 over TLS, chosen by ALPN; curl ``--http2``)."""

from __future__ import annotations

import dataclasses
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from harness import (  # type: ignore[import-not-found]
    RELAY,
    ROOT,
    SERVER_START_DEADLINE,
    BenchError,
    Server,
    free_port,
    start_relay,
    stop_server,
    tool_version,
    wait_for_tcp,
)
from node import start_node  # type: ignore[import-not-found]

OPENSSL_DEADLINE = 60.0
PROBE_DEADLINE = 30.0


@dataclass(frozen=True)
class Transport:
    alpn: str  # the --tls choice: the ALPN protocol id curl is to negotiate
    label: str  # shown after each case name: "file-n1 (https/1.1)"
    curl_args: tuple[str, ...]  # on top of --cacert
    http_version: str  # what curl's %{http_version} must say


TRANSPORTS = {
    "http/1.1": Transport("http/1.1", "https/1.1", ("--http1.1",), "1.1"),
    "h2": Transport("h2", "https/2", ("--http2",), "2"),
}
H2C = Transport("h2c", "h2c", ("--http2-prior-knowledge",), "2")
"""``bench.py --h2c``: HTTP/2 by prior knowledge on the plain port (pipe-relay only: Node has no h2c)."""


@dataclass(frozen=True)
class Cert:
    crt: Path
    key: Path

    def curl_args(self, transport: Transport) -> list[str]:
        return ["--cacert", str(self.crt), *transport.curl_args]


def make_cert(workdir: Path) -> Cert:
    """A self-signed P-256 certificate and key for 127.0.0.1, valid two days, in ``workdir``."""
    openssl = shutil.which("openssl")
    if openssl is None:
        raise BenchError("openssl not found: --tls makes its certificate with it (apt-get install openssl)")
    cert = Cert(workdir / "tls.crt", workdir / "tls.key")
    cmd = [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    cmd += ["-days", "2", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"]
    cmd += ["-keyout", str(cert.key), "-out", str(cert.crt)]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=OPENSSL_DEADLINE, check=False)
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"openssl took more than {OPENSSL_DEADLINE:g} s") from exc
    if done.returncode != 0:
        raise BenchError(f"{' '.join(cmd)} failed:\n{done.stderr.strip()}")
    return cert


def _https_args(cert: Cert, port: int) -> list[str]:
    return [
        "--enable-https",
        "--https-port",
        str(port),
        "--crt-path",
        str(cert.crt),
        "--key-path",
        str(cert.key),
    ]


def start_relay_tls(
    workdir: Path, engine: str | None, cert: Cert, key: str = RELAY, root: Path = ROOT
) -> Server:
    """pipe-relay with HTTPS on a free port beside its HTTP one; returned once it says it listens there."""
    port = free_port()
    server = start_relay(workdir, engine, _https_args(cert, port), key=key, root=root)
    try:
        deadline = time.monotonic() + SERVER_START_DEADLINE
        # Every listener's line is printed once all listen: the https:// one comes after the http:// one.
        while not (m := re.search(rb"listening on https://[^:\s]+:(\d+)", server.log_path.read_bytes())):
            server.check_alive()
            if time.monotonic() > deadline:
                raise BenchError(f"pipe-relay did not report its HTTPS listener:\n{server.log_tail()}")
            time.sleep(0.05)
        if int(m.group(1)) != port:
            raise BenchError(f"pipe-relay listens for HTTPS on {m.group(1).decode()}, asked for {port}")
    except BaseException:
        stop_server(server)
        raise
    return dataclasses.replace(server, port=port, scheme="https")


def start_node_tls(workdir: Path, node_dir: Path, cert: Cert) -> Server:
    """The Node piping-server with ``--enable-https`` on a free port; returned once that port takes a
    connection (it says nothing when it listens)."""
    port = free_port()
    server = start_node(workdir, node_dir, _https_args(cert, port))
    try:
        wait_for_tcp(port, time.monotonic() + SERVER_START_DEADLINE, server.proc)
    except BaseException:
        stop_server(server)
        raise
    return dataclasses.replace(server, port=port, scheme="https")


def probe(server: Server, cert: Cert | None, transport: Transport) -> str:
    """One ``GET /`` with the benchmark's curl flags: raises unless it succeeds with the transport's
    HTTP version; returns what curl negotiated, e.g. ``TLSv1.3 / TLS_AES_256_GCM_SHA384`` (h2c,
    ``cert`` None: ``unknown``)."""
    flags = cert.curl_args(transport) if cert is not None else list(transport.curl_args)
    cmd = ["curl", "-sS", "-v", "--max-time", f"{PROBE_DEADLINE:g}", *flags]
    cmd += ["-o", "/dev/null", "-w", "%{http_version}", server.url("/")]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=PROBE_DEADLINE + 5, check=False)
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"{server.label}: the {transport.label} probe did not end") from exc
    if done.returncode != 0:
        raise BenchError(f"{server.label}: {' '.join(cmd)} exited with {done.returncode}:\n{done.stderr}")
    if done.stdout.strip() != transport.http_version:
        raise BenchError(f"{server.label}: curl got HTTP {done.stdout.strip()}, not {transport.http_version}")
    m = re.search(r"SSL connection using (.+)", done.stderr)
    return m.group(1).strip() if m else "unknown"


def tls_environment(servers: list[Server], cert: Cert, transport: Transport) -> list[str]:
    """The report's lines on TLS: what each server negotiated with curl, the certificate, the C relay."""
    got = "; ".join(f"{s.label} {probe(s, cert, transport)}" for s in servers)
    flags = " ".join(cert.curl_args(transport)).replace(str(cert.crt), "CRT")
    openssl = " ".join(tool_version(["openssl", "version"]).split()[:2])
    return [
        f"HTTPS {transport.label}: curl {flags} (certificate verified); negotiated: {got}",
        f"Certificate: self-signed EC P-256 for IP 127.0.0.1, made by {openssl}",
        "The C reference relay has no TLS: it is not in this run",
    ]


def h2c_environment(servers: list[Server]) -> list[str]:
    """The report's lines for ``--h2c``: every server checked to answer curl over HTTP/2."""
    for server in servers:
        probe(server, None, H2C)
    return [
        f"HTTP/2 by prior knowledge (h2c): curl {' '.join(H2C.curl_args)}, checked on every server",
        "Node piping-server and the C reference relay have no h2c: they are not in this run",
    ]
