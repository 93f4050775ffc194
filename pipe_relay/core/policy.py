# Access control (`--policy FILE`): users with password hashes, path rules of who may send and receive.
# Invariant: parsing is total (a Policy or a PolicyError naming the file's line); a decision is pure data.
"""The file is TOML (read with the standard library):

    default = { send = "anyone", receive = "anyone" }

    [users.alice]
    password = "$argon2id$v=19$m=65536,t=3,p=4$..."   # `pipe-relay hash-password`

    [[rules]]
    prefix = "/alice/"              # or: pattern = "/team-*/**"  (* within a segment, ** across)
    send = ["alice"]
    receive = "anyone"

Who may: "anyone", "users" (any user who gave a right password), "nobody", or a list of user names.
The first rule whose prefix or pattern matches the pipe's key decides; else the default (which, if
the file does not say, lets anyone send and receive). `?progress` needs what receiving needs."""

from __future__ import annotations

import enum
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field

from .paths import normalize_escapes

ACTIONS = ("send", "receive")
_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")
_HASH = re.compile(
    r"\$argon2id\$v=19\$m=\d{1,10},t=\d{1,10},p=\d{1,3}\$[A-Za-z0-9+/]{11,}\$[A-Za-z0-9+/]{16,}"
)
"""An argon2id hash in its PHC string form (a garbled or cut one would refuse its user's every password)."""
_RATE = re.compile(r"(\d{1,13})([KMGT]?)", re.IGNORECASE)
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


class PolicyError(ValueError):
    """A policy file that cannot be used: the one-line reason, with the file's line where known."""


class Anyone(enum.Enum):
    ANYONE = "anyone"
    USERS = "users"
    NOBODY = "nobody"


Who = Anyone | frozenset[str]


@dataclass(frozen=True, slots=True)
class Rule:
    send: Who
    receive: Who
    prefix: str | None = None
    pattern: re.Pattern[str] | None = None
    line: int = 0

    def matches(self, key: str) -> bool:
        if self.prefix is not None:
            return key.startswith(self.prefix)
        return self.pattern is not None and self.pattern.fullmatch(key) is not None

    def who(self, action: str) -> Who:
        return self.send if action == "send" else self.receive


class Verdict(enum.Enum):
    ALLOW = "allow"
    NEED_USER = "need_user"
    """Nobody was named (or not a user allowed): ask for credentials (401)."""
    FORBIDDEN = "forbidden"
    """A user was named whom the rule does not allow (403)."""


@dataclass(frozen=True, slots=True)
class Policy:
    users: Mapping[str, str]
    """User name -> password hash."""
    rules: tuple[Rule, ...]
    default: Rule
    rates: Mapping[str, int] = field(default_factory=dict)
    """User name -> the rate cap (bytes a second) of each transfer the user sends, where set."""

    def rule_for(self, key: str) -> Rule:
        return next((rule for rule in self.rules if rule.matches(key)), self.default)

    def decide(self, key: str, action: str, user: str | None) -> Verdict:
        """May `user` (None: nobody named) `action` ("send", "receive") on the pipe `key`?"""
        who = self.rule_for(key).who(action)
        if who is Anyone.ANYONE:
            return Verdict.ALLOW
        if who is Anyone.NOBODY:
            return Verdict.FORBIDDEN if user is not None else Verdict.NEED_USER
        if user is None:
            return Verdict.NEED_USER
        if who is Anyone.USERS or user in who:
            return Verdict.ALLOW
        return Verdict.FORBIDDEN


def parse_policy(text: str) -> Policy:
    """The policy in `text`, or PolicyError("line N: ...")."""
    lines = text.splitlines()
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError(_toml_reason(str(exc), len(lines))) from None
    unknown = set(data) - {"default", "users", "rules"}
    if unknown:
        name = sorted(unknown)[0]
        raise PolicyError(f"line {_line_of(lines, name)}: unknown key {name!r} (use default, users, rules)")
    users, rates = _users(data.get("users", {}), lines)
    default_table = data.get("default", {"send": "anyone", "receive": "anyone"})
    if not isinstance(default_table, dict):
        raise PolicyError(f"line {_line_of(lines, 'default')}: default must be a table of send and receive")
    default = _rule(default_table, users, lines, _line_of(lines, "default"), needs_match=False)
    raw_rules = data.get("rules", [])
    if not isinstance(raw_rules, list):
        raise PolicyError(f"line {_line_of(lines, 'rules')}: rules must be an array of tables ([[rules]])")
    rule_lines = [number for number, line in enumerate(lines, 1) if line.strip().startswith("[[rules]]")]
    rules = []
    for index, table in enumerate(raw_rules):
        line = rule_lines[index] if index < len(rule_lines) else _line_of(lines, "rules")
        if not isinstance(table, dict):
            raise PolicyError(f"line {line}: a rule must be a table")
        rules.append(_rule(table, users, lines, line, needs_match=True))
    return Policy(users, tuple(rules), default, rates)


def _users(table: object, lines: list[str]) -> tuple[dict[str, str], dict[str, int]]:
    if not isinstance(table, dict):
        raise PolicyError(f"line {_line_of(lines, 'users')}: users must be a table ([users.NAME])")
    users, rates = {}, {}
    for name, entry in table.items():
        line = _user_line(lines, name)
        if not _NAME.fullmatch(name):
            raise PolicyError(f"line {line}: user name {name!r}: 1 to 64 of A-Z a-z 0-9 . _ -")
        if not isinstance(entry, dict) or "password" not in entry or set(entry) - {"password", "rate"}:
            raise PolicyError(f'line {line}: user {name!r} needs password = "<hash>" (and may have a rate)')
        if "rate" in entry:
            try:
                rates[name] = parse_rate(entry["rate"])
            except ValueError as exc:
                raise PolicyError(f"line {line}: user {name!r}: {exc}") from None
        password = entry["password"]
        if not isinstance(password, str) or not _HASH.fullmatch(password):
            raise PolicyError(
                f"line {line}: user {name!r}: password must be an argon2id hash "
                "(make one with `pipe-relay hash-password`), never the password itself"
            )
        users[name] = password
    return users, rates


def parse_rate(value: object) -> int:
    """A rate cap in bytes a second: 1048576, "1048576", "512K", "10M", "1G" (K = 1024)."""
    if isinstance(value, int) and not isinstance(value, bool):
        rate = value
    elif isinstance(value, str) and (found := _RATE.fullmatch(value.strip())):
        rate = int(found.group(1)) * _UNITS[found.group(2).upper()]
    else:
        raise ValueError(f"rate {value!r}: bytes a second, as 1048576, 512K, 10M or 1G")
    if not 1024 <= rate <= 1 << 40:
        raise ValueError(f"rate {value!r}: from 1K to 1T bytes a second")
    return rate


def _rule(
    table: dict[str, object], users: Mapping[str, str], lines: list[str], line: int, *, needs_match: bool
) -> Rule:
    allowed = {"send", "receive", "prefix", "pattern"} if needs_match else {"send", "receive"}
    unknown = set(table) - allowed
    if unknown:
        raise PolicyError(
            f"line {line}: unknown key {sorted(unknown)[0]!r} (use {', '.join(sorted(allowed))})"
        )
    for action in ACTIONS:
        if action not in table:
            raise PolicyError(
                f'line {line}: say who may {action}: {action} = "anyone", "users", "nobody" or a list'
            )
    send = _who(table["send"], users, line)
    receive = _who(table["receive"], users, line)
    if not needs_match:
        return Rule(send, receive, line=line)
    prefix, pattern = table.get("prefix"), table.get("pattern")
    if (prefix is None) == (pattern is None):
        raise PolicyError(f"line {line}: a rule needs one of prefix or pattern")
    if prefix is not None:
        if not isinstance(prefix, str) or not prefix.startswith("/"):
            raise PolicyError(f"line {line}: prefix must be a path starting with /")
        return Rule(send, receive, prefix=_as_key(prefix), line=line)
    if not isinstance(pattern, str) or not pattern.startswith("/"):
        raise PolicyError(f"line {line}: pattern must be a path starting with /")
    return Rule(send, receive, pattern=_glob(_as_key(pattern)), line=line)


def _as_key(path: str) -> str:
    """A rule's path as pipe keys are spelled (their escapes normalized as RFC 3986 compares
    paths, anything not ASCII escaped as its UTF-8): `/%7Eteam/` is `/~team/`, `/café/` is
    `/caf%C3%A9/`, so a rule applies to the very URL it names."""
    escaped = "".join(c if c.isascii() else "".join(f"%{b:02X}" for b in c.encode()) for c in path)
    return normalize_escapes(escaped)


def _who(value: object, users: Mapping[str, str], line: int) -> Who:
    if isinstance(value, str):
        try:
            return Anyone(value)
        except ValueError:
            raise PolicyError(
                f"line {line}: {value!r}: use anyone, users, nobody or a list of users"
            ) from None
    if isinstance(value, list) and value and all(isinstance(name, str) for name in value):
        missing = [name for name in value if name not in users]
        if missing:
            raise PolicyError(f"line {line}: no user {missing[0]!r} in [users]")
        return frozenset(value)
    raise PolicyError(f"line {line}: use anyone, users, nobody or a non-empty list of users")


def _glob(pattern: str) -> re.Pattern[str]:
    """`*` within a path segment, `**` across segments, anything else as it is."""
    parts = re.split(r"(\*\*|\*)", pattern)
    regex = "".join(".*" if part == "**" else "[^/]*" if part == "*" else re.escape(part) for part in parts)
    return re.compile(regex, re.DOTALL)


def _line_of(lines: list[str], key: str) -> int:
    """The first line that names `key` (a table header or an assignment), for the error's pointer."""
    last = key.rsplit(".", 1)[-1]
    for number, line in enumerate(lines, 1):
        stripped = line.strip()
        if stripped.startswith(("[" + key + "]", "[[" + key + "]]")) or re.match(
            rf"{re.escape(last)}\s*=", stripped
        ):
            return number
    return 1


_KEY_PART = re.compile(r"""\s*(?:([A-Za-z0-9_-]+)|"((?:[^"\\]|\\.)*)"|'([^']*)')\s*""")
_HEADER = re.compile(r"\[(\[?)([^\[\]]*)\]\]?\s*(?:#.*)?")


def _key_path(text: str) -> list[str] | None:
    """A TOML key as its parts (`users."bob smith"` -> users, bob smith); None if it is not one."""
    parts: list[str] = []
    position = 0
    while found := _KEY_PART.match(text, position):
        bare, basic, literal = found.groups()
        if basic is not None:
            try:
                basic = str(tomllib.loads(f'k = "{basic}"')["k"])
            except tomllib.TOMLDecodeError:
                return None
        parts.append(bare if bare is not None else basic if basic is not None else literal)
        position = found.end()
        if position == len(text):
            return parts
        if text[position] != ".":
            return None
        position += 1
    return None


def _assigned(line: str) -> list[str] | None:
    """The key a `key = value` line assigns, as its parts; None if the line is no assignment."""
    return _key_path(line.split("=", 1)[0]) if "=" in line else None


def _user_line(lines: list[str], name: str) -> int:
    """The line that opens user `name`'s table (`[users.NAME]`, quoted or not), or names it under
    `[users]` (`NAME = {...}`, `NAME.password = ...`), for the error's pointer."""
    table: list[str] = []
    for number, line in enumerate(lines, 1):
        stripped = line.strip()
        if header := _HEADER.fullmatch(stripped):
            table = _key_path(header.group(2)) or []
            if table == ["users", name]:
                return number
        elif (key := _assigned(stripped)) is not None and (table + key)[:2] == ["users", name]:
            return number  # (`NAME = {...}` or `NAME.password = ...`)
    return _line_of(lines, f"users.{name}")


def _toml_reason(message: str, last_line: int) -> str:
    """tomllib's "Expected ... (at line 3, column 5)" as "line 3: expected ..."."""
    found = re.search(r"\(at line (\d+), column \d+\)", message)
    line = found.group(1) if found else str(max(1, last_line))  # ("at end of document")
    reason = re.sub(r"\s*\(at (line \d+, column \d+|end of document)\)", "", message)
    return f"line {line}: {reason[:1].lower() + reason[1:]}"
