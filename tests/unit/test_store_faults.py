"""Damaged and failing RocksDB stores, on real RocksDB files damaged by the test: what is corruption (wipe and
restore), what is not (keep the store, say what to do), and what a read of a damaged block does to a running
task (issue #10, defects 1, 2, 6 and 7)."""
from __future__ import annotations

import glob
import logging
import os

import pytest

from hotstate import StoreSpec, TopicPartition, serde
from hotstate.errors import StateDirError, StoreClosedError, StoreCorruptedError, StoreIOError
from hotstate.observe.metrics import Metrics
from hotstate.runtime.task import TaskState
from hotstate.runtime.task_manager import TaskManager
from hotstate.state import rocksdb_store
from hotstate.state.rocksdb_store import RocksDBBackend, classify
from hotstate.state.state_dir import StateDirectory
from test_task_manager import FakeCommitter, FakeConsumer, FakeProducer, FakeUpdater
from unit_support import FakeMsg

KEYS = 20_000


def filled(path: str, offset: int = 5) -> None:
    """A store with KEYS keys "k000000".. flushed into an SST file, closed."""
    b = RocksDBBackend("s", path)
    b.write([(f"k{i:06d}".encode(), os.urandom(100)) for i in range(KEYS)], offset)
    b._db.flush()
    b._meta.flush()
    b.close()


def damage(path: str, at: int) -> None:
    """Overwrites bytes of the store's largest SST file: ``at`` >= 0 from its start (the first data block),
    < 0 from its end (index, properties and footer: seen when the store opens)."""
    sst = max(glob.glob(os.path.join(path, "*.sst")), key=os.path.getsize)
    with open(sst, "r+b") as f:
        f.seek(at if at >= 0 else os.path.getsize(sst) + at)
        f.write(b"\xa5" * 16)


# ---- what an error at open means ----

def test_a_block_checksum_mismatch_at_open_is_corruption_not_a_lock(tmp_path):
    path = str(tmp_path / "db")
    filled(path)
    damage(path, -200)  # the index block: "block checksum mismatch", which holds the word "lock"
    with pytest.raises(StoreCorruptedError, match="checksum mismatch"):
        RocksDBBackend("s", path)


@pytest.mark.parametrize("remove", ["sst", "manifest"])
def test_a_missing_file_of_the_store_is_corruption(tmp_path, remove):
    path = str(tmp_path / "db")
    filled(path)
    pattern = "*.sst" if remove == "sst" else "MANIFEST-*"
    os.remove(max(glob.glob(os.path.join(path, pattern)), key=os.path.getsize))
    with pytest.raises(StoreCorruptedError):
        RocksDBBackend("s", path)


def test_a_store_held_open_elsewhere_is_a_lock_error(tmp_path):
    path = str(tmp_path / "db")
    holder = RocksDBBackend("s", path)
    try:
        with pytest.raises(StateDirError, match="locked"):
            RocksDBBackend("s", path)
    finally:
        holder.close()


@pytest.mark.parametrize("text", [
    "IO error: No space left on device: While appending to file: db/000012.log",
    "IO error: While open a file for random read: db/000009.sst: Too many open files",
    "IO error: While fsync: a file descriptor: Input/output error",
])
def test_operating_system_failures_are_not_corruption(text):
    error = classify(Exception(text), "s", "/x/db", "it cannot be opened")
    assert type(error) is StoreIOError
    assert "not corruption" in str(error) and text in str(error)


def test_an_io_error_at_open_keeps_the_store(make_app, tmp_path, monkeypatch):
    """Defect 2: "Too many open files" (or a full disk, or EIO) during a rebalance wiped a healthy store."""
    tm, sd = build(make_app)
    path = sd.store_path("0_0", "c")
    filled(path)

    def failing_open(*a, **kw):
        raise Exception(f"IO error: While open a file for random read: {path}/000009.sst: Too many open files")

    monkeypatch.setattr(rocksdb_store, "Rdict", failing_open)
    with pytest.raises(StoreIOError, match="Too many open files"):
        tm._open_store("0_0", 0, StoreSpec("c"))
    monkeypatch.undo()
    b = RocksDBBackend("s", path)
    try:
        assert b.changelog_offset() == 5 and b.get(b"k000123") is not None  # kept, not wiped
    finally:
        b.close()


# ---- reads of a damaged data block ----

def test_a_scan_over_a_damaged_block_raises_instead_of_ending_early(tmp_path):
    path = str(tmp_path / "db")
    filled(path)
    damage(path, 100)
    reports = []
    b = RocksDBBackend("s", path, on_corruption=reports.append)
    try:
        with pytest.raises(StoreCorruptedError, match="checksum mismatch"):
            list(b.range(None, None))
        assert b.corrupted and len(reports) == 1
    finally:
        b.close()


def test_a_get_of_a_damaged_block_is_corruption(tmp_path):
    path = str(tmp_path / "db")
    filled(path)
    damage(path, 100)
    b = RocksDBBackend("s", path)
    try:
        assert not b.corrupted
        with pytest.raises(StoreCorruptedError):
            b.get(b"k000000")
        assert b.corrupted
    finally:
        b.close()


# ---- queries and close ----

def test_closing_a_store_ends_its_open_scans_and_frees_the_path(tmp_path):
    """Defect 6: a half-consumed query iterator kept RocksDB open after its task closed, and reopening the
    path in the same process failed."""
    path = str(tmp_path / "db")
    b = RocksDBBackend("s", path)
    b.write([(b"a", b"1"), (b"b", b"2"), (b"c", b"3")], 3)
    scan = b.range(None, None)
    assert next(scan) == (b"a", b"1")
    b.close()
    again = RocksDBBackend("s", path)  # raised "lock hold by current process" before
    try:
        assert again.changelog_offset() == 3
        with pytest.raises(StoreClosedError):
            next(scan)
    finally:
        again.close()


def test_reads_of_a_closed_store_raise_store_closed(tmp_path):
    b = RocksDBBackend("s", str(tmp_path / "db"))
    b.close()
    for read in (lambda: b.get(b"a"), lambda: list(b.range(None, None)), b.approximate_num_entries):
        with pytest.raises(StoreClosedError):
            read()


# ---- a running task whose store is damaged ----

class PausingConsumer(FakeConsumer):
    def __init__(self, committed=None):
        super().__init__(committed)
        self.paused = []

    def pause(self, tps):
        self.paused.extend((t.topic, t.partition) for t in tps)


def build(make_app, **cfg):
    app = make_app(**cfg)
    s = app.stream("words", key_serde=serde.STRING, value_serde=serde.STRING)
    s.group_by_key().count(StoreSpec("c")).to_stream().to("out", value_serde=serde.INT64)
    sd = StateDirectory(app.config.state_dir, app.config.app_id)
    tm = TaskManager(app.config, app._topology, sd, PausingConsumer({("words", 0): 40}), FakeUpdater(),
                     Metrics(), FakeCommitter())
    return tm, sd


def start_running(tm):
    tm.partitions_assigned([TopicPartition("words", 0)])
    tm._updater.restored.extend(tm._updater.added)
    tm.handle_restored()
    return tm.tasks["0_0"]


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once_v2"])
def test_a_damaged_block_met_while_processing_restores_the_task_instead_of_failing(make_app, guarantee, caplog):
    """Defect 7 and the corruption fault: not a user ProcessingError; the task closes, its damaged store is
    wiped and restored, its input rewinds to the last commit, and processing goes on."""
    tm, sd = build(make_app, processing_guarantee=guarantee)
    path = sd.store_path("0_0", "c")
    filled(path)
    damage(path, 100)  # the first data block: keys k000000...
    task = start_running(tm)
    try:
        caplog.set_level(logging.WARNING)
        tm.process([FakeMsg("words", 0, 41, b"k000001", b"x"), FakeMsg("words", 0, 42, b"zzz", b"x")])
        assert task.state is TaskState.RESTORING and tm._updater.added.count(task) == 2
        assert task.stores["c"].backend.changelog_offset() is None  # wiped: restores in full
        assert not task.stores["c"].backend.corrupted
        assert tm._consumer.paused == [("words", 0)] and ("words", 0, 40) in tm._consumer.seeks
        assert task.dirty_records() == 0 and tm._metrics.store_corruptions_total == 1
        assert "wiping its damaged store" in caplog.text
        if guarantee == "exactly_once_v2":
            assert tm._committer.aborts == 1  # the open transaction held this task's output
    finally:
        task.close_stores()


def test_a_damaged_block_met_by_a_query_restores_the_task_on_the_processing_thread(make_app):
    tm, sd = build(make_app)
    path = sd.store_path("0_0", "c")
    filled(path)
    damage(path, 100)
    task = start_running(tm)
    try:
        view = task.stores["c"].view
        with pytest.raises(StoreCorruptedError):
            list(view.all())
        assert task.state is TaskState.RUNNING  # the query thread only reports it
        tm.handle_corrupted()
        assert task.state is TaskState.RESTORING and task.stores["c"].backend.changelog_offset() is None
        tm.handle_corrupted()  # reported once, revived once
        assert tm._metrics.store_corruptions_total == 1
    finally:
        task.close_stores()


def test_a_damaged_leftover_store_is_wiped_and_does_not_stop_the_offset_report(make_app, caplog):
    """Defect 1's second half: a corrupt leftover directory (a task not assigned here) made the member's
    task-offset report raise, so the instance could never join."""
    tm, sd = build(make_app)
    good, bad = sd.store_path("0_1", "c"), sd.store_path("0_2", "c")
    filled(good, offset=7)
    filled(bad)
    damage(bad, -200)
    caplog.set_level(logging.WARNING)
    offsets = tm.task_offsets()
    assert offsets["0_1"] == 7 and offsets["0_2"] == 0
    assert not os.path.exists(bad) and os.path.exists(good)
    assert "0_2" in caplog.text and "wiping it" in caplog.text
