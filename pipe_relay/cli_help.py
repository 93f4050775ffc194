# The command line's flags in their --help sections, each with its unit and its default read from a Config.
# Invariant: every flag is in one section and its help ends "(default: X)", X the value it stands for.
from __future__ import annotations

import argparse
import os
from typing import Any, NoReturn

from ._version import __version__
from .config import ENGINES, HTTPS_PORT, LOG_FORMATS, Config
from .core.policy import parse_rate

LOG_LEVELS = ("debug", "info", "warning")
ADMIN_TOKEN_ENV = "PIPE_RELAY_ADMIN_TOKEN"
"""The admin token, when no --admin-token-file is given (a flag's value would show in `ps`)."""
LOG_LEVEL = "info"
"""The one default that is not the server's (a Config does not log)."""

SECTIONS = (
    "listening",
    "TLS (HTTPS)",
    "limits",
    "limits per client address",
    "timeouts",
    "logging",
    "byte engine",
    "processes",
    "access control",
    "admin listener",
)
"""The --help sections of the server's flags, in order (--help and --version come first)."""

_CLIENT_LIMITS = (
    ("pending", "waiting parties"),
    ("active", "active transfers"),
    ("watchers", "?progress watchers"),
    ("connections", "open connections"),
    ("pages", "page and error replies on their way"),
)


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors, and `fields`: the flags (by dest) whose value is a Config field's
    as it is (the others, such as --host or --no-http, are translated by the caller)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.fields: dict[str, str] = {}

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"pipe-relay: error: {message} (see --help)\n")


class _Formatter(argparse.HelpFormatter):
    """Help beside each flag, even `--client-max-connections N` (argparse's default column is 24)."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=30)


def shown(value: object) -> str:
    """A default as --help shows it: `300` for 300.0, `none` for an empty value, `off` for False."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if value is None:
        return "none"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, tuple):
        return ",".join(value) or "none"
    return str(value) or "none"


def _option(
    group: argparse._ArgumentGroup, flag: str, text: str, *, default: Any, show: object = None, **kwargs: Any
) -> None:
    """A flag whose help ends with its default: `show` (what it stands for) when it is not `default`."""
    value = default if show is None else show
    # (argparse %-formats help: a literal % is %%)
    group.add_argument(flag, default=default, help=f"{text} (default: {shown(value)})", **kwargs)


def build_parser(defaults: Config | None = None) -> Parser:
    """The parser, its defaults (the values and the help's) those of `defaults` (a Config())."""
    config = Config() if defaults is None else defaults
    parser = Parser(
        prog="pipe-relay",
        formatter_class=_Formatter,
        description="Streaming pipe relay server: `curl -T FILE URL/NAME` on one side, `curl URL/NAME` "
        "on the other, nothing stored.",
    )
    parser.add_argument("--version", action="version", version=f"pipe-relay {__version__}")
    groups = {title: parser.add_argument_group(title) for title in SECTIONS}

    def field(group: str, flag: str, text: str, name: str = "", **kwargs: Any) -> None:
        """A flag that sets a Config field (`name`, else the flag's own) as it is."""
        dest = flag[2:].replace("-", "_")
        _option(groups[group], flag, text, default=getattr(config, name or dest), **kwargs)
        parser.fields[dest] = name or dest

    where = groups["listening"]
    _option(
        where,
        "--host",
        "address or name to listen on; may be given several times, all on one port; :: is IPv4 and IPv6 both",
        default=None,
        show=config.hosts,
        action="append",
        metavar="ADDRESS",
    )
    port_text = "plain HTTP port: HTTP/1.1, and HTTP/2 by prior knowledge (h2c); 0 picks a free one"
    field("listening", "--http-port", port_text, name="port", type=int, metavar="PORT")
    _option(
        where,
        "--no-http",
        "no plain HTTP listener: HTTPS only (needs --enable-https)",
        default=False,
        show=not config.http,
        action="store_true",
    )
    unix_text = "also listen on this Unix domain socket (for a reverse proxy on this host)"
    field("listening", "--unix", unix_text, name="unix_path", metavar="PATH")
    _option(
        where,
        "--unix-mode",
        "permission bits (octal) of the --unix socket file",
        default=None,
        show=f"{config.unix_mode:04o}",
        type=_mode,
        metavar="MODE",
    )

    tls = groups["TLS (HTTPS)"]
    https_text = "also serve HTTPS: HTTP/1.1 and HTTP/2 (ALPN h2) over TLS 1.2+"
    _option(
        tls,
        "--enable-https",
        https_text,
        default=False,
        show=config.https_port is not None,
        action="store_true",
    )
    _option(
        tls,
        "--https-port",
        "HTTPS port (with --enable-https); 0 picks a free one",
        default=None,
        show=HTTPS_PORT if config.https_port is None else config.https_port,
        type=int,
        metavar="PORT",
    )
    crt_text = "certificate chain (PEM) for HTTPS, re-read when it changes"
    field("TLS (HTTPS)", "--crt-path", crt_text, metavar="PATH")
    field("TLS (HTTPS)", "--key-path", "private key (PEM) of the certificate", metavar="PATH")

    field(
        "limits",
        "--max-connections",
        "open client connections; the next gets a fast 503",
        type=int,
        metavar="N",
    )
    field(
        "limits",
        "--max-pending",
        "pipes waiting for their parties at once; more get 503",
        type=int,
        metavar="N",
    )
    field("limits", "--max-active", "transfers streaming at once; more get 503", type=int, metavar="N")
    field("limits", "--max-receivers", "receivers of one pipe: the largest ?n", type=int, metavar="N")
    field("limits", "--max-watchers", "?progress watchers at once; 0 = none", type=int, metavar="N")
    field(
        "limits",
        "--max-path-length",
        "longest pipe path, in characters as in the URL (an escape such as %%20 is 3); longer gets 414",
        type=int,
        metavar="CHARS",
    )

    for what, text in _CLIENT_LIMITS:
        field(
            "limits per client address",
            f"--client-max-{what}",
            f"{text} per client address; 0 = no limit",
            type=int,
            metavar="N",
        )
    _option(
        groups["limits per client address"],
        "--trusted-proxies",
        "comma-separated CIDRs of your own proxies: from them, the client is the last X-Forwarded-For "
        "hop that is not one of them",
        default=",".join(config.trusted_proxies),
        metavar="CIDRS",
    )

    timeouts = "timeouts"
    field(
        timeouts, "--header-timeout", "a client has for its whole request head", type=float, metavar="SECONDS"
    )
    field(timeouts, "--pending-ttl", "a pipe may wait for its parties", type=float, metavar="SECONDS")
    field(
        timeouts,
        "--heartbeat",
        "between `Still waiting` lines to a waiting sender; 0 = off",
        type=float,
        metavar="SECONDS",
    )
    field(
        timeouts,
        "--idle-timeout",
        "a transfer may move no byte before it is aborted; 0 = never",
        type=float,
        metavar="SECONDS",
    )
    field(
        timeouts,
        "--drain-timeout",
        "on SIGTERM/SIGINT, active transfers get to finish; 0 = cut them at once",
        type=float,
        metavar="SECONDS",
    )

    _option(
        groups["logging"],
        "--log-level",
        "info: a line per request (the access log) and failures; debug: more",
        default=LOG_LEVEL,
        choices=LOG_LEVELS,
    )
    field(
        "logging",
        "--log-paths",
        "write pipe paths (secrets) into the log; else a transfer is logged as pipe#<keyed hash>",
        action="store_true",
    )

    field(
        "logging",
        "--log-format",
        "text lines, or json: one object a line (an access line's fields by name)",
        choices=LOG_FORMATS,
    )

    field(
        "byte engine",
        "--engine",
        "buffer (portable), splice (Linux zero-copy), auto (what measured fastest: buffer)",
        choices=ENGINES,
    )
    field(
        "processes",
        "--workers",
        "worker processes sharing the listeners, each pipe owned by one (by a hash of its path); "
        "auto = one per core",
        type=_workers,
        metavar="N",
    )
    field(
        "access control",
        "--rate-limit",
        "bytes a second each transfer may move at most: 1048576, 512K, 10M, 1G; 0 = no cap "
        "(a --policy user may have its own rate)",
        type=_rate,
        metavar="RATE",
    )
    field(
        "access control",
        "--policy",
        "users and who may send and receive where (TOML; reloaded on SIGHUP and when it changes); "
        "make a password hash with: pipe-relay hash-password",
        name="policy_path",
        metavar="FILE",
    )
    _option(
        groups["access control"],
        "--cors-origins",
        "with --policy: the origins (comma-separated) whose pages may send credentials; others get *",
        default="",
        show=config.cors_origins,
        metavar="ORIGINS",
    )
    field(
        "admin listener",
        "--admin-port",
        f"serve /metrics and the live-transfers API on this port (needs a token: --admin-token-file or "
        f"the environment variable {ADMIN_TOKEN_ENV}); 0 picks a free one",
        type=int,
        metavar="PORT",
    )
    field("admin listener", "--admin-host", "address of the admin listener", metavar="ADDRESS")
    _option(
        groups["admin listener"],
        "--admin-token-file",
        "file whose first line is the bearer token every admin request must carry",
        default=None,
        metavar="FILE",
    )
    return parser


def _workers(text: str) -> int:
    """`--workers 4`, or `--workers auto`: one per core this process may run on."""
    if text == "auto":
        return max(
            1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        )
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number or auto: {text!r}") from None


def _rate(text: str) -> int:
    """`--rate-limit 10M`: bytes a second (K = 1024); 0: no cap."""
    if text.strip() == "0":
        return 0
    try:
        return parse_rate(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _mode(text: str) -> int:
    """`--unix-mode 0660`: octal permission bits."""
    try:
        return int(text, 8)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an octal mode: {text!r}") from None
