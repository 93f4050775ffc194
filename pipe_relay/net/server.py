# The server: listeners, the accept loop, one task per connection, the drain; `serve` runs until drained.
# Invariant: every connection task closes its socket in `finally`; all tasks live in serve's nursery.
from __future__ import annotations

import contextlib
import errno
import logging
import math
import os
import socket
import stat
from typing import Any

import trio

from ..config import Config
from ..core.clients import client_address
from ..core.replies import preflight_reply
from ..core.routing import Play, Preflight, Receive, Send, ServePage, Watch, route
from ..errors import PipeError
from .connection import HttpConnection
from .gate import Gate
from .hub import Hub
from .libc import tune_malloc
from .link import CloseMode
from .service import page_reply, progress_page_reply, video_page_reply

log = logging.getLogger("pipe_relay")


async def serve(
    config: Config,
    *,
    hub: Hub | None = None,
    task_status: trio.TaskStatus[list[trio.SocketListener]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run a pipe-relay server; `task_status.started(listeners)` once it accepts connections.

    `hub` lets an embedding program (or a test) observe the rendezvous state. A listener that
    cannot be made raises ListenError, and then nothing stays bound.
    """
    tune_malloc()
    # We bind (addresses, SO_REUSEADDR, backlog, dual-stack `::`) and accept from stdlib sockets.
    sockets = await _listen_tcp(config)
    unix_file: tuple[int, int] | None = None
    try:
        if config.unix_path:
            unix_sock, unix_file = _listen_unix(config.unix_path, config.unix_mode)
            sockets.append(unix_sock)
        for sock in sockets:
            _defer_accept(sock, config.header_timeout)
        listeners = [trio.SocketListener(trio.socket.from_stdlib_socket(sock)) for sock in sockets]
        hub = hub or Hub(config)
        gate = Gate(config.max_connections, hub.quotas, hub.trusted)
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
        if unix_file is not None:
            _remove_unix(config.unix_path, unix_file)


class ListenError(OSError):
    """An address the server cannot listen on: `address` as the error line names it
    (`127.0.0.1:8080`, `[::1]:8080`, `unix:/run/pipe-relay.sock`), the OS's errno and reason."""

    def __init__(self, address: str, cause: OSError) -> None:
        super().__init__(cause.errno, cause.strerror or str(cause))
        self.address = address


BACKLOG = 0xFFFF
"""As trio's open_tcp_listeners: the kernel caps it at net.core.somaxconn."""
PORT_DRAWS = 5
"""Port 0 with several addresses: all get the port the first one drew; if one of the others has it
taken, every socket is closed and a new port drawn, this many times at most."""
_NO_IPV6 = {errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL, errno.EPROTONOSUPPORT}
"""What socket() or bind() of `::` says on a host without IPv6: then `0.0.0.0` it is."""


def url_of(sock: socket.socket | trio.socket.SocketType) -> str:
    """A listening socket as the start-up line names it: `http://[::]:8080`, `unix:/path`."""
    if sock.family == socket.AF_UNIX:
        return f"unix:{sock.getsockname()}"
    host, port = sock.getsockname()[:2]
    return f"http://{_hostport(host, port)}"


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def _listen_tcp(config: Config) -> list[socket.socket]:
    """A listening socket for every address of every host, all on one port."""
    addresses: list[tuple[socket.AddressFamily, Any]] = []  # (family, sockaddr)
    for host in config.hosts:
        try:
            found = await trio.socket.getaddrinfo(
                host, config.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
            )
        except OSError as exc:
            raise ListenError(_hostport(host, config.port), exc) from None
        for family, *_, sockaddr in found:
            if (family, sockaddr) not in addresses:  # (a name may list an address twice)
                addresses.append((family, sockaddr))
    # `::` takes IPv4 too (as in Node), unless an IPv4 address is listed, which would then be taken
    dual_stack = socket.AF_INET not in {family for family, _ in addresses}
    for draw in range(1, PORT_DRAWS + 1):
        try:
            return _bind_tcp(addresses, config.port, dual_stack=dual_stack)
        except _PortTaken as taken:
            if draw == PORT_DRAWS:
                raise taken.error from None
    raise AssertionError("unreachable")  # pragma: no cover


class _PortTaken(Exception):
    """A port drawn for the first address is taken on a later one (only with port 0)."""

    def __init__(self, error: ListenError) -> None:
        self.error = error


def _bind_tcp(
    addresses: list[tuple[socket.AddressFamily, Any]], port: int, *, dual_stack: bool
) -> list[socket.socket]:
    sockets: list[socket.socket] = []
    drawn = port == 0
    try:
        for family, sockaddr in addresses:
            host = str(sockaddr[0])
            wildcard = dual_stack and family == socket.AF_INET6 and host == "::"
            try:
                sock = _tcp_listener(family, (host, port, *sockaddr[2:]), dual_stack=wildcard)
            except OSError as exc:
                if not (wildcard and exc.errno in _NO_IPV6):
                    error = ListenError(_hostport(host, port), exc)
                    if drawn and sockets and exc.errno == errno.EADDRINUSE:
                        raise _PortTaken(error) from None
                    raise error from None
                try:  # no IPv6 on this host: the IPv4 wildcard instead (the start-up line says so)
                    sock = _tcp_listener(socket.AF_INET, ("0.0.0.0", port), dual_stack=False)
                except OSError as exc4:
                    raise ListenError(_hostport("0.0.0.0", port), exc4) from None
            sockets.append(sock)
            port = sock.getsockname()[1]
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def _tcp_listener(
    family: socket.AddressFamily, sockaddr: tuple[Any, ...], *, dual_stack: bool
) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0 if dual_stack else 1)
        sock.bind(sockaddr)
        sock.listen(BACKLOG)
    except BaseException:
        sock.close()
        raise
    return sock


def _listen_unix(path: str, mode: int) -> tuple[socket.socket, tuple[int, int]]:
    """A listening Unix socket at `path` with `mode`, and the file's (device, inode) to remove it
    by. A stale socket file there (nobody accepts on it) is replaced; a live one is an error."""
    address = f"unix:{path}"
    try:
        existing = os.lstat(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise ListenError(address, exc) from None
    else:
        if not stat.S_ISSOCK(existing.st_mode):
            raise ListenError(address, OSError(errno.EEXIST, "a file that is not a socket is there"))
        if _answers(address, path):
            raise ListenError(address, OSError(errno.EADDRINUSE, os.strerror(errno.EADDRINUSE)))
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
    except OSError as exc:
        sock.close()
        raise ListenError(address, exc) from None
    try:
        os.chmod(path, mode)  # before listen(): nobody connects while the mode is still the umask's
        created = os.stat(path)
        sock.listen(BACKLOG)
    except OSError as exc:
        sock.close()
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise ListenError(address, exc) from None
    return sock, (created.st_dev, created.st_ino)


def _answers(address: str, path: str) -> bool:
    """Does a server accept on the socket file at `path`? (A non-blocking connect says at once.)"""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.setblocking(False)
        try:
            probe.connect(path)
        except (ConnectionRefusedError, FileNotFoundError):
            return False
        except BlockingIOError:
            return True  # its backlog is full: alive and busy
        except OSError as exc:
            raise ListenError(address, exc) from None
        return True


def _remove_unix(path: str, created: tuple[int, int]) -> None:
    """Remove our socket file, unless another server has put its own there since."""
    with contextlib.suppress(OSError):
        found = os.lstat(path)
        if (found.st_dev, found.st_ino) == created:
            os.unlink(path)


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
    if option is not None and sock.family != socket.AF_UNIX:
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
        if not gate.admit(sock, peer):
            continue
        try:
            sock.setblocking(False)
            if not unix:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            sock.close()
            continue
        nursery.start_soon(handle_connection, sock, peer, hub, gate)
        accepted += 1
        if accepted >= ACCEPT_BATCH:
            accepted = 0
            await trio.lowlevel.checkpoint()


def _ip(address: Any) -> str:
    """A TCP peer's address; an IPv4 client of the dual-stack `::` (`::ffff:192.0.2.1`) as plain IPv4,
    so its logs and limits read as they do on an IPv4 listener."""
    host = str(address[0]) if address else ""
    return host[7:] if host.startswith("::ffff:") and "." in host else host


async def handle_connection(sock: socket.socket, peer: str, hub: Hub, gate: Gate) -> None:
    conn = HttpConnection(sock, hub.config, peer)
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


async def _serve_requests(conn: HttpConnection, hub: Hub, gate: Gate) -> None:
    config = hub.config
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
