"""An in-memory Kafka and a crashable disk for the seeded simulation (tests/simulation/).

What it models, because the runtime's guarantees rest on it:
- partitions are logs; a transactional producer's records are appended at once but stay invisible to
  ``read_committed`` readers (who stop at the first open transaction: the last stable offset) until a commit
  marker makes them visible or an abort marker hides them for good; markers take an offset;
- a new producer with the same transactional id (``init_transactions``) fences the old one and aborts its open
  transaction; the group's offsets sent in a transaction apply when it commits; a generation that is not the
  group's current one is refused (a zombie);
- an idempotent producer delivers records in order per partition; at a crash a seeded prefix of what it
  buffered may have reached the broker;
- a store's disk (``SimDisk``): writes with the WAL are durable at once; restore writes (no WAL) sit in a
  volatile layer that a flush makes durable atomically with their offset, and a crash drops.

Every client call goes through ``Sim.step(name)``: the simulation crashes the process at a chosen step (the
``Crash`` exception, a BaseException like a kill) or injects a client error there. After a crash every call
of the dead process's clients raises ``Crash`` again, so code that catches broadly cannot carry on.
"""
from __future__ import annotations

import bisect
import random
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka import TopicPartition as KTopicPartition

from hotstate.state.backend import SimpleRestoreTarget, check_offset_forward

DATA, COMMIT, ABORT = "data", "commit", "abort"


class Crash(BaseException):
    """The simulated process is killed here."""


class Sim:
    """The seeded schedule of one process's life: which step kills it, which calls fail."""

    def __init__(self, rng: random.Random, crash_at: int | None, faults: dict[str, float] | None = None):
        self.rng = rng
        self.crash_at = crash_at  # the step number that kills the process (None: it lives)
        self.faults = faults or {}  # step name -> probability of an injected error there
        self.steps = 0
        self.crashed = False
        self.trace: list[str] = []

    def step(self, name: str) -> None:
        if self.crashed:
            raise Crash(name)
        self.steps += 1
        if len(self.trace) < 4000:
            self.trace.append(name)
        if self.crash_at is not None and self.steps >= self.crash_at:
            self.crashed = True
            raise Crash(name)

    def fault(self, name: str) -> bool:
        p = self.faults.get(name, 0.0)
        return p > 0 and self.rng.random() < p


@dataclass
class Rec:
    key: bytes | None
    value: bytes | None
    kind: str = DATA
    txn: str | None = None  # the transactional id whose transaction holds it
    state: str = "committed"  # committed / open / aborted
    timestamp: int = 0
    headers: Any = None


@dataclass
class Txn:
    epoch: int = 0
    open: bool = False
    records: list[tuple[str, int, int]] = field(default_factory=list)  # topic, partition, offset
    offsets: dict[tuple[str, int], int] = field(default_factory=dict)  # group offsets pending the commit


class Broker:
    def __init__(self) -> None:
        self.logs: dict[str, list[list[Rec]]] = {}
        self.group_offsets: dict[tuple[str, int], int] = {}
        self.generation = 1
        self.txns: dict[str, Txn] = {}

    def create_topic(self, name: str, partitions: int) -> None:
        self.logs[name] = [[] for _ in range(partitions)]

    def partitions(self, topic: str) -> int:
        return len(self.logs[topic])

    def end(self, topic: str, p: int) -> int:
        return len(self.logs[topic][p])

    def stable_end(self, topic: str, p: int) -> int:
        """The last stable offset: a read_committed reader stops before the first open transaction's record."""
        for i, rec in enumerate(self.logs[topic][p]):
            if rec.state == "open":
                return i
        return len(self.logs[topic][p])

    def append(self, topic: str, p: int, rec: Rec) -> int:
        log = self.logs[topic][p]
        log.append(rec)
        return len(log) - 1

    # ---- transactions ----
    def init_txn(self, txn_id: str) -> int:
        t = self.txns.setdefault(txn_id, Txn())
        if t.open:
            self.end_txn(txn_id, commit=False)
        t.epoch += 1
        return t.epoch

    def end_txn(self, txn_id: str, commit: bool) -> None:
        t = self.txns[txn_id]
        touched = set()
        for topic, p, off in t.records:
            self.logs[topic][p][off].state = "committed" if commit else "aborted"
            touched.add((topic, p))
        for topic, p in sorted(touched):
            self.append(topic, p, Rec(None, None, COMMIT if commit else ABORT))
        if commit:
            self.group_offsets.update(t.offsets)
        t.open, t.records, t.offsets = False, [], {}

    # ---- reading ----
    def committed_records(self, topic: str, p: int, upto: int | None = None) -> list[tuple[int, Rec]]:
        """(offset, record) of the committed data records below ``upto`` (read_committed)."""
        log = self.logs[topic][p]
        upto = len(log) if upto is None else upto
        return [(i, r) for i, r in enumerate(log[:upto]) if r.kind == DATA and r.state == "committed"]


def _error(code: int, reason: str, fatal: bool = False, retriable: bool = False, abortable: bool = False) -> KafkaException:
    return KafkaException(KafkaError(code, reason, fatal=fatal, retriable=retriable, txn_requires_abort=abortable))


class Msg:
    __slots__ = ("_t", "_p", "_o", "_r")

    def __init__(self, topic: str, p: int, offset: int, rec: Rec):
        self._t, self._p, self._o, self._r = topic, p, offset, rec

    def topic(self) -> str:
        return self._t

    def partition(self) -> int:
        return self._p

    def offset(self) -> int:
        return self._o

    def key(self) -> bytes | None:
        return self._r.key

    def value(self) -> bytes | None:
        return self._r.value

    def timestamp(self) -> tuple[int, int]:
        return (1, self._r.timestamp)

    def headers(self) -> Any:
        return self._r.headers

    def error(self) -> None:
        return None


def partition_for(key: bytes | None, partitions: int) -> int:
    return (sum(key) if key else 0) % partitions


class FakeProducer:
    """confluent-kafka's Producer, the parts the runtime calls."""

    def __init__(self, broker: Broker, sim: Sim, transactional_id: str | None = None,
                 on_delivery: Callable[[Any, Any], None] | None = None):
        self._b, self._sim = broker, sim
        self._txn_id = transactional_id
        self._on_delivery = on_delivery
        self._epoch: int | None = None
        self._buffer: list[tuple[str, int, Rec]] = []

    def _check_epoch(self) -> None:
        if self._txn_id is not None and (self._epoch is None or self._b.txns[self._txn_id].epoch != self._epoch):
            raise _error(KafkaError._FENCED, "producer fenced by a newer epoch", fatal=True)

    def produce(self, topic: str, value: bytes | None = None, key: bytes | None = None, partition: int = -1,
                timestamp: int = 0, headers: Any = None, **_: Any) -> None:
        self._sim.step("produce")
        if self._txn_id is not None:
            self._check_epoch()
            if not self._b.txns[self._txn_id].open:
                raise _error(KafkaError._STATE, "produce outside a transaction")
        p = partition if partition is not None and partition >= 0 else partition_for(key, self._b.partitions(topic))
        self._buffer.append((topic, p, Rec(key, value, timestamp=timestamp, headers=headers)))

    def poll(self, timeout: float = 0) -> int:
        return 0

    def _deliver(self, items: list[tuple[str, int, Rec]]) -> None:
        for topic, p, rec in items:
            if self._txn_id is not None:
                rec.txn, rec.state = self._txn_id, "open"
            offset = self._b.append(topic, p, rec)
            if self._txn_id is not None:
                self._b.txns[self._txn_id].records.append((topic, p, offset))
            if self._on_delivery is not None:
                self._on_delivery(None, Msg(topic, p, offset, rec))

    def flush(self, timeout: float = 0) -> int:
        self._sim.step("flush")
        if self._sim.fault("flush"):
            # A broker outage: the records time out. Under transactions that aborts the transaction.
            self._buffer.clear()
            if self._on_delivery is not None:
                self._on_delivery(KafkaError(KafkaError._MSG_TIMED_OUT, "injected: message timed out",
                                             txn_requires_abort=self._txn_id is not None), None)
            return 0
        items, self._buffer = self._buffer, []
        self._deliver(items)
        return 0

    def crash(self, rng: random.Random) -> None:
        """The process died: a prefix (per partition, in order) of what it buffered reached the broker."""
        items, self._buffer = self._buffer, []
        if self._txn_id is not None and (self._epoch is None or self._b.txns[self._txn_id].epoch != self._epoch
                                         or not self._b.txns[self._txn_id].open):
            return
        keep = rng.randint(0, len(items))
        on_delivery, self._on_delivery = self._on_delivery, None
        self._deliver(items[:keep])
        self._on_delivery = on_delivery

    def purge(self) -> None:
        self._buffer.clear()

    # ---- transactions ----
    def init_transactions(self, timeout: float = 0) -> None:
        self._sim.step("init_transactions")
        self._epoch = self._b.init_txn(self._txn_id)

    def begin_transaction(self) -> None:
        self._sim.step("begin_transaction")
        self._check_epoch()
        t = self._b.txns[self._txn_id]
        if t.open:
            raise _error(KafkaError._STATE, "a transaction is already open")
        t.open = True

    def send_offsets_to_transaction(self, offsets: list[KTopicPartition], metadata: Any, timeout: float = 0) -> None:
        self._sim.step("send_offsets")
        self._check_epoch()
        if self._sim.fault("zombie"):
            self._b.generation += 1  # the group moved on without this member (a pause past its session)
        if metadata != self._b.generation:
            raise _error(KafkaError.ILLEGAL_GENERATION, "stale generation", abortable=True)
        if self._sim.fault("send_offsets"):
            raise _error(KafkaError.COORDINATOR_NOT_AVAILABLE, "injected", abortable=True)
        self._b.txns[self._txn_id].offsets.update({(tp.topic, tp.partition): tp.offset for tp in offsets})

    def commit_transaction(self, timeout: float = 0) -> None:
        self._sim.step("commit_transaction")
        self._check_epoch()
        t = self._b.txns[self._txn_id]
        if self._sim.fault("commit_unknown"):
            # The coordinator wrote PrepareCommit, then the answer was lost: the commit completes anyway
            # (the next init_transactions of this id finishes it), and the caller sees a retriable error.
            self._b.end_txn(self._txn_id, commit=True)
            self._epoch = None  # librdkafka's next calls fail; the runtime replaces the producer
            raise _error(KafkaError._TIMED_OUT, "injected: commit outcome unknown", retriable=True)
        if t.open:
            self._b.end_txn(self._txn_id, commit=True)

    def abort_transaction(self, timeout: float = 0) -> None:
        self._sim.step("abort_transaction")
        self._check_epoch()
        self._buffer.clear()
        if self._b.txns[self._txn_id].open:
            self._b.end_txn(self._txn_id, commit=False)


class FakeConsumer:
    """confluent-kafka's Consumer, the parts the runtime calls (main, restore and end-offset consumers)."""

    def __init__(self, broker: Broker, sim: Sim, rng: random.Random, read_committed: bool = True):
        self._b, self._sim, self._rng = broker, sim, rng
        self._read_committed = read_committed
        self._pos: dict[tuple[str, int], int] = {}
        self._paused: set[tuple[str, int]] = set()

    def incremental_assign(self, tps: Iterable[KTopicPartition]) -> None:
        self._sim.step("assign")
        for tp in tps:
            key = (tp.topic, tp.partition)
            self._pos[key] = tp.offset if tp.offset >= 0 else self._b.group_offsets.get(key, 0)

    def incremental_unassign(self, tps: Iterable[KTopicPartition]) -> None:
        for tp in tps:
            self._pos.pop((tp.topic, tp.partition), None)
            self._paused.discard((tp.topic, tp.partition))

    def list_topics(self, topic: str | None = None, timeout: float = -1) -> None:
        pass  # metadata: the simulated broker has no leaders to learn

    def pause(self, tps: Iterable[KTopicPartition]) -> None:
        self._paused.update((tp.topic, tp.partition) for tp in tps)

    def resume(self, tps: Iterable[KTopicPartition]) -> None:
        self._paused.difference_update((tp.topic, tp.partition) for tp in tps)

    def seek(self, tp: KTopicPartition) -> None:
        self._sim.step("seek")
        key = (tp.topic, tp.partition)
        if key not in self._pos:
            raise _error(KafkaError._UNKNOWN_PARTITION, "seek of an unassigned partition")
        self._pos[key] = max(0, tp.offset)

    def consume(self, num_messages: int = 1, timeout: float = 0) -> list[Msg]:
        self._sim.step("consume")
        out: list[Msg] = []
        keys = sorted(k for k in self._pos if k not in self._paused)
        self._rng.shuffle(keys)
        for key in keys:  # a run of each partition's records, as librdkafka hands them out
            topic, p = key
            log = self._b.logs[topic][p]
            end = self._b.stable_end(topic, p) if self._read_committed else len(log)
            pos = self._pos[key]
            take = self._rng.randint(1, 40)
            while pos < end and take and len(out) < num_messages:
                rec = log[pos]
                if rec.kind == DATA and rec.state != "aborted":
                    out.append(Msg(topic, p, pos, rec))
                    take -= 1
                pos += 1
            self._pos[key] = pos
        return out

    def position(self, tps: Iterable[KTopicPartition]) -> list[KTopicPartition]:
        return [KTopicPartition(tp.topic, tp.partition, self._pos.get((tp.topic, tp.partition), -1001)) for tp in tps]

    def committed(self, tps: Iterable[KTopicPartition], timeout: float = 0) -> list[KTopicPartition]:
        self._sim.step("committed")
        return [KTopicPartition(tp.topic, tp.partition, self._b.group_offsets.get((tp.topic, tp.partition), -1001))
                for tp in tps]

    def get_watermark_offsets(self, tp: KTopicPartition, timeout: float = 0, cached: bool = False) -> tuple[int, int]:
        self._sim.step("watermarks")
        return 0, self._b.end(tp.topic, tp.partition)

    def offsets_for_times(self, tps: Iterable[KTopicPartition], timeout: float = 0) -> list[KTopicPartition]:
        return [KTopicPartition(tp.topic, tp.partition, self._b.end(tp.topic, tp.partition)) for tp in tps]

    def close(self) -> None:
        pass


class FakeMember:
    """The group member as the committers and the task manager see it: offset commits and group metadata of
    its generation; a member whose offsets were refused drops out and rejoins (the driver then assigns its
    partitions again: ``rejoin_pending``)."""

    def __init__(self, broker: Broker, sim: Sim):
        self._b, self._sim = broker, sim
        self.generation = broker.generation
        self.rejoin_pending = False
        self.on_drop_out: Callable[[], None] = lambda: None

    def has_generation(self) -> bool:
        return not self.rejoin_pending

    def drop_out(self) -> None:
        self.rejoin_pending = True
        self.on_drop_out()

    def commit(self, offsets: list[KTopicPartition], asynchronous: bool = False) -> None:
        self._sim.step("commit_offsets")
        if self._sim.fault("zombie"):
            self._b.generation += 1  # the group moved on without this member (a pause past its session)
        if self.generation != self._b.generation:
            raise _error(KafkaError.ILLEGAL_GENERATION, "stale generation")
        if self._sim.fault("commit_offsets"):
            raise _error(KafkaError.COORDINATOR_NOT_AVAILABLE, "injected: coordinator not available", retriable=True)
        self._b.group_offsets.update({(tp.topic, tp.partition): tp.offset for tp in offsets})

    def consumer_group_metadata(self) -> Any:
        return self.generation

    def request_rejoin(self) -> None:
        self.generation = self._b.generation  # rejoined with the same assignment


class SimDisk:
    """Every store's files, kept across the simulated process's crashes."""

    def __init__(self) -> None:
        self.durable: dict[str, tuple[dict[bytes, bytes], int | None]] = {}
        self.live: list["SimBackend"] = []

    def crash(self) -> None:
        """What RocksDB keeps through a kill -9: WAL writes and flushed data, not unflushed restore writes."""
        for b in self.live:
            b._volatile, b._volatile_offset = {}, None
            b._closed = True
        self.live = []


class SimBackend(SimpleRestoreTarget):
    """A store on a ``SimDisk``: the StoreBackend contract with RocksDB's durability (its restore flush is
    ``end_restore``: ``SimpleRestoreTarget``'s asynchronous flush is done at once)."""

    persistent = True
    corrupted = False

    def __init__(self, name: str, path: str, disk: SimDisk, sim: Sim):
        self.name, self.path, self._disk, self._sim = name, path, disk, sim
        data, offset = disk.durable.get(path, ({}, None))
        self._data, self._offset = dict(data), offset
        self._volatile: dict[bytes, bytes | None] = {}
        self._volatile_offset: int | None = None
        self._closed = False
        disk.live.append(self)

    def _view(self) -> dict[bytes, bytes | None]:
        return {**self._data, **self._volatile}

    def get(self, key: bytes) -> bytes | None:
        return self._view().get(key)

    def range(self, lo: bytes | None, hi: bytes | None):
        view = self._view()
        keys = sorted(k for k, v in view.items() if v is not None)
        for k in keys[bisect.bisect_left(keys, lo) if lo is not None else 0:]:
            if hi is not None and k > hi:
                return
            yield k, view[k]

    def changelog_offset(self) -> int | None:
        return self._volatile_offset if self._volatile_offset is not None else self._offset

    def _apply(self, target: dict, entries: Iterable) -> None:
        for k, v in entries:
            target[k] = v

    def _persist(self) -> None:
        self._disk.durable[self.path] = ({k: v for k, v in self._data.items() if v is not None}, self._offset)

    def write(self, entries: Iterable, changelog_offset: int) -> None:
        self._sim.step("store_write")
        self.end_restore()
        check_offset_forward(self.name, self._offset, changelog_offset)
        self._apply(self._data, entries)
        self._offset = changelog_offset
        self._persist()  # one atomic write with the WAL

    def restore(self, entries: Iterable, changelog_offset: int) -> None:
        self._sim.step("store_restore")
        check_offset_forward(self.name, self.changelog_offset(), changelog_offset)
        self._apply(self._volatile, entries)
        self._volatile_offset = changelog_offset

    def end_restore(self) -> None:
        if self._volatile_offset is None:
            return
        self._sim.step("store_flush")
        self._apply(self._data, self._volatile.items())
        self._offset = self._volatile_offset
        self._volatile, self._volatile_offset = {}, None
        self._persist()  # atomic flush: data and offset together

    def approximate_num_entries(self) -> int:
        return len(self._view())

    def close(self) -> None:
        if not self._closed:
            self.end_restore()
            self._closed = True

    def wipe(self) -> None:
        self._data, self._offset, self._volatile, self._volatile_offset = {}, None, {}, None
        self._disk.durable.pop(self.path, None)

    reset = wipe  # the simulated store stays open after a wipe

    def open_from_files(self, directory: str) -> None:
        raise NotImplementedError("the simulated disk has no store files to adopt")
