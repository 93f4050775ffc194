# `answered` and `still_there` on real sockets: a gone client, a live one, the wait's bound, the skips.
# Invariant: every case uses kernel sockets (loopback TCP, a Unix pair); no clock or socket is faked.
from __future__ import annotations

import select
import socket
import struct
import time
from collections.abc import Callable, Iterator

import pytest
import trio

from pipe_relay.config import Config
from pipe_relay.net.connection import HttpConnection
from pipe_relay.net.liveness import MAX_WAIT, SLACK, answer_wait, answered, unread


@pytest.fixture
def tcp_pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    """(server side, client side) of one loopback TCP connection, both non-blocking."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        client = socket.create_connection(listener.getsockname())
        server, _ = listener.accept()
    for sock in (client, server):
        sock.setblocking(False)
    try:
        yield server, client
    finally:
        server.close()
        client.close()


def _fill(sock: socket.socket) -> int:
    """Send until the peer's window and our buffer are full (the peer reads nothing)."""
    sent = 0
    try:
        while True:
            sent += sock.send(b"u" * 65536)
    except BlockingIOError:
        return sent


async def _until(predicate: Callable[[], bool]) -> None:
    """Wait for a kernel state (nothing to wait on but polling; the caller's fail_after bounds it)."""
    while not predicate():  # noqa: ASYNC110
        await trio.sleep(0.001)


def _rdhup(sock: socket.socket) -> bool:
    poller = select.poll()
    poller.register(sock, select.POLLRDHUP | select.POLLHUP | select.POLLERR)
    return bool(poller.poll(0))


async def test_a_client_closed_behind_its_unsent_bytes_is_found_gone(
    tcp_pair: tuple[socket.socket, socket.socket],
) -> None:
    """The hidden close: the client's FIN waits behind bytes we never read; our write is reset."""
    server, client = tcp_pair
    with trio.fail_after(5):
        assert _fill(client) > 0
        client.close()
        assert not _rdhup(server), "the close was seen: nothing hidden"
        assert unread(server.fileno()) > 0
        server.send(b"[INFO] Still waiting for 1 receiver(s)...\n")
        assert not await answered(server, lambda: _rdhup(server))


async def test_a_live_client_answers_within_the_bound(tcp_pair: tuple[socket.socket, socket.socket]) -> None:
    server, client = tcp_pair
    with trio.fail_after(5):
        _fill(client)
        wait = answer_wait(server)
        assert wait is not None and SLACK <= wait < SLACK + 0.03  # (loopback: microseconds, plus SLACK)
        server.send(b"[INFO] Still waiting for 1 receiver(s)...\n")
        started = time.monotonic()
        assert await answered(server, lambda: _rdhup(server))
        assert time.monotonic() - started <= wait + 0.05


class _SlowPath:
    """A real socket whose bytes are never acknowledged (its peer's window is full) and whose
    round trip TCP_INFO reports as `rtt` seconds: the wait's own bound is what ends it."""

    def __init__(self, sock: socket.socket, rtt: float) -> None:
        self._sock = sock
        self._rtt = rtt

    def fileno(self) -> int:
        return self._sock.fileno()

    def getsockopt(self, level: int, option: int, size: int, /) -> bytes:
        info = bytearray(self._sock.getsockopt(level, option, size))
        struct.pack_into("II", info, 68, int(self._rtt * 1e6), 0)
        return bytes(info)


@pytest.mark.parametrize("rtt", [0.05, 10.0])
async def test_an_unanswered_write_waits_two_round_trips_at_most(
    tcp_pair: tuple[socket.socket, socket.socket], rtt: float
) -> None:
    server, _client = tcp_pair
    with trio.fail_after(5):
        _fill(server)  # (the client reads nothing: our bytes stay unacknowledged)
        slow = _SlowPath(server, rtt)
        expected = min(2 * rtt + SLACK, MAX_WAIT)
        assert answer_wait(slow) == pytest.approx(expected)
        started = time.monotonic()
        assert await answered(slow, lambda: False)
        assert expected <= time.monotonic() - started + 0.002 < expected + 0.1


async def test_a_reset_during_the_wait_ends_it(tcp_pair: tuple[socket.socket, socket.socket]) -> None:
    server, _client = tcp_pair
    with trio.fail_after(5):
        _fill(server)
        slow = _SlowPath(server, 10.0)
        reset_at = time.monotonic() + 0.05
        started = time.monotonic()
        assert not await answered(slow, lambda: time.monotonic() >= reset_at)
        assert time.monotonic() - started < 0.2


async def test_a_unix_socket_is_answered_at_once() -> None:
    """A Unix socket's peer close is never hidden: no TCP_INFO, no wait."""
    left, right = socket.socketpair()
    with left, right, trio.fail_after(5):
        assert answer_wait(left) is None
        assert await answered(left, lambda: False)
        assert not await answered(left, lambda: True)


@pytest.mark.parametrize(
    ("length", "body_sent", "asks"),
    [
        (None, 0, False),  # nothing unread here: a close could not be hidden
        (1000, 1000, False),  # the whole body is here, unread: nothing of it holds a FIN back
        (None, 1000, True),  # chunked, bytes unread: unknown whether more are held back
        (5000, 1000, True),  # part of the body unread, the rest not here
    ],
)
async def test_still_there_asks_only_where_a_close_can_hide(
    tcp_pair: tuple[socket.socket, socket.socket],
    monkeypatch: pytest.MonkeyPatch,
    length: int | None,
    body_sent: int,
    asks: bool,
) -> None:
    server, client = tcp_pair
    asked: list[object] = []

    async def answered_seen(sock: object, gone: object) -> bool:
        asked.append(sock)
        return True

    monkeypatch.setattr("pipe_relay.net.connection.answered", answered_seen)
    framing = b"Transfer-Encoding: chunked" if length is None else b"Content-Length: %d" % length
    with trio.fail_after(5):
        conn = HttpConnection(server, Config(port=0), "127.0.0.1")
        client.send(b"PUT /x HTTP/1.1\r\nHost: x\r\n%s\r\n\r\n" % framing)
        assert await conn.read_request() is not None
        if body_sent:
            client.send(b"b" * body_sent)
            await _until(lambda: unread(server.fileno()) >= body_sent)
        assert await conn.still_there()
    assert asked == ([server] if asks else [])


@pytest.mark.parametrize(("body_sent", "there"), [(2, False), (5, True)], ids=["part", "whole"])
async def test_a_client_seen_gone_is_gone_unless_its_whole_body_is_here(
    tcp_pair: tuple[socket.socket, socket.socket], body_sent: int, there: bool
) -> None:
    """Gone with part of its body: gone. Gone with all of it here, unread: its body can still be
    delivered, so it counts as there (a client that closes once it has sent everything)."""
    server, client = tcp_pair
    with trio.fail_after(5):
        conn = HttpConnection(server, Config(port=0), "127.0.0.1")
        client.send(b"PUT /x HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n")
        assert await conn.read_request() is not None
        client.send(b"hello"[:body_sent])
        client.close()
        await _until(lambda: _rdhup(server))
        assert await conn.still_there() is there
