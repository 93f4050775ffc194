# Multipart edges the mutation run showed unpinned: the exact byte and header bounds, epilogues, end().
# Invariant: pure and sync; every bound is checked at its limit and one past it, with exact values.
from __future__ import annotations

from collections.abc import Callable

import pytest

from pipe_relay.core.forms import (
    MAX_HELD_FIELD,
    MAX_PART_HEADERS,
    MAX_SKIPPED_BYTES,
    FormExtractor,
    FormState,
    PartData,
    PartEnd,
    PartStart,
)
from pipe_relay.errors import ErrorCode, PipeError

BOUNDARY = "edgeBoundary"
CONTENT_TYPE = f"multipart/form-data; boundary={BOUNDARY}"
CLOSE = f"--{BOUNDARY}--\r\n".encode()
DISPOSITION = 'form-data; name="f"; filename="x"'


def field(name: str, value: bytes) -> bytes:
    return f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode() + value + b"\r\n"


def invalid(call: Callable[..., object], *args: object) -> str:
    """The message of the INVALID_UPLOAD `call(*args)` raises."""
    with pytest.raises(PipeError) as info:
        call(*args)
    assert (info.value.code, info.value.status) == (ErrorCode.INVALID_UPLOAD, 400)
    return info.value.message


def test_a_boundary_longer_than_the_parser_takes_is_invalid() -> None:
    FormExtractor("multipart/form-data; boundary=" + "b" * 256)  # python-multipart's longest
    message = invalid(FormExtractor, "multipart/form-data; boundary=" + "b" * 257)
    assert message == "[ERROR] Invalid upload: multipart boundary too long."


def test_an_empty_first_field_ends_as_a_start_and_an_end_only() -> None:
    """No PartData(b"") in between (a receiver would be sent an empty chunk: the last-chunk marker)."""
    extractor = FormExtractor(CONTENT_TYPE)
    assert extractor.feed(field("text", b"") + CLOSE) == []
    assert extractor.end() == [PartStart(None, 'form-data; name="text"'), PartEnd()]


def test_a_first_field_ends_as_start_data_end() -> None:
    extractor = FormExtractor(CONTENT_TYPE)
    assert extractor.feed(field("text", b"hi") + CLOSE) == []
    assert extractor.end() == [PartStart(None, 'form-data; name="text"'), PartData(b"hi"), PartEnd()]


def test_an_epilogue_after_a_text_only_form_costs_nothing() -> None:
    """Once the closing boundary is seen, nothing more is parsed or counted against the skip bound."""
    extractor = FormExtractor(CONTENT_TYPE)
    assert extractor.feed(field("text", b"hi") + CLOSE) == []
    assert extractor.state is FormState.SEEKING
    for _ in range(20):
        assert extractor.feed(b"e" * 65536) == []  # 1.25 MiB of epilogue, past MAX_SKIPPED_BYTES + 64 KiB
    assert extractor.end() == [PartStart(None, 'form-data; name="text"'), PartData(b"hi"), PartEnd()]


def test_the_skip_bound_is_exact() -> None:
    """Exactly MAX_SKIPPED_BYTES + MAX_HELD_FIELD bytes of fields may come before the content; one more
    byte is INVALID_UPLOAD."""
    limit = MAX_SKIPPED_BYTES + MAX_HELD_FIELD
    assert limit == 1114112
    fields = b"".join(field(f"f{i}", b"x" * 55000) for i in range(21))  # each held, none the content
    assert len(fields) > limit
    extractor = FormExtractor(CONTENT_TYPE)
    for start in range(0, limit, 65536):
        assert extractor.feed(fields[start : min(start + 65536, limit)]) == []
    assert extractor.state is FormState.SEEKING
    message = invalid(extractor.feed, fields[limit : limit + 1])
    assert message == "[ERROR] Invalid upload: more than 1048576 bytes of the form before its content."


def part_with_headers(counted: int) -> bytes:
    """A file part whose header names and values (what the bound counts) total `counted` bytes, in
    five lines (python-multipart itself takes at most 8 lines of 4224 bytes)."""
    pads = counted - len("Content-Disposition") - len(DISPOSITION) - 4 * len("X-Pad-0")
    sizes = [pads // 4 + (1 if i < pads % 4 else 0) for i in range(4)]
    head = f"--{BOUNDARY}\r\nContent-Disposition: {DISPOSITION}\r\n"
    head += "".join(f"X-Pad-{i}: {'p' * size}\r\n" for i, size in enumerate(sizes))
    return head.encode() + b"\r\nabc\r\n"


def test_part_headers_up_to_the_bound_pass() -> None:
    assert MAX_PART_HEADERS == 16384
    extractor = FormExtractor(CONTENT_TYPE)
    events = extractor.feed(part_with_headers(MAX_PART_HEADERS) + CLOSE)
    assert events == [PartStart(None, DISPOSITION), PartData(b"abc"), PartEnd()]


def test_the_header_bound_is_per_part() -> None:
    """Each part starts counting from 0: three parts at the bound pass."""
    extractor = FormExtractor(CONTENT_TYPE)
    body = field("a", b"1") + field("b", b"2") + part_with_headers(MAX_PART_HEADERS) + CLOSE
    assert extractor.feed(body) == [PartStart(None, DISPOSITION), PartData(b"abc"), PartEnd()]


def test_one_part_header_byte_past_the_bound_is_invalid() -> None:
    extractor = FormExtractor(CONTENT_TYPE)
    message = invalid(extractor.feed, part_with_headers(MAX_PART_HEADERS + 1) + CLOSE)
    assert message == "[ERROR] Invalid upload: multipart part headers too large."
