# Request targets: the pipe key, the reserved routes and the query options a request carries.
# Invariant: a key is the path, escapes normalized (RFC 3986 6.2.2), no API prefix, no query; it starts "/".
from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from urllib.parse import parse_qsl

from ..errors import ErrorCode, pipe_error

API_PREFIX = "/api/v1/pipe"
MAX_QUERY_FIELDS = 64
_MAX_N_DIGITS = 6
_ESCAPE = re.compile(r"%([0-9A-Fa-f]{2})?")
_WELL_FORMED_ESCAPE = re.compile(r"%([0-9A-Fa-f]{2})")
UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
"""RFC 3986 2.3: a percent-escape of one of these is the character itself."""


class Reserved(enum.Enum):
    """Paths that serve the service's own content instead of acting as a pipe."""

    INDEX = "/"
    HELP = "/help"
    NOSCRIPT = "/noscript"
    FAVICON = "/favicon.ico"
    ROBOTS = "/robots.txt"
    VERSION = "/version"
    HEALTH = "/health"


_RESERVED_BY_PATH = {r.value: r for r in Reserved}


@dataclass(frozen=True, slots=True)
class Target:
    """A parsed request target."""

    key: str
    """The pipe key: `/x` for both `/x` and `/api/v1/pipe/x`."""
    prefixed: bool
    """True when the request came in under `/api/v1/pipe`."""
    reserved: Reserved | None
    query: tuple[tuple[str, str], ...]

    @property
    def shown_path(self) -> str:
        """The path as the user wrote it (for messages)."""
        return API_PREFIX + self.key if self.prefixed and self.key != "/" else self.key

    def flag(self, name: str) -> bool | None:
        """A boolean query option: `?x`, `?x=true|yes|1` -> True; `false|no|0` -> False.

        Absent, or a value that is none of these, gives None (the option is not set).
        """
        for key, value in self.query:
            if key == name:
                lowered = value.strip().lower()
                if lowered in ("", "true", "yes", "1"):
                    return True
                if lowered in ("false", "no", "0"):
                    return False
                return None
        return None

    def values(self, name: str) -> list[str]:
        return [value for key, value in self.query if key == name]


def parse_target(target: str, *, max_path_length: int) -> Target:
    """Split a request target into pipe key, prefix flag, reserved route and query.

    Raises PipeError PATH_TOO_LONG or BAD_REQUEST.
    """
    path, _, query_string = target.partition("?")
    if path.startswith(("http://", "https://")):
        # absolute-form (RFC 9112 3.2.2): keep only the path
        after_scheme = path.split("://", 1)[1]
        slash = after_scheme.find("/")
        path = after_scheme[slash:] if slash >= 0 else "/"
    if not path.startswith("/"):
        raise pipe_error(ErrorCode.BAD_REQUEST, detail="the request target must start with '/'")
    if "%" in path:
        _check_escapes(path)
        path = normalize_escapes(path)
    prefixed = False
    key = path
    if path == API_PREFIX or path.startswith(API_PREFIX + "/"):
        prefixed = True
        key = path[len(API_PREFIX) :] or "/"
    if len(key) > max_path_length:
        raise pipe_error(ErrorCode.PATH_TOO_LONG, max=max_path_length)
    try:
        query = (
            ()
            if not query_string
            else tuple(
                parse_qsl(
                    query_string,
                    keep_blank_values=True,
                    max_num_fields=MAX_QUERY_FIELDS,
                    errors="replace",
                )
            )
        )
    except ValueError:
        raise pipe_error(
            ErrorCode.BAD_REQUEST, detail=f"more than {MAX_QUERY_FIELDS} query parameters"
        ) from None
    return Target(key=key, prefixed=prefixed, reserved=_RESERVED_BY_PATH.get(key), query=query)


def normalize_escapes(path: str) -> str:
    """The path as RFC 3986 (6.2.2) compares it: every percent-escape in upper case (`%e6` is
    `%E6`, as curl and browsers differ), and an escaped unreserved character decoded (`%41` is
    `A`, `%7E` is `~`). Nothing else changes: letters' case, `+`, a trailing slash, an escaped `/`
    (`%2F`) and every other escape stay as sent. (A proxy that routes by key must do the same.)"""
    return _WELL_FORMED_ESCAPE.sub(_normal_escape, path)


def _normal_escape(match: re.Match[str]) -> str:
    code = match.group(1)
    char = chr(int(code, 16))
    return char if char in UNRESERVED else "%" + code.upper()


def _check_escapes(path: str) -> None:
    """Every `%` starts two hex digits, and none encodes a control character (NUL included)."""
    for match in _ESCAPE.finditer(path):
        code = match.group(1)
        if code is None:
            raise pipe_error(ErrorCode.BAD_REQUEST, detail="a malformed percent-escape in the path")
        if int(code, 16) < 0x20 or code.upper() == "7F":
            raise pipe_error(ErrorCode.BAD_REQUEST, detail="an encoded control character in the path")


def parse_n(target: Target, *, max_receivers: int) -> int:
    """The receiver count `?n=K`: absent means 1; anything but one integer 1..max is INVALID_N."""
    values = target.values("n")
    if not values:
        return 1
    raw = values[0]
    if len(values) == 1 and raw.isascii() and raw.isdigit() and len(raw) <= _MAX_N_DIGITS:
        n = int(raw)
        if 1 <= n <= max_receivers:
            return n
    shown = ", ".join(values) if len(values) > 1 else raw
    raise pipe_error(ErrorCode.INVALID_N, value=shown[:32], max=max_receivers)
