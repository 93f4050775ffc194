# One connection's protocol (HTTP/1.1, HTTP/2 by ALPN or prior knowledge) and the answer to each request.
# Invariant: a request reaches the hub, a page, or the worker that owns its pipe: exactly one of them.
from __future__ import annotations

import contextlib
import dataclasses
import logging
import socket
import struct
from functools import partial

import trio

from ..core.clients import client_address
from ..core.http2 import preface_seen
from ..core.owners import early_key, pipe_key
from ..core.policy import Policy, Verdict
from ..core.quotas import Quota
from ..core.replies import Reply, preflight_reply
from ..core.routing import Decision, Play, Preflight, Receive, Request, Send, ServePage, Watch, route
from ..errors import ErrorCode, PipeError, pipe_error
from .carry import carry
from .connection import READ_SIZE, HttpConnection
from .gate import Gate
from .http2 import Http2Connection, Http2Stream
from .hub import Hub
from .link import LINGER_TIMEOUT, CloseMode, Responder, Role
from .service import page_reply, progress_page_reply, video_page_reply
from .telemetry import TALLY, Exchange, log_exchange, pipe_id
from .tls import Certificates, TlsSocket, handshake
from .workers import Siblings, owner_unavailable

log = logging.getLogger("pipe_relay")


async def handle_connection(
    sock: socket.socket,
    peer: str,
    hub: Hub,
    gate: Gate,
    tls: Certificates | None = None,
    received: bytes | None = None,
    siblings: Siblings | None = None,
) -> None:
    """One connection's task: (its TLS handshake,) its protocol (ALPN, or the HTTP/2 preface on the
    plain port), its requests, its close; all of it under the head deadline counted from the accept.
    `received`: an HTTP/1.1 connection another worker handed over, with what it read of it."""
    deadline = trio.current_time() + hub.config.header_timeout
    conn_sock: socket.socket | TlsSocket = sock
    first = b""
    handed_over = False  # (then the protocol's own code closes the socket and leaves the gate)
    try:
        if tls is not None:
            secured = await handshake(sock, tls, deadline)  # (closes the socket if it fails)
            if secured is None:
                return
            conn_sock = secured
            http2 = secured.alpn == "h2"
        elif received is not None:
            first, http2 = received, False
        else:
            first = await _first_bytes(sock, deadline)
            http2 = preface_seen(first) is True
        handed_over = True
    finally:
        if not handed_over:
            conn_sock.close()
            gate.leave(peer)
    accepted_here = received is None and tls is None  # (a plain connection this worker accepted)
    if (
        accepted_here
        and not http2
        and siblings is not None
        and await _moved_early(sock, first, peer, hub, gate, siblings)
    ):
        return
    if http2:
        protocol = "h2" if tls is not None else "h2c"
    else:
        protocol = "tls" if tls is not None else "unix" if peer.startswith("unix:") else "http1"
    TALLY.connection(protocol, 1)
    try:
        if http2:
            connection = Http2Connection(
                conn_sock,
                hub.config,
                peer,
                partial(_answer, hub, peer, siblings),
                head_deadline=deadline,
                received=first,
            )
            del first  # (see below)
            await _serve_http2(connection, gate)
            return
        conn = HttpConnection(conn_sock, hub.config, peer, head_deadline=deadline, received=first)
        conn.exchange.protocol = protocol
        # `first` is the connection's now, which lets go of it once parsed; this frame lives as long
        # as the connection: kept here, a waiting client's whole first read would stay held (1,000
        # heads: 58 MiB).
        del first
        gate.enter(conn)
        try:
            await serve_requests(conn, hub, gate, siblings)
        except trio.Cancelled:
            conn.close_mode = CloseMode.ABORT  # the server stops: a cut transfer must never look complete
            raise
        except ConnectionError:
            pass  # the peer went away mid-reply: nothing left to tell it
        except Exception:
            # A bug in one connection must not end every other transfer: log it, drop this one.
            log.exception("internal error on connection from %s", conn.peer)
            conn.close_mode = CloseMode.ABORT
        finally:
            await conn.close()
            gate.exit(conn, peer)
    finally:
        TALLY.connection(protocol, -1)


async def _first_bytes(sock: socket.socket, deadline: float) -> bytes:
    """A plain connection's first bytes, enough to tell the HTTP/2 preface (prior knowledge, h2c)
    from an HTTP/1.x head (one read, as a rule: TCP_DEFER_ACCEPT accepted it with its bytes in).
    b"" at the client's end or past the deadline; the HTTP/1.1 path takes what came, as its own
    first read, so an HTTP/1.1 request (even one saying `HTTP/2.0`) reaches h11 untouched."""
    data = b""
    while True:
        try:
            chunk = sock.recv(READ_SIZE)
        except BlockingIOError:
            chunk = None
        except OSError:
            return data
        if chunk is not None:
            data += chunk
            if not chunk or preface_seen(data) is not None:
                return data
        with trio.move_on_at(deadline):
            await trio.lowlevel.wait_readable(sock)
            continue
        return data


async def _moved_early(
    sock: socket.socket, first: bytes, peer: str, hub: Hub, gate: Gate, siblings: Siblings
) -> bool:
    """A plain connection whose first request line names a pipe another worker owns moves there at
    once, with what was read of it: its head is parsed, counted and logged there only. False if it
    stays (then its head is read here, and `respond` moves it, or says the owner is unavailable)."""
    if gate.draining:
        return False
    key = early_key(first, max_path_length=hub.config.max_path_length)
    if key is None or siblings.owns(key):
        return False
    try:
        moved = await siblings.hand_off(siblings.owner(key), sock, first, peer)
    except BaseException:  # (cancelled: the server stops, and this connection with it)
        sock.close()
        gate.leave(peer)
        raise
    if moved:
        sock.close()  # (our descriptor only: the owner has the connection)
        gate.leave(peer)
    return moved


async def _answer(
    hub: Hub, peer: str, siblings: Siblings | None, stream: Http2Stream, request: Request
) -> None:
    await respond(stream, request, hub, peer, siblings)


async def _serve_http2(connection: Http2Connection, gate: Gate) -> None:
    sock, peer = connection.sock, connection.peer
    gate.enter(connection)
    abort = False
    try:
        await connection.serve()
        await connection.drain_out(LINGER_TIMEOUT)
        abort = connection.close_mode is CloseMode.ABORT
    except trio.Cancelled:
        abort = True  # the server stops: a cut transfer must never look complete
        raise
    except Exception:
        log.exception("internal error on an HTTP/2 connection from %s", peer)
        abort = True
    finally:
        with contextlib.suppress(OSError):
            if abort:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET)
            elif isinstance(sock, TlsSocket) and connection.ended_for is None:
                sock.close_notify()
        sock.close()
        gate.exit(connection, peer)


_RESET = struct.pack("ii", 1, 0)


async def serve_requests(
    conn: HttpConnection, hub: Hub, gate: Gate, siblings: Siblings | None = None
) -> None:
    while True:
        if gate.draining and conn.idle:
            return  # (a drain closes connections between requests)
        try:
            request = await conn.read_request()
        except PipeError as exc:
            conn.exchange = Exchange(conn.exchange.protocol, conn.peer, began=trio.current_time())
            await conn.send_raw_error(exc)
            log_exchange(conn.exchange)
            return
        if request is None:
            return
        if await respond(conn, request, hub, conn.peer, siblings):
            return
        if gate.draining or not conn.next_cycle():
            return
        await trio.lowlevel.checkpoint()  # (pipelined requests: one a turn, so no client holds the loop)


async def respond(
    front: Responder, request: Request, hub: Hub, peer: str, siblings: Siblings | None = None
) -> bool:
    """Answer one request on any front end (an HTTP/1.1 connection, an HTTP/2 stream). True if a
    pipe party or a watcher took it (or the worker that owns its pipe did): then nothing more is
    read on an HTTP/1.1 connection. Then its line goes to the access log. (One coroutine from the
    request to the hub: every layer more is one more frame each resumption of the task goes through.)"""
    config = hub.config
    access = hub.access
    if access is not None:
        request = _cors_checked(request, config.cors_origins)
    client = client_address(peer, request.joined("x-forwarded-for"), hub.trusted)
    exchange = front.exchange = Exchange(
        front.exchange.protocol,
        client,
        request.method,
        agent=request.header("user-agent") or "",
        worker=None if siblings is None else siblings.index,
        began=trio.current_time(),
    )
    try:
        decision: Decision | PipeError
        try:
            decision = route(
                request, max_path_length=config.max_path_length, max_receivers=config.max_receivers
            )
        except PipeError as exc:
            decision = exc
        key = pipe_key(decision)
        if key is not None:
            exchange.pipe = key if config.log_paths else pipe_id(key)
        if siblings is not None and key is not None and not siblings.owns(key):
            exchange.logged = True  # (the owner tells it: the bytes and the end are known there)
            await _to_owner(front, request, decision, hub, peer, siblings, siblings.owner(key))
            return True
        TALLY.request()  # (here, where it is answered: a request moved or carried is counted there)
        if access is not None and key is not None:  # (a party or watcher: what a policy governs)
            action = "send" if isinstance(decision, Send) else "receive"  # (?progress: as receiving)
            authorization = request.header("authorization")
            fine, user = (True, None) if authorization is None else await access.user(authorization)
            decision = _refusal(access.policy, key, action, fine, user, exchange) or decision
        if isinstance(decision, Send):
            _serving(front, Role.SENDER)
            await hub.serve_sender(front, request, decision, client)
            return True
        if isinstance(decision, Receive):
            _serving(front, Role.RECEIVER)
            await hub.serve_receiver(front, request, decision, client)
            return True
        if isinstance(decision, Watch) and not decision.html:
            _serving(front, Role.WATCHER)
            await hub.serve_watcher(front, request, decision.key, client)
            return True
        await _answer_page(front, request, decision, hub, client, siblings)
        return False
    finally:
        log_exchange(exchange)


_CHALLENGE = ("WWW-Authenticate", 'Basic realm="pipe-relay", charset="UTF-8"')


def _cors_checked(request: Request, allowed: tuple[str, ...]) -> Request:
    """With a policy, a page on another site could ride a visitor's stored credentials (a browser
    sends them with a form's POST, or a fetch's): only the origins of `--cors-origins` are answered
    with credentials; any other is answered as a request without an Origin (`Access-Control-Allow-
    Origin: *`, no credentials), and its credentials are not used (unless it is this server's own
    origin, its host the Host header: the web UI), so it is an anonymous party."""
    origin = request.header("origin")
    if origin is None or origin in allowed:
        return request
    own = origin.partition("://")[2].lower() == (request.header("host") or "").lower()
    dropped = ("origin",) if own else ("origin", "authorization")
    return dataclasses.replace(request, headers=tuple((n, v) for n, v in request.headers if n not in dropped))


def _refusal(
    policy: Policy, key: str, action: str, fine: bool, user: str | None, exchange: Exchange
) -> PipeError | None:
    """With a policy: None if the party may `action` on the pipe `key`, else its refusal (401 or
    403); `fine`, `user`: what its credentials said (`Access.user`). (The common party, with no
    credentials, costs no coroutine.)"""
    if not fine:
        return pipe_error(ErrorCode.AUTH_FAILED, _CHALLENGE)
    exchange.user = user or ""
    verdict = policy.decide(key, action, user)
    if verdict is Verdict.ALLOW:
        return None
    if verdict is Verdict.NEED_USER:
        return pipe_error(ErrorCode.AUTH_REQUIRED, _CHALLENGE, action=action)
    return pipe_error(ErrorCode.FORBIDDEN, user=user, action=action)


async def _answer_page(
    front: Responder,
    request: Request,
    decision: Decision | PipeError,
    hub: Hub,
    client: str,
    siblings: Siblings | None,
) -> None:
    """A page, a preflight or an error: one small reply, within the client's quota of them."""
    origin = request.header("origin")
    _serving(front, Role.PAGE)
    try:
        hub.quotas.take(Quota.PAGES, client)  # (a reply held by a client that does not read counts)
    except PipeError as exc:
        await front.send_error(exc, origin)
        return
    try:
        if isinstance(decision, PipeError):
            await front.send_error(decision, origin)
        else:
            await front.send_reply(_page(decision, request, hub, client, siblings))
    finally:
        hub.quotas.give(Quota.PAGES, client)


def _serving(front: Responder, role: Role) -> None:
    front.serving(role)
    front.exchange.role = role.value


async def _to_owner(
    front: Responder,
    request: Request,
    decision: Decision | PipeError,
    hub: Hub,
    peer: str,
    siblings: Siblings,
    owner: int,
) -> None:
    """A pipe's party (or watcher) reached a worker that does not own the pipe: a plain connection
    moves to the owner (its descriptor, with the head read from it); a TLS connection or an HTTP/2
    stream cannot, and has its request carried there."""
    if isinstance(front, HttpConnection) and not isinstance(front.sock, TlsSocket):
        if await siblings.hand_off(owner, front.sock, front.head_bytes + front.body_prefix, peer):
            front.handed_off = True
            return
        await front.send_error(owner_unavailable(), request.header("origin"), last=True)
        return
    sender = isinstance(decision, Send)
    front.serving(Role.SENDER if sender else Role.RECEIVER)
    await carry(
        front,
        request,
        siblings=siblings,
        owner=owner,
        peer=peer,
        protocol=front.exchange.protocol,
        has_body=sender,
        config=hub.config,
    )


def _page(decision: Decision, request: Request, hub: Hub, client: str, siblings: Siblings | None) -> Reply:
    """The whole reply to a request that is not a pipe's party nor a watcher."""
    origin = request.header("origin")
    if isinstance(decision, Preflight):
        private = request.header("access-control-request-private-network") == "true"
        return preflight_reply(origin=origin, private_network=private)
    if isinstance(decision, Watch):
        return progress_page_reply(decision, request)
    if isinstance(decision, Play):
        return video_page_reply(decision, request)
    assert isinstance(decision, ServePage), decision
    worker = None if siblings is None else siblings.facts()
    return page_reply(
        decision,
        request,
        client,
        draining=hub.draining,
        max_receivers=hub.config.max_receivers,
        worker=worker,
        policy=hub.access is not None,
    )
