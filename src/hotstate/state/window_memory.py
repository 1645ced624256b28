"""A windowed store in memory: the in-memory store (memory_store.py) with a stream time and expiry.

Entries are the store keys and values of state/window_store.py in a dict; a heap of (window start, key)
orders the windows for purging. Like every in-memory store it restores from its changelog after a start."""
from __future__ import annotations

import bisect
import heapq
from typing import Iterable, Iterator

from .backend import Entry, check_offset_forward
from .memory_store import MemoryBackend
from .window_store import TIME, TIME_BYTES, value_timestamp


class WindowMemoryBackend(MemoryBackend):
    def __init__(self, name: str, retention_ms: int):
        super().__init__(name)
        self.retention_ms = retention_ms
        self._stream_time: int | None = None
        self._by_start: list[tuple[int, bytes]] = []  # a heap; an entry whose key is gone is skipped
        self._sorted: list[bytes] | None = None  # the keys in byte order, kept from one write to the next

    def stream_time(self) -> int | None:
        return self._stream_time

    def write(self, entries: Iterable[Entry], changelog_offset: int) -> None:
        """Applies the entries (windows already expired by the stream time reached so far are skipped), sets
        the offset, then purges the expired windows."""
        check_offset_forward(self.name, self._offset, changelog_offset)
        data, heap, retention = self._data, self._by_start, self.retention_ms
        st = self._stream_time
        for key, value in entries:
            if value is None:
                data.pop(key, None)
                continue
            ts = value_timestamp(value)
            if st is None or ts > st:
                st = ts
            start = TIME.unpack_from(key, len(key) - TIME_BYTES)[0]
            if start <= st - retention:
                continue
            if key not in data:
                heapq.heappush(heap, (start, key))
            data[key] = value
        self._stream_time = st
        self._offset = changelog_offset
        self._sorted = None
        self._purge()

    restore = write

    def range(self, lo: bytes | None, hi: bytes | None) -> Iterator[tuple[bytes, bytes]]:
        """As the in-memory store's, but the keys are sorted once per write, not once per call (session and
        sliding-window aggregations read a range per record)."""
        keys = self._sorted
        if keys is None:
            keys = self._sorted = sorted(self._data)
        start = 0 if lo is None else bisect.bisect_left(keys, lo)
        for key in keys[start:]:
            if hi is not None and key > hi:
                return
            value = self._data.get(key)
            if value is not None:
                yield key, value

    def _purge(self) -> None:
        st = self._stream_time
        if st is None:
            return
        cutoff = st - self.retention_ms
        heap, data = self._by_start, self._data
        while heap and heap[0][0] <= cutoff:
            data.pop(heapq.heappop(heap)[1], None)

    def windows_between(self, from_ms: int, to_ms: int) -> Iterator[tuple[bytes, bytes]]:
        found = []
        for key, value in list(self._data.items()):
            start = TIME.unpack_from(key, len(key) - TIME_BYTES)[0]
            if from_ms <= start <= to_ms:
                found.append((start, key[:-TIME_BYTES], key, value))
        found.sort(key=lambda e: (e[0], e[1]))
        for _, _, key, value in found:
            yield key, value

    def reset(self) -> None:
        super().reset()
        self._sorted = None
        self._by_start = []
        self._stream_time = None
