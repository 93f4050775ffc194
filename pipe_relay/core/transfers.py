# The live transfers as the admin API shows them: one view per pipe, filters, pages and their cursors.
# Invariant: a view never holds a path (only its keyed id); a page is ordered by id, so a cursor is stable.
from __future__ import annotations

import calendar
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import parse_qsl

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
STATES = ("pending", "active")
ID_PATTERN = re.compile(r"[0-9a-f]{16}")
"""A transfer id (`fullmatch` it: `$` would let a trailing newline through)."""


class QueryError(ValueError):
    """A list request's query that cannot be served (400)."""


@dataclass(frozen=True, slots=True)
class TransferView:
    """One pipe: waiting for its parties (`pending`) or streaming (`active`)."""

    id: str
    state: str
    n: int
    sender: bool
    receivers: int
    bytes: int
    total: int | None
    rate: float
    """Bytes a second over the last second or so (0 while pending)."""
    started_at: float
    """When its first party came (Unix time)."""
    protocol: str | None
    """Its sender's protocol (or its first receiver's, while no sender is there)."""
    clients: tuple[str, ...]
    """Its parties' addresses, the sender's first."""
    worker: int
    user: str | None = None
    """The user its sender named (`--policy`), else its first party's; None: nobody named one."""

    def to_json(self) -> dict[str, object]:
        return {
            "id": self.id,
            "state": self.state,
            "n": self.n,
            "sender": self.sender,
            "receivers": self.receivers,
            "bytes": self.bytes,
            "total": self.total,
            "rate": round(self.rate, 1),
            "started_at": iso_time(self.started_at),
            "protocol": self.protocol,
            "clients": list(self.clients),
            "worker": self.worker,
            "user": self.user,
        }

    @classmethod
    def from_json(cls, fields: Mapping[str, object]) -> TransferView:
        """(A sibling worker's view, as it sent it.)"""
        started = str(fields["started_at"])
        return cls(
            id=str(fields["id"]),
            state=str(fields["state"]),
            n=_int(fields["n"]),
            sender=bool(fields["sender"]),
            receivers=_int(fields["receivers"]),
            bytes=_int(fields["bytes"]),
            total=None if fields["total"] is None else _int(fields["total"]),
            rate=float(str(fields["rate"])),
            started_at=_parse_iso(started),
            protocol=None if fields["protocol"] is None else str(fields["protocol"]),
            clients=tuple(str(c) for c in _list(fields["clients"])),
            worker=_int(fields["worker"]),
            user=None if fields["user"] is None else str(fields["user"]),
        )


def _int(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"not an integer: {value!r}")
    return value


def _list(value: object) -> list[object]:
    if not isinstance(value, list):
        raise ValueError(f"not a list: {value!r}")
    return value


def iso_time(at: float) -> str:
    """Unix time as ISO 8601 UTC, cut to the millisecond (`2026-12-07T12:00:00.123Z`); the microseconds
    are rounded first, so a float a hair under a whole millisecond (2**31 + 0.003) is not cut below it."""
    seconds, millis = divmod(round(at * 1_000_000) // 1000, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"


def _parse_iso(text: str) -> float:
    whole, _, rest = text.partition(".")
    seconds = calendar.timegm(time.strptime(whole, "%Y-%m-%dT%H:%M:%S"))
    return seconds + int(rest.rstrip("Z") or 0) / 1000


@dataclass(frozen=True, slots=True)
class ListQuery:
    state: str | None = None
    limit: int = DEFAULT_LIMIT
    cursor: str | None = None
    """The id of the last transfer of the page before (the next page starts after it)."""


def parse_query(query: str) -> ListQuery:
    """`state`, `limit` and `cursor` of `GET /api/v1/transfers?...`; QueryError for anything else."""
    fields: dict[str, str] = {}
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query), max_num_fields=8)
    except ValueError:
        raise QueryError("malformed query string") from None
    for name, value in pairs:
        if name not in ("state", "limit", "cursor"):
            raise QueryError(f"unknown parameter {name!r}: use state, limit or cursor")
        if name in fields:
            raise QueryError(f"parameter {name!r} given twice")
        fields[name] = value
    state = fields.get("state")
    if state is not None and state not in STATES:
        raise QueryError("state must be 'pending' or 'active'")
    limit = DEFAULT_LIMIT
    if "limit" in fields:
        text = fields["limit"]
        if not text.isascii() or not text.isdigit() or not 1 <= int(text) <= MAX_LIMIT:
            raise QueryError(f"limit must be an integer from 1 to {MAX_LIMIT}")
        limit = int(text)
    cursor = fields.get("cursor")
    if cursor is not None and not ID_PATTERN.fullmatch(cursor):
        raise QueryError("cursor must be a transfer id (16 lower-case hex digits)")
    return ListQuery(state, limit, cursor)


def page(views: Iterable[TransferView], query: ListQuery) -> tuple[list[TransferView], str | None]:
    """The page `query` asks for, and the cursor of the next one (None: this was the last)."""
    chosen = sorted(
        (
            v
            for v in views
            if (query.state is None or v.state == query.state)
            and (query.cursor is None or v.id > query.cursor)
        ),
        key=lambda v: v.id,
    )
    shown = chosen[: query.limit]
    more = len(chosen) > query.limit
    return shown, (shown[-1].id if more else None)


def find(views: Sequence[TransferView], transfer_id: str) -> TransferView | None:
    return next((v for v in views if v.id == transfer_id), None)
