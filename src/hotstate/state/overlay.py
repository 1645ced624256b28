"""The uncommitted overlay: a task's writes since its last commit.

The task reads through it (read-your-writes); at commit its entries go to the changelog and then, with
the new changelog offset, into the backend in one atomic write. Under at-least-once it also collapses
repeated writes of a key within a commit interval into one changelog record (like Kafka Streams' cache).
"""
from __future__ import annotations

from typing import Iterator

from .backend import Entry, StoreBackend

_MISSING = object()


class Overlay:
    def __init__(self, backend: StoreBackend):
        self.backend = backend
        self._dirty: dict[bytes, bytes | None] = {}
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
        self._dirty[key] = value
        self.bytes += len(key) + (0 if value is None else len(value))

    def range(self, lo: bytes | None, hi: bytes | None) -> Iterator[tuple[bytes, bytes]]:
        """Merge of backend and overlay, in byte order; overlay wins; deleted keys are skipped.

        Works on a copy of the overlay, so an interactive query on another thread can iterate while the
        processing thread writes and commits."""
        dirty = dict(self._dirty)
        mine = sorted(k for k in dirty if (lo is None or k >= lo) and (hi is None or k <= hi))
        i = 0
        for key, value in self.backend.range(lo, hi):
            while i < len(mine) and mine[i] < key:
                v = dirty[mine[i]]
                if v is not None:
                    yield mine[i], v
                i += 1
            if i < len(mine) and mine[i] == key:
                v = dirty[key]
                i += 1
                if v is not None:
                    yield key, v
                continue
            yield key, value
        for k in mine[i:]:
            v = dirty[k]
            if v is not None:
                yield k, v

    def __len__(self) -> int:
        return len(self._dirty)

    def entries(self) -> list[Entry]:
        """The dirty entries, in first-write order. They stay readable until ``clear``."""
        return list(self._dirty.items())

    def clear(self) -> None:
        """Called once the entries are in the backend, or to drop them (an aborted transaction)."""
        self._dirty = {}
        self.bytes = 0
        self.generation += 1
