# Hypothesis settings and input strategies shared by the fuzz tests (core parsers and the live server).
# Invariant: every profile is deterministic (derandomized, no example database) and bounded in size.
from __future__ import annotations

import itertools
import re
import string
from dataclasses import dataclass

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st


def fuzz_settings(max_examples: int) -> settings:
    """The same examples on every run and in CI: derandomized, no database, no deadline."""
    return settings(
        max_examples=max_examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


CTL = re.compile(r"[\x00-\x1f\x7f]")
"""A control character (RFC 5234 CTL: CR, LF, NUL, HTAB, ...): never in a header value we send."""

latin1 = st.characters(min_codepoint=0, max_codepoint=0xFF)
latin1_text = st.text(latin1, max_size=80)
"""What the server makes of any header bytes (it decodes them as latin-1)."""

SPECIAL = st.sampled_from(
    ["\r", "\n", "\r\n", "\x00", "\t", "\x7f", "\x85", "\xff", " ", ";", '"', "\\", "%", "=", ",", "/"]
)
header_text = st.lists(st.one_of(SPECIAL, latin1_text), max_size=6).map("".join)
"""Latin-1 text rich in the characters that break a header line or a parameter list."""

# Content types: the script-capable ones (WHATWG: HTML, XML, JavaScript, plugins) and harmless ones,
# in any case, with odd parameters and whitespace around them.
SCRIPT_TYPES = [
    "text/html",
    "application/xhtml+xml",
    "image/svg+xml",
    "text/xml",
    "application/xml",
    "application/rss+xml",
    "text/javascript",
    "application/javascript",
    "application/x-javascript",
    "text/ecmascript",
    "application/ecmascript",
    "text/jscript",
    "text/livescript",
    "text/javascript1.5",
    "text/x-component",
    "application/x-shockwave-flash",
    "application/futuresplash",
    "text/vbscript",
    "text/xsl",
    "multipart/x-mixed-replace",
    "multipart/form-data",
]
HARMLESS_TYPES = ["text/plain", "image/png", "application/octet-stream", "video/webm", "application/pdf"]
HARMLESS_TYPES += ["application/json", "font/woff2", "application/zip", "text/csv"]


def script_capable(mime: str) -> bool:
    """The oracle: could a browser run script from a response of this media type (no parameters)?"""
    kind, _, subtype = mime.lower().partition("/")
    return (
        mime.lower() in SCRIPT_TYPES
        or kind == "multipart"
        or "html" in subtype
        or "xml" in subtype
        or "script" in subtype
        or subtype in ("x-component", "x-shockwave-flash", "futuresplash", "xsl")
    )


def _random_case(draw: st.DrawFn, text: str) -> str:
    flips = draw(st.lists(st.booleans(), min_size=len(text), max_size=len(text)))
    return "".join(c.upper() if flip else c for c, flip in zip(text, flips, strict=True))


@st.composite
def _content_types(draw: st.DrawFn) -> str:
    mime = _random_case(draw, draw(st.sampled_from(SCRIPT_TYPES + HARMLESS_TYPES)))
    space = st.sampled_from(["", " ", "\t", "  "])
    params = draw(
        st.lists(
            st.one_of(
                st.sampled_from(["charset=utf-8", 'charset="UTF-8"', "charset=utf-7", "CHARSET=latin1"]),
                st.builds(lambda v: f"charset={v}", header_text),
                st.builds(lambda v: f'boundary="{v}"', header_text),
                header_text,
            ),
            max_size=3,
        )
    )
    tail = "".join(f"{draw(space)};{draw(space)}{param}" for param in params)
    return draw(space) + mime + tail + draw(space)


content_types = st.one_of(_content_types(), header_text)
"""A Content-Type value as a sender might write it, or garbage."""


# A request target: a prefix, path segments with good and broken percent-escapes, and a query.
_PATH_CHARS = string.ascii_letters + string.digits + "-._~!$&'()*+,;=:@/"
_ESCAPES = st.one_of(
    st.builds(lambda b: f"%{b:02X}", st.integers(0, 255)),
    st.builds(lambda b: f"%{b:02x}", st.integers(0, 255)),
    st.sampled_from(["%", "%G0", "%0", "%%", "%7f", "%00", "%0a", "%0D%0A", "%E2%82", "%C3%28", "%FF"]),
)
path_piece = st.one_of(st.text(_PATH_CHARS, min_size=1, max_size=12), _ESCAPES, st.text(latin1, max_size=4))
query_text = st.lists(
    st.one_of(st.text(string.ascii_letters + string.digits, max_size=6), _ESCAPES, SPECIAL, st.just("+")),
    max_size=5,
).map("".join)
query_names = st.one_of(
    st.sampled_from(["n", "download", "filename", "progress", "video", "N", "n[]"]), query_text
)
n_values = st.one_of(
    st.integers(-3, 300).map(str),
    st.sampled_from(["", "01", "+3", " 3", "3 ", "1e2", "0x10", "٣", "²", "9" * 7, "1_0", "%33", "%2B3"]),
    st.sampled_from(["%D9%A3", "%C2%B2", "%EF%BC%93", "3%00", "%20"]),  # ٣, ², fullwidth 3 (UTF-8)
    query_text,
)


@st.composite
def _targets(draw: st.DrawFn) -> str:
    prefix = draw(st.sampled_from(["", "", "/api/v1/pipe", "http://h", "https://h:1", "HTTP://h", "*"]))
    path = "/" + "".join(draw(st.lists(path_piece, max_size=6)))
    if draw(st.booleans()):
        path = draw(st.sampled_from(["/", "/help", "/version", "/health", "/noscript", "/robots.txt"]))
    pairs = draw(st.lists(st.tuples(query_names, st.one_of(n_values, query_text)), max_size=4))
    if draw(st.booleans()):
        pairs.insert(draw(st.integers(0, len(pairs))), ("n", draw(n_values)))
    query = "&".join(f"{name}={value}" if value else name for name, value in pairs)
    return prefix + path + ("?" + query if query or draw(st.booleans()) else "")


targets = st.one_of(
    _targets(), st.text(latin1, max_size=60), st.binary(max_size=60).map(lambda raw: raw.decode("latin-1"))
)
"""A request target as the server decodes it (latin-1): mostly well-formed, often not."""


# Chunked bodies in every form RFC 9112 7.1 allows.
_HEX_CASE = st.sampled_from(["%x", "%X"])
_TOKEN = st.text(string.ascii_letters + string.digits + "!#$%&'*+-.^_`|~", min_size=1, max_size=6)
_QUOTED = st.text(string.ascii_letters + string.digits + " ,;=", max_size=6).map(lambda v: f'"{v}"')
_BWS = st.sampled_from(["", "", " ", "\t"])


@st.composite
def size_line(draw: st.DrawFn, size: int, *, mode: str) -> bytes:
    if mode == "minimal":
        return b"%x\r\n" % size
    digits = (draw(_HEX_CASE) % size).encode()
    digits = b"0" * draw(st.integers(0, 16 - len(digits))) + digits
    if mode == "hex":
        return digits + b"\r\n"
    ext = b""
    for _ in range(draw(st.integers(0, 2))):
        ext += f"{draw(_BWS)};{draw(_BWS)}{draw(_TOKEN)}".encode()
        if draw(st.booleans()):
            ext += f"{draw(_BWS)}={draw(_BWS)}{draw(st.one_of(_TOKEN, _QUOTED))}".encode()
    return digits + ext + b"\r\n"


@dataclass(frozen=True)
class Chunked:
    body: bytes
    payload: bytes
    minimal: bool
    """Only `%x` size lines and `0\r\n\r\n`: the chunked framing a decoder passes on must be these
    very bytes, however they were read."""


@st.composite
def chunked_bodies(draw: st.DrawFn, *, max_chunks: int = 8) -> Chunked:
    """A chunked body: minimal lines, any hex form, or with extensions and trailers too."""
    mode = draw(st.sampled_from(["minimal", "hex", "ext"]))
    chunks = draw(st.lists(st.binary(min_size=1, max_size=200), max_size=max_chunks))
    body = bytearray()
    for chunk in chunks:
        body += draw(size_line(len(chunk), mode=mode)) + chunk + b"\r\n"
    body += draw(size_line(0, mode=mode))
    if mode == "ext":
        for _ in range(draw(st.integers(0, 2))):
            body += f"{draw(_TOKEN)}:{draw(_BWS)}{draw(_TOKEN)}\r\n".encode()
    body += b"\r\n"
    return Chunked(bytes(body), b"".join(chunks), mode == "minimal")


# Multipart forms (RFC 7578) as browsers and curl write them.
_BCHARS = string.ascii_letters + string.digits + "'()+_,-./:=?"
_NAMES = st.text(string.ascii_letters + string.digits + "_-", min_size=1, max_size=8)
_FILENAMES = st.text(string.ascii_letters + string.digits + "._- ", max_size=12)
_PART_TYPES = st.sampled_from(["text/plain", "image/png", "application/octet-stream", "TEXT/HTML"])


@dataclass(frozen=True)
class Part:
    name: str
    filename: str | None
    content_type: str | None
    value: bytes

    @property
    def disposition(self) -> str:
        text = f'form-data; name="{self.name}"'
        return text if self.filename is None else text + f'; filename="{self.filename}"'


@dataclass(frozen=True)
class Form:
    boundary: str
    content_type: str
    parts: tuple[Part, ...]
    body: bytes
    closed_at: int
    """The offset just past the closing delimiter's final `--`: a body cut before it is incomplete."""

    @property
    def content(self) -> Part | None:
        """The part the extractor streams: the first with a filename, else the first (values are
        kept under the hold limit here)."""
        files = [part for part in self.parts if part.filename]
        return files[0] if files else (self.parts[0] if self.parts else None)


@st.composite
def forms(draw: st.DrawFn, *, max_parts: int = 4, max_value: int = 300) -> Form:
    boundary = draw(st.text(_BCHARS, min_size=1, max_size=70))
    delimiter = b"\r\n--" + boundary.encode()
    values = st.binary(max_size=max_value).filter(lambda v: delimiter not in b"\r\n" + v + b"\r\n")
    parts = draw(
        st.lists(
            st.builds(
                Part, _NAMES, st.one_of(st.none(), _FILENAMES), st.one_of(st.none(), _PART_TYPES), values
            ),
            min_size=1,
            max_size=max_parts,
        )
    )
    body = bytearray()
    for part in parts:
        body += b"--" + boundary.encode() + b"\r\n"
        body += f"{_random_case(draw, 'Content-Disposition')}: {part.disposition}\r\n".encode()
        if part.content_type is not None:
            body += f"{_random_case(draw, 'content-type')}:{draw(_BWS)}{part.content_type}\r\n".encode()
        body += b"\r\n" + part.value + b"\r\n"
    body += b"--" + boundary.encode() + b"--"
    closed_at = len(body)
    body += draw(st.sampled_from([b"", b"\r\n", b"\r\nepilogue\r\n"]))
    quoted = draw(st.booleans()) or any(c in boundary for c in "'()+,/:=?")
    shown = f'"{boundary}"' if quoted else boundary
    content_type = f"{_random_case(draw, 'multipart/form-data')}; boundary={shown}"
    return Form(boundary, content_type, tuple(parts), bytes(body), closed_at)


@st.composite
def cuts(draw: st.DrawFn, data: bytes, *, max_cuts: int = 8) -> list[bytes]:
    """`data` split at random points (pieces may be empty)."""
    points = sorted(draw(st.lists(st.integers(0, len(data)), max_size=max_cuts)))
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]
