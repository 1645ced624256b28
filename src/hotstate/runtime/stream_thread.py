"""The processing thread: poll, hand restored tasks back, process, punctuate, commit on the interval.

It owns the main consumer, the task manager and the committer (which owns the producer and replaces it); the
state updater runs beside it, and, with ``snapshot_store`` set, the snapshot uploader (runtime/snapshots.py:
checkpoints are taken here, after commits).
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable

from ..config import Config
from ..dsl.topology import Topology
from ..kafka import clients
from ..kafka.record_size import RecordSizeLimits
from confluent_kafka import KafkaException
from confluent_kafka import TopicPartition as KTopicPartition

from ..observe.listener import RestoreListener, StandbyUpdateListener
from ..observe.metrics import Metrics
from ..state.state_dir import StateDirectory
from .membership import GroupMembership
from .purge import RepartitionPurger
from ..kafka.admin import Admin
from .snapshots import TaskSnapshots
from .commit import AtLeastOnceCommitter, Committer, DeliveryTracker, ExactlyOnceCommitter
from .snapshot_source import RestorerSource, prepare_staging_dir
from .state_updater import StateUpdater
from .task_manager import TaskManager

log = logging.getLogger(__name__)

# How long a commit waits for its records: under at-least-once, up to librdkafka's message.timeout.ms
# (300 s: a broker outage shorter than that delays commits, it does not fail the app); under
# exactly-once, records time out with the transaction (transaction_timeout_ms), then the transaction aborts.
_ALOS_FLUSH_TIMEOUT_S = 305.0
_EOS_TIMEOUT_S = 60.0
# While some tasks restore and others process, the main consumer waits at most this long per loop, so a restored
# task is handed over within it (docs/benchmarks.md, "Start to RUNNING").
_HANDOFF_POLL_S = 0.01


class StreamThread(threading.Thread):
    def __init__(self, config: Config, topology: Topology, state_dir: StateDirectory,
                 listener: RestoreListener | None, metrics: Metrics,
                 on_state: Callable[[bool], None], on_error: Callable[[BaseException], None],
                 standby_listener: StandbyUpdateListener | None = None, global_thread: Any = None):
        super().__init__(name="hotstate-stream-thread", daemon=True)
        self._config = config
        self._topology = topology
        self._state_dir = state_dir
        self._listener = listener
        self._standby_listener = standby_listener
        self._metrics = metrics
        self._on_state = on_state  # called with "all tasks running?" after each loop
        self._on_error = on_error
        self._stop_event = threading.Event()
        self.task_manager: TaskManager | None = None
        self._purger: RepartitionPurger | None = None
        self._global_thread = global_thread  # runtime/global_thread.py: its bootstrap comes first

    def stop(self) -> None:
        self._stop_event.set()

    def run(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # failed while setting up: no client or task to close yet
            log.exception("stream thread failed to start")
            self._on_error(exc)

    def _run(self) -> None:
        cfg = self._config
        # Global stores are bootstrapped before the member joins the group (Kafka Streams starts its stream
        # threads once the global thread is RUNNING): no task processes against a half-read global table.
        if self._global_thread is not None and not self._global_thread.wait_bootstrapped(self._stop_event.is_set):
            return  # stopped, or the global thread failed (it reported its error)
        changelogs = {spec.changelog_topic(cfg.app_id) for spec in self._topology.store_specs().values()
                      if spec.source_topic is None}  # a table's source topic is read, never written
        tracker = DeliveryTracker(changelogs, RecordSizeLimits.from_config(cfg, self._topology.store_specs()))
        txn_id = f"{cfg.app_id}-{self._state_dir.process_id()}-0" if cfg.exactly_once else None
        def new_producer() -> Any:
            return clients.producer(cfg, transactional_id=txn_id, on_delivery=tracker)

        producer = new_producer()
        consumer = clients.main_consumer(cfg)
        timeout_s = cfg.broker_timeout_ms / 1000
        ends_consumer = clients.end_offsets_consumer(cfg)
        # The leader asks inside the group protocol, where heartbeats wait: bounded well below the session.
        ends_timeout_s = min(timeout_s, cfg.session_timeout_ms / 3000)

        def end_offsets(tps: list) -> dict:
            return _end_offsets(ends_consumer, tps, ends_timeout_s)

        try:
            membership = GroupMembership(cfg, self._topology, consumer, end_offsets)
        except BaseException:  # the member could not start: the librdkafka consumers must not leak
            for c in (consumer, ends_consumer):
                c.close()
            raise
        # Restore by download (issue #9): stores with no usable local state may start from a snapshot.
        snapshot_source = RestorerSource(cfg, self._metrics.snapshots) if cfg.snapshot_store else None
        staging_dir = prepare_staging_dir(self._state_dir.root) if snapshot_source is not None else None
        updater = StateUpdater(cfg, lambda: clients.restore_consumer(cfg), self._listener, self._metrics,
                               standby_listener=self._standby_listener,
                               ends_consumer_factory=lambda: clients.end_offsets_consumer(cfg),
                               snapshot_source=snapshot_source, snapshot_staging_dir=staging_dir,
                               tail_consumer_factory=lambda: clients.tail_consumer(cfg),
                               group_consumer_factory=lambda: clients.group_offsets_consumer(cfg))
        committer: Committer
        # Offsets are committed as the group member (membership.commit / consumer_group_metadata).
        if cfg.exactly_once:
            committer = ExactlyOnceCommitter(membership, producer, tracker, self._metrics, _EOS_TIMEOUT_S,
                                             producer_factory=new_producer)
        else:
            committer = AtLeastOnceCommitter(membership, producer, tracker, self._metrics, _ALOS_FLUSH_TIMEOUT_S)
        del producer  # the committer owns it and replaces it (exactly-once); a reference here kept a replaced one alive
        snapshots = None
        if cfg.snapshot_store is not None:
            snapshots = TaskSnapshots(cfg, self._state_dir, self._metrics.snapshots, membership.generation,
                                      instance_id=cfg.group_instance_id)
        purger = None
        if self._topology.repartitions:
            purger = RepartitionPurger(self._topology.repartitions, Admin(cfg).delete_records,
                                       cfg.repartition_purge_interval_ms)
        self._purger = purger
        tm = TaskManager(cfg, self._topology, self._state_dir, consumer, updater, self._metrics, committer,
                         membership, committed_offsets=membership.committed, snapshots=snapshots, purger=purger)
        self.task_manager = tm
        clean = True
        try:
            if isinstance(committer, ExactlyOnceCommitter):
                committer.init()
            if snapshots is not None:
                snapshots.start()
            updater.start()
            membership.join(tm)
            self._loop(consumer, tm, membership)
        except BaseException as exc:
            clean = False
            log.exception("stream thread failed")
            self._on_error(exc)
        finally:
            self._shutdown([consumer, ends_consumer], tm, updater, membership, clean, snapshots)

    def _loop(self, consumer, tm: TaskManager, membership: GroupMembership) -> None:
        cfg = self._config
        commit_every_s = cfg.commit_interval_ms / 1000
        poll_s = cfg.poll_ms / 1000
        uncommitted_max = cfg.statestore_uncommitted_max_bytes
        next_commit = time.monotonic() + commit_every_s
        cleanup_every_s = cfg.state_cleanup_delay_ms / 1000
        next_cleanup = time.monotonic() + cleanup_every_s
        while not self._stop_event.is_set():
            membership.poll(self._stop_event.is_set)
            # A restored task starts when this loop hands it over (handle_restored), and the consumer's wait
            # cannot be cut short: while tasks restore, wait for the state updater instead when there is nothing
            # to process, and in short slices otherwise; else a restored task waited up to poll_ms.
            if not tm.any_restoring():
                msgs = consumer.consume(cfg.poll_records_max, poll_s)
            elif tm.any_running():
                msgs = consumer.consume(cfg.poll_records_max, min(poll_s, _HANDOFF_POLL_S))
            else:
                tm.wait_for_restored(poll_s)
                msgs = consumer.consume(cfg.poll_records_max, 0)
            tm.handle_restored()
            if msgs:
                tm.process(msgs)  # STREAM_TIME punctuations fire in here, after the records that advance them
            tm.punctuate()  # WALL_CLOCK_TIME punctuations, records or not (resolution: poll_ms)
            tm.handle_corrupted()
            tm.producer.poll(0)
            now = time.monotonic()
            if now >= next_commit or tm.dirty_bytes() >= uncommitted_max:
                tm.commit()
                next_commit = now + commit_every_s
            if self._purger is not None:
                self._purger.maybe_purge()  # repartition topics: at most every repartition_purge_interval_ms
            if now >= next_cleanup:
                tm.clean_obsolete_state()
                next_cleanup = now + cleanup_every_s
            self._on_state(tm.all_running())

    def _shutdown(self, consumers: list, tm: TaskManager, updater: StateUpdater, membership: GroupMembership,
                  clean: bool, snapshots: TaskSnapshots | None = None) -> None:
        try:
            tm.shutdown(clean)
        except BaseException as exc:
            log.exception("closing tasks failed")
            self._on_error(exc)
        finally:
            if snapshots is not None:
                snapshots.close()  # bounded; its checkpoints are hard links, the stores need not stay open
            updater.shutdown(timeout_s=30)
            membership.close()  # leaves the group (unless static): the tasks move at once
            for consumer in consumers:
                try:
                    consumer.close()
                except Exception:
                    log.exception("closing a consumer failed")
            tm.producer.flush(10)
            # This thread ends last: while it is alive the app keeps its state dir locked (App.close), and a
            # state updater that did not stop within its timeout above may still hold stores open.
            updater.shutdown(timeout_s=None)


def _end_offsets(consumer: Any, tps: list, timeout_s: float) -> dict:
    """The changelogs' end offsets (high watermarks: a read_uncommitted consumer) for the group leader's
    assignor, in one batched request, retried over transient errors (a just-created topic has no leader for
    a moment) for at most ``timeout_s``. Unknown then: 0, which makes every member count as caught up on it,
    so the task is placed by stickiness and balance alone."""
    deadline = time.monotonic() + timeout_s
    ends: dict = {}
    pending = list(tps)
    error: Any = None
    while pending:
        try:
            for ktp in consumer.offsets_for_times([KTopicPartition(t, p, -1) for t, p in pending],  # -1: latest
                                                  timeout=max(0.1, deadline - time.monotonic())):
                if ktp.error is None and ktp.offset >= 0:
                    ends[(ktp.topic, ktp.partition)] = ktp.offset
                else:
                    error = ktp.error
        except KafkaException as exc:
            error = exc.args[0]
        pending = [tp for tp in pending if (tp[0], tp[1]) not in ends]
        if pending and time.monotonic() + 0.1 >= deadline:
            log.warning("end offsets of %d changelog partitions unknown (%s); the assignor treats them as 0",
                        len(pending), error)
            break
        if pending:
            time.sleep(0.1)
    return {tp: ends.get((tp[0], tp[1]), 0) for tp in tps}
