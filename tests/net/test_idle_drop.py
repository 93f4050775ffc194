# A receiver stalled past --idle-timeout is dropped (cut short by a reset); the transfer goes on without it.
# Invariant: the drop comes at the idle timeout, not before; until then the stalled one holds the others back.
from __future__ import annotations

from functools import partial

import pytest
import trio

from tests.clients import RawClient, StartRelay, raw_pipe, read_status_until
from tests.lockstep_parties import (
    COMPLETE,
    SENDER_SNDBUF,
    STALLED_RCVBUF,
    Body,
    MiB,
    Reader,
    Sender,
    random_body,
    streaming_lines,
)

DROPPED = b"[WARN] A receiver disconnected; streaming to 1 receiver(s).\n"
ALL_GONE = b"[ERROR] All receivers disconnected.\n"


@pytest.fixture(scope="module")
def body() -> Body:
    return random_body()


IDLE = 1.0
DROP_SIZE = 16 * MiB
"""Well above what a stalled receiver's socket buffers take (LEAD_BOUND in test_lockstep.py): the
server must wait."""


def assert_cut_short(cut: bytes, clean: bool, part: Body, *, chunked: bool) -> None:
    """A dropped receiver's body: never complete, and it ends in a reset, not a clean close."""
    assert not clean
    if chunked:
        assert not cut.endswith(b"0\r\n\r\n")
    else:
        assert len(cut) < len(part.data)
        assert cut == part.data[: len(cut)]


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_stalled_receiver_is_dropped_at_the_idle_timeout(
    start_relay: StartRelay, raw_clients: list[RawClient], body: Body, chunked: bool
) -> None:
    """n=2, the last receiver stops reading for good: the other one waits for it for the idle
    timeout, then the stalled one is dropped and the transfer goes on without it."""
    relay = await start_relay(idle_timeout=IDLE)
    part = body.prefix(DROP_SIZE)
    with trio.fail_after(15):
        client, (healthy, stalled) = await raw_pipe(
            relay,
            raw_clients,
            f"/drop-{int(chunked)}",
            2,
            length=None if chunked else DROP_SIZE,
            rcvbufs=[None, STALLED_RCVBUF],
            sndbuf=SENDER_SNDBUF,
        )
        await client.read_until(b"\r\n\r\n")
        sender = Sender(client)
        reader = Reader(healthy)
        async with trio.open_nursery() as nursery:
            start = trio.current_time()
            nursery.start_soon(partial(sender.send_body, part.data, chunked=chunked))
            nursery.start_soon(partial(reader.read_body, DROP_SIZE, chunked=chunked))
            status = await read_status_until(client, DROPPED)
            dropped = trio.current_time() - start
        status += await read_status_until(client, COMPLETE)
        assert await client.read_to_end() == (b"0\r\n\r\n", True)
        cut, clean = await stalled.read_to_end()
    assert status == streaming_lines(2) + DROPPED + COMPLETE
    assert reader.digest.hexdigest() == part.sha256
    assert_cut_short(cut, clean, part, chunked=chunked)
    assert 0.8 * IDLE <= dropped <= 3 * IDLE + 2, f"dropped after {dropped:.2f} s"
    # until the drop, the stalled receiver held the healthy one back (lockstep)
    assert 0.8 * IDLE <= reader.longest_gap <= 3 * IDLE + 2, f"longest wait {reader.longest_gap:.2f} s"


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_stalled_only_receiver_ends_the_transfer_at_the_idle_timeout(
    start_relay: StartRelay, raw_clients: list[RawClient], body: Body, chunked: bool
) -> None:
    """n=1 and it stops reading: at the idle timeout the sender hears that no receiver is left."""
    relay = await start_relay(idle_timeout=IDLE)
    part = body.prefix(DROP_SIZE)
    with trio.fail_after(15):
        client, (stalled,) = await raw_pipe(
            relay,
            raw_clients,
            f"/drop-all-{int(chunked)}",
            length=None if chunked else DROP_SIZE,
            rcvbufs=[STALLED_RCVBUF],
            sndbuf=SENDER_SNDBUF,
        )
        await client.read_until(b"\r\n\r\n")
        sender = Sender(client)
        async with trio.open_nursery() as nursery:
            start = trio.current_time()
            nursery.start_soon(partial(sender.send_body, part.data, chunked=chunked))
            status = await read_status_until(client, ALL_GONE)
            ended = trio.current_time() - start
            nursery.cancel_scope.cancel()  # the sender is still blocked on its body
        assert await client.read_exactly(5) == b"0\r\n\r\n"
        cut, clean = await stalled.read_to_end()
    assert status == streaming_lines(1) + ALL_GONE
    assert_cut_short(cut, clean, part, chunked=chunked)
    assert 0.8 * IDLE <= ended <= 3 * IDLE + 2, f"ended after {ended:.2f} s"
