# The I/O layer: the only package that imports trio (connections, rendezvous, transfers, server).
# Invariant: protocol decisions are made by pipe_relay.core; this layer only moves bytes and waits.
from .server import serve

__all__ = ["serve"]
