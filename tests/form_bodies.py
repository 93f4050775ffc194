# Multipart bodies for the form tests: one boundary, field and file parts, and a run through the extractor.
# Invariant: run() feeds the whole body and ends it; normalize merges PartData (dropping empty ones), no more.
from __future__ import annotations

from pipe_relay.core.forms import FormEvent, FormExtractor, PartData

BOUNDARY = "----pipeBoundary7MA4YWxk"
CONTENT_TYPE = f"multipart/form-data; boundary={BOUNDARY}"


def field(name: str, value: bytes) -> bytes:
    return f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode() + value + b"\r\n"


def file_part(name: str, filename: str, content_type: str | None, value: bytes) -> bytes:
    head = f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
    if content_type is not None:
        head += f"Content-Type: {content_type}\r\n"
    return head.encode() + b"\r\n" + value + b"\r\n"


CLOSE = f"--{BOUNDARY}--\r\n".encode()


def normalize(events: list[FormEvent]) -> list[FormEvent]:
    """Merge consecutive PartData events (their split depends on how the body was fed)."""
    out: list[FormEvent] = []
    for event in events:
        if isinstance(event, PartData) and out and isinstance(out[-1], PartData):
            out[-1] = PartData(out[-1].data + event.data)
        elif isinstance(event, PartData) and not event.data:
            continue
        else:
            out.append(event)
    return out


def run(body: bytes, pieces: int | None = None) -> list[FormEvent]:
    """Feed a whole body (at once, or in pieces of `pieces` bytes) then end it."""
    extractor = FormExtractor(CONTENT_TYPE)
    events: list[FormEvent] = []
    step = pieces or len(body) or 1
    for start in range(0, len(body), step):
        events += extractor.feed(body[start : start + step])
    events += extractor.end()
    return normalize(events)
