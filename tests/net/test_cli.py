# The command line as a user runs it: starts and serves, and fails with one clear line otherwise.
# Each test runs `python -m pipe_relay` in a subprocess; none uses a fixed port.
from __future__ import annotations

import re
import shutil
import socket
import sys
from pathlib import Path

import pytest
import trio

from tests.cli_process import cli_server, open_cli, rest_of_output, startup_lines, stop_cli
from tests.clients import TlsFiles, curl


def _has_ipv6() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


NEEDS_IPV6 = pytest.mark.skipif(not _has_ipv6(), reason="no IPv6 loopback (::1) here")


async def _cli(*args: str) -> trio.CompletedProcess[bytes]:
    return await trio.run_process(
        [sys.executable, "-m", "pipe_relay", *args], capture_stdout=True, capture_stderr=True, check=False
    )


async def test_cli_starts_prints_its_address_and_a_url_to_open_and_serves() -> None:
    with trio.fail_after(20):
        process = await open_cli("--host", "127.0.0.1", "--http-port", "0", "--heartbeat", "5")
        try:
            listening, opening = await startup_lines(process, 2)
            assert listening.startswith("pipe-relay 0.1.0 listening on http://127.0.0.1:")
            port = int(listening.rsplit(":", 1)[1])
            url = f"http://127.0.0.1:{port}/"
            assert opening == f"open {url} in a browser, or see: curl {url}help"
            page = await curl("-w", "%{http_code}", "-o", "/dev/null", url)
            usage = await curl(url + "help")
            version = await curl(f"http://127.0.0.1:{port}/version")
        finally:
            assert await stop_cli(process) == 0
        assert await rest_of_output(process) == ""  # (one URL to open: no more lines)
    assert page.stdout == b"200", page.stderr
    assert b"curl" in usage.stdout, usage.stderr
    assert version.stdout == b"pipe-relay 0.1.0\n"


async def test_on_every_address_the_url_to_open_is_localhost_on_the_port_drawn() -> None:
    with trio.fail_after(20):
        process = await open_cli("--http-port", "0")  # `::`, or `0.0.0.0` on a host without IPv6
        try:
            listening, opening = await startup_lines(process, 2)
            assert re.fullmatch(
                r"pipe-relay 0\.1\.0 listening on http://(\[::\]|0\.0\.0\.0):\d+( \(.*\))?", listening
            )
            port = int(listening.split(" (")[0].rsplit(":", 1)[1])
            assert port != 0
            url = f"http://localhost:{port}/"
            assert opening == f"open {url} in a browser, or see: curl {url}help"
            version = await curl(url + "version")
        finally:
            assert await stop_cli(process) == 0
    assert version.stdout == b"pipe-relay 0.1.0\n", version.stderr


@NEEDS_IPV6
async def test_a_url_to_open_for_an_ipv6_address_has_brackets_and_one_for_https(tls_files: TlsFiles) -> None:
    tls = (
        "--enable-https",
        "--https-port",
        "0",
        "--crt-path",
        str(tls_files.crt),
        "--key-path",
        str(tls_files.key),
    )
    with trio.fail_after(20):
        process = await open_cli("--host", "::1", "--host", "127.0.0.1", "--http-port", "0", *tls)
        try:
            lines = await startup_lines(process, 6)
            http_port = int(lines[0].rsplit(":", 1)[1])
            https_port = int(lines[2].rsplit(":", 1)[1])
            assert lines[:4] == [
                f"pipe-relay 0.1.0 listening on http://[::1]:{http_port}",
                f"pipe-relay 0.1.0 listening on http://127.0.0.1:{http_port}",
                f"pipe-relay 0.1.0 listening on https://[::1]:{https_port}",
                f"pipe-relay 0.1.0 listening on https://127.0.0.1:{https_port}",
            ]
            http, https = f"http://[::1]:{http_port}/", f"https://[::1]:{https_port}/"
            assert lines[4:] == [
                f"open {http} in a browser, or see: curl {http}help",
                f"open {https} in a browser, or see: curl {https}help",
            ]
            plain = await curl("-g", http + "version")
            secure = await curl("-g", "-k", https + "version")  # (the certificate names 127.0.0.1)
        finally:
            assert await stop_cli(process) == 0
        assert await rest_of_output(process) == ""
    assert plain.stdout == secure.stdout == b"pipe-relay 0.1.0\n", (plain.stderr, secure.stderr)


async def test_bad_flag_value_is_one_line() -> None:
    with trio.fail_after(20):
        result = await _cli("--max-receivers", "0")
    assert result.returncode == 2
    assert result.stderr == b"pipe-relay: error: max-receivers must be at least 1 (see --help)\n"


async def test_unparsable_flag_is_one_line() -> None:
    with trio.fail_after(20):
        result = await _cli("--http-port", "eighty")
    assert result.returncode == 2
    assert (
        result.stderr
        == b"pipe-relay: error: argument --http-port: invalid int value: 'eighty' (see --help)\n"
    )


async def _second_server(*args: str) -> tuple[int, bytes]:
    """Another server: its exit status and what it says, once it has given up."""
    result = await _cli(*args)
    assert result.stdout == b""
    return result.returncode, result.stderr


async def test_a_port_in_use_is_one_line_naming_the_address_and_the_flag_to_change_it() -> None:
    with trio.fail_after(20):
        async with cli_server("--http-port", "0") as (_, text):  # on `::` (or `0.0.0.0`)
            address = text.split("://")[1].split(" ")[0]
            port = address.rsplit(":", 1)[1]
            code, stderr = await _second_server("--http-port", port)
    assert code == 1
    assert (
        stderr
        == (
            f"pipe-relay: error: cannot listen on {address}: address already in use; "
            "choose another port with --http-port\n"
        ).encode()
    )


async def test_an_https_port_in_use_names_the_https_flag(tls_files: TlsFiles) -> None:
    keys = ("--crt-path", str(tls_files.crt), "--key-path", str(tls_files.key))
    with trio.fail_after(20):
        async with cli_server("--host", "127.0.0.1", "--http-port", "0") as (_, text):
            port = text.rsplit(":", 1)[1]
            https = ("--enable-https", "--https-port", port, *keys)
            code, stderr = await _second_server("--host", "127.0.0.1", "--http-port", "0", *https)
    assert code == 1
    assert (
        stderr
        == (
            f"pipe-relay: error: cannot listen on 127.0.0.1:{port}: address already in use; "
            "choose another port with --https-port\n"
        ).encode()
    )


async def test_a_unix_socket_in_use_names_the_unix_flag(tmp_path: Path) -> None:
    path = tmp_path / "busy.sock"
    with trio.fail_after(20):
        async with cli_server("--host", "127.0.0.1", "--http-port", "0", "--unix", str(path)):
            code, stderr = await _second_server(
                "--host", "127.0.0.1", "--http-port", "0", "--unix", str(path)
            )
    assert code == 1
    assert (
        stderr
        == (
            f"pipe-relay: error: cannot listen on unix:{path}: address already in use; "
            "choose another path with --unix\n"
        ).encode()
    )


async def test_console_script_reports_its_version() -> None:
    installed = Path(sys.executable).with_name("pipe-relay")
    script = str(installed) if installed.exists() else shutil.which("pipe-relay") or "pipe-relay"
    with trio.fail_after(20):
        result = await trio.run_process([script, "--version"], capture_stdout=True, check=False)
    assert result.returncode == 0
    assert result.stdout == b"pipe-relay 0.1.0\n"
