"""The state updater without a broker: the restore-range decision and a full restore, driven step by step
with a fake restore consumer. The updater's thread is never started."""
from __future__ import annotations

import logging
import struct
import threading
import time
from concurrent.futures import Future

import pytest
from confluent_kafka import TopicPartition as KTopicPartition

from hotstate import serde
from hotstate.config import Config
from hotstate.dsl.nodes import SourceNode
from hotstate.dsl.topology import SubTopology
from hotstate.observe.listener import RestoreListener
from hotstate.observe.metrics import Metrics
from hotstate.records import TopicPartition
from hotstate.runtime.changelog_reader import ChangelogState, Mode
from hotstate.runtime.state_updater import StateUpdater
from hotstate.runtime.task import Task, TaskState, TaskStore
from hotstate.state.memory_store import MemoryBackend
from hotstate.state.overlay import Overlay
from hotstate.state.rocksdb_store import RocksDBBackend
from hotstate.state.store import KeyValueStore, StoreSpec
from unit_support import FakeMsg

CHANGELOG = TopicPartition("app-counts-changelog", 0)


def i64(n: int) -> bytes:
    return struct.pack(">q", n)


class FakeRestoreConsumer:
    """Manual assignment; ``consume`` hands out records from each assigned partition's position. Once a
    partition's records are exhausted its position jumps to ``end_position`` (Kafka skips transaction
    markers and compacted-away offsets the same way)."""

    def __init__(self, watermarks, records=None, end_positions=None):
        self.watermarks = watermarks                    # (topic, partition) -> (low, high)
        self.records = records or {}                    # (topic, partition) -> [(offset, key, value)]
        self.end_positions = end_positions or {}
        self.positions: dict[tuple[str, int], int] = {}
        self.watermark_calls = []
        self.consume_calls = 0
        self.metadata_requests = []  # list_topics(topic) calls
        self.consume_counts = []  # num_messages of each consume call

    def get_watermark_offsets(self, ktp, timeout=None, cached=True):
        self.watermark_calls.append(((ktp.topic, ktp.partition), cached))
        return self.watermarks[(ktp.topic, ktp.partition)]

    def incremental_assign(self, ktps):
        for k in ktps:
            self.positions[(k.topic, k.partition)] = k.offset

    def list_topics(self, topic=None, timeout=-1):
        self.metadata_requests.append(topic)

    def incremental_unassign(self, ktps):
        for k in ktps:
            del self.positions[(k.topic, k.partition)]

    def consume(self, num_messages, timeout):
        self.consume_calls += 1
        self.consume_counts.append(num_messages)
        out = []
        for tp, pos in list(self.positions.items()):
            pending = [r for r in self.records.get(tp, []) if r[0] >= pos]
            for off, k, v in pending[:num_messages - len(out)]:
                out.append(FakeMsg(tp[0], tp[1], off, k, v))
                self.positions[tp] = off + 1
            if len(out) >= num_messages:
                break
            if tp in self.end_positions:
                self.positions[tp] = max(self.positions[tp], self.end_positions[tp])
        return out

    def position(self, ktps):
        return [KTopicPartition(k.topic, k.partition, self.positions[(k.topic, k.partition)]) for k in ktps]

    def close(self):
        pass


class RecordingListener(RestoreListener):
    def __init__(self):
        self.calls = []

    def on_restore_start(self, partition, store_name, start_offset, end_offset):
        self.calls.append(("start", partition, store_name, start_offset, end_offset))

    def on_batch_restored(self, partition, store_name, batch_end_offset, num_restored):
        self.calls.append(("batch", partition, store_name, batch_end_offset, num_restored))

    def on_restore_end(self, partition, store_name, total_restored):
        self.calls.append(("end", partition, store_name, total_restored))


def make_task(kind, tmp_path, stored_offset=None, data=(), partition=0):
    spec = StoreSpec("counts", serde.STRING, serde.INT64, kind)
    path = str(tmp_path / f"0_{partition}" / "counts")

    def reopen():
        return MemoryBackend("counts") if kind == "memory" else RocksDBBackend("counts", path)

    backend = reopen()
    if stored_offset is not None:
        backend.write(list(data), stored_offset)
    overlay = Overlay(backend)
    ts = TaskStore(spec, TopicPartition(CHANGELOG.topic, partition), backend, overlay,
                   KeyValueStore(spec, overlay), reopen)
    task = Task(SubTopology(0, [SourceNode("in", serde.STRING, serde.STRING)]), partition, {"counts": ts})
    task.transition(TaskState.RESTORING)
    return task


def make_updater(consumer=None, listener=None, **cfg):
    config = Config.from_kwargs(app_id="app", bootstrap_servers="127.0.0.1:1", **cfg)

    def factory():
        raise AssertionError("unit tests never start the updater's thread")

    u = StateUpdater(config, factory, listener, Metrics())
    u._reader.consumer = consumer
    return u


def reader_states(updater):
    """{changelog partition: its ChangelogState} of what the updater's reader works on."""
    return {tp: p.state for tp, p in updater._reader.partitions().items()}


def active_in(updater, state):
    return [tp for tp, p in updater._reader.partitions().items() if p.mode is Mode.ACTIVE and p.state is state]


@pytest.fixture(params=["memory", "rocksdb"])
def kind(request):
    return request.param


@pytest.fixture
def tasks_to_close():
    tasks = []
    yield tasks
    for t in tasks:
        for s in t.stores.values():
            s.backend.close()


# ---- _plan_range: which part of the changelog to replay ----

def plan_range(consumer, task, store):
    r = make_updater(consumer)._reader._plan_range(task, store)
    return r.start, r.end


@pytest.mark.parametrize("low, high", [(0, 0), (0, 10), (5, 10)])
def test_no_stored_offset_starts_at_low(kind, tmp_path, tasks_to_close, low, high):
    task = make_task(kind, tmp_path)
    tasks_to_close.append(task)
    consumer = FakeRestoreConsumer({CHANGELOG: (low, high)})
    assert plan_range(consumer, task, task.stores["counts"]) == (low, high)
    assert consumer.watermark_calls == [(CHANGELOG, False)]  # fresh watermarks, never cached ones


@pytest.mark.parametrize("stored", [5, 7, 10])
def test_stored_offset_within_range_is_kept(kind, tmp_path, tasks_to_close, caplog, stored):
    task = make_task(kind, tmp_path, stored, [(b"a", i64(1))])
    tasks_to_close.append(task)
    store = task.stores["counts"]
    backend = store.backend
    consumer = FakeRestoreConsumer({CHANGELOG: (5, 10)})
    with caplog.at_level(logging.WARNING):
        assert plan_range(consumer, task, store) == (stored, 10)
    assert store.backend is backend
    assert store.view.get("a") == 1
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


@pytest.mark.parametrize("stored, low, high, why", [
    (11, 0, 10, "beyond the changelog end"),
    (500, 3, 4, "beyond the changelog end"),
    (1, 0, 0, "beyond the changelog end"),   # changelog recreated empty
    (4, 5, 10, "below the changelog start"),
    (0, 1, 1, "below the changelog start"),
])
def test_unusable_stored_offset_wipes_store_and_starts_at_low(kind, tmp_path, tasks_to_close, caplog,
                                                              stored, low, high, why):
    task = make_task(kind, tmp_path, stored, [(b"a", i64(1))])
    tasks_to_close.append(task)
    store = task.stores["counts"]
    old = store.backend
    consumer = FakeRestoreConsumer({CHANGELOG: (low, high)})
    with caplog.at_level(logging.WARNING, logger="hotstate.runtime.state_updater"):
        assert plan_range(consumer, task, store) == (low, high)
    assert store.backend is old  # reset in place: whoever holds the backend sees it empty
    assert store.overlay.backend is store.backend
    assert store.backend.changelog_offset() is None
    assert store.backend.get(b"a") is None
    assert store.view.get("a") is None
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert why in warnings[0] and "wiping" in warnings[0] and str(stored) in warnings[0]


def test_wipe_survives_reopen_for_rocksdb(tmp_path, tasks_to_close):
    task = make_task("rocksdb", tmp_path, 50, [(b"a", i64(1))])
    tasks_to_close.append(task)
    store = task.stores["counts"]
    consumer = FakeRestoreConsumer({CHANGELOG: (0, 10)})
    plan_range(consumer, task, store)
    store.backend.close()
    again = store.reopen()
    try:
        assert again.changelog_offset() is None and again.get(b"a") is None
    finally:
        again.close()


# ---- a whole restore, step by step ----

def run_until_idle(updater, consumer, max_rounds=50, flush_wait_s=10):
    """Restore rounds until every partition is read to its end, then wait for the stores' flushes."""
    for _ in range(max_rounds):
        if not active_in(updater, ChangelogState.RESTORING):
            break
        updater._reader.restore_round()
    else:
        raise AssertionError("restore did not finish")
    deadline = time.monotonic() + flush_wait_s
    while active_in(updater, ChangelogState.FLUSHING):
        if time.monotonic() > deadline:
            raise AssertionError("restored stores were not flushed")
        time.sleep(0.005)
        updater._reader.check_flushed()


def changelog_records(n, start=0):
    return [(o, f"k{o % 3}".encode(), i64(o)) for o in range(start, n)]


def test_full_restore_from_empty_store(kind, tmp_path, tasks_to_close):
    task = make_task(kind, tmp_path)
    tasks_to_close.append(task)
    listener = RecordingListener()
    consumer = FakeRestoreConsumer({CHANGELOG: (0, 5)}, {CHANGELOG: changelog_records(5)})
    u = make_updater(consumer, listener, restore_batch_records_max=2, restore_consume_records_max=3)
    u.add(task)
    u._handle_commands(wait_s=0)
    assert consumer.positions == {CHANGELOG: 0}
    assert u.restoring_task_ids() == [task.id]
    run_until_idle(u, consumer)
    store = task.stores["counts"]
    assert store.backend.changelog_offset() == 5
    assert dict(store.view.all()) == {"k0": 3, "k1": 4, "k2": 2}
    assert store.restored_records == 5
    assert consumer.positions == {}  # unassigned when done
    assert u.drain_restored() == [task] and u.drain_restored() == []
    assert u.drain_failed() == []
    assert u.restoring_task_ids() == []
    # consume returns 3 then 2 records; each is written in batches of at most 2
    assert listener.calls == [
        ("start", CHANGELOG, "counts", 0, 5),
        ("batch", CHANGELOG, "counts", 1, 2), ("batch", CHANGELOG, "counts", 2, 1),
        ("batch", CHANGELOG, "counts", 4, 2),
        ("end", CHANGELOG, "counts", 5),
    ]
    assert u._metrics.restore_records_total == 5
    m = u._metrics.restores["0_0/counts"]
    assert m.restore_records_total == 5 and m.restore_remaining_records == 0 and m.ended_at_s is not None


def test_clean_restart_replays_only_the_delta(kind, tmp_path, tasks_to_close):
    task = make_task(kind, tmp_path, 3, [(b"k0", i64(0)), (b"k1", i64(1)), (b"k2", i64(2))])
    tasks_to_close.append(task)
    listener = RecordingListener()
    consumer = FakeRestoreConsumer({CHANGELOG: (0, 6)}, {CHANGELOG: changelog_records(6)})
    u = make_updater(consumer, listener)
    u._reader.start_actives([task])
    run_until_idle(u, consumer)
    assert task.stores["counts"].restored_records == 3
    assert listener.calls[0] == ("start", CHANGELOG, "counts", 3, 6)
    assert listener.calls[-1] == ("end", CHANGELOG, "counts", 3)
    assert dict(task.stores["counts"].view.all()) == {"k0": 3, "k1": 4, "k2": 5}
    assert task.stores["counts"].backend.changelog_offset() == 6


def test_up_to_date_store_is_restored_at_once(kind, tmp_path, tasks_to_close):
    task = make_task(kind, tmp_path, 6, [(b"a", i64(1))])
    tasks_to_close.append(task)
    listener = RecordingListener()
    consumer = FakeRestoreConsumer({CHANGELOG: (0, 6)})
    u = make_updater(consumer, listener)
    u._reader.start_actives([task])
    assert consumer.positions == {} and consumer.consume_calls == 0
    assert u.drain_restored() == [task]
    assert task.stores["counts"].restored_records == 0
    assert listener.calls == []


def test_end_past_last_record_moves_offset_to_position(kind, tmp_path, tasks_to_close):
    # records 0..1 exist, offsets 2..3 are markers or compacted away: the store must end at 4, not 2
    task = make_task(kind, tmp_path)
    tasks_to_close.append(task)
    consumer = FakeRestoreConsumer({CHANGELOG: (0, 4)}, {CHANGELOG: changelog_records(2)},
                                   end_positions={CHANGELOG: 4})
    u = make_updater(consumer)
    u._reader.start_actives([task])
    run_until_idle(u, consumer)
    assert task.stores["counts"].backend.changelog_offset() == 4
    assert task.stores["counts"].restored_records == 2


def test_wiped_store_restores_from_low(kind, tmp_path, tasks_to_close):
    task = make_task(kind, tmp_path, 99, [(b"stale", i64(1))])
    tasks_to_close.append(task)
    consumer = FakeRestoreConsumer({CHANGELOG: (2, 5)}, {CHANGELOG: changelog_records(5, start=2)})
    u = make_updater(consumer)
    u._reader.start_actives([task])
    run_until_idle(u, consumer)
    store = task.stores["counts"]
    assert store.view.get("stale") is None
    assert dict(store.view.all()) == {"k0": 3, "k1": 4, "k2": 2}
    assert store.backend.changelog_offset() == 5


def test_restored_state_persists_for_rocksdb(tmp_path, tasks_to_close):
    task = make_task("rocksdb", tmp_path)
    consumer = FakeRestoreConsumer({CHANGELOG: (0, 5)}, {CHANGELOG: changelog_records(5)})
    u = make_updater(consumer)
    u._reader.start_actives([task])
    run_until_idle(u, consumer)
    task.close_stores()
    b = task.stores["counts"].reopen()
    try:
        assert b.changelog_offset() == 5 and b.get(b"k1") == i64(4)
    finally:
        b.close()


def test_two_tasks_restore_side_by_side(tmp_path, tasks_to_close):
    t0, t1 = make_task("memory", tmp_path, partition=0), make_task("memory", tmp_path, partition=1)
    cl1 = TopicPartition(CHANGELOG.topic, 1)
    consumer = FakeRestoreConsumer({CHANGELOG: (0, 3), cl1: (0, 1)},
                                   {CHANGELOG: changelog_records(3), cl1: changelog_records(1)})
    u = make_updater(consumer)
    u._reader.start_actives([t0, t1])
    assert set(consumer.positions) == {CHANGELOG, cl1}
    run_until_idle(u, consumer)
    assert {t.id for t in u.drain_restored()} == {"0_0", "0_1"}
    assert t0.stores["counts"].backend.changelog_offset() == 3
    assert t1.stores["counts"].backend.changelog_offset() == 1


def test_remove_restoring_task(kind, tmp_path, tasks_to_close):
    task = make_task(kind, tmp_path)
    tasks_to_close.append(task)
    consumer = FakeRestoreConsumer({CHANGELOG: (0, 5)}, {CHANGELOG: changelog_records(5)})
    u = make_updater(consumer, restore_consume_records_max=2)
    u._reader.start_actives([task])
    u._reader.restore_round()
    fut = Future()
    u._remove_task(task.id, fut)
    assert fut.result(timeout=0) is task
    assert consumer.positions == {}
    assert u.restoring_task_ids() == [] and reader_states(u) == {}
    assert u.drain_restored() == []
    assert task.stores["counts"].backend.changelog_offset() == 2  # what was restored so far stays


def test_remove_already_restored_task_takes_it_back(tmp_path):
    task = make_task("memory", tmp_path, 5)
    consumer = FakeRestoreConsumer({CHANGELOG: (0, 5)})
    u = make_updater(consumer)
    u._reader.start_actives([task])
    fut = Future()
    u._remove_task(task.id, fut)
    assert fut.result(timeout=0) is task
    assert u.drain_restored() == []


def test_remove_unknown_task_resolves_to_none(tmp_path):
    u = make_updater(FakeRestoreConsumer({}))
    fut = Future()
    u._remove_task("9_9", fut)
    assert fut.result(timeout=0) is None


def test_remove_without_a_running_thread_never_blocks(tmp_path):
    u = make_updater(FakeRestoreConsumer({}))
    u._reader.start_actives([make_task("memory", tmp_path)])
    assert u.remove("0_0").result(timeout=0) is None


def test_failing_watermark_lookup_fails_the_task(tmp_path):
    class Broken(FakeRestoreConsumer):
        def get_watermark_offsets(self, *a, **kw):
            raise RuntimeError("broker gone")

    task = make_task("memory", tmp_path)
    u = make_updater(Broken({}))
    u._reader.start_actives([task])
    failed = u.drain_failed()
    assert [(t, str(e)) for t, e in failed] == [(task, "broker gone")]
    assert u.drain_restored() == [] and u.restoring_task_ids() == []


def test_tasks_added_in_one_call_start_together(tmp_path, tasks_to_close):
    """StateUpdater.add(*tasks) is one command: however early the thread takes it, the tasks start in one
    start_actives (one assign call, their snapshot downloads at once), not the first alone."""
    tasks = [make_task("memory", tmp_path, partition=p) for p in (0, 1, 2)]
    changelogs = {TopicPartition(CHANGELOG.topic, p): (0, 2) for p in (0, 1, 2)}
    consumer = FakeRestoreConsumer(changelogs, {tp: changelog_records(2) for tp in changelogs})
    u = make_updater(consumer)
    started = []
    start_actives = u._reader.start_actives
    u._reader.start_actives = lambda ts: (started.append([t.id for t in ts]), start_actives(ts))
    u.add(*tasks)
    u._handle_commands(wait_s=0)
    assert started == [["0_0", "0_1", "0_2"]]
    assert sorted(u.restoring_task_ids()) == ["0_0", "0_1", "0_2"]


def test_assigning_changelogs_asks_for_their_leaders_at_once(tmp_path, tasks_to_close):
    """librdkafka fetches a newly assigned partition of a topic it knows nothing of only after its next topic
    scan (up to 1 s): the reader asks for the leaders right after the assign, once per topic; a task with
    nothing to restore assigns nothing and asks nothing."""
    tasks = [make_task("memory", tmp_path, partition=p) for p in (0, 1)]
    changelogs = {TopicPartition(CHANGELOG.topic, p): (0, 2) for p in (0, 1)}
    consumer = FakeRestoreConsumer(changelogs, {tp: changelog_records(2) for tp in changelogs})
    u = make_updater(consumer)
    u._reader.start_actives(tasks)
    assert consumer.metadata_requests == [CHANGELOG.topic]
    current = make_task("memory", tmp_path, stored_offset=2, partition=2)
    consumer.watermarks[(CHANGELOG.topic, 2)] = (0, 2)
    u._reader.start_actives([current])
    assert consumer.metadata_requests == [CHANGELOG.topic] and u.drain_restored() == [current]


def test_a_restore_asks_for_no_more_records_than_its_partitions_have_left(tmp_path, tasks_to_close):
    """librdkafka's consume waits for the whole count: a count above what is left made the last round of every
    restore wait CONSUME_WAIT_S for records that cannot come."""
    tasks = [make_task("memory", tmp_path, partition=p) for p in (0, 1)]
    ends = {0: 5, 1: 4}
    changelogs = {TopicPartition(CHANGELOG.topic, p): (0, ends[p]) for p in (0, 1)}
    consumer = FakeRestoreConsumer(changelogs, {tp: changelog_records(ends[tp.partition]) for tp in changelogs})
    u = make_updater(consumer, restore_consume_records_max=6)
    u._reader.start_actives(tasks)
    run_until_idle(u, consumer)
    assert consumer.consume_counts == [6, 3]  # 9 left, at most 6; then 3 left
    assert sorted(t.id for t in u.drain_restored()) == ["0_0", "0_1"]


def test_a_restored_or_failed_task_wakes_a_waiting_processing_thread(tmp_path, tasks_to_close):
    """The processing thread, with nothing to process, waits in wait_for_outcome instead of the main consumer:
    a hand-over ends the wait at once, and each one is reported once."""
    task = make_task("rocksdb", tmp_path)
    tasks_to_close.append(task)
    consumer = FakeRestoreConsumer({CHANGELOG: (0, 3)}, {CHANGELOG: changelog_records(3)})
    u = make_updater(consumer)
    assert u.wait_for_outcome(0) is False
    waited: list[float] = []
    waiter = threading.Thread(target=lambda: (t := time.monotonic(), u.wait_for_outcome(30),
                                              waited.append(time.monotonic() - t)))
    waiter.start()
    u._reader.start_actives([task])
    run_until_idle(u, consumer)
    waiter.join(10)
    assert waited and waited[0] < 5
    assert u.drain_restored() == [task]
    assert u.wait_for_outcome(0) is False  # reported once

    class Broken(FakeRestoreConsumer):
        def get_watermark_offsets(self, *a, **kw):
            raise RuntimeError("broker gone")

    failing = make_task("memory", tmp_path, partition=1)
    u = make_updater(Broken({}))
    u._reader.start_actives([failing])
    assert u.wait_for_outcome(0) is True and [t for t, _ in u.drain_failed()] == [failing]


def test_listener_exceptions_do_not_fail_the_restore(tmp_path, caplog):
    class Raising(RestoreListener):
        def on_restore_start(self, *a):
            raise ValueError("listener bug")

        def on_batch_restored(self, *a):
            raise ValueError("listener bug")

    task = make_task("memory", tmp_path)
    consumer = FakeRestoreConsumer({CHANGELOG: (0, 2)}, {CHANGELOG: changelog_records(2)})
    u = make_updater(consumer, Raising())
    with caplog.at_level(logging.ERROR):
        u._reader.start_actives([task])
        run_until_idle(u, consumer)
    assert u.drain_restored() == [task]
    assert any("listener bug" in (r.exc_text or "") or "Raising" in r.getMessage() for r in caplog.records)


def test_add_then_remove_in_one_batch_keeps_their_order(tmp_path):
    task = make_task("memory", tmp_path)
    consumer = FakeRestoreConsumer({CHANGELOG: (0, 5)}, {CHANGELOG: changelog_records(5)})
    u = make_updater(consumer)
    fut = Future()
    u.add(task)
    u._commands.put(("remove", task.id, fut))  # what remove() queues while the thread runs
    u._handle_commands(wait_s=0)
    assert fut.result(timeout=0) is task
    assert u.restoring_task_ids() == [] and consumer.positions == {}
