"""The changelog reader's standby half: standby (and warm-up) tasks tail their stores' changelogs until removed,
on the state updater's thread, through the reader's one consumer and record loop (changelog_reader.py, whose
docstring has the partition states; ``ChangelogReader`` mixes this class in).

Standby durability: standby writes skip the WAL (RocksDB), so a standby store that changed is flushed at
most ``STANDBY_FLUSH_INTERVAL_S`` after its last flush (RocksDB also flushes a full memtable by itself,
atomically over data and offset: ``atomic_flush``); an in-memory store has nothing to flush. The flush is
the two-step asynchronous one (data, then the offset) and the partition is paused (FLUSHING) while it runs,
so no write falls between the two steps (one that slips through starts the data step again). A kill -9
therefore leaves a standby store at its last flushed offset with its data at or ahead of that offset, which
tailing from the offset repairs: losing at most about ``STANDBY_FLUSH_INTERVAL_S`` of progress. Transaction
markers and aborted records move a standby's offset too (to the consumer's position), so a caught-up
standby has lag 0. Removing a standby leaves unflushed writes to the backend: closing it, or its next
``write`` / ``end_restore``, flushes them first.

Standby lags: per standby task, the sum over its stores of (changelog end - store offset). The end is the
high watermark librdkafka caches from every fetch response (``get_watermark_offsets(cached=True)``, read
every ``STANDBY_LAG_REFRESH_S``: about 25 us a partition, where ``cached=False`` costs a broker round trip
of 1 to 30 ms). A paused partition gets no fetch responses: its end comes from one batched
``offsets_for_times`` (latest) for all paused partitions every ``STANDBY_PAUSED_LAG_REFRESH_S``.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any

from confluent_kafka import Consumer, KafkaException
from confluent_kafka import TopicPartition as KTopicPartition

from ..config import Config
from ..errors import IllegalStateTransition
from ..observe.listener import SuspendReason, _SafeListener
from ..observe.metrics import Metrics
from ..records import TopicPartition
from .changelog_partition import (CONSUME_WAIT_S, FLUSH_POLL_S, PAUSED_STATES, ChangelogPartition, ChangelogState,
                                  Mode, ReaderTask)
from .task import Task

log = logging.getLogger("hotstate.runtime.changelog_reader")

_STANDBY_FLUSH_CHECK_S = 0.1  # how often to look for standby stores due for a flush
_PAUSED_ENDS_TIMEOUT_S = 1.0  # the paused standbys' end query; on timeout their ends stay as they were


class StandbyReading:
    """The standby methods of ``ChangelogReader``. They run on the state updater's thread except
    ``standby_lags``, ``standby_offsets`` and ``standby_task_ids`` (any thread). The reader provides the
    consumer, the partitions and the shared steps (``_of``, ``_register``, ``_settle``, ``_plan_range``,
    ``_download``, ``_actives_restoring``); this class owns the standby tasks and their timers."""

    # Standby tuning (see the module docstring); class attributes so tests can shorten them.
    STANDBY_FLUSH_INTERVAL_S = 10.0  # a changed standby store is flushed at most this long after its last flush
    STANDBY_LAG_REFRESH_S = 1.0  # changelog ends of tailing standby partitions (cached by librdkafka)
    STANDBY_PAUSED_LAG_REFRESH_S = 5.0  # changelog ends of paused ones (asked of the broker)

    # The reader's, set in its __init__.
    consumer: Consumer | None
    _config: Config
    _metrics: Metrics
    _standby_listener: _SafeListener
    _partitions: dict[TopicPartition, ChangelogPartition]
    _actives: dict[str, ReaderTask]

    def _init_standbys(self) -> None:
        self._standbys: dict[str, ReaderTask] = {}  # standby tasks until removed; changes under _standby_lock
        self._standby_lock = threading.Lock()
        self._next_flush_check = 0.0
        self._next_end_refresh = 0.0
        self._next_paused_end_refresh = 0.0

    def has_standbys(self) -> bool:
        return bool(self._standbys)

    def standby_task_ids(self) -> list[str]:
        with self._standby_lock:
            return list(self._standbys)

    def standby_lags(self) -> dict[str, int]:
        """Per standby task, the sum over its stores of (changelog end - store offset); failed ones left out."""
        with self._standby_lock:
            return {tid: sum(max(0, p.end_offset - p.offset) for p in rt.partitions)
                    for tid, rt in self._standbys.items() if not rt.failed}

    def standby_offsets(self) -> dict[str, int]:
        with self._standby_lock:
            return {tid: sum(p.offset for p in rt.partitions) for tid, rt in self._standbys.items() if not rt.failed}

    def start_standbys(self, tasks: list[Task]) -> None:
        """Works out where each store's tailing starts, then assigns all new partitions in one call (paused at
        once by ``sync_pauses`` while active tasks restore)."""
        assign: list[KTopicPartition] = []
        now = time.monotonic()
        for task in tasks:
            if task.id in self._standbys or task.id in self._actives:  # add_standby refuses this
                log.error("task %s is already in the state updater; add_standby ignored", task.id)
                continue
            try:
                rt = self._register(task, Mode.STANDBY)
            except IllegalStateTransition as exc:
                log.error("standby task %s: %s; add_standby ignored", task.id, exc)
                continue
            try:
                task_assign = [self._plan_standby(p, now) for p in rt.partitions]
            except Exception as exc:
                log.error("standby task %s: cannot start updating its stores (%r); it stays idle until it is "
                          "assigned again", task.id, exc, exc_info=exc)
                for p in rt.partitions:
                    if p.live:
                        self._settle(p, ChangelogState.FAILED)
                task_assign = []
            with self._standby_lock:
                self._standbys[task.id] = rt
            for p in rt.partitions:
                if p.state is ChangelogState.UPDATING:
                    log.info("standby task %s: updating store %s from %s offset %d (end %d)", task.id,
                             p.store.spec.name, p.tp, p.offset, p.end_offset)
                    p.announced = True
                    self._standby_listener.on_update_start(p.tp, p.store.spec.name, p.offset)
            assign.extend(task_assign)
        self._standby_metrics()
        if assign:
            self.consumer.incremental_assign(assign)

    def _plan_standby(self, p: ChangelogPartition, now: float) -> KTopicPartition:
        """REGISTERED (-> DOWNLOADING) -> UPDATING."""
        r = self._plan_range(p.task, p.store)
        start = self._download(p, r)
        p.offset, p.end_offset, p.flushed_at = start, r.end, now
        p.transition(ChangelogState.UPDATING)
        return KTopicPartition(p.tp.topic, p.tp.partition, start)

    def remove_standby(self, task_id: str, reason: SuspendReason) -> Task | None:
        """Stops updating the standby (CLOSED); the standby listener hears ``on_update_suspended`` for each
        store it heard start. None if unknown."""
        with self._standby_lock:
            rt = self._standbys.pop(task_id, None)
        if rt is None:
            return None
        try:
            self._stop_reading(rt, ChangelogState.CLOSED)
        except Exception:  # the partitions may stay assigned; their records are dropped (no partition maps them)
            log.exception("standby task %s: unassigning its changelog partitions failed", task_id)
        self._standby_metrics()
        for p in rt.partitions:
            if p.announced:
                self._standby_listener.on_update_suspended(p.tp, p.store.spec.name, p.offset, p.end_offset, reason)
        log.info("standby task %s: no longer updated (%s)", task_id, reason.value)
        return rt.task

    def forget_standby(self, task_id: str) -> Task | None:
        """After ``close``: drops a standby without touching the consumer or the listener."""
        with self._standby_lock:
            rt = self._standbys.pop(task_id, None)
        return None if rt is None else rt.task

    def _stop_reading(self, rt: ReaderTask, to: ChangelogState) -> None:
        """Settles the task's live partitions and unassigns them (resumed first: a pause outlives the
        assignment)."""
        assigned = [p.ktp for p in rt.partitions if p.reading]
        paused = [p.ktp for p in rt.partitions if p.live and p.paused]
        for p in rt.partitions:
            if p.live:
                self._settle(p, to)
        if paused:
            self.consumer.resume(paused)
        if assigned:
            self.consumer.incremental_unassign(assigned)

    def _fail_standby(self, p: ChangelogPartition, exc: BaseException) -> None:
        """An error while updating one store: that standby stops (FAILED; it is not fatal to the reader)."""
        rt = self._standbys.get(p.task.id)
        if rt is None or rt.failed:
            return
        log.error("standby task %s: updating store %s from %s failed (%r); the standby stops until it is "
                  "assigned again", p.task.id, p.store.spec.name, p.tp, exc, exc_info=exc)
        try:
            self._stop_reading(rt, ChangelogState.FAILED)
        except Exception:
            log.exception("standby task %s: unassigning its changelog partitions failed", p.task.id)
        self._standby_metrics()

    def _standby_metrics(self) -> None:
        self._metrics.standby_updating_tasks = sum(1 for rt in self._standbys.values() if not rt.failed)
        self._metrics.standby_records_lag = self.standby_lags()

    def sync_pauses(self) -> None:
        """UPDATING <-> PAUSED: every standby partition waits while an active task restores."""
        hold = self._actives_restoring()
        pause, resume = [], []
        for p in self._of(Mode.STANDBY, ChangelogState.UPDATING, ChangelogState.PAUSED):
            if hold and p.state is ChangelogState.UPDATING:
                p.transition(ChangelogState.PAUSED)
                pause.append(p.ktp)
            elif not hold and p.state is ChangelogState.PAUSED:
                p.transition(ChangelogState.UPDATING)
                resume.append(p.ktp)
        if pause:
            self.consumer.pause(pause)
        if resume:
            self.consumer.resume(resume)

    def _write_standby(self, p: ChangelogPartition, batch: Any, last_offset: int, n: int) -> None:
        if not p.reading:  # failed or removed within this consume call: late records are dropped
            return
        try:
            p.store.backend.write_restore_batch(batch, last_offset + 1)
        except Exception as exc:
            self._fail_standby(p, exc)
            return
        self._standby_moved(p, last_offset + 1)
        self._standby_listener.on_batch_loaded(p.tp, p.store.spec.name, p.task.id, last_offset, n, p.end_offset)

    def _standby_moved(self, p: ChangelogPartition, offset: int) -> None:
        p.offset = offset
        if p.end_offset < offset:
            p.end_offset = offset
        p.dirty = True
        if p.state is ChangelogState.FLUSHING:
            # Written while its flush runs (the pause had not taken effect yet): the offset must not reach
            # disk before this data, so the flush starts over from its data step.
            p.store.backend.request_restore_flush()

    def standby_round(self) -> None:
        """No active restore: read what the standby partitions have."""
        all_paused = not self._of(Mode.STANDBY, ChangelogState.UPDATING)  # all flushing: poll those soon
        msgs = self.consumer.consume(self._config.restore_consume_records_max,
                                     FLUSH_POLL_S if all_paused else CONSUME_WAIT_S)
        if msgs:
            self._apply(msgs)
        self._advance_to_positions()

    def _advance_to_positions(self) -> None:
        """Transaction markers, aborted records and compacted-away offsets hold no record to write, but the
        consumer's position moves past them: so does the store's offset (else the lag never reaches 0)."""
        behind = [p for p in self._of(Mode.STANDBY, ChangelogState.UPDATING) if p.offset < p.end_offset]
        if not behind:
            return
        for ktp in self.consumer.position([p.ktp for p in behind]):
            p = self._partitions.get((ktp.topic, ktp.partition))
            if p is None or not p.reading or ktp.offset < 0 or ktp.offset <= p.offset:
                continue
            backend = p.store.backend
            try:
                backend.write_restore_batch(backend.restore_batch(), ktp.offset)
            except Exception as exc:
                self._fail_standby(p, exc)
                continue
            self._standby_moved(p, ktp.offset)

    def maintain_standbys(self, now: float) -> None:
        """Between rounds: finish and start standby flushes, refresh the changelog ends. Cheap when nothing is due."""
        self._check_standby_flushes(now)
        if now >= self._next_flush_check:
            self._next_flush_check = now + _STANDBY_FLUSH_CHECK_S
            if not self._actives_restoring():  # no standby flush competes with an active restore
                self._start_standby_flushes(now)
        if now >= self._next_end_refresh:
            self._refresh_ends(now)

    def _start_standby_flushes(self, now: float) -> None:
        """UPDATING -> FLUSHING (paused) for each persistent standby store that changed and is due."""
        due = now - self.STANDBY_FLUSH_INTERVAL_S
        pause = []
        for p in self._of(Mode.STANDBY, ChangelogState.UPDATING):
            if not p.dirty or p.flushed_at > due:
                continue
            p.dirty = False
            backend = p.store.backend
            if not backend.persistent:  # nothing on disk to make durable
                p.flushed_at = now
                continue
            try:
                backend.request_restore_flush()  # data, then (in restore_flushed) the offset
            except Exception as exc:
                self._fail_standby(p, exc)
                continue
            p.transition(ChangelogState.FLUSHING)
            pause.append(p.ktp)
        if pause:
            self.consumer.pause(pause)

    def _check_standby_flushes(self, now: float) -> None:
        """FLUSHING -> UPDATING (resumed), or PAUSED while an active task restores."""
        flushing = self._of(Mode.STANDBY, ChangelogState.FLUSHING)
        if not flushing:
            return
        hold = self._actives_restoring()
        resume = []
        for p in flushing:
            if p.state is not ChangelogState.FLUSHING:
                continue  # its standby failed meanwhile
            try:
                flushed = p.store.backend.restore_flushed()
            except Exception as exc:
                self._fail_standby(p, exc)
                continue
            if flushed:
                p.flushed_at = now
                if hold:
                    p.transition(ChangelogState.PAUSED)
                else:
                    p.transition(ChangelogState.UPDATING)
                    resume.append(p.ktp)
        if resume:
            self.consumer.resume(resume)

    def _refresh_ends(self, now: float) -> None:
        self._next_end_refresh = now + self.STANDBY_LAG_REFRESH_S
        consumer = self.consumer
        try:
            for p in self._of(Mode.STANDBY, ChangelogState.UPDATING):
                high = consumer.get_watermark_offsets(p.ktp, cached=True)[1]
                if high >= 0:  # none before the first fetch response
                    p.end_offset = max(high, p.offset)
            paused = self._of(Mode.STANDBY, *PAUSED_STATES)
            if paused and now >= self._next_paused_end_refresh:
                self._next_paused_end_refresh = now + self.STANDBY_PAUSED_LAG_REFRESH_S
                latest = [KTopicPartition(p.tp.topic, p.tp.partition, -1) for p in paused]  # -1: the end
                for ktp in consumer.offsets_for_times(latest, timeout=_PAUSED_ENDS_TIMEOUT_S):
                    p = self._partitions.get((ktp.topic, ktp.partition))
                    if p is not None and p.mode is Mode.STANDBY and ktp.error is None and ktp.offset >= 0:
                        p.end_offset = max(ktp.offset, p.offset)
        except KafkaException as exc:  # the ends stay as they were until the next refresh
            log.debug("refreshing the standby changelog ends failed: %s", exc)
        self._metrics.standby_records_lag = self.standby_lags()
