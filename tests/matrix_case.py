# The disconnect matrix's case: one n=2 path on a fresh relay, its raw parties, and the moves the cells make.
# Invariant: every wait is on the wire or the registry (no sleeps); each body byte is checked as it is read.
from __future__ import annotations

import hashlib
import socket
from dataclasses import dataclass

import trio

from tests.clients import (
    CurlResult,
    Payload,
    RawClient,
    Relay,
    curl,
    curl_into,
    parse_head,
    raw_pipe,
    read_payload,
    read_status_until,
)

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


async def add_receivers(case: Case, count: int, *, present: int = 0) -> list[RawClient]:
    """`count` more raw receivers waiting on the path (`present` are there), registered in order."""
    clients = []
    for index in range(count):
        client = await case.connect()
        await client.send(case.get_head())
        await case.relay.wait_for_pipe(case.key, receivers=present + index + 1)
        clients.append(client)
    return clients


async def waiting_sender(case: Case) -> RawClient:
    """A raw sender alone on the path, its head sent (no body yet) and its first line read."""
    sender = await case.connect()
    await sender.send(case.put_head())
    assert parse_head(await sender.read_until(b"\r\n\r\n"))[0] == 200
    assert await read_status_until(sender, WAITING) == WAITING
    return sender


async def move(
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


async def arrived(client: RawClient, count: int) -> None:
    """Wait (SO_RCVLOWAT, no polling) until `count` bytes the client has not taken yet are in its socket."""
    if count <= 0:
        return  # the client's buffer holds the rest already
    sock = client.stream.socket
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, count)
    await trio.lowlevel.wait_readable(sock)
    assert len(await sock.recv(count + 1, socket.MSG_PEEK)) == count


async def status_to_end(sender: RawClient, last: bytes) -> bytes:
    """The sender's status lines up to `last`, which must end the stream."""
    seen = await read_status_until(sender, last)
    assert await sender.read_exactly(5) == b"0\r\n\r\n"
    return seen


async def whole_body(case: Case, receiver: RawClient) -> None:
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


async def curl_sender(case: Case) -> CurlResult:
    if case.chunked:
        return await curl("-T", "-", case.url, stdin=case.data)
    return await curl("-T", str(case.payload.path), case.url)


def succeeded(result: CurlResult, sha256: str | None = None) -> None:
    assert result.returncode == 0, result.stderr
    if sha256 is not None:
        assert hashlib.sha256(result.stdout).hexdigest() == sha256
    else:
        assert result.stdout.endswith(COMPLETE), result.stdout
        assert b"[WARN]" not in result.stdout and b"[ERROR]" not in result.stdout


async def free_and_fresh(case: Case) -> None:
    """The path is free, the registry empty, and a fresh n=2 transfer with curl works on it."""
    registry = case.relay.hub.registry
    await case.relay.wait_until_free(case.key)
    assert registry.pending_count == registry.active_count == 0
    got: dict[str, CurlResult] = {}
    async with trio.open_nursery() as nursery:
        for name in ("a", "b"):
            nursery.start_soon(curl_into, got, name, case.url)
        await case.relay.wait_for_pipe(case.key, receivers=2)
        got["sender"] = await curl_sender(case)
    succeeded(got["sender"])
    succeeded(got["a"], case.payload.sha256)
    succeeded(got["b"], case.payload.sha256)
    await case.relay.wait_until_free(case.key)
    assert registry.pending_count == registry.active_count == 0


async def start_streaming(case: Case) -> tuple[RawClient, list[RawClient]]:
    """Both receivers, then the sender: matched, heads read on all sides, no body byte yet."""
    sender, receivers = await raw_pipe(
        case.relay, case.raw_clients, case.key, 2, length=None if case.chunked else BODY
    )
    assert parse_head(await sender.read_until(b"\r\n\r\n"))[0] == 200
    assert await read_status_until(sender, STREAMING) == TWO + STREAMING
    return sender, receivers
