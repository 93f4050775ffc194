# Hostile clients for the flood tests and the flood benchmark: one connection that sends an attack's
# batches as fast as the socket takes them. Invariant: every attack is bounded in time and says how it ended.
"""One connection per attack, h2c by prior knowledge or h2 over TLS (ALPN). `run_attack(name, ...)`
sends the attack's batches (attack_plans.py) until the server ends the connection or `seconds` pass,
reading what the server sends (unless `read=False`: a client that never reads) and noting its GOAWAY.
Used by tests/net/test_floods.py and test_h2_limits.py (each attacker its own process, through the
command line below) and by loadtests/floods.py."""

from __future__ import annotations

import ssl
import time
from collections.abc import Callable, Iterator

import trio

from loadtests.attack_plans import (
    ACK,
    DATA,
    END_STREAM,
    GOAWAY,
    HEADERS,
    HTTP1,
    INITIAL_WINDOW_SIZE,
    MAX_WINDOW,
    PLANS,
    RST_STREAM,
    SETTINGS,
    WINDOW_UPDATE,
    Ending,
    Plan,
    opening,
)


class _Reader:
    """The server's frames, judged by their 9-byte heads (payloads are skipped, GOAWAY's code read)."""

    def __init__(self, ending: Ending, started: float) -> None:
        self.ending = ending
        self.started = started
        self._buffer = bytearray()

    def feed(self, data: bytes) -> None:
        ending = self.ending
        ending.received += len(data)
        buffer = self._buffer
        buffer += data
        offset = 0
        while len(buffer) - offset >= 9:
            length = int.from_bytes(buffer[offset : offset + 3], "big")
            if len(buffer) - offset < 9 + length:
                break
            kind, flags = buffer[offset + 3], buffer[offset + 4]
            payload = buffer[offset + 9 : offset + 9 + length]
            if kind == GOAWAY and ending.goaway is None and length >= 8:
                ending.goaway = int.from_bytes(payload[4:8], "big")
                ending.goaway_debug = bytes(payload[8:]).decode("latin-1")
                ending.goaway_at = time.monotonic() - self.started
            elif kind == WINDOW_UPDATE and length == 4:
                increment = int.from_bytes(payload, "big") & MAX_WINDOW
                stream_id = int.from_bytes(buffer[offset + 5 : offset + 9], "big") & MAX_WINDOW
                if stream_id:
                    ending.stream_windows[stream_id] = ending.window(stream_id) + increment
                else:
                    ending.connection_window += increment
            elif kind == SETTINGS and not flags & ACK:
                for at in range(0, length - 5, 6):
                    if int.from_bytes(payload[at : at + 2], "big") == INITIAL_WINDOW_SIZE:
                        new = int.from_bytes(payload[at + 2 : at + 6], "big")
                        for stream_id in ending.stream_windows:
                            ending.stream_windows[stream_id] += new - ending.initial_window
                        ending.initial_window = new
            elif kind == RST_STREAM:
                ending.resets += 1
                ending.answered += 1
            elif kind in (DATA, HEADERS) and flags & END_STREAM:
                ending.answered += 1
            offset += 9 + length
        del buffer[:offset]


async def run_attack(
    name: str,
    host: str,
    port: int,
    *,
    seconds: float,
    read: bool = True,
    tls: ssl.SSLContext | None = None,
    plan: Plan | None = None,
    on_start: Callable[[], None] | None = None,
    rcvbuf: int | None = None,
) -> Ending:
    """Run attack `name` on one connection for at most `seconds`; how it ended. `read=False`: never
    read what the server sends (its replies pile up on its side). `on_start` is called once the
    first batch of the attack is sent. `rcvbuf`: our SO_RCVBUF (set before connecting, so the
    server's replies fill it soon when we do not read)."""
    ending = Ending(name)
    stream: trio.abc.Stream = await _connect(host, port, rcvbuf)
    if tls is not None:
        tls.set_alpn_protocols(["http/1.1" if name in HTTP1 else "h2"])  # (before the context is used)
        tls_stream = trio.SSLStream(stream, tls, server_hostname=host, https_compatible=True)
        await tls_stream.do_handshake()
        stream = tls_stream
    started = time.monotonic()
    reader = _Reader(ending, started)
    http1 = name in HTTP1
    try:
        with trio.move_on_after(seconds) as window:
            async with trio.open_nursery() as nursery:
                if read:  # (the server's end cancels the whole attack)
                    nursery.start_soon(_read, stream, reader, ending, http1, nursery.cancel_scope)
                await _send(stream, (plan or PLANS[name]())(ending), ending, http1, on_start)
                if ending.goaway is not None or ending.closed_by_server:
                    with trio.move_on_after(5):  # told to go: until the server closes
                        if read:
                            await trio.sleep_forever()
                        await _until_closed(stream, reader, ending, http1)
                nursery.cancel_scope.cancel()
        if window.cancelled_caught and ending.goaway is None:
            ending.closed_by_server = False  # (our own deadline: a TLS stream cut mid-write reads as broken)
    finally:
        ending.seconds = time.monotonic() - started
        with trio.move_on_after(1):
            await stream.aclose()
    return ending


async def _connect(host: str, port: int, rcvbuf: int | None) -> trio.SocketStream:
    if rcvbuf is None:
        return await trio.open_tcp_stream(host, port)
    sock = trio.socket.socket()
    sock.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_RCVBUF, rcvbuf)
    sock.setsockopt(trio.socket.IPPROTO_TCP, trio.socket.TCP_MAXSEG, 536)  # (small segments: small buffers)
    try:
        await sock.connect((host, port))
    except BaseException:
        sock.close()
        raise
    return trio.SocketStream(sock)


async def _send(
    stream: trio.abc.Stream,
    batches: Iterator[bytes],
    ending: Ending,
    http1: bool,
    on_start: Callable[[], None] | None,
) -> None:
    try:
        if not http1:
            await stream.send_all(opening())
        for batch in batches:
            if batch:
                await stream.send_all(batch)
                if not ending.sent and on_start is not None:
                    on_start()
                ending.sent += len(batch)
            else:
                await trio.sleep(0.001)
            if ending.goaway is not None:
                return
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        ending.closed_by_server = True


async def _read(
    stream: trio.abc.Stream, reader: _Reader, ending: Ending, http1: bool, scope: trio.CancelScope
) -> None:
    tail = b""  # (the end of the last read: a header may be cut across two)
    try:
        while True:
            data = await stream.receive_some(1 << 20)
            if not data:
                break
            if http1:
                if not ending.first_status:
                    ending.first_status = data[:64]
                ending.told_to_close |= b"\r\nConnection: close\r\n" in tail + data
                tail = data[-32:]
                ending.received += len(data)
                ending.answered += data.count(b"HTTP/1.1 ")
            else:
                reader.feed(data)
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        pass
    ending.closed_by_server = True
    scope.cancel()


async def _until_closed(stream: trio.abc.Stream, reader: _Reader, ending: Ending, http1: bool) -> None:
    """After a GOAWAY: read (and drop) until the server closes, for at most 5 s."""
    with trio.move_on_after(5):
        try:
            while data := await stream.receive_some(1 << 20):
                if not http1:
                    reader.feed(data)
            ending.closed_by_server = True
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            ending.closed_by_server = True


def main() -> None:
    """`python -m loadtests.h2attacks NAME --port P [--tls] [--seconds S] [--connections C]
    [--no-read]`: run one attack (C connections at once) and print each Ending as a JSON line."""
    import argparse
    import dataclasses
    import json

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("name", choices=sorted(PLANS))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--tls", action="store_true", help="h2 over TLS (the certificate is not checked)")
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--connections", type=int, default=1)
    parser.add_argument("--no-read", dest="read", action="store_false")
    parser.add_argument("--rcvbuf", type=int, help="SO_RCVBUF of each connection (bytes)")
    parser.add_argument("--announce", action="store_true", help="print `started` once the first batch is out")
    args = parser.parse_args()
    context = None
    if args.tls:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    endings: list[Ending] = []
    announced = False

    def started() -> None:
        nonlocal announced
        if args.announce and not announced:
            announced = True
            print("started", flush=True)

    async def one() -> None:
        try:
            endings.append(
                await run_attack(
                    args.name,
                    args.host,
                    args.port,
                    seconds=args.seconds,
                    read=args.read,
                    tls=context,
                    on_start=started,
                    rcvbuf=args.rcvbuf,
                )
            )
        except OSError as exc:
            endings.append(Ending(args.name, notes=[f"connect failed: {exc}"]))

    async def attack() -> None:
        async with trio.open_nursery() as nursery:
            for _ in range(args.connections):
                nursery.start_soon(one)

    trio.run(attack)
    for ending in endings:
        record = dataclasses.asdict(ending) | {"ended_after": ending.ended_after}
        record["first_status"] = ending.first_status.decode("latin-1")
        print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main()
