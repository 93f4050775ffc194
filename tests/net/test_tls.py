# HTTPS on our own listener: curl over TLS meets curl over plain HTTP on one hub, handshakes, reloads.
# Invariant: real TLS (trustme certificates, curl and the ssl module as clients); bytes compared by sha256.
from __future__ import annotations

import contextlib
import ctypes
import hashlib
import signal
import socket
import ssl
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

import pytest
import trio
import trustme

from pipe_relay.net.tls import CertificateError, Certificates
from tests.cli_process import ROOT, cli_server
from tests.clients import (
    CurlResult,
    Payload,
    Relay,
    StartRelay,
    TlsFiles,
    curl,
    curl_into,
    sha256_file,
)


@pytest.fixture
async def tls_relay(start_relay: StartRelay, tls_files: TlsFiles) -> Relay:
    return await start_relay(**tls_files.overrides())


def _url(relay: Relay, tls: bool, path: str) -> str:
    return (relay.tls_url if tls else relay.url) + path


async def _send(
    relay: Relay, files: TlsFiles, tls: bool, path: str, payload: Payload, *, chunked: bool
) -> CurlResult:
    """`curl -T file` (Content-Length) or `curl -T -` from a pipe (chunked), over TLS or not."""
    url = _url(relay, tls, path)
    if chunked:
        return await curl("--cacert", str(files.ca_pem), "-T", "-", url, stdin=payload.path.read_bytes())
    return await curl("--cacert", str(files.ca_pem), "-T", str(payload.path), url)


MIXES = [(True, False), (False, True), (True, True)]


@pytest.mark.parametrize(
    ("sender_tls", "receiver_tls"), MIXES, ids=["tls-to-plain", "plain-to-tls", "tls-to-tls"]
)
@pytest.mark.parametrize("sender_first", [True, False], ids=["sender-first", "receiver-first"])
@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_a_transfer_across_the_two_listeners(
    tls_relay: Relay,
    tls_files: TlsFiles,
    payloads: dict[int, Payload],
    sender_tls: bool,
    receiver_tls: bool,
    sender_first: bool,
    chunked: bool,
) -> None:
    payload = payloads[1 << 20]
    path = f"/tls-{int(sender_tls)}{int(receiver_tls)}{int(sender_first)}{int(chunked)}"
    results: dict[str, CurlResult] = {}
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            receive = ("--cacert", str(tls_files.ca_pem), _url(tls_relay, receiver_tls, path))
            if sender_first:
                nursery.start_soon(
                    _send_into, results, tls_relay, tls_files, sender_tls, path, payload, chunked
                )
                await tls_relay.wait_for_pipe(path, sender=True)
                nursery.start_soon(curl_into, results, "receiver", *receive)
            else:
                nursery.start_soon(curl_into, results, "receiver", *receive)
                await tls_relay.wait_for_pipe(path, receivers=1)
                nursery.start_soon(
                    _send_into, results, tls_relay, tls_files, sender_tls, path, payload, chunked
                )
    receiver, sender = results["receiver"], results["sender"]
    assert receiver.returncode == 0, receiver.stderr
    assert hashlib.sha256(receiver.stdout).hexdigest() == payload.sha256
    assert sender.returncode == 0, sender.stderr
    assert sender.stdout.endswith(b"[INFO] Transfer complete.\n")


async def _send_into(
    results: dict[str, CurlResult],
    relay: Relay,
    files: TlsFiles,
    tls: bool,
    path: str,
    payload: Payload,
    chunked: bool,
) -> None:
    results["sender"] = await _send(relay, files, tls, path, payload, chunked=chunked)


async def test_fan_out_to_tls_and_plain_receivers_of_a_large_body(
    tls_relay: Relay, tls_files: TlsFiles, payloads: dict[int, Payload], tmp_path: Path
) -> None:
    """64 MiB over TLS to three receivers (two over TLS, one plain): every one gets every byte."""
    payload = payloads[64 << 20]
    path = "/tls-fan-out?n=3"
    outputs = [tmp_path / f"out-{i}" for i in range(3)]
    results: dict[str, CurlResult] = {}
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            for index, (out, tls) in enumerate(zip(outputs, (True, True, False), strict=True)):
                args = ("--cacert", str(tls_files.ca_pem), "-o", str(out), _url(tls_relay, tls, path))
                nursery.start_soon(curl_into, results, f"r{index}", *args)
            await tls_relay.wait_for_pipe("/tls-fan-out", receivers=3)
            nursery.start_soon(
                curl_into,
                results,
                "sender",
                "--cacert",
                str(tls_files.ca_pem),
                "-T",
                str(payload.path),
                _url(tls_relay, True, path),
            )
    for index, out in enumerate(outputs):
        assert results[f"r{index}"].returncode == 0, results[f"r{index}"].stderr
        assert sha256_file(out) == payload.sha256
    assert results["sender"].stdout.endswith(b"[INFO] Transfer complete.\n")


async def _tls_connect(relay: Relay, context: ssl.SSLContext) -> ssl.SSLSocket:
    """A blocking TLS client socket (in a thread) to the relay's HTTPS port."""

    def connect() -> ssl.SSLSocket:
        assert relay.tls_port is not None
        raw = socket.create_connection((relay.host, relay.tls_port), timeout=10)
        try:
            return context.wrap_socket(raw, server_hostname="127.0.0.1")
        except BaseException:
            raw.close()
            raise

    return await trio.to_thread.run_sync(connect)


async def test_the_handshake_offers_tls12_and_up_and_alpn_http11(
    tls_relay: Relay, tls_files: TlsFiles
) -> None:
    with trio.fail_after(10):
        context = tls_files.client_context()
        context.set_alpn_protocols(["h2", "http/1.1"])
        with await _tls_connect(tls_relay, context) as client:
            assert client.version() in ("TLSv1.2", "TLSv1.3")
            assert client.selected_alpn_protocol() == "h2"
        context = tls_files.client_context()
        context.set_alpn_protocols(["http/1.1"])
        with await _tls_connect(tls_relay, context) as client:
            assert client.selected_alpn_protocol() == "http/1.1"
        assert (
            Certificates(str(tls_files.crt), str(tls_files.key)).context().minimum_version
            is ssl.TLSVersion.TLSv1_2
        )
        old = tls_files.client_context()
        old.set_ciphers("DEFAULT:@SECLEVEL=0")  # (this client would speak TLS 1.1 if the server did)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            old.minimum_version = ssl.TLSVersion.TLSv1
            old.maximum_version = ssl.TLSVersion.TLSv1_1
        with pytest.raises(ssl.SSLError):
            await _tls_connect(tls_relay, old)
        twelve = tls_files.client_context()
        twelve.maximum_version = ssl.TLSVersion.TLSv1_2
        with await _tls_connect(tls_relay, twelve) as client:
            assert client.version() == "TLSv1.2"


async def test_a_client_that_never_handshakes_is_dropped_and_others_are_served(
    start_relay: StartRelay, tls_files: TlsFiles, payloads: dict[int, Payload]
) -> None:
    """The handshake runs in the connection's task under the head deadline, not in the accept loop."""
    relay = await start_relay(header_timeout=1.5, **tls_files.overrides())
    assert relay.tls_port is not None
    payload = payloads[1 << 20]
    with trio.fail_after(20):
        silent = trio.socket.socket()
        await silent.connect((relay.host, relay.tls_port))
        await silent.send(b"\x16")  # one byte of a ClientHello (past TCP_DEFER_ACCEPT), then nothing
        opened = trio.current_time()
        results: dict[str, CurlResult] = {}
        async with trio.open_nursery() as nursery:  # served meanwhile, over TLS
            nursery.start_soon(
                curl_into, results, "receiver", "--cacert", str(tls_files.ca_pem), relay.tls_url + "/beside"
            )
            await relay.wait_for_pipe("/beside", receivers=1)
            nursery.start_soon(
                curl_into,
                results,
                "sender",
                "--cacert",
                str(tls_files.ca_pem),
                "-T",
                str(payload.path),
                relay.tls_url + "/beside",
            )
        served = trio.current_time() - opened
        assert hashlib.sha256(results["receiver"].stdout).hexdigest() == payload.sha256
        assert served < 1.5  # (done before the silent client's deadline)
        try:
            data = await silent.recv(100)
        except ConnectionResetError:
            data = b""
        waited = trio.current_time() - opened
        silent.close()
    assert data == b""  # closed, without a word
    assert 1.4 <= waited <= 3.5


async def test_a_certificate_replaced_on_disk_serves_the_next_connection(
    tls_relay: Relay, tls_files: TlsFiles
) -> None:
    with trio.fail_after(10):
        with await _tls_connect(tls_relay, tls_files.client_context()) as client:
            first = client.getpeercert(binary_form=True)
        renewed = trustme.CA()
        tls_files.issue(renewed)
        with pytest.raises(ssl.SSLCertVerificationError):
            await _tls_connect(tls_relay, tls_files.client_context())  # the old CA no longer signs it
        with await _tls_connect(tls_relay, tls_files.client_context(renewed)) as client:
            assert client.getpeercert(binary_form=True) != first
        tls_files.key.write_bytes(b"half a key")  # a file caught half-written: the last good one stays
        with await _tls_connect(tls_relay, tls_files.client_context(renewed)) as client:
            assert client.version() is not None


# curl's exit codes: 18 a body short of its Content-Length, 56 a reset connection, 92 an HTTP/2
# stream reset (RST_STREAM) rather than ended.
@pytest.mark.parametrize(("protocol", "failures"), [("--http1.1", (18, 56)), ("--http2", (92,))])
async def test_a_sender_cut_over_tls_never_looks_complete(
    tls_relay: Relay, tls_files: TlsFiles, protocol: str, failures: tuple[int, ...]
) -> None:
    """The sender announces 1 MiB, sends half and resets: a TLS receiver's curl reports the failure."""
    results: dict[str, CurlResult] = {}
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                curl_into,
                results,
                "receiver",
                protocol,
                "--cacert",
                str(tls_files.ca_pem),
                tls_relay.tls_url + "/cut",
            )
            await tls_relay.wait_for_pipe("/cut", receivers=1)
            sender = await _tls_connect(tls_relay, tls_files.client_context())

            def send_half() -> None:
                sender.sendall(
                    b"PUT /cut HTTP/1.1\r\nHost: x\r\nContent-Length: 1048576\r\n\r\n" + b"x" * 524288
                )

            await trio.to_thread.run_sync(send_half)
            await tls_relay.wait_for_bytes("/cut", 1)
            sender.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            sender.close()
    receiver = results["receiver"]
    assert receiver.returncode in failures, receiver.stderr
    assert len(receiver.stdout) < 1048576


class Stuck(BaseException):
    """The event loop did not come back (a busy loop in the server's code): no `except Exception` keeps it."""


@contextlib.contextmanager
def _unstuck_after(seconds: float) -> Iterator[None]:
    """Raise Stuck in the main thread (the server's) after `seconds`: a busy loop cannot hang the test."""

    def alarm(signum: int, frame: FrameType | None) -> None:
        raise Stuck(f"the event loop was stuck for {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@pytest.mark.parametrize("ending", ["close_notify", "fin"])
async def test_a_client_ending_its_tls_connection_either_way_is_closed(
    tls_relay: Relay, tls_files: TlsFiles, ending: str
) -> None:
    """After a keep-alive reply, the client sends close_notify (or only a FIN): the server reads that
    as the end and closes the connection at once, and goes on serving."""

    def request_then_end(client: ssl.SSLSocket) -> bool:
        client.settimeout(2)
        client.sendall(b"GET /api/v1/pipe/health HTTP/1.1\r\nHost: x\r\n\r\n")
        reply = b""
        while b'"status"' not in reply:
            reply += client.recv(65536)
        try:
            if ending == "close_notify":
                client.unwrap()  # (waits for the server's close_notify, or its close)
            else:
                client.shutdown(socket.SHUT_WR)  # (the ssl module reads the raw socket after this)
                while client.recv(65536):  # (OpenSSL's alert for a FIN without close_notify)
                    pass
        except TimeoutError:
            return False  # the server still holds the connection open
        except OSError:
            pass  # (its close instead of a close_notify)
        return True

    with trio.fail_after(10), _unstuck_after(8):
        for _ in range(2):
            with await _tls_connect(tls_relay, tls_files.client_context()) as client:
                assert await trio.to_thread.run_sync(request_then_end, client)


def _rss(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field} in /proc/self/status")


async def test_a_slow_tls_receiver_paces_the_sender_and_memory_stays_bounded(
    tls_relay: Relay, tls_files: TlsFiles, payloads: dict[int, Payload], tmp_path: Path
) -> None:
    """64 MiB from a fast TLS sender to a TLS receiver reading at 20 MB/s: the ciphertext waiting for
    the receiver stays in its socket, not in the server (whose RSS, this process's, grows < 32 MiB)."""
    payload = payloads[64 << 20]
    out = tmp_path / "out"
    results: dict[str, CurlResult] = {}
    libc = ctypes.CDLL(None)
    if hasattr(libc, "malloc_trim"):  # (memory freed by an earlier test back to the system first)
        libc.malloc_trim(0)
    Path("/proc/self/clear_refs").write_text("5")  # (VmHWM from here on)
    before = _rss("VmRSS")
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            receive = ("--cacert", str(tls_files.ca_pem), "--limit-rate", "20M", "-o", str(out))
            nursery.start_soon(curl_into, results, "receiver", *receive, tls_relay.tls_url + "/slow")
            await tls_relay.wait_for_pipe("/slow", receivers=1)
            nursery.start_soon(
                curl_into,
                results,
                "sender",
                "--cacert",
                str(tls_files.ca_pem),
                "-T",
                str(payload.path),
                tls_relay.tls_url + "/slow",
            )
    growth = _rss("VmHWM") - before
    assert results["receiver"].returncode == 0, results["receiver"].stderr
    assert results["sender"].stdout.endswith(b"[INFO] Transfer complete.\n")
    assert sha256_file(out) == payload.sha256
    assert growth < 32 << 20, f"the server's RSS grew by {growth >> 20} MiB"


def test_a_bad_certificate_is_a_clear_start_up_error(tmp_path: Path) -> None:
    missing = tmp_path / "none.pem"
    with pytest.raises(CertificateError, match=r"none\.pem"):
        Certificates(str(missing), str(missing))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipe_relay",
            "--host",
            "127.0.0.1",
            "--http-port",
            "0",
            "--enable-https",
            "--https-port",
            "0",
            "--crt-path",
            str(missing),
            "--key-path",
            str(missing),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    assert result.returncode == 1
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .startswith("pipe-relay: error: cannot load the TLS certificate: ")
    )


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--https-port", "8443"], "--https-port needs --enable-https"),
        (["--no-http"], "--no-http needs --enable-https"),
        (["--enable-https"], "HTTPS needs a certificate and its key (--crt-path, --key-path)"),
        (["--crt-path", "x.pem", "--key-path", "k.pem"], "HTTPS is not enabled (--enable-https)"),
    ],
)
def test_tls_flags_that_do_not_fit_together(flags: list[str], message: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pipe_relay", *flags],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    assert result.returncode == 2
    assert message in result.stderr


async def test_https_only_prints_its_url_and_serves(tls_files: TlsFiles) -> None:
    """`--no-http --enable-https`: one https:// start-up line, and a health check over TLS."""
    command = [
        "--host",
        "127.0.0.1",
        "--no-http",
        "--enable-https",
        "--https-port",
        "0",
        "--crt-path",
        str(tls_files.crt),
        "--key-path",
        str(tls_files.key),
    ]
    with trio.fail_after(20):
        async with cli_server(*command) as (_, text):
            assert text.startswith("pipe-relay ") and " listening on https://127.0.0.1:" in text
            url = text.split(" listening on ")[1].strip()
            health = await curl("--cacert", str(tls_files.ca_pem), url + "/api/v1/pipe/health")
            plain = await curl(url.replace("https://", "http://") + "/api/v1/pipe/health")
    assert health.returncode == 0, health.stderr
    assert b'"status"' in health.stdout
    assert plain.returncode != 0  # (the port speaks TLS only)


@pytest.mark.parametrize("protocol", ["--http1.1", "--http2"])
async def test_the_help_over_tls_names_https_urls(
    tls_relay: Relay, tls_files: TlsFiles, protocol: str
) -> None:
    with trio.fail_after(10):
        got = await curl(protocol, "--cacert", str(tls_files.ca_pem), tls_relay.tls_url + "/help")
        plain = await curl(tls_relay.url + "/help")
    assert f"curl -T myfile {tls_relay.tls_url}/mypath".encode() in got.stdout
    assert f"curl -T myfile {tls_relay.url}/mypath".encode() in plain.stdout
