# Multipart forms: picks the one part a pipe streams out of a multipart/form-data body (the content).
# Invariant: at most 2 x MAX_HELD_FIELD bytes of non-file parts are held; a cut-off form never ends cleanly.
from __future__ import annotations

import enum
from dataclasses import dataclass

from python_multipart import MultipartParser
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import parse_options_header

from ..errors import ErrorCode, PipeError, pipe_error

MAX_HELD_FIELD = 64 * 1024
MAX_PART_HEADERS = 16 * 1024
MAX_SKIPPED_PARTS = 1000
MAX_SKIPPED_BYTES = 1024 * 1024
"""Before its content part, a form may have this many parts and bytes (parsing them costs CPU)."""


@dataclass(frozen=True, slots=True)
class PartStart:
    """The content part begins: its own Content-Type and Content-Disposition (raw)."""

    content_type: str | None
    disposition: str | None


@dataclass(frozen=True, slots=True)
class PartData:
    data: bytes


@dataclass(frozen=True, slots=True)
class PartEnd:
    pass


FormEvent = PartStart | PartData | PartEnd


class FormState(enum.Enum):
    SEEKING = "seeking"
    """No content part chosen yet: non-file parts are held while a file part may still come."""
    STREAMING = "streaming"
    """The content part's data goes out as it arrives."""
    FINISHED = "finished"
    """The content part is complete; the rest of the body only needs draining."""


def _invalid(detail: str) -> PipeError:
    return pipe_error(ErrorCode.INVALID_UPLOAD, detail=detail)


class FormExtractor:
    """Feed a multipart/form-data body; get events for the one part that is the content.

    The rule (docs/protocol.md, Multipart):
    1. the first part with a non-empty `filename` is the content;
    2. a part without one is held, up to MAX_HELD_FIELD bytes, while a file part may still come:
       one that grows past that is the content (streamed from its first byte, the held bytes
       first); if the form ends with no file part, the first part is the content;
    3. a form with no part at all is INVALID_UPLOAD, and so is one with more than
       MAX_SKIPPED_PARTS parts or MAX_SKIPPED_BYTES bytes before its content part.
    """

    def __init__(self, content_type: str) -> None:
        _, params = parse_options_header(content_type)
        boundary = params.get(b"boundary")
        if not boundary:
            raise _invalid("multipart/form-data without a boundary")
        try:
            self._parser = MultipartParser(
                boundary,
                {
                    "on_part_begin": self._on_part_begin,
                    "on_part_data": self._on_part_data,
                    "on_part_end": self._on_part_end,
                    "on_header_field": self._on_header_field,
                    "on_header_value": self._on_header_value,
                    "on_header_end": self._on_header_end,
                    "on_headers_finished": self._on_headers_finished,
                    "on_end": self._on_end,
                },
            )
        except FormParserError:
            raise _invalid("multipart boundary too long") from None
        self.state = FormState.SEEKING
        self._events: list[FormEvent] = []
        self._field = bytearray()
        self._value = bytearray()
        self._part_headers: dict[str, str] = {}
        self._header_bytes = 0
        self._parts = 0
        self._held: tuple[PartStart, bytearray] | None = None  # the non-file part being read
        self._first: tuple[PartStart, bytes] | None = None  # the first part, complete and small
        self._closed = False  # the parser saw the closing boundary
        self._sought = 0  # bytes fed while no content part was chosen

    def __repr__(self) -> str:
        return f"<FormExtractor {self.state.value} parts={self._parts}>"

    @property
    def finished(self) -> bool:
        """The content part is complete; the rest of the body only needs draining."""
        return self.state is FormState.FINISHED

    def feed(self, data: bytes) -> list[FormEvent]:
        if self._closed or not data:
            return []
        if self.state is FormState.SEEKING:
            self._sought += len(data)
            if self._sought > MAX_SKIPPED_BYTES + MAX_HELD_FIELD:  # (a held field may become the content)
                raise _invalid(f"more than {MAX_SKIPPED_BYTES} bytes of the form before its content")
        try:
            self._parser.write(data)
        except FormParserError:
            raise _invalid("malformed multipart body") from None
        events, self._events = self._events, []
        return events

    def end(self) -> list[FormEvent]:
        """The sender's body is complete. Raises INVALID_UPLOAD if the form was cut short or empty."""
        if not self._closed:
            raise _invalid("the multipart body ended before its closing boundary")
        if self.state is FormState.FINISHED:
            return []
        if self._first is None:
            raise _invalid("the form has no part")
        self.state = FormState.FINISHED
        start, value = self._first
        return [start, PartData(value), PartEnd()] if value else [start, PartEnd()]

    def _stream(self, start: PartStart, first: bytes) -> None:
        self.state = FormState.STREAMING
        self._first = None
        self._events.append(start)
        if first:
            self._events.append(PartData(first))

    # python-multipart callbacks

    def _on_part_begin(self) -> None:
        self._parts += 1
        if self.state is FormState.SEEKING and self._parts > MAX_SKIPPED_PARTS:
            raise _invalid(f"more than {MAX_SKIPPED_PARTS} parts before the content")
        self._part_headers = {}
        self._header_bytes = 0

    def _on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._count_header(end - start)
        self._field += data[start:end]

    def _on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._count_header(end - start)
        self._value += data[start:end]

    def _count_header(self, size: int) -> None:
        self._header_bytes += size
        if self._header_bytes > MAX_PART_HEADERS:
            raise _invalid("multipart part headers too large")

    def _on_header_end(self) -> None:
        # latin-1 both ways: a part's header bytes reach the receiver as the sender wrote them
        name = self._field.decode("latin-1").strip().lower()
        self._part_headers.setdefault(name, self._value.decode("latin-1").strip())
        self._field.clear()
        self._value.clear()

    def _on_headers_finished(self) -> None:
        if self.state is not FormState.SEEKING:
            return
        disposition = self._part_headers.get("content-disposition")
        start = PartStart(self._part_headers.get("content-type"), disposition)
        _, params = parse_options_header(disposition or "")
        if params.get(b"filename"):
            self._stream(start, b"")
        else:
            self._held = (start, bytearray())

    def _on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self.state is FormState.STREAMING:
            self._events.append(PartData(data[start:end]))
        elif self._held is not None:
            part, value = self._held
            if len(value) + end - start > MAX_HELD_FIELD:  # too big to be a field: the content
                self._held = None
                self._stream(part, bytes(value) + data[start:end])
            else:
                value += data[start:end]

    def _on_part_end(self) -> None:
        if self.state is FormState.STREAMING:
            self.state = FormState.FINISHED
            self._events.append(PartEnd())
        elif self._held is not None:
            if self._parts == 1:  # the first part: the content if no file part comes
                self._first = (self._held[0], bytes(self._held[1]))
            self._held = None

    def _on_end(self) -> None:
        self._closed = True
