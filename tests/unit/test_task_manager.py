"""TaskManager without a broker: store opening (wipe on corruption), record processing and bad input,
assignment / restore hand-off / revocation with fake clients."""
from __future__ import annotations

import logging
import os
import struct
import time
from concurrent.futures import Future
from types import SimpleNamespace

import pytest
from confluent_kafka import KafkaError, KafkaException

from hotstate import StoreSpec, TopicPartition, serde
from hotstate.errors import DeserializationError, ProcessingError, StoreClosedError
from hotstate.observe.metrics import Metrics
from hotstate.dsl.topology import Topology
from hotstate.runtime.commit import ProducerFenced
from hotstate.runtime.membership import GroupMembership
from hotstate.runtime.task import TaskState
from hotstate.runtime.task_manager import TaskManager
from hotstate.state.memory_store import MemoryBackend
from hotstate.state.rocksdb_store import RocksDBBackend
from hotstate.state.state_dir import StateDirectory
from unit_support import FakeMsg


def i64(n: int) -> bytes:
    return struct.pack(">q", n)


class FakeUpdater:
    fatal_error = None

    def __init__(self):
        self.added, self.removed = [], []
        self.add_calls: list[list[str]] = []  # task ids per add call
        self.restored, self.failed = [], []
        self.standbys = {}

    def add(self, *tasks):
        self.added.extend(tasks)
        self.add_calls.append([t.id for t in tasks])

    def add_standby(self, task):
        self.standbys[task.id] = task

    def remove_standby(self, task_id, reason):
        f = Future()
        f.set_result(self.standbys.pop(task_id, None))
        return f

    def remove(self, task_id):
        self.removed.append(task_id)
        f = Future()
        f.set_result(None)
        return f

    def drain_restored(self):
        out, self.restored = self.restored, []
        return out

    def drain_failed(self):
        out, self.failed = self.failed, []
        return out


class FakeConsumer:
    def __init__(self, committed=None):
        self.resumed, self.seeks, self.paused = [], [], []
        self._committed = committed or {}

    def resume(self, tps):
        self.resumed.extend((t.topic, t.partition) for t in tps)

    def pause(self, tps):
        self.paused.extend((t.topic, t.partition) for t in tps)

    def committed(self, tps, timeout=None):
        from confluent_kafka import TopicPartition as KTP
        return [KTP(t.topic, t.partition, self._committed.get((t.topic, t.partition), -1001)) for t in tps]

    def seek(self, tp):
        self.seeks.append((tp.topic, tp.partition, tp.offset))


class FakeProducer:
    def __init__(self, buffer_errors=0):
        self.sent, self.polls, self._buffer_errors = [], 0, buffer_errors

    def produce(self, topic, value=None, key=None, timestamp=0, **kw):
        if self._buffer_errors:
            self._buffer_errors -= 1
            raise BufferError("queue full")
        self.sent.append((topic, key, value, timestamp))

    def poll(self, timeout):
        self.polls += 1


class FakeCommitter:
    def __init__(self, producer=None):
        self.producer = producer if producer is not None else FakeProducer()
        self.commits = []

    def commit(self, tasks):
        self.commits.append(sorted(t.id for t in tasks))

    def begin(self):
        pass

    def abort(self):
        self.aborts = getattr(self, "aborts", 0) + 1


def build(make_app, tmp_path, kind="rocksdb", producer=None, consumer=None, **cfg):
    app = make_app(**cfg)
    s = app.stream("words", key_serde=serde.STRING, value_serde=serde.STRING)
    s.group_by_key().count(StoreSpec("c", kind=kind)).to_stream().to("out", value_serde=serde.INT64)
    state_dir = StateDirectory(app.config.state_dir, app.config.app_id)
    tm = TaskManager(app.config, app._topology, state_dir, consumer or FakeConsumer(), FakeUpdater(), Metrics(),
                     FakeCommitter(producer))
    return tm, state_dir


def running(tm, partitions=(0,)):
    tm.partitions_assigned([TopicPartition("words", p) for p in partitions])
    tm._updater.restored.extend(tm._updater.added)
    tm.handle_restored()
    return [tm.tasks[f"0_{p}"] for p in partitions]


@pytest.fixture
def tms():
    made = []
    yield made
    for tm in made:
        for t in list(tm.tasks.values()):
            t.close_stores()


# ---- opening stores ----

def test_open_store_layout_and_memory_kind(make_app, tmp_path, tms):
    tm, sd = build(make_app, tmp_path)
    tms.append(tm)
    ts = tm._open_store("0_3", 3, StoreSpec("c", kind="rocksdb"))
    assert isinstance(ts.backend, RocksDBBackend)
    assert ts.backend.path == os.path.join(sd.root, "0_3", "c")
    assert ts.changelog == ("unit-app-c-changelog", 3)
    ts.backend.close()
    mem = tm._open_store("0_3", 3, StoreSpec("m", kind="memory"))
    assert isinstance(mem.backend, MemoryBackend)
    assert isinstance(mem.reopen(), MemoryBackend) and mem.reopen() is not mem.backend


def test_open_garbage_store_wipes_and_reopens_empty(make_app, tmp_path, caplog):
    tm, sd = build(make_app, tmp_path)
    path = sd.store_path("0_0", "c")
    os.makedirs(path)
    with open(os.path.join(path, "CURRENT"), "wb") as f:
        f.write(b"garbage")
    with caplog.at_level(logging.WARNING):
        ts = tm._open_store("0_0", 0, StoreSpec("c"))
    try:
        assert ts.backend.changelog_offset() is None
        assert "wiping it and restoring" in caplog.text
    finally:
        ts.backend.close()


def test_open_store_with_unknown_format_wipes_and_reopens(make_app, tmp_path):
    tm, sd = build(make_app, tmp_path)
    path = sd.store_path("0_0", "c")
    b = RocksDBBackend("c", path)
    b.write([(b"a", b"1")], 5)
    b._meta.put(b"format", b"2")
    b.close()
    ts = tm._open_store("0_0", 0, StoreSpec("c"))
    try:
        assert ts.backend.changelog_offset() is None
    finally:
        ts.backend.close()


# ---- assignment, restore hand-off, revocation ----

def test_assigned_partitions_become_restoring_tasks(make_app, tmp_path, tms):
    tm, _ = build(make_app, tmp_path)
    tms.append(tm)
    tm.partitions_assigned([TopicPartition("words", 0), TopicPartition("words", 2)])
    assert sorted(tm.tasks) == ["0_0", "0_2"]
    assert all(t.state is TaskState.RESTORING for t in tm.tasks.values())
    assert [t.id for t in tm._updater.added] == ["0_0", "0_2"]
    assert tm._updater.add_calls == [["0_0", "0_2"]]  # one hand-over: their restores start together
    assert tm.assignment_received and not tm.all_running()
    assert tm.any_restoring() and not tm.any_running()


def test_restored_tasks_run_and_resume(make_app, tmp_path, tms):
    tm, _ = build(make_app, tmp_path)
    tms.append(tm)
    (t0,) = running(tm)
    assert t0.state is TaskState.RUNNING
    assert tm._consumer.resumed == [("words", 0)]
    assert tm.all_running()


def test_restored_task_revoked_meanwhile_is_ignored(make_app, tmp_path, tms):
    tm, _ = build(make_app, tmp_path)
    tms.append(tm)
    tm.partitions_assigned([TopicPartition("words", 0)])
    task = tm.tasks["0_0"]
    tm.partitions_revoked([TopicPartition("words", 0)])
    assert task.state is TaskState.CLOSED and tm._updater.removed == ["0_0"]
    tm._updater.restored.append(task)
    tm.handle_restored()  # must not try CLOSED -> RUNNING
    assert tm._consumer.resumed == []


def test_failed_restore_or_dead_updater_raises(make_app, tmp_path, tms):
    tm, _ = build(make_app, tmp_path)
    tms.append(tm)
    tm.partitions_assigned([TopicPartition("words", 0)])
    tm._updater.failed.append((tm.tasks["0_0"], OSError("disk")))
    with pytest.raises(RuntimeError, match="restoring task 0_0 failed"):
        tm.handle_restored()
    tm._updater.fatal_error = ValueError("dead")
    with pytest.raises(RuntimeError, match="state updater failed"):
        tm.handle_restored()


def test_revoke_commits_then_closes_and_keeps_committed_state(make_app, tmp_path, tms):
    tm, sd = build(make_app, tmp_path)
    tms.append(tm)
    (t0,) = running(tm)
    t0.stores["c"].backend.write([(b"a", i64(3))], 1)
    tm.partitions_revoked([TopicPartition("words", 0)])
    assert tm._committer.commits == [["0_0"]]
    assert t0.state is TaskState.CLOSED and tm.tasks == {}
    b = RocksDBBackend("c", sd.store_path("0_0", "c"))  # closed, so it can be opened again
    try:
        assert b.get(b"a") == i64(3)
    finally:
        b.close()


def test_lost_partitions_close_without_commit(make_app, tmp_path, caplog, tms):
    tm, _ = build(make_app, tmp_path)
    tms.append(tm)
    (t0,) = running(tm)
    t0.stores["c"].view.put("a", 1)
    with caplog.at_level(logging.WARNING):
        tm.partitions_lost([TopicPartition("words", 0)])
    assert tm._committer.commits == []
    assert t0.state is TaskState.CLOSED
    assert "dropping 1 uncommitted" in caplog.text


def test_shutdown_clean_commits_and_closes_all(make_app, tmp_path):
    tm, _ = build(make_app, tmp_path)
    tasks = running(tm, (0, 1))
    tm.shutdown(clean=True)
    assert tm._committer.commits == [["0_0", "0_1"]]
    assert all(t.state is TaskState.CLOSED for t in tasks) and tm.tasks == {}


# ---- processing ----

def test_process_runs_topology_and_tracks_offsets(make_app, tmp_path, tms):
    tm, _ = build(make_app, tmp_path)
    tms.append(tm)
    (t0,) = running(tm)
    tm.process([FakeMsg("words", 0, 10, b"a", b"x", timestamp=5), FakeMsg("words", 0, 11, b"a", b"y", timestamp=6)])
    assert t0.stores["c"].view.get("a") == 2
    assert t0.next_offsets == {t0.inputs[0]: 12}
    assert tm._metrics.records_processed_total == 2
    assert tm.producer.sent == [("out", b"a", i64(1), 5), ("out", b"a", i64(2), 6)]
    assert tm.dirty_records() == 1


def test_records_of_unknown_or_restoring_tasks_are_skipped(make_app, tmp_path, tms):
    tm, _ = build(make_app, tmp_path)
    tms.append(tm)
    tm.partitions_assigned([TopicPartition("words", 0)])
    tm.process([FakeMsg("words", 0, 0, b"a", b"x"), FakeMsg("words", 7, 0, b"a", b"x")])
    assert tm._metrics.records_processed_total == 0
    assert tm.tasks["0_0"].next_offsets == {}


def test_partition_eof_is_ignored_and_only_fatal_error_events_raise(make_app, tmp_path, tms):
    tm, _ = build(make_app, tmp_path)
    tms.append(tm)
    running(tm)
    tm.process([FakeMsg("words", 0, 0, None, None, error=KafkaError(KafkaError._PARTITION_EOF))])
    with pytest.raises(KafkaException) as ei:
        tm.process([FakeMsg(None, -1, -1, None, None, error=KafkaError(KafkaError._FATAL, "fenced", fatal=True))])
    assert ei.value.args[0].fatal()


def test_transient_error_events_are_logged_rate_limited_and_processing_goes_on(make_app, tmp_path, tms, caplog):
    """librdkafka retries by itself after _TRANSPORT / _ALL_BROKERS_DOWN: the app must not die of them."""
    tm, _ = build(make_app, tmp_path)
    tms.append(tm)
    (t0,) = running(tm)
    down = [FakeMsg(None, -1, -1, None, None, error=KafkaError(code, "brokers away"))
            for code in (KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN)]
    with caplog.at_level(logging.WARNING):
        tm.process([*down, FakeMsg("words", 0, 10, b"a", b"x")])
        for _ in range(50):
            tm.process(down)
    assert t0.stores["c"].view.get("a") == 1 and t0.next_offsets == {t0.inputs[0]: 11}
    warnings = [r for r in caplog.records if "brokers away" in r.getMessage()]
    assert len(warnings) == 2, [r.getMessage() for r in warnings]  # once per error code, not 102 times


@pytest.mark.parametrize("what, key, value", [("key", b"\xff\xfe", b"ok"), ("value", b"ok", b"\xff\xfe")])
def test_undecodable_record_fails_with_its_coordinates(make_app, tmp_path, tms, what, key, value):
    tm, _ = build(make_app, tmp_path)
    tms.append(tm)
    (t0,) = running(tm)
    with pytest.raises(DeserializationError) as ei:
        tm.process([FakeMsg("words", 0, 41, key, value)])
    e = ei.value
    assert (e.topic, e.partition, e.offset) == ("words", 0, 41)
    assert f"the {what} of the record at words[0]@41" in str(e)
    assert "log_and_continue" in str(e)
    assert t0.next_offsets == {}


def test_log_and_continue_skips_and_counts(make_app, tmp_path, tms, caplog):
    tm, _ = build(make_app, tmp_path, deserialization_exception_handler="log_and_continue")
    tms.append(tm)
    (t0,) = running(tm)
    with caplog.at_level(logging.WARNING):
        tm.process([FakeMsg("words", 0, 1, b"a", b"\xff"), FakeMsg("words", 0, 2, b"\xff", b"x"),
                    FakeMsg("words", 0, 3, b"b", b"x")])
    assert tm._metrics.skipped_records_total == 2
    assert tm._metrics.records_processed_total == 1
    assert t0.next_offsets == {t0.inputs[0]: 4}
    assert dict(t0.stores["c"].view.all()) == {"b": 1}
    assert "words[0]@1" in caplog.text and "words[0]@2" in caplog.text


def test_user_code_failure_is_processing_error(make_app, tmp_path, tms):
    app = make_app()
    app.stream("words", key_serde=serde.STRING, value_serde=serde.STRING).map_values(lambda v: 1 / 0)
    tm = TaskManager(app.config, app._topology, StateDirectory(app.config.state_dir, "unit-app"), FakeConsumer(),
                     FakeUpdater(), Metrics(), FakeCommitter())
    tms.append(tm)
    running(tm)
    with pytest.raises(ProcessingError) as ei:
        tm.process([FakeMsg("words", 0, 9, b"k", b"v")])
    assert (ei.value.topic, ei.value.partition, ei.value.offset) == ("words", 0, 9)
    assert isinstance(ei.value.__cause__, ZeroDivisionError)
    assert tm.tasks["0_0"].next_offsets == {}


def test_send_retries_when_producer_queue_is_full(make_app, tmp_path, tms):
    tm, _ = build(make_app, tmp_path, producer=FakeProducer(buffer_errors=2))
    tms.append(tm)
    running(tm)
    tm.process([FakeMsg("words", 0, 0, b"a", b"x", timestamp=3)])
    assert tm.producer.sent == [("out", b"a", i64(1), 3)]
    assert tm.producer.polls == 2


# ---- membership adapter ----

class FakeGroupConsumer:
    def __init__(self):
        self.calls = []

    def incremental_assign(self, p):
        self.calls.append(("assign", [(x.topic, x.partition) for x in p]))

    def incremental_unassign(self, p):
        self.calls.append(("unassign", [(x.topic, x.partition) for x in p]))

    def pause(self, p):
        self.calls.append(("pause", [(x.topic, x.partition) for x in p]))


class RecordingMembershipListener:
    def __init__(self, consumer):
        self.consumer, self.calls = consumer, []

    def partitions_assigned(self, ps):
        self.calls.append(("assigned", ps, list(self.consumer.calls)))

    def partitions_revoked(self, ps):
        self.calls.append(("revoked", ps, list(self.consumer.calls)))

    def partitions_lost(self, ps):
        self.calls.append(("lost", ps, list(self.consumer.calls)))


def test_membership_assigns_paused_and_revokes_before_unassign(make_app):
    from kafka import TopicPartition as KpTP
    c = FakeGroupConsumer()
    member = SimpleNamespace(_coordinator=None)
    m = GroupMembership(make_app().config, Topology(), c, lambda tps: {}, member_factory=lambda cfg, plugin: member)
    listener = RecordingMembershipListener(c)
    m.listener = listener
    m.on_assigned({KpTP("words", 1), KpTP("words", 2)})
    m.on_revoked({KpTP("words", 1)})
    m.on_lost({KpTP("words", 2)})
    m.on_revoked({KpTP("words", 2)})  # no longer assigned: nothing to revoke or unassign twice
    # The callbacks run on kafka-python's event loop, which also sends the heartbeats: they only record.
    assert listener.calls == [] and c.calls == []
    m._apply_events()  # what poll does on the processing thread once the member's poll returned
    assert listener.calls[0] == ("assigned", [TopicPartition("words", 1), TopicPartition("words", 2)],
                                 [("assign", [("words", 1), ("words", 2)]), ("pause", [("words", 1), ("words", 2)])])
    # revoke: the listener runs while the partition is still assigned (it commits), then unassign
    assert listener.calls[1][:2] == ("revoked", [TopicPartition("words", 1)])
    assert ("unassign", [("words", 1)]) not in listener.calls[1][2]
    assert listener.calls[2][:2] == ("lost", [TopicPartition("words", 2)])
    assert listener.calls[3][:2] == ("revoked", [])
    assert c.calls[2:] == [("unassign", [("words", 1)]), ("unassign", [("words", 2)]), ("unassign", [])]
    assert isinstance(listener.calls[0][1][0], TopicPartition)


class FakeMember:
    """kafka-python's consumer as GroupMembership uses it: group metadata, commit, the coordinator's reset."""

    def __init__(self, commit_error=None):
        self.generation, self.member_id, self.commit_error = 5, "m-1", commit_error
        self.resets = []
        self._coordinator = SimpleNamespace(reset_generation=self._reset)

    def _reset(self, member_id=""):
        self.resets.append(member_id)
        self.generation, self.member_id = -1, member_id

    def group_metadata(self):
        return SimpleNamespace(group_id="unit-app", generation_id=self.generation, member_id=self.member_id,
                               group_instance_id=None)

    def commit(self, offsets):
        if self.commit_error is not None:
            raise self.commit_error


def test_membership_commit_errors_keep_their_meaning(make_app):
    """The committer tells a stale member (close the tasks as lost) from a transient failure by the code."""
    from confluent_kafka import TopicPartition as KTP
    from kafka import errors as Errors
    cases = [(Errors.CommitFailedError(Errors.IllegalGenerationError()), KafkaError.ILLEGAL_GENERATION),
             (Errors.CommitFailedError(Errors.UnknownMemberIdError()), KafkaError.UNKNOWN_MEMBER_ID),
             (Errors.CommitFailedError(Errors.RebalanceInProgressError()), KafkaError.REBALANCE_IN_PROGRESS),
             (Errors.CommitFailedError("not part of an active group"), KafkaError.ILLEGAL_GENERATION),
             (Errors.RebalanceInProgressError(), KafkaError.REBALANCE_IN_PROGRESS),
             (Errors.FencedInstanceIdError(), KafkaError.FENCED_INSTANCE_ID),
             (Errors.KafkaTimeoutError(), KafkaError._FAIL)]
    for error, code in cases:
        fm = FakeMember(commit_error=error)
        m = GroupMembership(make_app().config, Topology(), FakeGroupConsumer(), lambda tps: {},
                            member_factory=lambda cfg, plugin: fm)
        m._thread = __import__("threading").current_thread()
        with pytest.raises(KafkaException) as ei:
            m.commit([KTP("words", 0, 3)])
        assert ei.value.args[0].code() == code, (error, ei.value.args[0])
    assert m.has_generation()
    fm.generation = -1
    assert not m.has_generation()


def test_a_member_that_drops_out_reports_everything_lost_once_and_rejoins_without_a_generation(make_app):
    """After a refused commit: every task closes as lost now; kafka-python is made to see its generation as
    lost, so it rejoins (same member id) and reports every partition it then gets as newly assigned."""
    from kafka import TopicPartition as KpTP
    c, fm = FakeGroupConsumer(), FakeMember()
    m = GroupMembership(make_app().config, Topology(), c, lambda tps: {}, member_factory=lambda cfg, plugin: fm)
    m._thread = __import__("threading").current_thread()  # drop_out runs on the processing thread: at once
    listener = RecordingMembershipListener(c)
    m.listener = listener
    m.on_assigned({KpTP("words", 0), KpTP("words", 1)})
    m.drop_out()
    assert fm.resets == ["m-1"] and not m.has_generation()
    assert [(k, ps) for k, ps, _ in listener.calls[1:]] == [("lost", [TopicPartition("words", 0),
                                                                      TopicPartition("words", 1)])]
    assert c.calls[-1] == ("unassign", [("words", 0), ("words", 1)])
    m.on_lost({KpTP("words", 0), KpTP("words", 1)})  # kafka-python's own report when it rejoins: nothing left
    assert len(listener.calls) == 2
    m.on_assigned({KpTP("words", 1)})
    assert listener.calls[-1][:2] == ("assigned", [TopicPartition("words", 1)])


def test_a_refused_commit_closes_every_task_as_lost(make_app, tmp_path, tms):
    """At-least-once zombie: the committer raises TaskMigrated; no task may go on processing on a store that
    lacks the changelog records just sent, and the group member drops out and rejoins."""
    from hotstate.runtime.commit import TaskMigrated
    tm, _ = build(make_app, tmp_path)
    tms.append(tm)
    t0, t1 = running(tm, (0, 1))
    tm.process([FakeMsg("words", 0, 5, b"a", b"x")])
    dropped = []
    tm._membership = SimpleNamespace(drop_out=lambda: dropped.append(True))

    def refused(tasks):
        raise TaskMigrated("refused")
    tm._committer.commit = refused
    tm.commit()
    assert dropped == [True]
    assert t0.state is TaskState.CLOSED and t1.state is TaskState.CLOSED and tm.tasks == {}
    tm.process([FakeMsg("words", 0, 6, b"a", b"x")])  # records still in flight are not processed
    assert tm._metrics.records_processed_total == 1


# ---- exactly-once: a zombie that lost partitions commits nothing for them ----

def test_lost_partitions_under_eos_abort_the_transaction_and_rewind_the_rest(make_app, tmp_path, tms):
    consumer = FakeConsumer(committed={("words", 1): 7})
    tm, _ = build(make_app, tmp_path, kind="memory", consumer=consumer, processing_guarantee="exactly_once_v2")
    tms.append(tm)
    t0, t1 = running(tm, (0, 1))
    tm.process([FakeMsg("words", 0, 5, b"a", b"x"), FakeMsg("words", 1, 9, b"b", b"x")])
    assert t1.dirty_records() == 1
    tm.partitions_lost([TopicPartition("words", 0)])
    assert tm._committer.aborts == 1  # the transaction held output of task 0_0: never committed
    assert t0.state is TaskState.CLOSED and "0_0" not in tm.tasks
    assert t1.state is TaskState.RUNNING and t1.dirty_records() == 0  # its share of the transaction is gone
    assert consumer.seeks == [("words", 1, 7)]  # and it starts again from its last commit
    assert t1.next_offsets == t1.committed_offsets


def test_a_fenced_producer_found_while_aborting_for_lost_partitions_is_replaced(make_app, tmp_path, tms):
    """partitions_lost runs inside the group member's callback: a fatal producer error from the abort must get a
    new producer and a rewind, as anywhere else, not kill the app."""
    consumer = FakeConsumer(committed={("words", 1): 7})
    tm, _ = build(make_app, tmp_path, kind="memory", consumer=consumer, processing_guarantee="exactly_once_v2")
    tms.append(tm)
    t0, t1 = running(tm, (0, 1))
    tm.process([FakeMsg("words", 0, 5, b"a", b"x"), FakeMsg("words", 1, 9, b"b", b"x")])
    fresh = FakeProducer()

    def abort():
        raise ProducerFenced("fenced by a newer epoch")
    tm._committer.abort = abort

    def recreate_producer():  # the committer's contract: it replaces its producer, the task manager keeps none
        tm._committer.producer = fresh
        return fresh
    tm._committer.recreate_producer = recreate_producer
    tm.partitions_lost([TopicPartition("words", 0)])
    assert t0.state is TaskState.CLOSED and tm.producer is fresh
    assert t1.state is TaskState.RUNNING and t1.dirty_records() == 0 and consumer.seeks == [("words", 1, 7)]


def test_lost_partitions_under_alos_keep_the_other_tasks_work(make_app, tmp_path, tms):
    consumer = FakeConsumer()
    tm, _ = build(make_app, tmp_path, kind="memory", consumer=consumer)
    tms.append(tm)
    t0, t1 = running(tm, (0, 1))
    tm.process([FakeMsg("words", 0, 5, b"a", b"x"), FakeMsg("words", 1, 9, b"b", b"x")])
    tm.partitions_lost([TopicPartition("words", 0)])
    assert getattr(tm._committer, "aborts", 0) == 0
    assert t1.dirty_records() == 1 and consumer.seeks == []


def test_a_member_that_rejoined_under_a_new_member_id_loses_what_it_owned_even_if_it_gets_it_again(make_app):
    """kafka-python reports lost partitions only when it noticed the eviction before rejoining; a member
    frozen past its session timeout may rejoin first. Its old tasks must close and start afresh."""
    from kafka import TopicPartition as KpTP
    c = FakeGroupConsumer()
    ids = ["m-1"]
    member = SimpleNamespace(_coordinator=None, group_metadata=lambda: SimpleNamespace(member_id=ids[0]))
    m = GroupMembership(make_app().config, Topology(), c, lambda tps: {}, member_factory=lambda cfg, plugin: member)
    listener = RecordingMembershipListener(c)
    m.listener = listener
    first = [KpTP("words", 0), KpTP("words", 1)]
    m.check_membership([], first)
    m.on_assigned(set(first))
    m.check_membership(first, first)  # same member, same generation's partitions: nothing happens
    m._apply_events()  # the callbacks only record; the member's poll then does the work
    assert [k for k, *_ in listener.calls] == ["assigned"]
    ids[0] = "m-2"  # evicted, rejoined as a new member, and given partition 1 again
    m.check_membership(first, [KpTP("words", 1)])
    m._apply_events()
    assert [(k, ps) for k, ps, _ in listener.calls[1:]] == [
        ("lost", [TopicPartition("words", 0), TopicPartition("words", 1)]),
        ("assigned", [TopicPartition("words", 1)])]


def test_task_offsets_report_state_on_disk_open_tasks_and_tasks_that_left(make_app, tmp_path, tms):
    """What the member tells the group leader: per task, the changelog offset local state holds, for state
    left on disk by an earlier run, for open tasks, and for a task that just moved away."""
    tm, sd = build(make_app, tmp_path)
    tms.append(tm)
    os.makedirs(sd.root, exist_ok=True)
    left = RocksDBBackend("c", sd.store_path("0_2", "c"))
    left.write([(b"k", b"v")], 42)
    left.close()
    assert tm.task_offsets() == {"0_2": 42}
    (t0,) = running(tm, (0,))
    t0.stores["c"].backend.write([(b"a", b"1")], 7)
    assert tm.task_offsets() == {"0_2": 42, "0_0": 7}
    tm.partitions_revoked([TopicPartition("words", 0)])
    assert tm.task_offsets() == {"0_2": 42, "0_0": 7}, "a task that moved away still counts with its stored offset"
    sd.mark_closed("0_2")
    os.utime(os.path.join(sd.root, "0_2"), (0, 0))  # closed long ago
    tm.clean_obsolete_state()
    assert tm.task_offsets() == {"0_0": 7}, "cleaned-up state no longer counts"


def test_task_offsets_read_state_on_disk_without_taking_its_lock(make_app, tmp_path, tms):
    """The disk scan behind task_offsets opens stores read-only: a store someone else has open (the hotstate
    CLI, a backup tool) is still reported, and the scan never holds a lock this instance's next open of the
    store would trip over."""
    tm, sd = build(make_app, tmp_path)
    tms.append(tm)
    held = RocksDBBackend("c", sd.store_path("0_2", "c"))
    try:
        held.write([(b"k", b"v")], 42)
        assert tm.task_offsets() == {"0_2": 42}
    finally:
        held.close()
    tm.partitions_assigned([TopicPartition("words", 2)])
    assert tm.tasks["0_2"].stores["c"].backend.changelog_offset() == 42


def test_the_cleaner_keeps_the_state_of_standby_tasks_however_old_their_directory(make_app, tmp_path, tms):
    """A standby lives on for hours: its task directory's time is when it was created, not when it was last
    written. state_cleanup_delay_ms applies to tasks that are neither active nor standby here."""
    tm, sd = build(make_app, tmp_path, state_cleanup_delay_ms=1_000)
    tms.append(tm)
    added = []
    tm._updater.add_standby = added.append
    tm.standbys_assigned({"0_1"}, set())
    assert [t.id for t in added] == ["0_1"]
    os.makedirs(os.path.join(sd.root, "0_2"))
    for tid in ("0_1", "0_2"):
        os.utime(os.path.join(sd.root, tid), (0, 0))  # created long ago
    tm.clean_obsolete_state()
    assert sd.task_dirs() == ["0_1"], "the standby's state stays; the task that is nowhere here goes"
    for t in tm.standbys.values():
        t.close_stores()


# ---- exactly-once: commit_transaction failed, and the outcome is unknown ----

class TxnProducer(FakeProducer):
    """Transactional: flush delivers changelog records (offsets from 40) to the tracker; commit_transaction
    'commits' (the coordinator wrote PrepareCommit) and then answers with a retriable error, every time."""

    def __init__(self, tracker, fail_commit=True):
        super().__init__()
        self.tracker, self.fail_commit, self.queue, self.next_offset = tracker, fail_commit, [], 40

    def produce(self, topic, value=None, key=None, partition=-1, **kw):
        super().produce(topic, value, key, **kw)
        self.queue.append((topic, partition, key, value))

    def flush(self, timeout):
        for topic, partition, key, value in self.queue:
            self.tracker(None, FakeMsg(topic, max(partition, 0), self.next_offset, key, value))
            self.next_offset += 1
        self.queue = []
        return 0

    def begin_transaction(self):
        pass

    def send_offsets_to_transaction(self, offsets, metadata, timeout):
        pass

    def commit_transaction(self, timeout):
        if self.fail_commit:
            raise KafkaException(KafkaError(KafkaError._TIMED_OUT, "commit not answered", retriable=True))

    def init_transactions(self, timeout):
        pass

    def purge(self):
        pass


def test_an_unknown_commit_outcome_restores_the_tasks_instead_of_running_on(make_app, tmp_path, tms):
    """commit_transaction failed three times, but the coordinator had written PrepareCommit: the new producer's
    init_transactions completes the commit. The task must not run on from its store, which lacks the committed
    write (a key's output would go 1, 1): it restores from the changelog and its input rewinds to the group's
    committed offset, read after init_transactions (here: the commit went through, offset 11)."""
    from hotstate.runtime.commit import DeliveryTracker, ExactlyOnceCommitter
    consumer = FakeConsumer(committed={("words", 0): 11})
    app = make_app(processing_guarantee="exactly_once_v2")
    s = app.stream("words", key_serde=serde.STRING, value_serde=serde.STRING)
    s.group_by_key().count(StoreSpec("c", kind="memory")).to_stream().to("out", value_serde=serde.INT64)
    tracker = DeliveryTracker({app.config.changelog_topic("c")})
    made = []

    def new_producer():
        made.append(TxnProducer(tracker, fail_commit=False))
        return made[-1]
    member = SimpleNamespace(consumer_group_metadata=lambda: b"cgmd")
    committer = ExactlyOnceCommitter(member, TxnProducer(tracker), tracker, Metrics(), 1.0,
                                     producer_factory=new_producer)
    tm = TaskManager(app.config, app._topology, StateDirectory(app.config.state_dir, "unit-app"), consumer,
                     FakeUpdater(), Metrics(), committer)
    tms.append(tm)
    (t0,) = running(tm)
    tm.process([FakeMsg("words", 0, 10, b"a", b"x")])
    assert t0.stores["c"].view.get("a") == 1
    tm.commit()
    assert tm.producer is made[0]
    assert t0.state is TaskState.RESTORING and tm._updater.added[-1] is t0  # handed to the state updater
    assert t0.dirty_records() == 0 and t0.stores["c"].backend.get(b"a") is None
    assert ("words", 0) in consumer.paused and consumer.seeks == [("words", 0, 11)]
    assert t0.committed_offsets == t0.next_offsets == {t0.inputs[0]: 11}
    assert not tm.all_running()
    tm.process([FakeMsg("words", 0, 11, b"a", b"x")])  # nothing runs on the stale store meanwhile
    assert tm.producer.sent == []
    # The state updater replays the committed changelog record (a=1 at offset 40), then hands the task back.
    t0.stores["c"].backend.write([(b"a", i64(1))], 41)
    tm._updater.restored.append(t0)
    tm.handle_restored()
    assert t0.state is TaskState.RUNNING and consumer.resumed[-1] == ("words", 0)
    tm.process([FakeMsg("words", 0, 11, b"a", b"x")])
    assert tm.producer.sent[-1] == ("out", b"a", i64(2), 0)  # 1, 2: not 1, 1


# ---- in-memory stores across standby <-> active on this instance ----

def test_a_promoted_in_memory_standby_hands_its_state_to_the_active_task(make_app, tmp_path, tms):
    """The standby's offset was reported to the assignor as held; promotion must keep that state, so the
    active task replays only the standby's lag (the restore starts at the store's changelog offset)."""
    tm, _ = build(make_app, tmp_path, kind="memory")
    tms.append(tm)
    tm.standbys_assigned({"0_0"}, set())
    standby = tm.standbys["0_0"]
    standby.stores["c"].backend.restore([(b"a", i64(3))], 40)  # what the state updater tailed
    assert tm.task_offsets() == {"0_0": 40}
    tm.partitions_assigned([TopicPartition("words", 0)])
    assert tm.standbys == {} and "0_0" not in tm._updater.standbys
    active = tm.tasks["0_0"]
    assert active.stores["c"].backend.changelog_offset() == 40, "the restore must start at the standby's offset"
    assert active.stores["c"].view.get("a") == 3
    assert tm.task_offsets() == {"0_0": 40}
    with pytest.raises(StoreClosedError):
        standby.stores["c"].view.get("a")  # the standby's own view is closed; its data lives on in the active


def test_an_in_memory_active_task_revoked_into_a_standby_here_keeps_its_state(make_app, tmp_path, tms):
    """Kafka Streams recycles an active task that becomes a standby on the same instance: an in-memory store
    keeps its data and offset instead of tailing its changelog from the start again."""
    tm, _ = build(make_app, tmp_path, kind="memory")
    tms.append(tm)
    (t0,) = running(tm)
    t0.stores["c"].backend.write([(b"a", i64(3))], 40)
    tm.partitions_revoked([TopicPartition("words", 0)])
    assert t0.state is TaskState.CLOSED
    assert tm.task_offsets() == {"0_0": 40}, "held until this rebalance's standby assignment"
    tm.standbys_assigned({"0_0"}, set())
    store = tm.standbys["0_0"].stores["c"]
    assert store.backend.changelog_offset() == 40 and store.backend.get(b"a") == i64(3)
    assert tm.task_offsets() == {"0_0": 40}


def test_in_memory_state_of_a_revoked_task_that_is_not_a_standby_here_is_dropped_and_not_reported(
        make_app, tmp_path, tms):
    tm, _ = build(make_app, tmp_path, kind="memory")
    tms.append(tm)
    (t0,) = running(tm)
    t0.stores["c"].backend.write([(b"a", i64(3))], 40)
    tm.partitions_revoked([TopicPartition("words", 0)])
    tm.standbys_assigned({"0_1"}, set())
    assert tm.task_offsets() == {"0_1": 0}, "in-memory state that is not kept is not reported as held"
    assert tm.standbys["0_1"].stores["c"].backend.changelog_offset() is None
    tm.partitions_assigned([TopicPartition("words", 0)])
    assert tm.tasks["0_0"].stores["c"].backend.changelog_offset() is None


def test_in_memory_state_of_a_lost_task_is_not_kept(make_app, tmp_path, tms):
    tm, _ = build(make_app, tmp_path, kind="memory")
    tms.append(tm)
    (t0,) = running(tm)
    t0.stores["c"].backend.write([(b"a", i64(3))], 40)
    tm.partitions_lost([TopicPartition("words", 0)])
    assert tm.task_offsets() == {}
    tm.standbys_assigned({"0_0"}, set())
    assert tm.standbys["0_0"].stores["c"].backend.changelog_offset() is None


def test_every_assignment_counts_as_a_rebalance_even_one_that_adds_no_partition(make_app, tmp_path, tms):
    """kafka-python calls on_partitions_assigned only when partitions were added (cooperative), so counting
    there missed most rebalances (the soak saw 23 and counted 1). standbys_assigned follows every assignment."""
    tm, _ = build(make_app, tmp_path)
    tms.append(tm)
    tm.partitions_assigned([TopicPartition("words", 0)])
    tm.standbys_assigned(set(), set())
    tm.standbys_assigned(set(), set())  # a rebalance that moved nothing here
    assert tm._metrics.rebalances_total == 2


# ---- exactly-once: a rewind while the group's committed offsets stay unreadable ----

def _unreadable(tps, timeout):
    raise KafkaException(KafkaError(KafkaError._TIMED_OUT, "reading committed offsets failed: KafkaTimeoutError"))


def test_a_rewind_goes_to_its_own_committed_offsets_when_the_groups_stay_unreadable(make_app, tmp_path, tms):
    """After a broker restart the group answered UNSTABLE_OFFSET_COMMIT for minutes (docs/faults.md, session 7) and
    the rewind stopped the app. After a known abort each task's own last commit is exact: once the reads have failed
    for longer than transaction_timeout_ms, the rewind seeks there."""
    consumer = FakeConsumer()
    tm, _ = build(make_app, tmp_path, kind="memory", consumer=consumer, processing_guarantee="exactly_once_v2",
                  transaction_timeout_ms=300, rewind_timeout_ms=20_000)
    tms.append(tm)
    t0, t1 = running(tm, (0, 1))
    tm.process([FakeMsg("words", 0, 5, b"a", b"x"), FakeMsg("words", 1, 9, b"b", b"x")])
    for t in (t0, t1):
        t.mark_committed()  # as a successful commit does: 0 at 6, 1 at 10
    tm.process([FakeMsg("words", 0, 6, b"a", b"x"), FakeMsg("words", 1, 10, b"b", b"x")])
    tm._read_committed = _unreadable
    started = time.monotonic()
    tm.rewind([t0, t1])
    assert 0.3 <= time.monotonic() - started < 10
    assert sorted(consumer.seeks) == [("words", 0, 6), ("words", 1, 10)]
    assert t0.dirty_records() == 0 and t1.dirty_records() == 0
    assert tm._metrics.rewinds_to_known_offsets_total == 1


def test_a_rewind_of_a_task_that_never_committed_here_still_needs_the_groups_offsets(make_app, tmp_path, tms):
    """A task without a commit of its own knows nothing of the group's offsets: no fallback, the app stops with the
    error after rewind_timeout_ms."""
    consumer = FakeConsumer()
    tm, _ = build(make_app, tmp_path, kind="memory", consumer=consumer, processing_guarantee="exactly_once_v2",
                  transaction_timeout_ms=300, rewind_timeout_ms=800)
    tms.append(tm)
    t0, t1 = running(tm, (0, 1))
    tm.process([FakeMsg("words", 0, 5, b"a", b"x"), FakeMsg("words", 1, 9, b"b", b"x")])
    t0.mark_committed()  # t1 never committed here
    tm._read_committed = _unreadable
    with pytest.raises(RuntimeError, match="cannot read the committed input offsets"):
        tm.rewind([t0, t1])
    assert consumer.seeks == [] and tm._metrics.rewinds_to_known_offsets_total == 0
