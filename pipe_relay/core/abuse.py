# HTTP/2 abuse accounting, sans-IO: frame boundaries and sizes seen before h2 parses them, and the budgets.
# Invariant: no clock or socket inside (the time is passed in); every budget is a bounded token bucket.
"""What one HTTP/2 connection may cost us, counted the way the servers that were attacked count it
(HAProxy's glitches, nginx's per-read stream cap and flood ratio, Go's handler cap): `FrameScanner`
reads the 9-byte head of every frame the client sends, before h2 sees the frame, so a header block
(HEADERS + CONTINUATION) is refused as it grows past its limit, not after it was buffered, and the
bytes are cut into batches that one turn of the event loop may take. `Glitches` holds the budgets;
the connection charges them and, when one runs out, ends the connection (GOAWAY ENHANCE_YOUR_CALM)."""

from __future__ import annotations

import enum
from dataclasses import dataclass

FRAME_HEAD = 9
PREFACE_SIZE = 24
DATA, HEADERS, PRIORITY, SETTINGS, PING, WINDOW_UPDATE, CONTINUATION = 0x0, 0x1, 0x2, 0x4, 0x6, 0x8, 0x9
END_STREAM, END_HEADERS = 0x1, 0x4
MAX_CONTROL_FRAME = 16 * 1024
"""The largest frame other than DATA and a header block's that we take (the protocol's default
frame size): a SETTINGS, PING or unknown frame has no reason to be larger."""
BATCH_FRAMES = 128
"""Frames handed to h2 in one batch (one turn of the loop) at most..."""
ENCODED_WEIGHT = 10
"""What one byte of a header block costs against HEADER_BYTES, as decoded bytes: hpack decodes
Huffman at 0.27 µs a byte here, a decoded byte copied from its table at about 0.02 µs."""
BATCH_BLOCKS = 8
"""...and header blocks (requests), so the budgets are looked at between them."""


class Budget(enum.Enum):
    """What a connection may spend; the value names it in logs and tests."""

    RESETS = "too many streams reset while served, or refused"
    STREAMS = "too many requests that are not pipe parties"
    CONTROL = "too many control frames"
    WINDOW_UPDATES = "too many WINDOW_UPDATE frames"
    HEADER_BYTES = "too many decoded header bytes"


class Violation(enum.Enum):
    """A frame that ends the connection before h2 sees it."""

    HEADER_BLOCK = "header block too large"
    CONTROL_FRAME = "control frame too large"


@dataclass(slots=True)
class Meter:
    """A token bucket: `burst` tokens, refilled at `rate` a second; spending past empty is over."""

    rate: float
    burst: float
    tokens: float = -1.0
    stamp: float | None = None

    def __post_init__(self) -> None:
        if self.tokens < 0:
            self.tokens = self.burst

    def spend(self, cost: float, now: float) -> bool:
        """Take `cost` tokens at time `now`: False if that leaves the bucket below empty."""
        if self.stamp is not None and now > self.stamp:
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        self.tokens -= cost
        return self.tokens >= 0

    def refund(self, amount: float) -> None:
        self.tokens = min(self.burst, self.tokens + amount)


@dataclass(frozen=True, slots=True)
class FloodLimits:
    """Each budget as (burst, refill per second). Far above what curl, browsers and the h2 clients
    do (a page load opens about ten streams; a browser resets one when told to cancel), far below
    what a flood needs (15,000 reset streams or 100,000 PINGs a second)."""

    resets: tuple[float, float] = (100, 10)
    streams: tuple[float, float] = (500, 100)
    control: tuple[float, float] = (1000, 200)
    """Also DATA frames nobody reads (on a page's stream, a reset one): a refused upload's few in
    flight fit; a client that keeps sending them does not."""
    window_updates: tuple[float, float] = (1000, 200)
    window_refund: int = 4096
    """Bytes of DATA we send that give one WINDOW_UPDATE back (a receiver opens its window as it reads)."""
    header_bytes: tuple[float, float] = (2 << 20, 512 << 10)
    """Decoded header list bytes (RFC 9113's size: name + value + 32 each), and ENCODED_WEIGHT for
    each byte of the encoded block: decoding costs CPU in proportion to both (one HPACK byte may name
    a 4 KiB entry; a Huffman-coded byte costs ten times a decoded one to decode)."""


class Glitches:
    """The budgets of one connection."""

    __slots__ = ("_limits", "_meters")

    def __init__(self, limits: FloodLimits | None = None) -> None:
        limits = limits or FloodLimits()
        self._limits = limits
        pairs = {
            Budget.RESETS: limits.resets,
            Budget.STREAMS: limits.streams,
            Budget.CONTROL: limits.control,
            Budget.WINDOW_UPDATES: limits.window_updates,
            Budget.HEADER_BYTES: limits.header_bytes,
        }
        self._meters = {budget: Meter(rate=rate, burst=burst) for budget, (burst, rate) in pairs.items()}

    def __repr__(self) -> str:
        left = ", ".join(f"{budget.name}={meter.tokens:.0f}" for budget, meter in self._meters.items())
        return f"<Glitches {left}>"

    def charge(self, budget: Budget, cost: float, now: float) -> bool:
        """Spend `cost` of `budget`: False once it is spent (the connection must go)."""
        return cost <= 0 or self._meters[budget].spend(cost, now)

    def refund(self, budget: Budget, amount: float) -> None:
        self._meters[budget].refund(amount)

    def data_sent(self, size: int) -> None:
        """`size` bytes of DATA went to the client: it may open its window for them."""
        self._meters[Budget.WINDOW_UPDATES].refund(size / self._limits.window_refund)


@dataclass(frozen=True, slots=True)
class Batch:
    """Bytes up to `end` (of the data scanned) that h2 may take in one go, and what they hold."""

    end: int
    frames: int = 0
    control: int = 0
    """PING, SETTINGS, PRIORITY, unknown frames, empty DATA or CONTINUATION that end nothing."""
    window_updates: int = 0
    blocks: int = 0
    """Header blocks completed (HEADERS or CONTINUATION with END_HEADERS)."""
    encoded: int = 0
    """Bytes of header blocks (HEADERS and CONTINUATION payloads)."""
    violation: Violation | None = None
    """Set on the last batch: the frame at `end` must not reach h2; the connection ends."""


class FrameScanner:
    """Frame heads of a client's byte stream (after its 24-byte preface), payloads skipped."""

    __slots__ = ("_block", "_head", "_max_block", "_payload_left", "_preface_left")

    def __init__(self, *, max_header_block: int) -> None:
        self._max_block = max_header_block
        self._preface_left = PREFACE_SIZE
        self._head = bytearray()
        self._payload_left = 0
        self._block = -1  # bytes of the header block under way, -1 when none is

    def __repr__(self) -> str:
        return f"<FrameScanner block={self._block} payload_left={self._payload_left}>"

    def next_batch(self, data: bytes | memoryview, start: int = 0) -> Batch:
        """The next batch of `data` from `start`: up to BATCH_FRAMES frames or BATCH_BLOCKS header
        blocks, or to the end of `data` (a frame cut by the end goes on in the next data)."""
        size = len(data)
        pos = start
        frames = control = windows = blocks = encoded = 0
        while pos < size and frames < BATCH_FRAMES and blocks < BATCH_BLOCKS:
            if self._preface_left:
                taken = min(self._preface_left, size - pos)
                self._preface_left -= taken
                pos += taken
                continue
            if self._payload_left:
                taken = min(self._payload_left, size - pos)
                self._payload_left -= taken
                pos += taken
                continue
            head_start = pos - len(self._head)
            taken = min(FRAME_HEAD - len(self._head), size - pos)
            self._head += data[pos : pos + taken]
            pos += taken
            if len(self._head) < FRAME_HEAD:
                break
            head = self._head
            length = int.from_bytes(head[0:3], "big")
            kind, flags = head[3], head[4]
            head.clear()
            violation = self._judge(length, kind, flags)
            if violation is not None:
                end = max(start, head_start)
                return Batch(end, frames, control, windows, blocks, encoded, violation)
            frames += 1
            if kind in (HEADERS, CONTINUATION):
                encoded += length
            if kind == WINDOW_UPDATE:
                windows += 1
            elif kind in (HEADERS, CONTINUATION) and flags & END_HEADERS:
                blocks += 1
            elif _is_control(kind, length, flags):
                control += 1
            taken = min(length, size - pos)  # (its payload, as far as it came, goes with it)
            self._payload_left = length - taken
            pos += taken
        return Batch(pos, frames, control, windows, blocks, encoded)

    def _judge(self, length: int, kind: int, flags: int) -> Violation | None:
        """A frame head that must not reach h2 (and end the connection), or None."""
        if kind == HEADERS or (kind == CONTINUATION and self._block >= 0):
            self._block = length if kind == HEADERS else self._block + length
            if self._block > self._max_block:
                return Violation.HEADER_BLOCK
            if flags & END_HEADERS:
                self._block = -1
            return None
        if kind not in (DATA, CONTINUATION) and length > MAX_CONTROL_FRAME:
            return Violation.CONTROL_FRAME
        return None


def _is_control(kind: int, length: int, flags: int) -> bool:
    """A frame that carries no request and no body byte: PING, SETTINGS, PRIORITY, an unknown type,
    and an empty DATA or CONTINUATION that ends nothing."""
    if kind in (PING, SETTINGS, PRIORITY) or kind > CONTINUATION:
        return True
    if kind == DATA:
        return not length and not flags & END_STREAM
    return kind == CONTINUATION and not length and not flags & END_HEADERS
