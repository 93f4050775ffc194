# Body framing: the chunked and length decoders, chunk encoding and response heads.
# Invariant: pure and sync; every case asserts exact payloads, spans, positions, bytes or error text.
from __future__ import annotations

import pytest

from pipe_relay.core.framing import (
    ChunkedDecoder,
    EmptyDecoder,
    FramingError,
    LengthDecoder,
    chunk_head,
    encode_chunk,
    render_head,
)
from tests.chunked_feeds import BODY, PAYLOAD, feed_pieces

AFTER = b"POST /next HTTP/1.1\r\n\r\n"


def test_chunked_whole() -> None:
    decoder = ChunkedDecoder()
    assert not decoder.done
    assert feed_pieces(decoder, [BODY]) == (PAYLOAD, b"")
    assert decoder.done


def test_chunked_whole_with_bytes_after_the_end() -> None:
    decoder = ChunkedDecoder()
    spans, consumed = decoder.feed(BODY + AFTER)
    assert consumed == len(BODY)
    assert decoder.done
    assert b"".join(BODY[a:b] for a, b in spans) == PAYLOAD


def test_chunked_spans_point_into_the_buffer() -> None:
    decoder = ChunkedDecoder()
    spans, consumed = decoder.feed(b"5\r\nhello\r\n3\r\nabc\r\n0\r\n\r\n")
    assert spans == [(3, 8), (13, 16)]
    assert consumed == 23
    assert decoder.done


def test_chunked_byte_by_byte() -> None:
    decoder = ChunkedDecoder()
    pieces = [bytes([b]) for b in BODY + AFTER]
    assert feed_pieces(decoder, pieces) == (PAYLOAD, AFTER)


def test_chunked_byte_by_byte_is_done_exactly_at_the_last_byte() -> None:
    decoder = ChunkedDecoder()
    for index, byte in enumerate(BODY):
        assert not decoder.done, index
        _, consumed = decoder.feed(bytes([byte]))
        assert consumed == 1
    assert decoder.done
    assert decoder.feed(b"x") == ([], 0)


@pytest.mark.parametrize("split", range(len(BODY + AFTER) + 1))
def test_chunked_split_at_every_position(split: int) -> None:
    data = BODY + AFTER
    decoder = ChunkedDecoder()
    assert feed_pieces(decoder, [data[:split], data[split:]]) == (PAYLOAD, AFTER)
    assert decoder.done


def test_chunked_accepts_memoryview() -> None:
    decoder = ChunkedDecoder()
    view = memoryview(BODY + AFTER)
    spans, consumed = decoder.feed(view)
    assert consumed == len(BODY)
    assert b"".join(bytes(view[a:b]) for a, b in spans) == PAYLOAD


def test_chunked_empty_body() -> None:
    decoder = ChunkedDecoder()
    assert decoder.feed(b"0\r\n\r\nrest") == ([], 5)
    assert decoder.done


def test_chunked_empty_feed_is_harmless() -> None:
    decoder = ChunkedDecoder()
    assert decoder.feed(b"") == ([], 0)
    assert not decoder.done


@pytest.mark.parametrize(
    ("data", "payload"),
    [
        (b"ff\r\n" + b"x" * 255 + b"\r\n0\r\n\r\n", b"x" * 255),
        (b"FF\r\n" + b"y" * 255 + b"\r\n0\r\n\r\n", b"y" * 255),
        (b"0000000000000003\r\nabc\r\n0\r\n\r\n", b"abc"),
        (b"3\t\r\nabc\r\n000\r\n\r\n", b"abc"),
    ],
)
def test_chunked_size_forms(data: bytes, payload: bytes) -> None:
    decoder = ChunkedDecoder()
    assert feed_pieces(decoder, [data]) == (payload, b"")
    assert decoder.done


@pytest.mark.parametrize(
    "size_line",
    [b"g", b"", b" ", b"-1", b"0x5", b"+5", b"5 5", b";ext", b"1" * 17, "\u0665".encode()],
)
def test_chunked_bad_size(size_line: bytes) -> None:
    decoder = ChunkedDecoder()
    with pytest.raises(FramingError, match=r"^invalid chunk size$"):
        decoder.feed(size_line + b"\r\nhello\r\n0\r\n\r\n")


@pytest.mark.parametrize(
    "data",
    [
        b"5\nhello\r\n0\r\n\r\n",  # size line ended by a bare LF
        b"5\r\nhello\n0\r\n\r\n",  # data not followed by CRLF
        b"5\r\nhello\r\n0\r\n\n",  # trailer section ended by a bare LF
    ],
)
def test_chunked_missing_crlf(data: bytes) -> None:
    decoder = ChunkedDecoder()
    with pytest.raises(FramingError, match=r"^chunk line not terminated by CRLF$"):
        decoder.feed(data)


def test_chunked_data_longer_than_its_size() -> None:
    decoder = ChunkedDecoder()
    with pytest.raises(FramingError, match=r"^chunk data longer than its size$"):
        decoder.feed(b"3\r\nhello\r\n0\r\n\r\n")


def test_chunked_data_longer_than_its_size_byte_by_byte() -> None:
    decoder = ChunkedDecoder()
    data = b"3\r\nhello\r\n0\r\n\r\n"
    with pytest.raises(FramingError, match=r"^chunk data longer than its size$"):
        for byte in data:
            decoder.feed(bytes([byte]))


def test_chunked_size_line_too_long() -> None:
    decoder = ChunkedDecoder()
    with pytest.raises(FramingError, match=r"^chunk line too long$"):
        decoder.feed(b"5;" + b"x" * 5000 + b"\r\nhello\r\n0\r\n\r\n")


def test_chunked_size_line_too_long_without_newline_fed_in_pieces() -> None:
    decoder = ChunkedDecoder()
    decoder.feed(b"5;" + b"x" * 4000)
    with pytest.raises(FramingError, match=r"^chunk line too long$"):
        decoder.feed(b"x" * 200)


def test_chunked_size_line_with_long_extension_under_the_limit() -> None:
    line = b"5;" + b"x" * 4000 + b"\r\n"
    assert len(line) <= 4096
    decoder = ChunkedDecoder()
    assert feed_pieces(decoder, [line + b"hello\r\n0\r\n\r\n"]) == (b"hello", b"")


def test_chunked_trailer_section_too_large() -> None:
    decoder = ChunkedDecoder()
    trailers = b"".join(b"T%d: " % i + b"v" * 1000 + b"\r\n" for i in range(20))
    with pytest.raises(FramingError, match=r"^trailer section too large$"):
        decoder.feed(b"0\r\n" + trailers + b"\r\n")


def test_chunked_not_done_before_the_final_crlf() -> None:
    decoder = ChunkedDecoder()
    head = b"5\r\nhello\r\n0\r\nX: 1\r\n"
    _, consumed = decoder.feed(head)
    assert consumed == len(head) == 19
    assert not decoder.done
    assert decoder.feed(b"\r\n") == ([], 2)
    assert decoder.done


def test_chunked_truncated_body_is_never_done() -> None:
    for cut in range(len(BODY)):
        decoder = ChunkedDecoder()
        decoder.feed(BODY[:cut])
        assert not decoder.done, cut


def test_length_decoder() -> None:
    decoder = LengthDecoder(5)
    assert not decoder.done
    assert decoder.feed(b"abc") == ([(0, 3)], 3)
    assert decoder.remaining == 2
    assert not decoder.done
    assert decoder.feed(b"defgh") == ([(0, 2)], 2)
    assert decoder.done
    assert decoder.feed(b"more") == ([], 0)


def test_length_decoder_byte_by_byte_and_leftover() -> None:
    decoder = LengthDecoder(4)
    pieces = [bytes([b]) for b in b"abcdXYZ"]
    assert feed_pieces(decoder, pieces) == (b"abcd", b"XYZ")


def test_length_decoder_empty_feed() -> None:
    decoder = LengthDecoder(3)
    assert decoder.feed(b"") == ([], 0)
    assert decoder.remaining == 3


@pytest.mark.parametrize("decoder", [LengthDecoder(0), EmptyDecoder()])
def test_empty_body_is_done_at_once(decoder: LengthDecoder) -> None:
    assert decoder.done
    assert decoder.feed(b"next request") == ([], 0)


@pytest.mark.parametrize(
    ("size", "expected"),
    [(1, b"1\r\n"), (10, b"a\r\n"), (255, b"ff\r\n"), (1024 * 1024, b"100000\r\n")],
)
def test_chunk_head(size: int, expected: bytes) -> None:
    assert chunk_head(size) == expected


def test_encode_chunk() -> None:
    assert encode_chunk(b"hello") == b"5\r\nhello\r\n"
    assert encode_chunk(b"x" * 16) == b"10\r\n" + b"x" * 16 + b"\r\n"


def test_encode_empty_chunk_is_not_the_last_chunk() -> None:
    assert encode_chunk(b"") == b""


def test_encoded_chunks_decode_back() -> None:
    data = encode_chunk(b"abc") + encode_chunk(b"") + encode_chunk(b"defg") + b"0\r\n\r\n"
    assert feed_pieces(ChunkedDecoder(), [data]) == (b"abcdefg", b"")


@pytest.mark.parametrize(
    ("version", "status", "headers", "expected"),
    [
        (
            "1.1",
            200,
            [("Content-Type", "text/plain"), ("Content-Length", "5")],
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\n",
        ),
        ("1.0", 200, [], b"HTTP/1.0 200 OK\r\n\r\n"),
        (
            "1.1",
            405,
            [("Allow", "GET, POST, PUT, OPTIONS")],
            b"HTTP/1.1 405 Method Not Allowed\r\nAllow: GET, POST, PUT, OPTIONS\r\n\r\n",
        ),
        ("1.1", 404, [("Content-Length", "0")], b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"),
        ("1.1", 408, [], b"HTTP/1.1 408 Request Timeout\r\n\r\n"),
        ("1.1", 503, [("Retry-After", "5")], b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 5\r\n\r\n"),
        ("1.1", 204, [], b"HTTP/1.1 204 No Content\r\n\r\n"),
        ("1.1", 200, [("X-Name", "caf\u00e9")], b"HTTP/1.1 200 OK\r\nX-Name: caf\xe9\r\n\r\n"),
        ("1.1", 200, [("X-Name", "\u65e5")], b"HTTP/1.1 200 OK\r\nX-Name: ?\r\n\r\n"),
        ("1.1", 200, [("X-A", "a\r\nX-Evil: 1")], b"HTTP/1.1 200 OK\r\nX-A: aX-Evil: 1\r\n\r\n"),
        ("1.1", 200, [("X-A", "a\nb\rc\x00d\x7fe\x1b\tf")], b"HTTP/1.1 200 OK\r\nX-A: abcde\tf\r\n\r\n"),
    ],
)
def test_render_head(version: str, status: int, headers: list[tuple[str, str]], expected: bytes) -> None:
    assert render_head(version, status, headers) == expected


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (b" 5\r\nhello\r\n0\r\n\r\n", "invalid chunk size"),  # RFC 9112: no whitespace before the size
        (b"\t5\r\nhello\r\n0\r\n\r\n", "invalid chunk size"),
        (b"5;a\rb\r\nhello\r\n0\r\n\r\n", "a control character in a chunk extension"),
        (b"5;a=\x00\r\nhello\r\n0\r\n\r\n", "a control character in a chunk extension"),
    ],
)
def test_lenient_chunk_lines_that_could_smuggle_are_refused(line: bytes, message: str) -> None:
    with pytest.raises(FramingError, match=f"^{message}$"):
        ChunkedDecoder().feed(line)


def test_whitespace_before_an_extension_and_a_tab_inside_one_are_fine() -> None:
    assert feed_pieces(ChunkedDecoder(), [b"5 ;a=b\tc\r\nhello\r\n0\r\n\r\n"]) == (b"hello", b"")
