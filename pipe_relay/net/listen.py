# Listening sockets: TCP on every address of every host (one port, dual-stack `::`), a Unix socket file.
# Invariant: either every socket asked for is bound, or none stays open (ListenError names the address).
from __future__ import annotations

import contextlib
import dataclasses
import errno
import math
import os
import socket
import stat
from dataclasses import dataclass
from typing import Any

import trio

from ..config import Config


@dataclass(frozen=True)
class Listener:
    """A listening socket, and whether it serves TLS."""

    socket: trio.socket.SocketType
    tls: bool = False
    admin: bool = False
    """The admin listener's (metrics, live transfers), not a public one."""

    @property
    def url(self) -> str:
        """As the start-up line names it: `http://[::]:8080`, `https://0.0.0.0:8443`, `unix:/path`."""
        url = url_of(self.socket)
        return "https" + url[4:] if self.tls else url


class ListenError(OSError):
    """An address the server cannot listen on: `address` as the error line names it
    (`127.0.0.1:8080`, `[::1]:8080`, `unix:/run/pipe-relay.sock`), the OS's errno and reason, and
    whether it was for the HTTPS port (`tls`: the error line names the flag that changes the port)."""

    def __init__(self, address: str, cause: OSError) -> None:
        super().__init__(cause.errno, cause.strerror or str(cause))
        self.address = address
        self.flag = "--http-port"
        """The flag that picks another port."""


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


async def listen_tcp(config: Config, port: int, *, tls: bool = False) -> list[socket.socket]:
    """A listening socket for every address of every host, all on one `port` (the HTTPS one: `tls`)."""
    try:
        return await _listen_tcp(config, port)
    except ListenError as exc:
        exc.flag = "--https-port" if tls else exc.flag
        raise


async def listen_admin(config: Config) -> list[socket.socket]:
    """The admin listener's sockets: `--admin-host` (an address or a name) on `--admin-port`."""
    assert config.admin_port is not None
    try:
        return await _listen_tcp(dataclasses.replace(config, hosts=(config.admin_host,)), config.admin_port)
    except ListenError as exc:
        exc.flag = "--admin-port"
        raise


async def _listen_tcp(config: Config, port: int) -> list[socket.socket]:
    addresses: list[tuple[socket.AddressFamily, Any]] = []  # (family, sockaddr)
    for host in config.hosts:
        try:
            found = await trio.socket.getaddrinfo(
                host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
            )
        except OSError as exc:
            raise ListenError(_hostport(host, port), exc) from None
        for family, *_, sockaddr in found:
            if (family, sockaddr) not in addresses:  # (a name may list an address twice)
                addresses.append((family, sockaddr))
    # `::` takes IPv4 too (as in Node), unless an IPv4 address is listed, which would then be taken
    dual_stack = socket.AF_INET not in {family for family, _ in addresses}
    for draw in range(1, PORT_DRAWS + 1):
        try:
            return _bind_tcp(addresses, port, dual_stack=dual_stack)
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


def listen_unix(path: str, mode: int) -> tuple[socket.socket, tuple[int, int]]:
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


def remove_unix(path: str, created: tuple[int, int]) -> None:
    """Remove our socket file, unless another server has put its own there since."""
    with contextlib.suppress(OSError):
        found = os.lstat(path)
        if (found.st_dev, found.st_ino) == created:
            os.unlink(path)


def defer_accept(sock: socket.socket, seconds: float) -> None:
    """Linux: wake `accept` only once a connection's first bytes are in (its head is usually whole
    by then), so a new connection costs no wait and no epoll registration before its first read.
    Connections silent this long are accepted anyway and meet the head deadline as usual."""
    option = getattr(socket, "TCP_DEFER_ACCEPT", None)
    if option is not None and sock.family != socket.AF_UNIX:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, option, max(1, math.ceil(seconds)))
