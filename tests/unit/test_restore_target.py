"""The RestoreTarget contract (state/backend.py) on both backends: bulk writes, reset, adopting store files
(a rocksdict Checkpoint of a store, copied to a fresh directory, opened as another store with its offset),
and the registry from StoreSpec.kind to a backend."""
from __future__ import annotations

import os
import shutil
import time

import pytest
from rocksdict import Checkpoint

from hotstate import StoreSpec
from hotstate.errors import ConfigError, StoreCorruptedError
from hotstate.state import backend as backend_mod
from hotstate.state.backend import BackendKind, backend_kind, backend_kinds, register_backend
from hotstate.state.memory_store import MemoryBackend
from hotstate.state.rocksdb_store import RocksDBBackend


def bulk_write(b, batches):
    """Writes [(entries, offset)] through the contract's bulk path and waits for the asynchronous flush."""
    b.begin_restore(sum(len(e) for e, _ in batches))
    for entries, offset in batches:
        batch = b.restore_batch()
        for k, v in entries:
            if v is None:
                batch.delete(k)
            else:
                batch.put(k, v)
        b.write_restore_batch(batch, offset)
    b.request_restore_flush()
    for _ in range(2000):
        if b.restore_flushed():
            break
        time.sleep(0.005)
    else:
        raise AssertionError("the restore flush did not finish")
    b.end_restore()


def test_bulk_write_path(backend):
    bulk_write(backend, [([(b"a", b"1"), (b"b", b"2")], 5), ([(b"a", None), (b"c", b"3")], 9)])
    assert backend.changelog_offset() == 9
    assert list(backend.range(None, None)) == [(b"b", b"2"), (b"c", b"3")]
    with pytest.raises(RuntimeError, match="backwards"):
        backend.write_restore_batch(backend.restore_batch(), 8)


def test_memory_flush_is_done_at_once():
    b = MemoryBackend("s")
    b.write_restore_batch(b.restore_batch(), 3)
    b.request_restore_flush()
    assert b.restore_flushed() and b.changelog_offset() == 3


def test_reset_drops_data_and_offset_and_the_store_stays_usable(backend):
    backend.write([(b"a", b"1")], 10)
    backend.reset()
    assert backend.changelog_offset() is None
    assert backend.get(b"a") is None and list(backend.range(None, None)) == []
    backend.write([(b"b", b"2")], 3)  # starts over: a smaller offset is fine
    assert backend.get(b"b") == b"2" and backend.changelog_offset() == 3


def test_rocksdb_reset_is_durable_and_drops_unflushed_restore_writes(tmp_path, monkeypatch):
    monkeypatch.setattr(RocksDBBackend, "BULK_RESTORE_RECORDS_MIN", 1)
    path = str(tmp_path / "db")
    b = RocksDBBackend("s", path)
    b.write([(b"old", b"1")], 4)
    b.begin_restore(10)
    b.restore([(b"r", b"2")], 7)
    assert b._bulk
    b.corrupted = True
    b.reset()
    assert not b._bulk and not b._restoring and not b.corrupted
    assert b.changelog_offset() is None and b.get(b"r") is None and b.get(b"old") is None
    b.write([(b"new", b"3")], 1)
    b.close()
    again = RocksDBBackend("s", path)
    try:
        assert again.changelog_offset() == 1
        assert list(again.range(None, None)) == [(b"new", b"3")]
    finally:
        again.close()


def checkpoint_copy(source: RocksDBBackend, tmp_path, name="copy") -> str:
    """A checkpoint of a live store (hard links), copied to a fresh directory: what a snapshot download gives."""
    ckpt = str(tmp_path / f"{name}-checkpoint")
    Checkpoint(source._db).create_checkpoint(ckpt)
    copy = str(tmp_path / name)
    shutil.copytree(ckpt, copy)
    shutil.rmtree(ckpt)
    return copy


def test_rocksdb_open_from_files_adopts_a_checkpoint_with_its_offset(tmp_path):
    source = RocksDBBackend("s", str(tmp_path / "source"))
    entries = [(b"k%04d" % i, b"v%d" % i) for i in range(500)]
    source.write(entries, 500)
    source.write([(b"k0000", None)], 501)
    copy = checkpoint_copy(source, tmp_path)
    source.write([(b"after", b"x")], 502)  # not in the checkpoint
    source.close()

    target_path = str(tmp_path / "target")
    target = RocksDBBackend("s", target_path)
    target.write([(b"local", b"stale")], 17)  # what the store held before: replaced entirely
    target.open_from_files(copy)
    try:
        assert not os.path.exists(copy)  # consumed
        assert target.changelog_offset() == 501
        assert target.get(b"local") is None and target.get(b"after") is None and target.get(b"k0000") is None
        assert list(target.range(None, None)) == entries[1:]
        with pytest.raises(RuntimeError, match="backwards"):
            target.write([], 500)  # the adopted offset is the one the always-on check uses
        target.write([(b"new", b"1")], 510)
    finally:
        target.close()
    again = RocksDBBackend("s", target_path)
    try:
        assert again.changelog_offset() == 510
        assert again.get(b"new") == b"1" and again.get(b"k0499") == b"v499"
    finally:
        again.close()


def test_rocksdb_open_from_files_of_a_restored_store(tmp_path, monkeypatch):
    """A store restored in bulk mode, checkpointed after its flush: the adopted copy has data and offset."""
    monkeypatch.setattr(RocksDBBackend, "BULK_RESTORE_RECORDS_MIN", 1)
    source = RocksDBBackend("s", str(tmp_path / "source"))
    bulk_write(source, [([(b"a", b"1")], 40), ([(b"b", b"2")], 80)])
    copy = checkpoint_copy(source, tmp_path)
    source.close()
    target = RocksDBBackend("s", str(tmp_path / "target"))
    try:
        target.open_from_files(copy)
        assert target.changelog_offset() == 80 and target.get(b"a") == b"1" and target.get(b"b") == b"2"
    finally:
        target.close()


@pytest.mark.parametrize("what", ["empty", "garbage", "no-offset"])
def test_rocksdb_open_from_files_refuses_what_is_not_a_store_and_keeps_the_store(tmp_path, what):
    bad = tmp_path / "download"
    if what == "empty":
        bad.mkdir()
    elif what == "garbage":
        bad.mkdir()
        (bad / "CURRENT").write_bytes(b"MANIFEST-000001\n")
        (bad / "MANIFEST-000001").write_bytes(b"\x00not a manifest" * 8)
    else:  # a hotstate store that never held an offset
        RocksDBBackend("s", str(bad)).close()
    target = RocksDBBackend("s", str(tmp_path / "target"))
    target.write([(b"kept", b"1")], 9)
    try:
        with pytest.raises(StoreCorruptedError):
            target.open_from_files(str(bad))
        assert target.changelog_offset() == 9 and target.get(b"kept") == b"1"
        target.write([(b"more", b"2")], 10)  # still open and writable
    finally:
        target.close()


def test_rocksdb_open_from_files_that_fail_after_the_swap_leave_the_store_empty(tmp_path, monkeypatch):
    source = RocksDBBackend("s", str(tmp_path / "source"))
    source.write([(b"a", b"1")], 5)
    copy = checkpoint_copy(source, tmp_path)
    source.close()
    target = RocksDBBackend("s", str(tmp_path / "target"))
    target.write([(b"kept", b"1")], 3)

    def broken_move(src, dst):
        os.makedirs(dst)
        shutil.copy(os.path.join(src, "CURRENT"), dst)  # half the files: the copy was interrupted
        raise OSError("disk full")

    monkeypatch.setattr("hotstate.state.rocksdb_store.shutil.move", broken_move)
    try:
        with pytest.raises(OSError, match="disk full"):
            target.open_from_files(copy)
        assert target.changelog_offset() is None and target.get(b"kept") is None and target.get(b"a") is None
        target.write([(b"b", b"2")], 1)  # empty and open: a full replay can follow
    finally:
        target.close()


def test_memory_open_from_files_is_not_supported_and_changes_nothing(tmp_path):
    b = MemoryBackend("s")
    b.write([(b"a", b"1")], 2)
    with pytest.raises(NotImplementedError, match="in-memory"):
        b.open_from_files(str(tmp_path))
    assert b.changelog_offset() == 2 and b.get(b"a") == b"1"


# ---- the registry ----

def test_builtin_kinds():
    assert {"memory", "rocksdb"} <= set(backend_kinds())
    assert backend_kind("rocksdb").persistent and not backend_kind("memory").persistent
    assert isinstance(backend_kind("memory").open("m", None, None), MemoryBackend)


def test_a_registered_kind_is_a_valid_store_kind_and_the_task_manager_opens_it(tmp_path, make_app, monkeypatch):
    from test_task_manager import build
    monkeypatch.setattr(backend_mod, "_KINDS", dict(backend_mod._KINDS))  # the registration ends with the test
    with pytest.raises(ConfigError, match="kind='custom' is invalid; use one of 'memory', 'rocksdb'"):
        StoreSpec("x", kind="custom")
    opened = []

    def open_custom(name, path, on_corruption):
        opened.append((name, path, on_corruption is not None))
        return RocksDBBackend(name, path, on_corruption=on_corruption)

    register_backend(BackendKind("custom", persistent=True, open=open_custom))
    assert StoreSpec("x", kind="custom").kind == "custom"
    tm, sd = build(make_app, tmp_path)
    ts = tm._open_store("0_1", 1, StoreSpec("c", kind="custom"))
    try:
        assert opened == [("c", sd.store_path("0_1", "c"), True)]
        assert ts.backend.path == sd.store_path("0_1", "c")
    finally:
        ts.backend.close()


def test_a_simple_target_is_durable_once_its_flush_is_requested():
    """SimpleRestoreTarget's asynchronous flush is done at once: restore_flushed() is True only because
    request_restore_flush made the restored batches durable (end_restore), as the contract says."""
    from hotstate.state.backend import SimpleRestoreTarget

    class Durable(SimpleRestoreTarget):
        def __init__(self):
            self.volatile, self.durable = [], []

        def restore(self, entries, changelog_offset):
            self.volatile.append((list(entries), changelog_offset))

        def end_restore(self):
            self.durable += self.volatile
            self.volatile = []

    b = Durable()
    b.begin_restore(1)
    batch = b.restore_batch()
    batch.put(b"a", b"1")
    batch.delete(b"b")
    b.write_restore_batch(batch, 7)
    assert b.durable == []
    b.request_restore_flush()
    assert b.restore_flushed() and b.durable == [([(b"a", b"1"), (b"b", None)], 7)]
