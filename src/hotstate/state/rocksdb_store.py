"""A RocksDB store (rocksdict), one database per task and store.

Layout: user keys live in the default column family; the column family ``hotstate_meta`` holds the
changelog offset the data is consistent with. Both change in one WriteBatch. ``atomic_flush`` keeps the
two column families consistent on disk when restore writes skip the WAL.
"""
from __future__ import annotations

import logging
import os
import shutil
from typing import Iterable, Iterator

from rocksdict import Options, Rdict, WriteBatch, WriteOptions

from ..errors import StateDirError, StoreClosedError, StoreCorruptedError
from .backend import OFFSET, Entry, check_offset_forward

log = logging.getLogger(__name__)

META_CF = "hotstate_meta"
_OFFSET_KEY = b"changelog_offset"
_FORMAT_KEY = b"format"
_FORMAT = b"1"


def _options() -> Options:
    opts = Options(raw_mode=True)
    opts.create_if_missing(True)
    opts.create_missing_column_families(True)
    opts.set_atomic_flush(True)
    return opts


class RocksDBBackend:
    persistent = True

    def __init__(self, name: str, path: str):
        self.name = name
        self.path = path
        self._restoring = False
        self._db = self._meta = self._meta_handle = None
        os.makedirs(path, exist_ok=True)
        try:
            self._db = Rdict(path, _options(), column_families={META_CF: Options(raw_mode=True)})
            self._meta_handle = self._db.get_column_family_handle(META_CF)
            self._meta = self._db.get_column_family(META_CF)
            fmt = self._meta.get(_FORMAT_KEY)
            raw = self._meta.get(_OFFSET_KEY)
        except Exception as exc:  # rocksdict raises plain Exception for corruption and bad files
            self.close()
            if "lock" in str(exc).lower():
                raise StateDirError(
                    f"store {name} at {path} is locked by another open database (another instance on the same "
                    f"state_dir?): {exc}") from exc
            raise StoreCorruptedError(f"store {name} at {path} cannot be opened: {exc}") from exc
        if fmt not in (None, _FORMAT):
            self.close()
            raise StoreCorruptedError(f"store {name} at {path} has unknown format {fmt!r}")
        if raw is not None and len(raw) != OFFSET.size:
            self.close()
            raise StoreCorruptedError(f"store {name} at {path} has a malformed changelog offset {raw!r}")
        self._offset: int | None = None if raw is None else OFFSET.unpack(raw)[0]
        self._wal_off = WriteOptions()
        self._wal_off.disable_wal = True

    def get(self, key: bytes) -> bytes | None:
        db = self._db
        if db is None:
            raise StoreClosedError(f"store {self.name} is closed (its task moved away or the app is closing); "
                                   "query again after the rebalance")
        return db.get(key)

    def range(self, lo: bytes | None, hi: bytes | None) -> Iterator[tuple[bytes, bytes]]:
        if self._db is None:
            raise StoreClosedError(f"store {self.name} is closed (its task moved away or the app is closing); "
                                   "query again after the rebalance")
        it = self._db.iter()
        if lo is None:
            it.seek_to_first()
        else:
            it.seek(lo)
        while it.valid():
            key = it.key()
            if hi is not None and key > hi:
                return
            yield key, it.value()
            it.next()

    def changelog_offset(self) -> int | None:
        return self._offset

    def _batch(self, entries: Iterable[Entry], changelog_offset: int) -> WriteBatch:
        check_offset_forward(self.name, self._offset, changelog_offset)
        batch = WriteBatch(raw_mode=True)
        for key, value in entries:
            if value is None:
                batch.delete(key)
            else:
                batch.put(key, value)
        batch.put(_OFFSET_KEY, OFFSET.pack(changelog_offset), self._meta_handle)
        if self._offset is None:
            batch.put(_FORMAT_KEY, _FORMAT, self._meta_handle)
        return batch

    def write(self, entries: Iterable[Entry], changelog_offset: int) -> None:
        if self._restoring:
            self.end_restore()
        self._db.write(self._batch(entries, changelog_offset))
        self._offset = changelog_offset

    def restore(self, entries: Iterable[Entry], changelog_offset: int) -> None:
        self._restoring = True
        self._db.write(self._batch(entries, changelog_offset), self._wal_off)
        self._offset = changelog_offset

    def end_restore(self) -> None:
        if self._restoring:
            self._db.flush()  # atomic across column families: data and offset reach disk together
            self._restoring = False

    def approximate_num_entries(self) -> int:
        return int(self._db.property_int_value("rocksdb.estimate-num-keys") or 0)

    def close(self) -> None:
        db, meta = self._db, self._meta
        if db is None:
            return
        try:
            self.end_restore()
        finally:
            self._db = self._meta = self._meta_handle = None
            if meta is not None:
                meta.close()
            db.close()

    def wipe(self) -> None:
        self.close()
        wipe_path(self.path)


def wipe_path(path: str) -> None:
    shutil.rmtree(path, ignore_errors=True)
