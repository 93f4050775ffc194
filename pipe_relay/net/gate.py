# The gate: counts open client connections against --max-connections, and at a drain closes the idle.
# Invariant: `open` is the number of connection tasks alive; once draining, no connection waits idle.
from __future__ import annotations

import contextlib
import socket
from collections.abc import Sequence
from typing import Protocol

import trio

from ..core.clients import Network, is_trusted
from ..core.quotas import Quota, Quotas
from ..core.registry import RETRY_AFTER_SECONDS
from ..core.replies import refusal
from ..errors import ErrorCode, PipeError, pipe_error
from .telemetry import TALLY

_REFUSAL = refusal(pipe_error(ErrorCode.TOO_MANY_CONNECTIONS, ("Retry-After", RETRY_AFTER_SECONDS)))


class Drainable(Protocol):
    """A connection the drain must reach: HTTP/1.1 closes if it waits idle for a head, HTTP/2 sends
    GOAWAY and closes once its streams are done."""

    def drain(self) -> None: ...


class Gate:
    """The open client connections: admitted while under the limits (server-wide, and per client
    address but for our own proxies), counted until their task ends."""

    def __init__(self, limit: int, quotas: Quotas, trusted: Sequence[Network] = ()) -> None:
        self.limit = limit
        self.quotas = quotas
        self.trusted = trusted
        self.open = 0
        self.draining = False
        self._conns: set[Drainable] = set()
        self._empty: trio.Event | None = None  # made by `wait_empty`

    def __repr__(self) -> str:
        state = " draining" if self.draining else ""
        return f"<Gate {self.open}/{self.limit}{state}>"

    def admit(self, sock: socket.socket, peer: str, *, tls: bool = False) -> bool:
        """Count a new connection in; past a limit, answer it a 503 (or the client's 429) at once
        and close it (what came with it is read first, so the close does not reset the reply). A
        TLS client is closed without a word: a plaintext reply means nothing to it, and a handshake
        is the very cost the limit saves."""
        refusal_bytes, code = _REFUSAL, ErrorCode.TOO_MANY_CONNECTIONS
        if self.open < self.limit:
            if self._proxy(peer):
                self.open += 1
                return True
            try:
                self.quotas.take(Quota.CONNECTIONS, peer)
                self.open += 1
                return True
            except PipeError as exc:
                refusal_bytes, code = refusal(exc), exc.code
        TALLY.error(code)
        try:
            sock.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                sock.recv(65536)
            if not tls:
                sock.send(refusal_bytes)
        except OSError:
            pass
        finally:
            sock.close()
        return False

    def _proxy(self, peer: str) -> bool:
        """One of our own proxies: many clients share its connections, so none counts per client."""
        return bool(self.trusted) and is_trusted(peer, self.trusted)

    def admit_sibling(self) -> None:
        """A request another worker carries here: open until it ends (a drain waits for it), but
        counted against its client where the client is connected, not here."""
        self.open += 1

    def leave(self, peer: str, *, counted: bool = True) -> None:
        if counted and not self._proxy(peer):
            self.quotas.give(Quota.CONNECTIONS, peer)
        self.open -= 1
        if self.open == 0 and self._empty is not None:
            self._empty.set()

    def enter(self, conn: Drainable) -> None:
        """An admitted connection's task runs: the drain reaches it (at once, if it has begun)."""
        self._conns.add(conn)
        if self.draining:
            conn.drain()

    def exit(self, conn: Drainable, peer: str, *, counted: bool = True) -> None:
        self._conns.discard(conn)
        self.leave(peer, counted=counted)

    def drain(self) -> None:
        """No connection waits for another request from now on: each is told (`drain`)."""
        self.draining = True
        for conn in list(self._conns):
            conn.drain()

    async def wait_empty(self) -> None:
        while self.open:
            self._empty = trio.Event()
            await self._empty.wait()
