# Which worker owns a pipe: a stable hash of its normalized key, the same in every worker process.
# Invariant: a function of the key and the worker count only (no process state, no random seed).
from __future__ import annotations

import hashlib

from .routing import Decision, Receive, Send, Watch


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
