"""An in-memory store: a dict, restored in full from its changelog after every start.

As a ``RestoreTarget`` it has nothing to make durable (restore writes apply at once, flushes are done at
once) and no files: ``open_from_files`` raises NotImplementedError, so an in-memory store is never restored
from a snapshot, only from its changelog (or handed over in memory on promotion, see the task manager)."""
from __future__ import annotations

import bisect
from typing import Iterable, Iterator

from .backend import Entry, SimpleRestoreTarget, check_offset_forward


class MemoryBackend(SimpleRestoreTarget):
    persistent = False
    corrupted = False  # nothing on disk to damage
    supports_checkpoint = False  # no files: never snapshotted (it restores from its changelog)

    def __init__(self, name: str):
        self.name = name
        self._data: dict[bytes, bytes] = {}
        self._offset: int | None = None

    def get(self, key: bytes) -> bytes | None:
        return self._data.get(key)

    def range(self, lo: bytes | None, hi: bytes | None) -> Iterator[tuple[bytes, bytes]]:
        keys = sorted(self._data)
        start = 0 if lo is None else bisect.bisect_left(keys, lo)
        for key in keys[start:]:
            if hi is not None and key > hi:
                return
            value = self._data.get(key)
            if value is not None:
                yield key, value

    def changelog_offset(self) -> int | None:
        return self._offset

    def write(self, entries: Iterable[Entry], changelog_offset: int) -> None:
        check_offset_forward(self.name, self._offset, changelog_offset)
        data = self._data
        for key, value in entries:
            if value is None:
                data.pop(key, None)
            else:
                data[key] = value
        self._offset = changelog_offset

    restore = write

    def end_restore(self) -> None:
        pass

    def open_from_files(self, directory: str) -> None:
        raise NotImplementedError(f"store {self.name} is an in-memory store: it has no files to adopt from "
                                  f"{directory}; it restores from its changelog")

    def reset(self) -> None:
        self._data.clear()
        self._offset = None

    def approximate_num_entries(self) -> int:
        return len(self._data)

    def close(self) -> None:
        pass

    def wipe(self) -> None:
        self.reset()

    def checkpoint(self, into: str) -> bool:
        raise NotImplementedError(f"store {self.name} lives in memory: it has no files to snapshot")
