# The multipart extractor's choice: which part is streamed (the first file, or a field), when and with what.
# Invariant: pure and sync; the events are exact, and however the body is split they are the same.
from __future__ import annotations

import pytest

from pipe_relay.core.forms import (
    MAX_HELD_FIELD,
    FormEvent,
    FormExtractor,
    FormState,
    PartData,
    PartEnd,
    PartStart,
)
from pipe_relay.errors import ErrorCode, PipeError
from tests.form_bodies import BOUNDARY, CLOSE, CONTENT_TYPE, field, file_part, normalize, run

FILE_DATA = b"line one\r\nline two\r\n--not-a-boundary\r\n\x00\xff binary"


def test_first_file_part_is_streamed_with_its_headers() -> None:
    body = file_part("upload", "data.csv", "text/csv", FILE_DATA) + CLOSE
    assert run(body) == [
        PartStart("text/csv", 'form-data; name="upload"; filename="data.csv"'),
        PartData(FILE_DATA),
        PartEnd(),
    ]


def test_leading_fields_are_skipped() -> None:
    body = (
        field("path", b"mypath")
        + field("mode", b"file")
        + file_part("file", "a.png", "image/png", FILE_DATA)
        + field("after", b"ignored")
        + CLOSE
    )
    assert run(body) == [
        PartStart("image/png", 'form-data; name="file"; filename="a.png"'),
        PartData(FILE_DATA),
        PartEnd(),
    ]


def test_only_the_first_file_part_is_streamed() -> None:
    body = (
        file_part("one", "1.bin", "application/octet-stream", b"first")
        + file_part("two", "2.bin", "application/octet-stream", b"second")
        + CLOSE
    )
    assert run(body) == [
        PartStart("application/octet-stream", 'form-data; name="one"; filename="1.bin"'),
        PartData(b"first"),
        PartEnd(),
    ]


def test_file_part_without_content_type() -> None:
    body = file_part("f", "x", None, b"abc") + CLOSE
    assert run(body) == [PartStart(None, 'form-data; name="f"; filename="x"'), PartData(b"abc"), PartEnd()]


def test_empty_file_part() -> None:
    body = file_part("f", "empty.txt", "text/plain", b"") + CLOSE
    assert run(body) == [PartStart("text/plain", 'form-data; name="f"; filename="empty.txt"'), PartEnd()]


def test_file_events_come_before_end() -> None:
    body = field("a", b"1") + file_part("f", "x.txt", "text/plain", b"payload") + CLOSE
    extractor = FormExtractor(CONTENT_TYPE)
    events = normalize(extractor.feed(body))
    assert events == [
        PartStart("text/plain", 'form-data; name="f"; filename="x.txt"'),
        PartData(b"payload"),
        PartEnd(),
    ]
    assert extractor.finished
    assert extractor.end() == []


def test_file_data_is_streamed_before_the_part_ends() -> None:
    body = file_part("f", "x.bin", "application/octet-stream", b"A" * 10000) + CLOSE
    extractor = FormExtractor(CONTENT_TYPE)
    cut = body.index(b"A" * 10000) + 5000
    events = normalize(extractor.feed(body[:cut]))
    assert events[0] == PartStart("application/octet-stream", 'form-data; name="f"; filename="x.bin"')
    assert len(events) == 2
    assert isinstance(events[1], PartData)
    assert b"A" * 4000 in events[1].data
    assert not extractor.finished


def test_text_only_form_streams_its_first_field() -> None:
    body = field("text", b"hello, world\r\nsecond line") + field("path", b"mypath") + CLOSE
    extractor = FormExtractor(CONTENT_TYPE)
    assert extractor.feed(body) == []
    assert not extractor.finished
    assert normalize(extractor.end()) == [
        PartStart(None, 'form-data; name="text"'),
        PartData(b"hello, world\r\nsecond line"),
        PartEnd(),
    ]
    assert extractor.finished
    assert extractor.end() == []


def test_text_only_form_with_empty_first_field() -> None:
    body = field("text", b"") + CLOSE
    assert run(body) == [PartStart(None, 'form-data; name="text"'), PartEnd()]


def test_form_with_no_part_is_invalid() -> None:
    with pytest.raises(PipeError) as info:
        run(CLOSE)
    assert info.value.code is ErrorCode.INVALID_UPLOAD
    assert info.value.status == 400
    assert info.value.message == "[ERROR] Invalid upload: the form has no part."


def test_first_field_at_the_hold_limit_is_kept() -> None:
    value = b"v" * MAX_HELD_FIELD
    assert MAX_HELD_FIELD == 64 * 1024
    assert run(field("text", value) + CLOSE) == [
        PartStart(None, 'form-data; name="text"'),
        PartData(value),
        PartEnd(),
    ]


@pytest.mark.parametrize("pieces", [None, 1000, 65536])
def test_a_field_over_the_hold_limit_is_the_content(pieces: int | None) -> None:
    value = bytes(range(256)) * (MAX_HELD_FIELD // 256) + b"past the limit"
    part = (
        f"--{BOUNDARY}\r\nContent-Type: application/octet-stream\r\n"
        'Content-Disposition: form-data; name="input_data"\r\n\r\n'
    ).encode()
    body = part + value + b"\r\n" + field("small", b"s") + CLOSE
    assert run(body, pieces) == [
        PartStart("application/octet-stream", 'form-data; name="input_data"'),
        PartData(value),
        PartEnd(),
    ]


def test_the_content_field_streams_before_the_form_ends() -> None:
    """Past the hold limit, a field is the content at once: its bytes go out without waiting."""
    extractor = FormExtractor(CONTENT_TYPE)
    body = field("big", b"b" * (MAX_HELD_FIELD + 200))
    events = normalize(extractor.feed(body[: MAX_HELD_FIELD + 150]))  # the head, and 64 KiB + 75 bytes
    assert events[0] == PartStart(None, 'form-data; name="big"')
    assert isinstance(events[1], PartData) and events[1].data.startswith(b"b" * MAX_HELD_FIELD)
    assert extractor.state is FormState.STREAMING
    assert repr(extractor) == "<FormExtractor streaming parts=1>"


def test_a_field_that_passes_the_limit_first_wins_over_a_later_file() -> None:
    value = b"v" * (100 * 1024)
    body = field("text", value) + file_part("f", "x.txt", "text/plain", b"ok") + CLOSE
    assert run(body) == [PartStart(None, 'form-data; name="text"'), PartData(value), PartEnd()]


def test_a_field_at_the_hold_limit_gives_way_to_a_later_file() -> None:
    body = field("text", b"v" * MAX_HELD_FIELD) + file_part("f", "x.txt", "text/plain", b"ok") + CLOSE
    assert run(body) == [
        PartStart("text/plain", 'form-data; name="f"; filename="x.txt"'),
        PartData(b"ok"),
        PartEnd(),
    ]


def test_a_later_big_field_is_the_content_when_small_ones_came_first() -> None:
    value = b"w" * (MAX_HELD_FIELD + 1)
    body = field("path", b"mypath") + field("text", value) + CLOSE
    assert run(body, 4096) == [PartStart(None, 'form-data; name="text"'), PartData(value), PartEnd()]


def test_a_small_field_then_a_file_streams_the_file() -> None:
    data = bytes(range(256)) * 12 * 1024  # 3 MiB
    body = field("note", b"n" * 10 * 1024) + file_part("f", "big.bin", "image/png", data) + CLOSE
    assert run(body, 65536) == [
        PartStart("image/png", 'form-data; name="f"; filename="big.bin"'),
        PartData(data),
        PartEnd(),
    ]


def test_an_empty_filename_is_not_a_file() -> None:
    """A browser's file input with nothing chosen sends `filename=""` and no bytes: skipped."""
    body = (
        field("a", b"1")
        + file_part("empty", "", "application/octet-stream", b"")
        + file_part("f", "real.bin", "application/octet-stream", FILE_DATA)
        + CLOSE
    )
    assert run(body) == [
        PartStart("application/octet-stream", 'form-data; name="f"; filename="real.bin"'),
        PartData(FILE_DATA),
        PartEnd(),
    ]


def test_held_state_is_shown() -> None:
    extractor = FormExtractor(CONTENT_TYPE)
    assert repr(extractor) == "<FormExtractor seeking parts=0>"
    extractor.feed(field("a", b"1") + CLOSE)
    assert extractor.state is FormState.SEEKING
    extractor.end()
    assert repr(extractor) == "<FormExtractor finished parts=1>"


NAMED = (
    f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="f"; filename="s.bin"\r\n'
    "Content-Type: application/octet-stream\r\n\r\n"
).encode()


@pytest.mark.parametrize("first_cut", range(1, 201))
def test_a_split_at_any_offset_of_the_first_200_bytes_changes_nothing(first_cut: int) -> None:
    data = bytes(range(256)) + b"\r\n--" + BOUNDARY.encode()[:-1] + b"\r\n" + bytes(range(255, -1, -1))
    body = field("lead", b"x" * 40) + NAMED + data + b"\r\n" + CLOSE
    assert len(body) > 200
    extractor = FormExtractor(CONTENT_TYPE)
    events = extractor.feed(body[:first_cut]) + extractor.feed(body[first_cut:]) + extractor.end()
    assert normalize(events) == [
        PartStart("application/octet-stream", 'form-data; name="f"; filename="s.bin"'),
        PartData(data),
        PartEnd(),
    ]


BODIES = {
    "file after fields": field("a", b"1")
    + field("b", b"2")
    + file_part("f", "x.bin", "image/gif", FILE_DATA)
    + CLOSE,
    "text only": field("text", b"just text\r\n--x") + CLOSE,
    "two files": file_part("f", "1.txt", "text/plain", b"one")
    + file_part("g", "2.txt", None, b"two")
    + CLOSE,
    "big file": file_part("f", "big.bin", None, bytes(range(256)) * 300) + CLOSE,
}


@pytest.mark.parametrize("name", sorted(BODIES))
@pytest.mark.parametrize("pieces", [1, 7, 100, 4096])
def test_feeding_in_pieces_gives_the_same_result(name: str, pieces: int) -> None:
    body = BODIES[name]
    assert run(body, pieces) == run(body)


@pytest.mark.parametrize("name", sorted(BODIES))
def test_whole_body_results(name: str) -> None:
    expected: dict[str, list[FormEvent]] = {
        "file after fields": [
            PartStart("image/gif", 'form-data; name="f"; filename="x.bin"'),
            PartData(FILE_DATA),
            PartEnd(),
        ],
        "text only": [PartStart(None, 'form-data; name="text"'), PartData(b"just text\r\n--x"), PartEnd()],
        "two files": [
            PartStart("text/plain", 'form-data; name="f"; filename="1.txt"'),
            PartData(b"one"),
            PartEnd(),
        ],
        "big file": [
            PartStart(None, 'form-data; name="f"; filename="big.bin"'),
            PartData(bytes(range(256)) * 300),
            PartEnd(),
        ],
    }
    assert run(BODIES[name]) == expected[name]
