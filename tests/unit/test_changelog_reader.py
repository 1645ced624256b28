"""The changelog reader's per-partition lifecycle: the transition table, the states a store partition goes
through in a restore and in a standby update, and DOWNLOADING with a fake snapshot source (the tail is read
from the snapshot's offset; no snapshot, a failing source or unusable files fall back to reading the
changelog, and the store never sees the files of a failed download)."""
from __future__ import annotations

import logging
import os
import shutil
import time
from concurrent.futures import Future
from pathlib import Path

import pytest
from rocksdict import Checkpoint

from hotstate.config import Config
from hotstate.errors import IllegalStateTransition
from hotstate.observe.listener import SuspendReason
from hotstate.observe.metrics import Metrics
from hotstate.runtime import changelog_partition as cp
from hotstate.runtime.changelog_reader import ChangelogPartition, ChangelogState, Mode
from hotstate.runtime.snapshot_download import SnapshotFetched
from hotstate.runtime.state_updater import StateUpdater
from hotstate.state.rocksdb_store import RocksDBBackend
from test_restore_bulk import SlowFlushBackend
from test_standby_updater import CL1, StandbyConsumer, _DrivenByTest, step
from test_state_updater import (CHANGELOG, FakeRestoreConsumer, RecordingListener, changelog_records, i64,
                                make_task, run_until_idle)

S = ChangelogState
ALL = list(ChangelogState)

# The table as the module docstring draws it: (from, to) -> the modes that may take that edge.
A, SB, BOTH = {Mode.ACTIVE}, {Mode.STANDBY}, {Mode.ACTIVE, Mode.STANDBY}
LEGAL = {
    (S.REGISTERED, S.DOWNLOADING): BOTH, (S.REGISTERED, S.RESTORING): A, (S.REGISTERED, S.UPDATING): SB,
    (S.REGISTERED, S.COMPLETED): A, (S.REGISTERED, S.FAILED): BOTH, (S.REGISTERED, S.CLOSED): BOTH,
    (S.DOWNLOADING, S.RESTORING): A, (S.DOWNLOADING, S.UPDATING): SB, (S.DOWNLOADING, S.COMPLETED): A,
    (S.DOWNLOADING, S.FAILED): BOTH, (S.DOWNLOADING, S.CLOSED): BOTH,
    (S.RESTORING, S.FLUSHING): A, (S.RESTORING, S.FAILED): A, (S.RESTORING, S.CLOSED): A,
    (S.UPDATING, S.PAUSED): SB, (S.UPDATING, S.FLUSHING): SB, (S.UPDATING, S.FAILED): SB,
    (S.UPDATING, S.CLOSED): SB,
    (S.PAUSED, S.UPDATING): SB, (S.PAUSED, S.FAILED): SB, (S.PAUSED, S.CLOSED): SB,
    (S.FLUSHING, S.COMPLETED): A, (S.FLUSHING, S.UPDATING): SB, (S.FLUSHING, S.PAUSED): SB,
    (S.FLUSHING, S.FAILED): BOTH, (S.FLUSHING, S.CLOSED): BOTH,
}


def partition_in(state, mode, tmp_path):
    task = make_task("memory", tmp_path)
    p = ChangelogPartition(task, task.stores["counts"], mode)
    p.state = state
    return p


# The states each mode can be in: RESTORING and COMPLETED are active-only, UPDATING and PAUSED standby-only.
MODE_STATES = {Mode.ACTIVE: set(ALL) - {S.UPDATING, S.PAUSED}, Mode.STANDBY: set(ALL) - {S.RESTORING, S.COMPLETED}}


@pytest.mark.parametrize("mode, frm, to", [(m, f, t) for m in Mode for f in ALL if f in MODE_STATES[m] for t in ALL])
def test_transition_table(tmp_path, mode, frm, to):
    p = partition_in(frm, mode, tmp_path)
    if mode in LEGAL.get((frm, to), ()):
        p.transition(to)
        assert p.state is to
        # records go into the store (the partition is assigned) in these states only
        assert p.reading is (to in ({S.RESTORING} if mode is Mode.ACTIVE else {S.UPDATING, S.PAUSED, S.FLUSHING}))
    else:
        with pytest.raises(IllegalStateTransition, match=f"{frm.value} -> {to.value} is not allowed"):
            p.transition(to)
        assert p.state is frm


def test_terminal_states_have_no_way_out_and_each_mode_reaches_only_its_states():
    for state in (S.COMPLETED, S.FAILED, S.CLOSED):
        assert cp._TRANSITIONS[state] == frozenset()
    assert {frm for frm, _ in LEGAL} == set(ALL) - {S.COMPLETED, S.FAILED, S.CLOSED}
    for mode, states in MODE_STATES.items():
        reachable = {S.REGISTERED} | {to for (_, to), modes in LEGAL.items() if mode in modes}
        assert reachable == states


# ---- the states of a store partition through a restore and a standby update ----

@pytest.fixture
def history(monkeypatch):
    """Every transition of every partition: (changelog, mode, from, to)."""
    seen = []
    original = ChangelogPartition.transition

    def recording(self, to):
        frm = self.state
        original(self, to)
        seen.append((self.tp, self.mode, frm, to))

    monkeypatch.setattr(ChangelogPartition, "transition", recording)
    return seen


def edges(history, tp=CHANGELOG):
    return [(frm, to) for t, _, frm, to in history if t == tp]


def make_updater(consumer, listener=None, source=None, staging=None, **cfg):
    config = Config.from_kwargs(app_id="app", bootstrap_servers="127.0.0.1:1", **cfg)

    def factory():
        raise AssertionError("the thread is driven by the test")

    u = StateUpdater(config, factory, listener, Metrics(), snapshot_source=source,
                     snapshot_staging_dir=None if staging is None else str(staging))
    u._reader.consumer = consumer
    u._thread = _DrivenByTest()
    return u


def test_a_restore_goes_registered_restoring_flushing_completed(tmp_path, history):
    task = make_task("memory", tmp_path)
    store = task.stores["counts"]
    store.backend = SlowFlushBackend(store.backend)
    consumer = FakeRestoreConsumer({CHANGELOG: (0, 5)}, {CHANGELOG: changelog_records(5)})
    u = make_updater(consumer)
    u.add(task)
    u._handle_commands(wait_s=0)
    p = u._reader.partitions()[CHANGELOG]
    assert (p.mode, p.state) == (Mode.ACTIVE, S.RESTORING) and p.reading and consumer.positions == {CHANGELOG: 0}
    assert u._reader.activity() == (True, False, False)
    u._reader.restore_round()
    assert p.state is S.FLUSHING and not p.reading and consumer.positions == {}  # read to its end, unassigned
    assert u._reader.activity() == (False, True, False) and u.drain_restored() == []
    store.backend.flush_done = True
    u._reader.check_flushed()
    assert p.state is S.COMPLETED and u._reader.partitions() == {} and u.drain_restored() == [task]
    assert edges(history) == [(S.REGISTERED, S.RESTORING), (S.RESTORING, S.FLUSHING), (S.FLUSHING, S.COMPLETED)]


def test_a_current_store_completes_at_once_and_a_removed_one_closes(tmp_path, history):
    current = make_task("memory", tmp_path, 5, [(b"k", i64(1))])
    behind = make_task("memory", tmp_path, partition=1)
    consumer = FakeRestoreConsumer({CHANGELOG: (0, 5), CL1: (0, 9)}, {CL1: changelog_records(9)})
    u = make_updater(consumer)
    u._reader.start_actives([current, behind])
    assert edges(history) == [(S.REGISTERED, S.COMPLETED)] and u.drain_restored() == [current]
    fut = Future()
    u._remove_task(behind.id, fut)
    assert fut.result(timeout=0) is behind
    assert edges(history, CL1) == [(S.REGISTERED, S.RESTORING), (S.RESTORING, S.CLOSED)]
    assert consumer.positions == {} and u._reader.partitions() == {}


def test_a_failing_start_fails_the_partition(tmp_path, history):
    class Broken(SlowFlushBackend):
        def begin_restore(self, records):
            raise RuntimeError("cannot reopen")

    task = make_task("memory", tmp_path)
    task.stores["counts"].backend = Broken(task.stores["counts"].backend)
    consumer = FakeRestoreConsumer({CHANGELOG: (0, 3)}, {CHANGELOG: changelog_records(3)})
    u = make_updater(consumer)
    u._reader.start_actives([task])
    assert [t for t, _ in u.drain_failed()] == [task]
    assert edges(history) == [(S.REGISTERED, S.RESTORING), (S.RESTORING, S.FAILED)]
    assert consumer.positions == {} and u._reader.partitions() == {}


def test_a_standby_goes_updating_paused_flushing_and_closed(tmp_path, history):
    standby = make_task("rocksdb", tmp_path)
    active = make_task("memory", tmp_path, partition=1)
    consumer = StandbyConsumer({CHANGELOG: (0, 3), CL1: (0, 30)},
                               {CHANGELOG: changelog_records(3), CL1: changelog_records(30)})
    u = make_updater(consumer, restore_consume_records_max=10)
    u._reader.STANDBY_FLUSH_INTERVAL_S = 0.0
    try:
        u.add_standby(standby)
        step(u, consumer, now=0.0)  # no flush check yet (clock at 0)
        p = u._reader.partitions()[CHANGELOG]
        assert (p.mode, p.state, p.offset) == (Mode.STANDBY, S.UPDATING, 3)
        assert u._reader.activity() == (False, False, True) and consumer.paused == set()
        now = p.flushed_at + 1
        u._reader.maintain_standbys(now)  # due: the flush starts, paused meanwhile
        assert p.state is S.FLUSHING and p.paused and consumer.paused == {CHANGELOG}
        u.add(active)  # an active restore begins while the standby flushes
        u._handle_commands(wait_s=0)
        assert p.state is S.FLUSHING and consumer.paused == {CHANGELOG}
        deadline = time.monotonic() + 10
        while p.state is S.FLUSHING:
            assert time.monotonic() < deadline, "the standby flush did not finish"
            time.sleep(0.005)
            u._reader.maintain_standbys(now)
        assert p.state is S.PAUSED and consumer.paused == {CHANGELOG}  # flushed, but the active restore holds it
        run_until_idle(u, consumer)
        assert u.drain_restored() == [active]
        assert p.state is S.UPDATING and consumer.paused == set()
        assert u.remove_standby(standby.id, SuspendReason.MIGRATED) is not None
        step(u, consumer)
        assert p.state is S.CLOSED and u._reader.partitions() == {} and consumer.positions == {}
        assert edges(history) == [(S.REGISTERED, S.UPDATING), (S.UPDATING, S.FLUSHING), (S.FLUSHING, S.PAUSED),
                                  (S.PAUSED, S.UPDATING), (S.UPDATING, S.CLOSED)]
    finally:
        standby.stores["counts"].backend.close()


def test_a_standby_that_fails_settles_failed_and_is_left_out_of_lags(tmp_path, history):
    task = make_task("memory", tmp_path)
    consumer = StandbyConsumer({CHANGELOG: (0, 3)}, {CHANGELOG: changelog_records(3)})
    u = make_updater(consumer)

    def broken(batch, offset):
        raise OSError("disk full")

    task.stores["counts"].backend.write_restore_batch = broken
    u.add_standby(task)
    step(u, consumer)
    assert edges(history) == [(S.REGISTERED, S.UPDATING), (S.UPDATING, S.FAILED)]
    assert u.standby_task_ids() == [task.id] and u.standby_lags() == {} and consumer.positions == {}


# ---- DOWNLOADING: a snapshot, then the changelog's tail ----

class FakeSource:
    """A snapshot source that hands out a checkpoint of a RocksDB store (or whatever ``fill`` writes)."""

    def __init__(self, fill=None, offset=None, raises=None):
        self.fill, self.offset, self.raises = fill, offset, raises
        self.calls = []
        self.dirs = []

    def fetch(self, store_name, changelog_partition, local_offset, into):
        self.calls.append((store_name, changelog_partition, local_offset))
        assert isinstance(into, Path) and into.is_dir() and not any(into.iterdir())
        self.dirs.append(into)
        if self.fill is not None:
            self.fill(into)
        if self.raises is not None:
            raise self.raises
        if self.offset is None:
            return None
        return SnapshotFetched(self.offset, 1234, 0.5)


def checkpoint_of(tmp_path, records, offset):
    """A function that puts a checkpoint of a store holding ``records`` (changelog offset ``offset``) into a
    directory: the files a snapshot download gives."""
    src = RocksDBBackend("counts", str(tmp_path / "snapshot-source"))
    src.write([(k, v) for _, k, v in records], offset)
    ckpt = str(tmp_path / "snapshot-checkpoint")
    Checkpoint(src._db).create_checkpoint(ckpt)
    src.close()

    def fill(into):
        shutil.copytree(ckpt, into, dirs_exist_ok=True)

    return fill


class SnapshotListener(RecordingListener):
    def on_snapshot_downloaded(self, partition, store_name, snapshot_offset, num_bytes, seconds):
        self.calls.append(("snapshot", partition, store_name, snapshot_offset, num_bytes, seconds))


def replay(records):
    out = {}
    for _, k, v in records:
        out[k] = v
    return out


@pytest.fixture
def staging(tmp_path):
    path = tmp_path / "staging"
    path.mkdir()
    return path


def test_a_snapshot_is_adopted_and_only_the_tail_is_replayed(tmp_path, staging, history, closing):
    records = changelog_records(10)
    task = make_task("rocksdb", tmp_path)
    closing.append(task)
    source = FakeSource(checkpoint_of(tmp_path, records[:6], 6), offset=6)
    listener = SnapshotListener()
    consumer = FakeRestoreConsumer({CHANGELOG: (0, 10)}, {CHANGELOG: records})
    u = make_updater(consumer, listener, source, staging)
    u._reader.start_actives([task])
    assert source.calls == [("counts", CHANGELOG, None)]
    assert consumer.positions == {CHANGELOG: 6}  # reading starts at the snapshot's offset
    run_until_idle(u, consumer)
    assert u.drain_restored() == [task]
    store = task.stores["counts"]
    assert store.backend.changelog_offset() == 10
    assert {k: v for k, v in store.backend.range(None, None)} == replay(records)
    assert store.restored_records == 4  # the tail only
    assert listener.calls[0] == ("snapshot", CHANGELOG, "counts", 6, 1234, 0.5)
    assert listener.calls[1] == ("start", CHANGELOG, "counts", 6, 10)
    assert listener.calls[-1] == ("end", CHANGELOG, "counts", 4)
    assert edges(history) == [(S.REGISTERED, S.DOWNLOADING), (S.DOWNLOADING, S.RESTORING),
                              (S.RESTORING, S.FLUSHING), (S.FLUSHING, S.COMPLETED)]
    assert list(staging.iterdir()) == []  # the download's directory is gone


def test_a_snapshot_at_the_changelog_end_completes_the_store(tmp_path, staging, history, closing):
    records = changelog_records(8)
    task = make_task("rocksdb", tmp_path)
    closing.append(task)
    consumer = FakeRestoreConsumer({CHANGELOG: (0, 8)}, {CHANGELOG: records})
    u = make_updater(consumer, source=FakeSource(checkpoint_of(tmp_path, records, 8), offset=8), staging=staging)
    u._reader.start_actives([task])
    assert u.drain_restored() == [task] and consumer.positions == {} and consumer.consume_calls == 0
    assert edges(history) == [(S.REGISTERED, S.DOWNLOADING), (S.DOWNLOADING, S.COMPLETED)]
    assert task.stores["counts"].backend.changelog_offset() == 8


def test_no_snapshot_falls_back_to_a_full_replay(tmp_path, staging, history, closing):
    records = changelog_records(7)
    task = make_task("rocksdb", tmp_path)
    closing.append(task)
    source = FakeSource()
    consumer = FakeRestoreConsumer({CHANGELOG: (0, 7)}, {CHANGELOG: records})
    u = make_updater(consumer, source=source, staging=staging)
    u._reader.start_actives([task])
    assert consumer.positions == {CHANGELOG: 0}
    run_until_idle(u, consumer)
    assert u.drain_restored() == [task] and task.stores["counts"].restored_records == 7
    assert edges(history)[:2] == [(S.REGISTERED, S.DOWNLOADING), (S.DOWNLOADING, S.RESTORING)]
    assert list(staging.iterdir()) == []


def test_a_failing_source_warns_and_the_store_never_sees_its_partial_files(tmp_path, staging, caplog, closing):
    records = changelog_records(7)
    task = make_task("rocksdb", tmp_path)
    closing.append(task)

    def half_a_download(into):
        (into / "CURRENT").write_bytes(b"MANIFEST-000009\n")
        (into / "000007.sst").write_bytes(b"\x00" * 100)

    source = FakeSource(half_a_download, offset=5, raises=ConnectionError("object store unreachable"))
    consumer = FakeRestoreConsumer({CHANGELOG: (0, 7)}, {CHANGELOG: records})
    u = make_updater(consumer, source=source, staging=staging)
    with caplog.at_level(logging.WARNING):
        u._reader.start_actives([task])
    assert consumer.positions == {CHANGELOG: 0}  # a full replay
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "fetching a snapshot failed" in warnings[0] and "unreachable" in warnings[0]
    assert not source.dirs[0].exists()  # the partial download is deleted
    backend = task.stores["counts"].backend
    assert not os.path.exists(os.path.join(backend.path, "000007.sst"))
    run_until_idle(u, consumer)
    assert u.drain_restored() == [task]
    assert backend.changelog_offset() == 7 and dict(backend.range(None, None)) == replay(records)


def test_unusable_snapshot_files_keep_the_local_state(tmp_path, staging, caplog, closing):
    """Files that are not a store (a corrupt download): refused before the store changes; the delta is read."""
    records = changelog_records(9)
    task = make_task("rocksdb", tmp_path, 4, [(k, v) for _, k, v in records[:4]])
    closing.append(task)

    def garbage(into):
        (into / "CURRENT").write_bytes(b"MANIFEST-000001\n")
        (into / "MANIFEST-000001").write_bytes(b"\x00not a manifest" * 8)

    source = FakeSource(garbage, offset=6)
    consumer = FakeRestoreConsumer({CHANGELOG: (0, 9)}, {CHANGELOG: records})
    u = make_updater(consumer, source=source, staging=staging)
    with caplog.at_level(logging.WARNING):
        u._reader.start_actives([task])
    assert source.calls == [("counts", CHANGELOG, 4)]  # the local state's offset
    assert consumer.positions == {CHANGELOG: 4}
    assert any("cannot be used" in r.getMessage() for r in caplog.records)
    run_until_idle(u, consumer)
    assert task.stores["counts"].restored_records == 5
    assert dict(task.stores["counts"].backend.range(None, None)) == replay(records)


def test_snapshot_files_that_hold_another_offset_wipe_the_store_and_restore_in_full(tmp_path, staging, caplog,
                                                                                   closing):
    records = changelog_records(9)
    task = make_task("rocksdb", tmp_path)
    closing.append(task)
    source = FakeSource(checkpoint_of(tmp_path, records[:3], 3), offset=6)  # says 6, holds 3
    consumer = FakeRestoreConsumer({CHANGELOG: (0, 9)}, {CHANGELOG: records})
    u = make_updater(consumer, source=source, staging=staging)
    with caplog.at_level(logging.WARNING):
        u._reader.start_actives([task])
    assert consumer.positions == {CHANGELOG: 0}
    assert any("adopting the snapshot's files failed" in r.getMessage() for r in caplog.records)
    run_until_idle(u, consumer)
    assert task.stores["counts"].restored_records == 9
    assert dict(task.stores["counts"].backend.range(None, None)) == replay(records)


@pytest.mark.parametrize("offset, local, why", [(12, None, "beyond the end"), (3, 5, "behind the local state"),
                                                (1, None, "below the changelog start")])
def test_a_snapshot_of_no_use_is_ignored(tmp_path, staging, caplog, closing, offset, local, why):
    records = changelog_records(10, start=2)
    data = [(k, v) for o, k, v in records if local is not None and o < local]
    task = make_task("rocksdb", tmp_path, local, data)
    closing.append(task)
    source = FakeSource(checkpoint_of(tmp_path, records[:1], offset), offset=offset)
    consumer = FakeRestoreConsumer({CHANGELOG: (2, 10)}, {CHANGELOG: records})
    u = make_updater(consumer, source=source, staging=staging)
    with caplog.at_level(logging.WARNING):
        u._reader.start_actives([task])
    start = 2 if local is None else local
    assert consumer.positions == {CHANGELOG: start}, why
    assert any("is of no use" in r.getMessage() for r in caplog.records)
    run_until_idle(u, consumer)
    assert dict(task.stores["counts"].backend.range(None, None)) == replay(records)


def test_a_standby_bootstraps_from_a_snapshot(tmp_path, staging, history, closing):
    records = changelog_records(10)
    task = make_task("rocksdb", tmp_path)
    closing.append(task)
    source = FakeSource(checkpoint_of(tmp_path, records[:7], 7), offset=7)
    consumer = StandbyConsumer({CHANGELOG: (0, 10)}, {CHANGELOG: records})
    u = make_updater(consumer, source=source, staging=staging)
    u.add_standby(task)
    u._handle_commands(wait_s=0)
    assert consumer.positions == {CHANGELOG: 7}
    assert u.standby_offsets() == {task.id: 7} and u.standby_lags() == {task.id: 3}
    step(u, consumer, rounds=2)
    assert task.stores["counts"].backend.changelog_offset() == 10
    assert dict(task.stores["counts"].backend.range(None, None)) == replay(records)
    assert edges(history) == [(S.REGISTERED, S.DOWNLOADING), (S.DOWNLOADING, S.UPDATING)]


def test_in_memory_stores_and_current_stores_never_ask_for_a_snapshot(tmp_path, staging, history, closing):
    memory = make_task("memory", tmp_path)
    current = make_task("rocksdb", tmp_path, 4, [(b"k", i64(1))], partition=1)
    closing.append(current)
    source = FakeSource(offset=3)
    consumer = FakeRestoreConsumer({CHANGELOG: (0, 3), CL1: (0, 4)}, {CHANGELOG: changelog_records(3)})
    u = make_updater(consumer, source=source, staging=staging)
    u._reader.start_actives([memory, current])
    assert source.calls == []
    assert S.DOWNLOADING not in {to for _, _, _, to in history}
    run_until_idle(u, consumer)
    assert {t.id for t in u.drain_restored()} == {memory.id, current.id}


def test_the_store_partitions_without_a_source_go_straight_to_reading(tmp_path, history, closing):
    task = make_task("rocksdb", tmp_path)
    closing.append(task)
    consumer = FakeRestoreConsumer({CHANGELOG: (0, 3)}, {CHANGELOG: changelog_records(3)})
    u = make_updater(consumer)
    u._reader.start_actives([task])
    assert edges(history) == [(S.REGISTERED, S.RESTORING)]


def test_an_unknown_staging_dir_warns_and_reads_the_changelog(tmp_path, caplog, closing):
    task = make_task("rocksdb", tmp_path)
    closing.append(task)
    source = FakeSource(offset=1)
    consumer = FakeRestoreConsumer({CHANGELOG: (0, 3)}, {CHANGELOG: changelog_records(3)})
    u = make_updater(consumer, source=source, staging=tmp_path / "missing")
    with caplog.at_level(logging.WARNING):
        u._reader.start_actives([task])
    assert source.calls == [] and consumer.positions == {CHANGELOG: 0} and u.drain_failed() == []
    assert any("fetching a snapshot failed" in r.getMessage() for r in caplog.records)


def test_the_same_changelog_is_never_read_twice(tmp_path):
    a = make_task("memory", tmp_path)
    b = make_task("memory", tmp_path)  # another task object over the same changelog partition
    b.id = "9_0"
    consumer = FakeRestoreConsumer({CHANGELOG: (0, 5)}, {CHANGELOG: changelog_records(5)})
    u = make_updater(consumer)
    u._reader.start_actives([a, b])
    [(failed, exc)] = u.drain_failed()
    assert failed is b and isinstance(exc, IllegalStateTransition) and "read already" in str(exc)
    assert u.restoring_task_ids() == [a.id]
