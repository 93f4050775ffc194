# The byte engines and the body reader in isolation, over socketpairs (no server, no HTTP): lockstep
# steps, stalled receivers dropped at the idle limit, bodies read whole or failing the right way.
from __future__ import annotations

import hashlib
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager, suppress

import pytest
import trio

from pipe_relay.config import Config
from pipe_relay.core.framing import ChunkedDecoder, Framing, LengthDecoder
from pipe_relay.errors import TransferError, TransferFailure
from pipe_relay.net.body import SocketBody
from pipe_relay.net.engine import BufferEngine, Sink, SocketWriter, broadcast
from pipe_relay.net.splice import SpliceEngine, make_engine, splice_available


class _Events:
    def __init__(self) -> None:
        self.moved = 0
        self.drops: list[int] = []

    def progress(self, moved: int) -> None:
        self.moved += moved

    async def receiver_dropped(self, sink: Sink, alive: int) -> None:
        self.drops.append(alive)


def _tcp_pair() -> tuple[socket.socket, socket.socket]:
    """A loopback TCP connection (the server's end first): SO_RCVLOWAT and splice need TCP."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        theirs = socket.create_connection(listener.getsockname())
        ours, _ = listener.accept()
    return ours, theirs


@contextmanager
def _pairs(count: int, *, tcp: bool = False) -> Iterator[list[tuple[socket.socket, socket.socket]]]:
    pairs = [_tcp_pair() if tcp else socket.socketpair() for _ in range(count)]
    for ours, theirs in pairs:
        ours.setblocking(False)
        theirs.setblocking(False)
    try:
        yield pairs
    finally:
        for ours, theirs in pairs:
            ours.close()
            theirs.close()


async def _send_all(sock: socket.socket, data: bytes) -> None:
    view = memoryview(data)
    while view:
        await trio.lowlevel.wait_writable(sock)
        with suppress(BlockingIOError):
            view = view[sock.send(view) :]


async def _drain(sock: socket.socket, into: bytearray) -> None:
    """Read until the peer closes (the engine's side is closed by the test)."""
    while True:
        await trio.lowlevel.wait_readable(sock)
        try:
            data = sock.recv(1 << 20)
        except BlockingIOError:
            continue
        if not data:
            return
        into += data


async def test_broadcast_waits_only_for_the_slow_and_drops_one_stalled_past_the_idle_limit() -> None:
    with trio.fail_after(10), _pairs(2) as pairs:
        sinks = [Sink(SocketWriter(ours.fileno()), framing=Framing.CLOSE, head=b"") for ours, _ in pairs]
        events = _Events()
        step = [os.urandom(4 << 20)]  # more than a socketpair buffers: the stalled one must block
        got = bytearray()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_drain, pairs[0][1], got)
            started = trio.current_time()
            await broadcast(sinks, lambda sink: step, events, idle=0.3)
            seconds = trio.current_time() - started
            pairs[0][0].shutdown(socket.SHUT_WR)
    assert 0.25 <= seconds <= 3.0
    assert [sink.alive for sink in sinks] == [True, False]
    assert events.drops == [1]
    assert hashlib.sha256(got).digest() == hashlib.sha256(step[0]).digest()


async def test_broadcast_with_every_receiver_gone_raises_receivers_gone() -> None:
    with trio.fail_after(10), _pairs(2) as pairs:
        for _, theirs in pairs:
            theirs.close()
        sinks = [Sink(SocketWriter(ours.fileno()), framing=Framing.CLOSE, head=b"") for ours, _ in pairs]
        with pytest.raises(TransferError) as info:
            await broadcast(sinks, lambda sink: [b"x" * 1000], _Events(), idle=1)
    assert info.value.failure is TransferFailure.RECEIVERS_GONE


@pytest.mark.parametrize(
    "engine",
    ["buffer", pytest.param("splice", marks=pytest.mark.skipif(not splice_available(), reason="Linux"))],
)
async def test_an_engine_moves_a_length_body_in_lockstep_to_three(engine: str) -> None:
    body = os.urandom(3 << 20)
    with trio.fail_after(20), _pairs(1, tcp=True) as (sender,), _pairs(3, tcp=True) as receivers:
        source = SocketBody(sender[0], LengthDecoder(len(body)), b"", buffer_size=1 << 20, idle_timeout=5)
        sinks = [
            Sink(SocketWriter(ours.fileno()), framing=Framing.LENGTH, head=b"HEAD") for ours, _ in receivers
        ]
        relay = BufferEngine(idle_timeout=5)
        if engine == "splice":
            relay = SpliceEngine(idle_timeout=5, fallback=relay)  # type: ignore[assignment]
        got = [bytearray() for _ in receivers]
        events = _Events()
        async with trio.open_nursery() as nursery:
            for (_, theirs), into in zip(receivers, got, strict=True):
                nursery.start_soon(_drain, theirs, into)

            nursery.start_soon(_send_all, sender[1], body)
            await relay.relay(source, sinks, events)
            for ours, _ in receivers:
                ours.shutdown(socket.SHUT_WR)
    assert events.moved == len(body)
    assert [bytes(g) for g in got] == [b"HEAD" + body] * 3
    if isinstance(relay, SpliceEngine):
        assert (relay.carried, relay.fallbacks) == (1, 0)  # splice and tee carried it, no fallback


async def test_a_socket_body_that_ends_early_is_sender_gone_and_a_silent_one_sender_idle() -> None:
    with trio.fail_after(10), _pairs(2) as ((gone_ours, gone_theirs), (idle_ours, _)):
        gone = SocketBody(gone_ours, LengthDecoder(100), b"abc", buffer_size=4096, idle_timeout=5)
        assert [bytes(p) for p in await gone.read()] == [b"abc"]
        gone_theirs.sendall(b"def")
        gone_theirs.close()
        assert [bytes(p) for p in await gone.read()] == [b"def"]
        with pytest.raises(TransferError) as info:
            await gone.read()
        assert info.value.failure is TransferFailure.SENDER_GONE
        silent = SocketBody(idle_ours, ChunkedDecoder(), b"", buffer_size=4096, idle_timeout=0.2)
        started = trio.current_time()
        with pytest.raises(TransferError) as info:
            await silent.read()
        assert info.value.failure is TransferFailure.SENDER_IDLE
        assert 0.15 <= trio.current_time() - started <= 2.0


async def test_a_chunked_socket_body_decodes_across_reads() -> None:
    with trio.fail_after(10), _pairs(1) as ((ours, theirs),):
        body = SocketBody(ours, ChunkedDecoder(), b"5\r\nhel", buffer_size=4096, idle_timeout=5)
        theirs.sendall(b"lo\r\n6\r\n world\r\n0\r\n\r\n")
        payload = b""
        while pieces := await body.read():
            payload += b"".join(bytes(p) for p in pieces)
    assert payload == b"hello world" and body.done


@pytest.mark.skipif(not splice_available(), reason="Linux splice(2)")
async def test_the_splice_engine_drops_a_receiver_stalled_past_the_idle_limit() -> None:
    body = os.urandom(8 << 20)
    with trio.fail_after(20), _pairs(1, tcp=True) as (sender,), _pairs(2, tcp=True) as receivers:
        source = SocketBody(sender[0], LengthDecoder(len(body)), b"", buffer_size=1 << 20, idle_timeout=5)
        sinks = [Sink(SocketWriter(ours.fileno()), framing=Framing.LENGTH, head=b"") for ours, _ in receivers]
        engine = SpliceEngine(idle_timeout=0.3, fallback=BufferEngine(idle_timeout=0.3))
        got = bytearray()
        events = _Events()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_drain, receivers[0][1], got)  # the second receiver never reads

            nursery.start_soon(_send_all, sender[1], body)
            await engine.relay(source, sinks, events)
            receivers[0][0].shutdown(socket.SHUT_WR)
    assert [sink.alive for sink in sinks] == [True, False]
    assert events.drops == [1]
    assert hashlib.sha256(got).digest() == hashlib.sha256(body).digest()


def test_auto_is_the_buffer_engine_and_splice_is_asked_for() -> None:
    """`auto` is what measured fastest at n=1 and n=3 here (docs/performance.md): the buffer engine."""
    assert type(make_engine(Config(engine="auto"))) is BufferEngine
    assert type(make_engine(Config(engine="buffer"))) is BufferEngine
    splice = make_engine(Config(engine="splice"))
    assert type(splice) is (SpliceEngine if splice_available() else BufferEngine)
