# Cut, malformed and oversized forms, and the part bounds before the content; epilogues, quoted boundaries.
# Invariant: pure and sync; a broken form only ever fails as PipeError INVALID_UPLOAD, never another error.
from __future__ import annotations

import pytest

from pipe_relay.core.forms import MAX_SKIPPED_PARTS, FormExtractor, PartData, PartEnd, PartStart
from pipe_relay.errors import ErrorCode, PipeError
from tests.form_bodies import BOUNDARY, CLOSE, CONTENT_TYPE, field, file_part, normalize, run


@pytest.mark.parametrize(
    "body",
    [
        file_part("f", "x.txt", "text/plain", b"abc"),
        file_part("f", "x.txt", "text/plain", b"abc")[:-10],
        field("text", b"hello"),
        f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=".encode(),
        b"",
    ],
)
def test_body_cut_before_the_closing_boundary_is_invalid(body: bytes) -> None:
    extractor = FormExtractor(CONTENT_TYPE)
    extractor.feed(body)
    with pytest.raises(PipeError) as info:
        extractor.end()
    assert info.value.code is ErrorCode.INVALID_UPLOAD
    assert info.value.status == 400
    assert (
        info.value.message == "[ERROR] Invalid upload: the multipart body ended before its closing boundary."
    )


def test_cut_file_body_is_invalid_even_after_its_data_was_streamed() -> None:
    body = file_part("f", "x.txt", "text/plain", b"abc")
    extractor = FormExtractor(CONTENT_TYPE)
    events = normalize(extractor.feed(body))
    assert events[0] == PartStart("text/plain", 'form-data; name="f"; filename="x.txt"')
    with pytest.raises(PipeError) as info:
        extractor.end()
    assert info.value.code is ErrorCode.INVALID_UPLOAD


@pytest.mark.parametrize(
    "content_type",
    ["multipart/form-data", "multipart/form-data; boundary=", "multipart/form-data; charset=utf-8"],
)
def test_missing_boundary_is_invalid(content_type: str) -> None:
    with pytest.raises(PipeError) as info:
        FormExtractor(content_type)
    assert info.value.code is ErrorCode.INVALID_UPLOAD
    assert info.value.status == 400
    assert info.value.message == "[ERROR] Invalid upload: multipart/form-data without a boundary."


def test_malformed_body_is_invalid() -> None:
    extractor = FormExtractor(CONTENT_TYPE)
    with pytest.raises(PipeError) as info:
        extractor.feed(b"this is not a multipart body\r\n")
    assert info.value.code is ErrorCode.INVALID_UPLOAD
    assert info.value.message == "[ERROR] Invalid upload: malformed multipart body."


def test_oversized_part_headers_are_invalid() -> None:
    junk = b"".join(b"X-Junk-%d: " % i + b"j" * 3000 + b"\r\n" for i in range(6))
    body = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="f"; filename="x"\r\n'.encode()
        + junk
        + b"\r\nabc\r\n"
        + CLOSE
    )
    extractor = FormExtractor(CONTENT_TYPE)
    with pytest.raises(PipeError) as info:
        extractor.feed(body)
    assert info.value.code is ErrorCode.INVALID_UPLOAD
    assert info.value.message == "[ERROR] Invalid upload: multipart part headers too large."


def test_one_huge_part_header_line_is_invalid() -> None:
    body = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="f"; filename="x"\r\n'.encode()
        + b"X-Junk: "
        + b"j" * (20 * 1024)
        + b"\r\n\r\nabc\r\n"
        + CLOSE
    )
    extractor = FormExtractor(CONTENT_TYPE)
    with pytest.raises(PipeError) as info:
        extractor.feed(body)
    assert info.value.code is ErrorCode.INVALID_UPLOAD
    assert info.value.status == 400


def test_bytes_after_the_closing_boundary_are_ignored() -> None:
    body = file_part("f", "x.txt", "text/plain", b"abc") + CLOSE
    extractor = FormExtractor(CONTENT_TYPE)
    events = normalize(extractor.feed(body))
    assert extractor.feed(b"epilogue garbage") == []
    assert events == [
        PartStart("text/plain", 'form-data; name="f"; filename="x.txt"'),
        PartData(b"abc"),
        PartEnd(),
    ]
    assert extractor.end() == []


def test_quoted_boundary() -> None:
    extractor = FormExtractor(f'multipart/form-data; boundary="{BOUNDARY}"')
    body = file_part("f", "x.txt", "text/plain", b"abc") + CLOSE
    events = normalize(extractor.feed(body)) + extractor.end()
    assert events == [
        PartStart("text/plain", 'form-data; name="f"; filename="x.txt"'),
        PartData(b"abc"),
        PartEnd(),
    ]


def test_up_to_1000_parts_may_come_before_the_content() -> None:
    assert MAX_SKIPPED_PARTS == 1000
    body = b"".join(field(f"f{i}", b"x") for i in range(999)) + file_part("f", "a.bin", None, b"ok") + CLOSE
    assert run(body, 4096) == [
        PartStart(None, 'form-data; name="f"; filename="a.bin"'),
        PartData(b"ok"),
        PartEnd(),
    ]


def test_more_than_1000_parts_before_the_content_is_invalid() -> None:
    body = b"".join(field(f"f{i}", b"x") for i in range(1000)) + file_part("f", "a.bin", None, b"ok") + CLOSE
    with pytest.raises(PipeError) as info:
        run(body, 4096)
    assert info.value.code is ErrorCode.INVALID_UPLOAD
    assert info.value.message == "[ERROR] Invalid upload: more than 1000 parts before the content."


def test_parts_after_the_content_are_not_counted() -> None:
    body = file_part("f", "a.bin", None, b"ok") + b"".join(field(f"f{i}", b"x") for i in range(2000)) + CLOSE
    assert run(body, 4096) == [
        PartStart(None, 'form-data; name="f"; filename="a.bin"'),
        PartData(b"ok"),
        PartEnd(),
    ]


def test_more_than_a_mebibyte_of_fields_before_the_content_is_invalid() -> None:
    fields = b"".join(field(f"f{i}", b"x" * 60000) for i in range(20))  # 1.2 MB in 20 parts, each held
    extractor = FormExtractor(CONTENT_TYPE)
    with pytest.raises(PipeError) as info:
        for start in range(0, len(fields), 65536):
            extractor.feed(fields[start : start + 65536])
    assert (
        info.value.message
        == "[ERROR] Invalid upload: more than 1048576 bytes of the form before its content."
    )
