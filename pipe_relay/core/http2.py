# HTTP/2 heads, sans-IO: the connection preface, request pseudo-headers to a Request, response field lists.
# Invariant: an HTTP/2 Request keeps the headers an HTTP/1.1 one would; no connection-specific field goes out.
from __future__ import annotations

import re
from collections.abc import Iterable

import h2.config
import h2.connection
import h2.settings

from ..errors import ErrorCode, pipe_error
from .headers import valid_content_length
from .heads import MAX_HEADER_LINES, kept_headers
from .routing import Request

STREAM_WINDOW = 1 << 20
"""The receive window each request body gets (bytes we may hold for it before the relay takes them)."""
CONNECTION_WINDOW = 8 << 20
MAX_FRAME = 1 << 20
"""The largest DATA frame we accept (SETTINGS_MAX_FRAME_SIZE): fewer frames per MiB."""
MAX_STREAMS = 128
"""Streams a connection may have served at once: every one whose task runs, reset by the client or not."""
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
"""What an HTTP/2 client sends first (RFC 9113 3.4): `curl --http2-prior-knowledge` on the plain port."""
CONNECTION_SPECIFIC = frozenset(
    {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade"}
)
"""Fields HTTP/2 forbids (RFC 9113 8.2.2): our HTTP/1.1 replies carry some; they are left out."""
_TARGET = re.compile(rb"[\x21-\x7e]+")
"""A request target as h11 takes one on an HTTP/1.1 request line (VCHAR only: no control character,
no space, no byte above 0x7e): the same paths are refused on both front ends."""


def preface_seen(data: bytes) -> bool | None:
    """Do the first bytes of a connection start with the HTTP/2 preface? None: too few to tell yet."""
    if data.startswith(PREFACE):
        return True
    if PREFACE.startswith(data):
        return None
    return False


def request_from_fields(fields: Iterable[tuple[bytes, bytes]]) -> Request:
    """A request head from HTTP/2 header fields (h2 checked their form): `:authority` stands for
    Host where there is none. Raises PipeError for what our HTTP/1.1 checks refuse too, with the
    same error: more than MAX_HEADER_LINES headers (431), a path h11 would not take (400)."""
    pseudo: dict[bytes, bytes] = {}
    regular: list[tuple[bytes, bytes]] = []
    for name, value in fields:
        if name.startswith(b":"):
            pseudo[name] = value
        else:
            regular.append((name, value))
    method, path = pseudo.get(b":method"), pseudo.get(b":path")
    if not method or not path:
        raise pipe_error(ErrorCode.BAD_REQUEST, detail="no :method or :path")
    if len(regular) > MAX_HEADER_LINES:
        raise pipe_error(ErrorCode.TOO_MANY_HEADERS, max=MAX_HEADER_LINES)
    if not _TARGET.fullmatch(path):
        raise pipe_error(ErrorCode.BAD_REQUEST, detail="illegal request line")
    if b":authority" in pseudo and not any(name == b"host" for name, _ in regular):
        regular.append((b"host", pseudo[b":authority"]))
    request = Request(
        method=method.decode("ascii", "replace"),
        target=path.decode("latin-1"),
        headers=kept_headers(regular),
        http_version="2",
        secure=pseudo.get(b":scheme") == b"https",
    )
    length = request.header("content-length")
    if length is not None and not valid_content_length(length):
        raise pipe_error(ErrorCode.BAD_REQUEST, detail="invalid Content-Length")
    return request


def response_fields(status: int, headers: Iterable[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    """A response head as HTTP/2 fields: `:status` first, names lower-case, no connection-specific one."""
    fields = [(b":status", str(status).encode("ascii"))]
    for name, value in headers:
        lowered = name.lower()
        if lowered not in CONNECTION_SPECIFIC:
            fields.append((lowered.encode("ascii"), value.encode("latin-1")))
    return fields


def server_state(max_head_size: int) -> h2.connection.H2Connection:
    """A server's h2 state machine with our SETTINGS (streams, windows, frame and head sizes)."""
    state = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False, header_encoding=None))
    state.max_inbound_frame_size = MAX_FRAME  # (h2 reads its class default only when made)
    state.local_settings = h2.settings.Settings(
        client=False,
        initial_values={
            h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: MAX_STREAMS,
            h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: STREAM_WINDOW,
            h2.settings.SettingCodes.MAX_FRAME_SIZE: MAX_FRAME,
            h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: max_head_size,
        },
    )
    return state
