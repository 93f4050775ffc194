# Chunked bodies fed as the framing tests feed them: a sample body, its payload, feed_pieces, wire_of.
# Invariant: feed_pieces checks every span and count a feed returns; no FramingError is caught here.
from __future__ import annotations

from pipe_relay.core.framing import ChunkedDecoder, LengthDecoder

BODY = (
    b"5\r\nhello\r\n"
    b"6;name=value;flag\r\n world\r\n"
    b"A\r\n0123456789\r\n"
    b'1 ; ext="q"\r\n!\r\n'
    b"0;last=1\r\n"
    b"Trailer-One: 1\r\n"
    b"Trailer-Two: 2\r\n"
    b"\r\n"
)
PAYLOAD = b"hello world0123456789!"


def feed_pieces(decoder: ChunkedDecoder | LengthDecoder, pieces: list[bytes]) -> tuple[bytes, bytes]:
    """Feed pieces in order; return (payload, bytes left unconsumed after the body's end)."""
    payload = bytearray()
    leftover = bytearray()
    for piece in pieces:
        if decoder.done:
            leftover += piece
            continue
        spans, consumed = decoder.feed(piece)
        assert 0 <= consumed <= len(piece)
        for start, stop in spans:
            assert 0 <= start <= stop <= consumed
            payload += piece[start:stop]
        if consumed < len(piece):
            assert decoder.done
            leftover += piece[consumed:]
    return bytes(payload), bytes(leftover)


def wire_of(pieces: list[bytes]) -> tuple[bytes, ChunkedDecoder]:
    """What a chunked receiver gets: every feed's `wire`, then the last chunk once the body is done."""
    decoder = ChunkedDecoder()
    out = bytearray()
    for piece in pieces:
        decoder.feed(piece)
        for part in decoder.wire:
            out += piece[part[0] : part[1]] if isinstance(part, tuple) else part
    if decoder.done:
        out += b"0\r\n\r\n"
    return bytes(out), decoder
