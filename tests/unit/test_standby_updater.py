"""Standby tasks in the state updater, without a broker: tailing from the stored offset, the standby listener,
remove_standby, the pause while active tasks restore, refusing a task that would be active and standby at once,
lags, flushes (checked on RocksDB's crash view: a read-only open sees what a kill -9 would leave) and errors.
The updater's thread is driven step by step, except in the last test."""
from __future__ import annotations

import threading
import time

import pytest
from confluent_kafka import KafkaError
from confluent_kafka import TopicPartition as KTopicPartition
from rocksdict import AccessType, Options, Rdict

from hotstate.config import Config
from hotstate.errors import IllegalStateTransition
from hotstate.observe.listener import StandbyUpdateListener, SuspendReason
from hotstate.observe.metrics import Metrics
from hotstate.records import TopicPartition
from hotstate.runtime.changelog_reader import ChangelogState, Mode
from hotstate.runtime.state_updater import StateUpdater
from hotstate.state.rocksdb_store import META_CF
from test_state_updater import CHANGELOG, FakeRestoreConsumer, changelog_records, i64, make_task, run_until_idle
from unit_support import FakeMsg

CL1 = TopicPartition(CHANGELOG.topic, 1)


class StandbyConsumer(FakeRestoreConsumer):
    """The restore fake plus what standbys use, behaving as librdkafka does: a paused partition returns no
    records and gets no fetch responses (its cached high watermark goes stale), and a pause outlives
    unassign + assign."""

    def __init__(self, watermarks, records=None, end_positions=None):
        super().__init__(watermarks, records, end_positions)
        self.paused: set[tuple[str, int]] = set()
        self.fetched_high: dict[tuple[str, int], int] = {}
        self.offsets_for_times_calls = 0
        self.unassigned_while_paused: list[tuple[str, int]] = []

    def pause(self, ktps):
        self.paused.update((k.topic, k.partition) for k in ktps)

    def resume(self, ktps):
        self.paused.difference_update((k.topic, k.partition) for k in ktps)

    def incremental_unassign(self, ktps):
        self.unassigned_while_paused += [(k.topic, k.partition) for k in ktps if (k.topic, k.partition) in self.paused]
        super().incremental_unassign(ktps)

    def consume(self, num_messages, timeout):
        hidden = {tp: self.positions.pop(tp) for tp in list(self.positions) if tp in self.paused}
        try:
            out = super().consume(num_messages, timeout)
            for tp in self.positions:  # a fetch response carries the high watermark
                self.fetched_high[tp] = self.watermarks[tp][1]
        finally:
            self.positions.update(hidden)
        if not out:
            time.sleep(min(timeout, 0.002))
        return out

    def get_watermark_offsets(self, ktp, timeout=None, cached=True):
        tp = (ktp.topic, ktp.partition)
        if cached:
            self.watermark_calls.append((tp, True))
            return self.watermarks[tp][0], self.fetched_high.get(tp, -1001)
        return super().get_watermark_offsets(ktp, timeout, cached)

    def offsets_for_times(self, ktps, timeout=None):
        self.offsets_for_times_calls += 1
        assert all(k.offset == -1 for k in ktps)
        return [KTopicPartition(k.topic, k.partition, self.watermarks[(k.topic, k.partition)][1]) for k in ktps]

    def append(self, tp, records):
        """The changelog grows: records [(offset, key, value)], the end moves past the last one."""
        self.records.setdefault(tp, []).extend(records)
        low, high = self.watermarks[tp]
        self.watermarks[tp] = (low, max(high, records[-1][0] + 1))


class StandbyRecorder(StandbyUpdateListener):
    def __init__(self):
        self.calls = []
        self.threads = set()

    def on_update_start(self, partition, store_name, starting_offset):
        self.threads.add(threading.current_thread().name)
        self.calls.append(("start", partition, store_name, starting_offset))

    def on_batch_loaded(self, partition, store_name, task_id, batch_end_offset, batch_size, current_end_offset):
        self.calls.append(("batch", partition, store_name, task_id, batch_end_offset, batch_size, current_end_offset))

    def on_update_suspended(self, partition, store_name, store_offset, current_end_offset, reason):
        self.calls.append(("suspended", partition, store_name, store_offset, current_end_offset, reason))


class _DrivenByTest:
    """Stands in for the updater's thread: the public API queues commands, the test runs the steps."""

    def is_alive(self):
        return True


def make_updater(consumer, standby_listener=None, **cfg):
    config = Config.from_kwargs(app_id="app", bootstrap_servers="127.0.0.1:1", **cfg)

    def factory():
        raise AssertionError("the thread is driven by the test")

    u = StateUpdater(config, factory, None, Metrics(), standby_listener=standby_listener)
    u._reader.consumer = consumer
    u._thread = _DrivenByTest()
    return u


def step(u, consumer, rounds=1, now=None):
    """What one pass of the thread's loop does (commands, then a restore or standby round, then upkeep)."""
    reader = u._reader
    for _ in range(rounds):
        u._handle_commands(wait_s=0)
        restoring, flushing, standby = reader.activity()
        if restoring:
            reader.restore_round()
        elif flushing:
            reader.check_flushed()
        elif standby:
            reader.standby_round()
        reader.maintain_standbys(time.monotonic() if now is None else now)


def standby_in(u, state):
    return [tp for tp, p in u._reader.partitions().items() if p.mode is Mode.STANDBY and p.state is state]


def standby_partition(u, tp):
    p = u._reader.partitions()[tp]
    assert p.mode is Mode.STANDBY
    return p


def remove_standby(u, consumer, task_id, reason=SuspendReason.MIGRATED):
    fut = u.remove_standby(task_id, reason)
    step(u, consumer)
    return fut.result(timeout=0)


def store_of(task):
    return task.stores["counts"]


@pytest.fixture(params=["memory", "rocksdb"])
def backend_kind(request):
    return request.param


# ---- tailing ----

def test_tails_from_the_stored_offset_and_follows_the_changelog(backend_kind, tmp_path, closing):
    task = make_task(backend_kind, tmp_path, 3, [(b"k0", i64(0)), (b"k1", i64(1)), (b"k2", i64(2))])
    closing.append(task)
    consumer = StandbyConsumer({CHANGELOG: (0, 6)}, {CHANGELOG: changelog_records(6)})
    listener = StandbyRecorder()
    u = make_updater(consumer, listener)
    u.add_standby(task)
    step(u, consumer)
    assert u.standby_task_ids() == [task.id] and u.restoring_task_ids() == []
    store = store_of(task)
    assert store.backend.changelog_offset() == 6
    assert dict(store.view.all()) == {"k0": 3, "k1": 4, "k2": 5}
    assert listener.calls[0] == ("start", CHANGELOG, "counts", 3)
    # the changelog grows while the standby tails it: the store follows, never handed back
    consumer.append(CHANGELOG, changelog_records(9, start=6))
    step(u, consumer, rounds=2)
    assert store.backend.changelog_offset() == 9
    assert dict(store.view.all()) == {"k0": 6, "k1": 7, "k2": 8}
    assert u.drain_restored() == [] and u.drain_failed() == []
    assert consumer.positions == {CHANGELOG: 9}  # still assigned
    assert u._metrics.standby_updating_tasks == 1 and u._metrics.active_restoring_tasks == 0
    assert u._metrics.restores == {}  # standbys are not restores


def test_never_uses_restore_mode(tmp_path, closing, monkeypatch):
    from hotstate.state.rocksdb_store import RocksDBBackend
    monkeypatch.setattr(RocksDBBackend, "BULK_RESTORE_RECORDS_MIN", 1)
    task = make_task("rocksdb", tmp_path)
    closing.append(task)
    backend = store_of(task).backend
    began = []
    monkeypatch.setattr(backend, "begin_restore", lambda n: began.append(n))
    consumer = StandbyConsumer({CHANGELOG: (0, 5)}, {CHANGELOG: changelog_records(5)})
    u = make_updater(consumer)
    u.add_standby(task)
    step(u, consumer, rounds=2)
    assert began == [] and not backend._bulk
    assert backend.changelog_offset() == 5


def test_empty_store_starts_at_the_changelog_start(tmp_path):
    task = make_task("memory", tmp_path)
    consumer = StandbyConsumer({CHANGELOG: (4, 6)}, {CHANGELOG: changelog_records(6, start=4)})
    listener = StandbyRecorder()
    u = make_updater(consumer, listener)
    u.add_standby(task)
    u._handle_commands(wait_s=0)
    assert consumer.positions == {CHANGELOG: 4}
    assert listener.calls == [("start", CHANGELOG, "counts", 4)]
    assert u.standby_offsets() == {task.id: 4} and u.standby_lags() == {task.id: 2}


def test_unusable_stored_offset_wipes_the_store(tmp_path):
    task = make_task("memory", tmp_path, 50, [(b"stale", i64(1))])
    consumer = StandbyConsumer({CHANGELOG: (0, 3)}, {CHANGELOG: changelog_records(3)})
    u = make_updater(consumer)
    u.add_standby(task)
    step(u, consumer)
    store = store_of(task)
    assert store.view.get("stale") is None
    assert store.backend.changelog_offset() == 3


def test_listener_calls(tmp_path):
    task = make_task("memory", tmp_path)
    consumer = StandbyConsumer({CHANGELOG: (0, 5)}, {CHANGELOG: changelog_records(5)})
    listener = StandbyRecorder()
    u = make_updater(consumer, listener, restore_batch_records_max=2, restore_consume_records_max=3)
    u.add_standby(task)
    step(u, consumer, rounds=3)
    consumer.append(CHANGELOG, changelog_records(6, start=5))
    step(u, consumer)
    assert remove_standby(u, consumer, task.id, SuspendReason.PROMOTED) is task
    assert listener.calls == [
        ("start", CHANGELOG, "counts", 0),
        # consume returns 3 then 2 records, written in batches of at most 2; the end known then is 5
        ("batch", CHANGELOG, "counts", "0_0", 1, 2, 5), ("batch", CHANGELOG, "counts", "0_0", 2, 1, 5),
        ("batch", CHANGELOG, "counts", "0_0", 4, 2, 5),
        # a record past the end last seen moves the end with it
        ("batch", CHANGELOG, "counts", "0_0", 5, 1, 6),
        ("suspended", CHANGELOG, "counts", 6, 6, SuspendReason.PROMOTED),
    ]


def test_listener_exceptions_are_logged_and_ignored(tmp_path, caplog):
    class Raising(StandbyUpdateListener):
        def on_update_start(self, *a):
            raise ValueError("listener bug")

        def on_batch_loaded(self, *a):
            raise ValueError("listener bug")

    task = make_task("memory", tmp_path)
    consumer = StandbyConsumer({CHANGELOG: (0, 2)}, {CHANGELOG: changelog_records(2)})
    u = make_updater(consumer, Raising())
    u.add_standby(task)
    step(u, consumer)
    assert store_of(task).backend.changelog_offset() == 2
    assert any("standby listener Raising.on_batch_loaded raised" in r.getMessage() for r in caplog.records)


# ---- remove_standby ----

def test_remove_standby_resolves_and_stops_writes(backend_kind, tmp_path, closing):
    task = make_task(backend_kind, tmp_path)
    closing.append(task)
    consumer = StandbyConsumer({CHANGELOG: (0, 4)}, {CHANGELOG: changelog_records(4)})
    listener = StandbyRecorder()
    u = make_updater(consumer, listener)
    u.add_standby(task)
    step(u, consumer)
    fut = u.remove_standby(task.id, SuspendReason.MIGRATED)
    assert not fut.done()  # answered by the updater thread
    step(u, consumer)
    assert fut.result(timeout=0) is task
    assert listener.calls[-1] == ("suspended", CHANGELOG, "counts", 4, 4, SuspendReason.MIGRATED)
    assert consumer.positions == {} and u._reader.partitions() == {} and u.standby_task_ids() == []
    assert u.standby_lags() == {} and u._metrics.standby_updating_tasks == 0
    consumer.append(CHANGELOG, changelog_records(8, start=4))
    step(u, consumer, rounds=2)
    assert store_of(task).backend.changelog_offset() == 4  # no write after the future resolved
    assert not any(c[0] == "batch" and c[4] >= 4 for c in listener.calls)


def test_remove_unknown_standby_resolves_to_none(tmp_path):
    consumer = StandbyConsumer({})
    u = make_updater(consumer)
    assert remove_standby(u, consumer, "9_9") is None


def test_remove_standby_without_a_thread_returns_the_task(tmp_path):
    config = Config.from_kwargs(app_id="app", bootstrap_servers="127.0.0.1:1")
    u = StateUpdater(config, lambda: None, None, Metrics())
    task = make_task("memory", tmp_path)
    u.add_standby(task)
    assert u.remove_standby(task.id, SuspendReason.MIGRATED).result(timeout=0) is task
    assert u.remove_standby(task.id, SuspendReason.MIGRATED).result(timeout=0) is None


def test_promotion_resumes_before_unassign_so_the_restore_is_not_stalled(tmp_path):
    """A standby removed while paused (an active restore runs), then restored as active: librdkafka would
    keep the pause across unassign + assign and the restore would never read."""
    other = make_task("memory", tmp_path, partition=1)
    task = make_task("memory", tmp_path)
    consumer = StandbyConsumer({CHANGELOG: (0, 4), CL1: (0, 50)},
                               {CHANGELOG: changelog_records(4), CL1: changelog_records(50)})
    u = make_updater(consumer, restore_consume_records_max=5)
    u.add_standby(task)
    step(u, consumer)
    u.add(other)  # an active restore: the standby's partition is paused
    u._handle_commands(wait_s=0)
    assert consumer.paused == {CHANGELOG}
    assert remove_standby(u, consumer, task.id, SuspendReason.PROMOTED) is task
    assert consumer.unassigned_while_paused == [] and consumer.paused == set()
    consumer.append(CHANGELOG, changelog_records(6, start=4))
    u.add(task)
    u._handle_commands(wait_s=0)
    run_until_idle(u, consumer, max_rounds=100)
    assert {t.id for t in u.drain_restored()} == {task.id, other.id}
    assert store_of(task).backend.changelog_offset() == 6


# ---- active and standby never both ----

def test_add_of_a_standby_is_refused(tmp_path):
    task = make_task("memory", tmp_path)
    consumer = StandbyConsumer({CHANGELOG: (0, 0)})
    u = make_updater(consumer)
    u.add_standby(task)
    with pytest.raises(IllegalStateTransition, match="remove_standby"):
        u.add(task)
    with pytest.raises(IllegalStateTransition, match="standby .* already"):
        u.add_standby(task)
    step(u, consumer)
    assert u.restoring_task_ids() == [] and u.standby_task_ids() == [task.id]
    u.remove_standby(task.id, SuspendReason.PROMOTED)
    u.add(task)  # queued behind the removal: allowed
    step(u, consumer)
    assert u.standby_task_ids() == [] and u.drain_restored() == [task]


def test_add_standby_of_a_restoring_task_is_refused(tmp_path):
    task = make_task("memory", tmp_path)
    consumer = StandbyConsumer({CHANGELOG: (0, 3)}, {CHANGELOG: changelog_records(3)})
    u = make_updater(consumer)
    u.add(task)
    with pytest.raises(IllegalStateTransition, match="restoring as an active task"):
        u.add_standby(task)
    u._handle_commands(wait_s=0)
    run_until_idle(u, consumer)
    assert u.drain_restored() == [task]
    u.add_standby(task)  # drained: it may become a standby now
    step(u, consumer)
    assert u.standby_task_ids() == [task.id]


def test_updater_fails_an_active_add_that_went_around_the_check(tmp_path):
    task = make_task("memory", tmp_path)
    consumer = StandbyConsumer({CHANGELOG: (0, 3)})
    u = make_updater(consumer)
    u.add_standby(task)
    u._commands.put(("add", [task], None))
    u._handle_commands(wait_s=0)
    [(failed, exc)] = u.drain_failed()
    assert failed is task and isinstance(exc, IllegalStateTransition)
    assert u.standby_task_ids() == [task.id] and u.restoring_task_ids() == []


# ---- priority: standbys wait while active tasks restore ----

def test_standbys_pause_while_an_active_task_restores(tmp_path):
    standby = make_task("memory", tmp_path)
    active = make_task("memory", tmp_path, partition=1)
    consumer = StandbyConsumer({CHANGELOG: (0, 2), CL1: (0, 30)},
                               {CHANGELOG: changelog_records(2), CL1: changelog_records(30)})
    u = make_updater(consumer, restore_consume_records_max=10)
    u.add_standby(standby)
    step(u, consumer)
    assert store_of(standby).backend.changelog_offset() == 2 and consumer.paused == set()
    consumer.append(CHANGELOG, changelog_records(20, start=2))
    u.add(active)
    u._handle_commands(wait_s=0)
    assert consumer.paused == {CHANGELOG}  # before the first restore round
    u._reader.restore_round()
    u._reader.restore_round()
    assert store_of(standby).backend.changelog_offset() == 2  # active records only
    assert store_of(active).backend.changelog_offset() == 20
    run_until_idle(u, consumer)
    assert u.drain_restored() == [active]
    assert consumer.paused == set()  # no active restore left: resumed
    step(u, consumer, rounds=2)
    assert store_of(standby).backend.changelog_offset() == 20


def test_a_standby_added_during_an_active_restore_starts_paused(tmp_path):
    standby = make_task("memory", tmp_path)
    active = make_task("memory", tmp_path, partition=1)
    consumer = StandbyConsumer({CHANGELOG: (0, 5), CL1: (0, 30)},
                               {CHANGELOG: changelog_records(5), CL1: changelog_records(30)})
    u = make_updater(consumer, restore_consume_records_max=10)
    u.add(active)
    u.add_standby(standby)
    u._handle_commands(wait_s=0)
    assert consumer.paused == {CHANGELOG}
    u._reader.restore_round()
    assert store_of(standby).backend.changelog_offset() is None
    run_until_idle(u, consumer)
    u.drain_restored()
    step(u, consumer)
    assert store_of(standby).backend.changelog_offset() == 5


def test_removing_the_active_task_resumes_the_standbys(tmp_path):
    standby = make_task("memory", tmp_path)
    active = make_task("memory", tmp_path, partition=1)
    consumer = StandbyConsumer({CHANGELOG: (0, 5), CL1: (0, 30)},
                               {CHANGELOG: changelog_records(5), CL1: changelog_records(30)})
    u = make_updater(consumer, restore_consume_records_max=10)
    u.add_standby(standby)
    u.add(active)
    u._handle_commands(wait_s=0)
    assert consumer.paused == {CHANGELOG}
    fut = u.remove(active.id)
    u._handle_commands(wait_s=0)
    assert fut.result(timeout=0) is active and consumer.paused == set()


# ---- lags and offsets ----

def test_lags_and_offsets(tmp_path):
    t0 = make_task("memory", tmp_path, 2, [(b"k0", i64(0))])
    t1 = make_task("memory", tmp_path, partition=1)
    consumer = StandbyConsumer({CHANGELOG: (0, 10), CL1: (0, 4)},
                               {CHANGELOG: changelog_records(10), CL1: changelog_records(4)})
    u = make_updater(consumer, restore_consume_records_max=3)
    u.add_standby(t0)
    u.add_standby(t1)
    u._handle_commands(wait_s=0)
    # right after the start: ends from the broker (cached=False), offsets from the stores
    assert u.standby_lags() == {"0_0": 8, "0_1": 4}
    assert u.standby_offsets() == {"0_0": 2, "0_1": 0}
    assert u._metrics.snapshot()["standby_records_lag"] == {"0_0": 8, "0_1": 4}
    step(u, consumer, rounds=6)
    assert u.standby_lags() == {"0_0": 0, "0_1": 0}
    assert u.standby_offsets() == {"0_0": 10, "0_1": 4}
    # the changelog grows without a record being read yet: the end librdkafka caches from fetches counts
    consumer.watermarks[CHANGELOG] = (0, 15)
    consumer.fetched_high[CHANGELOG] = 15
    u._reader._refresh_ends(now=time.monotonic())
    assert u.standby_lags() == {"0_0": 5, "0_1": 0}
    assert u._metrics.snapshot()["standby_records_lag"] == {"0_0": 5, "0_1": 0}
    assert u._metrics.snapshot()["standby_updating_tasks"] == 2


def test_ends_refresh_about_once_a_second_from_cached_watermarks(tmp_path):
    task = make_task("memory", tmp_path)
    consumer = StandbyConsumer({CHANGELOG: (0, 3)}, {CHANGELOG: changelog_records(3)})
    u = make_updater(consumer)
    u.add_standby(task)
    u._handle_commands(wait_s=0)
    assert consumer.watermark_calls == [(CHANGELOG, False)]  # the start: fresh, as a restore's
    base = time.monotonic() + 10
    for i in range(20):
        u._reader.standby_round()
        u._reader.maintain_standbys(now=base + i * 0.1)  # two seconds
    cached = [c for c in consumer.watermark_calls if c[1]]
    assert 2 <= len(cached) <= 3
    assert [c for c in consumer.watermark_calls if not c[1]] == [(CHANGELOG, False)]


def test_paused_partitions_get_their_ends_in_one_batched_query(tmp_path):
    standby = make_task("memory", tmp_path)
    active = make_task("memory", tmp_path, partition=1)
    consumer = StandbyConsumer({CHANGELOG: (0, 2), CL1: (0, 1000)},
                               {CHANGELOG: changelog_records(2), CL1: changelog_records(1000)})
    u = make_updater(consumer, restore_consume_records_max=10)
    u.add_standby(standby)
    step(u, consumer)
    u.add(active)
    u._handle_commands(wait_s=0)
    consumer.append(CHANGELOG, changelog_records(12, start=2))  # the paused partition grows: no fetch sees it
    base = time.monotonic() + 10
    for i in range(30):
        u._reader.restore_round()
        u._reader.maintain_standbys(now=base + i * 0.5)  # 15 seconds
    assert 2 <= consumer.offsets_for_times_calls <= 4
    assert u.standby_lags() == {standby.id: 10}


def test_markers_and_aborted_records_move_the_offset_so_the_lag_reaches_zero(backend_kind, tmp_path, closing):
    # records at 0..2; offsets 3..5 are an aborted transaction and markers: the position jumps to 6
    task = make_task(backend_kind, tmp_path)
    closing.append(task)
    consumer = StandbyConsumer({CHANGELOG: (0, 6)}, {CHANGELOG: changelog_records(3)},
                               end_positions={CHANGELOG: 6})
    u = make_updater(consumer)
    u.add_standby(task)
    step(u, consumer, rounds=2)
    assert store_of(task).backend.changelog_offset() == 6
    assert u.standby_lags() == {task.id: 0}


# ---- durability: flushes, seen through RocksDB's crash view ----

def crash_view(task):
    """What a kill -9 would leave: RocksDB opened read-only beside the live store sees its WAL and files
    only, not the memtables written without the WAL. Returns (data, offset)."""
    path = store_of(task).backend.path
    db = Rdict(path, Options(raw_mode=True), column_families={META_CF: Options(raw_mode=True)},
               access_type=AccessType.read_only())
    try:
        meta = db.get_column_family(META_CF)
        raw = meta.get(b"changelog_offset")
        data = {bytes(k): bytes(v) for k, v in db.items()}
        meta.close()
    finally:
        db.close()
    return data, None if raw is None else int.from_bytes(raw, "big", signed=True)


def replay(records, upto, data=None):
    out = dict(data or {})
    for off, k, v in records:
        if off < upto:
            out[k] = v
    return out


def flush_until_done(u, consumer, now, timeout_s=10):
    deadline = time.monotonic() + timeout_s
    u._reader.maintain_standbys(now)
    while standby_in(u, ChangelogState.FLUSHING):
        assert time.monotonic() < deadline, "the standby flush did not finish"
        time.sleep(0.005)
        u._reader.maintain_standbys(now)


def test_standby_flush_makes_the_offset_durable_with_its_data(tmp_path, closing):
    task = make_task("rocksdb", tmp_path)
    closing.append(task)
    records = changelog_records(40)
    consumer = StandbyConsumer({CHANGELOG: (0, 40)}, {CHANGELOG: records})
    u = make_updater(consumer, restore_consume_records_max=10)
    u._reader.STANDBY_FLUSH_INTERVAL_S = 5.0
    u.add_standby(task)
    u._handle_commands(wait_s=0)
    t0 = standby_partition(u, CHANGELOG).flushed_at
    for _ in range(5):
        u._handle_commands(wait_s=0)
        u._reader.standby_round()
        u._reader.maintain_standbys(t0 + 1)  # not due yet
    assert store_of(task).backend.changelog_offset() == 40
    assert crash_view(task) == ({}, None)  # nothing flushed: a kill -9 now loses the progress, consistently
    u._reader.maintain_standbys(t0 + 6)  # due: the flush starts and the partition pauses
    assert standby_in(u, ChangelogState.FLUSHING) == [CHANGELOG] and consumer.paused == {CHANGELOG}
    flush_until_done(u, consumer, t0 + 6)
    assert consumer.paused == set()  # resumed
    assert crash_view(task) == (replay(records, 40), 40)
    # nothing new: no further flush
    u._reader.maintain_standbys(t0 + 20)
    assert not standby_in(u, ChangelogState.FLUSHING)


def test_a_write_during_the_flush_flushes_the_data_again_before_the_offset(tmp_path, closing):
    """The pause keeps records out while a standby store flushes; one that slips in anyway must reach disk
    before the offset that covers it (else a crash leaves an offset ahead of the data)."""
    task = make_task("rocksdb", tmp_path)
    closing.append(task)
    records = changelog_records(10)
    consumer = StandbyConsumer({CHANGELOG: (0, 10)}, {CHANGELOG: records[:5]})
    u = make_updater(consumer)
    u._reader.STANDBY_FLUSH_INTERVAL_S = 1000.0
    u.add_standby(task)
    step(u, consumer)
    assert store_of(task).backend.changelog_offset() == 5
    u._reader.STANDBY_FLUSH_INTERVAL_S = 0.0
    now = time.monotonic() + 1
    u._reader.maintain_standbys(now)
    assert standby_partition(u, CHANGELOG).state is ChangelogState.FLUSHING
    # let the data step finish, so that the next poll would flush the offset
    backend = store_of(task).backend
    deadline = time.monotonic() + 10
    while backend._db.property_int_value("rocksdb.num-running-flushes") or \
            backend._db.property_int_value("rocksdb.num-immutable-mem-table"):
        assert time.monotonic() < deadline
        time.sleep(0.005)
    u._reader._apply([FakeMsg(CHANGELOG.topic, 0, off, k, v) for off, k, v in records[5:]])  # slipped through
    assert backend.changelog_offset() == 10
    flush_until_done(u, consumer, now)
    data, offset = crash_view(task)
    assert offset == 10 and data == replay(records, 10)


def test_no_standby_flush_starts_while_an_active_task_restores(tmp_path, closing):
    standby = make_task("rocksdb", tmp_path)
    active = make_task("memory", tmp_path, partition=1)
    closing.append(standby)
    consumer = StandbyConsumer({CHANGELOG: (0, 3), CL1: (0, 100)},
                               {CHANGELOG: changelog_records(3), CL1: changelog_records(100)})
    u = make_updater(consumer, restore_consume_records_max=10)
    u._reader.STANDBY_FLUSH_INTERVAL_S = 0.0
    u.add_standby(standby)
    u._handle_commands(wait_s=0)
    u._reader.standby_round()
    u.add(active)
    u._handle_commands(wait_s=0)
    now = time.monotonic() + 1
    u._reader.maintain_standbys(now)
    assert not standby_in(u, ChangelogState.FLUSHING)
    run_until_idle(u, consumer)
    u.drain_restored()
    flush_until_done(u, consumer, now + 1)
    assert crash_view(standby)[1] == 3


def test_memory_standby_needs_no_flush(tmp_path):
    task = make_task("memory", tmp_path)
    consumer = StandbyConsumer({CHANGELOG: (0, 3)}, {CHANGELOG: changelog_records(3)})
    u = make_updater(consumer)
    u._reader.STANDBY_FLUSH_INTERVAL_S = 0.0
    u.add_standby(task)
    step(u, consumer, now=time.monotonic() + 1)
    step(u, consumer, now=time.monotonic() + 2)
    assert not standby_in(u, ChangelogState.FLUSHING) and consumer.paused == set()
    assert not standby_partition(u, CHANGELOG).dirty  # its "flush" (end_restore, a no-op) ran at once


# ---- errors stop one standby, never the updater ----

def test_a_failing_store_write_stops_that_standby_only(tmp_path, caplog):
    bad, good = make_task("memory", tmp_path), make_task("memory", tmp_path, partition=1)
    consumer = StandbyConsumer({CHANGELOG: (0, 3), CL1: (0, 3)},
                               {CHANGELOG: changelog_records(3), CL1: changelog_records(3)})
    u = make_updater(consumer)

    def broken(entries, offset):
        raise OSError("disk full")

    store_of(bad).backend.restore = broken
    u.add_standby(bad)
    u.add_standby(good)
    step(u, consumer, rounds=2)
    assert store_of(good).backend.changelog_offset() == 3
    assert u.standby_lags() == {good.id: 0}  # the failed one is left out
    assert CHANGELOG not in consumer.positions
    assert any("disk full" in r.getMessage() for r in caplog.records)
    assert remove_standby(u, consumer, bad.id) is bad


def test_a_fatal_error_event_of_a_standby_partition_stops_that_standby_only_a_transient_one_does_not(tmp_path):
    """A broker restart gives transient error events for a standby's partition: the standby keeps tailing (it
    used to stop until the next rebalance, and the broker-restart test saw a standby that never came back)."""
    task = make_task("memory", tmp_path)
    consumer = StandbyConsumer({CHANGELOG: (0, 0)})
    u = make_updater(consumer)
    u.add_standby(task)
    u._handle_commands(wait_s=0)

    class Err:
        def __init__(self, fatal):
            self._fatal = fatal

        def code(self):
            return KafkaError.UNKNOWN_TOPIC_OR_PART

        def fatal(self):
            return self._fatal

        def __str__(self):
            return "unknown topic"

    u._reader._apply([FakeMsg(CHANGELOG.topic, 0, -1, None, None, error=Err(False))])
    assert u.standby_lags() == {task.id: 0} and standby_partition(u, CHANGELOG).state is ChangelogState.UPDATING
    u._reader._apply([FakeMsg(CHANGELOG.topic, 0, -1, None, None, error=Err(True))])
    assert u.standby_lags() == {} and u._reader._standbys[task.id].partitions[0].state is ChangelogState.FAILED


def test_the_updater_thread_tails_and_removes(tmp_path):
    """The real loop, on its own thread."""
    task = make_task("memory", tmp_path)
    consumer = StandbyConsumer({CHANGELOG: (0, 5)}, {CHANGELOG: changelog_records(5)})
    listener = StandbyRecorder()
    config = Config.from_kwargs(app_id="app", bootstrap_servers="127.0.0.1:1")
    u = StateUpdater(config, lambda: consumer, None, Metrics(), standby_listener=listener)
    u.start()
    try:
        u.add_standby(task)
        deadline = time.monotonic() + 10
        while store_of(task).backend.changelog_offset() != 5:
            assert time.monotonic() < deadline and u.fatal_error is None
            time.sleep(0.01)
        consumer.append(CHANGELOG, changelog_records(8, start=5))  # not thread-safe in general; fine here
        while u.standby_lags() != {task.id: 0} or store_of(task).backend.changelog_offset() != 8:
            assert time.monotonic() < deadline and u.fatal_error is None
            time.sleep(0.01)
        assert u.remove_standby(task.id, SuspendReason.MIGRATED).result(timeout=5) is task
        assert {c[0] for c in listener.calls} == {"start", "batch", "suspended"}
        assert listener.threads == {"hotstate-state-updater"}
    finally:
        u.shutdown(5)
    assert u.fatal_error is None
