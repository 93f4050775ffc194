# The hub with a sender that left unseen (tests/memory_link.py `leave_unseen`): checked, replaced, requeued.
# Invariant: nothing here opens a socket; every wait is deterministic (wait_all_tasks_blocked).
from __future__ import annotations

import hashlib

import trio
import trio.testing

from pipe_relay.core import status
from pipe_relay.errors import ErrorCode, TransferFailure
from pipe_relay.net.hub import REQUEUE_LIMIT
from pipe_relay.net.link import CloseMode
from tests.memory_link import MemoryLink, pipe_request
from tests.net.test_memory_parties import BODY, join_receivers, lines, running_hub

WAITING = status.waiting(1)
STILL = status.still_waiting(1)


def sender(hub_serve: object, nursery: trio.Nursery, target: str, client: str = "a") -> MemoryLink:
    request, decision = pipe_request("PUT", target, ("content-length", str(len(BODY))))
    link = MemoryLink()
    nursery.start_soon(hub_serve, link, request, decision, client)
    return link


async def send_body(link: MemoryLink) -> None:
    await link.body.feed(BODY)
    await link.body.end()


async def test_a_receiver_is_requeued_past_a_sender_gone_unseen() -> None:
    """The receiver's arrival starts the transfer; the Streaming line finds the sender gone before a
    byte moved: the receiver waits again, unharmed, and the next sender's body reaches it whole."""
    with trio.fail_after(5):
        async with running_hub() as hub, trio.open_nursery() as nursery:
            dead = sender(hub.serve_sender, nursery, "/p")
            await trio.testing.wait_all_tasks_blocked()
            dead.leave_unseen()
            (receiver,) = await join_receivers(hub, nursery, "/p", 1)
            snapshot = hub.registry.snapshot("/p")
            assert snapshot is not None and not snapshot.sender and snapshot.receivers == 1
            assert dead.close_mode is CloseMode.ABORT and dead.body.released
            assert dead.status == lines(WAITING, status.streaming(1))
            assert receiver.writer.data == b"" and not receiver.errors
            alive = sender(hub.serve_sender, nursery, "/p")
            await send_body(alive)
        assert hashlib.sha256(receiver.writer.data).digest() == hashlib.sha256(BODY).digest()
        assert receiver.close_mode is CloseMode.NORMAL and not receiver.errors
        assert alive.status == lines(status.streaming(1), status.UPLOAD_COMPLETE, status.TRANSFER_COMPLETE)


async def test_a_second_sender_replaces_one_gone_unseen() -> None:
    with trio.fail_after(5):
        async with running_hub() as hub, trio.open_nursery() as nursery:
            dead = sender(hub.serve_sender, nursery, "/p")
            await trio.testing.wait_all_tasks_blocked()
            dead.leave_unseen()
            alive = sender(hub.serve_sender, nursery, "/p")
            await trio.testing.wait_all_tasks_blocked()
            assert hub.registry.pending_sender("/p") is not None
            assert not alive.errors
            assert dead.status == lines(WAITING, STILL)  # (the line that found it gone)
            (receiver,) = await join_receivers(hub, nursery, "/p", 1)
            await send_body(alive)
        assert hashlib.sha256(receiver.writer.data).digest() == hashlib.sha256(BODY).digest()


async def test_a_second_sender_is_refused_by_one_still_there_and_checks_are_spaced() -> None:
    """The waiting sender answers: the second is refused as before. Another address may have it
    checked (a line written to it) once a second; its own address at every try."""
    with trio.fail_after(5):
        async with running_hub() as hub, trio.open_nursery() as nursery:
            first = sender(hub.serve_sender, nursery, "/p", client="owner")
            await trio.testing.wait_all_tasks_blocked()
            tries = []
            for client in ("other", "other", "owner"):  # (one after the other: at once, they share one check)
                tries.append(sender(hub.serve_sender, nursery, "/p", client=client))
                await trio.testing.wait_all_tasks_blocked()
            assert [[e.code for e in t.errors] for t in tries] == [[ErrorCode.DUPLICATE_SENDER]] * 3
            assert first.status == lines(WAITING, STILL, STILL)  # (the other's second try: no line)
            nursery.cancel_scope.cancel()


async def test_a_receiver_past_too_many_gone_senders_gets_the_error() -> None:
    with trio.fail_after(5):
        async with running_hub() as hub, trio.open_nursery() as nursery:
            (receiver,) = await join_receivers(hub, nursery, "/p", 1)
            for _ in range(REQUEUE_LIMIT + 1):
                assert not receiver.errors
                dead = MemoryLink()
                dead.leave_unseen()
                request, decision = pipe_request("PUT", "/p", ("content-length", str(len(BODY))))
                nursery.start_soon(hub.serve_sender, dead, request, decision)
                await trio.testing.wait_all_tasks_blocked()
        assert [e.code for e in receiver.errors] == [ErrorCode.SENDER_FAILED]
        assert receiver.errors[0].params["detail"] == TransferFailure.SENDER_GONE.value
        assert receiver.writer.data == b""
