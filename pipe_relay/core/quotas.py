# Per-client quotas: the pending pipes, transfers, watchers, connections and replies each client holds.
# Invariant: a count is never below 0 nor (through `take`) above its limit; a client at 0 is forgotten.
from __future__ import annotations

import enum
from collections.abc import Mapping

from ..errors import ErrorCode, PipeError
from .registry import RETRY_AFTER_SECONDS
from .shared_counts import SharedCounts


class Quota(enum.Enum):
    """What one client may hold at once; each has its own 429 error."""

    PENDING = ErrorCode.CLIENT_PENDING_LIMIT
    ACTIVE = ErrorCode.CLIENT_ACTIVE_LIMIT
    WATCHERS = ErrorCode.CLIENT_WATCHER_LIMIT
    CONNECTIONS = ErrorCode.CLIENT_CONNECTION_LIMIT
    PAGES = ErrorCode.CLIENT_PAGE_LIMIT
    """Page and error replies being sent: what an HTTP/2 client that never opens its window holds."""


USER_KIND = len(Quota)
"""The shared table's column after the quotas': each user's running transfers (core.pace)."""
KINDS = len(Quota) + 1
"""The shared table's columns: every quota's, and USER_KIND."""


class Quotas:
    """Counts per (quota, client) against per-quota limits (0 = no limit). Pure: callers name the
    client (its address, or the forwarded one from a trusted proxy). With `shared` (several worker
    processes), a limit holds for what the client holds in all of them."""

    def __init__(self, limits: Mapping[Quota, int], shared: SharedCounts | None = None) -> None:
        self.limits = {quota: limits.get(quota, 0) for quota in Quota}
        self._held: dict[Quota, dict[str, int]] = {quota: {} for quota in Quota}
        self._shared = shared
        self._kinds = {quota: index for index, quota in enumerate(Quota)}

    def __repr__(self) -> str:
        clients = {client for held in self._held.values() for client in held}
        return f"<Quotas clients={len(clients)} held={sum(sum(h.values()) for h in self._held.values())}>"

    def held(self, quota: Quota, client: str) -> int:
        if self._shared is not None:
            return self._shared.total(client, self._kinds[quota])
        return self._held[quota].get(client, 0)

    def check(self, quota: Quota, client: str) -> None:
        """Raise the quota's 429 if `client` holds its limit already."""
        limit = self.limits[quota]
        if limit and self.held(quota, client) >= limit:
            raise PipeError(quota.value, {"max": limit}, (("Retry-After", RETRY_AFTER_SECONDS),))

    def take(self, quota: Quota, client: str) -> None:
        """One more for `client`, or its 429 if it is at the limit (nothing is counted then)."""
        self.check(quota, client)
        self.add(quota, client)

    def add(self, quota: Quota, client: str) -> None:
        """One more for `client`, limit or not (a transfer counts for every client in it)."""
        held = self._held[quota]
        held[client] = held.get(client, 0) + 1
        if self._shared is not None:
            self._shared.add(client, self._kinds[quota], 1)

    def give(self, quota: Quota, client: str) -> None:
        held = self._held[quota]
        count = held.get(client, 0)
        if count <= 1:
            held.pop(client, None)
        else:
            held[client] = count - 1
        if count and self._shared is not None:
            self._shared.add(client, self._kinds[quota], -1)
