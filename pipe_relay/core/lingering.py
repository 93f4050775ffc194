# HTTP/2 streams answered in full while their upload still comes: when each may end, what to give back.
# Invariant: a stream lingers at most SECONDS and sends at most the window it had; none lingers unbounded.
"""RFC 9113 8.1 lets a server answer before the request's body is in and then reset the stream
(RST_STREAM NO_ERROR). A client that reads the reset before the answer fails the request without
showing it: curl 7.x (Debian 12's) does so for about one refused upload in ten ("Stream error in the
HTTP/2 framing layer", exit 92). So the reset waits until the client has had time to read the answer
(or ends its body, or resets the stream itself), as an HTTP/1.1 server lingers before its close.

While a stream lingers, what it sends is dropped and only the connection's window opens again (in
steps of ACK_STEP): its own window stays as it was, so it can send no more than it had been given."""

from __future__ import annotations

from dataclasses import dataclass, field

SECONDS = 1.0
"""How long a client gets to read an answer that came before the end of its upload."""
MOST = 16
"""Streams of one connection that may linger at once; past that, the next is reset at once."""
ACK_STEP = 64 * 1024
"""Dropped bytes gathered before the connection's window is opened by as much (one WINDOW_UPDATE)."""


@dataclass
class Lingering:
    """One connection's lingering streams: their deadlines, and the dropped bytes not yet given back."""

    deadlines: dict[int, float] = field(default_factory=dict)
    dropped: int = 0

    def add(self, stream_id: int, now: float) -> bool:
        """The stream's answer is complete, its upload not: True if it may linger (else reset it now)."""
        if len(self.deadlines) >= MOST:
            return False
        self.deadlines[stream_id] = now + SECONDS
        return True

    def __contains__(self, stream_id: int) -> bool:
        return stream_id in self.deadlines

    def drop(self, size: int) -> int:
        """A lingering stream sent `size` flow-controlled bytes: the connection window to open now, or 0."""
        self.dropped += size
        if self.dropped < ACK_STEP:
            return 0
        opened, self.dropped = self.dropped, 0
        return opened

    def forget(self, stream_id: int) -> None:
        """The client ended the stream (its body's end, or its own reset): nothing to reset."""
        self.deadlines.pop(stream_id, None)

    def next_deadline(self) -> float:
        return min(self.deadlines.values(), default=float("inf"))

    def expired(self, now: float) -> list[int]:
        """The streams whose time is up, forgotten here: the caller resets them (NO_ERROR)."""
        due = [stream_id for stream_id, deadline in self.deadlines.items() if deadline <= now]
        for stream_id in due:
            del self.deadlines[stream_id]
        return due

    def all(self) -> list[int]:
        """Every lingering stream, forgotten here (the connection drains: reset them all now)."""
        due = list(self.deadlines)
        self.deadlines.clear()
        return due
