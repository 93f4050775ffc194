# Which worker owns a pipe: a stable hash of its normalized key, the same in every worker process.
# Invariant: a function of the key and the worker count only (no process state, no random seed).
from __future__ import annotations

import hashlib

from ..errors import PipeError
from .paths import parse_target
from .routing import Decision, Receive, Send, Watch

_LINE_LIMIT = 8192
"""A request line longer than this is left to the whole head's parse."""
_MOVED_METHODS = (b"GET", b"PUT", b"POST")


def owner_of(key: str, workers: int) -> int:
    """The index (0..workers-1) of the worker that owns pipe `key` (already normalized, as the
    registry keys it): the first 8 bytes of its BLAKE2b digest, big-endian, modulo `workers`."""
    if workers <= 1:
        return 0
    digest = hashlib.blake2b(key.encode("utf-8", "surrogateescape"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % workers


def pipe_key(decision: Decision | object) -> str | None:
    """The pipe a request takes part in, if it must reach the pipe's owner: a sender, a receiver,
    a `?progress` event stream. Pages (the `?progress` and `?video` pages too) are anyone's."""
    if isinstance(decision, Send | Receive):
        return decision.key
    if isinstance(decision, Watch) and not decision.html:
        return decision.key
    return None


def early_key(first: bytes, *, max_path_length: int) -> str | None:
    """The pipe key of a connection's first request, from its request line alone, where that line
    settles it: a GET, PUT or POST of a pipe path (not a page, no `?progress` or `?video`, which the
    headers decide). Then the request goes to the pipe's owner as `route` would send it, before its
    head is parsed here. None for anything else, or any doubt: the whole head decides."""
    end = first.find(b"\n", 0, _LINE_LIMIT)
    if end < 0:
        return None
    parts = first[:end].removesuffix(b"\r").split(b" ")
    if len(parts) != 3 or parts[0] not in _MOVED_METHODS or parts[2] not in (b"HTTP/1.1", b"HTTP/1.0"):
        return None
    try:
        target = parse_target(parts[1].decode("ascii"), max_path_length=max_path_length)
    except (PipeError, UnicodeDecodeError):
        return None
    if target.reserved is not None or target.flag("progress") or target.flag("video"):
        return None
    return target.key
