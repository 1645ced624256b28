"""The uncommitted overlay: a task's writes since its last commit.

The task reads through it (read-your-writes); at commit its entries go to the changelog and then, with
the new changelog offset, into the backend in one atomic write. Under at-least-once it also collapses
repeated writes of a key within a commit interval into one changelog record (like Kafka Streams' cache).
"""
from __future__ import annotations

import bisect
from typing import Iterator

from .backend import Entry, StoreBackend

_MISSING = object()


class Overlay:
    """``ordered``: keep the dirty keys sorted as they are written (windowed and session stores, whose
    aggregations read a range per record), so that ``range`` costs the keys in the range, not all dirty keys."""

    def __init__(self, backend: StoreBackend, ordered: bool = False):
        self.backend = backend
        self._dirty: dict[bytes, bytes | None] = {}
        self._ordered = ordered
        self._keys: list[bytes] = []  # ordered mode: the dirty keys, sorted
        self.bytes = 0  # keys + values written since the last clear (an upper bound of what the overlay holds)
        # Moves on at every clear (a commit, or dropped writes): what a reader remembers of the store's content
        # holds while the generation it saw it at stays current.
        self.generation = 0

    def get(self, key: bytes) -> bytes | None:
        value = self._dirty.get(key, _MISSING)
        if value is _MISSING:
            return self.backend.get(key)
        return value  # type: ignore[return-value]

    def put(self, key: bytes, value: bytes | None) -> None:
        if self._ordered and key not in self._dirty:
            bisect.insort(self._keys, key)
        self._dirty[key] = value
        self.bytes += len(key) + (0 if value is None else len(value))

    def range(self, lo: bytes | None, hi: bytes | None) -> Iterator[tuple[bytes, bytes]]:
        """Merge of backend and overlay, in byte order; overlay wins; deleted keys are skipped.

        Works on a copy of the overlay's keys in the range (all of the overlay when not ordered), so an
        interactive query on another thread can iterate while the processing thread writes and commits; a key
        committed meanwhile is read from the backend."""
        if self._ordered:
            keys, dirty = self._keys, self._dirty
            i = 0 if lo is None else bisect.bisect_left(keys, lo)
            j = len(keys) if hi is None else bisect.bisect_right(keys, hi)
            mine = keys[i:j]
        else:
            dirty = dict(self._dirty)
            mine = sorted(k for k in dirty if (lo is None or k >= lo) and (hi is None or k <= hi))
        i = 0
        for key, value in self.backend.range(lo, hi):
            while i < len(mine) and mine[i] < key:
                v = dirty.get(mine[i], _MISSING)
                if v is not None and v is not _MISSING:
                    yield mine[i], v  # type: ignore[misc]
                i += 1
            if i < len(mine) and mine[i] == key:
                v = dirty.get(key, _MISSING)
                i += 1
                if v is _MISSING:
                    yield key, value
                elif v is not None:
                    yield key, v  # type: ignore[misc]
                continue
            yield key, value
        for k in mine[i:]:
            v = dirty.get(k, _MISSING)
            if v is not None and v is not _MISSING:
                yield k, v  # type: ignore[misc]

    def __len__(self) -> int:
        return len(self._dirty)

    def entries(self) -> list[Entry]:
        """The dirty entries, in first-write order. They stay readable until ``clear``."""
        return list(self._dirty.items())

    def clear(self) -> None:
        """Called once the entries are in the backend, or to drop them (an aborted transaction)."""
        self._dirty = {}
        self._keys = []
        self.bytes = 0
        self.generation += 1
