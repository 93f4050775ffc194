# Config validation: every rejected value with its exact message, the valid edges, and the CLI's one line.
# Invariant: a Config that constructs is usable; a bad one raises ValueError naming the flag and the rule.
from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import trio

from pipe_relay.config import ENGINES, Config

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("port", -1, "port must be 0..65535, not -1"),
        ("port", 65536, "port must be 0..65535, not 65536"),
        ("max_pending", 0, "max-pending must be at least 1"),
        ("max_active", 0, "max-active must be at least 1"),
        ("max_connections", 0, "max-connections must be at least 1"),
        ("max_receivers", 0, "max-receivers must be at least 1"),
        ("max_path_length", 0, "max-path-length must be at least 1"),
        ("max_receivers", -5, "max-receivers must be at least 1"),
        ("pending_ttl", 0, "pending-ttl must be positive"),
        ("pending_ttl", -1.5, "pending-ttl must be positive"),
        ("heartbeat", -0.1, "heartbeat must be 0 (off) or positive"),
        ("idle_timeout", -1, "idle-timeout must be 0 (off) or positive"),
        ("header_timeout", 0, "header-timeout must be positive"),
        ("header_timeout", -1, "header-timeout must be positive"),
        ("engine", "zerocopy", "engine must be one of auto, splice, buffer, not 'zerocopy'"),
        ("engine", "", "engine must be one of auto, splice, buffer, not ''"),
        ("buffer_size", 4095, "buffer-size must be at least 4096"),
        ("max_head_size", 1023, "max-head-size must be at least 1024"),
        ("hosts", "127.0.0.1", "hosts must be a tuple of addresses, not '127.0.0.1'"),
        ("hosts", (), "nothing to listen on: give a host or a unix socket"),
        ("hosts", ("",), "host must be an address or a name without brackets, not ''"),
        ("hosts", ("[::1]",), "host must be an address or a name without brackets, not '[::1]'"),
        ("hosts", ("::1", " ::1"), "host must be an address or a name without brackets, not ' ::1'"),
        ("hosts", ("::1", "127.0.0.1", "::1"), "host ::1 is given twice"),
        ("unix_path", "/" + "s" * 107, "unix socket path is longer than 107 bytes"),
        ("unix_mode", 0o1000, "unix-mode must be 0..0777, not 0o1000"),
        ("unix_mode", -1, "unix-mode must be 0..0777, not -0o1"),
    ],
)
def test_a_bad_value_is_rejected_with_its_exact_message(field: str, value: Any, message: str) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        Config(**{field: value})


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("port", 0),
        ("port", 65535),
        ("max_pending", 1),
        ("max_active", 1),
        ("max_connections", 1),
        ("max_receivers", 1),
        ("max_path_length", 1),
        ("pending_ttl", 0.001),
        ("heartbeat", 0),
        ("heartbeat", 0.001),
        ("idle_timeout", 0),
        ("header_timeout", 0.001),
        *(("engine", engine) for engine in ENGINES),
        ("buffer_size", 4096),
        ("max_head_size", 1024),
        ("hosts", ("127.0.0.1", "::1", "localhost")),
        ("unix_path", "/" + "s" * 106),
        ("unix_mode", 0),
        ("unix_mode", 0o777),
    ],
)
def test_an_edge_value_is_accepted(field: str, value: Any) -> None:
    config = Config(**{field: value})
    assert getattr(config, field) == value


def test_the_defaults_are_valid_and_the_documented_ones() -> None:
    config = Config()
    assert (config.hosts, config.port, config.engine) == (("::",), 8080, "auto")
    assert (config.unix_path, config.unix_mode) == ("", 0o660)
    assert (config.max_pending, config.max_active, config.max_receivers) == (1000, 1000, 256)
    assert (config.pending_ttl, config.heartbeat, config.idle_timeout) == (300.0, 30.0, 300.0)
    assert (config.header_timeout, config.max_connections) == (10.0, 10_000)
    assert config.max_path_length == 1024


def test_a_config_is_frozen() -> None:
    config = Config()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.port = 1  # type: ignore[misc]


def test_the_first_broken_rule_is_the_one_reported() -> None:
    # checks run in a fixed order: the port before the limits, the limits before the timers
    with pytest.raises(ValueError, match=r"^port must be 0\.\.65535, not 70000$"):
        Config(port=70000, max_pending=0, pending_ttl=0)
    with pytest.raises(ValueError, match=r"^max-active must be at least 1$"):
        Config(max_active=0, heartbeat=-1)


# Through the command line ----------------------------------------------------------------------


async def _cli(*args: str) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}  # this checkout's package, not an installed one
    with trio.fail_after(10):  # a value let through starts a server, which would never exit
        return await trio.run_process(
            [sys.executable, "-m", "pipe_relay", *args],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            cwd=ROOT,
            env=env,
        )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--pending-ttl", "0"), "pending-ttl must be positive"),
        (("--heartbeat", "-1"), "heartbeat must be 0 (off) or positive"),
        (("--http-port", "65536"), "port must be 0..65535, not 65536"),
        (("--idle-timeout", "-0.5"), "idle-timeout must be 0 (off) or positive"),
        (("--max-pending", "0"), "max-pending must be at least 1"),
        (("--host", "::1", "--host", "::1"), "host ::1 is given twice"),
        (("--unix-mode", "0600"), "--unix-mode needs --unix"),
        (("--unix", "/tmp/x.sock", "--unix-mode", "rw"), "argument --unix-mode: not an octal mode: 'rw'"),
    ],
)
async def test_the_cli_reports_a_bad_value_in_one_line(args: tuple[str, ...], message: str) -> None:
    result = await _cli("--host", "127.0.0.1", *args)
    assert result.returncode == 2
    assert result.stderr == f"pipe-relay: error: {message} (see --help)\n".encode()
    assert result.stdout == b""
