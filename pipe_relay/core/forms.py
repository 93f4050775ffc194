# Multipart forms: picks the one part a pipe streams out of a multipart/form-data body.
# Invariant: at most MAX_HELD_FIELD bytes of a skipped field are held; a cut-off form never ends cleanly.
from __future__ import annotations

from dataclasses import dataclass

from python_multipart import MultipartParser
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import parse_options_header

from ..errors import ErrorCode, PipeError, pipe_error

MAX_HELD_FIELD = 64 * 1024
MAX_PART_HEADERS = 16 * 1024


@dataclass(frozen=True, slots=True)
class PartStart:
    """The streamed part begins: its own Content-Type and Content-Disposition (raw)."""

    content_type: str | None
    disposition: str | None


@dataclass(frozen=True, slots=True)
class PartData:
    data: bytes


@dataclass(frozen=True, slots=True)
class PartEnd:
    pass


FormEvent = PartStart | PartData | PartEnd


def _invalid(detail: str) -> PipeError:
    return pipe_error(ErrorCode.INVALID_UPLOAD, detail=detail)


class FormExtractor:
    """Feed a multipart/form-data body; get events for the one part that gets streamed.

    The first part with a non-empty filename is streamed. Non-file fields before it are skipped;
    the first of them is held (up to 64 KiB) and streamed instead if the form has no file part.
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
        self._events: list[FormEvent] = []
        self._field = bytearray()
        self._value = bytearray()
        self._part_headers: dict[str, str] = {}
        self._header_bytes = 0
        self._part_is_file = False
        self._streaming = False
        self._finished = False  # the streamed part ended (or the held field was emitted)
        self._ended = False  # the parser saw the closing boundary
        self._held: tuple[PartStart, bytearray] | None = None
        self._held_overflow = False
        self._holding = False

    def __repr__(self) -> str:
        state = "finished" if self._finished else "streaming" if self._streaming else "seeking"
        return f"<FormExtractor {state}>"

    @property
    def finished(self) -> bool:
        """The streamed part is complete; the rest of the body only needs draining."""
        return self._finished

    def feed(self, data: bytes) -> list[FormEvent]:
        if self._ended or not data:
            return []
        try:
            self._parser.write(data)
        except FormParserError:
            raise _invalid("malformed multipart body") from None
        events, self._events = self._events, []
        return events

    def end(self) -> list[FormEvent]:
        """The sender's body is complete. Raises INVALID_UPLOAD if the form was cut short."""
        if not self._ended:
            raise _invalid("the multipart body ended before its closing boundary")
        if self._finished:
            return []
        self._finished = True
        if self._held is None:
            if self._held_overflow:
                raise _invalid(f"the form has no file and its first field is over {MAX_HELD_FIELD} bytes")
            return [PartStart("text/plain; charset=utf-8", None), PartEnd()]
        start, value = self._held
        return [start, PartData(bytes(value)), PartEnd()] if value else [start, PartEnd()]

    # python-multipart callbacks

    def _on_part_begin(self) -> None:
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
        name = self._field.decode("latin-1").strip().lower()
        self._part_headers.setdefault(name, self._value.decode("utf-8", "replace").strip())
        self._field.clear()
        self._value.clear()

    def _on_headers_finished(self) -> None:
        disposition = self._part_headers.get("content-disposition")
        start = PartStart(self._part_headers.get("content-type"), disposition)
        _, params = parse_options_header(disposition or "")
        self._part_is_file = bool(params.get(b"filename"))
        if self._finished:
            return
        if self._part_is_file:
            self._streaming = True
            self._held = None
            self._events.append(start)
        elif self._held is None and not self._held_overflow:
            self._holding = True
            self._held = (start, bytearray())

    def _on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._streaming:
            self._events.append(PartData(data[start:end]))
        elif self._holding and self._held is not None:
            value = self._held[1]
            if len(value) + end - start > MAX_HELD_FIELD:
                self._held = None
                self._held_overflow = True
                self._holding = False
            else:
                value += data[start:end]

    def _on_part_end(self) -> None:
        self._holding = False
        if self._streaming:
            self._streaming = False
            self._finished = True
            self._events.append(PartEnd())

    def _on_end(self) -> None:
        self._ended = True
