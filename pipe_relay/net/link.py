# The seam between the hub/relay and a front end: what a party's connection offers (Link, Stream, Body).
# Invariant: hub, relay and progress reach a client only through these protocols, never through a socket.
"""A front end (the HTTP/1.1 socket of `connection`, and the TLS socket or HTTP/2 stream to come, an
in-memory one in the unit tests) makes parties by implementing `Link`; the hub and the relay do not
change. Fast paths stay capabilities of one implementation: the splice engine takes a `SocketBody`
source and sinks whose writer has a `splice_fd`, and falls back to the buffer engine otherwise."""

from __future__ import annotations

import enum
import socket
from collections.abc import Callable, Sequence
from typing import Protocol

import trio

from ..core.replies import Reply
from ..core.routing import Request
from ..errors import PipeError
from .engine import Sink, Source
from .telemetry import Exchange

Headers = Sequence[tuple[str, str]]
WRITE_TIMEOUT = 30.0
"""A reply or a status line that cannot go out within this many seconds: its client is given up on."""
LINGER_TIMEOUT = 2.0
"""How long a closing connection may still flush or read and drop before it closes."""


class Socket(Protocol):
    """What `linger` needs of a socket (a plain one or a TLS one)."""

    def fileno(self) -> int: ...

    def shutdown(self, how: int, /) -> None: ...

    def recv(self, size: int, /) -> bytes: ...


async def linger(sock: Socket, *, limit: int, seconds: float = LINGER_TIMEOUT) -> None:
    """Half-close, then read and drop what the peer still sends (up to `limit` bytes, `seconds`), so
    that it reads what we sent last (a reply, a GOAWAY) rather than lose it to the reset that a close
    with unread bytes sends. Raises OSError for a socket that is already broken."""
    with trio.move_on_after(seconds):
        sock.shutdown(socket.SHUT_WR)
        dropped = 0
        while dropped < limit:
            try:
                data = sock.recv(256 * 1024)
            except BlockingIOError:
                await trio.lowlevel.wait_readable(sock)
                continue
            if not data:
                return
            dropped += len(data)


class CloseMode(enum.Enum):
    """How a party's connection (or stream) ends once its task is done with it."""

    NORMAL = "normal"
    LINGER = "linger"
    """The peer may still be sending: half-close, read and drop for a while, then close."""
    ABORT = "abort"
    """Reset: the peer must see the transfer fail, never a clean end."""


class Role(enum.Enum):
    """What a request turned out to be, as the front end is told once it is routed."""

    PAGE = "page"
    """A whole small reply (a page, an error, a preflight): its request body is not read."""
    SENDER = "sender"
    """A pipe's sender: the one role whose request body is read."""
    RECEIVER = "receiver"
    WATCHER = "watcher"
    """A `?progress` event stream."""


class Stream(Protocol):
    """A 200 response sent in pieces: a sender's status lines, a watcher's events."""

    async def send(self, data: bytes, *, end: bool = False) -> bool:
        """Send `data` (the response head goes first, with the first call); `end`: and finish the
        response. False if the client is gone or stalls."""
        ...


class Body(Source, Protocol):
    """A sender's request body as the relay reads it."""

    @property
    def complete_in_prefix(self) -> bool:
        """Did the whole body come with the head (no wait for more)?"""
        ...

    def release(self) -> None:
        """The transfer no longer reads the body (done or given up)."""
        ...

    async def drain(self, *, limit: int, seconds: float) -> None:
        """Read and drop what is left of the body, within a byte and time budget."""
        ...


class Link(Protocol):
    """A party's connection as the hub, the relay and the watchers see it."""

    close_mode: CloseMode
    """How it ends when its task lets go (the last writer decides: the hub or the relay)."""
    exchange: Exchange
    """The request, as the access log tells it (its front end and the transfer fill it in)."""

    @property
    def hangup_fd(self) -> int | None:
        """A descriptor whose hang-up epoll reports (EPOLLRDHUP) while the party waits, or None
        (then waiting parties look at `peer_closed` on every tick)."""
        ...

    def peer_closed(self) -> bool:
        """Has the client closed or reset its side?"""
        ...

    async def still_there(self) -> bool:
        """After a status line to a waiting party: is its client still there? A client that left
        may not have been seen to (its close queued behind body bytes we do not read yet); its
        answer to what we just sent says, within a couple of round trips. False: it is gone."""
        ...

    def on_gone(self, callback: Callable[[], None]) -> None:
        """Have `callback` called once the link learns by itself that its client left (an HTTP/2
        reset); a link with a `hangup_fd` leaves that to epoll and may never call it."""
        ...

    async def wait_gone(self) -> None:
        """Return once the client sends anything or leaves (a watcher sends nothing after its head)."""
        ...

    async def send_error(self, error: PipeError, origin: str | None, *, last: bool = False) -> None:
        """Reject the request with the error's status, `X-Pipe-Error` and `[ERROR]` line."""
        ...

    def open_stream(
        self, request: Request, content_type: str, *, extra: Headers = (), answer_continue: bool = False
    ) -> Stream:
        """The streamed 200 response to `request` (`answer_continue`: first answer its
        `Expect: 100-continue`, where the protocol has one)."""
        ...

    def open_body(self, request: Request, *, buffer_size: int, idle_timeout: float) -> Body:
        """The request's body, read in steps of at most `buffer_size` (SENDER_IDLE after `idle_timeout`)."""
        ...

    def open_response(
        self,
        request: Request,
        content_length: int | None,
        headers: Callable[[Headers], Headers],
        *,
        status: int = 200,
    ) -> Sink:
        """A receiver's response (200, or `status` for a reply carried from another worker) for a
        body of `content_length` (None: unknown), framed as this protocol frames it;
        `headers(framing_headers)` makes its header list."""
        ...


class Responder(Link, Protocol):
    """A front end's answer to any request: a party's Link, and small whole replies (pages, errors)."""

    def serving(self, role: Role) -> None:
        """The request was routed to `role`: a front end that holds request bodies drops what comes
        for any other role than a sender's, and counts abuse by it (HTTP/2: streams that are not
        parties have a budget)."""
        ...

    async def send_reply(self, reply: Reply) -> None:
        """Send a complete small response (headers only, for a HEAD request)."""
        ...

    async def answer_continue(self, request: Request) -> None:
        """Answer the request's `Expect: 100-continue` now (where the protocol has one): its body
        is wanted (by the worker it is carried to)."""
        ...
