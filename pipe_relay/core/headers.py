# Header policy: what a receiver is told about the sender's body, CORS, and the fixed safety headers.
# Invariant: no output header value contains a control character, and no script-capable type gets out.
from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import quote

Headers = Sequence[tuple[str, str]]
"""Request headers as (lower-case name, value) pairs, in order."""

METADATA_HEADERS = ("X-Piping", "X-Hoody-Pipe")
MAX_METADATA_VALUE = 8 * 1024
MAX_FILENAME = 255
PIPE_ALLOW = "GET, POST, PUT, OPTIONS"
SERVICE_ALLOW = "GET, HEAD, OPTIONS"
PREFLIGHT_ALLOW_HEADERS = "Content-Type, Content-Disposition, Authorization, X-Piping, X-Hoody-Pipe"
SAFETY_HEADERS = (("X-Content-Type-Options", "nosniff"),)
PIPE_HEADERS = (
    ("X-Robots-Tag", "none"),
    ("Cache-Control", "no-store"),
    ("Content-Security-Policy", "sandbox"),  # even a type the policy let through cannot run script
)

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_ORIGIN = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://(?:[A-Za-z0-9._~-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?")
MAX_ORIGIN = 300
"""A real origin is at most a scheme, a 253-character host name and a port; a longer one is not
reflected (each reflection is encoded into the reply again: 8 KiB a request, for a 1-byte HPACK
reference on the way in)."""
_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_MEDIA_TYPE = re.compile(rf"^\s*({_TOKEN})/({_TOKEN})\s*(;.*)?$", re.DOTALL)
_PARAM = re.compile(rf'\s*({_TOKEN})\s*=\s*("(?:[^"\\]|\\.)*"|{_TOKEN})\s*')
_CHARSET = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:+-]{0,39}")
_DISPOSITION = re.compile(rf"({_TOKEN})\s*(;(?:{_PARAM.pattern};)*{_PARAM.pattern})?")
_KEPT_DISPOSITIONS = ("attachment", "form-data")
_FILENAME = re.compile(r'filename\s*=\s*("(?:[^"\\]|\\.)*"|[^;\s"]+)', re.IGNORECASE)
_SCRIPT_SUBTYPE_WORDS = ("html", "xml", "javascript", "ecmascript", "jscript", "livescript")
_SCRIPT_TYPES = frozenset(
    {
        "text/x-component",
        "application/x-shockwave-flash",
        "application/futuresplash",
        "text/vbscript",
        "text/x-vbscript",
        "application/x-vbscript",
        "text/xsl",
    }
)

DEFAULT_CONTENT_TYPE = "application/octet-stream"
FIELD_CONTENT_TYPE = "text/plain; charset=utf-8"
"""The type of a form part that names none (RFC 7578 4.4): a browser's text field."""


def first(headers: Headers, name: str) -> str | None:
    """The first value of header `name` (lower-case), or None."""
    for key, value in headers:
        if key == name:
            return value
    return None


def strip_controls(value: str) -> str:
    return _CONTROL.sub("", value)


def valid_origin(origin: str | None) -> str | None:
    """A serialized origin (RFC 6454: `scheme://host[:port]`, ASCII, at most MAX_ORIGIN characters),
    or None for anything else (absent, `null`, garbage, non-ASCII, longer than any real one: treated
    as no Origin, never an error)."""
    if origin is None:
        return None
    origin = origin.strip()
    return origin if len(origin) <= MAX_ORIGIN and _ORIGIN.fullmatch(origin) else None


def cors_headers(origin: str | None) -> list[tuple[str, str]]:
    """CORS for every response: reflect a real Origin with credentials; `*` for none, `null` or an
    invalid one."""
    origin = valid_origin(origin)
    if origin is None:
        return [("Access-Control-Allow-Origin", "*")]
    return [
        ("Access-Control-Allow-Origin", origin),
        ("Access-Control-Allow-Credentials", "true"),
        ("Vary", "Origin"),
    ]


def preflight_headers(origin: str | None, *, private_network: bool) -> list[tuple[str, str]]:
    """The answer to `OPTIONS` on any path."""
    headers = cors_headers(origin)
    headers += [
        ("Access-Control-Allow-Methods", PIPE_ALLOW),
        ("Access-Control-Allow-Headers", PREFLIGHT_ALLOW_HEADERS),
        ("Access-Control-Max-Age", "86400"),
    ]
    if private_network:
        headers.append(("Access-Control-Allow-Private-Network", "true"))
    return headers


def _is_script_capable(mime: str) -> bool:
    kind, _, subtype = mime.partition("/")
    if mime in _SCRIPT_TYPES or kind == "multipart":
        return True
    return any(word in subtype for word in _SCRIPT_SUBTYPE_WORDS)


@functools.lru_cache(maxsize=256)
def safe_content_type(value: str | None) -> str:
    """The Content-Type a receiver gets for a sender's Content-Type.

    Absent, unparsable, a wildcard or `unknown/unknown` -> application/octet-stream (a download,
    never a guess); script-capable -> text/plain. Parameters are dropped except the first
    `charset`, kept only if it is a plain name.
    """
    if value is None:
        return DEFAULT_CONTENT_TYPE
    match = _MEDIA_TYPE.fullmatch(value)
    if match is None:
        return DEFAULT_CONTENT_TYPE
    mime = f"{match.group(1)}/{match.group(2)}".lower()
    if "*" in mime or mime == "unknown/unknown":
        return DEFAULT_CONTENT_TYPE
    if _is_script_capable(mime):
        mime = "text/plain"
    charset = _first_charset(match.group(3) or "")
    return f"{mime}; charset={charset}" if charset else mime


def _first_charset(params: str) -> str | None:
    for part in params.split(";"):
        param = _PARAM.fullmatch(part)
        if param is None or param.group(1).lower() != "charset":
            continue
        raw = param.group(2)
        if raw.startswith('"'):
            raw = raw[1:-1]
        return raw if _CHARSET.fullmatch(raw) else None
    return None


def inline_safe(content_type: str) -> bool:
    """May this (already safe) type be shown inline? image/audio/video, text/plain, PDF."""
    mime = content_type.split(";", 1)[0].strip().lower()
    kind = mime.split("/", 1)[0]
    if mime == "image/svg+xml":
        return False
    return kind in ("image", "audio", "video") or mime in ("text/plain", "application/pdf")


def sanitize_filename(name: str) -> str:
    """A filename safe to put in Content-Disposition: no controls, separators or leading dots."""
    cleaned = strip_controls(name).replace("/", "").replace("\\", "")
    return cleaned.lstrip(".")[:MAX_FILENAME]


def attachment_for(filename: str) -> str:
    """`attachment` with an ASCII `filename` fallback and the exact UTF-8 `filename*`."""
    ascii_name = "".join(c if 0x20 <= ord(c) < 0x7F else "_" for c in filename)
    quoted = ascii_name.replace("\\", "\\\\").replace('"', '\\"')
    encoded = quote(filename, safe="!#$&+-.^_`|~")
    return f"attachment; filename=\"{quoted}\"; filename*=UTF-8''{encoded}"


def receiver_disposition(
    sender_disposition: str | None,
    content_type: str,
    *,
    download: bool | None,
    filename: str | None,
) -> str | None:
    """Content-Disposition for one receiver.

    `?filename=` wins (and implies download); `?download=false` removes the header;
    `?download` forces `attachment`. Otherwise the sender's value, its type read strictly: a
    well-formed `attachment` or `form-data` (a form part's own, which browsers save as a file) is
    kept, `inline` only for a type safe to show inline; anything else (`inline` for another type,
    an unknown or malformed type such as `"inline"`, `inline,` or a bare `filename=x`) becomes
    `attachment`, keeping its parameters if they were well-formed, else only a sanitized filename.
    """
    if filename is not None:
        return _attachment_named(filename)
    if download is False:
        return None
    disposition = strip_controls(sender_disposition).strip() if sender_disposition else None
    if not disposition:
        return "attachment" if download else None
    match = _DISPOSITION.fullmatch(disposition)
    if match is None:  # not `type; params`: keep no more than its file name
        name = _filename_in(disposition)
        return _attachment_named(name) if name is not None else "attachment"
    kind, params = match.group(1).lower(), match.group(2) or ""
    if not download and (kind in _KEPT_DISPOSITIONS or (kind == "inline" and inline_safe(content_type))):
        return disposition
    return "attachment" + params


def _attachment_named(filename: str) -> str:
    cleaned = sanitize_filename(filename)
    return attachment_for(cleaned) if cleaned else "attachment"


def _filename_in(value: str) -> str | None:
    match = _FILENAME.search(value)
    if match is None:
        return None
    raw = match.group(1)
    return re.sub(r"\\(.)", r"\1", raw[1:-1]) if raw.startswith('"') else raw


def metadata_headers(headers: Headers) -> list[tuple[str, str]]:
    """X-Piping / X-Hoody-Pipe values to forward: controls stripped, over-long values dropped."""
    out: list[tuple[str, str]] = []
    if not any(key in _METADATA_BY_LOWER for key, _ in headers):
        return out  # (nearly every sender)
    for name in METADATA_HEADERS:
        lowered = name.lower()
        for key, value in headers:
            if key != lowered:
                continue
            cleaned = strip_controls(value)
            if len(cleaned.encode("utf-8", "surrogateescape")) <= MAX_METADATA_VALUE:
                out.append((name, cleaned))
    return out


_METADATA_BY_LOWER = frozenset(name.lower() for name in METADATA_HEADERS)


@dataclass(frozen=True, slots=True)
class BodyInfo:
    """What the sender told us about its body, after policy; shared by every receiver."""

    content_type: str
    disposition: str | None
    content_length: int | None
    metadata: tuple[tuple[str, str], ...]


_CONTENT_LENGTH = re.compile(r"[0-9]{1,19}")
MAX_CONTENT_LENGTH = 2**63 - 1


def valid_content_length(value: str) -> bool:
    """`^\\d{1,19}$` and at most 2^63-1: the lengths every party (and proxy) can represent."""
    return _CONTENT_LENGTH.fullmatch(value) is not None and int(value) <= MAX_CONTENT_LENGTH


def body_info(
    headers: Headers,
    *,
    multipart_part: tuple[str | None, str | None] | None = None,
) -> BodyInfo:
    """The receiver-facing description of a sender's body.

    `multipart_part` is (Content-Type, Content-Disposition) of the streamed form part, when the
    body is multipart; its length is never known in advance.
    """
    metadata = tuple(metadata_headers(headers))
    if multipart_part is not None:
        part_type, part_disposition = multipart_part
        return BodyInfo(
            content_type=safe_content_type(part_type or FIELD_CONTENT_TYPE),
            disposition=part_disposition,  # the part's own, under the same policy as a sender's
            content_length=None,
            metadata=metadata,
        )
    raw_length = first(headers, "content-length")
    length = int(raw_length) if raw_length and valid_content_length(raw_length.strip()) else None
    if first(headers, "transfer-encoding") is not None:
        length = None
    return BodyInfo(
        content_type=safe_content_type(first(headers, "content-type")),
        disposition=first(headers, "content-disposition"),
        content_length=length,
        metadata=metadata,
    )


def receiver_headers(
    info: BodyInfo,
    *,
    origin: str | None,
    download: bool | None,
    filename: str | None,
    framing_headers: Iterable[tuple[str, str]],
) -> list[tuple[str, str]]:
    """The full header list of one receiver's 200 response (framing headers passed in)."""
    headers = [("Content-Type", info.content_type)]
    disposition = receiver_disposition(
        info.disposition, info.content_type, download=download, filename=filename
    )
    if disposition:
        headers.append(("Content-Disposition", disposition))
    headers += framing_headers
    headers += info.metadata
    if info.metadata:
        headers.append(("Access-Control-Expose-Headers", ", ".join(METADATA_HEADERS)))
    headers += PIPE_HEADERS
    headers += SAFETY_HEADERS
    headers += cors_headers(origin)
    return headers


def is_multipart_form(content_type: str | None) -> bool:
    if content_type is None:
        return False
    return content_type.split(";", 1)[0].strip().lower() == "multipart/form-data"
