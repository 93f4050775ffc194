# The disconnect matrix: who leaves (the sender, one of two receivers, every receiver) x when x framing
# x engine, judged on the wire. Invariant: the path is freed, survivors hear the truth, a cut body never ends.
#
# Cells pinned elsewhere, not repeated here: one of two receivers leaving while it waits, with no
# sender (test_leaving.py::test_a_waiting_receiver_that_leaves_is_forgotten_at_once, close and reset)
# and with a waiting sender told "0 of 2" (test_disconnects.py::test_receiver_leaving_updates_the_
# waiting_sender); n=1 variants of the sender cut mid-body (test_disconnects.py::test_sender_dying_mid_
# body_under_*), of a receiver gone after the heads (..._one_receiver_dying..., ..._all_receivers_gone...),
# a sender cut after its `0` line (test_transfer.py), and a multipart sender gone before its part
# began (502: test_disconnects.py::test_sender_gone_before_any_byte_gives_receivers_an_error).
from __future__ import annotations

import contextlib
import hashlib
import itertools
import socket
from dataclasses import dataclass

import pytest
import trio

from tests.clients import (
    CurlResult,
    Payload,
    RawClient,
    Relay,
    StartRelay,
    curl,
    curl_into,
    parse_head,
    raw_pipe,
    read_payload,
    read_status_until,
)
from tests.responses import assert_error, split_response

BODY = 1 << 20
"""The body (the 1 MiB payload): small, so that a case is fast; 16 of the raw sender's chunks."""
FIRST = 64 * 1024
MID = BODY // 2
PIECE = 64 * 1024
"""The raw sender's chunk size; every phase boundary is a multiple of it."""
RESTS = 4
"""After one of two receivers left, the sender sends the rest in this many rounds, each one read by the
other receiver before the next goes: at least this many server steps follow the leave."""
TAIL = 16 * 1024
"""Content-Length, after the last byte: what a leaving receiver has not read when it goes."""

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


WAITING = b"[INFO] Waiting for 2 receiver(s) to connect...\n"
ONE = b"[INFO] 1 of 2 receiver(s) connected.\n"
TWO = b"[INFO] 2 of 2 receiver(s) connected.\n"
STREAMING = b"[INFO] Streaming to 2 receiver(s)...\n"
WARN = b"[WARN] A receiver disconnected; streaming to 1 receiver(s).\n"
ALL_GONE = b"[ERROR] All receivers disconnected.\n"
COMPLETE = b"[INFO] Upload complete.\n[INFO] Transfer complete.\n"


@dataclass
class Case:
    relay: Relay
    raw_clients: list[RawClient]
    payload: Payload
    data: bytes
    key: str
    chunked: bool

    @property
    def url(self) -> str:
        return f"{self.relay.url}{self.key}?n=2"

    @property
    def end(self) -> bytes:
        """What ends a body after its payload: the last chunk, or nothing under Content-Length."""
        return b"0\r\n\r\n" if self.chunked else b""

    def put_head(self) -> bytes:
        framing = b"Transfer-Encoding: chunked" if self.chunked else b"Content-Length: %d" % BODY
        return b"PUT %s?n=2 HTTP/1.1\r\nHost: x\r\n%s\r\n\r\n" % (self.key.encode(), framing)

    def get_head(self) -> bytes:
        return b"GET %s?n=2 HTTP/1.1\r\nHost: x\r\n\r\n" % self.key.encode()

    def framed(self, start: int, end: int) -> bytes:
        """The body's bytes [start, end) as the raw sender sends them (chunks of PIECE if chunked)."""
        plain = self.data[start:end]
        if not self.chunked:
            return plain
        return b"".join(
            b"%x\r\n%s\r\n" % (len(plain[i : i + PIECE]), plain[i : i + PIECE])
            for i in range(0, len(plain), PIECE)
        )

    async def connect(self) -> RawClient:
        client = await RawClient.connect(self.relay)
        self.raw_clients.append(client)
        return client


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


async def _receivers(case: Case, count: int, *, present: int = 0) -> list[RawClient]:
    """`count` more raw receivers waiting on the path (`present` are there), registered in order."""
    clients = []
    for index in range(count):
        client = await case.connect()
        await client.send(case.get_head())
        await case.relay.wait_for_pipe(case.key, receivers=present + index + 1)
        clients.append(client)
    return clients


async def _waiting_sender(case: Case) -> RawClient:
    """A raw sender alone on the path, its head sent (no body yet) and its first line read."""
    sender = await case.connect()
    await sender.send(case.put_head())
    assert parse_head(await sender.read_until(b"\r\n\r\n"))[0] == 200
    assert await read_status_until(sender, WAITING) == WAITING
    return sender


async def _move(
    case: Case,
    sender: RawClient,
    start: int,
    end: int,
    readers: list[RawClient],
    *,
    short: tuple[RawClient, ...] = (),
) -> None:
    """The sender sends body bytes [start, end); each reader reads exactly that payload at once (the
    `short` ones stop TAIL bytes before the end). Concurrent, as lockstep needs every reader."""

    async def read(client: RawClient) -> None:
        stop = end - TAIL if client in short else end
        assert await read_payload(client, stop - start, chunked=case.chunked) == case.data[start:stop]

    async with trio.open_nursery() as nursery:
        nursery.start_soon(sender.send, case.framed(start, end))
        for client in readers:
            nursery.start_soon(read, client)


async def _arrived(client: RawClient, count: int) -> None:
    """Wait (SO_RCVLOWAT, no polling) until `count` bytes the client has not taken yet are in its socket."""
    if count <= 0:
        return  # the client's buffer holds the rest already
    sock = client.stream.socket
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, count)
    await trio.lowlevel.wait_readable(sock)
    assert len(await sock.recv(count + 1, socket.MSG_PEEK)) == count


async def _status_to_end(sender: RawClient, last: bytes) -> bytes:
    """The sender's status lines up to `last`, which must end the stream."""
    seen = await read_status_until(sender, last)
    assert await sender.read_exactly(5) == b"0\r\n\r\n"
    return seen


async def _whole_body(case: Case, receiver: RawClient) -> None:
    """A raw receiver gets a 200, the announced framing, the whole body and a clean end."""
    status, headers, _ = parse_head(await receiver.read_until(b"\r\n\r\n"))
    assert status == 200
    if case.chunked:
        assert headers["transfer-encoding"] == "chunked"
    else:
        assert headers["content-length"] == str(BODY)
    got = await read_payload(receiver, BODY, chunked=case.chunked)
    assert hashlib.sha256(got).hexdigest() == case.payload.sha256
    assert await receiver.read_to_end() == (case.end, True)


async def _curl_sender(case: Case) -> CurlResult:
    if case.chunked:
        return await curl("-T", "-", case.url, stdin=case.data)
    return await curl("-T", str(case.payload.path), case.url)


def _succeeded(result: CurlResult, sha256: str | None = None) -> None:
    assert result.returncode == 0, result.stderr
    if sha256 is not None:
        assert hashlib.sha256(result.stdout).hexdigest() == sha256
    else:
        assert result.stdout.endswith(COMPLETE), result.stdout
        assert b"[WARN]" not in result.stdout and b"[ERROR]" not in result.stdout


async def _free_and_fresh(case: Case) -> None:
    """The path is free, the registry empty, and a fresh n=2 transfer with curl works on it."""
    registry = case.relay.hub.registry
    await case.relay.wait_until_free(case.key)
    assert registry.pending_count == registry.active_count == 0
    got: dict[str, CurlResult] = {}
    async with trio.open_nursery() as nursery:
        for name in ("a", "b"):
            nursery.start_soon(curl_into, got, name, case.url)
        await case.relay.wait_for_pipe(case.key, receivers=2)
        got["sender"] = await _curl_sender(case)
    _succeeded(got["sender"])
    _succeeded(got["a"], case.payload.sha256)
    _succeeded(got["b"], case.payload.sha256)
    await case.relay.wait_until_free(case.key)
    assert registry.pending_count == registry.active_count == 0


async def _streaming(case: Case) -> tuple[RawClient, list[RawClient]]:
    """Both receivers, then the sender: matched, heads read on all sides, no body byte yet."""
    sender, receivers = await raw_pipe(
        case.relay, case.raw_clients, case.key, 2, length=None if case.chunked else BODY
    )
    assert parse_head(await sender.read_until(b"\r\n\r\n"))[0] == 200
    assert await read_status_until(sender, STREAMING) == TWO + STREAMING
    return sender, receivers


@pytest.mark.parametrize("how", HOWS)
@pytest.mark.parametrize("framing", FRAMINGS)
@pytest.mark.parametrize("phase", PHASES)
async def test_the_sender_leaves(case: Case, phase: str, framing: str, how: str) -> None:
    """Waiting receivers keep waiting and get a replacement's body; streaming ones a reset, never an end."""
    with trio.fail_after(10):
        if phase == "head":  # its framing header sent, not the blank line: it never was a sender
            receivers = await _receivers(case, 2)
            sender = await case.connect()
            await sender.send(case.put_head()[:-2])
            await sender.leave(how)
        elif phase == "waiting":  # registered with the first body bytes, one receiver of two there
            receivers = await _receivers(case, 1)
            sender = await case.connect()
            await sender.send(case.put_head() + case.framed(0, FIRST))
            assert parse_head(await sender.read_until(b"\r\n\r\n"))[0] == 200
            assert await read_status_until(sender, ONE) == WAITING + ONE  # read all: a close is a FIN
            await sender.leave(how)
            await case.relay.wait_for_pipe(case.key, sender=False, receivers=1)
            receivers += await _receivers(case, 1, present=1)
        else:
            sender, receivers = await _streaming(case)
            await _move(case, sender, 0, PHASE_END[phase], receivers)
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
                    nursery.start_soon(_whole_body, case, receiver)
                _succeeded(await _curl_sender(case))
        await _free_and_fresh(case)


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
            sender = await _waiting_sender(case)
            (stays,) = await _receivers(case, 1)
            assert await read_status_until(sender, ONE) == ONE
            leaves = await case.connect()
            await leaves.send(case.get_head()[:-2])
            await leaves.leave(how)
            got: dict[str, CurlResult] = {}
            async with trio.open_nursery() as nursery:
                nursery.start_soon(curl_into, got, "replacement", case.url)
                assert await read_status_until(sender, STREAMING) == TWO + STREAMING
                nursery.start_soon(_whole_body, case, stays)
                await sender.send(case.framed(0, BODY) + case.end)
            _succeeded(got["replacement"], case.payload.sha256)
            assert await _status_to_end(sender, COMPLETE) == COMPLETE
        else:
            sender, receivers = await _streaming(case)
            leaves, stays = receivers if leaver == "first" else receivers[::-1]
            if phase == "after-last" and not case.chunked:
                # every byte is in both receivers' sockets: the server has nothing left to write, so
                # it cannot see this one go (TCP tells it nothing) and the transfer is complete
                await _move(case, sender, 0, BODY, [leaves, stays], short=(leaves,))
                await _arrived(leaves, TAIL - len(leaves.buffer))
                await leaves.leave(how)
                assert await _status_to_end(sender, COMPLETE) == COMPLETE
            else:
                start = PHASE_END[phase]
                await _move(case, sender, 0, start, [leaves, stays])
                await leaves.leave(how)
                # the rest in RESTS rounds, each read before the next is sent: steps go on after the drop
                cuts = [start + (BODY - start) * i // RESTS for i in range(RESTS + 1)]
                for low, high in itertools.pairwise(cuts):
                    if high > low:
                        await _move(case, sender, low, high, [stays])
                await sender.send(case.end)  # (nothing under Content-Length)
                assert await _status_to_end(sender, COMPLETE) == WARN + COMPLETE
            assert await stays.read_to_end() == (case.end, True)
        await _free_and_fresh(case)


@pytest.mark.parametrize("framing", FRAMINGS)
@pytest.mark.parametrize(("phase", "how"), _receiver_cells(PHASES))
async def test_every_receiver_leaves(case: Case, phase: str, framing: str, how: str) -> None:
    """The sender hears that all receivers are gone (not success), and its status stream ends."""
    with trio.fail_after(10):
        if phase == "head":  # two half-sent heads: the waiting sender hears nothing; replacements work
            sender = await _waiting_sender(case)
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
            _succeeded(got["a"], case.payload.sha256)
            _succeeded(got["b"], case.payload.sha256)
            assert await _status_to_end(sender, COMPLETE) == COMPLETE
        elif phase == "waiting":  # both registered, no sender yet: both go, the pipe goes with them
            for receiver in await _receivers(case, 2):
                await receiver.leave(how)
        elif phase == "after-last" and not case.chunked:
            # every byte is in both sockets before they go: the server cannot know (see above)
            sender, receivers = await _streaming(case)
            await _move(case, sender, 0, BODY, receivers, short=tuple(receivers))
            for receiver in receivers:
                await _arrived(receiver, TAIL - len(receiver.buffer))
                await receiver.leave(how)
            assert await _status_to_end(sender, COMPLETE) == COMPLETE
        else:
            sender, receivers = await _streaming(case)
            start = PHASE_END[phase]
            await _move(case, sender, 0, start, receivers)
            for receiver in receivers:
                await receiver.leave(how)

            async def rest() -> None:
                with contextlib.suppress(trio.BrokenResourceError):  # it reads and drops a while, then resets
                    await sender.send(case.framed(start, BODY) + case.end)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(rest)
                assert await _status_to_end(sender, ALL_GONE) == ALL_GONE
        await _free_and_fresh(case)


@pytest.mark.parametrize("how", HOWS)
@pytest.mark.parametrize("framing", ["chunked"])  # a Content-Length prefix is always payload
async def test_the_sender_leaves_before_its_first_payload_byte(case: Case, framing: str, how: str) -> None:
    """The matched phase, where receivers get no head at the match: the body came with the sender's
    head, but only a chunk-size line of it. They get 502 SENDER_FAILED and its line, not a 200."""
    with trio.fail_after(10):
        receivers = await _receivers(case, 2)
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
        await _free_and_fresh(case)
