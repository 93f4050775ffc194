# Where the server listens: dual-stack `::`, several hosts on one hub, a Unix socket, a busy address.
# Real clients only (curl over 127.0.0.1, [::1] and --unix-socket); no fixed port is asked for.
from __future__ import annotations

import contextlib
import errno
import os
import socket
import stat
import sys
from pathlib import Path

import pytest
import trio

from pipe_relay import Config, serve
from pipe_relay.net.engine import BufferEngine
from pipe_relay.net.listen import ListenError
from pipe_relay.net.splice import SpliceEngine
from tests.cli_process import ROOT, open_cli, startup_lines, stop_cli
from tests.clients import (
    CurlResult,
    Payload,
    RawClient,
    StartRelay,
    curl,
    curl_into,
    read_status_until,
    sha256_file,
)

ONE_ENGINE = pytest.mark.parametrize("engine", ["buffer"])  # (no byte moves: one engine is enough)


def _has_ipv6() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


NEEDS_IPV6 = pytest.mark.skipif(not _has_ipv6(), reason="no IPv6 loopback (::1) here")


def _our_tcp_listeners() -> set[str]:
    """Socket inodes of this process that listen on TCP (Linux /proc)."""
    ours = set()
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(FileNotFoundError):  # (the listing's own descriptor, gone by now)
            ours.add(os.readlink(f"/proc/self/fd/{fd}"))
    listening = set()
    for table in ("tcp", "tcp6"):
        for row in Path(f"/proc/self/net/{table}").read_text().splitlines()[1:]:
            fields = row.split()
            if fields[3] == "0A":  # TCP_LISTEN
                listening.add(f"socket:[{fields[9]}]")
    return ours & listening


async def _cli_error(*args: str) -> tuple[int, bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = await trio.run_process(
        [sys.executable, "-m", "pipe_relay", *args],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
        cwd=ROOT,
        env=env,
    )
    assert result.stdout == b""
    return result.returncode, result.stderr


# One hub, every family ------------------------------------------------------------------------


@NEEDS_IPV6
@pytest.mark.parametrize("sender_via", ["ipv4", "unix"])
async def test_a_transfer_reaches_an_ipv6_and_a_unix_socket_receiver(
    start_relay: StartRelay, engine: str, payloads: dict[int, Payload], tmp_path: Path, sender_via: str
) -> None:
    """n=3: receivers over [::1], the Unix socket and 127.0.0.1, the sender over IPv4 (or the Unix
    socket): one pipe, the same bytes to all three, on either engine (splice reads and writes
    AF_UNIX sockets too)."""
    unix_path = tmp_path / "relay.sock"
    relay = await start_relay(hosts=("127.0.0.1", "::1"), unix_path=str(unix_path))
    payload = payloads[1 << 20]
    key = "/across-families"
    over_unix = ("--unix-socket", str(unix_path), f"http://localhost{key}?n=3")
    receivers = {
        "ipv6": (f"http://[::1]:{relay.port}{key}?n=3",),
        "unix": over_unix,
        "ipv4": (f"http://127.0.0.1:{relay.port}{key}?n=3",),
    }
    got: dict[str, CurlResult] = {}
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            for index, (name, where) in enumerate(receivers.items()):
                nursery.start_soon(curl_into, got, name, "-o", str(tmp_path / f"{name}.bin"), *where)
                await relay.wait_for_pipe(key, receivers=index + 1)
            sender = receivers["ipv4"] if sender_via == "ipv4" else over_unix
            sent = await curl("-T", str(payload.path), *sender)
    assert sent.returncode == 0, sent.stderr
    assert sent.stdout.decode().splitlines() == [
        "[INFO] 3 of 3 receiver(s) connected.",
        "[INFO] Streaming to 3 receiver(s)...",
        "[INFO] Upload complete.",
        "[INFO] Transfer complete.",
    ]
    for name in receivers:
        assert got[name].returncode == 0, (name, got[name].stderr)
        assert sha256_file(tmp_path / f"{name}.bin") == payload.sha256, name
    byte_engine = relay.hub.engine
    if engine == "splice":
        assert isinstance(byte_engine, SpliceEngine)
        assert (byte_engine.carried, byte_engine.fallbacks) == (1, 0)
    else:
        assert isinstance(byte_engine, BufferEngine)


@NEEDS_IPV6
@ONE_ENGINE
async def test_the_default_host_is_dual_stack_and_ipv4_clients_read_as_ipv4(
    start_relay: StartRelay,
) -> None:
    relay = await start_relay(hosts=("::",))
    with trio.fail_after(10):
        for url in (f"http://127.0.0.1:{relay.port}", f"http://[::1]:{relay.port}"):
            version = await curl(f"{url}/version")
            assert (version.returncode, version.stdout) == (0, b"pipe-relay 0.1.0\n"), version.stderr
        # an IPv4 client of `::` arrives as ::ffff:127.0.0.1; logs and limits see 127.0.0.1
        v4 = await curl(f"http://127.0.0.1:{relay.port}/api/v1/pipe/health")
        v6 = await curl(f"http://[::1]:{relay.port}/api/v1/pipe/health")
    assert b'"ip": "127.0.0.1"' in v4.stdout, v4.stdout
    assert b'"ip": "::1"' in v6.stdout, v6.stdout


@NEEDS_IPV6
@ONE_ENGINE
@pytest.mark.parametrize("hosts", [("127.0.0.1", "::"), ("::", "127.0.0.1")])
async def test_with_an_ipv4_host_listed_the_wildcard_is_ipv6_only_on_the_same_port(
    start_relay: StartRelay, hosts: tuple[str, ...]
) -> None:
    """`::` beside an IPv4 address leaves IPv4 to it (a dual-stack `::` would take the port on
    127.0.0.1 too); port 0 draws one port for both."""
    relay = await start_relay(hosts=hosts)
    with trio.fail_after(10):
        v4 = await curl(f"http://127.0.0.1:{relay.port}/api/v1/pipe/health")
        v6 = await curl(f"http://[::1]:{relay.port}/api/v1/pipe/health")
    assert b'"ip": "127.0.0.1"' in v4.stdout, v4.stderr
    assert b'"ip": "::1"' in v6.stdout, v6.stderr


@NEEDS_IPV6
@ONE_ENGINE
async def test_help_writes_an_ipv6_host_in_brackets(start_relay: StartRelay) -> None:
    relay = await start_relay(hosts=("::1",))
    with trio.fail_after(10):
        helped = await curl(f"http://[::1]:{relay.port}/help")  # curl sends Host: [::1]:port
    lines = helped.stdout.decode().splitlines()
    assert f"curl http://[::1]:{relay.port}/mypath" in lines, lines[:8]
    assert f"curl -T myfile http://[::1]:{relay.port}/mypath" in lines


# The Unix socket ------------------------------------------------------------------------------


@ONE_ENGINE
async def test_the_unix_socket_has_its_mode_and_each_client_is_the_socket(
    start_relay: StartRelay, tmp_path: Path
) -> None:
    unix_path = tmp_path / "mode.sock"
    await start_relay(unix_path=str(unix_path), unix_mode=0o640)
    info = os.stat(unix_path)
    assert stat.S_ISSOCK(info.st_mode)
    assert stat.S_IMODE(info.st_mode) == 0o640
    with trio.fail_after(10):
        health = await curl("--unix-socket", str(unix_path), "http://localhost/api/v1/pipe/health")
    assert f'"ip": "unix:{unix_path}"'.encode() in health.stdout, health.stdout


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
async def test_a_cut_transfer_over_the_unix_socket_never_looks_complete(
    start_relay: StartRelay, engine: str, tmp_path: Path, framing: str
) -> None:
    """A Unix socket has no reset: the receiver (curl over the socket) tells a cut body by its
    framing, a Content-Length not reached or no chunked terminator, and fails."""
    unix_path = tmp_path / "cut.sock"
    relay = await start_relay(unix_path=str(unix_path))
    key = "/cut-over-unix"
    got: dict[str, CurlResult] = {}
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(curl_into, got, "r", "--unix-socket", str(unix_path), f"http://x{key}")
            await relay.wait_for_pipe(key, receivers=1)
            unix_sock = trio.socket.socket(socket.AF_UNIX)
            await unix_sock.connect(str(unix_path))
            sender = RawClient(trio.SocketStream(unix_sock))
            framed = (
                b"Content-Length: 1000000" if framing == "content-length" else b"Transfer-Encoding: chunked"
            )
            await sender.send(b"PUT %s HTTP/1.1\r\nHost: x\r\n%s\r\n\r\n" % (key.encode(), framed))
            half = b"x" * 500_000
            await sender.send(half if framing == "content-length" else b"%x\r\n%s\r\n" % (len(half), half))
            await sender.read_until(b"\r\n\r\n")
            await read_status_until(sender, b"[INFO] Streaming to 1 receiver(s)...")
            await sender.aclose()  # half its body sent (and read before this end of stream)
    assert got["r"].returncode == 18, got["r"].stderr  # CURLE_PARTIAL_FILE
    assert len(got["r"].stdout) <= 500_000


@ONE_ENGINE
async def test_a_stale_socket_file_is_replaced_and_a_live_one_refused(
    start_relay: StartRelay, tmp_path: Path
) -> None:
    unix_path = tmp_path / "stale.sock"
    with socket.socket(socket.AF_UNIX) as dead:  # a server that died: its file, nobody accepting
        dead.bind(str(unix_path))
    relay = await start_relay(unix_path=str(unix_path))
    with trio.fail_after(10):
        version = await curl("--unix-socket", str(unix_path), "http://localhost/version")
        assert version.stdout == b"pipe-relay 0.1.0\n", version.stderr
        # a second server on the same file: refused, and it leaves the live one (and nothing) behind
        listening = _our_tcp_listeners()
        second = Config(hosts=("127.0.0.1",), port=0, unix_path=str(unix_path), engine="buffer")
        async with trio.open_nursery() as nursery:
            with pytest.raises(ListenError) as refused:
                await nursery.start(serve, second)
        assert (refused.value.address, refused.value.errno) == (f"unix:{unix_path}", errno.EADDRINUSE)
        assert _our_tcp_listeners() == listening  # its TCP listener was closed
        version = await curl("--unix-socket", str(unix_path), "http://localhost/version")
        assert version.stdout == b"pipe-relay 0.1.0\n", version.stderr
    assert relay.hub.draining is False


async def test_a_file_that_is_not_a_socket_is_never_replaced(tmp_path: Path) -> None:
    in_the_way = tmp_path / "notes.txt"
    in_the_way.write_text("keep me\n")
    with trio.fail_after(10):
        code, stderr = await _cli_error("--host", "127.0.0.1", "--http-port", "0", "--unix", str(in_the_way))
    assert code == 1
    expected = (
        f"pipe-relay: error: cannot listen on unix:{in_the_way}: a file that is not a socket is there\n"
    )
    assert stderr == expected.encode()
    assert in_the_way.read_text() == "keep me\n"


@NEEDS_IPV6
async def test_the_start_up_lines_name_every_address_and_the_socket_file_goes_at_the_end(
    tmp_path: Path,
) -> None:
    unix_path = tmp_path / "cli.sock"
    with trio.fail_after(20):
        args = ("--host", "127.0.0.1", "--host", "::1", "--http-port", "0", "--unix", str(unix_path))
        process = await open_cli(*args)
        try:
            lines = await startup_lines(process, 3)
            port = int(lines[0].rsplit(":", 1)[1])
            assert lines == [
                f"pipe-relay 0.1.0 listening on http://127.0.0.1:{port}",
                f"pipe-relay 0.1.0 listening on http://[::1]:{port}",
                f"pipe-relay 0.1.0 listening on unix:{unix_path}",
            ]
            assert stat.S_IMODE(os.stat(unix_path).st_mode) == 0o660  # the default mode
            version = await curl("--unix-socket", str(unix_path), "http://localhost/version")
            assert version.stdout == b"pipe-relay 0.1.0\n", version.stderr
        finally:
            code = await stop_cli(process)
    assert code == 0
    assert not unix_path.exists()


# A busy address -------------------------------------------------------------------------------


@NEEDS_IPV6
async def test_a_busy_address_among_several_is_one_line_and_nothing_stays_bound(tmp_path: Path) -> None:
    unix_path = tmp_path / "busy.sock"
    with socket.socket(socket.AF_INET6) as taken:
        taken.bind(("::1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        hosts = ("127.0.0.1", "::1")
        with trio.fail_after(20):
            code, stderr = await _cli_error(
                *("--host", hosts[0], "--host", hosts[1], "--http-port", str(port), "--unix", str(unix_path))
            )
            assert code == 1
            assert (
                stderr
                == f"pipe-relay: error: cannot listen on [::1]:{port}: address already in use; "
                "choose another port with --http-port\n".encode()
            )
            # in-process: 127.0.0.1 was bound first, and is free again once serve() has raised
            config = Config(hosts=hosts, port=port, unix_path=str(unix_path), engine="buffer")
            async with trio.open_nursery() as nursery:
                with pytest.raises(ListenError) as busy:
                    await nursery.start(serve, config)
    assert (busy.value.address, busy.value.errno) == (f"[::1]:{port}", errno.EADDRINUSE)
    with socket.socket() as again:
        # SO_REUSEADDR, as the server binds: a socket left listening there refuses it, while a
        # closed connection of another test in TIME_WAIT on that port (the ephemeral range is
        # shared) does not (without it, the bind failed now and then in a full run)
        again.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        again.bind(("127.0.0.1", port))
        again.listen()
    assert not unix_path.exists()
