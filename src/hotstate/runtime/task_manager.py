"""The task manager: creates, restores (via the state updater), processes, commits and closes tasks, and
keeps the standby and warm-up tasks the assignor gives this instance (tailed by the state updater).

Runs on the processing thread; the membership's callbacks run while that thread waits inside
``GroupMembership.poll`` (runtime/membership.py), never beside it.
"""
from __future__ import annotations

import logging
import queue
import time
from typing import Any, Callable, Iterable

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Producer
from confluent_kafka import TopicPartition as KTopicPartition

from ..config import Config
from ..dsl.topology import SubTopology, Topology
from ..kafka.clients import produce
from ..kafka.record_size import RecordSizeLimits, is_too_large
from ..errors import RecordTooLargeError, StoreCorruptedError
from ..processor import Punctuation
from ..observe.metrics import Metrics
from ..records import TopicPartition
from ..state.backend import StoreBackend, backend_kind
from ..state.overlay import Overlay
from ..state.rocksdb_store import read_stored_offset, wipe_path
from ..state.state_dir import StateDirectory
from ..state.store import KeyValueStore, StoreSpec
from ..state.session_store import SessionStore
from ..state.window_store import TimeOrderedStore, WindowStore
from .commit import (Committer, ProducerFenced, TaskMigrated, TransactionAborted, TransactionOutcomeUnknown,
                     is_fenced)
from .snapshots import TaskSnapshots
from .state_updater import StateUpdater
from ..observe.listener import SuspendReason
from .bad_records import BadRecords
from .committed_offsets import known_committed, read_committed
from .partition_group import by_timestamp
from .purge import RepartitionPurger
from .task import ProcessorContext, Task, TaskState, TaskStore, task_id

log = logging.getLogger(__name__)


class TaskManager:
    def __init__(self, config: Config, topology: Topology, state_dir: StateDirectory, consumer: Consumer,
                 updater: StateUpdater, metrics: Metrics, committer: Committer,
                 membership: Any = None, open_backend: Callable[[str, str], StoreBackend] | None = None,
                 committed_offsets: Callable[[list[KTopicPartition], float], list[KTopicPartition]] | None = None,
                 snapshots: TaskSnapshots | None = None, wall_clock: Callable[[], int] | None = None,
                 purger: RepartitionPurger | None = None):
        """``membership``: the group member (runtime/membership.py); told to drop out when its commit is refused.
        ``committed_offsets(tps, timeout)``: reads the group's committed offsets (default: the consumer's
        ``committed``; the stream thread passes ``GroupMembership.committed``).
        ``open_backend(store_name, path)``: opens every persistent key-value store (default: the factory registered
        for the store's kind, state/backend.py; the seeded simulation passes a store on its simulated disk).
        Windowed stores always open through their kind's factory (it needs their retention).
        ``snapshots``: with ``snapshot_store`` set, told of each task's ownership and commits (runtime/snapshots.py).
        ``wall_clock()``: ms since the epoch, which WALL_CLOCK_TIME punctuations go by (default: the system clock).
        ``purger``: with repartition topics, told of each commit's committed offsets (runtime/purge.py)."""
        self._config = config
        self._topology = topology
        self._state_dir = state_dir
        self._consumer = consumer
        self._updater = updater
        self._metrics = metrics
        self._committer = committer
        self._membership = membership
        self._open_backend = open_backend
        self._read_committed = committed_offsets or (lambda tps, timeout: consumer.committed(tps, timeout=timeout))
        self._snapshots = snapshots
        self._wall_clock = wall_clock or (lambda: int(time.time() * 1000))
        self._purger = purger
        self.tasks: dict[str, Task] = {}
        self.standbys: dict[str, Task] = {}  # standby and warm-up tasks, tailed by the state updater
        self._disk_offsets: dict[str, int] | None = None  # tasks with state on disk but not open here
        # In-memory stores of tasks revoked here (store name -> backend, committed data and offset), kept until
        # this rebalance's standby assignment in case the task becomes a standby here (see partitions_revoked).
        self._kept_memory: dict[str, dict[str, StoreBackend]] = {}
        self._by_input: dict[tuple[str, int], Task] = {}  # every input partition of every active task
        self._multi_input = any(len(sub.sources) > 1 for sub in topology.subtopologies)
        self._input_rank = {t: i for sub in topology.subtopologies for i, t in enumerate(sub.source_topics)}.__getitem__
        self.assignment_received = False
        self._ctx = ProcessorContext(self._send, metrics)
        # Ids of tasks whose store a read on another thread (an interactive query) found damaged.
        self._corruption_reports: queue.SimpleQueue[str] = queue.SimpleQueue()
        self._sizes = RecordSizeLimits.from_config(config, topology.store_specs())
        self._bad = BadRecords(config, metrics, self._produce)

    # ---- membership (runtime/membership.py calls these on this thread) ----
    def partitions_assigned(self, partitions: list[TopicPartition]) -> None:
        """A task is made for each partition group: the assignor hands all partitions of a task to one member
        together (runtime/membership.py), and the task reads all of them."""
        new: list[Task] = []
        try:
            for tp in partitions:
                if (tp.topic, tp.partition) in self._by_input:
                    continue  # another input of a task made for this assignment
                sub = self._topology.subtopology_of(tp.topic)
                tid = task_id(sub.id, tp.partition)
                task = self.tasks.get(tid)
                if task is None:
                    # A standby promoted here hands its in-memory stores over (RocksDB stores reopen from disk): the
                    # restore then replays only what the standby had not applied, the lag its offsets promised.
                    memory = (self._drop_standby(tid, SuspendReason.PROMOTED, keep_memory=True)
                              or self._kept_memory.pop(tid, {}))
                    task = self._create_task(sub, tp.partition, memory)
                    task.transition(TaskState.RESTORING)
                    self.tasks[task.id] = task
                    new.append(task)
                elif task.state is TaskState.RUNNING:
                    # Not expected (the assignor moves partition groups whole), but never leave an input paused:
                    # the membership pauses what it assigns, and a running task is not resumed again.
                    self._consumer.resume([KTopicPartition(tp.topic, tp.partition)])
                self._by_input[(tp.topic, tp.partition)] = task
        finally:
            if self._snapshots is not None:
                for task in new:
                    self._snapshots.task_assigned(task)
            # One hand-over for the assignment, so its restores start together (StateUpdater.add): added one by
            # one, the first task's snapshot downloaded alone while the others' stores were still opening.
            self._updater.add(*new)
        self.assignment_received = True
        if partitions:
            log.info("assigned tasks %s", sorted({self._by_input[tuple(tp)].id for tp in partitions}))

    def partitions_revoked(self, partitions: list[TopicPartition]) -> None:
        """Commit, then close the tasks. Their in-memory stores are kept (and reported by ``task_offsets``)
        until this rebalance's ``standbys_assigned``: a task that becomes a standby here reuses them, as Kafka
        Streams recycles an active task into a standby, instead of tailing its changelog from the start."""
        self.commit()
        self._close_tasks(partitions, clean=True, keep_memory=True)

    def before_rejoin(self) -> None:
        self.commit()

    def standbys_assigned(self, standby: set[str], warmup: set[str]) -> None:
        """Keep exactly these standby (and warm-up) tasks: stop the others, start the new ones. Called after
        every assignment this member receives, so it counts the rebalances (kafka-python reports assigned
        partitions only when some were added)."""
        self._metrics.rebalances_total += 1
        wanted = {t for t in standby | warmup if t not in self.tasks}
        for tid in sorted(set(self.standbys) - wanted):
            self._drop_standby(tid, SuspendReason.MIGRATED)
        for tid in sorted(wanted - set(self.standbys)):
            sub_id, partition = (int(x) for x in tid.split("_"))
            sub = self._topology.subtopologies[sub_id]
            if not sub.stores:
                continue  # a stateless task has nothing to keep warm
            task = self._create_task(sub, partition, self._kept_memory.pop(tid, {}))
            self.standbys[tid] = task
            self._updater.add_standby(task)
        if self._kept_memory:
            log.info("dropping the in-memory stores of revoked tasks %s: not standbys here", sorted(self._kept_memory))
            self._kept_memory.clear()
        if standby or warmup:
            log.info("standby tasks %s, warm-up tasks %s", sorted(standby), sorted(warmup))

    def _drop_standby(self, tid: str, reason: SuspendReason, keep_memory: bool = False) -> dict[str, StoreBackend]:
        """Stops and closes the standby; with ``keep_memory`` returns its in-memory backends, not closed."""
        task = self.standbys.pop(tid, None)
        if task is None:
            return {}
        self._updater.remove_standby(tid, reason).result(timeout=self._config.broker_timeout_ms / 1000 + 30)
        self._remember_disk_offsets(task)
        kept = task.close_stores(keep_memory=keep_memory)
        self._state_dir.mark_closed(tid)
        return kept

    def task_offsets(self) -> dict[str, int]:
        """Per task, the changelog offset the local state holds (summed over its stores): active tasks,
        standbys, state left on disk by tasks that moved away, and the in-memory stores of revoked tasks while
        they are kept (in-memory state that is dropped is never reported). The group leader's assignor reads it."""
        if self._disk_offsets is None:
            self._disk_offsets = self._scan_disk_offsets()
        out = dict(self._disk_offsets)
        for tid, kept in self._kept_memory.items():  # added to the RocksDB stores' offsets of the same task
            out[tid] = out.get(tid, 0) + sum(b.changelog_offset() or 0 for b in kept.values())
        for task in [*self.tasks.values(), *self.standbys.values()]:
            try:
                out[task.id] = sum(s.backend.changelog_offset() or 0 for s in task.stores.values())
            except Exception as exc:  # e.g. the state updater is reopening the store for a bulk restore
                log.debug("task %s: offset not readable right now (%s); reported as 0", task.id, exc)
                out[task.id] = 0
        return out

    def standby_lags(self) -> dict[str, int]:
        return self._updater.standby_lags()

    def _scan_disk_offsets(self) -> dict[str, int]:
        """The offsets of the closed stores on disk, read read-only: no RocksDB lock is taken, so a store
        another process has open (the hotstate CLI, a backup tool) is still read, and this instance's next
        open of a store never trips over the scan. (Nothing of this instance opens these stores meanwhile:
        the scan skips every store the task manager has open.) A damaged leftover store is wiped (its task is
        not assigned here: nothing restores it now; if it comes back it restores in full); one that cannot
        be read for another reason counts as 0 and is kept."""
        out = {}
        open_ids = set(self.tasks) | set(self.standbys)
        for tid in self._state_dir.task_dirs():
            if tid in open_ids:
                continue
            total = 0
            for store in self._state_dir.store_names(tid):
                path = self._state_dir.store_path(tid, store)
                try:
                    total += read_stored_offset(store, path) or 0
                except StoreCorruptedError as exc:
                    log.warning("task %s (not assigned here): %s; wiping it", tid, exc)
                    wipe_path(path)
                except Exception as exc:  # unreadable for another reason: kept, counted as 0
                    log.warning("task %s (not assigned here): cannot read the offset of its store %s (%s); "
                                "reporting it as 0", tid, store, exc)
            out[tid] = total
        return out

    def _remember_disk_offsets(self, task: Task) -> None:
        on_disk = [s for s in task.stores.values() if backend_kind(s.spec.kind).persistent]
        if self._disk_offsets is not None and on_disk:
            self._disk_offsets[task.id] = sum(s.backend.changelog_offset() or 0 for s in on_disk)

    def _forget_disk_offsets(self, tid: str) -> None:
        if self._disk_offsets is not None:
            self._disk_offsets.pop(tid, None)

    def partitions_lost(self, partitions: list[TopicPartition]) -> None:
        """Another instance owns these already. Under exactly-once the open transaction may hold output and
        changelog records of the lost tasks: it is aborted, so this zombie commits nothing for them, and the
        tasks kept here are rewound to their last commit (their share of the transaction is gone too)."""
        log.warning("partitions lost (this instance was out of the group): %s", [str(p) for p in partitions])
        self._close_tasks(partitions, clean=False)
        if self._config.exactly_once:
            try:
                self._committer.abort()
            except ProducerFenced:  # its transaction is gone with it: a new producer, and the rest rewinds
                self.recover_from_fencing()
                return
            self.rewind([t for t in self.tasks.values() if t.state is TaskState.RUNNING])

    def _close_tasks(self, partitions: Iterable[TopicPartition], clean: bool, keep_memory: bool = False) -> None:
        """Closes every task one of ``partitions`` belongs to (each once; all its inputs go with it)."""
        closing: dict[str, Task] = {}
        for tp in partitions:
            task = self._by_input.get((tp.topic, tp.partition))
            if task is not None:
                closing[task.id] = task
        for task in closing.values():
            for tp in task.inputs:
                if self._by_input.get((tp.topic, tp.partition)) is task:
                    del self._by_input[(tp.topic, tp.partition)]
            self.tasks.pop(task.id, None)
            self._close_task(task, clean, keep_memory)

    def _close_task(self, task: Task, clean: bool, keep_memory: bool = False) -> None:
        if task.state is TaskState.RESTORING:
            self._updater.remove(task.id).result(timeout=self._config.broker_timeout_ms / 1000 + 30)
        self._remember_disk_offsets(task)
        if self._snapshots is not None:
            self._snapshots.task_closed(task)  # before its stores close: nothing of it is published from now on
        task.close_processors()  # before the stores close: close() may still read them
        if task.state is not TaskState.SUSPENDED:
            task.transition(TaskState.SUSPENDED)
        if not clean and task.dirty_records():
            log.warning("task %s: dropping %d uncommitted store writes; they will be reprocessed",
                        task.id, task.dirty_records())
        kept = task.close_stores(keep_memory=keep_memory)
        if kept:
            self._kept_memory[task.id] = kept
        self._state_dir.mark_closed(task.id)
        task.transition(TaskState.CLOSED)

    def clean_obsolete_state(self) -> None:
        """Deletes the state of tasks that left this instance more than ``state_cleanup_delay_ms`` ago (neither
        active nor standby here: a standby's directory keeps the time it was created)."""
        removed = self._state_dir.clean_obsolete(set(self.tasks) | set(self.standbys),
                                                 self._config.state_cleanup_delay_ms)
        for tid in removed:
            self._forget_disk_offsets(tid)
        if removed:
            log.info("deleted the local state of tasks %s: not here for over state_cleanup_delay_ms=%d",
                     removed, self._config.state_cleanup_delay_ms)

    def _task_id_of(self, topic: str, partition: int) -> str | None:
        task = self._by_input.get((topic, partition))
        return None if task is None else task.id

    # ---- task creation ----
    def _create_task(self, sub: SubTopology, partition: int, memory: dict[str, StoreBackend] | None = None) -> Task:
        """``memory``: in-memory backends this task's previous incarnation here kept (see ``close_stores``)."""
        tid = task_id(sub.id, partition)
        self._forget_disk_offsets(tid)
        memory = memory or {}
        stores = {name: self._open_store(tid, partition, spec, memory.get(name)) for name, spec in sub.stores.items()}
        return Task(sub, partition, stores)

    def _open_store(self, tid: str, partition: int, spec: StoreSpec, kept: StoreBackend | None = None) -> TaskStore:
        """Opens the store through the backend registry (``state.backend.backend_kind``)."""
        changelog = TopicPartition(spec.changelog_topic(self._config.app_id), partition)
        kind = backend_kind(spec.kind)
        if not kind.persistent:
            def reopen() -> Any:
                return kind.open(spec.name, None, None, **spec.backend_options())
            if kept is not None:
                log.info("task %s: store %s keeps its in-memory state at changelog offset %s", tid, spec.name,
                         kept.changelog_offset())
                overlay = Overlay(kept, ordered=spec.windowed)
                return TaskStore(spec, changelog, kept, overlay, _view(spec, overlay), reopen)
        else:
            path = self._state_dir.store_path(tid, spec.name)
            report = self._corruption_reports.put
            open_backend = self._open_backend

            def reopen() -> Any:
                if open_backend is not None and not spec.windowed:
                    return open_backend(spec.name, path)
                return kind.open(spec.name, path, lambda msg: report(tid), **spec.backend_options())
        try:
            backend = reopen()
        except StoreCorruptedError as exc:
            log.warning("task %s: %s; wiping it and restoring from %s", tid, exc, changelog)
            wipe_path(self._state_dir.store_path(tid, spec.name))
            backend = reopen()
        overlay = Overlay(backend, ordered=spec.windowed)  # windowed: aggregations read ranges per record
        return TaskStore(spec, changelog, backend, overlay, _view(spec, overlay), reopen)

    # ---- the loop's steps ----
    def handle_restored(self) -> None:
        if self._updater.fatal_error is not None:
            raise RuntimeError(f"the state updater failed: {self._updater.fatal_error!r}") from self._updater.fatal_error
        failed = self._updater.drain_failed()
        if failed:
            task, exc = failed[0]
            raise RuntimeError(f"restoring task {task.id} failed: {exc}") from exc
        resume = []
        for task in self._updater.drain_restored():
            if self.tasks.get(task.id) is not task:
                continue  # revoked meanwhile
            task.transition(TaskState.RUNNING)
            task.resume_stream_time()
            task.init_processors(self._ctx, self._wall_clock)  # the processor API: instances, init(), schedules
            resume.extend(KTopicPartition(tp.topic, tp.partition) for tp in task.inputs)
            log.info("task %s: RUNNING (restored %s)", task.id,
                     {n: s.restored_records for n, s in task.stores.items()})
        if resume:
            self._consumer.resume(resume)

    def any_restoring(self) -> bool:
        """Some active task waits for the state updater to hand it over."""
        return any(t.state is TaskState.RESTORING for t in self.tasks.values())

    def any_running(self) -> bool:
        """Some active task processes: the main consumer fetches for it (every other partition is paused)."""
        return any(t.state is TaskState.RUNNING for t in self.tasks.values())

    def wait_for_restored(self, timeout_s: float) -> None:
        """Waits at most ``timeout_s`` for the state updater to hand a task over (restored or failed)."""
        self._updater.wait_for_outcome(timeout_s)

    def all_running(self) -> bool:
        return self.assignment_received and all(t.state is TaskState.RUNNING for t in self.tasks.values())

    def process(self, msgs: list) -> None:
        try:
            self._process(msgs)
        except ProducerFenced:
            self.recover_from_fencing()

    @property
    def producer(self) -> Producer:
        """The committer's producer: the committer owns it and replaces it (commit.py); nothing else keeps one."""
        return self._committer.producer

    def _begin(self) -> None:
        try:
            self._committer.begin()
        except KafkaException as exc:
            if is_fenced(exc):
                raise ProducerFenced(str(exc.args[0])) from exc
            raise

    def _process(self, msgs: list) -> None:
        self._begin()
        ctx = self._ctx
        by_input = self._by_input
        metrics = self._metrics
        if self._multi_input:  # a task with several inputs takes its records in timestamp order
            msgs = by_timestamp(msgs, self._task_id_of, self._input_rank)
        for msg in msgs:
            err = msg.error()
            if err is not None:
                if err.fatal():
                    raise KafkaException(err)
                if err.code() != KafkaError._PARTITION_EOF:
                    self._bad.error_event(err)
                continue
            topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
            task = by_input.get((topic, partition))
            if task is None or task.state is not TaskState.RUNNING:
                continue  # revoked within this poll; the new owner processes it
            source = task.sub.source_for(topic)
            raw = msg.key()
            try:
                key = None if raw is None else source.key_serde.deserialize(raw)
            except Exception as exc:
                self._bad.undecodable(task, msg, "key", exc)
                continue
            raw = msg.value()
            try:
                value = None if raw is None else source.value_serde.deserialize(raw)
            except Exception as exc:
                self._bad.undecodable(task, msg, "value", exc)
                continue
            ctx.bind(task)
            ctx.topic, ctx.partition, ctx.offset = topic, partition, offset
            ctx.timestamp = msg.timestamp()[1]
            ctx.headers = msg.headers()
            try:
                task.start_record(ctx, key, value)
                source.process(key, value, ctx)
            except (ProducerFenced, RecordTooLargeError):
                raise
            except StoreCorruptedError as exc:
                self._revive_corrupted(task, exc)
                if self._config.exactly_once:
                    return  # every task was rewound: the rest of this batch is read again
                continue
            except Exception as exc:
                self._bad.processing_failed(task, msg, key, value, exc)  # raises, unless the handler says CONTINUE
            else:
                task.next_offsets[TopicPartition(topic, partition)] = offset + 1
                metrics.records_processed_total += 1
            # STREAM_TIME punctuations: after the record that moved stream time to (or past) their time (also one
            # the processing_exception_handler skipped: its timestamp counted)
            if task.stream_time_punctuations.due(task.stream_time):
                if not self._punctuate(task, Punctuation.STREAM_TIME, task.stream_time) and self._config.exactly_once:
                    return  # a store was damaged: every task was rewound, the rest of this batch is read again

    def punctuate(self) -> None:
        """WALL_CLOCK_TIME punctuations of the running tasks that are due by the wall clock: called from the
        processing thread's loop, records or not. Under exactly-once inside the open transaction (begun here if
        none is), so what they forward and write commits with the task's next commit."""
        try:
            now = self._wall_clock()
            due = [t for t in self.tasks.values()
                   if t.state is TaskState.RUNNING and t.punctuations[Punctuation.WALL_CLOCK_TIME].due(now)]
            if not due:
                return
            self._begin()
            for task in due:
                if task.state is TaskState.RUNNING:  # not revived by a damaged store meanwhile
                    if not self._punctuate(task, Punctuation.WALL_CLOCK_TIME, now) and self._config.exactly_once:
                        return
        except ProducerFenced:
            self.recover_from_fencing()

    def _punctuate(self, task: Task, punctuation: Punctuation, now: int) -> bool:
        """Fires ``task``'s due punctuations. A callback that raises: processing_exception_handler decides, as
        Kafka Streams asks it for punctuators (no record; FAIL stops the app with a PunctuationError). A damaged
        store revives the task as in processing (returns False)."""
        def on_error(exc: Exception) -> None:
            if isinstance(exc, (ProducerFenced, RecordTooLargeError, StoreCorruptedError)):
                raise exc  # not the callback's fault: handled as while processing
            self._bad.punctuation_failed(task.id, punctuation.value, now, exc)

        try:
            task.punctuate(punctuation, now, self._ctx, on_error)
        except StoreCorruptedError as exc:
            self._revive_corrupted(task, exc)
            return False
        return True

    def _send(self, topic: str, key: bytes | None, value: bytes | None, timestamp: int,
              headers: list | None = None, partition: int | None = None) -> None:
        self._produce(topic, key, value, timestamp, headers, partition)

    def _produce(self, topic: str, key: bytes | None, value: bytes | None, timestamp: int,
                 headers: list | None = None, partition: int | None = None) -> None:
        kwargs: dict[str, Any] = {"timestamp": timestamp}
        if headers is not None:
            kwargs["headers"] = headers
        if partition is not None:
            kwargs["partition"] = partition
        try:
            produce(self._committer.producer, topic, value, key, **kwargs)
        except KafkaException as exc:
            if is_fenced(exc):
                raise ProducerFenced(str(exc.args[0])) from exc
            if is_too_large(exc):  # larger than the producer's message.max.bytes
                raise self._sizes.producer_error(topic, -1, key, value, headers) from exc
            raise

    def handle_corrupted(self) -> None:
        """Revives the tasks whose store an interactive query found damaged (see ``_revive_corrupted``)."""
        while True:
            try:
                tid = self._corruption_reports.get_nowait()
            except queue.Empty:
                return
            task = self.tasks.get(tid)
            if task is not None and task.state is TaskState.RUNNING:
                self._revive_corrupted(task, StoreCorruptedError(f"task {tid}: a query found a store damaged"))

    def _revive_corrupted(self, task: Task, error: StoreCorruptedError) -> None:
        """A RUNNING task's store is damaged (a read while processing or serving a query met a corrupt block):
        Kafka Streams' TaskCorruptedException. The task is closed without committing, its damaged stores are
        wiped (the others are kept) and it restores from its changelogs on the state updater; its input
        rewinds to the last commit. Under exactly-once the open transaction holds this task's output too, so
        it is aborted and every running task rewinds."""
        log.warning("task %s: %s; closing it, wiping its damaged store and restoring it from the changelog",
                    task.id, error)
        self._metrics.store_corruptions_total += 1
        if self._config.exactly_once:
            others = [t for t in self.tasks.values() if t.state is TaskState.RUNNING and t is not task]
            try:
                self._committer.abort()
            except ProducerFenced:
                self._committer.recreate_producer()
            self.rewind(others)
        task.drop_uncommitted()
        for store in task.stores.values():
            if store.backend.corrupted:
                log.warning("task %s: wiping store %s; it restores in full from %s", task.id, store.spec.name,
                            store.changelog)
                store.backend.reset()
        self.restore_from_changelogs([task], "a store was damaged")

    def _committed_offsets(self, tps: list[KTopicPartition],
                           known: dict[tuple[str, int], int] | None = None) -> list[KTopicPartition]:
        return read_committed(self._read_committed, tps, self._config, self._metrics, known)

    def dirty_records(self) -> int:
        return sum(t.dirty_records() for t in self.tasks.values())

    def dirty_bytes(self) -> int:
        return sum(t.dirty_bytes() for t in self.tasks.values())

    def commit(self) -> None:
        running = [t for t in self.tasks.values() if t.state is TaskState.RUNNING]
        try:
            committed = self._committer.commit(running)
        except TransactionAborted:
            self.rewind(running)
        except TransactionOutcomeUnknown:
            self.restore_from_changelogs(running)
        except ProducerFenced:
            self.recover_from_fencing()
        except TaskMigrated as exc:
            self._lose_all(exc)
        else:
            if self._purger is not None:
                self._purger.committed(committed)
            if self._snapshots is not None:
                self._snapshots.after_commit(committed)

    def _lose_all(self, exc: TaskMigrated) -> None:
        """At-least-once: the group refused this member's offsets. Its stores may lack changelog records it just
        sent, so no task goes on: all close as lost (the member reports them lost, then rejoins)."""
        log.warning("%s", exc)
        if self._membership is not None:
            self._membership.drop_out()  # calls partitions_lost with every partition it owns
        self._close_tasks([TopicPartition(*tp) for tp in self._by_input], clean=False)  # any left: no member

    def recover_from_fencing(self) -> None:
        """Exactly-once: the producer was fenced, so its transaction is gone. A new producer takes over and
        every running task starts again from its last commit."""
        self._committer.recreate_producer()
        self.rewind([t for t in self.tasks.values() if t.state is TaskState.RUNNING])

    def rewind(self, tasks: list[Task]) -> None:
        """After an aborted transaction: drop uncommitted store writes and seek each task's input back to its
        last committed offset, so the aborted work is done again (or by the new owner, if the partition is
        gone: the consumer then reports it lost and the task closes)."""
        for task in tasks:
            task.drop_uncommitted()
            task.rewind_offsets()
            if task.state is TaskState.RUNNING:
                # Fresh processors: their schedules and fields must not remember what was just undone (a
                # punctuation whose output the abort dropped fires again when stream time reaches it again).
                task.init_processors(self._ctx, self._wall_clock)
        self._seek_committed(tasks)

    def restore_from_changelogs(self, tasks: list[Task], why: str = "a transaction's outcome was unknown") -> None:
        """After a transaction whose outcome is unknown (commit.TransactionOutcomeUnknown): a store may lack
        writes that were committed, so no task runs on. Each goes RUNNING -> SUSPENDED -> RESTORING: the state
        updater replays [stored offset, end) of its changelogs with read_committed, so the store equals the
        committed changelog whatever the outcome. Its input is paused until then and rewound to the group's
        committed offset, read now that the new producer's init_transactions has settled the transaction."""
        if not tasks:
            return
        self._consumer.pause([KTopicPartition(tp.topic, tp.partition) for t in tasks for tp in t.inputs])
        for task in tasks:
            task.drop_uncommitted()
            task.close_processors()  # made again when it runs again
            task.transition(TaskState.SUSPENDED)
            task.transition(TaskState.RESTORING)
            self._updater.add(task)
        log.warning("tasks %s: restoring their stores from the changelogs (%s)", sorted(t.id for t in tasks), why)
        self._seek_committed(tasks, adopt=True)

    def _seek_committed(self, tasks: list[Task], adopt: bool = False) -> None:
        """Seeks each input of each task to the group's committed offset; ``adopt``: the tasks take those as their
        committed offsets too (the in-memory ones may predate a commit that went through)."""
        if not tasks:
            return
        by_input = {(tp.topic, tp.partition): t for t in tasks for tp in t.inputs}
        known = None if adopt else known_committed(tasks)
        committed = self._committed_offsets([KTopicPartition(*tp) for tp in by_input], known)
        if adopt:
            for task in tasks:
                task.committed_offsets, task.next_offsets = {}, {}
        for tp in committed:
            if adopt and tp.offset >= 0:
                task = by_input[(tp.topic, tp.partition)]
                key = TopicPartition(tp.topic, tp.partition)
                task.committed_offsets[key] = task.next_offsets[key] = tp.offset
            offset = tp.offset if tp.offset >= 0 else OFFSET_BEGINNING
            try:
                self._consumer.seek(KTopicPartition(tp.topic, tp.partition, offset))
            except KafkaException as exc:
                log.warning("cannot rewind %s[%d] (%s); the partition is probably being revoked",
                            tp.topic, tp.partition, exc.args[0])

    def shutdown(self, clean: bool) -> None:
        """Commit (if clean) and close every task; stores keep their committed state on disk.
        Not clean: the open transaction (exactly-once) is aborted and uncommitted writes are dropped."""
        if clean:
            self.commit()
        try:
            self._committer.abort()
        except (KafkaException, ProducerFenced) as exc:
            log.warning("aborting the open transaction failed (%s); the broker aborts it after "
                        "transaction_timeout_ms", exc)
        error: BaseException | None = None
        for task in list(self.tasks.values()):
            try:
                self._close_task(task, clean)
            except Exception as exc:  # the other tasks still close
                log.error("closing task %s failed: %r", task.id, exc)
                error = error or exc
        self.tasks.clear()
        self._by_input.clear()
        for tid in list(self.standbys):
            self._drop_standby(tid, SuspendReason.MIGRATED)
        self._kept_memory.clear()
        if error is not None:
            raise error


def _view(spec: StoreSpec, overlay: Overlay) -> KeyValueStore | TimeOrderedStore:
    if spec.sessions:
        return SessionStore(spec, overlay)
    return WindowStore(spec, overlay) if spec.windowed else KeyValueStore(spec, overlay)
