# The server: listeners, the accept loop, one task per connection, the drain; `serve` runs until drained.
# Invariant: every connection task closes its socket in `finally`; all tasks live in serve's nursery.
from __future__ import annotations

import errno
import logging
import math
import socket
from typing import Any

import trio

from ..config import Config
from .connection import HttpConnection
from .gate import Gate
from .hub import Hub
from .libc import tune_malloc
from .link import CloseMode
from .listen import Listener, defer_accept, listen_admin, listen_tcp, listen_unix, remove_unix
from .respond import handle_connection, serve_requests
from .tls import Certificates
from .workers import Siblings, read_preamble

log = logging.getLogger("pipe_relay")


async def serve(
    config: Config,
    *,
    hub: Hub | None = None,
    siblings: Siblings | None = None,
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
    unix_file: tuple[int, int] | None = None
    admin: list[socket.socket] = []
    if siblings is not None:  # a worker: the supervisor bound the listeners, we share them
        spec = siblings.spec
        plain = [socket.socket(fileno=fd) for fd in (*spec.plain, *spec.unix)]
        secure = [socket.socket(fileno=fd) for fd in spec.secure]
        admin = [socket.socket(fileno=fd) for fd in spec.admin]
        sockets = plain + secure
    else:  # We bind (addresses, SO_REUSEADDR, backlog, dual-stack `::`) and accept from stdlib sockets.
        plain = await listen_tcp(config, config.port) if config.http else []
        secure = []
        sockets = plain
    try:
        if siblings is None and config.https_port is not None:
            secure = await listen_tcp(config, config.https_port, tls=True)
            sockets = plain + secure
        if siblings is None and config.unix_path:
            unix_sock, unix_file = listen_unix(config.unix_path, config.unix_mode)
            sockets.append(unix_sock)
        for sock in sockets:
            sock.setblocking(False)
            defer_accept(sock, config.header_timeout)
        if siblings is None and config.admin_port is not None:
            admin = await listen_admin(config)
        listeners = [Listener(trio.socket.from_stdlib_socket(sock), tls=sock in secure) for sock in sockets]
        listeners += [Listener(trio.socket.from_stdlib_socket(sock), admin=True) for sock in admin]
        hub = hub or Hub(config)
        gate = Gate(config.max_connections, hub.quotas, hub.trusted)
        async with trio.open_nursery() as nursery:
            await nursery.start(hub.run)
            if admin:  # (Hypercorn and prometheus-client are imported only for it; it ends at the drain)
                from .admin import serve_admin

                await nursery.start(serve_admin, config, hub, admin, siblings)
            async with trio.open_nursery() as accepting:  # (connections live in `nursery`)
                for sock in sockets:
                    tls = certificates if sock in secure else None
                    accepting.start_soon(_accept_loop, sock, hub, gate, nursery, tls, siblings)
                if siblings is not None:
                    await accepting.start(_take_from_siblings, siblings, hub, gate, nursery)
                task_status.started(listeners)
                await hub.drain_started.wait()
                accepting.cancel_scope.cancel()
            await _drain(config, gate, sockets)
            nursery.cancel_scope.cancel()  # what is left past the drain timeout is cut (reset)
    finally:
        for sock in (*sockets, *admin):
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
    listener: socket.socket,
    hub: Hub,
    gate: Gate,
    nursery: trio.Nursery,
    tls: Certificates | None = None,
    siblings: Siblings | None = None,
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
        nursery.start_soon(handle_connection, sock, peer, hub, gate, tls, None, siblings)
        accepted += 1
        if accepted >= ACCEPT_BATCH:
            accepted = 0
            await trio.lowlevel.checkpoint()


def _ip(address: Any) -> str:
    """A TCP peer's address; an IPv4 client of the dual-stack `::` (`::ffff:192.0.2.1`) as plain IPv4,
    so its logs and limits read as they do on an IPv4 listener."""
    host = str(address[0]) if address else ""
    return host[7:] if host.startswith("::ffff:") and "." in host else host


async def _take_from_siblings(
    siblings: Siblings,
    hub: Hub,
    gate: Gate,
    nursery: trio.Nursery,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """A worker's inboxes: connections its siblings hand over, requests they carry here."""

    def take(sock: socket.socket, peer: str, received: bytes) -> None:
        if gate.admit(sock, peer):
            nursery.start_soon(handle_connection, sock, peer, hub, gate, None, received, siblings)

    async def carried(sock: socket.socket) -> None:
        await _serve_carried(sock, hub, gate)

    await siblings.run_inboxes(take, carried, nursery, task_status=task_status)


async def _serve_carried(sock: socket.socket, hub: Hub, gate: Gate) -> None:
    """One request a sibling carries here for its client (named on the connection's first line);
    its connection was counted against the client's limits where the client is connected."""
    deadline = trio.current_time() + hub.config.header_timeout
    gate.admit_sibling()
    conn: HttpConnection | None = None
    try:
        first = await read_preamble(sock, deadline)
        if first is None:
            return
        peer, protocol, received = first
        secure = protocol in ("tls", "h2")  # (a TLS client's request: HTTPS links, Secure cookies...)
        conn = HttpConnection(
            sock, hub.config, peer, head_deadline=deadline, received=received, secure=secure
        )
        conn.exchange.protocol = protocol  # (as its client speaks it, for the access log and the API)
        gate.enter(conn)
        try:
            await serve_requests(conn, hub, gate)
        except trio.Cancelled:
            conn.close_mode = CloseMode.ABORT
            raise
        except ConnectionError:
            pass
        except Exception:
            log.exception("internal error on a request carried for %s", conn.peer)
            conn.close_mode = CloseMode.ABORT
        finally:
            await conn.close()
    finally:
        if conn is None:
            sock.close()
            gate.leave("", counted=False)
        else:
            gate.exit(conn, "", counted=False)
