# Edge cases of body framing that the mutation run (`make mutants`) showed unpinned: exact limits,
# the `end` argument, memoryview line splitting, zero-copy skips and the per-feed `wire`.
# Invariant: pure and sync; every case asserts exact spans, positions, wire pieces or error text.
from __future__ import annotations

import pytest

from pipe_relay.core.framing import (
    MAX_CHUNK_LINE,
    MAX_TRAILERS,
    ChunkedDecoder,
    EmptyDecoder,
    FramingError,
    LengthDecoder,
)

BODY = b"5\r\nhello\r\n3\r\nabc\r\n0\r\n\r\n"


def payload_of(decoder: ChunkedDecoder, pieces: list[bytes | memoryview]) -> bytes:
    out = bytearray()
    for piece in pieces:
        spans, consumed = decoder.feed(piece)
        assert consumed == len(piece)
        for start, stop in spans:
            out += piece[start:stop]
    return bytes(out)


# ---- LengthDecoder


def test_length_skip_moves_the_remaining_count_down_to_zero() -> None:
    decoder = LengthDecoder(5)
    decoder.skip(0)
    assert decoder.remaining == 5
    decoder.skip(2)
    assert decoder.remaining == 3
    decoder.skip(3)
    assert decoder.remaining == 0
    assert decoder.done


@pytest.mark.parametrize(("count", "message"), [(6, "cannot skip 6 of 5"), (-1, "cannot skip -1 of 5")])
def test_length_skip_out_of_range_raises(count: int, message: str) -> None:
    decoder = LengthDecoder(5)
    with pytest.raises(ValueError, match=rf"^{message} remaining bytes$"):
        decoder.skip(count)
    assert decoder.remaining == 5


def test_length_feed_stops_at_end() -> None:
    decoder = LengthDecoder(10)
    assert decoder.feed(b"abcdef", 4) == ([(0, 4)], 4)
    assert decoder.remaining == 6


def test_empty_decoder_built_in_the_test_is_done() -> None:
    decoder = EmptyDecoder()
    assert decoder.remaining == 0
    assert decoder.done
    assert repr(decoder) == "<LengthDecoder remaining=0>"


def test_reprs() -> None:
    assert repr(LengthDecoder(7)) == "<LengthDecoder remaining=7>"
    decoder = ChunkedDecoder()
    assert repr(decoder) == "<ChunkedDecoder size remaining=0>"
    decoder.feed(b"5\r\nhe")
    assert repr(decoder) == "<ChunkedDecoder data remaining=3>"


# ---- ChunkedDecoder: `end`


def test_chunked_feed_stops_at_end_inside_data() -> None:
    decoder = ChunkedDecoder()
    assert decoder.feed(BODY, 7) == ([(3, 7)], 7)
    assert repr(decoder) == "<ChunkedDecoder data remaining=1>"


def test_chunked_feed_stops_at_end_inside_a_canonical_size_line() -> None:
    decoder = ChunkedDecoder()
    assert decoder.feed(BODY, 2) == ([], 2)
    assert payload_of(decoder, [BODY[2:]]) == b"helloabc"
    assert decoder.done


def test_chunked_feed_stops_at_end_inside_the_next_size_line() -> None:
    decoder = ChunkedDecoder()
    assert decoder.feed(BODY, 12) == ([(3, 8)], 12)  # "\r\n3\r" is not a whole next line
    assert payload_of(decoder, [BODY[12:]]) == b"abc"
    assert decoder.done


def test_chunked_feed_stops_at_end_inside_an_extension_line() -> None:
    data = b"5;ext\r\nhello\r\n0\r\n\r\n"
    decoder = ChunkedDecoder()
    assert decoder.feed(data, 3) == ([], 3)
    assert payload_of(decoder, [data[3:]]) == b"hello"
    assert decoder.done


# ---- limits: a chunk line of 4096 bytes with its CRLF passes, one more does not


def test_chunk_line_of_exactly_the_limit_passes() -> None:
    line = b"5;" + b"x" * (MAX_CHUNK_LINE - 4) + b"\r\n"
    assert len(line) == 4096
    decoder = ChunkedDecoder()
    assert payload_of(decoder, [line + b"hello\r\n0\r\n\r\n"]) == b"hello"
    assert decoder.done


def test_chunk_line_one_over_the_limit_fails() -> None:
    line = b"5;" + b"x" * (MAX_CHUNK_LINE - 3) + b"\r\n"
    decoder = ChunkedDecoder()
    with pytest.raises(FramingError, match=r"^chunk line too long$"):
        decoder.feed(line + b"hello\r\n0\r\n\r\n")


def trailers_of(total: int) -> bytes:
    """A trailer section (its lines, CRLFs and the blank line) of exactly `total` bytes."""
    lines = [b"T: " + b"v" * 995 + b"\r\n"] * 16  # 16 x 1000 = 16000 bytes
    rest = total - 16000 - 2
    lines.append(b"U: " + b"w" * (rest - 5) + b"\r\n")
    section = b"".join(lines) + b"\r\n"
    assert len(section) == total
    return section


def test_trailer_section_of_exactly_the_limit_passes() -> None:
    decoder = ChunkedDecoder()
    assert payload_of(decoder, [b"2\r\nhi\r\n0\r\n" + trailers_of(MAX_TRAILERS)]) == b"hi"
    assert decoder.done


def test_trailer_section_one_over_the_limit_fails() -> None:
    decoder = ChunkedDecoder()
    with pytest.raises(FramingError, match=r"^trailer section too large$"):
        decoder.feed(b"2\r\nhi\r\n0\r\n" + trailers_of(MAX_TRAILERS + 1))


@pytest.mark.parametrize("last", [b"0", b"0;ext=1"])
def test_a_trailer_line_may_be_longer_than_a_chunk_line(last: bytes) -> None:
    """Trailer lines count against the 16 KiB section, not the 4 KiB chunk-line limit; a trailer
    line that looks like a hex size is never a chunk."""
    data = b"2\r\nhi\r\n" + last + b"\r\nX: " + b"y" * 5000 + b"\r\nabc\r\n\r\n"
    decoder = ChunkedDecoder()
    assert payload_of(decoder, [data]) == b"hi"
    assert decoder.done


@pytest.mark.parametrize("size_line", [b"5\x0b", b"5\x0c", b"5\r", b"5X", b"X5"])
def test_size_only_strips_spaces_and_tabs(size_line: bytes) -> None:
    decoder = ChunkedDecoder()
    with pytest.raises(FramingError, match=r"^invalid chunk size$"):
        decoder.feed(size_line + b"\r\nhello\r\n0\r\n\r\n")


# ---- memoryviews (lines are found in a copy of the window)


def test_memoryview_size_line_cut_after_some_bytes() -> None:
    decoder = ChunkedDecoder()
    view = memoryview(b"5\r\nhello\r\n3")
    assert decoder.feed(view) == ([(3, 8)], 11)
    assert payload_of(decoder, [memoryview(b"\r\nabc\r\n0\r\n\r\n")]) == b"abc"
    assert decoder.done


def test_memoryview_feed_starting_with_the_lf_of_a_size_line() -> None:
    decoder = ChunkedDecoder()
    assert decoder.feed(memoryview(b"5\r")) == ([], 2)
    assert payload_of(decoder, [memoryview(b"\nhello\r\n0\r\n\r\n")]) == b"hello"
    assert decoder.done


def test_memoryview_wire_commits_the_crlf_after_the_data() -> None:
    decoder = ChunkedDecoder()
    decoder.feed(memoryview(b"5\r\nhello\r\n"))
    assert decoder.wire == [b"5\r\n", (3, 10)]


# ---- wire


def test_wire_is_an_empty_list_before_any_feed() -> None:
    assert ChunkedDecoder().wire == []


def test_wire_holds_a_lone_size_line_back() -> None:
    decoder = ChunkedDecoder()
    decoder.feed(b"5\r\n")
    assert decoder.wire == []
    decoder.feed(b"hello")
    assert decoder.wire == [b"5\r\n", (0, 5), b"\r\n"]
