# The server: listeners, the accept loop, one task per connection, the drain; `serve` runs until drained.
# Invariant: every connection task closes its socket in `finally`; all tasks live in serve's nursery.
from __future__ import annotations

import contextlib
import errno
import logging
import math
import socket
import struct
from functools import partial
from typing import Any

import trio

from ..config import Config
from ..core.clients import client_address
from ..core.http2 import preface_seen
from ..core.quotas import Quota
from ..core.replies import Reply, preflight_reply
from ..core.routing import Decision, Play, Preflight, Receive, Request, Send, ServePage, Watch, route
from ..errors import PipeError
from .connection import READ_SIZE, HttpConnection
from .gate import Gate
from .http2 import Http2Connection, Http2Stream
from .hub import Hub
from .libc import tune_malloc
from .link import LINGER_TIMEOUT, CloseMode, Responder, Role
from .listen import Listener, defer_accept, listen_tcp, listen_unix, remove_unix
from .service import page_reply, progress_page_reply, video_page_reply
from .tls import Certificates, TlsSocket, handshake

log = logging.getLogger("pipe_relay")


async def serve(
    config: Config,
    *,
    hub: Hub | None = None,
    task_status: trio.TaskStatus[list[Listener]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run a pipe-relay server; `task_status.started(listeners)` once it accepts connections (plain
    HTTP ones first, then HTTPS, then the Unix socket).

    `hub` lets an embedding program (or a test) observe the rendezvous state. A listener that
    cannot be made raises ListenError, a certificate that cannot be loaded CertificateError, and
    then nothing stays bound.
    """
    tune_malloc()
    certificates = Certificates(config.crt_path, config.key_path) if config.https_port is not None else None
    # We bind (addresses, SO_REUSEADDR, backlog, dual-stack `::`) and accept from stdlib sockets.
    plain = await listen_tcp(config, config.port) if config.http else []
    secure: list[socket.socket] = []
    sockets = plain
    unix_file: tuple[int, int] | None = None
    try:
        if config.https_port is not None:
            secure = await listen_tcp(config, config.https_port, tls=True)
            sockets = plain + secure
        if config.unix_path:
            unix_sock, unix_file = listen_unix(config.unix_path, config.unix_mode)
            sockets.append(unix_sock)
        for sock in sockets:
            defer_accept(sock, config.header_timeout)
        listeners = [Listener(trio.socket.from_stdlib_socket(sock), tls=sock in secure) for sock in sockets]
        hub = hub or Hub(config)
        gate = Gate(config.max_connections, hub.quotas, hub.trusted)
        async with trio.open_nursery() as nursery:
            await nursery.start(hub.run)
            async with trio.open_nursery() as accepting:  # (connections live in `nursery`)
                for sock in sockets:
                    tls = certificates if sock in secure else None
                    accepting.start_soon(_accept_loop, sock, hub, gate, nursery, tls)
                task_status.started(listeners)
                await hub.drain_started.wait()
                accepting.cancel_scope.cancel()
            await _drain(config, gate, sockets)
            nursery.cancel_scope.cancel()  # what is left past the drain timeout is cut (reset)
    finally:
        for sock in sockets:
            sock.close()
        if unix_file is not None:
            remove_unix(config.unix_path, unix_file)


async def _drain(config: Config, gate: Gate, sockets: list[socket.socket]) -> None:
    """After `hub.drain()`: accept no more, close idle connections, let the rest end in time."""
    for sock in sockets:
        sock.close()
    gate.drain()
    log.info("draining: %d connection(s) open; waiting up to %g s", gate.open, config.drain_timeout)
    with trio.move_on_after(config.drain_timeout) as waited:
        await gate.wait_empty()
    if waited.cancelled_caught:
        log.warning("drain timeout: cutting %d connection(s)", gate.open)


ACCEPT_BATCH = 32
"""Connections accepted in a row before other tasks get a turn."""
_ACCEPT_RESOURCE_ERRORS = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}
ACCEPT_BACKOFF = 0.1
ACCEPT_LOG_INTERVAL = 1.0
"""Accept failures (out of descriptors) are logged at most this often."""


async def _accept_loop(
    listener: socket.socket, hub: Hub, gate: Gate, nursery: trio.Nursery, tls: Certificates | None = None
) -> None:
    """Accept connections (several per wake-up) and run each in its own task.

    A plain non-blocking socket rather than trio's stream objects: a connection costs one accept,
    one ioctl and one setsockopt here, and its task owns the socket from then on.
    """
    accepted = 0
    next_log = -math.inf
    unix = listener.family == socket.AF_UNIX  # one client, the socket, and no TCP options
    unix_peer = f"unix:{hub.config.unix_path}"
    while True:
        try:
            sock, address = listener.accept()
        except BlockingIOError:
            accepted = 0
            await trio.lowlevel.wait_readable(listener)
            continue
        except OSError as exc:
            if exc.errno in _ACCEPT_RESOURCE_ERRORS:
                if trio.current_time() >= next_log:
                    log.error("accept failed (%s); retrying in %.1f s", exc.strerror, ACCEPT_BACKOFF)
                    next_log = trio.current_time() + ACCEPT_LOG_INTERVAL
                await trio.sleep(ACCEPT_BACKOFF)
            continue  # ECONNABORTED and the like: that client is gone already
        peer = unix_peer if unix else _ip(address)
        if not gate.admit(sock, peer, tls=tls is not None):
            continue
        try:
            sock.setblocking(False)
            if not unix:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            sock.close()
            continue
        nursery.start_soon(handle_connection, sock, peer, hub, gate, tls)
        accepted += 1
        if accepted >= ACCEPT_BATCH:
            accepted = 0
            await trio.lowlevel.checkpoint()


def _ip(address: Any) -> str:
    """A TCP peer's address; an IPv4 client of the dual-stack `::` (`::ffff:192.0.2.1`) as plain IPv4,
    so its logs and limits read as they do on an IPv4 listener."""
    host = str(address[0]) if address else ""
    return host[7:] if host.startswith("::ffff:") and "." in host else host


async def handle_connection(
    sock: socket.socket, peer: str, hub: Hub, gate: Gate, tls: Certificates | None = None
) -> None:
    """One connection's task: (its TLS handshake,) its protocol (ALPN, or the HTTP/2 preface on the
    plain port), its requests, its close; all of it under the head deadline counted from the accept."""
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
        else:
            first = await _first_bytes(sock, deadline)
            http2 = preface_seen(first) is True
        handed_over = True
    finally:
        if not handed_over:
            conn_sock.close()
            gate.leave(peer)
    if http2:
        connection = Http2Connection(
            conn_sock, hub.config, peer, partial(_answer, hub, peer), head_deadline=deadline, received=first
        )
        del first  # (see below)
        await _serve_http2(connection, gate)
        return
    conn = HttpConnection(conn_sock, hub.config, peer, head_deadline=deadline, received=first)
    # `first` is the connection's now, which lets go of it once parsed; this frame lives as long as the
    # connection: kept here, a waiting client's whole first read would stay held (1,000 heads: 58 MiB).
    del first
    gate.enter(conn)
    try:
        await _serve_requests(conn, hub, gate)
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


async def _answer(hub: Hub, peer: str, stream: Http2Stream, request: Request) -> None:
    await respond(stream, request, hub, peer)


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


async def _serve_requests(conn: HttpConnection, hub: Hub, gate: Gate) -> None:
    while True:
        if gate.draining and conn.idle:
            return  # (a drain closes connections between requests)
        try:
            request = await conn.read_request()
        except PipeError as exc:
            await conn.send_raw_error(exc)
            return
        if request is None:
            return
        if await respond(conn, request, hub, conn.peer):
            return
        if gate.draining or not conn.next_cycle():
            return
        await trio.lowlevel.checkpoint()  # (pipelined requests: one a turn, so no client holds the loop)


async def respond(front: Responder, request: Request, hub: Hub, peer: str) -> bool:
    """Answer one request on any front end (an HTTP/1.1 connection, an HTTP/2 stream). True if a
    pipe party or a watcher took it: then nothing more is read on an HTTP/1.1 connection."""
    config = hub.config
    origin = request.header("origin")
    client = client_address(peer, request.header("x-forwarded-for"), hub.trusted)
    decision: Decision | PipeError
    try:
        decision = route(request, max_path_length=config.max_path_length, max_receivers=config.max_receivers)
    except PipeError as exc:
        decision = exc
    if isinstance(decision, Send):
        front.serving(Role.SENDER)
        await hub.serve_sender(front, request, decision, client)
        return True
    if isinstance(decision, Receive):
        front.serving(Role.RECEIVER)
        await hub.serve_receiver(front, request, decision, client)
        return True
    if isinstance(decision, Watch) and not decision.html:
        front.serving(Role.WATCHER)
        await hub.serve_watcher(front, request, decision.key, client)
        return True
    front.serving(Role.PAGE)
    try:
        hub.quotas.take(Quota.PAGES, client)  # (a reply held by a client that does not read counts)
    except PipeError as exc:
        await front.send_error(exc, origin)
        return False
    try:
        if isinstance(decision, PipeError):
            await front.send_error(decision, origin)
        else:
            await front.send_reply(_page(decision, request, hub, peer))
    finally:
        hub.quotas.give(Quota.PAGES, client)
    return False


def _page(decision: Decision, request: Request, hub: Hub, peer: str) -> Reply:
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
    return page_reply(decision, request, peer, draining=hub.draining, max_receivers=hub.config.max_receivers)
