# The disconnect matrix: who leaves (the sender, one of two receivers, every receiver) x when x framing
# x engine, judged on the wire. Invariant: the path is freed, survivors hear the truth, a cut body never ends.
#
# Cells pinned elsewhere, not repeated here: one of two receivers leaving while it waits, with no
# sender (test_leaving.py::test_a_waiting_receiver_that_leaves_is_forgotten_at_once, close and reset)
# and with a waiting sender told "0 of 2" (test_disconnects.py::test_receiver_leaving_updates_the_
# waiting_sender); n=1 variants of the sender cut mid-body (test_disconnects.py::test_sender_dying_mid_
# body_under_*), of a receiver gone after the heads (..._one_receiver_dying..., ..._all_receivers_gone...),
# a sender cut after its `0` line (test_transfer_stream.py), and a multipart sender gone before its part
# began (502: test_disconnects.py::test_sender_gone_before_any_byte_gives_receivers_an_error).
from __future__ import annotations

import contextlib
import itertools

import pytest
import trio

from tests.clients import (
    CurlResult,
    Payload,
    RawClient,
    StartRelay,
    curl_into,
    parse_head,
    read_status_until,
)
from tests.matrix_case import (
    ALL_GONE,
    BODY,
    COMPLETE,
    FIRST,
    MID,
    ONE,
    RESTS,
    STREAMING,
    TAIL,
    TWO,
    WAITING,
    WARN,
    Case,
    add_receivers,
    arrived,
    curl_sender,
    free_and_fresh,
    move,
    start_streaming,
    status_to_end,
    succeeded,
    waiting_sender,
    whole_body,
)
from tests.responses import assert_error, split_response

PHASES = ["head", "waiting", "matched", "first-byte", "mid-body", "after-last"]
PHASE_END = {"matched": 0, "first-byte": FIRST, "mid-body": MID, "after-last": BODY}
"""How much of the body the sender has sent (and the receivers have read) when someone leaves."""
FRAMINGS = ["content-length", "chunked"]
HOWS = ["close", "reset"]
"""How a party leaves: a FIN (close) or a reset (SO_LINGER 0). A receiver after the last byte only
resets: one that closes with FIN having read everything is noticed at the second write after it (the
first is answered by a reset), and when the one write left is the chunked terminator no server can
tell; under Content-Length it has bytes unread, so its close is a reset anyway."""


def _receiver_cells(phases: list[str]) -> list[tuple[str, str]]:
    return [(p, how) for p in phases for how in HOWS if p != "after-last" or how == "reset"]


LEAVERS = ["first", "second"]
"""Which of two receivers (in registration order) leaves: with splice, the second one drains the
sender's pipe itself and the first reads a tee'd copy, so each goes by a different path."""


@pytest.fixture
async def case(
    start_relay: StartRelay,
    raw_clients: list[RawClient],
    payloads: dict[int, Payload],
    request: pytest.FixtureRequest,
) -> Case:
    relay = await start_relay(heartbeat=0)  # no heartbeat line may slip into a sender's status stream
    payload = payloads[BODY]
    chunked = request.node.callspec.params["framing"] == "chunked"
    key = "/m-" + request.node.callspec.id.replace("[", "-").replace("]", "")
    return Case(relay, raw_clients, payload, payload.path.read_bytes(), key, chunked)


@pytest.mark.parametrize("how", HOWS)
@pytest.mark.parametrize("framing", FRAMINGS)
@pytest.mark.parametrize("phase", PHASES)
async def test_the_sender_leaves(case: Case, phase: str, framing: str, how: str) -> None:
    """Waiting receivers keep waiting and get a replacement's body; streaming ones a reset, never an end."""
    with trio.fail_after(10):
        if phase == "head":  # its framing header sent, not the blank line: it never was a sender
            receivers = await add_receivers(case, 2)
            sender = await case.connect()
            await sender.send(case.put_head()[:-2])
            await sender.leave(how)
        elif phase == "waiting":  # registered with the first body bytes, one receiver of two there
            receivers = await add_receivers(case, 1)
            sender = await case.connect()
            await sender.send(case.put_head() + case.framed(0, FIRST))
            assert parse_head(await sender.read_until(b"\r\n\r\n"))[0] == 200
            assert await read_status_until(sender, ONE) == WAITING + ONE  # read all: a close is a FIN
            await sender.leave(how)
            await case.relay.wait_for_pipe(case.key, sender=False, receivers=1)
            receivers += await add_receivers(case, 1, present=1)
        else:
            sender, receivers = await start_streaming(case)
            await move(case, sender, 0, PHASE_END[phase], receivers)
            await sender.leave(how)
            for receiver in receivers:
                rest, clean = await receiver.read_to_end()
                if phase == "after-last" and not case.chunked:
                    # the whole body was through: a sender that goes before its last lines cuts nothing
                    # (a close may go out as a reset if those lines had arrived: the same either way)
                    assert (rest, clean) == (b"", True)
                else:  # Content-Length: fewer bytes than announced; chunked: no last chunk
                    assert (rest, clean) == (b"", False)
        if phase in ("head", "waiting"):
            # the receivers still wait; a replacement sender's whole body reaches them (none of the old)
            snap = case.relay.hub.registry.snapshot(case.key)
            assert snap is not None and not snap.sender and snap.receivers == 2
            async with trio.open_nursery() as nursery:
                for receiver in receivers:
                    nursery.start_soon(whole_body, case, receiver)
                succeeded(await curl_sender(case))
        await free_and_fresh(case)


@pytest.mark.parametrize("framing", FRAMINGS)
@pytest.mark.parametrize(
    ("phase", "how", "leaver"),
    [
        (phase, how, leaver)
        for phase, how in _receiver_cells([p for p in PHASES if p != "waiting"])
        for leaver in (LEAVERS if phase != "head" else ["second"])  # head: the half-sent one comes second
    ],
)
async def test_one_of_two_receivers_leaves(
    case: Case, phase: str, framing: str, how: str, leaver: str
) -> None:
    """The other receiver gets the whole body and a clean end; the sender hears of the drop, then success."""
    with trio.fail_after(10):
        if phase == "head":  # a half-sent head is no receiver: the sender hears nothing of it
            sender = await waiting_sender(case)
            (stays,) = await add_receivers(case, 1)
            assert await read_status_until(sender, ONE) == ONE
            leaves = await case.connect()
            await leaves.send(case.get_head()[:-2])
            await leaves.leave(how)
            got: dict[str, CurlResult] = {}
            async with trio.open_nursery() as nursery:
                nursery.start_soon(curl_into, got, "replacement", case.url)
                assert await read_status_until(sender, STREAMING) == TWO + STREAMING
                nursery.start_soon(whole_body, case, stays)
                await sender.send(case.framed(0, BODY) + case.end)
            succeeded(got["replacement"], case.payload.sha256)
            assert await status_to_end(sender, COMPLETE) == COMPLETE
        else:
            sender, receivers = await start_streaming(case)
            leaves, stays = receivers if leaver == "first" else receivers[::-1]
            if phase == "after-last" and not case.chunked:
                # every byte is in both receivers' sockets: the server has nothing left to write, so
                # it cannot see this one go (TCP tells it nothing) and the transfer is complete
                await move(case, sender, 0, BODY, [leaves, stays], short=(leaves,))
                await arrived(leaves, TAIL - len(leaves.buffer))
                await leaves.leave(how)
                assert await status_to_end(sender, COMPLETE) == COMPLETE
            else:
                start = PHASE_END[phase]
                await move(case, sender, 0, start, [leaves, stays])
                await leaves.leave(how)
                # the rest in RESTS rounds, each read before the next is sent: steps go on after the drop
                cuts = [start + (BODY - start) * i // RESTS for i in range(RESTS + 1)]
                for low, high in itertools.pairwise(cuts):
                    if high > low:
                        await move(case, sender, low, high, [stays])
                await sender.send(case.end)  # (nothing under Content-Length)
                assert await status_to_end(sender, COMPLETE) == WARN + COMPLETE
            assert await stays.read_to_end() == (case.end, True)
        await free_and_fresh(case)


@pytest.mark.parametrize("framing", FRAMINGS)
@pytest.mark.parametrize(("phase", "how"), _receiver_cells(PHASES))
async def test_every_receiver_leaves(case: Case, phase: str, framing: str, how: str) -> None:
    """The sender hears that all receivers are gone (not success), and its status stream ends."""
    with trio.fail_after(10):
        if phase == "head":  # two half-sent heads: the waiting sender hears nothing; replacements work
            sender = await waiting_sender(case)
            for _ in range(2):
                leaves = await case.connect()
                await leaves.send(case.get_head()[:-2])
                await leaves.leave(how)
            got: dict[str, CurlResult] = {}
            async with trio.open_nursery() as nursery:
                nursery.start_soon(curl_into, got, "a", case.url)
                assert await read_status_until(sender, ONE) == ONE
                nursery.start_soon(curl_into, got, "b", case.url)
                assert await read_status_until(sender, STREAMING) == TWO + STREAMING
                await sender.send(case.framed(0, BODY) + case.end)
            succeeded(got["a"], case.payload.sha256)
            succeeded(got["b"], case.payload.sha256)
            assert await status_to_end(sender, COMPLETE) == COMPLETE
        elif phase == "waiting":  # both registered, no sender yet: both go, the pipe goes with them
            for receiver in await add_receivers(case, 2):
                await receiver.leave(how)
        elif phase == "after-last" and not case.chunked:
            # every byte is in both sockets before they go: the server cannot know (see above)
            sender, receivers = await start_streaming(case)
            await move(case, sender, 0, BODY, receivers, short=tuple(receivers))
            for receiver in receivers:
                await arrived(receiver, TAIL - len(receiver.buffer))
                await receiver.leave(how)
            assert await status_to_end(sender, COMPLETE) == COMPLETE
        else:
            sender, receivers = await start_streaming(case)
            start = PHASE_END[phase]
            await move(case, sender, 0, start, receivers)
            for receiver in receivers:
                await receiver.leave(how)

            async def rest() -> None:
                with contextlib.suppress(trio.BrokenResourceError):  # it reads and drops a while, then resets
                    await sender.send(case.framed(start, BODY) + case.end)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(rest)
                assert await status_to_end(sender, ALL_GONE) == ALL_GONE
        await free_and_fresh(case)


@pytest.mark.parametrize("how", HOWS)
@pytest.mark.parametrize("framing", ["chunked"])  # a Content-Length prefix is always payload
async def test_the_sender_leaves_before_its_first_payload_byte(case: Case, framing: str, how: str) -> None:
    """The matched phase, where receivers get no head at the match: the body came with the sender's
    head, but only a chunk-size line of it. They get 502 SENDER_FAILED and its line, not a 200."""
    with trio.fail_after(10):
        receivers = await add_receivers(case, 2)
        sender = await case.connect()
        # one write, one segment: the server reads the chunk line with the head (its body prefix)
        await sender.send(case.put_head() + b"10000\r\n")
        assert parse_head(await sender.read_until(b"\r\n\r\n"))[0] == 200
        assert await read_status_until(sender, STREAMING) == TWO + STREAMING
        await sender.leave(how)
        for receiver in receivers:
            response, clean = await receiver.read_to_end()
            assert clean
            assert_error(
                split_response(response),
                502,
                "SENDER_FAILED",
                "[ERROR] The transfer failed before it started: "
                "the sender disconnected before the end of its body.",
            )
        await free_and_fresh(case)
