# Transfer progress as watchers see it: states, snapshots and their Server-Sent Events framing.
# Invariant: a snapshot is plain data; `done` and `aborted` are final and end every watcher's stream.
from __future__ import annotations

import enum
import json
from dataclasses import dataclass

from .registry import PipeState

SSE_RETRY_MS = 2000
MIN_INTERVAL = 0.25
"""Watchers get at most 4 updates a second while bytes stream."""
KEEPALIVE_INTERVAL = 15.0


class TransferState(enum.Enum):
    IDLE = "idle"
    WAITING = "waiting"
    STREAMING = "streaming"
    DONE = "done"
    ABORTED = "aborted"

    @property
    def final(self) -> bool:
        return self in (TransferState.DONE, TransferState.ABORTED)


@dataclass(frozen=True, slots=True)
class Snapshot:
    state: TransferState
    bytes: int
    total: int | None
    receivers: int
    expected: int
    rate: float
    elapsed: float
    limit: int | None = None
    """The transfer's rate cap in bytes a second (`--rate-limit`, a user's `rate`), if it has one."""

    def to_json(self) -> str:
        fields: dict[str, object] = {
            "state": self.state.value,
            "bytes": self.bytes,
            "total": self.total,
            "receivers": {"connected": self.receivers, "expected": self.expected},
            "rate": round(self.rate, 1),
            "elapsed": round(self.elapsed, 3),
        }
        if self.limit is not None:
            fields["limit"] = self.limit
        return json.dumps(fields, separators=(",", ":"))


def sse_open() -> bytes:
    """The first bytes of an event stream: the client's reconnect delay."""
    return f"retry: {SSE_RETRY_MS}\n\n".encode()


def sse_event(snapshot: Snapshot) -> bytes:
    return f"data: {snapshot.to_json()}\n\n".encode()


def sse_keepalive() -> bytes:
    return b": keep-alive\n\n"


def next_state(current: TransferState, pipe: PipeState | None) -> TransferState:
    """What watchers see after the registry changed for their pipe: a final state stays; a pipe
    gone before it started is idle again; pending is waiting, active streaming."""
    if current.final:
        return current
    if pipe is None:
        return TransferState.IDLE
    return TransferState.STREAMING if pipe is PipeState.ACTIVE else TransferState.WAITING


def rate_between(before: tuple[float, int], after: tuple[float, int]) -> float:
    """Bytes per second between two (time, bytes) samples; 0 when no time passed."""
    seconds = after[0] - before[0]
    return (after[1] - before[1]) / seconds if seconds > 0 else 0.0
