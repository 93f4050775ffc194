# The admin listener's app (served by Hypercorn from net.admin): metrics and the live-transfers API.
# Invariant: nothing here reaches a socket or the hub; it is handed a Backend and a token.
from .app import AdminApp, Backend

__all__ = ["AdminApp", "Backend"]
