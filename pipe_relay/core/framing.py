# Body framing: decoders that find payload bytes in a buffer without copying, and response heads.
# Invariant: a decoder reports `done` only after the body's exact end; bytes past it are never payload.
from __future__ import annotations

import enum
import re
from collections.abc import Iterable
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


class ChunkedDecoder:
    """Incremental `Transfer-Encoding: chunked` parser (RFC 9112 7.1) yielding payload spans."""

    def __init__(self) -> None:
        self._state = _Chunked.SIZE
        self._line = bytearray()
        self._remaining = 0
        self._trailer_bytes = 0

    def __repr__(self) -> str:
        return f"<ChunkedDecoder {self._state.value} remaining={self._remaining}>"

    @property
    def done(self) -> bool:
        return self._state is _Chunked.DONE

    def feed(self, data: Data, end: int | None = None) -> tuple[list[Span], int]:
        """Payload spans in `data[:end]` and how many of its bytes belong to the body."""
        spans: list[Span] = []
        pos = 0
        end = len(data) if end is None else end
        # Fast paths (whole lines in the buffer, searched in place) cover nearly every chunk;
        # `_take_line` handles lines split across reads, memoryviews and the trailer section.
        searchable = not isinstance(data, memoryview)
        while pos < end:
            state = self._state
            if state is _Chunked.DATA:
                take = min(end - pos, self._remaining)
                spans.append((pos, pos + take))
                pos += take
                self._remaining -= take
                if self._remaining == 0:
                    self._state = _Chunked.DATA_END
            elif state is _Chunked.DATA_END and not self._line and data[pos : pos + 2] == CRLF:
                pos += 2
                self._state = _Chunked.SIZE
            elif state is _Chunked.SIZE and not self._line and searchable:
                newline = data.find(b"\n", pos, min(end, pos + MAX_CHUNK_LINE + 2))  # type: ignore[union-attr]
                if newline < 0:
                    pos = self._take_line(data, pos, end)
                    continue
                if newline == pos or data[newline - 1] != 13:  # not CRLF: the slow path says why
                    pos = self._take_line(data, pos, end)
                    continue
                self._on_line(bytes(data[pos : newline - 1]))
                pos = newline + 1
            elif state is _Chunked.DONE:
                break
            else:
                pos = self._take_line(data, pos, end)
        return spans, pos

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
        if self._state is _Chunked.SIZE:
            size_text = line.split(b";", 1)[0].strip(b" \t")
            if not _HEX.fullmatch(size_text):
                raise FramingError("invalid chunk size")
            size = int(size_text, 16)
            if size == 0:
                self._state = _Chunked.TRAILER
            else:
                self._remaining = size
                self._state = _Chunked.DATA
        elif self._state is _Chunked.DATA_END:
            if line:
                raise FramingError("chunk data longer than its size")
            self._state = _Chunked.SIZE
        else:  # trailer section: header lines until an empty one
            self._trailer_bytes += len(line) + 2
            if self._trailer_bytes > MAX_TRAILERS:
                raise FramingError("trailer section too large")
            if not line:
                self._state = _Chunked.DONE


_HEX = re.compile(rb"[0-9A-Fa-f]{1,16}")


class EmptyDecoder(LengthDecoder):
    def __init__(self) -> None:
        super().__init__(0)


BodyDecoder = LengthDecoder | ChunkedDecoder


def chunk_head(size: int) -> bytes:
    return b"%x\r\n" % size


def encode_chunk(payload: bytes) -> bytes:
    return chunk_head(len(payload)) + payload + CRLF if payload else b""


def render_head(http_version: str, status: int, headers: Iterable[tuple[str, str]]) -> bytes:
    """A response status line and header block. Header values must already be safe."""
    lines = [f"HTTP/{http_version} {status} {HTTPStatus(status).phrase}"]
    lines += [f"{name}: {value}" for name, value in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace")
