# A transfer's bytes as they flow: one at a time, 100-continue, HTTP/1.0, chunk lines, a lost receiver, cuts.
# Invariant: bytes are judged on the wire as they arrive; a cut sender never ends a receiver's body cleanly.
from __future__ import annotations

import hashlib
import random

import pytest
import trio

from tests.clients import CurlResult, RawClient, Relay, curl, curl_into, parse_head, raw_pipe, read_payload

MiB = 1 << 20


async def test_bytes_flow_as_they_come(relay: Relay, raw_clients: list[RawClient]) -> None:
    """A sender writing one byte at a time: each byte reaches the receiver before the next is sent."""
    with trio.fail_after(15):
        receiver = await RawClient.connect(relay)
        sender = await RawClient.connect(relay)
        raw_clients += [receiver, sender]
        await receiver.send(b"GET /drip HTTP/1.1\r\nHost: x\r\n\r\n")
        await relay.wait_for_pipe("/drip", receivers=1)
        await sender.send(b"PUT /drip HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        head = await receiver.read_until(b"\r\n\r\n")
        assert parse_head(head)[1]["transfer-encoding"] == "chunked"
        for index in range(20):
            byte = bytes([65 + index])
            await sender.send(b"1\r\n" + byte + b"\r\n")
            assert await receiver.read_until(b"\r\n") == b"1\r\n"
            assert await receiver.read_exactly(3) == byte + b"\r\n"
        await sender.send(b"0\r\n\r\n")
        assert await receiver.read_exactly(5) == b"0\r\n\r\n"
        status_stream, clean = await sender.read_to_end()
        assert clean
        assert b"[INFO] Transfer complete.\n" in status_stream


async def test_expect_100_continue_is_answered_at_once(relay: Relay, raw_clients: list[RawClient]) -> None:
    with trio.fail_after(10):
        sender = await RawClient.connect(relay)
        raw_clients.append(sender)
        await sender.send(
            b"PUT /expect HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"
        )
        # nothing of the body has been sent: the server must answer 100 and then the 200 status stream
        assert await sender.read_until(b"\r\n\r\n") == b"HTTP/1.1 100 Continue\r\n\r\n"
        status, headers, _ = parse_head(await sender.read_until(b"\r\n\r\n"))
        assert status == 200
        assert headers["content-type"] == "text/plain; charset=utf-8"
        assert headers["transfer-encoding"] == "chunked"
        line = b"[INFO] Waiting for 1 receiver(s) to connect...\n"
        assert await sender.read_until(b"\r\n") == b"%x\r\n" % len(line)
        assert await sender.read_exactly(len(line) + 2) == line + b"\r\n"
        got: dict[str, CurlResult] = {}
        async with trio.open_nursery() as nursery:
            nursery.start_soon(curl_into, got, "r", f"{relay.url}/expect")
            await sender.send(b"hello")
        assert got["r"].stdout == b"hello"


async def test_http10_sender_and_receiver(relay: Relay, raw_clients: list[RawClient]) -> None:
    with trio.fail_after(10):
        receiver = await RawClient.connect(relay)
        raw_clients.append(receiver)
        await receiver.send(b"GET /old HTTP/1.0\r\n\r\n")
        await relay.wait_for_pipe("/old", receivers=1)
        sender = await RawClient.connect(relay)
        raw_clients.append(sender)
        await sender.send(b"POST /old HTTP/1.0\r\nContent-Length: 11\r\n\r\nhello 1.0\r\n")
        received, clean = await receiver.read_to_end()
        sent, sender_clean = await sender.read_to_end()
    assert clean and sender_clean
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 200 OK\r\n")
    assert parse_head(head + b"\r\n\r\n")[1]["content-length"] == "11"
    assert body == b"hello 1.0\r\n"
    sent_head, _, lines = sent.partition(b"\r\n\r\n")
    assert sent_head.startswith(b"HTTP/1.0 200 OK\r\n")
    assert b"transfer-encoding" not in sent_head.lower()
    assert lines.decode().splitlines() == [
        "[INFO] Streaming to 1 receiver(s)...",
        "[INFO] Upload complete.",
        "[INFO] Transfer complete.",
    ]


async def test_http10_receiver_of_chunked_upload_gets_raw_body(
    relay: Relay, raw_clients: list[RawClient]
) -> None:
    with trio.fail_after(10):
        receiver = await RawClient.connect(relay)
        raw_clients.append(receiver)
        await receiver.send(b"GET /old-chunked HTTP/1.0\r\n\r\n")
        await relay.wait_for_pipe("/old-chunked", receivers=1)
        sent = await curl("-T", "-", f"{relay.url}/old-chunked", stdin=b"streamed to 1.0\n")
        received, clean = await receiver.read_to_end()
    assert sent.returncode == 0
    assert clean
    head, _, body = received.partition(b"\r\n\r\n")
    _, headers, _ = parse_head(head + b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 200 OK")
    assert "transfer-encoding" not in headers and "content-length" not in headers
    assert body == b"streamed to 1.0\n"


async def test_many_small_chunks_are_reassembled(relay: Relay, raw_clients: list[RawClient]) -> None:
    """A chunked upload of many tiny chunks (more pieces per read than writev takes)."""
    pieces = [bytes([i % 251]) * (1 + i % 7) for i in range(5000)]
    body = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"
    with trio.fail_after(15):
        got: dict[str, CurlResult] = {}
        async with trio.open_nursery() as nursery:
            nursery.start_soon(curl_into, got, "r", f"{relay.url}/tiny")
            await relay.wait_for_pipe("/tiny", receivers=1)
            sender = await RawClient.connect(relay)
            raw_clients.append(sender)
            await sender.send(b"PUT /tiny HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + body)
            _, clean = await sender.read_to_end()
            assert clean
    assert got["r"].stdout == b"".join(pieces)


async def test_fan_out_survives_losing_the_last_receiver(relay: Relay, raw_clients: list[RawClient]) -> None:
    """Under Content-Length (splice: the last receiver drains the source pipe itself)."""
    with trio.fail_after(15):
        receivers = []
        for index in range(3):
            client = await RawClient.connect(relay)
            raw_clients.append(client)
            await client.send(b"GET /lose?n=3 HTTP/1.1\r\nHost: x\r\n\r\n")
            await relay.wait_for_pipe("/lose", receivers=index + 1)
            receivers.append(client)
        total = 64 * 4096
        sender = await RawClient.connect(relay)
        raw_clients.append(sender)
        await sender.send(b"PUT /lose?n=3 HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % total)
        for client in receivers:
            await client.read_until(b"\r\n\r\n")
        # the pipe order is the arrival order: the third receiver to arrive is the last one
        await receivers[2].aclose()
        sent = 0
        body = bytearray()
        while sent < total:
            piece = bytes([sent // 4096 % 256]) * 4096
            await sender.send(piece)
            sent += len(piece)
            body += piece
            for client in receivers[:2]:
                assert await client.read_exactly(len(piece)) == piece
        status_stream, _ = await sender.read_to_end()
    assert b"[WARN] A receiver disconnected; streaming to 2 receiver(s).\n" in status_stream
    assert b"[INFO] Transfer complete.\n" in status_stream


@pytest.mark.parametrize("n", [1, 3])
async def test_canonical_chunks_reach_chunked_receivers_as_sent(
    relay: Relay, raw_clients: list[RawClient], n: int
) -> None:
    """Canonical chunk lines are the sender's own bytes at every receiver (uppercase hex and all),
    not one chunk per read; the end is ours, written once the sender's body is complete."""
    chunks = b"5\r\nhello\r\nA\r\n0123456789\r\n3\r\nabc\r\n"
    with trio.fail_after(10):
        sender, receivers = await raw_pipe(relay, raw_clients, f"/verbatim-{n}", n)
        await sender.send(chunks)
        for receiver in receivers:
            assert await receiver.read_exactly(len(chunks)) == chunks
        await sender.send(b"0\r\n\r\n")
        for receiver in receivers:
            body, clean = await receiver.read_to_end()
            assert (body, clean) == (b"0\r\n\r\n", True)


async def test_non_canonical_chunk_lines_are_reframed(relay: Relay, raw_clients: list[RawClient]) -> None:
    """Extensions, whitespace and trailers never reach receivers: those lines are written anew."""
    with trio.fail_after(10):
        sender, (receiver,) = await raw_pipe(relay, raw_clients, "/reframe")
        await sender.send(
            b'5;name="v"\r\nhello\r\n3 \r\nabc\r\n0003\r\nxyz\r\n0;last\r\nX-Trailer: t\r\n\r\n'
        )
        body, clean = await receiver.read_to_end()
    assert clean
    assert body == b"5\r\nhello\r\n3\r\nabc\r\n0003\r\nxyz\r\n0\r\n\r\n"


async def test_sender_cut_after_its_last_chunk_line_never_ends_the_receivers_body(
    relay: Relay, raw_clients: list[RawClient]
) -> None:
    """The sender's `0` line goes nowhere: only a complete body (blank line after it) ends a receiver's."""
    with trio.fail_after(10):
        sender, (receiver,) = await raw_pipe(relay, raw_clients, "/cut-last")
        await sender.send(b"5\r\nhello\r\n0\r\n")
        assert await receiver.read_exactly(10) == b"5\r\nhello\r\n"
        await sender.aclose()
        body, clean = await receiver.read_to_end()
    assert not clean  # reset: curl and browsers see a failed transfer
    assert b"0\r\n" not in body


async def test_sender_cut_mid_chunk_never_ends_the_receivers_body(
    relay: Relay, raw_clients: list[RawClient]
) -> None:
    with trio.fail_after(10):
        sender, (receiver,) = await raw_pipe(relay, raw_clients, "/cut-mid")
        await sender.send(b"a\r\n01234")
        assert await receiver.read_exactly(8) == b"a\r\n01234"
        await sender.aclose()
        body, clean = await receiver.read_to_end()
    assert not clean
    assert body == b""


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_a_fast_sender_that_pauses_is_not_held_back(
    relay: Relay, raw_clients: list[RawClient], chunked: bool
) -> None:
    """After a fast burst the server waits for fuller socket reads (SO_RCVLOWAT), but only briefly:
    a few bytes followed by a pause reach the receiver at once, not when more bytes come."""
    rounds = 4
    burst = random.Random(7).randbytes(4 * MiB)
    tail = b"tail!"
    key = f"/pause-{int(chunked)}"
    # A Content-Length body announces more than is sent: it is still open after the last tail.
    length = None if chunked else rounds * (len(burst) + len(tail)) + 100
    if chunked:
        pieces = [burst[i : i + 65536] for i in range(0, len(burst), 65536)]
        framed_burst = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces)
        framed_tail = b"5\r\n" + tail + b"\r\n"
    else:
        framed_burst, framed_tail = burst, tail
    with trio.fail_after(30):
        sender, (receiver,) = await raw_pipe(relay, raw_clients, key, length=length)
        for _ in range(rounds):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(sender.send, framed_burst)
                got = await read_payload(receiver, len(burst), chunked=chunked)
            assert hashlib.sha256(got).digest() == hashlib.sha256(burst).digest()
            await trio.sleep(0.05)  # a pause: the server finds the socket empty
            await sender.send(framed_tail)
            # The server waits at most milliseconds for a fuller read; the idle limit is minutes.
            with trio.fail_after(2):
                assert await read_payload(receiver, len(tail), chunked=chunked) == tail
