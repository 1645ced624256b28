"""Standby (and warm-up) tasks in the state updater: the half of ``StateUpdater`` that keeps standby replicas
current, as the mixin ``StandbyUpdates`` (state_updater.py holds the restore half and the shared thread).

Both halves run on the updater's one thread and share its restore consumer and its record loop ``_apply``,
which puts each run of a standby partition's records into one write batch and hands it to
``_write_standby``. Each pass of the updater's loop serves restoring stores (a restore round, or a check of
their flushes) if there are any, else runs a standby round; then ``_maintain_standbys``. Here: the standby
API (``add_standby``, ``remove_standby``, ``standby_lags``, ``standby_offsets``, ``standby_task_ids``), the
standby bookkeeping (``_StandbyTask``, ``_StandbyPartition``), pausing, flushing and lags; and
``_StorePartition``, the store partition both halves write through (it is the base of
``_StandbyPartition``, so it lives in the module state_updater.py imports).

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
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

from confluent_kafka import Consumer, KafkaException
from confluent_kafka import TopicPartition as KTopicPartition

from ..errors import IllegalStateTransition
from ..observe.listener import StandbyUpdateListener, SuspendReason, _SafeListener
from ..observe.metrics import StoreRestoreMetrics
from ..records import TopicPartition
from .task import Task, TaskStore

log = logging.getLogger("hotstate.runtime.state_updater")  # the updater's logger, as before the split

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


class StandbyUpdates:
    """The standby half of ``StateUpdater``, which inherits it. It uses the updater's ``_metrics``,
    ``_consumer``, ``_commands``, ``_submit``, ``_ids_lock`` (which guards ``_active_ids`` and
    ``_standby_tasks``), ``_tasks`` (the restoring active tasks: while there is one, standbys are paused) and
    ``_restore_range``. The updater's thread calls ``_start_standbys``, ``_remove_standby``, ``_sync_pauses``,
    ``_write_standby`` (from ``_apply``), ``_fail_standby``, ``_advance_to_positions`` and
    ``_maintain_standbys``."""

    # Standby tuning (see the module docstring); class attributes so tests can shorten them.
    STANDBY_FLUSH_INTERVAL_S = 10.0  # a changed standby store is flushed at most this long after its last flush
    STANDBY_LAG_REFRESH_S = 1.0  # changelog ends of tailing standby partitions (cached by librdkafka)
    STANDBY_PAUSED_LAG_REFRESH_S = 5.0  # changelog ends of paused ones (asked of the broker)

    def _init_standbys(self, standby_listener: StandbyUpdateListener | None) -> None:
        self._standby_listener = _SafeListener(standby_listener, "standby")
        # Standbys (updater thread). _standbys changes under _standby_lock: standby_lags() reads it.
        self._standbys: dict[str, _StandbyTask] = {}
        self._standby_lock = threading.Lock()
        self._standby_partitions: dict[TopicPartition, _StandbyPartition] = {}  # assigned, tailing
        self._standby_flushing: dict[TopicPartition, _StandbyPartition] = {}
        self._paused: set[TopicPartition] = set()  # standby partitions paused in the consumer
        self._next_flush_check = 0.0
        self._next_end_refresh = 0.0
        self._next_paused_end_refresh = 0.0

    # ---- hand-off API (processing thread; standby_* any thread) ----
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

    # ---- the thread ----
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
                if backend.persistent:
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
