# --help held to the code: every flag in one section, with a unit and the default it stands for.
# Invariant: the defaults shown are checked against Config and the parser (never a copy of them).
from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import re
import sys

import pytest
import trio

from pipe_relay.__main__ import parse_args
from pipe_relay.cli_help import SECTIONS, build_parser, shown
from pipe_relay.config import Config
from tests.cli_process import ROOT

_DEFAULT = re.compile(r" \(default: (\S+)\)$")
_VALUE_FOR = {
    "--unix-mode": ["--unix", "/run/x.sock"],
    "--https-port": ["--enable-https", "--crt-path", "c", "--key-path", "k"],
}
"""Flags that need another flag beside them: the other (with a value that does not matter)."""


def _flags(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    """The server's flags: all but --help and --version."""
    return [a for a in parser._actions if not isinstance(a, argparse._HelpAction | argparse._VersionAction)]


def _default(action: argparse.Action) -> str:
    assert action.help is not None
    found = _DEFAULT.search(action.help)
    assert found, f"{action.option_strings[0]}: no default in {action.help!r}"
    return found.group(1)


def test_every_flag_is_in_one_section_and_only_help_and_version_are_not() -> None:
    parser = build_parser()
    sections = {group.title: group._group_actions for group in parser._action_groups}
    assert [title for title in sections if title in SECTIONS] == list(SECTIONS)
    grouped = [action for title in SECTIONS for action in sections[title]]
    assert sorted(a.dest for a in grouped) == sorted(a.dest for a in _flags(parser))  # (once each)
    assert all(sections[title] for title in SECTIONS)  # (no empty section)


@pytest.mark.parametrize("action", _flags(build_parser()), ids=lambda a: a.option_strings[0])
def test_a_flag_shows_its_default_and_that_default_is_what_no_flag_gives(action: argparse.Action) -> None:
    flag, value = action.option_strings[0], _default(action)
    parser = build_parser()
    field = parser.fields.get(action.dest)
    if field is not None:
        assert value == shown(getattr(Config(), field))
    if value == "off":  # a switch, off unless given
        assert action.nargs == 0 and action.default is False
        return
    if value == "none":  # nothing unless given
        assert action.default in ("", None)
        return
    beside = _VALUE_FOR.get(flag, [])
    # the default as a user would pass it changes nothing: the Config (and log level) is the same
    assert parse_args([*beside, flag, value]) == parse_args(beside)


def test_no_flag_gives_the_default_config() -> None:
    assert parse_args([]) == (Config(), logging.INFO)


def test_the_defaults_shown_follow_the_config_they_are_built_from() -> None:
    """A default changed in Config changes --help: every flag shows the value of the Config given."""
    base = Config()
    changed: dict[str, object] = {
        name: (not value if isinstance(value, bool) else value + 1)
        for name, value in dataclasses.asdict(base).items()
        if isinstance(value, int | float) and name != "http"
    }
    changed.update(
        hosts=("127.0.0.1",),
        http=False,
        https_port=9443,
        crt_path="/c.pem",
        key_path="/k.pem",
        unix_path="/run/x.sock",
        unix_mode=0o600,
        trusted_proxies=("10.0.0.0/8",),
        engine="buffer",
        log_format="json",
        admin_port=9181,
        admin_host="10.0.0.1",
        admin_token="t" * 16,
        policy_path="/etc/policy.toml",
        rate_limit=2048,
        cors_origins=("https://a.example",),
    )
    other = dataclasses.replace(base, **changed)  # type: ignore[arg-type]
    before = {a.option_strings[0]: _default(a) for a in _flags(build_parser(base))}
    after = {a.option_strings[0]: _default(a) for a in _flags(build_parser(other))}
    # (not a Config's: the level, and the token's file, whose token is never shown)
    assert {flag for flag in before if before[flag] == after[flag]} == {"--log-level", "--admin-token-file"}
    assert (after["--max-pending"], after["--pending-ttl"], after["--unix-mode"]) == ("1001", "301", "0600")


def test_every_value_has_a_unit_or_its_choices_as_its_name() -> None:
    for action in _flags(build_parser()):
        if action.nargs == 0:
            continue
        flag = action.option_strings[0]
        if action.type is float:
            assert action.metavar == "SECONDS", flag
        elif action.type is int:
            assert action.metavar in ("N", "PORT", "CHARS"), flag
        else:
            assert action.metavar or action.choices, flag  # (never the dest in capitals)


async def test_help_prints_the_sections_and_every_default() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "400"}  # (one line a flag)
    with trio.fail_after(10):
        result = await trio.run_process(
            [sys.executable, "-m", "pipe_relay", "--help"], capture_stdout=True, cwd=ROOT, env=env
        )
    text = result.stdout.decode()
    for title in SECTIONS:
        assert f"\n\n{title}:\n" in text
    for name in ("max-pending", "max-active", "pending-ttl", "max-receivers", "max-path-length", "heartbeat"):
        assert re.search(rf"^  --{name} [A-Z]+\s+\S.*\(default: \d+\)$", text, re.M), name
    for name in ("max-watchers", "drain-timeout", "idle-timeout"):
        assert re.search(rf"^  --{name} [A-Z]+\s+\S.*\(default: \d+\)$", text, re.M), name
    assert "h2c" in text and "HTTP/2 (ALPN h2) over TLS" in text
