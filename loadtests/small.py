# Small transfers: concurrent sender/receiver pairs of 1 KiB bodies, raw HTTP/1.1 driven by one selector loop.
# Invariant: a transfer counts only if both responses are 200 and the body received is the body sent.
"""The small-transfers mode of bench.py, and loadtests' one HTTP/1.1 response parser."""

from __future__ import annotations

import errno
import os
import secrets
import selectors
import socket
import time
from dataclasses import dataclass

from harness import (  # type: ignore[import-not-found]
    CLK_TCK,
    HOST,
    RssSampler,
    Server,
    cpu_ticks,
    proc_status_kib,
    reset_peak_rss,
)

SMALL_BODY_SIZE = 1024
SMALL_TRANSFER_TIMEOUT = 10.0
SMALL_DRAIN_DEADLINE = 15.0


@dataclass
class SmallResult:
    transfers: int
    seconds: float
    errors: int
    cpu_seconds: float
    client_cpu_seconds: float
    peak_rss_kib: int
    first_error: str = ""

    @property
    def per_second(self) -> float:
        return self.transfers / self.seconds if self.seconds > 0 else 0.0


def parse_response(raw: bytes) -> tuple[int, bytes]:
    """Status and decoded body of a complete HTTP/1.1 response that ended at connection close."""
    head, sep, rest = raw.partition(b"\r\n\r\n")
    if not sep:
        raise ValueError(f"incomplete response head: {raw[:80]!r}")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
        body = bytearray()
        pos = 0
        while True:
            eol = rest.index(b"\r\n", pos)
            length = int(rest[pos:eol].split(b";")[0], 16)
            if length == 0:
                break
            start = eol + 2
            body += rest[start : start + length]
            if rest[start + length : start + length + 2] != b"\r\n":
                raise ValueError("bad chunk framing")
            pos = start + length + 2
        return status, bytes(body)
    if b"content-length" in headers:
        length = int(headers[b"content-length"])
        if len(rest) != length:
            raise ValueError(f"body of {len(rest)} bytes, Content-Length {length}")
    return status, rest


class _Exchange:
    """One HTTP/1.1 request on its own non-blocking connection, its response read until EOF."""

    __slots__ = ("chunks", "ended", "pair", "request", "sent", "sock")

    def __init__(self, port: int, request: bytes, pair: _Pair) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setblocking(False)
        self.request = request
        self.sent = 0
        self.chunks: list[bytes] = []
        self.pair = pair
        self.ended = False
        code = self.sock.connect_ex((HOST, port))
        if code not in (0, errno.EINPROGRESS):
            self.sock.close()
            raise OSError(code, os.strerror(code))

    def close(self) -> None:
        self.ended = True
        self.sock.close()


class _Pair:
    """A receiver's GET and a sender's PUT of one random 1 KiB body on a fresh path."""

    __slots__ = ("body", "deadline", "receiver", "sender")

    def __init__(self, port: int, deadline: float) -> None:
        path = f"/small-{secrets.token_hex(8)}".encode()
        self.body = os.urandom(SMALL_BODY_SIZE)
        self.deadline = deadline
        host = f"Host: {HOST}:{port}\r\n".encode()
        get = b"GET " + path + b" HTTP/1.1\r\n" + host + b"Connection: close\r\n\r\n"
        put = (
            b"PUT " + path + b" HTTP/1.1\r\n" + host + b"Content-Type: application/octet-stream\r\n"
            b"Content-Length: " + str(len(self.body)).encode() + b"\r\nConnection: close\r\n\r\n" + self.body
        )
        self.receiver = _Exchange(port, get, self)
        try:
            self.sender = _Exchange(port, put, self)
        except OSError:
            self.receiver.close()
            raise

    def check(self) -> None:
        """Raise ValueError unless both responses are 200 and the receiver got the body sent."""
        status, got = parse_response(b"".join(self.receiver.chunks))
        if status != 200 or got != self.body:
            raise ValueError(f"receiver: status {status}, {len(got)} bytes, body matches: {got == self.body}")
        send_status, _ = parse_response(b"".join(self.sender.chunks))
        if send_status != 200:
            raise ValueError(f"sender: status {send_status}")


def small_run(port: int, pairs: int, seconds: float) -> tuple[int, float, int, str]:
    """``pairs`` concurrent loops of transfers for ``seconds``, driven by one selector loop (a
    client much cheaper than asyncio streams, so that the servers, not the client, set the pace).
    Returns count, elapsed, errors, first error. Transfers still open at the end get
    SMALL_DRAIN_DEADLINE more to finish (not counted), then are closed."""
    done = errors = 0
    first_error = ""
    selector = selectors.DefaultSelector()
    live: set[_Pair] = set()
    start = time.monotonic()
    stop_at = start + seconds

    def count_error(exc: BaseException) -> None:
        nonlocal errors, first_error
        errors += 1
        first_error = first_error or f"{type(exc).__name__}: {exc}"

    def fail(pair: _Pair, exc: BaseException) -> None:
        count_error(exc)
        finish(pair)

    def finish(pair: _Pair) -> None:
        for exchange in (pair.receiver, pair.sender):
            if not exchange.ended:
                selector.unregister(exchange.sock)
                exchange.close()
        live.discard(pair)

    def launch() -> None:
        now = time.monotonic()
        if now >= stop_at:
            return
        try:
            pair = _Pair(port, now + SMALL_TRANSFER_TIMEOUT)
        except OSError as exc:
            count_error(exc)
            return
        live.add(pair)
        selector.register(pair.receiver.sock, selectors.EVENT_WRITE, pair.receiver)
        selector.register(pair.sender.sock, selectors.EVENT_WRITE, pair.sender)

    def on_event(exchange: _Exchange, mask: int) -> None:
        nonlocal done
        pair = exchange.pair
        if mask & selectors.EVENT_WRITE:
            exchange.sent += exchange.sock.send(exchange.request[exchange.sent :])
            if exchange.sent == len(exchange.request):
                selector.modify(exchange.sock, selectors.EVENT_READ, exchange)
            return
        data = exchange.sock.recv(65536)
        if data:
            exchange.chunks.append(data)
            return
        selector.unregister(exchange.sock)
        exchange.close()  # Connection: close, so the response ends at EOF
        if pair.receiver.ended and pair.sender.ended:
            live.discard(pair)
            pair.check()
            if time.monotonic() <= stop_at:
                done += 1
            launch()

    try:
        for _ in range(pairs):
            launch()
        hard_stop = stop_at + SMALL_DRAIN_DEADLINE
        while live and time.monotonic() < hard_stop:
            for key, mask in selector.select(timeout=0.05):
                exchange = key.data
                if exchange.ended:
                    continue
                try:
                    on_event(exchange, mask)
                except (OSError, ValueError, IndexError) as exc:
                    fail(exchange.pair, exc)
                    launch()
            now = time.monotonic()
            for pair in [p for p in live if p.deadline < now]:
                fail(pair, TimeoutError(f"no complete transfer in {SMALL_TRANSFER_TIMEOUT:g} s"))
                launch()
    finally:
        for pair in list(live):
            finish(pair)
        selector.close()
    return done, seconds, errors, first_error


def run_small(server: Server, pairs: int, seconds: float) -> SmallResult:
    reset_ok = reset_peak_rss(server.pid)
    cpu_before = cpu_ticks(server.pid)
    client_before = time.process_time()
    with RssSampler(server.pid) as sampler:
        done, elapsed, errors, first_error = small_run(server.port, pairs, seconds)
    client_cpu = time.process_time() - client_before
    cpu = (cpu_ticks(server.pid) - cpu_before) / CLK_TCK
    server.check_alive()
    hwm = proc_status_kib(server.pid, "VmHWM") if reset_ok else None
    return SmallResult(done, elapsed, errors, cpu, client_cpu, max(hwm or 0, sampler.peak), first_error)
