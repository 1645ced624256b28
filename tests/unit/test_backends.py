"""Store backends: data and changelog offset change together; the offset persists and never goes back."""
from __future__ import annotations

import os
import shutil
import time

import pytest

from hotstate.errors import StoreCorruptedError
from hotstate.state.memory_store import MemoryBackend
from hotstate.state.rocksdb_store import META_CF, RocksDBBackend


def test_new_store_has_no_offset_and_no_data(backend):
    assert backend.changelog_offset() is None
    assert backend.get(b"a") is None
    assert list(backend.range(None, None)) == []
    assert backend.approximate_num_entries() == 0


def test_write_sets_data_and_offset_together(backend):
    backend.write([(b"a", b"1"), (b"b", b"2")], 10)
    assert backend.changelog_offset() == 10
    assert backend.get(b"a") == b"1"
    backend.write([(b"a", None), (b"c", b"3"), (b"b", b"22")], 13)
    assert backend.changelog_offset() == 13
    assert backend.get(b"a") is None
    assert list(backend.range(None, None)) == [(b"b", b"22"), (b"c", b"3")]


def test_empty_write_moves_offset(backend):
    backend.write([], 7)
    assert backend.changelog_offset() == 7
    backend.write([], 7)  # same offset is not backwards
    assert backend.changelog_offset() == 7


def test_later_entry_for_same_key_wins_within_a_write(backend):
    backend.write([(b"k", b"1"), (b"k", b"2")], 1)
    assert backend.get(b"k") == b"2"
    backend.write([(b"k", b"3"), (b"k", None)], 2)
    assert backend.get(b"k") is None


@pytest.mark.parametrize("method", ["write", "restore"])
def test_offset_moving_backwards_raises_and_changes_nothing(backend, method):
    backend.write([(b"a", b"1")], 10)
    with pytest.raises(RuntimeError, match="backwards"):
        getattr(backend, method)([(b"a", b"2"), (b"b", b"x")], 9)
    assert backend.changelog_offset() == 10
    assert backend.get(b"a") == b"1"
    assert backend.get(b"b") is None


def test_restore_then_end_restore(backend):
    backend.restore([(b"a", b"1")], 5)
    backend.restore([(b"b", b"2"), (b"a", None)], 9)
    backend.end_restore()
    assert backend.changelog_offset() == 9
    assert list(backend.range(None, None)) == [(b"b", b"2")]
    backend.write([(b"c", b"3")], 10)  # processing after restore
    assert backend.changelog_offset() == 10


RANGE_DATA = [(b"a", b"1"), (b"b", b"2"), (b"ba", b"3"), (b"c", b"4"), (b"\xff", b"5")]


@pytest.mark.parametrize("lo, hi, expected", [
    (None, None, [b"a", b"b", b"ba", b"c", b"\xff"]),
    (b"b", None, [b"b", b"ba", b"c", b"\xff"]),
    (None, b"b", [b"a", b"b"]),
    (b"b", b"c", [b"b", b"ba", b"c"]),           # inclusive at both ends
    (b"aa", b"bz", [b"b", b"ba"]),               # bounds that are not keys
    (b"c", b"b", []),                            # empty when lo > hi
    (b"d", b"\xfe", []),
    (b"", None, [b"a", b"b", b"ba", b"c", b"\xff"]),
])
def test_range_with_bounds(backend, lo, hi, expected):
    backend.write(RANGE_DATA, 1)
    assert [k for k, _ in backend.range(lo, hi)] == expected
    assert all(dict(RANGE_DATA)[k] == v for k, v in backend.range(lo, hi))


def test_wipe_removes_state_memory():
    b = MemoryBackend("s")
    b.write([(b"a", b"1")], 3)
    b.wipe()
    assert b.changelog_offset() is None
    assert b.get(b"a") is None
    b.write([(b"a", b"2")], 1)  # a wiped store starts over: a smaller offset is fine
    assert b.get(b"a") == b"2"


def test_memory_store_is_not_persistent():
    assert MemoryBackend("s").persistent is False
    assert RocksDBBackend.persistent is True


# ---- RocksDB: durability across close / reopen ----

def test_rocksdb_offset_and_data_survive_reopen(tmp_path):
    path = str(tmp_path / "db")
    b = RocksDBBackend("s", path)
    b.write([(b"a", b"1"), (b"b", b"2")], 41)
    b.write([(b"b", None)], 42)
    b.close()
    b = RocksDBBackend("s", path)
    try:
        assert b.changelog_offset() == 42
        assert list(b.range(None, None)) == [(b"a", b"1")]
        with pytest.raises(RuntimeError, match="backwards"):
            b.write([], 41)  # the check holds across reopen
    finally:
        b.close()


def test_rocksdb_offset_is_not_a_user_key(tmp_path):
    b = RocksDBBackend("s", str(tmp_path / "db"))
    try:
        b.write([(b"k", b"v")], 5)
        assert list(b.range(None, None)) == [(b"k", b"v")]
        assert b.get(b"changelog_offset") is None
        assert b.get(b"format") is None
    finally:
        b.close()


def test_rocksdb_restore_and_end_restore_persist_across_reopen(tmp_path):
    path = str(tmp_path / "db")
    b = RocksDBBackend("s", path)
    b.restore([(b"k%d" % i, b"v%d" % i) for i in range(100)], 100)
    b.restore([(b"k0", None)], 101)
    b.end_restore()
    b.close()
    b = RocksDBBackend("s", path)
    try:
        assert b.changelog_offset() == 101
        assert b.get(b"k0") is None
        assert b.get(b"k99") == b"v99"
        assert len(list(b.range(None, None))) == 99
    finally:
        b.close()


def test_rocksdb_small_restore_ends_without_a_reopen_and_is_durable_at_once(tmp_path):
    """Below BULK_RESTORE_RECORDS_MIN the restore ran on the processing options: end_restore keeps the database
    open (a close waits for background jobs of every store) and still makes the WAL-less writes durable. The
    files copied while it stays open (what a crash would leave) hold the data and the offset."""
    path, crashed = str(tmp_path / "db"), str(tmp_path / "crashed")
    b = RocksDBBackend("s", path)
    try:
        b.begin_restore(100)
        db = b._db
        b.restore([(b"k%d" % i, b"v%d" % i) for i in range(100)], 100)
        b.request_restore_flush()
        b.end_restore()
        assert b._db is db  # not reopened
        assert b.changelog_offset() == 100 and b.get(b"k7") == b"v7"
        shutil.copytree(path, crashed, ignore=shutil.ignore_patterns("LOCK"))
        b.write([(b"after", b"x")], 101)  # the store goes on processing, with its WAL
    finally:
        b.close()
    again = RocksDBBackend("s", crashed)
    try:
        assert again.changelog_offset() == 100
        assert again.get(b"k99") == b"v99" and len(list(again.range(None, None))) == 100
    finally:
        again.close()


def test_rocksdb_bulk_restore_reopens_with_the_processing_options(tmp_path):
    b = RocksDBBackend("s", str(tmp_path / "db"))
    try:
        b.begin_restore(RocksDBBackend.BULK_RESTORE_RECORDS_MIN)
        db = b._db
        b.restore([(b"k", b"v")], 1)
        b.end_restore()
        assert b._db is not db and not b._bulk
        assert b.changelog_offset() == 1 and b.get(b"k") == b"v"
    finally:
        b.close()


def test_rocksdb_close_during_restore_persists(tmp_path):
    path = str(tmp_path / "db")
    b = RocksDBBackend("s", path)
    b.restore([(b"a", b"1")], 8)
    b.close()  # close ends the restore (flushes)
    b = RocksDBBackend("s", path)
    try:
        assert b.changelog_offset() == 8 and b.get(b"a") == b"1"
    finally:
        b.close()


def test_rocksdb_close_is_idempotent(tmp_path):
    b = RocksDBBackend("s", str(tmp_path / "db"))
    b.close()
    b.close()


def test_rocksdb_wipe_removes_state(tmp_path):
    path = str(tmp_path / "db")
    b = RocksDBBackend("s", path)
    b.write([(b"a", b"1")], 3)
    b.wipe()
    assert not os.path.exists(path)
    b = RocksDBBackend("s", path)
    try:
        assert b.changelog_offset() is None
        assert b.get(b"a") is None
    finally:
        b.close()


def test_rocksdb_approximate_num_entries(tmp_path):
    b = RocksDBBackend("s", str(tmp_path / "db"))
    try:
        b.write([(b"k%d" % i, b"v") for i in range(50)], 50)
        assert b.approximate_num_entries() > 0
    finally:
        b.close()


def test_rocksdb_garbage_current_raises_store_corrupted(tmp_path):
    path = str(tmp_path / "db")
    b = RocksDBBackend("s", path)
    b.write([(b"a", b"1")], 1)
    b.close()
    with open(os.path.join(path, "CURRENT"), "wb") as f:
        f.write(b"\x00garbage\xff")
    with pytest.raises(StoreCorruptedError, match="cannot be opened"):
        RocksDBBackend("s", path)


def test_rocksdb_dir_of_garbage_files_raises_store_corrupted(tmp_path):
    path = tmp_path / "db"
    path.mkdir()
    (path / "CURRENT").write_bytes(b"MANIFEST-000001\n")
    (path / "MANIFEST-000001").write_bytes(b"\x00not a manifest" * 8)
    with pytest.raises(StoreCorruptedError) as ei:
        RocksDBBackend("s", str(path))
    assert "store s" in str(ei.value) and str(path) in str(ei.value)


def _poke_meta(path: str, key: bytes, value: bytes) -> None:
    b = RocksDBBackend("s", path)
    b.write([(b"a", b"1")], 5)
    b._meta.put(key, value)
    b.close()


def test_rocksdb_unknown_format_raises_store_corrupted(tmp_path):
    path = str(tmp_path / "db")
    _poke_meta(path, b"format", b"99")
    with pytest.raises(StoreCorruptedError, match="unknown format"):
        RocksDBBackend("s", path)


def test_rocksdb_malformed_offset_raises_store_corrupted(tmp_path):
    path = str(tmp_path / "db")
    _poke_meta(path, b"changelog_offset", b"\x01\x02")
    with pytest.raises(StoreCorruptedError, match="malformed changelog offset"):
        RocksDBBackend("s", path)


def test_rocksdb_meta_column_family_name():
    assert META_CF == "hotstate_meta"


def test_rocksdb_checkpoint_holds_the_state_and_offset_of_the_last_write(tmp_path):
    b = RocksDBBackend("s", str(tmp_path / "s"))
    b.write([(b"a", b"1"), (b"b", b"2")], 10)
    assert b.checkpoint(str(tmp_path / "cp" / "one")) is True
    b.write([(b"a", None), (b"c", b"3")], 12)  # after the checkpoint: not in it
    b.close()
    copy = RocksDBBackend("s", str(tmp_path / "cp" / "one"))
    try:
        assert copy.changelog_offset() == 10
        assert list(copy.range(None, None)) == [(b"a", b"1"), (b"b", b"2")]
    finally:
        copy.close()


def test_rocksdb_checkpoint_into_an_existing_directory_is_refused(tmp_path):
    b = RocksDBBackend("s", str(tmp_path / "s"))
    try:
        b.write([(b"a", b"1")], 1)
        (tmp_path / "cp").mkdir()
        with pytest.raises(FileExistsError):
            b.checkpoint(str(tmp_path / "cp"))
    finally:
        b.close()


def test_rocksdb_checkpoint_during_a_restore_holds_the_restored_state(tmp_path):
    b = RocksDBBackend("s", str(tmp_path / "s"))
    b.restore([(b"k%d" % i, b"v") for i in range(100)], 100)  # no WAL
    assert b.checkpoint(str(tmp_path / "cp"))
    b.close()
    copy = RocksDBBackend("s", str(tmp_path / "cp"))
    try:
        assert copy.changelog_offset() == 100 and copy.approximate_num_entries() >= 90
        assert copy.get(b"k99") == b"v"
    finally:
        copy.close()


def test_memory_backend_declares_it_has_nothing_to_checkpoint(tmp_path):
    b = MemoryBackend("m")
    b.write([(b"a", b"1")], 1)
    assert b.supports_checkpoint is False and RocksDBBackend.supports_checkpoint is True
    with pytest.raises(NotImplementedError, match="lives in memory"):
        b.checkpoint(str(tmp_path / "cp"))
    assert not (tmp_path / "cp").exists()


def test_rocksdb_checkpoint_of_a_big_memtable_flushes_it_in_the_background_first(tmp_path):
    b = RocksDBBackend("s", str(tmp_path / "s"))
    try:
        b.write([(b"k%06d" % i, b"x" * 200) for i in range(10_000)], 10_000)  # ~2 MB in the memtable
        assert b.checkpoint(str(tmp_path / "cp")) is False  # started a flush, created nothing
        assert not (tmp_path / "cp").exists()
        b.write([(b"late", b"1")], 10_001)  # a commit meanwhile: part of the checkpoint once taken
        deadline = time.monotonic() + 30
        while not b.checkpoint(str(tmp_path / "cp")):
            assert time.monotonic() < deadline, "the background flush never finished"
            time.sleep(0.01)
    finally:
        b.close()
    copy = RocksDBBackend("s", str(tmp_path / "cp"))
    try:
        assert copy.changelog_offset() == 10_001 and copy.get(b"late") == b"1" and copy.get(b"k009999") == b"x" * 200
    finally:
        copy.close()
