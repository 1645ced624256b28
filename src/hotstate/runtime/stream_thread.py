"""The processing thread: poll, hand restored tasks back, process, commit on the interval.

It owns the main consumer, the producer and the task manager; the state updater runs beside it.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Callable

from ..config import Config
from ..dsl.topology import Topology
from ..kafka import clients
from ..observe.listener import RestoreListener
from ..observe.metrics import Metrics
from ..state.state_dir import StateDirectory
from .membership import ConsumerGroupMembership
from .commit import AtLeastOnceCommitter, Committer, DeliveryTracker, ExactlyOnceCommitter
from .state_updater import StateUpdater
from .task_manager import TaskManager

log = logging.getLogger(__name__)

_FLUSH_TIMEOUT_S = 60.0


class StreamThread(threading.Thread):
    def __init__(self, config: Config, topology: Topology, state_dir: StateDirectory,
                 listener: RestoreListener | None, metrics: Metrics,
                 on_state: Callable[[bool], None], on_error: Callable[[BaseException], None]):
        super().__init__(name="hotstate-stream-thread", daemon=True)
        self._config = config
        self._topology = topology
        self._state_dir = state_dir
        self._listener = listener
        self._metrics = metrics
        self._on_state = on_state  # called with "all tasks running?" after each loop
        self._on_error = on_error
        self._stop_event = threading.Event()
        self.task_manager: TaskManager | None = None

    def stop(self) -> None:
        self._stop_event.set()

    def run(self) -> None:
        cfg = self._config
        changelogs = {cfg.changelog_topic(name) for name in self._topology.store_specs()}
        tracker = DeliveryTracker(changelogs)
        txn_id = f"{cfg.app_id}-{self._state_dir.process_id()}-0" if cfg.exactly_once else None
        producer = clients.producer(cfg, transactional_id=txn_id, on_delivery=tracker)
        consumer = clients.main_consumer(cfg)
        updater = StateUpdater(cfg, lambda: clients.restore_consumer(cfg), self._listener, self._metrics)
        committer: Committer
        if cfg.exactly_once:
            committer = ExactlyOnceCommitter(consumer, producer, tracker, self._metrics, _FLUSH_TIMEOUT_S)
        else:
            committer = AtLeastOnceCommitter(consumer, producer, tracker, self._metrics, _FLUSH_TIMEOUT_S)
        tm = TaskManager(cfg, self._topology, self._state_dir, consumer, producer, updater, self._metrics, committer)
        self.task_manager = tm
        clean = True
        try:
            if isinstance(committer, ExactlyOnceCommitter):
                committer.init()
            updater.start()
            ConsumerGroupMembership(consumer).join(self._topology.source_topics, tm)
            self._loop(consumer, producer, tm)
        except BaseException as exc:
            clean = False
            log.exception("stream thread failed")
            self._on_error(exc)
        finally:
            self._shutdown(consumer, producer, tm, updater, clean)

    def _loop(self, consumer, producer, tm: TaskManager) -> None:
        cfg = self._config
        commit_every_s = cfg.commit_interval_ms / 1000
        poll_s = cfg.poll_ms / 1000
        uncommitted_max = cfg.statestore_uncommitted_max_bytes
        next_commit = time.monotonic() + commit_every_s
        while not self._stop_event.is_set():
            msgs = consumer.consume(cfg.poll_records_max, poll_s)
            tm.handle_restored()
            if msgs:
                tm.process(msgs)
            producer.poll(0)
            now = time.monotonic()
            if now >= next_commit or tm.dirty_bytes() >= uncommitted_max:
                tm.commit()
                next_commit = now + commit_every_s
            self._on_state(tm.all_running())

    def _shutdown(self, consumer, producer, tm: TaskManager, updater: StateUpdater, clean: bool) -> None:
        try:
            tm.shutdown(clean)
        except BaseException as exc:
            log.exception("closing tasks failed")
            self._on_error(exc)
        finally:
            updater.shutdown(timeout_s=30)
            try:
                consumer.close()  # leaves the group: the partitions move at once
            except Exception:
                log.exception("closing the consumer failed")
            producer.flush(10)
