# The server: listeners, the accept loop, one task per connection, the drain; `serve` runs until drained.
# Invariant: every connection task closes its socket in `finally`; all tasks live in serve's nursery.
from __future__ import annotations

import contextlib
import errno
import logging
import math
import socket

import trio

from ..config import Config
from ..core.clients import client_address
from ..core.replies import preflight_reply
from ..core.routing import Play, Preflight, Receive, Send, ServePage, Watch, route
from ..errors import PipeError
from .connection import CloseMode, HttpConnection
from .gate import Gate
from .hub import Hub
from .libc import tune_malloc
from .service import page_reply, progress_page_reply, video_page_reply

log = logging.getLogger("pipe_relay")


async def serve(
    config: Config,
    *,
    hub: Hub | None = None,
    task_status: trio.TaskStatus[list[trio.SocketListener]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run a pipe-relay server; `task_status.started(listeners)` once it accepts connections.

    `hub` lets an embedding program (or a test) observe the rendezvous state.
    """
    tune_malloc()
    # trio binds (addresses, SO_REUSEADDR, backlog); we accept from the stdlib sockets ourselves.
    sockets = [
        socket.socket(fileno=lst.socket.detach())
        for lst in await trio.open_tcp_listeners(config.port, host=config.host)
    ]
    for sock in sockets:
        _defer_accept(sock, config.header_timeout)
    listeners = [trio.SocketListener(trio.socket.from_stdlib_socket(sock)) for sock in sockets]
    hub = hub or Hub(config)
    gate = Gate(config.max_connections, hub.quotas, hub.trusted)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(hub.run)
            async with trio.open_nursery() as accepting:  # (connections live in `nursery`)
                for sock in sockets:
                    accepting.start_soon(_accept_loop, sock, hub, gate, nursery)
                task_status.started(listeners)
                await hub.drain_started.wait()
                accepting.cancel_scope.cancel()
            await _drain(config, gate, sockets)
            nursery.cancel_scope.cancel()  # what is left past the drain timeout is cut (reset)
    finally:
        for sock in sockets:
            sock.close()


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


def _defer_accept(sock: socket.socket, seconds: float) -> None:
    """Linux: wake `accept` only once a connection's first bytes are in (its head is usually whole
    by then), so a new connection costs no wait and no epoll registration before its first read.
    Connections silent this long are accepted anyway and meet the head deadline as usual."""
    option = getattr(socket, "TCP_DEFER_ACCEPT", None)
    if option is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, option, max(1, math.ceil(seconds)))


ACCEPT_BATCH = 32
"""Connections accepted in a row before other tasks get a turn."""
_ACCEPT_RESOURCE_ERRORS = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}
ACCEPT_BACKOFF = 0.1
ACCEPT_LOG_INTERVAL = 1.0
"""Accept failures (out of descriptors) are logged at most this often."""


async def _accept_loop(listener: socket.socket, hub: Hub, gate: Gate, nursery: trio.Nursery) -> None:
    """Accept connections (several per wake-up) and run each in its own task.

    A plain non-blocking socket rather than trio's stream objects: a connection costs one accept,
    one ioctl and one setsockopt here, and its task owns the socket from then on.
    """
    accepted = 0
    next_log = -math.inf
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
        peer = str(address[0]) if address else ""
        if not gate.admit(sock, peer):
            continue
        try:
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            sock.close()
            continue
        nursery.start_soon(handle_connection, sock, peer, hub, gate)
        accepted += 1
        if accepted >= ACCEPT_BATCH:
            accepted = 0
            await trio.lowlevel.checkpoint()


async def handle_connection(sock: socket.socket, peer: str, hub: Hub, gate: Gate) -> None:
    conn = HttpConnection(sock, hub.config, peer)
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
        gate.leave(peer)


async def _serve_requests(conn: HttpConnection, hub: Hub, gate: Gate) -> None:
    config = hub.config
    while True:
        with gate.idle(conn) as waiting:
            try:
                request = await conn.read_request()
            except PipeError as exc:
                await conn.send_raw_error(exc)
                return
        if request is None or waiting.cancelled_caught:
            return
        origin = request.header("origin")
        client = client_address(conn.peer, request.header("x-forwarded-for"), hub.trusted)
        try:
            decision = route(
                request,
                max_path_length=config.max_path_length,
                max_receivers=config.max_receivers,
            )
        except PipeError as exc:
            await conn.send_error(exc, origin)
        else:
            if isinstance(decision, Send):
                await hub.serve_sender(conn, request, decision, client)
                return
            if isinstance(decision, Receive):
                await hub.serve_receiver(conn, request, decision, client)
                return
            if isinstance(decision, Watch) and not decision.html:
                await hub.serve_watcher(conn, request, decision.key, client)
                return
            if isinstance(decision, Preflight):
                private = request.header("access-control-request-private-network") == "true"
                await conn.send_reply(preflight_reply(origin=origin, private_network=private))
            elif isinstance(decision, Watch):
                await conn.send_reply(progress_page_reply(decision, request))
            elif isinstance(decision, Play):
                await conn.send_reply(video_page_reply(decision, request))
            elif isinstance(decision, ServePage):
                await conn.send_reply(page_reply(decision, request, conn.peer, draining=hub.draining))
        if gate.draining or not conn.next_cycle():
            return
