"""The restore fast path without a broker: records go straight into native batches per run of a partition,
RocksDB restores big changelogs with bulk-load options, and a task is handed over only once its stores'
restored data is flushed."""
from __future__ import annotations

import logging

from concurrent.futures import Future

import pytest
from confluent_kafka import KafkaError, KafkaException

from hotstate.records import TopicPartition
from hotstate.runtime.task import TaskStore
from hotstate.state.memory_store import MemoryBackend
from hotstate.state.overlay import Overlay
from hotstate.state.rocksdb_store import RocksDBBackend
from hotstate.state.store import KeyValueStore, StoreSpec
from test_state_updater import (CHANGELOG, FakeRestoreConsumer, RecordingListener, changelog_records, i64,
                                make_task, make_updater, run_until_idle)
from unit_support import FakeMsg

OTHER = TopicPartition("app-other-changelog", 0)


@pytest.fixture
def bulk_from_one(monkeypatch):
    """Every RocksDB restore uses the bulk-load options, however small."""
    monkeypatch.setattr(RocksDBBackend, "BULK_RESTORE_RECORDS_MIN", 1)


def test_bulk_restore_is_durable_and_ends_in_processing_mode(tmp_path, bulk_from_one):
    task = make_task("rocksdb", tmp_path)
    consumer = FakeRestoreConsumer({CHANGELOG: (0, 50)}, {CHANGELOG: changelog_records(50)})
    u = make_updater(consumer, restore_batch_records_max=7, restore_consume_records_max=20)
    u._reader.start_actives([task])
    backend = task.stores["counts"].backend
    assert backend._bulk  # switched when the restore began
    run_until_idle(u, consumer)
    assert u.drain_restored() == [task]
    assert not backend._bulk and not backend._restoring
    assert backend.changelog_offset() == 50 and backend.get(b"k1") == i64(49)
    task.stores["counts"].view.put("new", 1)  # the processing path writes through the WAL again
    backend.write([(b"new", i64(1))], 51)
    task.close_stores()
    again = task.stores["counts"].reopen()
    try:
        assert again.changelog_offset() == 51
        assert again.get(b"k0") == i64(48) and again.get(b"k2") == i64(47) and again.get(b"new") == i64(1)
    finally:
        again.close()


def test_small_restore_keeps_processing_options(tmp_path):
    task = make_task("rocksdb", tmp_path)
    consumer = FakeRestoreConsumer({CHANGELOG: (0, 5)}, {CHANGELOG: changelog_records(5)})
    u = make_updater(consumer)
    u._reader.start_actives([task])
    assert not task.stores["counts"].backend._bulk
    run_until_idle(u, consumer)
    assert u.drain_restored() == [task]
    task.close_stores()


class SlowFlushBackend:
    """Wraps a backend; its restore flush finishes only when the test says so."""

    def __init__(self, inner):
        self._inner = inner
        self.flush_done = False
        self.flush_requested = False
        self.ended = 0

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def request_restore_flush(self):
        self.flush_requested = True

    def restore_flushed(self):
        return self.flush_done

    def end_restore(self):
        self.ended += 1
        self._inner.end_restore()


def test_task_is_handed_over_only_after_its_flush(tmp_path):
    task = make_task("memory", tmp_path)
    store = task.stores["counts"]
    store.backend = SlowFlushBackend(store.backend)
    listener = RecordingListener()
    consumer = FakeRestoreConsumer({CHANGELOG: (0, 5)}, {CHANGELOG: changelog_records(5)})
    u = make_updater(consumer, listener)
    u._reader.start_actives([task])
    u._reader.restore_round()
    assert store.backend.flush_requested and consumer.positions == {}  # read to the end, unassigned
    assert u.drain_restored() == [] and listener.calls[-1][0] == "batch"
    u._reader.check_flushed()
    assert u.drain_restored() == []
    store.backend.flush_done = True
    u._reader.check_flushed()
    assert u.drain_restored() == [task]
    assert store.backend.ended == 1
    assert listener.calls[-1] == ("end", CHANGELOG, "counts", 5)
    assert store.restored_records == 5 and store.backend.changelog_offset() == 5


def test_remove_while_flushing_returns_the_task(tmp_path):
    task = make_task("memory", tmp_path)
    store = task.stores["counts"]
    store.backend = SlowFlushBackend(store.backend)
    consumer = FakeRestoreConsumer({CHANGELOG: (0, 5)}, {CHANGELOG: changelog_records(5)})
    u = make_updater(consumer)
    u._reader.start_actives([task])
    u._reader.restore_round()
    fut = Future()
    u._remove_task(task.id, fut)  # the partition is already unassigned: no second unassign
    assert fut.result(timeout=0) is task
    assert u._reader.partitions() == {} and u.restoring_task_ids() == [] and u.drain_restored() == []
    assert store.backend.ended == 1


def two_store_updater(tmp_path, **cfg):
    t0 = make_task("memory", tmp_path, partition=0)
    t1 = make_task("memory", tmp_path, partition=1)
    # a second store on t1, with another changelog topic but the same partition number as t0's
    counts = t0.stores["counts"]
    spec = StoreSpec("other", counts.spec.key_serde, counts.spec.value_serde, "memory")
    backend = MemoryBackend("other")
    overlay = Overlay(backend)
    t0.stores["other"] = TaskStore(spec, OTHER, backend, overlay, KeyValueStore(spec, overlay),
                                   lambda: MemoryBackend("other"))
    cl1 = TopicPartition(CHANGELOG.topic, 1)
    consumer = FakeRestoreConsumer({CHANGELOG: (0, 100), cl1: (0, 100), OTHER: (0, 100)})
    u = make_updater(consumer, **cfg)
    u._reader.start_actives([t0, t1])
    return u, t0, t1, cl1


def test_runs_of_interleaved_partitions_and_topics_reach_their_stores(tmp_path):
    listener = RecordingListener()
    u, t0, t1, cl1 = two_store_updater(tmp_path, restore_batch_records_max=2)
    u._reader._listener._inner = listener
    msgs = [FakeMsg(CHANGELOG.topic, 0, 0, b"a", i64(1)), FakeMsg(CHANGELOG.topic, 0, 1, b"b", i64(2)),
            FakeMsg(CHANGELOG.topic, 0, 2, b"c", i64(3)),  # a batch is full after 2 records
            FakeMsg(OTHER.topic, 0, 0, b"a", i64(10)),  # same partition number, other topic
            FakeMsg(CHANGELOG.topic, 1, 0, b"z", i64(7)),
            FakeMsg(CHANGELOG.topic, 0, 3, b"a", None),  # a tombstone
            FakeMsg("app-revoked-changelog", 0, 9, b"x", i64(9))]  # no longer restoring: skipped
    u._reader._apply(msgs)
    assert dict(t0.stores["counts"].backend._data) == {b"b": i64(2), b"c": i64(3)}
    assert t0.stores["counts"].backend.changelog_offset() == 4
    assert dict(t0.stores["other"].backend._data) == {b"a": i64(10)}
    assert t0.stores["other"].backend.changelog_offset() == 1
    assert dict(t1.stores["counts"].backend._data) == {b"z": i64(7)}
    assert [c for c in listener.calls if c[0] == "batch"] == [
        ("batch", CHANGELOG, "counts", 1, 2), ("batch", CHANGELOG, "counts", 2, 1),
        ("batch", OTHER, "other", 0, 1), ("batch", cl1, "counts", 0, 1), ("batch", CHANGELOG, "counts", 3, 1)]
    m = u._metrics.restores["0_0/counts"]
    assert m.restore_records_total == 4 and m.restore_remaining_records == 96


def test_fatal_error_events_raise_transient_ones_and_end_of_partition_events_are_skipped(tmp_path, caplog):
    """A broker restarting gives transient error events (transport, leader moved): librdkafka retries, so the
    restore goes on (they used to fail the state updater); a fatal error or a keyless record still raises."""
    u, t0, _, _ = two_store_updater(tmp_path)

    class Err:
        def __init__(self, code):
            self._code = code

        def code(self):
            return self._code

    eof = FakeMsg(CHANGELOG.topic, 0, 0, None, None, error=Err(KafkaError._PARTITION_EOF))
    u._reader._apply([eof, FakeMsg(CHANGELOG.topic, 0, 0, b"a", i64(1))])
    assert t0.stores["counts"].backend.changelog_offset() == 1
    transient = FakeMsg(CHANGELOG.topic, 0, 1, None, None, error=KafkaError(KafkaError._TRANSPORT))
    with caplog.at_level(logging.WARNING):
        u._reader._apply([transient, transient, FakeMsg(CHANGELOG.topic, 0, 1, b"b", i64(2))])
    assert t0.stores["counts"].backend.changelog_offset() == 2 and t0.stores["counts"].backend.get(b"b") == i64(2)
    assert sum("restore consumer" in r.getMessage() for r in caplog.records) == 1  # rate-limited
    with pytest.raises(KafkaException):
        u._reader._apply([FakeMsg(CHANGELOG.topic, 0, 2, None, None, error=KafkaError(KafkaError._FATAL, fatal=True))])
    with pytest.raises(RuntimeError, match="without a key"):
        u._reader._apply([FakeMsg(CHANGELOG.topic, 0, 1, None, i64(1))])


def test_failing_restore_switch_fails_only_its_task(tmp_path):
    ok, bad = make_task("memory", tmp_path, partition=0), make_task("memory", tmp_path, partition=1)
    store = bad.stores["counts"]

    class Broken(SlowFlushBackend):
        def begin_restore(self, records):
            raise RuntimeError("cannot reopen")

    store.backend = Broken(store.backend)
    cl1 = TopicPartition(CHANGELOG.topic, 1)
    consumer = FakeRestoreConsumer({CHANGELOG: (0, 3), cl1: (0, 3)},
                                   {CHANGELOG: changelog_records(3), cl1: changelog_records(3)})
    u = make_updater(consumer)
    u._reader.start_actives([ok, bad])
    assert [(t, str(e)) for t, e in u.drain_failed()] == [(bad, "cannot reopen")]
    assert set(consumer.positions) == {CHANGELOG}
    run_until_idle(u, consumer)
    assert u.drain_restored() == [ok]


def test_ending_a_bulk_restore_persists_the_offset_without_a_rewrite(tmp_path, bulk_from_one, caplog):
    task = make_task("rocksdb", tmp_path)
    consumer = FakeRestoreConsumer({CHANGELOG: (0, 30)}, {CHANGELOG: changelog_records(30)})
    u = make_updater(consumer, restore_batch_records_max=4)
    u._reader.start_actives([task])
    with caplog.at_level("WARNING", logger="hotstate.state.rocksdb_store"):
        run_until_idle(u, consumer)
    assert not [r for r in caplog.records if "did not reach disk" in r.getMessage()]
    task.close_stores()
    again = task.stores["counts"].reopen()
    try:
        assert again.changelog_offset() == 30 and again.get(b"k2") == i64(29)
    finally:
        again.close()
