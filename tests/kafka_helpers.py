"""Helpers for tests against the real broker from ``scripts/kafka``: start it, create topics, produce keyed
records, read topics to the end, read watermarks, build the word-count app of issue 2.

Other sessions share the broker: every name a test makes carries a uuid suffix, and a test deletes only
the topics and groups it made.
"""
from __future__ import annotations

import logging
import os
import random
import struct
import subprocess
import threading
import time
import uuid
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Producer
from confluent_kafka import TopicPartition as KTopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

import hotstate
from hotstate import serde

REPO = Path(__file__).resolve().parents[1]
KAFKA_SCRIPT = REPO / "scripts" / "kafka"

log = logging.getLogger("tests.kafka")


def start_broker() -> str:
    """Runs ``scripts/kafka start`` (idempotent; honours HOTSTATE_KAFKA_PORT) and returns the bootstrap address.
    Raises if the broker cannot be started: tests against a broker must never be skipped silently."""
    proc = subprocess.run([str(KAFKA_SCRIPT), "start"], capture_output=True, text=True, timeout=600)
    lines = [ln.strip() for ln in proc.stdout.splitlines() if ln.strip()]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(
            f"`scripts/kafka start` failed (exit {proc.returncode}); the integration tests need the local broker.\n"
            f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    bootstrap = lines[-1]
    port = os.environ.get("HOTSTATE_KAFKA_PORT")
    if port and not bootstrap.endswith(f":{port}"):
        raise RuntimeError(f"HOTSTATE_KAFKA_PORT={port} but scripts/kafka printed {bootstrap!r}")
    return bootstrap


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def partition_for(key: str, partitions: int) -> int:
    """Deterministic key -> partition, so a test knows where each key lives."""
    return zlib.crc32(key.encode()) % partitions


def int64(data: bytes | None) -> int | None:
    return None if data is None else struct.unpack(">q", data)[0]


def utf8(data: bytes | None) -> str | None:
    return None if data is None else data.decode()


@dataclass
class Kafka:
    """One test's view of the broker. Tracks what the test creates and deletes it at teardown."""

    bootstrap: str
    admin: AdminClient
    topics: list[str] = field(default_factory=list)
    app_ids: list[str] = field(default_factory=list)
    timeout_s: float = 30.0

    # ---- names ----
    def app_id(self, prefix: str = "it-app") -> str:
        app_id = unique(prefix)
        self.app_ids.append(app_id)
        return app_id

    def changelog(self, app_id: str, store: str) -> str:
        return f"{app_id}-{store}-changelog"

    # ---- topics ----
    def create_topic(self, name: str | None = None, partitions: int = 1, config: dict[str, str] | None = None,
                     prefix: str = "it-topic") -> str:
        name = name or unique(prefix)
        self.topics.append(name)
        fut = self.admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1,
                                                 config=config or {})], request_timeout=self.timeout_s)[name]
        fut.result(timeout=self.timeout_s)
        self._wait_for(lambda: self._partition_count(name) == partitions, f"topic {name} to appear")
        return name

    def recreate_topic(self, name: str, partitions: int, config: dict[str, str] | None = None) -> None:
        """Delete ``name`` and create it again (retrying while the broker still has it marked for deletion)."""
        self.delete_topics([name])
        deadline = time.monotonic() + 60
        while True:
            fut = self.admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1,
                                                     config=config or {})], request_timeout=self.timeout_s)[name]
            try:
                fut.result(timeout=self.timeout_s)
                break
            except KafkaException as exc:
                if exc.args[0].name() != "TOPIC_ALREADY_EXISTS" or time.monotonic() > deadline:
                    raise
                time.sleep(0.3)
        self._wait_for(lambda: self._partition_count(name) == partitions, f"topic {name} to reappear")
        # The new leader must serve requests before an app reads its watermarks.
        self._wait_for(lambda: self._watermarks_ok(name, partitions), f"topic {name} to have leaders")

    def delete_topics(self, names: Iterable[str]) -> None:
        names = list(names)
        if not names:
            return
        for name, fut in self.admin.delete_topics(names, operation_timeout=self.timeout_s).items():
            try:
                fut.result(timeout=self.timeout_s)
            except KafkaException as exc:
                if exc.args[0].name() != "UNKNOWN_TOPIC_OR_PART":
                    raise
        self._wait_for(lambda: not (set(names) & set(self.admin.list_topics(timeout=10).topics)),
                       f"topics {names} to disappear")

    def _partition_count(self, name: str) -> int | None:
        md = self.admin.list_topics(topic=name, timeout=10)
        t = md.topics.get(name)
        if t is None or t.error is not None:
            return None
        return len(t.partitions)

    def _watermarks_ok(self, name: str, partitions: int) -> bool:
        try:
            self.watermarks(name, partitions)
            return True
        except KafkaException:
            return False

    def _wait_for(self, pred: Callable[[], bool], what: str, timeout_s: float | None = None) -> None:
        wait_for(pred, what, timeout_s or self.timeout_s)

    # ---- produce ----
    _producer: Producer | None = None

    def producer(self) -> Producer:
        """One idempotent producer per test, reused by every produce call."""
        if self._producer is None:
            self._producer = Producer({"bootstrap.servers": self.bootstrap, "enable.idempotence": True,
                                       "linger.ms": 5})
        return self._producer

    def produce(self, topic: str, records: Iterable[tuple[Any, Any]], partitions: int | None = None,
                timeout_s: float | None = None) -> int:
        """Produce (key, value) records (str keys/values are UTF-8 encoded, bytes as is). With ``partitions``
        each key goes to ``partition_for(key, partitions)``; records of one key keep their order. Returns the
        count, after every record is acknowledged (within ``timeout_s``, default the helper's timeout)."""
        producer = self.producer()
        errors: list = []

        def on_delivery(err: Any, msg: Any) -> None:
            if err is not None:
                errors.append(err)

        n = 0
        for key, value in records:
            kb = key.encode() if isinstance(key, str) else key
            vb = value.encode() if isinstance(value, str) else value
            kwargs = {} if partitions is None else {"partition": partition_for(key, partitions)}
            while True:
                try:
                    producer.produce(topic, vb, kb, on_delivery=on_delivery, **kwargs)
                    break
                except BufferError:
                    producer.poll(0.05)
            n += 1
        timeout_s = self.timeout_s if timeout_s is None else timeout_s
        left = producer.flush(timeout_s)
        assert left == 0, f"{left} records to {topic} not delivered within {timeout_s}s"
        assert not errors, f"producing to {topic} failed: {errors[:3]}"
        return n

    def produce_to(self, topic: str, partition: int, records: Iterable[tuple[bytes | None, bytes | None]]) -> int:
        """Produce raw (key, value) bytes to one partition, in order."""
        producer = self.producer()
        n = 0
        for key, value in records:
            producer.produce(topic, value, key, partition=partition)
            n += 1
        assert producer.flush(self.timeout_s) == 0
        return n

    # ---- read ----
    def consumer(self) -> Consumer:
        return Consumer({"bootstrap.servers": self.bootstrap, "group.id": unique("it-reader"),
                         "enable.auto.commit": False, "isolation.level": "read_committed",
                         "auto.offset.reset": "earliest", "enable.partition.eof": False})

    def watermarks(self, topic: str, partitions: int | None = None) -> dict[int, tuple[int, int]]:
        """partition -> (low, high) watermark (high = the next offset; no transactions: the LSO)."""
        if partitions is None:
            partitions = self._partition_count(topic)
            assert partitions, f"topic {topic} does not exist"
        c = self.consumer()
        try:
            return {p: c.get_watermark_offsets(KTopicPartition(topic, p), timeout=10, cached=False)
                    for p in range(partitions)}
        finally:
            c.close()

    def ends(self, topic: str) -> dict[int, int]:
        return {p: high for p, (low, high) in self.watermarks(topic).items()}

    def read_all(self, topic: str, timeout_s: float | None = None) -> list[Any]:
        """Every record of ``topic`` (read_committed) up to its current end, as confluent_kafka Messages,
        in offset order per partition."""
        marks = self.watermarks(topic)
        want = {p: high for p, (low, high) in marks.items() if high > low}
        out: list[Any] = []
        if not want:
            return out
        c = self.consumer()
        try:
            c.assign([KTopicPartition(topic, p, OFFSET_BEGINNING) for p in want])
            deadline = time.monotonic() + (timeout_s or self.timeout_s)
            done: set[int] = set()
            while len(done) < len(want):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"reading {topic} to its end {want} timed out; done {sorted(done)}")
                for msg in c.consume(1000, 0.2):
                    if msg.error() is not None:
                        raise KafkaException(msg.error())
                    p = msg.partition()
                    if p in done:
                        continue
                    out.append(msg)
                    if msg.offset() >= want[p] - 1:
                        done.add(p)
                # Under read_committed the last offset may be a control record: go by the position too.
                for tp in c.position([KTopicPartition(topic, p) for p in want if p not in done]):
                    if tp.offset >= want[tp.partition]:
                        done.add(tp.partition)
        finally:
            c.close()
        return out

    def read_table(self, topic: str, key: Callable[[bytes | None], Any] = utf8,
                   value: Callable[[bytes | None], Any] = int64) -> dict[Any, Any]:
        """The latest value per key of ``topic`` (a tombstone removes the key)."""
        table: dict[Any, Any] = {}
        for msg in self.read_all(topic):
            k, v = key(msg.key()), value(msg.value())
            if v is None:
                table.pop(k, None)
            else:
                table[k] = v
        return table

    def committed(self, group: str, topic: str, partitions: int) -> dict[int, int]:
        """The group's committed offsets (-1001 if none), read without joining the group."""
        c = Consumer({"bootstrap.servers": self.bootstrap, "group.id": group, "enable.auto.commit": False})
        try:
            tps = c.committed([KTopicPartition(topic, p) for p in range(partitions)], timeout=10)
            return {tp.partition: tp.offset for tp in tps}
        finally:
            c.close()

    # ---- teardown ----
    def cleanup(self) -> None:
        if self._producer is not None:
            self._producer.flush(10)
            self._producer = None
        try:
            existing = set(self.admin.list_topics(timeout=10).topics)
            mine = {t for t in existing if t in self.topics or any(t.startswith(a + "-") for a in self.app_ids)}
            if mine:
                for fut in self.admin.delete_topics(sorted(mine), operation_timeout=10).values():
                    try:
                        fut.result(timeout=15)
                    except Exception:
                        pass
            if self.app_ids:
                for fut in self.admin.delete_consumer_groups(self.app_ids, request_timeout=10).values():
                    try:
                        fut.result(timeout=15)
                    except Exception:
                        pass
        except Exception:
            log.exception("cleaning up test topics failed (ignored)")


def wait_for(pred: Callable[[], bool], what: str, timeout_s: float = 30.0, interval_s: float = 0.05,
             detail: Callable[[], object] | None = None) -> None:
    """``detail``: what to show on a timeout (e.g. each instance's tasks), to tell why it did not happen."""
    deadline = time.monotonic() + timeout_s
    while not pred():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s}s waiting for {what}"
                               + (f"; {detail()}" if detail is not None else ""))
        time.sleep(interval_s)


# ---------------------------------------------------------------------------------------------------------
# The word-count app of issue 2 and a recording restore listener.

def words(n_distinct: int, prefix: str = "w") -> list[str]:
    return [f"{prefix}{i:04d}" for i in range(n_distinct)]


def word_records(rng: Any, vocabulary: list[str], n: int) -> list[tuple[str, str]]:
    """n (word, "x") records, words drawn with a skew so some words are counted many times."""
    weights = [1.0 / (1 + i % 17) for i in range(len(vocabulary))]
    return [(w, "x") for w in rng.choices(vocabulary, weights=weights, k=n)]


def true_counts(records: Iterable[tuple[str, Any]]) -> Counter:
    return Counter(k for k, _ in records)


@dataclass
class RestoreEvent:
    kind: str  # start / batch / end
    topic: str
    partition: int
    store: str
    a: int  # start: start_offset; batch: batch_end_offset; end: total_restored
    b: int = 0  # start: end_offset; batch: num_restored
    thread: str = ""


class RecordingListener(hotstate.RestoreListener):
    """A restore listener that records every callback, with the name of the thread that made it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.events: list[RestoreEvent] = []

    def _add(self, ev: RestoreEvent) -> None:
        ev.thread = threading.current_thread().name
        with self._lock:
            self.events.append(ev)

    def on_restore_start(self, partition, store_name, start_offset, end_offset):  # noqa: ANN001
        self._add(RestoreEvent("start", partition.topic, partition.partition, store_name, start_offset, end_offset))

    def on_batch_restored(self, partition, store_name, batch_end_offset, num_restored):  # noqa: ANN001
        self._add(RestoreEvent("batch", partition.topic, partition.partition, store_name, batch_end_offset, num_restored))

    def on_restore_end(self, partition, store_name, total_restored):  # noqa: ANN001
        self._add(RestoreEvent("end", partition.topic, partition.partition, store_name, total_restored))

    # ---- queries ----
    def of(self, kind: str, partition: int | None = None) -> list[RestoreEvent]:
        with self._lock:
            return [e for e in self.events if e.kind == kind and (partition is None or e.partition == partition)]

    def starts(self) -> dict[int, tuple[int, int]]:
        """partition -> (start_offset, end_offset); at most one restore per partition is expected."""
        out: dict[int, tuple[int, int]] = {}
        for e in self.of("start"):
            assert e.partition not in out, f"two restores of partition {e.partition}: {self.events}"
            out[e.partition] = (e.a, e.b)
        return out

    def totals(self) -> dict[int, int]:
        """partition -> total_restored reported by on_restore_end."""
        return {e.partition: e.a for e in self.of("end")}

    def total_restored(self) -> int:
        return sum(e.a for e in self.of("end"))


def build_word_count(bootstrap: str, app_id: str, state_dir: Any, source: str, sink: str | None,
                     store: Any = "word-counts", listener: Any = None, **config: Any) -> Any:
    """The issue's word-count app, built through the public API only."""
    config.setdefault("commit_interval_ms", 100)
    config.setdefault("processing_guarantee", "at_least_once")
    app = hotstate.App(app_id=app_id, bootstrap_servers=bootstrap, state_dir=str(state_dir), **config)
    counts = (app.stream(source, key_serde=serde.STRING, value_serde=serde.STRING)
                 .group_by_key()
                 .count(store=store))
    if sink is not None:
        counts.to_stream().to(sink, value_serde=serde.INT64)
    if listener is not None:
        app.set_restore_listener(listener)
    return app


def wait_processed(app: Any, n: int, timeout_s: float = 60.0) -> None:
    """Polls app.metrics()['records_processed_total'] until it reaches n; fails fast if the app failed."""
    deadline = time.monotonic() + timeout_s
    while True:
        m = app.metrics()
        if m["records_processed_total"] >= n:
            return
        if app.state is hotstate.AppState.ERROR:
            app.wait_until_running(timeout_s=0)  # raises the app's error
        if time.monotonic() > deadline:
            raise TimeoutError(f"processed {m['records_processed_total']} of {n} records within {timeout_s}s "
                               f"(state {app.state}, metrics {m})")
        time.sleep(0.05)


def store_offsets(app: Any, store: str) -> dict[int, int | None]:
    """partition -> the changelog offset the task's local store holds (from app.tasks())."""
    out = {}
    for t in app.tasks():
        info = t.stores[store]
        out[info.changelog.partition] = info.changelog_offset
    return out


def wait_store_offsets_at_end(kafka: Kafka, app: Any, store: str, changelog: str, timeout_s: float = 30.0,
                              markers: int = 0, source: str | None = None) -> dict[int, int]:
    """Waits until the work processed so far is committed, then until every task's in-store changelog offset
    equals the changelog's end less ``markers`` (1 under exactly-once: the last transaction's commit marker
    follows the store's offset); returns the ends. Committed means: with ``source``, the group's committed
    offsets of it reached its end (every input record processed and committed); without, a commit that
    started after this call (which never comes if the last one went through just before the call and no
    input follows: a commit with nothing to commit is not counted)."""
    state: dict[str, Any] = {}
    commits = app.metrics()["commit_total"]
    source_ends = kafka.ends(source) if source is not None else None

    def committed() -> bool:
        if source_ends is None:
            return app.metrics()["commit_total"] > commits
        try:
            got = kafka.committed(app.config.group_id, source, len(source_ends))
        except KafkaException:
            return False
        return all(got.get(p, -1) >= end for p, end in source_ends.items())

    def at_end() -> bool:
        if not committed():
            return False
        ends = kafka.ends(changelog)
        offs = store_offsets(app, store)
        state.update(ends=ends, offs=offs)
        return bool(offs) and all((offs.get(p) or 0) == end - markers for p, end in ends.items())

    try:
        wait_for(at_end, f"store offsets of {store} to reach the changelog end", timeout_s, 0.1)
    except TimeoutError as exc:
        raise AssertionError(f"{exc}: store offsets {state.get('offs')} vs changelog ends {state.get('ends')}") from None
    return state["ends"]


# ---------------------------------------------------------------------------------------------------------
# A word-count deployment a test runs several times, and the listener checks.

class WordCount:
    """One word-count deployment (input, output, app_id, state dir) that a test starts several times."""

    def __init__(self, kafka: Kafka, state_dir: Any, seed: int, vocabulary: int = 300, store: Any = "word-counts",
                 partitions: int = 4):
        self.kafka = kafka
        self.state_dir = state_dir
        self.partitions = partitions
        self.rng = random.Random(seed)
        self.vocab = words(vocabulary)
        self.store_spec = store
        self.store = store if isinstance(store, str) else store.name
        self.source = kafka.create_topic(partitions=self.partitions, prefix="it-words")
        self.sink = kafka.create_topic(partitions=self.partitions, prefix="it-counts")
        self.app_id = kafka.app_id("it-wc")
        self.changelog = kafka.changelog(self.app_id, self.store)
        self.expected: Counter = Counter()
        self.produced = 0

    def produce(self, n: int) -> None:
        recs = word_records(self.rng, self.vocab, n)
        self.kafka.produce(self.source, recs, partitions=self.partitions)
        self.expected.update(true_counts(recs))
        self.produced += n

    def app(self, listener=None, **config):
        return build_word_count(self.kafka.bootstrap, self.app_id, self.state_dir, self.source, self.sink,
                                store=self.store_spec, listener=listener, **config)

    def run(self, listener=None, produce_while_running: int = 0, **config):
        """Start, wait RUNNING, optionally produce more, wait until every record so far is processed and
        committed (store offsets == changelog end), check the store, close.
        Returns (app, listener, changelog ends, {task: {store: restored_records}} at RUNNING)."""
        listener = listener or RecordingListener()
        app = self.app(listener, **config)
        app.start()
        try:
            app.wait_until_running(timeout_s=60)
            restored_by_tasks = {t.id: {n: s.restored_records for n, s in t.stores.items()} for t in app.tasks()}
            if produce_while_running:
                self.produce(produce_while_running)
            # Records processed in this run: everything not yet committed by the group (here: the new ones).
            wait_processed(app, self.produced - self._committed_before_run)
            self.check_store(app)
            ends = wait_store_offsets_at_end(self.kafka, app, self.store, self.changelog, source=self.source)
        finally:
            assert app.close(timeout_s=30)
        self.all_committed()
        assert app.state is hotstate.AppState.NOT_RUNNING
        return app, listener, ends, restored_by_tasks

    _committed_before_run = 0

    def all_committed(self) -> None:
        """After a clean close: the next run processes only what is produced from now on."""
        self._committed_before_run = self.produced

    def check_store(self, app, expected: dict | None = None) -> None:
        store = app.store(self.store)
        expected = self.expected if expected is None else expected
        wrong = {w: (store.get(w), c) for w, c in expected.items() if store.get(w) != c}
        assert not wrong, f"{len(wrong)} wrong counts in the store (got, want), e.g. {dict(list(wrong.items())[:5])}"
        assert store.get("never-produced") is None

    def check_output(self) -> None:
        out = self.kafka.read_table(self.sink)
        assert out == dict(self.expected)

    def marks(self) -> dict[int, tuple[int, int]]:
        return self.kafka.watermarks(self.changelog)


def check_listener_agrees(listener, marks: dict[int, tuple[int, int]], expect_start: dict[int, int]) -> None:
    """For every partition in ``expect_start``: one restore [start, changelog end), batches that add up
    to total_restored == end - start, batch end offsets increasing and the last one == end - 1; all on the
    state updater thread. Partitions not in ``expect_start`` restore nothing."""
    starts = listener.starts()
    totals = listener.totals()
    assert set(starts) == set(expect_start), f"restored partitions {sorted(starts)}, expected {sorted(expect_start)}"
    assert set(totals) == set(expect_start), f"restores that ended: {sorted(totals)}, started: {sorted(starts)}"
    for p, want_start in expect_start.items():
        low, high = marks[p]
        start, end = starts[p]
        assert (start, end) == (want_start, high), f"partition {p}: restore range {(start, end)}, want {(want_start, high)}"
        batches = listener.of("batch", p)
        assert batches, f"partition {p}: no on_batch_restored"
        assert sum(b.b for b in batches) == totals[p] == end - start, (
            f"partition {p}: batches {[b.b for b in batches]} sum to {sum(b.b for b in batches)}, "
            f"total_restored {totals[p]}, end - start {end - start}")
        ends = [b.a for b in batches]
        assert ends == sorted(set(ends)), f"partition {p}: batch end offsets not increasing: {ends}"
        assert start <= ends[0] and ends[-1] == end - 1, f"partition {p}: batch ends {ends} for range [{start}, {end})"
    threads = {e.thread for e in listener.events}
    assert threads <= {"hotstate-state-updater"}, f"listener called on {threads}, not the state updater thread"


# ---------------------------------------------------------------------------------------------------------
# pytest fixtures, imported by tests/integration/conftest.py and tests/chaos/conftest.py.

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def bootstrap() -> str:
    """Starts the local broker if none runs (``scripts/kafka start``, honouring HOTSTATE_KAFKA_PORT) and
    returns its bootstrap address. A broker that cannot start fails the tests; nothing is skipped."""
    try:
        return start_broker()
    except Exception as exc:
        pytest.fail(f"the local Kafka broker could not be started: {exc}", pytrace=False)


@pytest.fixture(scope="session")
def admin(bootstrap: str) -> AdminClient:
    return AdminClient({"bootstrap.servers": bootstrap})


@pytest.fixture
def kafka(bootstrap: str, admin: AdminClient):
    """Topic / produce / read helpers; deletes the topics and consumer groups the test made."""
    k = Kafka(bootstrap, admin)
    yield k
    k.cleanup()


@pytest.fixture
def tmp_state_dir(tmp_path: Path) -> Path:
    path = tmp_path / "state"
    path.mkdir()
    return path
