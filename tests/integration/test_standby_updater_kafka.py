"""Standby tasks in the state updater against the real broker: a standby backed by RocksDB stores tails its
changelogs (read_committed: aborted transactions never reach it), its stored offsets follow the changelog
ends, remove_standby stops it with data and offsets consistent, and a kill -9 while it tails leaves each
store at a flushed offset with its data never behind it, which tailing from that offset repairs."""
from __future__ import annotations

import os
import signal
import struct
import subprocess
import sys
import textwrap
import threading
import time
import uuid

import pytest
from confluent_kafka import Producer

from hotstate import serde
from hotstate.config import Config
from hotstate.dsl.nodes import SourceNode
from hotstate.dsl.topology import SubTopology
from hotstate.kafka import clients
from hotstate.observe.listener import StandbyUpdateListener, SuspendReason
from hotstate.observe.metrics import Metrics
from hotstate.records import TopicPartition
from hotstate.runtime.state_updater import StateUpdater
from hotstate.runtime.task import Task, TaskStore
from hotstate.state.overlay import Overlay
from hotstate.state.rocksdb_store import RocksDBBackend
from hotstate.state.store import KeyValueStore, StoreSpec
from kafka_helpers import wait_for

pytestmark = pytest.mark.integration

COMPACTED = {"cleanup.policy": "compact", "min.compaction.lag.ms": "3600000"}


def standby_task(state_dir, changelogs: dict[str, str], partition: int = 0) -> Task:
    """A task whose stores (name -> changelog topic) are RocksDB databases under state_dir, built the way the
    task manager builds them."""
    stores = {}
    for name, topic in changelogs.items():
        spec = StoreSpec(name, serde.BYTES, serde.BYTES)
        path = os.path.join(str(state_dir), f"0_{partition}", name)

        def reopen(name=name, path=path):
            return RocksDBBackend(name, path)

        backend = reopen()
        overlay = Overlay(backend)
        stores[name] = TaskStore(spec, TopicPartition(topic, partition), backend, overlay,
                                 KeyValueStore(spec, overlay), reopen)
    return Task(SubTopology(0, [SourceNode("in", serde.BYTES, serde.BYTES)]), partition, stores)


def start_updater(bootstrap: str, listener=None) -> StateUpdater:
    cfg = Config.from_kwargs(app_id=f"it-standby-{uuid.uuid4().hex[:8]}", bootstrap_servers=bootstrap)
    u = StateUpdater(cfg, lambda: clients.restore_consumer(cfg), None, Metrics(), standby_listener=listener)
    u.start()
    return u


class Recorder(StandbyUpdateListener):
    def __init__(self):
        self.lock = threading.Lock()
        self.calls = []
        self.threads = set()

    def _add(self, call):
        with self.lock:
            self.calls.append(call)
            self.threads.add(threading.current_thread().name)

    def on_update_start(self, partition, store_name, starting_offset):
        self._add(("start", partition.topic, store_name, starting_offset))

    def on_batch_loaded(self, partition, store_name, task_id, batch_end_offset, batch_size, current_end_offset):
        self._add(("batch", partition.topic, store_name, task_id, batch_end_offset, batch_size, current_end_offset))

    def on_update_suspended(self, partition, store_name, store_offset, current_end_offset, reason):
        self._add(("suspended", partition.topic, store_name, store_offset, current_end_offset, reason))

    def loaded(self, store: str) -> int:
        with self.lock:
            return sum(c[5] for c in self.calls if c[0] == "batch" and c[2] == store)


def produce(producer: Producer, topic: str, records) -> None:
    for key, value in records:
        producer.produce(topic, value, key, partition=0)
    assert producer.flush(30) == 0


def read_table(store) -> dict[bytes, bytes]:
    return dict(store.backend.range(None, None))


def stored(task: Task) -> dict[str, int | None]:
    return {name: s.backend.changelog_offset() for name, s in task.stores.items()}


def test_standby_follows_committed_records_and_stops_consistent(kafka, tmp_state_dir):
    topics = {name: kafka.create_topic(partitions=1, config=COMPACTED, prefix=f"it-standby-{name}")
              for name in ("a", "b")}
    plain = Producer({"bootstrap.servers": kafka.bootstrap, "enable.idempotence": True, "linger.ms": 5})
    expected = {name: {} for name in topics}

    def send(name, records, producer=plain):
        produce(producer, topics[name], records)
        expected[name].update(records)

    send("a", [(b"a%03d" % i, b"v0-%d" % i) for i in range(300)])
    send("b", [(b"b%03d" % i, b"v0-%d" % i) for i in range(120)])

    task = standby_task(tmp_state_dir, topics)
    listener = Recorder()
    u = start_updater(kafka.bootstrap, listener)
    try:
        u.add_standby(task)
        wait_for(lambda: stored(task) == {"a": 300, "b": 120}, "the standby to catch up", 30)
        # no transaction so far: the stored offset is the number of records applied
        assert listener.loaded("a") == 300 and listener.loaded("b") == 120
        assert {n: read_table(s) for n, s in task.stores.items()} == expected
        wait_for(lambda: u.standby_lags() == {task.id: 0}, "the lag to reach 0", 10)
        assert u.standby_offsets() == {task.id: 420}
        assert ("start", topics["a"], "a", 0) in listener.calls

        # produce while it tails: updates, deletes, a committed and an aborted transaction
        send("a", [(b"a%03d" % i, b"v1-%d" % i) for i in range(0, 300, 3)])
        send("a", [(b"a%03d" % i, None) for i in range(1, 300, 7)])
        txn = Producer({"bootstrap.servers": kafka.bootstrap, "transactional.id": f"it-standby-{uuid.uuid4().hex}"})
        txn.init_transactions(30)
        txn.begin_transaction()
        send("b", [(b"b%03d" % i, b"txn-%d" % i) for i in range(0, 120, 2)], txn)
        send("a", [(b"a-txn", b"committed")], txn)
        txn.commit_transaction(30)
        aborted = [(b"b%03d" % i, b"ABORTED") for i in range(120)] + [(b"b-aborted", b"ABORTED")]
        txn.begin_transaction()
        produce(txn, topics["b"], aborted)  # not in expected
        produce(txn, topics["a"], [(b"a-aborted", b"ABORTED")])
        txn.abort_transaction(30)
        txn.begin_transaction()
        send("b", [(b"b-late", b"after the abort")], txn)
        txn.commit_transaction(30)

        ends = {n: kafka.ends(t)[0] for n, t in topics.items()}
        wait_for(lambda: stored(task) == ends, f"the stored offsets to reach the changelog ends {ends}", 30)
        wait_for(lambda: u.standby_lags() == {task.id: 0}, "the lag to reach 0 past the markers", 10)
        tables = {n: read_table(s) for n, s in task.stores.items()}
        assert tables == {n: {k: v for k, v in t.items() if v is not None} for n, t in expected.items()}
        assert b"ABORTED" not in {v for t in tables.values() for v in t.values()}
        # every committed record was applied once; the offsets also cover markers and aborted records
        committed_b = 120 + 60 + 1
        assert listener.loaded("b") == committed_b and ends["b"] == committed_b + len(aborted) + 3  # 3 markers
        assert u._metrics.snapshot()["standby_updating_tasks"] == 1

        fut = u.remove_standby(task.id, SuspendReason.MIGRATED)
        assert fut.result(timeout=30) is task
        assert stored(task) == ends  # after removal: exactly what was applied, up to the end
        suspended = sorted(c for c in listener.calls if c[0] == "suspended")
        assert suspended == sorted(("suspended", topics[n], n, ends[n], ends[n], SuspendReason.MIGRATED)
                                   for n in topics)
        assert u.standby_lags() == {} and u._metrics.standby_updating_tasks == 0

        # nothing is written after the future resolved
        produce(plain, topics["a"], [(b"a000", b"after removal")])
        time.sleep(1.0)
        assert stored(task) == ends and task.stores["a"].backend.get(b"a000") == expected["a"][b"a000"]
        assert listener.threads == {"hotstate-state-updater"}
    finally:
        u.shutdown(10)
    assert u.fatal_error is None
    # what the stores hold is on disk: closing flushes the writes made without the WAL
    task.close_stores()
    for name, s in task.stores.items():
        again = s.reopen()
        try:
            assert again.changelog_offset() == ends[name]
            assert dict(again.range(None, None)) == tables[name]
        finally:
            again.close()


_CHILD = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {tests!r})
    from integration.test_standby_updater_kafka import standby_task, start_updater
    from hotstate.runtime.changelog_reader import ChangelogReader
    ChangelogReader.STANDBY_FLUSH_INTERVAL_S = 0.2
    task = standby_task({state_dir!r}, {{"s": {topic!r}}})
    u = start_updater({bootstrap!r})
    u.add_standby(task)
    while True:
        print(task.stores["s"].backend.changelog_offset(), flush=True)
        time.sleep(0.05)
""")


def test_kill_9_while_tailing_leaves_a_consistent_store(kafka, tmp_state_dir):
    topic = kafka.create_topic(partitions=1, config=COMPACTED, prefix="it-standby-kill")
    keys = [b"k%02d" % i for i in range(40)]
    log: list[tuple[int, bytes, int]] = []  # (offset, key, seq): every record, from the delivery reports
    producer = Producer({"bootstrap.servers": kafka.bootstrap, "enable.idempotence": True, "linger.ms": 2})

    def report(err, msg):
        assert err is None, err
        log.append((msg.offset(), msg.key(), struct.unpack(">q", msg.value())[0]))

    seq = 0

    def produce_some(n):
        nonlocal seq
        for _ in range(n):
            producer.produce(topic, struct.pack(">q", seq), keys[seq % len(keys)], partition=0, on_delivery=report)
            seq += 1
        producer.poll(0)

    produce_some(5000)
    producer.flush(30)
    tests_dir = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    code = _CHILD.format(tests=tests_dir, state_dir=str(tmp_state_dir), topic=topic, bootstrap=kafka.bootstrap)
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    try:
        offsets = []
        deadline = time.monotonic() + 60
        while not offsets or (offsets[-1] or 0) < 5000:  # caught up with the first records
            if child.poll() is not None:
                pytest.fail(f"the child exited ({child.returncode}):\n{child.stderr.read()[-3000:]}")
            assert time.monotonic() < deadline, "the child did not catch up"
            line = child.stdout.readline().strip()
            offsets.append(int(line) if line not in ("", "None") else None)
        # keep producing while it tails and flushes; kill it in the middle of that
        until = time.monotonic() + 2.5
        while time.monotonic() < until:
            produce_some(200)
            time.sleep(0.01)
        os.kill(child.pid, signal.SIGKILL)
        child.wait(10)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(10)
    producer.flush(30)
    log.sort()

    backend = RocksDBBackend("s", os.path.join(str(tmp_state_dir), "0_0", "s"))
    try:
        offset = backend.changelog_offset()
        data = {k: struct.unpack(">q", v)[0] for k, v in backend.range(None, None)}
    finally:
        backend.close()
    assert offset is not None and offset >= 5000, f"nothing durable after {offset}: the flushes did not run"
    # the data is never behind the offset: each key holds at least its value as of the offset
    as_of_offset = {}
    for off, key, s in log:
        if off < offset:
            as_of_offset[key] = s
    behind = {k: (data.get(k), s) for k, s in as_of_offset.items() if data.get(k, -1) < s}
    assert not behind, f"data behind the stored offset {offset}: {dict(list(behind.items())[:5])}"
    assert set(data.values()) <= {s for _, _, s in log}

    # tailing from that offset repairs the rest
    task = standby_task(tmp_state_dir, {"s": topic})
    u = start_updater(kafka.bootstrap)
    try:
        u.add_standby(task)
        end = log[-1][0] + 1
        wait_for(lambda: task.stores["s"].backend.changelog_offset() == end, "the repair to reach the end", 30)
        final = {}
        for _, key, s in log:
            final[key] = s
        got = {k: struct.unpack(">q", v)[0] for k, v in task.stores["s"].backend.range(None, None)}
        assert got == final
        assert u.remove_standby(task.id, SuspendReason.MIGRATED).result(timeout=30) is task
    finally:
        u.shutdown(10)
        task.close_stores()
