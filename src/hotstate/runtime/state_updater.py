"""The state updater: the one thread that restores stores from their changelogs and keeps standby replicas
current.

Hand-off API (Kafka Streams' StateUpdater): the processing thread calls ``add(task)`` for a task in
RESTORING, ``remove(task_id) -> Future`` when it loses one, and ``drain_restored()`` /
``drain_failed()`` in its loop; ``add_standby(task)`` / ``remove_standby(task_id, reason) -> Future`` for
standby (and warm-up) tasks, and ``standby_lags()`` / ``standby_offsets()`` for the assignor. Tasks it
holds are touched by no other thread. A task id is restoring (active) or standby here, never both: ``add``
of a standby's id raises (remove the standby first), so does ``add_standby`` of a restoring or standby id.

All restoring store partitions of the instance share one restore consumer (manual assignment,
``read_committed``). Each consume call returns up to ``restore_consume_records_max`` records of any of
them; each run of one partition's records goes into one write batch of its store (at most
``restore_batch_records_max`` records), without the WAL, the new changelog offset in the same batch.
"Restored" means the consumer's position reached the end offset read when the restore began (not that a
record at end-1 was seen: under transactions the last offset is a commit marker).

A store partition goes: assigned (reading) -> read to its end, unassigned, its flush started (flushing)
-> flushed: ``end_restore`` makes the offset durable and switches the store back to processing; when that
was its task's last store, the task is handed back. Backends may offer, and RocksDB does:
``begin_restore(records)``, ``restore_batch()`` + ``write_restore_batch(batch, offset)`` (records go straight
into a native batch), ``request_restore_flush()`` + ``restore_flushed()`` (a flush the thread does not wait
for). Why each exists, with numbers: docs/benchmarks.md.

Standbys (Kafka Streams' standby tasks): each store of a standby task tails its changelog partition on the
same consumer, for as long as it is a standby, from the store's changelog offset (the changelog start
when the store is empty; the same wipe rules as a restore). Its records go into the store like restored
ones (``restore_batch`` + ``write_restore_batch``: data and new offset in one atomic batch), but never in
restore mode (no ``begin_restore``, no bulk options, no reopen). Transaction markers and aborted records
move the offset too (to the consumer's position), so a caught-up standby has lag 0.

Standby durability: those writes skip the WAL (RocksDB), so the updater flushes every standby store that
changed at most ``STANDBY_FLUSH_INTERVAL_S`` ago (RocksDB also flushes a full memtable by itself, atomically
over data and offset: ``atomic_flush``). The flush is the backend's asynchronous two-step one (data, then the
offset), and the store's partition is paused while it runs, so no write falls between the two steps (one
that slips through starts the data step again). A kill -9 therefore leaves a standby store at its last
flushed offset with its data at or ahead of that offset, which tailing from the offset repairs: crash-safe,
losing at most about ``STANDBY_FLUSH_INTERVAL_S`` of progress. Removing a standby leaves unflushed writes to
the backend: closing it, or its next ``write`` / ``end_restore``, flushes them first.

Priority (Kafka Streams' changelog reader): while any active task is restoring (from ``add`` until it is
handed back, its flush included), every standby partition is paused, so active restores have the consumer,
the thread and the disk to themselves; standbys resume once no active task restores. Standby flushes do not
start meanwhile. A paused partition is resumed before it is unassigned: librdkafka keeps a pause across
unassign and assign, which would stall a later restore of the same partition.

Standby lags: per standby task, the sum over its stores of (changelog end - store offset). The end is the
high watermark librdkafka caches from every fetch response (``get_watermark_offsets(cached=True)``, read
every ``STANDBY_LAG_REFRESH_S``: about 25 us a partition, where ``cached=False`` costs a broker round trip
of 1 to 30 ms, more when queued behind a fetch). A paused partition gets no fetch responses: its end comes
from one batched ``offsets_for_times`` (latest) for all paused partitions every
``STANDBY_PAUSED_LAG_REFRESH_S`` (under 1 ms typically).
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

from confluent_kafka import OFFSET_INVALID, Consumer, KafkaError, KafkaException
from confluent_kafka import TopicPartition as KTopicPartition

from ..config import Config
from ..errors import IllegalStateTransition
from ..observe.listener import RestoreListener, StandbyUpdateListener, SuspendReason, _SafeListener
from ..observe.metrics import Metrics, StoreRestoreMetrics
from ..records import TopicPartition
from .task import Task, TaskStore

log = logging.getLogger(__name__)

_IDLE_WAIT_S = 0.1
_FLUSH_POLL_S = 0.005  # nothing to read, only flushes to wait for
_CONSUME_WAIT_S = 0.1
_STANDBY_FLUSH_CHECK_S = 0.1  # how often to look for standby stores due for a flush
_PAUSED_ENDS_TIMEOUT_S = 1.0  # the paused standbys' end query; on timeout their ends stay as they were


class _ListBatch:
    """A restore batch for backends without a native one: collects entries for ``backend.restore``."""

    __slots__ = ("entries",)

    def __init__(self) -> None:
        self.entries: list = []

    def put(self, key: bytes, value: bytes) -> None:
        self.entries.append((key, value))

    def delete(self, key: bytes) -> None:
        self.entries.append((key, None))


@dataclass
class _StorePartition:
    standby: ClassVar[bool] = False
    task: Task
    store: TaskStore
    end_offset: int
    metrics: StoreRestoreMetrics
    restored: int = 0

    def __post_init__(self) -> None:
        backend = self.store.backend
        if hasattr(backend, "restore_batch"):  # a native batch: no list of entries built per record
            self.new_batch: Callable[[], Any] = backend.restore_batch
            self.write: Callable[[Any, int], None] = backend.write_restore_batch
        else:
            self.new_batch = _ListBatch
            self.write = lambda batch, offset: backend.restore(batch.entries, offset)

    def begin(self, records: int) -> None:
        begin = getattr(self.store.backend, "begin_restore", None)
        if begin is not None:
            begin(records)

    def request_flush(self) -> None:
        request = getattr(self.store.backend, "request_restore_flush", None)
        if request is not None:
            request()

    def flushed(self) -> bool:
        done = getattr(self.store.backend, "restore_flushed", None)
        return done is None or done()


@dataclass
class _TaskRestore:
    task: Task
    pending: set[TopicPartition] = field(default_factory=set)


@dataclass
class _StandbyPartition(_StorePartition):
    """One store of a standby task. ``offset`` follows the store's changelog offset (the changelog start
    while the store holds nothing); ``end_offset`` is the changelog end last seen. Only the updater thread
    writes these; readers of the two ints may see them one update old."""

    standby: ClassVar[bool] = True
    offset: int = 0
    tailing: bool = True  # False once removed or failed: late records of the same consume call are dropped
    dirty: bool = False  # written since its last flush began
    flushing: bool = False  # a flush began and did not finish yet (the partition is paused meanwhile)
    flushed_at: float = 0.0


@dataclass
class _StandbyTask:
    task: Task
    partitions: list[_StandbyPartition] = field(default_factory=list)
    failed: bool = False  # stopped tailing after an error; kept until remove_standby


class StateUpdater:
    # Standby tuning (see the module docstring); class attributes so tests can shorten them.
    STANDBY_FLUSH_INTERVAL_S = 10.0  # a changed standby store is flushed at most this long after its last flush
    STANDBY_LAG_REFRESH_S = 1.0  # changelog ends of tailing standby partitions (cached by librdkafka)
    STANDBY_PAUSED_LAG_REFRESH_S = 5.0  # changelog ends of paused ones (asked of the broker)

    def __init__(self, config: Config, consumer_factory: Callable[[], Consumer],
                 listener: RestoreListener | None, metrics: Metrics,
                 standby_listener: StandbyUpdateListener | None = None,
                 ends_consumer_factory: Callable[[], Consumer] | None = None):
        """``ends_consumer_factory``: a ``read_uncommitted`` consumer for changelog high watermarks
        (``clients.end_offsets_consumer``); without it the restore consumer is asked."""
        self._config = config
        self._consumer_factory = consumer_factory
        self._ends_consumer_factory = ends_consumer_factory
        self._ends_consumer: Consumer | None = None
        self._listener = _SafeListener(listener)
        self._standby_listener = _SafeListener(standby_listener, "standby")
        self._metrics = metrics
        self._commands: queue.Queue = queue.Queue()
        self._restored: list[Task] = []
        self._failed: list[tuple[Task, BaseException]] = []
        self._out_lock = threading.Lock()
        self._tasks: dict[str, _TaskRestore] = {}
        self._partitions: dict[TopicPartition, _StorePartition] = {}  # assigned, reading the changelog
        self._flushing: dict[TopicPartition, _StorePartition] = {}  # read to the end, flush under way
        # Standbys (updater thread). _standbys changes under _standby_lock: standby_lags() reads it.
        self._standbys: dict[str, _StandbyTask] = {}
        self._standby_lock = threading.Lock()
        self._standby_partitions: dict[TopicPartition, _StandbyPartition] = {}  # assigned, tailing
        self._standby_flushing: dict[TopicPartition, _StandbyPartition] = {}
        self._paused: set[TopicPartition] = set()  # standby partitions paused in the consumer
        self._next_flush_check = 0.0
        self._next_end_refresh = 0.0
        self._next_paused_end_refresh = 0.0
        # The processing thread's view, for refusing a task that would be active and standby at once.
        self._ids_lock = threading.Lock()
        self._active_ids: set[str] = set()  # added and not yet drained or removed
        self._standby_tasks: dict[str, Task] = {}  # added as standby and not yet removed
        self._submit_lock = threading.Lock()
        self._closed = False  # the thread answers no more commands
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="hotstate-state-updater", daemon=True)
        self._consumer: Consumer | None = None
        self.fatal_error: BaseException | None = None

    # ---- hand-off API (processing thread) ----
    def start(self) -> None:
        self._consumer = self._consumer_factory()
        self._thread.start()

    def add(self, task: Task) -> None:
        with self._ids_lock:
            if task.id in self._standby_tasks:
                raise IllegalStateTransition(
                    f"task {task.id} is a standby in the state updater; remove_standby({task.id!r}, reason) "
                    "it before adding it as an active task")
            self._active_ids.add(task.id)
        self._commands.put(("add", task, None))

    def remove(self, task_id: str) -> Future:
        """Stop restoring the task; the future resolves to the task (its stores flushed) or None."""
        fut: Future = Future()
        with self._ids_lock:
            self._active_ids.discard(task_id)
        if not self._submit(("remove", task_id, fut)):  # nothing restores any more: the task's stores are idle
            fut.set_result(None)
        return fut

    def add_standby(self, task: Task) -> None:
        """Keep the task's stores current from their changelogs until ``remove_standby``."""
        with self._ids_lock:
            if task.id in self._standby_tasks:
                raise IllegalStateTransition(f"task {task.id} is a standby in the state updater already")
            if task.id in self._active_ids:
                raise IllegalStateTransition(
                    f"task {task.id} is restoring as an active task in the state updater; remove it (or drain it) "
                    "before adding it as a standby")
            self._standby_tasks[task.id] = task
        self._commands.put(("add_standby", task, None))

    def remove_standby(self, task_id: str, reason: SuspendReason) -> Future:
        """Stop updating the standby; the future resolves to its task once the updater no longer touches its
        stores (None if unknown). The standby listener hears ``on_update_suspended`` for each store first."""
        fut: Future = Future()
        with self._ids_lock:
            task = self._standby_tasks.pop(task_id, None)
        if not self._submit(("remove_standby", (task_id, reason), fut)):  # no thread: its stores are idle
            fut.set_result(task)
        return fut

    def standby_lags(self) -> dict[str, int]:
        """Per standby task, the sum over its stores of (changelog end - store offset); a snapshot, any thread.
        A standby that failed (it stopped tailing after an error, see the log) is left out."""
        with self._standby_lock:
            return {tid: sum(max(0, sp.end_offset - sp.offset) for sp in st.partitions)
                    for tid, st in self._standbys.items() if not st.failed}

    def standby_offsets(self) -> dict[str, int]:
        """Per standby task, the sum of its stores' changelog offsets (a store without state counts at its
        changelog's start); a snapshot, any thread."""
        with self._standby_lock:
            return {tid: sum(sp.offset for sp in st.partitions) for tid, st in self._standbys.items() if not st.failed}

    def standby_task_ids(self) -> list[str]:
        with self._standby_lock:
            return list(self._standbys)

    def drain_restored(self) -> list[Task]:
        with self._out_lock:
            out, self._restored = self._restored, []
        if out:
            with self._ids_lock:
                self._active_ids.difference_update(t.id for t in out)
        return out

    def drain_failed(self) -> list[tuple[Task, BaseException]]:
        with self._out_lock:
            out, self._failed = self._failed, []
        if out:
            with self._ids_lock:
                self._active_ids.difference_update(t.id for t, _ in out)
        return out

    def _submit(self, cmd: tuple) -> bool:
        """Queues a command the thread must answer; False when no thread runs to answer it."""
        with self._submit_lock:
            if self._closed or not self._thread.is_alive():
                return False
            self._commands.put(cmd)
            return True

    def shutdown(self, timeout_s: float) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    def restoring_task_ids(self) -> list[str]:
        return list(self._tasks)

    # ---- the thread ----
    def _run(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        try:
            while not self._stop.is_set():
                # No wait when a consume follows (it waits itself); a short one when only flushes are polled.
                self._handle_commands(wait_s=0 if self._partitions else _FLUSH_POLL_S if self._flushing
                                      else 0 if self._standby_partitions else _IDLE_WAIT_S)
                if self._partitions or self._flushing:
                    began = time.perf_counter()
                    if self._partitions:
                        self._restore_round(consumer)
                    else:
                        self._check_flushed()
                    metrics = self._metrics
                    metrics.restore_busy_s += time.perf_counter() - began
                    metrics.restore_busy_rate.sample(metrics.restore_busy_s)
                elif self._standby_partitions:
                    self._standby_round(consumer)
                if self._standbys:
                    self._maintain_standbys(consumer, time.monotonic())
        except BaseException as exc:  # the thread must not die silently
            log.exception("state updater failed")
            self.fatal_error = exc
            with self._out_lock:
                self._failed.extend((t.task, exc) for t in self._tasks.values())
            self._tasks.clear()
        finally:
            for sp in [*self._partitions.values(), *self._flushing.values()]:
                _safe_end_restore(sp.store)
            self._partitions.clear()
            self._flushing.clear()
            self._standby_partitions.clear()
            self._standby_flushing.clear()
            consumer.close()
            if self._ends_consumer is not None and self._ends_consumer is not consumer:
                self._ends_consumer.close()
            with self._submit_lock:
                self._closed = True
            self._resolve_pending_removes()

    def _resolve_pending_removes(self) -> None:
        while True:
            try:
                kind, arg, fut = self._commands.get_nowait()
            except queue.Empty:
                return
            if kind == "remove":
                fut.set_result(None)
            elif kind == "remove_standby":
                with self._standby_lock:
                    st = self._standbys.pop(arg[0], None)
                fut.set_result(None if st is None else st.task)

    def _handle_commands(self, wait_s: float) -> None:
        try:
            cmd = self._commands.get(timeout=wait_s) if wait_s > 0 else self._commands.get_nowait()
        except queue.Empty:
            return
        # Runs of adds start together (one assign call); everything keeps its order.
        run_kind, run = "add", []
        while True:
            kind, arg, fut = cmd
            if run and kind != run_kind:
                self._start(run_kind, run)
                run = []
            if kind == "remove":
                self._remove_task(arg, fut)
            elif kind == "remove_standby":
                self._remove_standby(arg[0], arg[1], fut)
            else:
                run_kind = kind
                run.append(arg)
            try:
                cmd = self._commands.get_nowait()
            except queue.Empty:
                break
        self._start(run_kind, run)
        self._sync_pauses()

    def _start(self, kind: str, tasks: list[Task]) -> None:
        if kind == "add":
            self._start_tasks(tasks)
        else:
            self._start_standbys(tasks)

    def _start_tasks(self, tasks: list[Task]) -> None:
        """Work out each store's range, then assign every partition that needs a restore in one call."""
        assign: list[KTopicPartition] = []
        for task in tasks:
            if task.id in self._standbys:  # add() refuses this; a caller that went around it
                with self._out_lock:
                    self._failed.append((task, IllegalStateTransition(
                        f"task {task.id} was added as active while it is a standby in the state updater")))
                continue
            tr = _TaskRestore(task)
            try:
                task_assign = self._plan_task(task, tr)
            except BaseException as exc:
                for tp in tr.pending:
                    self._partitions.pop(tp, None)
                with self._out_lock:
                    self._failed.append((task, exc))
                continue
            if tr.pending:
                self._tasks[task.id] = tr
                assign.extend(task_assign)
            else:
                with self._out_lock:
                    self._restored.append(task)
        self._metrics.active_restoring_tasks = len(self._tasks)
        if assign:
            self._consumer.incremental_assign(assign)
            # After the assignment: librdkafka fetches while the stores switch to their restore options.
            for ktp in assign:
                sp = self._partitions.get((ktp.topic, ktp.partition))
                if sp is None:
                    continue  # its task failed below already
                try:
                    sp.begin(sp.end_offset - ktp.offset)
                except BaseException as exc:
                    self._fail_task(sp.task, exc)

    def _fail_task(self, task: Task, exc: BaseException) -> None:
        """Stop restoring the task and report it failed (the processing thread raises its error)."""
        tr = self._tasks.pop(task.id, None)
        unassign = []
        for tp in tr.pending if tr is not None else ():
            if self._partitions.pop(tp, None) is not None:
                unassign.append(KTopicPartition(tp.topic, tp.partition))
            self._flushing.pop(tp, None)
        if unassign:
            self._consumer.incremental_unassign(unassign)
        self._metrics.active_restoring_tasks = len(self._tasks)
        with self._out_lock:
            self._failed.append((task, exc))

    def _plan_task(self, task: Task, tr: _TaskRestore) -> list[KTopicPartition]:
        assign = []
        for store in task.stores.values():
            start, end = self._restore_range(self._consumer, task, store)
            store.restored_records = 0
            if start >= end:
                log.info("task %s: store %s is current at changelog offset %d of %s (nothing to restore)",
                         task.id, store.spec.name, start, store.changelog)
                continue
            key = f"{task.id}/{store.spec.name}"
            m = StoreRestoreMetrics(restore_remaining_records=end - start, started_at_s=time.monotonic(),
                                    changelog=str(store.changelog))
            self._metrics.restores[key] = m
            self._partitions[store.changelog] = _StorePartition(task, store, end, m)
            tr.pending.add(store.changelog)
            assign.append(KTopicPartition(store.changelog.topic, store.changelog.partition, start))
            log.info("task %s: restoring store %s from %s offsets [%d, %d)", task.id, store.spec.name,
                     store.changelog, start, end)
            self._listener.on_restore_start(store.changelog, store.spec.name, start, end)
        return assign

    def _end_offsets(self) -> Consumer:
        if self._ends_consumer is None:
            factory = self._ends_consumer_factory
            self._ends_consumer = factory() if factory is not None else self._consumer
        return self._ends_consumer

    def _restore_range(self, consumer: Consumer, task: Task, store: TaskStore) -> tuple[int, int]:
        """[start, end) of the changelog to replay; wipes a store whose offset the changelog cannot serve."""
        tp = store.changelog
        timeout_s = self._config.broker_timeout_ms / 1000
        # The end is the high watermark, not the last stable offset: under exactly-once a zombie's open
        # transaction holds the latter back while committed records may follow; the restore reads on (with
        # read_committed) until that transaction is resolved and its position passes the high watermark.
        low, high = self._end_offsets().get_watermark_offsets(KTopicPartition(tp.topic, tp.partition),
                                                              timeout=timeout_s, cached=False)
        stored = store.backend.changelog_offset()
        if stored is not None and stored > high:
            log.warning(
                "task %s store %s: its changelog offset %d is beyond the changelog end %d (was the changelog topic "
                "deleted and recreated?); wiping the store and restoring it in full", task.id, store.spec.name, stored, high)
            store_reset(store)
            stored = None
        elif stored is not None and stored < low:
            log.warning(
                "task %s store %s: its changelog offset %d is below the changelog start %d (records it needs were "
                "deleted); wiping the store and restoring it in full", task.id, store.spec.name, stored, low)
            store_reset(store)
            stored = None
        return (low if stored is None else stored), high

    def _remove_task(self, task_id: str, fut: Future) -> None:
        tr = self._tasks.pop(task_id, None)
        if tr is None:
            with self._out_lock:
                found = next((t for t in self._restored if t.id == task_id), None)
                if found is not None:
                    self._restored.remove(found)
            fut.set_result(found)
            return
        unassign = []
        for tp in tr.pending:
            sp = self._partitions.pop(tp, None)
            if sp is None:  # read to the end already, only its flush was pending
                sp = self._flushing.pop(tp)
            else:
                unassign.append(KTopicPartition(tp.topic, tp.partition))
            self._metrics.restores.pop(f"{task_id}/{sp.store.spec.name}", None)  # moved away: not restored here
        self._metrics.active_restoring_tasks = len(self._tasks)
        try:
            if unassign:
                self._consumer.incremental_unassign(unassign)
            for store in tr.task.stores.values():
                store.backend.end_restore()
        except BaseException as exc:
            fut.set_exception(exc)
            return
        fut.set_result(tr.task)

    def _restore_round(self, consumer: Consumer) -> None:
        msgs = consumer.consume(self._config.restore_consume_records_max, _CONSUME_WAIT_S)
        if msgs:
            self._apply(msgs)
        self._check_done(consumer)
        if self._flushing:
            self._check_flushed()

    def _apply(self, msgs: list) -> None:
        """Puts records straight into their store's write batch. A batch holds one run of consecutive records
        of one partition (librdkafka hands out a partition's records in long runs), at most
        ``restore_batch_records_max``; it is written with the offset after its last record.

        This loop is the restore's hot path: it touches each message as few times as it can."""
        limit = self._config.restore_batch_records_max
        partitions = self._partitions
        standbys = self._standby_partitions
        run_partition = run_topic = None
        sp: _StorePartition | None = None  # None: the run's partition is neither restoring nor standby; skip
        put = delete = batch = last = None
        n = 0
        for m in msgs:
            key = m.key()
            if key is None:  # Kafka refuses keyless records in compacted topics: this is an error event
                self._on_error_event(m)
                continue
            partition = m.partition()
            if partition != run_partition or n == limit or m.topic() != run_topic:  # int compare first: cheaper
                if n:
                    self._write(sp, batch, last.offset(), n)
                    n = 0
                run_partition, run_topic = partition, m.topic()
                sp = partitions.get((run_topic, partition))
                if sp is None:
                    sp = standbys.get((run_topic, partition))
                if sp is not None:
                    batch = sp.new_batch()
                    put, delete = batch.put, batch.delete
            if sp is None:
                continue
            value = m.value()
            if value is None:
                delete(key)
            else:
                put(key, value)
            n += 1
            last = m
        if n:
            self._write(sp, batch, last.offset(), n)

    def _on_error_event(self, msg: Any) -> None:
        """A keyless record or an error event. One of a standby partition fails that standby only; one
        without a partition while only standbys are tailing is logged (librdkafka retries); else it raises."""
        err = msg.error()
        if err is not None and err.code() == KafkaError._PARTITION_EOF:
            return
        topic = msg.topic()
        sp = self._standby_partitions.get((topic, msg.partition())) if topic is not None else None
        if sp is not None:
            self._fail_standby(sp, KafkaException(err) if err is not None else RuntimeError(
                f"changelog record without a key at {topic}[{msg.partition()}] offset {msg.offset()}"))
            return
        if err is not None and topic is None and not self._tasks and not err.fatal():
            log.warning("restore consumer: %s (standbys keep tailing)", err)
            return
        self._raise_for(msg)

    @staticmethod
    def _raise_for(msg: Any) -> None:
        err = msg.error()
        if err is None:
            raise RuntimeError(f"changelog record without a key at {msg.topic()}[{msg.partition()}] offset "
                               f"{msg.offset()}: a changelog is a compacted topic, whose records have keys")
        if err.code() != KafkaError._PARTITION_EOF:
            raise KafkaException(err)

    def _write(self, sp: _StorePartition, batch: Any, last_offset: int, n: int) -> None:
        if sp.standby:
            self._write_standby(sp, batch, last_offset, n)  # type: ignore[arg-type]
            return
        sp.write(batch, last_offset + 1)
        sp.restored += n
        sp.metrics.restore_records_total += n
        sp.metrics.restore_remaining_records = max(0, sp.end_offset - last_offset - 1)
        sp.metrics.rate.sample(sp.metrics.restore_records_total)
        metrics = self._metrics
        metrics.restore_records_total += n
        metrics.restore_rate.sample(metrics.restore_records_total)
        self._listener.on_batch_restored(sp.store.changelog, sp.store.spec.name, last_offset, n)

    def _check_done(self, consumer: Consumer) -> None:
        tps = [KTopicPartition(tp.topic, tp.partition) for tp in self._partitions]
        for ktp in consumer.position(tps):
            if ktp.offset == OFFSET_INVALID or ktp.offset < 0:
                continue
            tp = TopicPartition(ktp.topic, ktp.partition)
            sp = self._partitions[tp]
            if ktp.offset >= sp.end_offset:
                self._finish(consumer, tp, sp, ktp.offset)

    def _finish(self, consumer: Consumer, tp: TopicPartition, sp: _StorePartition, position: int) -> None:
        """The partition is read to its end: record the final offset, unassign it, start the flush."""
        backend = sp.store.backend
        stored = backend.changelog_offset()
        if stored is None or position > stored:  # skipped markers or compacted-away records at the end
            if sp.restored == 0:
                # Nothing restored (e.g. only a commit marker after a crash under exactly-once): one ordinary
                # durable write of the offset, no restore-mode flush and reopen (measured ~0.1 s a store).
                backend.write([], position)
            else:
                sp.write(sp.new_batch(), position)
        consumer.incremental_unassign([KTopicPartition(tp.topic, tp.partition)])
        del self._partitions[tp]
        sp.request_flush()
        self._flushing[tp] = sp
        if sp.flushed():
            self._complete(tp, sp)

    def _check_flushed(self) -> None:
        for tp, sp in list(self._flushing.items()):
            if sp.flushed():
                self._complete(tp, sp)

    def _complete(self, tp: TopicPartition, sp: _StorePartition) -> None:
        """The store's data is on disk: make its offset durable, switch it to processing, hand the task over
        when it was the task's last store."""
        del self._flushing[tp]
        sp.store.backend.end_restore()
        sp.store.restored_records = sp.restored
        sp.metrics.restore_remaining_records = 0
        sp.metrics.ended_at_s = time.monotonic()
        log.info("task %s: store %s restored %d records", sp.task.id, sp.store.spec.name, sp.restored)
        self._listener.on_restore_end(tp, sp.store.spec.name, sp.restored)
        tr = self._tasks[sp.task.id]
        tr.pending.discard(tp)
        if not tr.pending:
            del self._tasks[sp.task.id]
            self._metrics.active_restoring_tasks = len(self._tasks)
            with self._out_lock:
                self._restored.append(sp.task)
            if not self._tasks:
                self._sync_pauses()  # no active restore left: the standbys resume

    # ---- standbys (the thread) ----
    def _start_standbys(self, tasks: list[Task]) -> None:
        """Work out where each store's tailing starts, then assign all new partitions in one call."""
        if not tasks:
            return
        assign: list[KTopicPartition] = []
        now = time.monotonic()
        for task in tasks:
            if task.id in self._standbys or task.id in self._tasks:  # add_standby refuses this
                log.error("task %s is already in the state updater; add_standby ignored", task.id)
                continue
            st = _StandbyTask(task)
            try:
                for store in task.stores.values():
                    start, end = self._restore_range(self._consumer, task, store)
                    st.partitions.append(_StandbyPartition(task, store, end, None, offset=start, flushed_at=now))
            except Exception as exc:
                log.error("standby task %s: cannot start updating its stores (%r); it stays idle until it is "
                          "assigned again", task.id, exc, exc_info=exc)
                st.partitions, st.failed = [], True
            with self._standby_lock:
                self._standbys[task.id] = st
            for sp in st.partitions:
                tp = sp.store.changelog
                self._standby_partitions[tp] = sp
                assign.append(KTopicPartition(tp.topic, tp.partition, sp.offset))
                log.info("standby task %s: updating store %s from %s offset %d (end %d)", task.id,
                         sp.store.spec.name, tp, sp.offset, sp.end_offset)
                self._standby_listener.on_update_start(tp, sp.store.spec.name, sp.offset)
        self._standby_metrics()
        if assign:
            self._consumer.incremental_assign(assign)  # paused at once by _sync_pauses while actives restore

    def _remove_standby(self, task_id: str, reason: SuspendReason, fut: Future) -> None:
        with self._standby_lock:
            st = self._standbys.pop(task_id, None)
        if st is None:
            fut.set_result(None)
            return
        try:
            self._stop_tailing(st)
        except Exception:  # the partitions may stay assigned; their records are dropped (no store maps them)
            log.exception("standby task %s: unassigning its changelog partitions failed", task_id)
        self._standby_metrics()
        for sp in st.partitions:
            self._standby_listener.on_update_suspended(sp.store.changelog, sp.store.spec.name, sp.offset,
                                                       sp.end_offset, reason)
        log.info("standby task %s: no longer updated (%s)", task_id, reason.value)
        fut.set_result(st.task)

    def _stop_tailing(self, st: _StandbyTask) -> None:
        """Unassign the standby's partitions (resumed first: a pause outlives the assignment)."""
        tps = []
        for sp in st.partitions:
            sp.tailing = False
            tp = sp.store.changelog
            self._standby_flushing.pop(tp, None)
            if self._standby_partitions.pop(tp, None) is not None:
                tps.append(tp)
        paused = [tp for tp in tps if tp in self._paused]
        self._paused.difference_update(paused)
        if paused:
            self._consumer.resume([KTopicPartition(tp.topic, tp.partition) for tp in paused])
        if tps:
            self._consumer.incremental_unassign([KTopicPartition(tp.topic, tp.partition) for tp in tps])

    def _fail_standby(self, sp: _StandbyPartition, exc: BaseException) -> None:
        """An error while updating one store: that standby stops (it is not fatal to the updater)."""
        st = self._standbys.get(sp.task.id)
        if st is None or st.failed:
            return
        log.error("standby task %s: updating store %s from %s failed (%r); the standby stops until it is "
                  "assigned again", sp.task.id, sp.store.spec.name, sp.store.changelog, exc, exc_info=exc)
        st.failed = True
        try:
            self._stop_tailing(st)
        except Exception:
            log.exception("standby task %s: unassigning its changelog partitions failed", sp.task.id)
        self._standby_metrics()

    def _standby_metrics(self) -> None:
        self._metrics.standby_updating_tasks = sum(1 for st in self._standbys.values() if not st.failed)
        self._metrics.standby_records_lag = self.standby_lags()

    def _sync_pauses(self) -> None:
        """Pause every standby partition while an active task restores, else only those whose flush runs."""
        parts = self._standby_partitions
        if not parts and not self._paused:
            return
        want = set(parts) if self._tasks else set(self._standby_flushing)
        pause, resume = want - self._paused, self._paused - want
        if pause:
            self._consumer.pause([KTopicPartition(tp.topic, tp.partition) for tp in pause])
        if resume:
            self._consumer.resume([KTopicPartition(tp.topic, tp.partition) for tp in resume])
        self._paused = want

    def _standby_round(self, consumer: Consumer) -> None:
        """No active restore: read what the standby partitions have."""
        all_paused = len(self._paused) >= len(self._standby_partitions)  # all flushing: poll those soon
        msgs = consumer.consume(self._config.restore_consume_records_max, _FLUSH_POLL_S if all_paused
                                else _CONSUME_WAIT_S)
        if msgs:
            self._apply(msgs)
        self._advance_to_positions(consumer)

    def _write_standby(self, sp: _StandbyPartition, batch: Any, last_offset: int, n: int) -> None:
        if not sp.tailing:
            return
        try:
            sp.write(batch, last_offset + 1)
        except Exception as exc:
            self._fail_standby(sp, exc)
            return
        self._standby_moved(sp, last_offset + 1)
        self._standby_listener.on_batch_loaded(sp.store.changelog, sp.store.spec.name, sp.task.id, last_offset, n,
                                               sp.end_offset)

    def _standby_moved(self, sp: _StandbyPartition, offset: int) -> None:
        sp.offset = offset
        if sp.end_offset < offset:
            sp.end_offset = offset
        sp.dirty = True
        if sp.flushing:
            # Written while its flush runs (the pause had not taken effect yet): the offset must not reach
            # disk before this data, so the flush starts over from its data step.
            sp.request_flush()

    def _advance_to_positions(self, consumer: Consumer) -> None:
        """Transaction markers, aborted records and compacted-away offsets hold no record to write, but the
        consumer's position moves past them: so does the store's offset (else the lag never reaches 0)."""
        paused = self._paused
        behind = [tp for tp, sp in self._standby_partitions.items() if sp.offset < sp.end_offset and tp not in paused]
        if not behind:
            return
        for ktp in consumer.position([KTopicPartition(tp.topic, tp.partition) for tp in behind]):
            sp = self._standby_partitions.get((ktp.topic, ktp.partition))
            if sp is None or ktp.offset < 0 or ktp.offset <= sp.offset:
                continue
            try:
                sp.write(sp.new_batch(), ktp.offset)
            except Exception as exc:
                self._fail_standby(sp, exc)
                continue
            self._standby_moved(sp, ktp.offset)

    def _maintain_standbys(self, consumer: Consumer, now: float) -> None:
        """Between rounds: finish and start standby flushes, refresh the changelog ends. Cheap when nothing is due."""
        if self._standby_flushing:
            self._check_standby_flushes(now)
        if now >= self._next_flush_check:
            self._next_flush_check = now + _STANDBY_FLUSH_CHECK_S
            if not self._tasks:  # no standby flush competes with an active restore
                self._start_standby_flushes(now)
        if now >= self._next_end_refresh:
            self._refresh_ends(consumer, now)

    def _start_standby_flushes(self, now: float) -> None:
        due = now - self.STANDBY_FLUSH_INTERVAL_S
        started = False
        for tp, sp in list(self._standby_partitions.items()):
            if not sp.dirty or sp.flushing or sp.flushed_at > due:
                continue
            sp.dirty = False
            backend = sp.store.backend
            try:
                if hasattr(backend, "request_restore_flush"):
                    backend.request_restore_flush()  # data, then (in restore_flushed) the offset
                    sp.flushing = True
                    self._standby_flushing[tp] = sp
                    started = True
                else:  # no asynchronous flush: what the backend holds outside its WAL is made durable now
                    backend.end_restore()
                    sp.flushed_at = now
            except Exception as exc:
                self._fail_standby(sp, exc)
        if started:
            self._sync_pauses()

    def _check_standby_flushes(self, now: float) -> None:
        done = False
        for tp, sp in list(self._standby_flushing.items()):
            try:
                flushed = sp.flushed()
            except Exception as exc:
                self._fail_standby(sp, exc)
                continue
            if flushed:
                del self._standby_flushing[tp]
                sp.flushing = False
                sp.flushed_at = now
                done = True
        if done:
            self._sync_pauses()

    def _refresh_ends(self, consumer: Consumer, now: float) -> None:
        self._next_end_refresh = now + self.STANDBY_LAG_REFRESH_S
        try:
            for tp, sp in self._standby_partitions.items():
                if tp in self._paused:
                    continue
                high = consumer.get_watermark_offsets(KTopicPartition(tp.topic, tp.partition), cached=True)[1]
                if high >= 0:  # none before the first fetch response
                    sp.end_offset = max(high, sp.offset)
            if self._paused and now >= self._next_paused_end_refresh:
                self._next_paused_end_refresh = now + self.STANDBY_PAUSED_LAG_REFRESH_S
                latest = [KTopicPartition(tp.topic, tp.partition, -1) for tp in self._paused]  # -1: the end
                for ktp in consumer.offsets_for_times(latest, timeout=_PAUSED_ENDS_TIMEOUT_S):
                    sp = self._standby_partitions.get((ktp.topic, ktp.partition))
                    if sp is not None and ktp.error is None and ktp.offset >= 0:
                        sp.end_offset = max(ktp.offset, sp.offset)
        except KafkaException as exc:  # the ends stay as they were until the next refresh
            log.debug("refreshing the standby changelog ends failed: %s", exc)
        self._metrics.standby_records_lag = self.standby_lags()


def store_reset(store: TaskStore) -> None:
    """Wipe a store's local state and reopen it empty."""
    store.backend.wipe()
    store.backend = store.reopen()
    store.overlay.backend = store.backend


def _safe_end_restore(store: TaskStore) -> None:
    try:
        store.backend.end_restore()
    except Exception:
        log.exception("flushing store %s after restore failed", store.spec.name)
