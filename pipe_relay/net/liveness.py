# Is a waiting party's client still there? After a status line, its kernel acknowledges it or resets.
# Invariant: a wait lasts a couple of round trips at most (capped), and only where a close can be hidden.
"""Why: a client killed while its upload is held back by our closed receive window (a sender waiting
for its receivers) closes with a FIN queued behind its unsent bytes, which we never read while it
waits, so no hang-up can be seen. Its kernel answers any byte we send it with a reset, within a
round trip. So after a status line to such a client, `answered` waits until the bytes are
acknowledged (alive), the socket is reset (gone), or about two round trips have passed (alive: a
delayed acknowledgement). A socket with nothing unread, or with all of the body unread in it, cannot
hide a close, and costs one ioctl."""

from __future__ import annotations

import fcntl
import socket
import struct
import termios
from collections.abc import Callable
from typing import Protocol

import trio

MAX_WAIT = 1.0
"""The longest wait for a client's answer, whatever its round trip (then it counts as there)."""
SLACK = 0.02
"""Added to the two round trips: a reset on a busy machine may wait for its turn on a CPU (on the
loopback, where a round trip is microseconds, 1 ms was seen missed under load)."""
_STEP = 0.0005
_TCP_INFO_SIZE = 104
_RTT_OFFSET = 68  # struct tcp_info: tcpi_rtt, tcpi_rttvar (microseconds), after 17 fields
_COUNT = struct.Struct("i")


class TcpSocket(Protocol):
    """What `answered` needs of a socket (a plain one or a TLS one)."""

    def fileno(self) -> int: ...

    def getsockopt(self, level: int, option: int, size: int, /) -> bytes: ...


def queued(fd: int, request: int) -> int:
    """Bytes in a socket's queue: unread (FIONREAD) or not yet acknowledged (TIOCOUTQ); 0 on error."""
    try:
        return int(_COUNT.unpack(fcntl.ioctl(fd, request, b"\0\0\0\0"))[0])
    except OSError:
        return 0


def unread(fd: int) -> int:
    return queued(fd, termios.FIONREAD)


def answer_wait(sock: TcpSocket) -> float | None:
    """How long to wait for a TCP client's answer: two round trips with their variance (the
    kernel's own estimate), plus SLACK; None for a socket that is not TCP."""
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO_SIZE)
    except OSError:
        return None
    if len(info) < _RTT_OFFSET + 8:
        return None
    rtt, rttvar = struct.unpack_from("II", info, _RTT_OFFSET)
    return float(min(2 * (rtt + 4 * rttvar) / 1e6 + SLACK, MAX_WAIT))


async def answered(sock: TcpSocket, gone: Callable[[], bool]) -> bool:
    """After a write: False once the client resets (`gone()`); True once everything we sent is
    acknowledged, or after `answer_wait` (a Unix socket's close is never hidden: at once)."""
    wait = answer_wait(sock)
    if wait is None:
        return not gone()
    fd = sock.fileno()
    deadline = trio.current_time() + wait
    step = max(_STEP, wait / 16)
    while not gone():
        if queued(fd, termios.TIOCOUTQ) == 0:
            return True
        left = deadline - trio.current_time()
        if left <= 0:
            return True
        await trio.sleep(min(step, left))
    return False
