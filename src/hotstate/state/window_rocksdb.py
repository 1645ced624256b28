"""A windowed RocksDB store: the key-value RocksDB store (rocksdb_store.py) with a time index and expiry.

Layout (store ``format`` ``window-1``, docs/formats.md):

- ``default``: store key -> store value, as state/window_store.py defines them (key bytes + 8-byte window
  start -> 8-byte event time + value bytes), the changelog's own bytes: a restore copies records as they are.
- ``hotstate_window_time``: 8-byte window start + key bytes -> empty; the same windows ordered by start, so
  purging the expired ones reads only them.
- ``hotstate_meta``: ``changelog_offset`` and ``format`` as for key-value stores, plus ``stream_time`` (8 bytes
  big-endian signed): the largest event time written, in the same batch as the data and the offset.

One column family keyed by (key, window start), rather than Kafka Streams' time segments (one database per
segment): a single database keeps the offset, the data and the snapshot one atomic unit, and purging by the
index costs one delete per expired window, done after each write.

Restore batches are ``WindowRestoreBatch``es: they read each record's event time from its value to move the
stream time on, skip windows already expired, and write the index beside the data.
"""
from __future__ import annotations

import logging
from typing import Callable, Iterable, Iterator

from rocksdict import WriteBatch, WriteOptions

from ..errors import HotstateError
from .backend import Entry
from .rocksdb_store import META_CF, RocksDBBackend, _closed, _flushed, classify
from .window_store import TIME, TIME_BYTES, value_timestamp

log = logging.getLogger(__name__)

TIME_CF = "hotstate_window_time"
_STREAM_TIME_KEY = b"stream_time"
# Deletes per purge write: a purge after a long pause (or a large retention change) writes in chunks.
PURGE_BATCH_MAX = 10_000


class WindowRestoreBatch:
    """A native write batch that keeps the time index and the stream time beside the data (both for restore
    batches and for ``write``). A window expired by the stream time reached so far is not written."""

    __slots__ = ("native", "stream_time", "_index", "_retention_ms")

    def __init__(self, index_handle: object, stream_time: int | None, retention_ms: int):
        self.native = WriteBatch(raw_mode=True)
        self.stream_time = stream_time
        self._index = index_handle
        self._retention_ms = retention_ms

    def put(self, key: bytes, value: bytes) -> None:
        ts = value_timestamp(value)
        st = self.stream_time
        if st is None or ts > st:
            st = self.stream_time = ts
        start = key[-TIME_BYTES:]
        if TIME.unpack(start)[0] <= st - self._retention_ms:
            return  # expired already: a window the store would purge at once
        self.native.put(key, value)
        self.native.put(start + key[:-TIME_BYTES], b"", self._index)

    def delete(self, key: bytes) -> None:
        self.native.delete(key)
        self.native.delete(key[-TIME_BYTES:] + key[:-TIME_BYTES], self._index)

    def written(self) -> None:
        """Drops the batch's hold on the database (a column family handle keeps it open, and its lock with it)."""
        self._index = None
        self.native = None


class WindowRocksDBBackend(RocksDBBackend):
    FORMAT = b"window-1"
    COLUMN_FAMILIES = (META_CF, TIME_CF)
    # The bulk-load options pay off from fewer records than a key-value store's (100,000): a window is two
    # inserts, the data one (keyed by key first) at a random place of the default memtable's skip list, an
    # append in the vector memtable. bench/restore.py --windowed (50,000 records a partition), the restoring
    # thread's CPU in the reader's apply loop (puts + batch writes): 0.50-0.56 s -> 0.39-0.43 s for 200k
    # records; a reopen costs ~15 ms (docs/benchmarks.md).
    BULK_RESTORE_RECORDS_MIN = 20_000

    def __init__(self, name: str, path: str, retention_ms: int, on_corruption: Callable[[str], None] | None = None):
        self.retention_ms = retention_ms
        self._stream_time: int | None = None
        self._time = self._time_handle = None
        self._purged_to: int | None = None  # no index entry starts at or below this (None: not known yet)
        super().__init__(name, path, on_corruption=on_corruption)

    # ---- opening and closing ----
    def _open(self, opts: object) -> tuple[bytes | None, bytes | None]:
        found = super()._open(opts)
        try:
            self._time_handle = self._db.get_column_family_handle(TIME_CF)
            self._time = self._db.get_column_family(TIME_CF)
            raw = self._meta.get(_STREAM_TIME_KEY)
        except Exception as exc:
            self.close()
            raise classify(exc, self.name, self.path, "it cannot be opened") from exc
        self._stream_time = None if raw is None else TIME.unpack(raw)[0]
        self._purged_to = None
        return found

    def _close_handles(self) -> None:
        time_cf = self._time
        self._time = self._time_handle = None
        if time_cf is not None:
            try:
                time_cf.close()
            except Exception as exc:
                log.warning("store %s at %s: closing its time index reported %s", self.name, self.path, exc)
        super()._close_handles()

    # ---- the windowed contract ----
    def stream_time(self) -> int | None:
        return self._stream_time

    def windows_between(self, from_ms: int, to_ms: int) -> Iterator[tuple[bytes, bytes]]:
        """Walks the time index from ``from_ms`` (at least 0) to ``to_ms`` and reads each window's value; a
        window deleted between the two reads (a purge on the writing thread) is left out."""
        db, index = self._db, self._time
        if db is None or index is None:
            raise _closed(self.name)
        from_ms = max(from_ms, 0)
        if to_ms < from_ms:
            return
        try:
            it = index.iter()
            it.seek(TIME.pack(from_ms))
            while it.valid():
                index_key = it.key()
                if TIME.unpack_from(index_key)[0] > to_ms:
                    break
                it.next()
                key = index_key[TIME_BYTES:] + index_key[:TIME_BYTES]
                value = db.get(key)
                if value is not None:
                    yield key, value
                if self._db is None:
                    raise _closed(self.name)
            it.status()
        except HotstateError:
            raise
        except Exception as exc:
            raise self._read_error(exc, "a scan of the time index failed") from exc

    # ---- writes ----
    def _window_batch(self, entries: Iterable[Entry] = ()) -> WindowRestoreBatch:
        batch = WindowRestoreBatch(self._time_handle, self._stream_time, self.retention_ms)
        for key, value in entries:
            if value is None:
                batch.delete(key)
            else:
                batch.put(key, value)
        return batch

    def _seal_window(self, batch: WindowRestoreBatch, changelog_offset: int) -> WriteBatch:
        native = batch.native
        self._seal(native, changelog_offset)
        if batch.stream_time is not None:
            native.put(_STREAM_TIME_KEY, TIME.pack(batch.stream_time), self._meta_handle)
        return native

    def write(self, entries: Iterable[Entry], changelog_offset: int) -> None:
        if self._restoring or self._bulk:
            self.end_restore()
        batch = self._window_batch(entries)
        self._write_batch(self._seal_window(batch, changelog_offset), None)
        batch.written()
        self._offset = changelog_offset
        self._stream_time = batch.stream_time
        self._purge(None)

    def restore(self, entries: Iterable[Entry], changelog_offset: int) -> None:
        self.write_restore_batch(self._window_batch(entries), changelog_offset)

    def restore_batch(self) -> WindowRestoreBatch:  # type: ignore[override]
        return self._window_batch()

    def write_restore_batch(self, batch: WindowRestoreBatch, changelog_offset: int) -> None:  # type: ignore[override]
        self._write_batch(self._seal_window(batch, changelog_offset), self._wal_off)
        batch.written()
        self._offset = changelog_offset
        self._restoring = True
        self._stream_time = batch.stream_time
        self._purge(self._wal_off)

    def _purge(self, opts: WriteOptions | None) -> None:
        """Deletes the expired windows (data and index), local only. Not atomic with the write before it: a
        crash in between leaves expired windows that queries do not serve and the next purge deletes."""
        st = self._stream_time
        if st is None:
            return
        cutoff = st - self.retention_ms  # windows starting at or below it are expired
        if self._purged_to is not None and cutoff <= self._purged_to:
            return
        it = self._time.iter()
        if self._purged_to is None or self._purged_to < 0:
            it.seek_to_first()
        else:  # window starts are >= 0, so their big-endian bytes sort as the numbers do
            it.seek(TIME.pack(self._purged_to + 1))  # skips the tombstones of earlier purges
        expired: list[bytes] = []
        while it.valid():
            index_key = it.key()
            if TIME.unpack_from(index_key)[0] > cutoff:
                break
            expired.append(index_key)
            if len(expired) >= PURGE_BATCH_MAX:
                self._delete_windows(expired, opts)
                expired = []
            it.next()
        it.status()
        del it
        if expired:
            self._delete_windows(expired, opts)
        self._purged_to = cutoff

    def _delete_windows(self, index_keys: list[bytes], opts: WriteOptions | None) -> None:
        batch = WriteBatch(raw_mode=True)
        for index_key in index_keys:
            batch.delete(index_key, self._time_handle)
            batch.delete(index_key[TIME_BYTES:] + index_key[:TIME_BYTES])
        self._write_batch(batch, opts)

    # ---- restore durability: the index is flushed with the data, before the offset ----
    def request_restore_flush(self) -> None:
        if self._restoring:
            self._time.flush(False)
        super().request_restore_flush()

    def restore_flushed(self) -> bool:
        if self._restoring and self._flush_step == 1 and not _flushed(self._time):
            return False
        return super().restore_flushed()

    def end_restore(self) -> None:
        if self._restoring or self._bulk:
            self._time.flush()
        super().end_restore()



class SessionRocksDBBackend(WindowRocksDBBackend):
    """A session store (state/session_store.py) on the windowed layout: store keys end with the session start
    and end, so the time index and expiry go by the session end (the key's last 8 bytes). Format
    ``session-1`` (docs/formats.md): the same column families as ``window-1``, other key bytes."""

    FORMAT = b"session-1"
