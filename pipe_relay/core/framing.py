# Body framing: decoders that find payload bytes in a buffer without copying, and response heads.
# Invariant: a decoder reports `done` only after the body's exact end; bytes past it are never payload.
from __future__ import annotations

import enum
import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass
from http import HTTPStatus

MAX_CHUNK_LINE = 4096
MAX_TRAILERS = 16 * 1024
LAST_CHUNK = b"0\r\n\r\n"
CRLF = b"\r\n"


class FramingError(ValueError):
    """The sender's body framing is broken; the transfer cannot be completed."""


class Framing(enum.Enum):
    """How a body's end is known."""

    LENGTH = "length"
    CHUNKED = "chunked"
    CLOSE = "close"
    """Until the connection closes (only for responses to HTTP/1.0 clients)."""


Span = tuple[int, int]
Data = bytes | bytearray | memoryview
"""What decoders read: bytes and bytearrays are searched in place; memoryviews are copied per line."""


class LengthDecoder:
    """A body of exactly `length` bytes."""

    def __init__(self, length: int) -> None:
        self.remaining = length

    def __repr__(self) -> str:
        return f"<LengthDecoder remaining={self.remaining}>"

    @property
    def done(self) -> bool:
        return self.remaining == 0

    def skip(self, count: int) -> None:
        """`count` payload bytes were moved without passing through `feed` (zero-copy path)."""
        if not 0 <= count <= self.remaining:
            raise ValueError(f"cannot skip {count} of {self.remaining} remaining bytes")
        self.remaining -= count

    def feed(self, data: Data, end: int | None = None) -> tuple[list[Span], int]:
        """Payload spans in `data[:end]` and how many of its bytes belong to the body."""
        take = min(len(data) if end is None else end, self.remaining)
        self.remaining -= take
        return ([(0, take)] if take else []), take


class _Chunked(enum.Enum):
    SIZE = "size"
    DATA = "data"
    DATA_END = "data-end"
    TRAILER = "trailer"
    DONE = "done"


WirePiece = Span | bytes
"""A piece of re-usable chunked framing: a span of the fed buffer (verbatim) or bytes we wrote."""


class ChunkedDecoder:
    """Incremental `Transfer-Encoding: chunked` parser (RFC 9112 7.1) yielding payload spans.

    Besides the payload, every `feed` leaves in `wire` the same payload in chunked framing for
    chunked receivers: the sender's own bytes (spans of the fed buffer) where its chunk lines are
    canonical (hex digits, CRLF) and whole in one buffer, our own lines where they are not
    (extensions, whitespace, a line split across reads). `wire` never holds the last chunk or a
    trailer: the terminator is the caller's to write once `done`. It always ends right after a
    chunk's data (or that data's CRLF): a size line whose data has not come yet is held back (as
    bytes) for the next feed, and a chunk's CRLF is written by us when the buffer ends right after
    its data (the sender's CRLF is then checked but not repeated).
    """

    def __init__(self) -> None:
        self._state = _Chunked.SIZE
        self._line = bytearray()
        self._remaining = 0
        self._trailer_bytes = 0
        self._crlf_written = False  # this chunk's CRLF is in `wire` already (ours)
        self._held = b""  # size lines whose data has not come yet
        self.wire: list[WirePiece] = []
        """The last feed's payload in chunked framing (see the class doc)."""

    def __repr__(self) -> str:
        return f"<ChunkedDecoder {self._state.value} remaining={self._remaining}>"

    @property
    def done(self) -> bool:
        return self._state is _Chunked.DONE

    def feed(self, data: Data, end: int | None = None) -> tuple[list[Span], int]:
        """Payload spans in `data[:end]` and how many of its bytes belong to the body."""
        spans: list[Span] = []
        wire: list[WirePiece] = []
        self.wire = wire
        committed = 0  # wire[:committed] ends with a chunk's data or its CRLF
        pos = 0
        end = len(data) if end is None else end
        # Fast paths (whole canonical lines in the buffer, matched in place) cover nearly every
        # chunk; `_take_line` handles lines split across reads, memoryviews and the trailer section.
        searchable = not isinstance(data, memoryview)
        while pos < end:
            state = self._state
            if state is _Chunked.DATA:
                take = min(end - pos, self._remaining)
                spans.append((pos, pos + take))
                wire.append((pos, pos + take))
                committed = len(wire)
                pos += take
                self._remaining -= take
                if self._remaining == 0:
                    self._state = _Chunked.DATA_END
                    self._crlf_written = False
            elif state is _Chunked.DONE:
                break
            elif searchable and not self._line and state is not _Chunked.TRAILER:
                # [CRLF after the data] + a canonical size line, whole: the sender's bytes go out as they are
                after_data = state is _Chunked.DATA_END
                match = (_NEXT_LINE if after_data else _SIZE_LINE).match(data, pos, end)
                if match is None:
                    pos = self._slow_line(data, pos, end)
                    if self._state is _Chunked.SIZE and after_data:
                        committed = len(wire)  # the data's CRLF (now in `wire` unless written before)
                    continue
                line = match.start(1)
                if after_data:
                    if not self._crlf_written:
                        wire.append((pos, line))
                    committed = len(wire)
                size = int(match.group(1), 16)
                pos = match.end()
                if not size:  # the last chunk: never the sender's, the caller writes its own when done
                    self._state = _Chunked.TRAILER
                    continue
                # Whole chunks each followed by a whole canonical size line (nearly all of a fast
                # sender's) in one tight loop: their spans, and their framing as one verbatim span.
                run = line
                stop = pos + size
                while stop < end:
                    follow = _NEXT_LINE.match(data, stop, end)
                    if follow is None:
                        break
                    following = int(follow.group(1), 16)
                    if not following:
                        break
                    spans.append((pos, stop))
                    line = follow.start(1)
                    pos = follow.end()
                    stop = pos + following
                if run != line:  # whole chunks (with their CRLFs), then the current size line
                    wire.append((run, line))
                    committed = len(wire)
                    self._crlf_written = False
                wire.append((line, pos))
                self._remaining = stop - pos
                self._state = _Chunked.DATA
            else:
                after_data = state is _Chunked.DATA_END
                pos = self._slow_line(data, pos, end)
                if after_data and self._state is _Chunked.SIZE:
                    committed = len(wire)
        if self._state is _Chunked.DATA_END and not self._crlf_written and committed == len(wire):
            # the buffer ends right after a chunk's data: its CRLF is ours (the sender's is still checked)
            wire.append(CRLF)
            committed = len(wire)
            self._crlf_written = True
        self._settle_wire(data, committed)
        return spans, pos

    def _slow_line(self, data: Data, pos: int, end: int) -> int:
        """A line the fast path did not take: a CRLF after data that is not followed by a whole
        canonical size line, a non-canonical or split size line, a trailer line."""
        if self._state is _Chunked.DATA_END and not self._line and bytes(data[pos : pos + 2]) == CRLF:
            if not self._crlf_written:
                self.wire.append((pos, pos + 2))
            self._state = _Chunked.SIZE
            return pos + 2
        return self._take_line(data, pos, end)

    def _settle_wire(self, data: Data, committed: int) -> None:
        """Hold back framing after the last data (to go out with the next data); merge spans."""
        wire = self.wire
        pending = wire[committed:]
        del wire[committed:]
        held = self._held
        if wire and held:
            wire.insert(0, held)
            held = b""
        if pending:
            held += b"".join(bytes(data[p[0] : p[1]]) if isinstance(p, tuple) else p for p in pending)
        self._held = held
        merged: list[WirePiece] = []
        for piece in wire:
            last = merged[-1] if merged else None
            if isinstance(piece, tuple) and isinstance(last, tuple) and last[1] == piece[0]:
                merged[-1] = (last[0], piece[1])
            else:
                merged.append(piece)
        self.wire = merged

    def _take_line(self, data: Data, pos: int, end: int) -> int:
        """Collect a CRLF-terminated line; act on it when complete. Returns the new position."""
        limit = MAX_TRAILERS if self._state is _Chunked.TRAILER else MAX_CHUNK_LINE
        # Lines are short: look for the newline in a bounded window, in place (no copy of the buffer).
        window_end = min(end, pos + limit + 2)
        if isinstance(data, memoryview):
            found = bytes(data[pos:window_end]).find(b"\n")
            found = pos + found if found >= 0 else -1
        else:
            found = data.find(b"\n", pos, window_end)
        stop = end if found < 0 else found + 1
        self._line += data[pos:stop]
        if len(self._line) > limit:
            raise FramingError("chunk line too long")
        if found < 0:
            return end
        line = bytes(self._line)
        self._line.clear()
        if not line.endswith(CRLF):
            raise FramingError("chunk line not terminated by CRLF")
        self._on_line(line[:-2])
        return stop

    def _on_line(self, line: bytes) -> None:
        """A whole line that did not go the fast path: what it means, and our framing for it."""
        if self._state is _Chunked.SIZE:
            size_text, _, extension = line.partition(b";")
            size_text = size_text.rstrip(b" \t")  # (BWS before an extension; never before the size)
            if not _HEX.fullmatch(size_text):
                raise FramingError("invalid chunk size")
            if _LINE_CONTROL.search(extension):
                raise FramingError("a control character in a chunk extension")
            size = int(size_text, 16)
            if size == 0:
                self._state = _Chunked.TRAILER
            else:
                self.wire.append(chunk_head(size))
                self._remaining = size
                self._state = _Chunked.DATA
        elif self._state is _Chunked.DATA_END:
            if line:
                raise FramingError("chunk data longer than its size")
            if not self._crlf_written:
                self.wire.append(CRLF)
            self._state = _Chunked.SIZE
        else:  # trailer section: header lines until an empty one (never forwarded)
            self._trailer_bytes += len(line) + 2
            if self._trailer_bytes > MAX_TRAILERS:
                raise FramingError("trailer section too large")
            if not line:
                self._state = _Chunked.DONE


_HEX = re.compile(rb"[0-9A-Fa-f]{1,16}")
_LINE_CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_SIZE_LINE = re.compile(rb"([0-9A-Fa-f]{1,16})\r\n")
_NEXT_LINE = re.compile(rb"\r\n([0-9A-Fa-f]{1,16})\r\n")
"""The CRLF after a chunk's data and the next canonical size line, whole in the buffer."""


class EmptyDecoder(LengthDecoder):
    def __init__(self) -> None:
        super().__init__(0)


BodyDecoder = LengthDecoder | ChunkedDecoder


def chunk_head(size: int) -> bytes:
    return b"%x\r\n" % size


def encode_chunk(payload: bytes) -> bytes:
    return chunk_head(len(payload)) + payload + CRLF if payload else b""


_FIELD_VALUE = re.compile(r"[\t\x20-\x7e\x80-\xff]*")
_NOT_FIELD_VALUE = re.compile(r"[^\t\x20-\x7e\x80-\xff]")


def field_value(value: str) -> str:
    """`value` as a header field value can carry it (RFC 9110 5.5): no CR, LF, NUL or other control
    character (dropped), nothing past latin-1 (`?`). Every head we write goes through here."""
    if _FIELD_VALUE.fullmatch(value):
        return value
    return _NOT_FIELD_VALUE.sub(lambda bad: "?" if ord(bad.group()) > 0xFF else "", value)


def render_head(http_version: str, status: int, headers: Iterable[tuple[str, str]]) -> bytes:
    """A response status line and header block; every value is made safe (`field_value`)."""
    fields = "".join([f"\r\n{name}: {field_value(value)}" for name, value in headers])
    return (_status_line(http_version, status) + fields + "\r\n\r\n").encode("latin-1")


@functools.lru_cache(maxsize=64)
def _status_line(http_version: str, status: int) -> str:
    return f"HTTP/{http_version} {status} {HTTPStatus(status).phrase}"


@dataclass(frozen=True, slots=True)
class ReceiverFraming:
    """How one receiver's response is framed (h11's `_body_framing` decision, for our heads)."""

    http_version: str
    framing: Framing
    headers: tuple[tuple[str, str], ...]


def receiver_framing(content_length: int | None, http_version: str) -> ReceiverFraming:
    """A known length goes as Content-Length; else chunked to HTTP/1.1, and to HTTP/1.0 a body
    ended by the close (only the cut-short rule's reset tells a cut one apart). Always closes."""
    version = "1.1" if http_version == "1.1" else "1.0"
    if content_length is not None:
        return ReceiverFraming(version, Framing.LENGTH, (("Content-Length", str(content_length)), _CLOSE))
    if version == "1.1":
        return ReceiverFraming(version, Framing.CHUNKED, (("Transfer-Encoding", "chunked"), _CLOSE))
    return ReceiverFraming(version, Framing.CLOSE, (_CLOSE,))


_CLOSE = ("Connection", "close")
