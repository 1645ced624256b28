"""A RocksDB store (rocksdict), one database per task and store.

Layout: user keys live in the default column family; the column family ``hotstate_meta`` holds the
changelog offset the data is consistent with. Both change in one WriteBatch. ``atomic_flush`` keeps the
two column families consistent on disk when restore writes skip the WAL.

Restore mode: a big restore reopens the database with bulk-load options (a vector memtable: an insert is
an append and the sort happens in the background flush; no compaction before 32 L0 files; no write
stalls on L0 files; parallel flushes) and ``end_restore`` flushes and reopens it with the processing
options, whose compaction then runs in the background. Numbers: ``docs/benchmarks.md``.

As a ``RestoreTarget`` (state/backend.py): ``reset`` deletes and recreates the database in place;
``open_from_files`` adopts a checkpoint of a store (e.g. a downloaded snapshot) after checking it read-only.
"""
from __future__ import annotations

import logging
import os
import shutil
import threading
import time
import weakref
from pathlib import Path
from typing import Callable, Iterable, Iterator

from rocksdict import AccessType, DbClosedError, MemtableFactory, Options, Rdict, WriteBatch, WriteOptions

from ..errors import HotstateError, StateDirError, StoreClosedError, StoreCorruptedError, StoreIOError
from ..snapshot.checkpoint import take_checkpoint
from .backend import OFFSET, Entry, check_offset_forward

log = logging.getLogger(__name__)

META_CF = "hotstate_meta"
_OFFSET_KEY = b"changelog_offset"
_FORMAT_KEY = b"format"
_FORMAT = b"1"
# Every store format this module knows (a windowed or session store's: state/window_rocksdb.py). read_stored_offset
# reads the offset of any of them; a store opens only its own.
KNOWN_FORMATS = {_FORMAT, b"window-1", b"session-1"}

# Restore mode's memtables: a store holds at most RESTORE_MEMTABLES_MAX x RESTORE_MEMTABLE_BYTES while it
# restores (writes wait for a flush beyond that). Small memtables keep the flush threads busy during the
# restore instead of leaving one big sort for its end (measured: 16 MiB beat 64 MiB by about 25%).
RESTORE_MEMTABLE_BYTES = 16 * 1024 * 1024
RESTORE_MEMTABLES_MAX = 4
RESTORE_L0_FILES_MAX = 32
_NO_TRIGGER = 1 << 30


def classify(exc: BaseException, name: str, path: str, doing: str) -> HotstateError:
    """What a RocksDB error means for the store, from RocksDB's status (rocksdict raises a plain Exception
    whose text starts with the status: "Corruption: ...", "IO error: ..."). Only damage to the store's own
    files is corruption (the caller may wipe it and restore from the changelog); a lock held elsewhere is
    a state-dir problem; every other failure (disk full, too many open files, EIO) leaves the store as it
    is and says so."""
    if isinstance(exc, HotstateError):
        return exc
    if isinstance(exc, DbClosedError):
        return _closed(name)
    text = str(exc)
    if text.startswith("Corruption") or (text.startswith("IO error") and "No such file or directory" in text):
        # A damaged file, or a file the store's MANIFEST or CURRENT names that is gone.
        return StoreCorruptedError(f"store {name} at {path} is damaged; {doing}: {text}")
    if text.startswith("IO error") and ("While lock file" in text or "lock hold by current process" in text):
        return StateDirError(f"store {name} at {path} is locked by another open database (another instance on the "
                             f"same state_dir, or a process still holding it): {text}")
    return StoreIOError(f"store {name} at {path}: {doing}: {text}. The store was kept as it is (this is "
                        "not corruption): check the disk (free space, errors) and the open-files limit, then "
                        "start again")


def _closed(name: str) -> StoreClosedError:
    return StoreClosedError.of(name)


class _Scan:
    """A live iterator of ``RocksDBBackend.range``. It holds the only reference to the native iterator, which
    keeps the database open: ``close`` drops it, so a half-consumed query cannot keep a closed store open."""

    __slots__ = ("it", "__weakref__")

    def __init__(self, it: object):
        self.it = it


def _options() -> Options:
    opts = Options(raw_mode=True)
    opts.create_if_missing(True)
    opts.create_missing_column_families(True)
    opts.set_atomic_flush(True)
    return opts


def _restore_options() -> Options:
    """Bulk load: appends into a vector memtable, sorted by the flush threads; no stalls, late compaction."""
    opts = _options()
    opts.set_memtable_factory(MemtableFactory.vector())
    opts.set_allow_concurrent_memtable_write(False)  # the vector memtable does not support it
    opts.set_write_buffer_size(RESTORE_MEMTABLE_BYTES)
    opts.set_max_write_buffer_number(RESTORE_MEMTABLES_MAX)
    opts.set_min_write_buffer_number_to_merge(1)
    # Compaction waits until L0 holds RESTORE_L0_FILES_MAX files (a restore of ~4M records per store at
    # these sizes): the store goes back to processing below the processing options' L0 stop trigger (36).
    opts.set_level_zero_file_num_compaction_trigger(RESTORE_L0_FILES_MAX)
    opts.set_level_zero_slowdown_writes_trigger(_NO_TRIGGER)
    opts.set_level_zero_stop_writes_trigger(_NO_TRIGGER)
    opts.set_soft_pending_compaction_bytes_limit(0)
    opts.set_hard_pending_compaction_bytes_limit(0)
    opts.set_max_background_jobs(8)  # RocksDB gives a quarter to flushes: 2 flush threads
    return opts


class RocksDBBackend:
    persistent = True
    supports_checkpoint = True
    FORMAT = _FORMAT  # the `format` this kind of store writes into hotstate_meta (docs/formats.md)
    # Column families besides `default`, each opened with raw-mode options.
    COLUMN_FAMILIES: tuple[str, ...] = (META_CF,)
    # Restores of at least this many records use the bulk-load options (see begin_restore).
    BULK_RESTORE_RECORDS_MIN = 100_000
    # checkpoint: with more than this in the memtables, flush in the background first (see checkpoint).
    CHECKPOINT_FLUSH_AHEAD_BYTES = 1024 * 1024

    def __init__(self, name: str, path: str, on_corruption: Callable[[str], None] | None = None):
        """``on_corruption(message)``: called (on whatever thread found it) when a read finds the store's
        files damaged, before StoreCorruptedError is raised to the reader."""
        self.name = name
        self.path = path
        self._on_corruption = on_corruption
        self.corrupted = False  # a read met damaged files: wipe and restore (see TaskManager._revive_corrupted)
        self._scans: weakref.WeakSet[_Scan] = weakref.WeakSet()
        self._scans_lock = threading.Lock()
        self._restoring = False  # some restore writes (WAL off) may not be flushed yet
        self._bulk = False  # open with the bulk-load options
        self._flush_step = 0  # request_restore_flush: 1 data being flushed, 2 offset being flushed
        self._checkpoint_flushing = False  # checkpoint started a background flush
        self._db = self._meta = self._meta_handle = None
        try:
            os.makedirs(path, exist_ok=True)
        except OSError as exc:
            raise StateDirError(f"store {name}: cannot create {path} ({exc.strerror}); make sure the state_dir "
                                "is a directory this user can write, with nothing else in the way") from exc
        fmt, raw = self._open(_options())
        if fmt not in (None, self.FORMAT):
            self.close()
            raise StoreCorruptedError(f"store {name} at {path} has unknown format {fmt!r}")
        if raw is not None and len(raw) != OFFSET.size:
            self.close()
            raise StoreCorruptedError(f"store {name} at {path} has a malformed changelog offset {raw!r}")
        self._offset: int | None = None if raw is None else OFFSET.unpack(raw)[0]
        self._wal_off = WriteOptions()
        self._wal_off.disable_wal = True

    def _open(self, opts: Options) -> tuple[bytes | None, bytes | None]:
        """Opens the database; returns the stored format and raw offset."""
        try:
            families = {cf: Options(raw_mode=True) for cf in self.COLUMN_FAMILIES}
            self._db = Rdict(self.path, opts, column_families=families)
            self._meta_handle = self._db.get_column_family_handle(META_CF)
            self._meta = self._db.get_column_family(META_CF)
            return self._meta.get(_FORMAT_KEY), self._meta.get(_OFFSET_KEY)
        except Exception as exc:  # rocksdict raises plain Exception for corruption and bad files
            self.close()
            raise classify(exc, self.name, self.path, "it cannot be opened") from exc

    def _reopen(self, opts: Options) -> bytes | None:
        """Closes and opens again with other options; returns the stored raw offset."""
        self._close_handles()
        return self._open(opts)[1]

    def get(self, key: bytes) -> bytes | None:
        db = self._db
        if db is None:
            raise _closed(self.name)
        try:
            return db.get(key)
        except Exception as exc:
            raise self._read_error(exc, "reading a key failed") from exc

    def range(self, lo: bytes | None, hi: bytes | None) -> Iterator[tuple[bytes, bytes]]:
        """Keys in [lo, hi] in byte order. Closing the store ends a scan that is still open (its next step
        raises StoreClosedError); a scan that meets a damaged block raises StoreCorruptedError instead of
        ending early."""
        db = self._db
        if db is None:
            raise _closed(self.name)
        scan = _Scan(db.iter())
        with self._scans_lock:
            self._scans.add(scan)
        try:
            it = scan.it
            if lo is None:
                it.seek_to_first()
            else:
                it.seek(lo)
            del it  # only the scan holds the native iterator between steps
            while True:
                it = scan.it
                if it is None:
                    raise _closed(self.name)
                if not it.valid():
                    it.status()  # raises what ended the scan, if it was not the end of the keys
                    return
                key = it.key()
                if hi is not None and key > hi:
                    return
                value = it.value()
                it.next()
                del it
                yield key, value
        except HotstateError:
            raise
        except Exception as exc:
            raise self._read_error(exc, "a scan failed") from exc
        finally:
            scan.it = None
            with self._scans_lock:
                self._scans.discard(scan)

    def _read_error(self, exc: BaseException, doing: str) -> HotstateError:
        if self._db is None:
            return _closed(self.name)
        error = classify(exc, self.name, self.path, doing)
        if isinstance(error, StoreCorruptedError):
            self.corrupted = True
            if self._on_corruption is not None:
                self._on_corruption(str(error))
        return error

    def changelog_offset(self) -> int | None:
        return self._offset

    @staticmethod
    def _batch(entries: Iterable[Entry]) -> WriteBatch:
        batch = WriteBatch(raw_mode=True)
        for key, value in entries:
            if value is None:
                batch.delete(key)
            else:
                batch.put(key, value)
        return batch

    def _seal(self, batch: WriteBatch, changelog_offset: int) -> None:
        """Adds the new changelog offset to the batch (so data and offset land in one atomic write)."""
        check_offset_forward(self.name, self._offset, changelog_offset)
        batch.put(_OFFSET_KEY, OFFSET.pack(changelog_offset), self._meta_handle)
        if self._offset is None:
            batch.put(_FORMAT_KEY, self.FORMAT, self._meta_handle)

    def write(self, entries: Iterable[Entry], changelog_offset: int) -> None:
        if self._restoring or self._bulk:
            self.end_restore()
        batch = self._batch(entries)
        self._seal(batch, changelog_offset)
        self._write_batch(batch, None)
        self._offset = changelog_offset

    def restore(self, entries: Iterable[Entry], changelog_offset: int) -> None:
        self.write_restore_batch(self._batch(entries), changelog_offset)

    def begin_restore(self, records: int) -> None:
        """About ``records`` changelog records will be restored: from ``BULK_RESTORE_RECORDS_MIN`` on, the
        database is reopened with the bulk-load options until ``end_restore`` (two reopens cost about
        50 ms; below that the processing options are faster)."""
        if records >= self.BULK_RESTORE_RECORDS_MIN and not self._bulk:
            self._reopen(_restore_options())
            self._bulk = True

    def restore_batch(self) -> WriteBatch:
        """An empty native batch for :meth:`write_restore_batch`: the restore thread puts / deletes into it
        directly, without building a list of entries first."""
        return WriteBatch(raw_mode=True)

    def write_restore_batch(self, batch: WriteBatch, changelog_offset: int) -> None:
        """Writes the batch and the new changelog offset atomically, without the WAL."""
        self._seal(batch, changelog_offset)
        self._write_batch(batch, self._wal_off)
        self._offset = changelog_offset
        self._restoring = True

    def _write_batch(self, batch: WriteBatch, opts: WriteOptions | None) -> None:
        db = self._db
        if db is None:
            raise _closed(self.name)
        try:
            if opts is None:
                db.write(batch)
            else:
                db.write(batch, opts)
        except Exception as exc:
            raise classify(exc, self.name, self.path, "writing a batch failed") from exc

    def request_restore_flush(self) -> None:
        """Starts flushing the restored data without waiting (the flush threads sort and write it while the
        restore thread goes on with other stores); ``restore_flushed`` moves it on and says when it is done.
        Two steps: the data (default column family), then the offset (meta column family). Data never
        reaches disk after its offset: a crash in between leaves data ahead of the offset, which replaying
        the changelog from that offset repairs."""
        if self._restoring:
            self._db.flush(False)
            self._flush_step = 1

    def restore_flushed(self) -> bool:
        if not self._restoring:
            return True
        if self._flush_step == 1 and _flushed(self._db):
            self._meta.flush(False)
            self._flush_step = 2
        return self._flush_step == 2 and _flushed(self._meta) and _flushed(self._db)

    def end_restore(self) -> None:
        """Makes every restored batch durable (data first, then the offset) and, after a bulk restore, reopens
        with the processing options. A restore that ran on the processing options (fewer than
        ``BULK_RESTORE_RECORDS_MIN`` records: a snapshot's tail, a clean restart's delta) keeps the database
        open: closing waits for the store's background jobs, which RocksDB runs on a pool all stores of the
        process share, so a store whose tail flush set off a compaction waited behind the other stores'
        compactions (1-2 s at 1M keys under load; docs/benchmarks.md, "Start to RUNNING")."""
        if self._restoring or self._bulk:
            self._db.flush()
            if self._flush_step != 2:
                self._meta.flush()
            if self._bulk:
                raw = self._reopen(_options())
            else:
                raw = self._meta.get(_OFFSET_KEY)  # flushed above: read from its file
            self._restoring = self._bulk = False
            self._flush_step = 0
            if self._offset is not None and raw != OFFSET.pack(self._offset):  # an always-on check
                log.warning("store %s: the restored changelog offset %d did not reach disk when the restore "
                            "ended (found %r); writing it again", self.name, self._offset, raw)
                batch = WriteBatch(raw_mode=True)
                batch.put(_OFFSET_KEY, OFFSET.pack(self._offset), self._meta_handle)
                batch.put(_FORMAT_KEY, self.FORMAT, self._meta_handle)
                self._db.write(batch)

    def approximate_num_entries(self) -> int:
        db = self._db
        if db is None:
            raise _closed(self.name)
        return int(db.property_int_value("rocksdb.estimate-num-keys") or 0)

    def close(self) -> None:
        if self._db is None:
            return
        try:
            if self._restoring:
                self._db.flush()  # data first; closing flushes the offset
        finally:
            self._restoring = self._bulk = False
            self._flush_step = 0
            self._close_handles()

    def _close_handles(self) -> None:
        db, meta = self._db, self._meta
        self._db = self._meta = self._meta_handle = None
        with self._scans_lock:  # open scans hold the database open: end them first
            scans, self._scans = list(self._scans), weakref.WeakSet()
        for scan in scans:
            scan.it = None
        for handle in (meta, db):
            if handle is None:
                continue
            try:
                handle.close()
            except Exception as exc:  # e.g. a full disk: RocksDB stopped writing; its files keep what was written
                log.warning("store %s at %s: closing RocksDB reported %s; the store keeps what its last "
                            "successful write left on disk", self.name, self.path, exc)
        # The handles go with this frame: the database is released and its lock with it.

    def wipe(self) -> None:
        self.close()
        wipe_path(self.path)

    def reset(self) -> None:
        """Drops all state: the database is deleted and created again, empty, with the processing options.
        Unflushed restore writes are dropped, not flushed; the store is no longer ``corrupted``."""
        self._drop_files()
        self._open_empty()

    def _drop_files(self) -> None:
        self._close_handles()
        self._restoring = self._bulk = False
        self._flush_step = 0
        self._checkpoint_flushing = False
        wipe_path(self.path)

    def _open_empty(self) -> None:
        os.makedirs(self.path, exist_ok=True)
        self._open(_options())
        self._offset = None
        self.corrupted = False

    def open_from_files(self, directory: str) -> None:
        """Adopts ``directory``, a RocksDB database with this store's layout (a ``rocksdict.Checkpoint`` of a
        store, downloaded), as the store's content with the changelog offset it holds. First the directory is
        opened read-only and checked (a database, hotstate's format, an offset): a failure there raises
        (StoreCorruptedError for damage) and the store is as it was. Then the store's files are deleted and
        the directory is moved into their place (a rename on the same filesystem, a copy otherwise) and
        opened; if that fails the store is reset to empty and the error raised. The directory is gone after
        a success."""
        offset = read_stored_offset(self.name, directory)
        if offset is None:
            raise StoreCorruptedError(f"store {self.name}: {directory} holds no hotstate store (no database, or "
                                      "no changelog offset in it); nothing adopted")
        self._drop_files()
        try:
            shutil.move(directory, self.path)
            fmt, raw = self._open(_options())
            if fmt != self.FORMAT or raw is None or len(raw) != OFFSET.size or OFFSET.unpack(raw)[0] != offset:
                raise StoreCorruptedError(f"store {self.name}: the files adopted from {directory} changed while "
                                          f"they were moved (format {fmt!r}, offset {raw!r}, checked {offset})")
        except BaseException:
            self._drop_files()
            self._open_empty()
            raise
        self._offset = offset
        self.corrupted = False

    def checkpoint(self, into: str) -> bool:
        """A RocksDB checkpoint (``snapshot.checkpoint.take_checkpoint``) of both column families, so the
        changelog offset too: the memtables are flushed, the SST files hard-linked, the small files copied.
        The flush is the slow part (measured: ~0.7 s for 48 MB written since the last one, against ~10 ms after
        a background flush), so with more than ``CHECKPOINT_FLUSH_AHEAD_BYTES`` in the memtables this only
        starts a background flush and returns False; the call after it has finished takes the checkpoint,
        whatever was written meanwhile. Restore writes not yet durable are made durable first."""
        if self._restoring or self._bulk:
            self.end_restore()
        db = self._db
        if db is None:
            raise _closed(self.name)
        try:
            if self._checkpoint_flushing:
                if not _flushed(db):
                    return False
            elif int(db.property_int_value("rocksdb.size-all-mem-tables") or 0) > self.CHECKPOINT_FLUSH_AHEAD_BYTES:
                db.flush(False)
                self._checkpoint_flushing = True
                return False
            self._checkpoint_flushing = False
            take_checkpoint(db, Path(into))
            return True
        except FileExistsError:
            raise
        except Exception as exc:
            raise classify(exc, self.name, self.path, f"a checkpoint into {into} failed") from exc


def _flushed(cf: Rdict) -> bool:
    """No memtable of this column family waits for or is in a flush."""
    prop = cf.property_int_value
    return not prop("rocksdb.num-immutable-mem-table") and not prop("rocksdb.num-running-flushes")


def wipe_path(path: str) -> None:
    shutil.rmtree(path, ignore_errors=True)


def read_stored_offset(name: str, path: str, attempts: int = 3) -> int | None:
    """The changelog offset the store at ``path`` holds, read without taking RocksDB's lock: the database is
    opened read-only, which works while the app (in this process or another) has it open, and never stands
    in the way of the app opening it. Nothing of RocksDB's is written (rocksdict rewrites its own
    ``rocksdict-config.json``, with the same content). It sees what is durable: data and offset written
    with the WAL, not the memtable of a live writer's restore or standby writes (they skip the WAL until
    flushed), so it may be behind such a writer by a few seconds of progress.

    None when the directory holds no database or no offset. StoreCorruptedError when it cannot be read in
    ``attempts`` tries (a live writer's compaction may delete a file while the open reads it: tried again);
    StoreIOError / StateDirError for what is not damage (see ``classify``)."""
    if not os.path.exists(os.path.join(path, "CURRENT")):
        return None
    last: Exception | None = None
    for attempt in range(attempts):
        if attempt:
            time.sleep(0.05 * attempt)
        db = meta = None
        try:
            db = Rdict(path, Options(raw_mode=True), column_families={META_CF: Options(raw_mode=True)},
                       access_type=AccessType.read_only())
            meta = db.get_column_family(META_CF)
            fmt, raw = meta.get(_FORMAT_KEY), meta.get(_OFFSET_KEY)
            break
        except Exception as exc:  # rocksdict raises plain Exception for corruption, missing files, ...
            if f"column family not found: {META_CF}" in str(exc).lower():
                return None  # a database that never held hotstate's offset
            last = exc
        finally:
            if meta is not None:
                meta.close()
            if db is not None:
                db.close()
    else:
        raise classify(last, name, path, "it cannot be opened (read-only)") from last
    if fmt is not None and fmt not in KNOWN_FORMATS:
        raise StoreCorruptedError(f"store {name} at {path} has unknown format {fmt!r}")
    if raw is None:
        return None
    if len(raw) != OFFSET.size:
        raise StoreCorruptedError(f"store {name} at {path} has a malformed changelog offset {raw!r}")
    return OFFSET.unpack(raw)[0]
