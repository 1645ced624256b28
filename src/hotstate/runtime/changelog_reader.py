"""The changelog reader: reads changelogs into their stores on the state updater's thread (state_updater.py owns
the thread and the hand-off API), for active tasks that restore and for standby (and warm-up) tasks that tail.
Kafka Streams' StoreChangelogReader: one reader, one restore consumer, one record loop. Each store partition
is a ``ChangelogPartition`` with a ``mode`` (ACTIVE: read to the end once, then handed back; STANDBY: tail
until removed) and a ``ChangelogState``; which partitions are assigned, paused or flushing follows from
their states, nothing else keeps it::

                +--> DOWNLOADING --+
                |                  v
    REGISTERED -+------------------+--> RESTORING --> FLUSHING --> COMPLETED    ACTIVE: read to the end
                                   |                                  ^
                                   +----------------------------------+       (nothing to read)
                                   |
                                   +--> UPDATING <--> PAUSED                   STANDBY: tail until removed
                                          |  ^          ^
                                          v  |          |
                                         FLUSHING ------+
    every state but COMPLETED / FAILED / CLOSED --> FAILED (stopped on an error), CLOSED (removed)

- REGISTERED: the reader knows the store; the changelog's range is read ([low, high), fresh watermarks) and
  the store's offset checked against it (an offset the changelog cannot serve wipes the store).
- DOWNLOADING (optional): with a ``snapshot_source``, a persistent store with changelog records to read
  asks it for a snapshot (``SnapshotSource.fetch``) into an empty staging directory, on one of the reader's
  ``hotstate-snapshot-download`` threads: the active partitions started together download at once (at most
  ``SNAPSHOT_DOWNLOAD_PARTITIONS_MAX`` at a time), each adopted on this thread in turn; a standby's one at a
  time. A snapshot whose offset the changelog can serve and that is ahead of the local state is adopted
  (``RestoreTarget.open_from_files``) and reading starts at its offset; no snapshot, a failing source or
  unusable files fall back to reading the changelog (a warning says why). The store never sees the files
  of a failed download: they stay in the staging directory, which is deleted either way.
- RESTORING (active): assigned, read to the end offset read at the start. "Restored" means the consumer's
  position reached that end (not that a record at end-1 was seen: under transactions the last offset is a
  commit marker); the store's offset is then set to that position.
- FLUSHING: active, read to its end and unassigned: its flush runs asynchronously (``request_restore_flush``,
  polled with ``restore_flushed``) while the thread goes on with other partitions; then ``end_restore``
  makes the offset durable and switches the store back to processing -> COMPLETED, and when that was its
  task's last store the task is handed back. Standby: the periodic flush, the partition paused meanwhile.
- UPDATING / PAUSED (standby): assigned and tailing / paused in the consumer because an active task restores.

Records: each consume call returns up to ``restore_consume_records_max`` records of any assigned partition;
each run of one partition's records goes into one write batch of its store (at most
``restore_batch_records_max``, ``restore_batch`` + ``write_restore_batch``), without the WAL, the new
changelog offset in the same batch. Active stores get ``begin_restore`` (RocksDB's bulk-load options for
big restores); standby stores never do (no bulk options, no reopen). Why each exists, with numbers:
docs/benchmarks.md.

Priority (Kafka Streams' changelog reader): while any active task restores (from its start until it is
handed back, its flush included), every standby partition is PAUSED and no standby flush starts, so active
restores have the consumer, the thread and the disk to themselves. A paused partition is resumed before it
is unassigned: librdkafka keeps a pause across unassign and assign, which would stall a later restore.

Standbys (their durability, flushes and lags): standby_reading.py.

Errors: a non-fatal consumer error event (a broker restarting) is logged at most every 10 s per code and
the reading goes on (librdkafka retries by itself). A fatal one, a record without a key, or a failing store
write fails that standby only (FAILED until it is removed); for an active partition it raises (the state
updater fails). A failure while starting an active task's restore fails that task only.
"""
from __future__ import annotations

import concurrent.futures
import logging
import time
from typing import Any, Callable

from confluent_kafka import OFFSET_INVALID, Consumer, KafkaError, KafkaException
from confluent_kafka import TopicPartition as KTopicPartition

from ..config import Config
from ..errors import IllegalStateTransition
from ..kafka import clients
from ..observe.listener import _SafeListener
from ..observe.metrics import Metrics, StoreRestoreMetrics
from ..observe.rate_limited import RateLimitedLog
from ..records import TopicPartition
from .changelog_partition import CONSUME_WAIT_S, ChangelogPartition, ChangelogState, Mode, ReaderTask
from .live_restore import LOOKUP_OFFSETS_MIN, live_start, newest_committed_timestamp
from .snapshot_download import ChangelogRange, Download, SnapshotDownloading, SnapshotSource
from .standby_reading import StandbyReading
from .task import Task, TaskStore

log = logging.getLogger(__name__)


class ChangelogReader(SnapshotDownloading, StandbyReading):
    """The reader; every method runs on the state updater's thread except ``standby_lags``,
    ``standby_offsets``, ``standby_task_ids`` and ``active_task_ids`` (any thread). Its standby methods are in
    ``StandbyReading`` (standby_reading.py), its snapshot downloads in ``SnapshotDownloading``
    (snapshot_download.py)."""

    def __init__(self, config: Config, metrics: Metrics, listener: _SafeListener, standby_listener: _SafeListener,
                 on_restored: Callable[[Task], None], on_failed: Callable[[Task, BaseException], None],
                 ends_consumer_factory: Callable[[], Consumer] | None = None,
                 snapshot_source: SnapshotSource | None = None, staging_dir: str | None = None,
                 tail_consumer_factory: Callable[[], Consumer] | None = None,
                 group_consumer_factory: Callable[[], Consumer] | None = None):
        """``on_restored(task)`` / ``on_failed(task, error)``: an active task is done / failed (the updater's
        outbox). ``ends_consumer_factory``: a ``read_uncommitted`` consumer for changelog high watermarks
        (``clients.end_offsets_consumer``); without it the restore consumer is asked. ``staging_dir``: where
        snapshot downloads go (the system's temp dir by default; a directory on the state dir's filesystem
        makes adopting them a rename). ``tail_consumer_factory``: a ``read_committed`` consumer that reads the
        last records of windowed changelogs for the retention-aware restore (live_restore.py); without it
        windowed stores restore from their stored offset like key-value stores. ``group_consumer_factory``: a
        consumer with the app's group id (``clients.group_offsets_consumer``) that reads the group's committed
        offsets: a table's store (its changelog is its source topic) restores up to them, not to the end;
        without it such a store restores to the end."""
        self._config = config
        self._group_consumer_factory = group_consumer_factory
        self._group_consumer: Consumer | None = None
        self._tail_consumer_factory = tail_consumer_factory
        self._tail_consumer: Consumer | None = None
        self._metrics = metrics
        self._listener = listener
        self._standby_listener = standby_listener
        self._on_restored = on_restored
        self._on_failed = on_failed
        self._ends_consumer_factory = ends_consumer_factory
        self._ends_consumer: Consumer | None = None
        self._snapshots = snapshot_source
        self._staging_dir = staging_dir
        self._download_pool: concurrent.futures.ThreadPoolExecutor | None = None  # made on the first download
        self._error_log = RateLimitedLog(log)
        self.consumer: Consumer | None = None  # the restore consumer, set before the first call
        self._partitions: dict[TopicPartition, ChangelogPartition] = {}  # every partition not in a terminal state
        self._actives: dict[str, ReaderTask] = {}  # active tasks from their start until handed back (or failed)
        self._init_standbys()

    # ---- what there is to do (derived from the partitions' states) ----
    def _of(self, mode: Mode, *states: ChangelogState) -> list[ChangelogPartition]:
        return [p for p in self._partitions.values() if p.mode is mode and p.state in states]

    def partitions(self) -> dict[TopicPartition, ChangelogPartition]:
        """The partitions the reader works on (none in a terminal state); for tests and diagnostics."""
        return dict(self._partitions)

    def activity(self) -> tuple[bool, bool, bool]:
        """(an active partition is RESTORING, an active partition is FLUSHING, a standby partition is assigned)."""
        restoring = flushing = standby = False
        for p in self._partitions.values():
            if p.mode is Mode.STANDBY:
                standby = True
            elif p.state is ChangelogState.RESTORING:
                restoring = True
            elif p.state is ChangelogState.FLUSHING:
                flushing = True
        return restoring, flushing, standby

    def _actives_restoring(self) -> bool:
        """Some active partition is not COMPLETED yet: standbys wait."""
        return any(p.mode is Mode.ACTIVE for p in self._partitions.values())

    def active_task_ids(self) -> list[str]:
        return list(self._actives)

    def active_tasks(self) -> list[Task]:
        return [rt.task for rt in self._actives.values()]

    # ---- registering ----
    def _register(self, task: Task, mode: Mode) -> ReaderTask:
        rt = ReaderTask(task)
        for store in task.stores.values():
            if store.changelog in self._partitions:  # an always-on check: one reader of a store at a time
                raise IllegalStateTransition(f"task {task.id}: changelog {store.changelog} is read already (task "
                                             f"{self._partitions[store.changelog].task.id})")
            rt.partitions.append(ChangelogPartition(task, store, mode))
        for p in rt.partitions:
            self._partitions[p.tp] = p
        return rt

    def _settle(self, p: ChangelogPartition, to: ChangelogState) -> None:
        """Moves the partition to a terminal state: the reader stops working on it."""
        p.transition(to)
        if self._partitions.get(p.tp) is p:
            del self._partitions[p.tp]

    def _end_offsets(self) -> Consumer:
        if self._ends_consumer is None:
            factory = self._ends_consumer_factory
            self._ends_consumer = factory() if factory is not None else self.consumer
        return self._ends_consumer

    def _plan_range(self, task: Task, store: TaskStore) -> ChangelogRange:
        """The changelog range to read; wipes a store whose offset the changelog cannot serve."""
        tp = store.changelog
        timeout_s = self._config.broker_timeout_ms / 1000
        # The end is the high watermark, not the last stable offset: under exactly-once a zombie's open
        # transaction holds the latter back while committed records may follow; the restore reads on (with
        # read_committed) until that transaction is resolved and its position passes the high watermark.
        low, high = self._end_offsets().get_watermark_offsets(KTopicPartition(tp.topic, tp.partition),
                                                              timeout=timeout_s, cached=False)
        stored = store.backend.changelog_offset()
        if store.source_changelog:
            return self._plan_source_range(task, store, low, high, stored)
        if stored is not None and stored > high:
            log.warning(
                "task %s store %s: its changelog offset %d is beyond the changelog end %d (was the changelog topic "
                "deleted and recreated?); wiping the store and restoring it in full", task.id, store.spec.name, stored, high)
            store.backend.reset()
            stored = None
        elif stored is not None and stored < low:
            log.warning(
                "task %s store %s: its changelog offset %d is below the changelog start %d (records it needs were "
                "deleted); wiping the store and restoring it in full", task.id, store.spec.name, stored, low)
            store.backend.reset()
            stored = None
        return ChangelogRange(low, low if stored is None else stored, high, stored)

    def _plan_source_range(self, task: Task, store: TaskStore, low: int, high: int,
                           stored: int | None) -> ChangelogRange:
        """A table's store, whose changelog is its source topic: the restore ends at the group's committed offset
        of that partition (Kafka Streams' source-topic changelogs), where the task's processing goes on, so the
        table holds exactly the records before it. No committed offset: nothing is restored, processing builds
        the table. A stored offset past the committed one (a store ahead of the group: a standby that tailed the
        topic to its end, or a commit that failed after the offsets were sent) is kept as it is: the records in
        between are processed again and put the same values."""
        end = high
        if self._group_consumer_factory is not None:
            if self._group_consumer is None:
                self._group_consumer = self._group_consumer_factory()
            tp = store.changelog
            [found] = self._group_consumer.committed([KTopicPartition(tp.topic, tp.partition)],
                                                     timeout=self._config.broker_timeout_ms / 1000)
            if found.error is not None:
                raise KafkaException(found.error)
            end = 0 if found.offset < 0 else min(found.offset, high)
        if stored is not None and stored < low:
            log.warning(
                "task %s table store %s: its offset %d is below the start %d of its source topic (records it needs "
                "were deleted); wiping the store and restoring it in full", task.id, store.spec.name, stored, low)
            store.backend.reset()
            stored = None
        start = low if stored is None else stored
        if start > end:
            log.info("task %s table store %s: it holds its source up to offset %d, past the group's committed offset "
                     "%d; kept (the records in between are processed again)", task.id, store.spec.name, start, end)
            end = start
        return ChangelogRange(low, start, max(end, start), stored)

    # ---- active tasks ----
    def start_actives(self, tasks: list[Task]) -> None:
        """Works out each store's range and starts the snapshot downloads of all of them at once; then, task by
        task, adopts them and assigns every partition that needs a restore in one call."""
        assign: list[KTopicPartition] = []
        planned: list[tuple[Task, ReaderTask, dict[TopicPartition, ChangelogRange]]] = []
        downloads: dict[TopicPartition, Download] = {}
        for task in tasks:
            if task.id in self._standbys:  # StateUpdater.add refuses this; a caller that went around it
                self._on_failed(task, IllegalStateTransition(
                    f"task {task.id} was added as active while it is a standby in the state updater"))
                continue
            rt: ReaderTask | None = None
            try:
                rt = self._register(task, Mode.ACTIVE)
                ranges = {p.tp: self._plan_range(task, p.store) for p in rt.partitions}
                for p in rt.partitions:
                    if self._wants_download(p, ranges[p.tp]):
                        downloads[p.tp] = self._start_download(p, ranges[p.tp])
            except BaseException as exc:
                self._start_failed(task, rt, exc, downloads)
                continue
            planned.append((task, rt, ranges))
        for task, rt, ranges in planned:
            try:
                task_assign = [ktp for p in rt.partitions
                               if (ktp := self._plan_active(p, ranges[p.tp], downloads.pop(p.tp, None))) is not None]
            except BaseException as exc:
                self._start_failed(task, rt, exc, downloads)
                continue
            if rt.completed:
                self._on_restored(task)
            else:
                self._actives[task.id] = rt
                assign.extend(task_assign)
        self._metrics.active_restoring_tasks = len(self._actives)
        if assign:
            self.consumer.incremental_assign(assign)
            clients.learn_leaders(self.consumer, (ktp.topic for ktp in assign))
            # After the assignment: librdkafka fetches while the stores switch to their restore options.
            for ktp in assign:
                p = self._partitions.get((ktp.topic, ktp.partition))
                if p is None or p.state is not ChangelogState.RESTORING:
                    continue  # its task failed below already
                try:
                    p.store.backend.begin_restore(p.end_offset - ktp.offset)
                except BaseException as exc:
                    self._fail_active(p.task, exc)

    def _start_failed(self, task: Task, rt: ReaderTask | None, exc: BaseException,
                      downloads: dict[TopicPartition, Download]) -> None:
        """Starting the task's restore failed: its partitions FAILED, its downloads discarded, the task reported."""
        for p in rt.partitions if rt is not None else ():
            download = downloads.pop(p.tp, None)
            if download is not None:
                download.discard()
            if p.live:
                self._settle(p, ChangelogState.FAILED)
        self._on_failed(task, exc)

    def _plan_active(self, p: ChangelogPartition, r: ChangelogRange,
                     download: Download | None) -> KTopicPartition | None:
        """(REGISTERED | DOWNLOADING) -> RESTORING, or COMPLETED when the store is at the changelog end."""
        task, store = p.task, p.store
        start = self._download(p, r, download)
        store.restored_records = 0
        p.end_offset = r.end
        live = self._live_start(p, start, r)
        skipped = live - start
        if skipped and live >= r.end:  # every record is expired: the store is current once it knows it
            store.backend.write([], r.end)
        start = live
        if start >= r.end:
            log.info("task %s: store %s is current at changelog offset %d of %s (nothing to restore)",
                     task.id, store.spec.name, start, store.changelog)
            self._settle(p, ChangelogState.COMPLETED)
            return None
        p.metrics = StoreRestoreMetrics(restore_remaining_records=r.end - start, started_at_s=time.monotonic(),
                                        changelog=str(store.changelog), restore_skipped_records_total=skipped)
        self._metrics.restores[f"{task.id}/{store.spec.name}"] = p.metrics
        p.transition(ChangelogState.RESTORING)
        log.info("task %s: restoring store %s from %s offsets [%d, %d)", task.id, store.spec.name,
                 store.changelog, start, r.end)
        self._listener.on_restore_start(store.changelog, store.spec.name, start, r.end)
        return KTopicPartition(store.changelog.topic, store.changelog.partition, start)

    def _live_start(self, p: ChangelogPartition, start: int, r: ChangelogRange) -> int:
        """The retention-aware restore (live_restore.py): where reading a windowed store's changelog starts,
        active or standby; ``start`` for any other store. The offsets passed over are logged and counted in
        ``restore_skipped_records_total``. Any failure to find out means reading from ``start``."""
        store = p.store
        if not store.windowed or self._tail_consumer_factory is None or r.end - start <= LOOKUP_OFFSETS_MIN:
            return start  # a short tail (a clean restart's) is read, not looked up: the lookup costs more
        tp = store.changelog
        timeout_s = self._config.broker_timeout_ms / 1000
        try:
            if self._tail_consumer is None:
                self._tail_consumer = self._tail_consumer_factory()
            newest = newest_committed_timestamp(self._tail_consumer, tp.topic, tp.partition, r.low, r.end)
            live = live_start(store, start, r.end, newest, self._end_offsets(), timeout_s)
        except Exception as exc:
            log.warning("task %s store %s: finding the first live record of %s failed (%r); reading from %d",
                        p.task.id, store.spec.name, tp, exc, start)
            return start
        if live > start:
            self._metrics.restore_skipped_records_total += live - start
            log.info("task %s (%s): store %s skips changelog offsets [%d, %d) of %s: their windows are expired",
                     p.task.id, p.mode.value, store.spec.name, start, live, tp)
        return live

    def _fail_active(self, task: Task, exc: BaseException) -> None:
        """Stop restoring the task and report it failed (the processing thread raises its error)."""
        rt = self._actives.pop(task.id, None)
        parts = rt.partitions if rt is not None else []
        unassign = [p.ktp for p in parts if p.state is ChangelogState.RESTORING]
        for p in parts:
            if p.live:
                self._settle(p, ChangelogState.FAILED)
        if unassign:
            self.consumer.incremental_unassign(unassign)
        self._metrics.active_restoring_tasks = len(self._actives)
        self._on_failed(task, exc)

    def remove_active(self, task_id: str) -> Task | None:
        """Stops restoring the task (CLOSED); its stores are flushed and back in processing mode. None if the
        reader does not restore it (not added, or handed back already)."""
        rt = self._actives.pop(task_id, None)
        if rt is None:
            return None
        unassign = [p.ktp for p in rt.partitions if p.state is ChangelogState.RESTORING]
        for p in rt.partitions:
            if p.live:  # moved away: not restored here
                self._metrics.restores.pop(f"{task_id}/{p.store.spec.name}", None)
                self._settle(p, ChangelogState.CLOSED)
        self._metrics.active_restoring_tasks = len(self._actives)
        if unassign:
            self.consumer.incremental_unassign(unassign)
        for store in rt.task.stores.values():
            store.backend.end_restore()
        return rt.task

    def restore_round(self) -> None:
        """One consume call for the restoring partitions, then the ends reached and the flushes done."""
        consumer = self.consumer
        msgs = consumer.consume(self._consume_count(), CONSUME_WAIT_S)
        if msgs:
            self._apply(msgs)
        self._check_done()
        self.check_flushed()

    def _consume_count(self) -> int:
        """``restore_consume_records_max``, but no more than the offsets the restoring partitions have left:
        librdkafka's consume waits until it has the whole count or CONSUME_WAIT_S passed, so asking for more
        records than are left made the last round of every restore wait the whole CONSUME_WAIT_S (100 ms of a
        cold start, bench/restore.py --timeline). The offsets left bound the records left from above
        (transaction markers and compacted-away offsets hold none), so no round stops short of a record it
        would have had; at most it waits, as before, for records that do not come."""
        most = self._config.restore_consume_records_max
        left = 0
        for p in self._of(Mode.ACTIVE, ChangelogState.RESTORING):
            if p.metrics is None:  # (set before RESTORING; without it nothing bounds the count)
                return most
            left += p.metrics.restore_remaining_records
        return max(1, min(most, left))

    def _check_done(self) -> None:
        restoring = self._of(Mode.ACTIVE, ChangelogState.RESTORING)
        if not restoring:
            return
        for ktp in self.consumer.position([p.ktp for p in restoring]):
            if ktp.offset == OFFSET_INVALID or ktp.offset < 0:
                continue
            p = self._partitions[(ktp.topic, ktp.partition)]
            if ktp.offset >= p.end_offset:
                self._finish(p, ktp.offset)

    def _finish(self, p: ChangelogPartition, position: int) -> None:
        """RESTORING -> FLUSHING: read to its end; record the final offset, unassign it, start the flush."""
        backend = p.store.backend
        if p.store.source_changelog:
            position = min(position, p.end_offset)  # a table's store: up to the committed offset, not past it
        stored = backend.changelog_offset()
        if stored is None or position > stored:  # skipped markers or compacted-away records at the end
            if p.restored == 0:
                # Nothing restored (e.g. only a commit marker after a crash under exactly-once): one ordinary
                # durable write of the offset, no restore-mode flush and reopen (measured ~0.1 s a store).
                backend.write([], position)
            else:
                backend.write_restore_batch(backend.restore_batch(), position)
        self.consumer.incremental_unassign([p.ktp])
        p.transition(ChangelogState.FLUSHING)
        backend.request_restore_flush()
        if backend.restore_flushed():
            self._complete(p)

    def check_flushed(self) -> None:
        for p in self._of(Mode.ACTIVE, ChangelogState.FLUSHING):
            if p.store.backend.restore_flushed():
                self._complete(p)

    def _complete(self, p: ChangelogPartition) -> None:
        """FLUSHING -> COMPLETED: the store's data is on disk; make its offset durable, switch it to processing,
        hand the task over when it was the task's last store."""
        store = p.store
        store.backend.end_restore()
        self._settle(p, ChangelogState.COMPLETED)
        store.restored_records = p.restored
        m = p.metrics
        m.restore_remaining_records = 0
        m.ended_at_s = time.monotonic()
        log.info("task %s: store %s restored %d records", p.task.id, store.spec.name, p.restored)
        self._listener.on_restore_end(p.tp, store.spec.name, p.restored)
        rt = self._actives[p.task.id]
        if rt.completed:
            del self._actives[p.task.id]
            self._metrics.active_restoring_tasks = len(self._actives)
            self._on_restored(rt.task)
            if not self._actives_restoring():
                self.sync_pauses()  # no active restore left: the standbys resume

    # ---- records (both modes) ----
    def _apply(self, msgs: list) -> None:
        """Puts records straight into their store's write batch. A batch holds one run of consecutive records
        of one partition (librdkafka hands out a partition's records in long runs), at most
        ``restore_batch_records_max``; it is written with the offset after its last record.

        This loop is the restore's hot path: it touches each message as few times as it can."""
        limit = self._config.restore_batch_records_max
        partitions = self._partitions
        run_partition = run_topic = None
        p: ChangelogPartition | None = None  # None: the run's partition is not read here; skip
        put = delete = batch = last = None
        stop = None  # a table's restore ends at the committed offset: the records after it are not applied
        n = 0
        for m in msgs:
            key = m.key()
            if key is None:  # Kafka refuses keyless records in compacted topics: this is an error event
                self._on_error_event(m)  # (or a keyless record of a table's source topic: skipped there)
                continue
            partition = m.partition()
            if partition != run_partition or n == limit or m.topic() != run_topic:  # int compare first: cheaper
                if n:
                    self._write(p, batch, last.offset(), n)
                    n = 0
                run_partition, run_topic = partition, m.topic()
                p = partitions.get((run_topic, partition))
                if p is not None and not p.reading:
                    p = None
                if p is not None:
                    batch = p.store.backend.restore_batch()
                    put, delete = batch.put, batch.delete
                    stop = (p.end_offset if p.mode is Mode.ACTIVE and p.store.source_changelog
                            else None)
            if p is None:
                continue
            if stop is not None and m.offset() >= stop:
                continue
            value = m.value()
            if value is None:
                delete(key)
            else:
                put(key, value)
            n += 1
            last = m
        if n:
            self._write(p, batch, last.offset(), n)

    def _write(self, p: ChangelogPartition, batch: Any, last_offset: int, n: int) -> None:
        if p.mode is Mode.STANDBY:
            self._write_standby(p, batch, last_offset, n)
            return
        p.store.backend.write_restore_batch(batch, last_offset + 1)
        p.restored += n
        self._metrics.count_restored(p.metrics, n, max(0, p.end_offset - last_offset - 1))
        self._listener.on_batch_restored(p.tp, p.store.spec.name, last_offset, n)

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
        p = self._partitions.get((topic, msg.partition())) if topic is not None else None
        if err is None and p is not None and p.store.source_changelog:
            return  # a table's source topic may hold keyless records: processing drops them too
        if p is not None and p.mode is Mode.STANDBY:
            self._fail_standby(p, KafkaException(err) if err is not None else RuntimeError(
                f"changelog record without a key at {topic}[{msg.partition()}] offset {msg.offset()}"))
            return
        if err is None:
            raise RuntimeError(f"changelog record without a key at {topic}[{msg.partition()}] offset "
                               f"{msg.offset()}: a changelog is a compacted topic, whose records have keys")
        raise KafkaException(err)

    # ---- the end ----
    def close(self) -> None:
        """Ends the restores under way (their stores flushed, back in processing mode), settles every partition
        CLOSED and closes the consumers. Standby tasks stay known until ``forget_standby``."""
        for p in list(self._partitions.values()):
            if p.mode is Mode.ACTIVE and p.state in (ChangelogState.RESTORING, ChangelogState.FLUSHING):
                _safe_end_restore(p.store)
            self._settle(p, ChangelogState.CLOSED)
        self._actives.clear()
        if self._download_pool is not None:
            self._download_pool.shutdown(wait=False, cancel_futures=True)
            self._download_pool = None
        consumer = self.consumer
        if consumer is not None:
            consumer.close()
        if self._ends_consumer is not None and self._ends_consumer is not consumer:
            self._ends_consumer.close()
        if self._tail_consumer is not None:
            self._tail_consumer.close()
        if self._group_consumer is not None:
            self._group_consumer.close()


def _safe_end_restore(store: TaskStore) -> None:
    try:
        store.backend.end_restore()
    except Exception:
        log.exception("flushing store %s after restore failed", store.spec.name)
