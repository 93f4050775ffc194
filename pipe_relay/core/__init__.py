# The sans-IO core: paths, routing, registry, header policy, framing, forms, replies, service texts.
# Invariant: nothing here imports trio or sockets, reads a clock, or does I/O.
from .framing import ChunkedDecoder, FramingError, LengthDecoder
from .paths import Reserved, Target, parse_target
from .registry import Established, Expired, Registry, Waiting
from .routing import Decision, Request, route

__all__ = [
    "ChunkedDecoder",
    "Decision",
    "Established",
    "Expired",
    "FramingError",
    "LengthDecoder",
    "Registry",
    "Request",
    "Reserved",
    "Target",
    "Waiting",
    "parse_target",
    "route",
]
