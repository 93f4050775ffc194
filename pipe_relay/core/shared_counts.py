# Per-client counts shared by the worker processes: one table in shared memory, one column per worker.
# Invariant: a worker writes only its own column (no lock); a client's count is the sum of its row.
"""A row per client slot (a keyed hash of the address, so clients cannot aim at each other's rows;
two addresses that share a row share its counts, which only makes both stricter), a cell per quota
and worker. Each worker adds to and takes from its own cells only, so no write is ever lost; a
check sums the row, so a client's count is its whole server's (within the instant two workers take
at once). Pure: the caller maps the memory and passes it in."""

from __future__ import annotations

import hashlib
import struct

CELL = struct.Struct("=I")
KNOWN_LIMIT = 4096
"""Clients whose row is remembered (each take and give would hash the address again)."""


class SharedCounts:
    """`slots` rows of `kinds` x `workers` unsigned 32-bit cells over `buffer`, as `worker`."""

    def __init__(
        self, buffer: memoryview, *, slots: int, kinds: int, workers: int, worker: int, key: bytes
    ) -> None:
        if len(buffer) < self.size(slots=slots, kinds=kinds, workers=workers):
            raise ValueError("shared counts: the buffer is too small")
        self._cells = buffer.cast("B").cast("I")
        self._slots = slots
        self._kinds = kinds
        self._workers = workers
        self._worker = worker
        self._key = key[:64]
        self._known: dict[str, int] = {}  # client -> slot, for the clients seen lately

    @staticmethod
    def size(*, slots: int, kinds: int, workers: int) -> int:
        return slots * kinds * workers * CELL.size

    def slot(self, client: str) -> int:
        slot = self._known.get(client)
        if slot is None:
            digest = hashlib.blake2b(client.encode("utf-8", "surrogateescape"), digest_size=8, key=self._key)
            slot = int.from_bytes(digest.digest(), "big") % self._slots
            if len(self._known) >= KNOWN_LIMIT:
                self._known.clear()  # (bounded: a flood of addresses only costs their hashes again)
            self._known[client] = slot
        return slot

    def _base(self, client: str, kind: int) -> int:
        return (self.slot(client) * self._kinds + kind) * self._workers

    def total(self, client: str, kind: int) -> int:
        base = self._base(client, kind)
        return sum(self._cells[base : base + self._workers])

    def add(self, client: str, kind: int, delta: int) -> None:
        index = self._base(client, kind) + self._worker
        self._cells[index] = max(0, self._cells[index] + delta)

    def clear_worker(self, worker: int) -> None:
        """A worker died: what it held is held no more (its column back to 0)."""
        for row in range(self._slots * self._kinds):
            self._cells[row * self._workers + worker] = 0
