"""The state updater: the one thread that restores stores from their changelogs and keeps standby replicas
current. This module holds the restore of active tasks and the thread's loop; the standby half (standby and
warm-up tasks) is the mixin ``StandbyUpdates`` in standbys.py, which ``StateUpdater`` inherits.

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

How the two halves share the thread (details: standbys.py): standby stores tail their changelogs on the
same consumer, and ``_apply`` writes their records like restored ones (never in restore mode). Priority:
while any active task restores (from ``add`` until it is handed back, its flush included), every standby
partition is paused and no standby flush starts; each pass of the loop serves restoring stores if there
are any, else runs a standby round, then the standby upkeep. Durability: standby writes skip the WAL too, so
a changed standby store is flushed every ``STANDBY_FLUSH_INTERVAL_S`` (a kill -9 loses at most that much
progress). Lags: ``standby_lags()``, changelog end - store offset per standby task.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Callable

from confluent_kafka import OFFSET_INVALID, Consumer, KafkaError, KafkaException
from confluent_kafka import TopicPartition as KTopicPartition

from ..config import Config
from ..errors import IllegalStateTransition
from ..observe.listener import RestoreListener, StandbyUpdateListener, _SafeListener
from ..observe.metrics import Metrics, StoreRestoreMetrics
from ..observe.rate_limited import RateLimitedLog
from ..records import TopicPartition
from .standbys import StandbyUpdates, _StorePartition
from .task import Task, TaskStore

log = logging.getLogger(__name__)

_IDLE_WAIT_S = 0.1
_FLUSH_POLL_S = 0.005  # nothing to read, only flushes to wait for
_CONSUME_WAIT_S = 0.1


@dataclass
class _TaskRestore:
    task: Task
    pending: set[TopicPartition] = field(default_factory=set)


class StateUpdater(StandbyUpdates):
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
        self._error_log = RateLimitedLog(log)
        self._init_standbys(standby_listener)
        self._metrics = metrics
        self._commands: queue.Queue = queue.Queue()
        self._restored: list[Task] = []
        self._failed: list[tuple[Task, BaseException]] = []
        self._out_lock = threading.Lock()
        self._tasks: dict[str, _TaskRestore] = {}
        self._partitions: dict[TopicPartition, _StorePartition] = {}  # assigned, reading the changelog
        self._flushing: dict[TopicPartition, _StorePartition] = {}  # read to the end, flush under way
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

    def shutdown(self, timeout_s: float | None) -> None:
        """Stops the thread and waits for it at most ``timeout_s`` (None: until it has ended)."""
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
                self.run_once()
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

    def run_once(self, wait: bool = True) -> None:
        """One pass of the thread's loop: commands, then a restore round (or a check of restore flushes), else
        a standby round, then the standby upkeep. The thread calls it in a loop; a deterministic simulation
        calls it directly (``wait=False``: no idle wait for commands)."""
        consumer = self._consumer
        # No wait when a consume follows (it waits itself); a short one when only flushes are polled.
        self._handle_commands(wait_s=0 if not wait or self._partitions else _FLUSH_POLL_S if self._flushing
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
        """A keyless record or an error event. A non-fatal error event (a broker restarting: transport errors,
        a leader moving) is logged at most every 10 s per code and the reading goes on: librdkafka retries by
        itself (it used to stop a standby for good, or fail a restore). A fatal one, or a record without a
        key (a changelog is compacted: every record has one), fails that standby only, else it raises."""
        err = msg.error()
        if err is not None and err.code() == KafkaError._PARTITION_EOF:
            return
        if err is not None and not err.fatal():
            self._error_log.warning(err.code(), "restore consumer: %s (librdkafka retries; restores and "
                                    "standbys go on)", err)
            return
        topic = msg.topic()
        sp = self._standby_partitions.get((topic, msg.partition())) if topic is not None else None
        if sp is not None:
            self._fail_standby(sp, KafkaException(err) if err is not None else RuntimeError(
                f"changelog record without a key at {topic}[{msg.partition()}] offset {msg.offset()}"))
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


    def _standby_round(self, consumer: Consumer) -> None:
        """No active restore: read what the standby partitions have."""
        all_paused = len(self._paused) >= len(self._standby_partitions)  # all flushing: poll those soon
        msgs = consumer.consume(self._config.restore_consume_records_max, _FLUSH_POLL_S if all_paused
                                else _CONSUME_WAIT_S)
        if msgs:
            self._apply(msgs)
        self._advance_to_positions(consumer)



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