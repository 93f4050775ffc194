# The command line as a user runs it: starts and serves, and fails with one clear line otherwise.
# Each test runs `python -m pipe_relay` in a subprocess; none uses a fixed port.
from __future__ import annotations

import shutil
import socket
import sys
from pathlib import Path

import trio

from tests.cli_process import cli_server
from tests.clients import curl


async def _cli(*args: str) -> trio.CompletedProcess[bytes]:
    return await trio.run_process(
        [sys.executable, "-m", "pipe_relay", *args], capture_stdout=True, capture_stderr=True, check=False
    )


async def test_cli_starts_prints_its_address_and_serves() -> None:
    with trio.fail_after(20):
        async with cli_server("--host", "127.0.0.1", "--http-port", "0", "--heartbeat", "5") as (_, text):
            assert text.startswith("pipe-relay 0.1.0 listening on http://127.0.0.1:")
            port = int(text.rsplit(":", 1)[1])
            version = await curl(f"http://127.0.0.1:{port}/version")
            assert version.stdout == b"pipe-relay 0.1.0\n"


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


async def test_busy_port_is_one_line() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with trio.fail_after(20):
            result = await _cli("--host", "127.0.0.1", "--http-port", str(port))
    assert result.returncode == 1
    assert (
        result.stderr
        == f"pipe-relay: error: cannot listen on 127.0.0.1:{port}: address already in use\n".encode()
    )


async def test_console_script_reports_its_version() -> None:
    installed = Path(sys.executable).with_name("pipe-relay")
    script = str(installed) if installed.exists() else shutil.which("pipe-relay") or "pipe-relay"
    with trio.fail_after(20):
        result = await trio.run_process([script, "--version"], capture_stdout=True, check=False)
    assert result.returncode == 0
    assert result.stdout == b"pipe-relay 0.1.0\n"
