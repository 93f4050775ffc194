# The real hub and relay with parties that have no socket (tests/memory_link.py): the front-end seam.
# Invariant: nothing here opens a socket; every wait is deterministic (wait_all_tasks_blocked, MockClock).
from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing

from pipe_relay.config import Config
from pipe_relay.core import status
from pipe_relay.core.progress import TransferState
from pipe_relay.errors import ErrorCode, TransferFailure
from pipe_relay.net.hub import Hub
from pipe_relay.net.link import CloseMode
from pipe_relay.net.party import POLL_INTERVAL
from tests.memory_link import MemoryLink, pipe_request

CHUNKS = [bytes([i]) * (1000 + i) for i in range(5)]
BODY = b"".join(CHUNKS)


@asynccontextmanager
async def running_hub(engine: str = "auto") -> AsyncIterator[Hub]:
    hub = Hub(Config(hosts=("127.0.0.1",), port=0, engine=engine))  # type: ignore[arg-type]
    async with trio.open_nursery() as nursery:
        await nursery.start(hub.run)
        yield hub
        nursery.cancel_scope.cancel()


def lines(*texts: str) -> str:
    return "".join(text + "\n" for text in texts)


async def join_receivers(hub: Hub, nursery: trio.Nursery, key: str, count: int) -> list[MemoryLink]:
    links = [MemoryLink() for _ in range(count)]
    for link in links:
        request, decision = pipe_request("GET", key)
        nursery.start_soon(hub.serve_receiver, link, request, decision)
    await trio.testing.wait_all_tasks_blocked()
    return links


def start_sender(hub: Hub, nursery: trio.Nursery, target: str, length: int | None = len(BODY)) -> MemoryLink:
    headers = (
        (("content-length", str(length)),) if length is not None else (("transfer-encoding", "chunked"),)
    )
    request, decision = pipe_request("PUT", target, ("content-type", "application/x-test"), *headers)
    sender = MemoryLink()
    nursery.start_soon(hub.serve_sender, sender, request, decision)
    return sender


# Both engines: with no socket, `splice` must hand the transfer to the buffer engine (no splice fd).
@pytest.mark.parametrize("engine", ["buffer", "splice"])
@pytest.mark.parametrize("length", [len(BODY), None], ids=["content-length", "unknown-length"])
async def test_a_transfer_between_parties_without_sockets(engine: str, length: int | None) -> None:
    with trio.fail_after(5):
        async with running_hub(engine) as hub, trio.open_nursery() as nursery:
            (receiver,) = await join_receivers(hub, nursery, "/mem", 1)
            sender = start_sender(hub, nursery, "/mem", length)
            for chunk in CHUNKS:
                await sender.body.feed(chunk)
            await sender.body.end()
        assert hashlib.sha256(receiver.writer.data).digest() == hashlib.sha256(BODY).digest()
        assert receiver.close_mode is CloseMode.NORMAL and not receiver.errors
        assert receiver.response_headers is not None
        assert ("Content-Type", "application/x-test") in receiver.response_headers
        framing = [("Content-Length", str(len(BODY)))] if length is not None else []
        assert [h for h in receiver.response_headers if h[0] == "Content-Length"] == framing
        assert sender.status == lines(status.streaming(1), status.UPLOAD_COMPLETE, status.TRANSFER_COMPLETE)
        assert sender.stream is not None and sender.stream.ended
        assert sender.close_mode is CloseMode.NORMAL and sender.body.released
        assert hub.registry.state_of("/mem") is None and hub.boards.get("/mem") is None


async def test_a_paused_receiver_paces_the_sender_and_the_others() -> None:
    """Lockstep over the seam: while one of three receivers takes nothing, the others get no
    further than the chunk in flight and the relay takes no next chunk from the sender."""
    with trio.fail_after(5):
        async with running_hub() as hub, trio.open_nursery() as nursery:
            receivers = await join_receivers(hub, nursery, "/mem?n=3", 3)
            receivers[2].writer.paused = True
            sender = start_sender(hub, nursery, "/mem?n=3")
            await sender.body.feed(CHUNKS[0])
            await trio.testing.wait_all_tasks_blocked()
            assert [bytes(r.writer.data) for r in receivers] == [CHUNKS[0], CHUNKS[0], b""]
            nursery.start_soon(sender.body.feed, CHUNKS[1])
            await trio.testing.wait_all_tasks_blocked()
            assert sender.body.read_chunks == 1  # the next chunk waits with the sender
            assert [bytes(r.writer.data) for r in receivers] == [CHUNKS[0], CHUNKS[0], b""]
            receivers[2].writer.resume()
            await trio.testing.wait_all_tasks_blocked()
            assert sender.body.read_chunks == 2
            assert [bytes(r.writer.data) for r in receivers] == [CHUNKS[0] + CHUNKS[1]] * 3
            for chunk in CHUNKS[2:]:
                await sender.body.feed(chunk)
            await sender.body.end()
        assert [bytes(r.writer.data) for r in receivers] == [BODY] * 3
        assert sender.status == lines(
            status.connected(3, 3), status.streaming(3), status.UPLOAD_COMPLETE, status.TRANSFER_COMPLETE
        )


async def test_a_sender_cut_short_leaves_every_receiver_reset() -> None:
    with trio.fail_after(5):
        async with running_hub() as hub, trio.open_nursery() as nursery:
            receivers = await join_receivers(hub, nursery, "/cut?n=2", 2)
            sender = start_sender(hub, nursery, "/cut?n=2")
            board = hub.boards.get("/cut")
            assert board is not None
            await sender.body.feed(CHUNKS[0])
            await sender.body.cut()
        assert [bytes(r.writer.data) for r in receivers] == [CHUNKS[0]] * 2  # short, and ...
        assert [r.close_mode for r in receivers] == [CloseMode.ABORT] * 2  # ... never a clean end
        assert sender.close_mode is CloseMode.ABORT  # (gone: nothing more said to it)
        assert not sender.stream or not sender.stream.ended
        assert board.state is TransferState.ABORTED
        assert hub.registry.state_of("/cut") is None


async def test_a_receiver_gone_mid_transfer_is_dropped_and_the_sender_told() -> None:
    with trio.fail_after(5):
        async with running_hub() as hub, trio.open_nursery() as nursery:
            stays, goes = await join_receivers(hub, nursery, "/drop?n=2", 2)
            sender = start_sender(hub, nursery, "/drop?n=2")
            await sender.body.feed(CHUNKS[0])
            await trio.testing.wait_all_tasks_blocked()  # (written to both)
            goes.writer.cut()
            for chunk in CHUNKS[1:]:
                await sender.body.feed(chunk)
            await sender.body.end()
        assert bytes(stays.writer.data) == BODY and stays.close_mode is CloseMode.NORMAL
        assert bytes(goes.writer.data) == CHUNKS[0] and goes.close_mode is CloseMode.ABORT
        assert sender.status == lines(
            status.connected(2, 2),
            status.streaming(2),
            status.receiver_dropped(1),
            status.UPLOAD_COMPLETE,
            status.TRANSFER_COMPLETE,
        )


async def test_the_last_receiver_gone_fails_the_transfer() -> None:
    with trio.fail_after(5):
        async with running_hub() as hub, trio.open_nursery() as nursery:
            (goes,) = await join_receivers(hub, nursery, "/gone", 1)
            sender = start_sender(hub, nursery, "/gone")
            await sender.body.feed(CHUNKS[0])
            await trio.testing.wait_all_tasks_blocked()
            goes.writer.cut()
            await sender.body.feed(CHUNKS[1])  # (taken, and its write fails)
        assert goes.close_mode is CloseMode.ABORT
        assert sender.status == lines(
            status.streaming(1), status.transfer_failed(TransferFailure.RECEIVERS_GONE, "")
        )
        assert sender.close_mode is CloseMode.LINGER  # (its body may still be coming: read, dropped)


async def test_a_waiting_receiver_that_leaves_is_forgotten(autojump_clock: trio.testing.MockClock) -> None:
    """No hang-up descriptor: the hub's tick finds it gone (peer_closed) within POLL_INTERVAL."""
    with trio.fail_after(5):
        async with running_hub() as hub, trio.open_nursery() as nursery:
            (leaver,) = await join_receivers(hub, nursery, "/leave", 1)
            assert hub.registry.pending_count == 1
            left_at = trio.current_time()
            leaver.leave()
            await hub.wait_for(lambda: hub.registry.pending_count == 0)
            assert trio.current_time() - left_at <= POLL_INTERVAL
            (receiver,) = await join_receivers(hub, nursery, "/leave", 1)
            sender = start_sender(hub, nursery, "/leave", len(CHUNKS[0]))
            await sender.body.feed(CHUNKS[0])
            await sender.body.end()
        assert bytes(receiver.writer.data) == CHUNKS[0] and leaver.writer.data == b""


async def test_a_rejection_goes_through_the_link() -> None:
    with trio.fail_after(5):
        async with running_hub() as hub, trio.open_nursery() as nursery:
            (receiver,) = await join_receivers(hub, nursery, "/n?n=2", 1)
            request, decision = pipe_request("GET", "/n?n=3")
            wrong = MemoryLink()
            await hub.serve_receiver(wrong, request, decision)
            assert [e.code for e in wrong.errors] == [ErrorCode.N_MISMATCH]
            receiver.leave()
        assert hub.registry.state_of("/n") is None
