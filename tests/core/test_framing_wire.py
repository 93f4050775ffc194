# The chunked framing a decoder hands on to chunked receivers (`wire`): kept, reframed, held back, cut.
# Invariant: pure and sync; canonical lines reach receivers byte for byte, and a cut body never ends.
from __future__ import annotations

import random

import pytest

from pipe_relay.core.framing import ChunkedDecoder, FramingError
from tests.chunked_feeds import BODY, PAYLOAD, feed_pieces, wire_of

CANONICAL = b"5\r\nhello\r\n6\r\n world\r\n1f\r\n" + b"z" * 0x1F + b"\r\n1\r\n!\r\n0\r\n\r\n"


def test_wire_is_the_senders_own_bytes_when_its_lines_are_canonical() -> None:
    decoder = ChunkedDecoder()
    decoder.feed(CANONICAL)
    end_of_data = CANONICAL.index(b"0\r\n\r\n")
    assert decoder.wire == [(0, end_of_data)]  # one span of the buffer: no copy, no re-framing


@pytest.mark.parametrize("split", range(len(CANONICAL) + 1))
def test_wire_is_byte_exact_wherever_the_reads_split(split: int) -> None:
    out, decoder = wire_of([CANONICAL[:split], CANONICAL[split:]])
    assert decoder.done
    assert out == CANONICAL


def test_wire_byte_by_byte_is_byte_exact() -> None:
    out, decoder = wire_of([bytes([b]) for b in CANONICAL])
    assert decoder.done
    assert out == CANONICAL


@pytest.mark.parametrize("split", range(len(BODY) + 1))
def test_wire_reframes_extensions_and_drops_trailers(split: int) -> None:
    out, decoder = wire_of([BODY[:split], BODY[split:]])
    assert decoder.done
    assert feed_pieces(ChunkedDecoder(), [out]) == (PAYLOAD, b"")
    assert b";" not in out and b"Trailer" not in out and b" \r\n" not in out
    assert out.endswith(b"\r\n!\r\n0\r\n\r\n") and out.count(b"0\r\n\r\n") == 1


def test_wire_keeps_canonical_lines_and_writes_its_own_for_the_others() -> None:
    decoder = ChunkedDecoder()
    data = b"5;x=1\r\nhello\r\n0003\r\nabc\r\n2 \t\r\nde\r\n0;last\r\nX: 1\r\n\r\n"
    decoder.feed(data)
    spans = [p for p in decoder.wire if isinstance(p, tuple)]
    start = data.index(b"0003\r\nabc\r\n")
    assert any(
        a <= start and start + 11 <= b for a, b in spans
    )  # canonical (hex with leading zeros): as sent
    rebuilt = b"".join(data[p[0] : p[1]] if isinstance(p, tuple) else p for p in decoder.wire)
    assert rebuilt == b"5\r\nhello\r\n0003\r\nabc\r\n2\r\nde\r\n"


def test_wire_holds_a_size_line_back_until_its_data_comes() -> None:
    decoder = ChunkedDecoder()
    decoder.feed(b"5\r\nhello\r\n3\r\n")
    assert decoder.wire == [(0, 10)]  # the data and its CRLF; "3\r\n" waits for its data
    decoder.feed(b"abc\r\n")
    assert decoder.wire == [b"3\r\n", (0, 5)]


def test_wire_writes_the_crlf_when_a_read_ends_right_after_the_data() -> None:
    decoder = ChunkedDecoder()
    decoder.feed(b"5\r\nhello")
    assert decoder.wire == [(0, 8), b"\r\n"]
    decoder.feed(b"\r\n0\r\n\r\n")
    assert decoder.wire == []  # the sender's CRLF is checked, not repeated; the last chunk is not ours
    assert decoder.done


def test_wire_of_a_body_cut_anywhere_never_ends() -> None:
    """A sender cut short must never give a chunked receiver a clean end: no last chunk in `wire`."""
    for cut in range(len(BODY)):
        out, decoder = wire_of([BODY[:cut]])
        assert not decoder.done, cut
        check = ChunkedDecoder()
        check.feed(out)
        assert not check.done, (cut, out)


def test_wire_never_forwards_the_senders_last_chunk_line() -> None:
    decoder = ChunkedDecoder()
    data = b"2\r\nhi\r\n0\r\n"  # the last-chunk line, but not the blank line that ends the body
    decoder.feed(data)
    assert not decoder.done
    assert b"".join(data[p[0] : p[1]] if isinstance(p, tuple) else p for p in decoder.wire) == b"2\r\nhi\r\n"


def test_wire_with_a_bad_line_raises_before_anything_of_it_is_handed_on() -> None:
    decoder = ChunkedDecoder()
    with pytest.raises(FramingError):
        decoder.feed(b"2\r\nhi\r\n2x\r\nho\r\n")


def _random_body(rng: random.Random, *, canonical: bool) -> tuple[bytes, bytes]:
    """A chunked body of 40 chunks of 1..300 bytes (some lines not canonical unless `canonical`)
    and its payload."""
    framed = bytearray()
    payload = bytearray()
    for _ in range(40):
        data = rng.randbytes(rng.randint(1, 300))
        payload += data
        line = b"%x" % len(data)
        if not canonical and rng.random() < 0.3:
            line = rng.choice([line + b";ext=1", line + b" ", b"0" + line.upper() + b"\t"])
        framed += line + b"\r\n" + data + b"\r\n"
    return bytes(framed + b"0\r\n\r\n"), bytes(payload)


def _split_randomly(rng: random.Random, data: bytes) -> list[bytes]:
    cuts = sorted(rng.sample(range(1, len(data)), rng.randint(0, 8)))
    return [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]


@pytest.mark.parametrize("seed", range(60))
def test_many_chunks_per_read_pass_byte_exact(seed: int) -> None:
    """Reads holding many whole chunks (the tight loop) and chunks cut anywhere: the payload is
    exact; canonical framing reaches receivers as sent, other framing decodes to the same payload."""
    rng = random.Random(seed)
    canonical = seed % 2 == 0
    framed, payload = _random_body(rng, canonical=canonical)
    pieces = _split_randomly(rng, framed)
    decoder = ChunkedDecoder()
    got = bytearray()
    for piece in pieces:
        spans, used = decoder.feed(piece)
        assert used == len(piece)
        for start, end in spans:
            got += piece[start:end]
    assert decoder.done
    assert got == payload
    wire, _ = wire_of(pieces)
    if canonical:
        assert wire == framed
    else:
        again = ChunkedDecoder()
        spans, _ = again.feed(wire)
        assert again.done
        assert b"".join(wire[start:end] for start, end in spans) == payload
