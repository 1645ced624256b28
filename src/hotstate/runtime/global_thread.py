"""The global thread: bootstraps the global tables' stores, then keeps them current (Kafka Streams'
GlobalStreamThread).

Why a thread of its own rather than the state updater: a global store is not a task's. It is never assigned,
never handed back to the stream thread, never removed on a rebalance, and its reading never ends (the state
updater's partitions either end, ACTIVE, or belong to a standby task that a rebalance removes). It must be
bootstrapped before the app joins the group, while the state updater serves only tasks the group assigned.
So the global thread owns its consumer and stores for the app's whole life; the stream thread waits for its
bootstrap before it joins the group and only reads the stores (joins).

Lifecycle (``GlobalThreadState``)::

    CREATED -> BOOTSTRAPPING -> RUNNING -> CLOSED
    CREATED / BOOTSTRAPPING / RUNNING -> FAILED (an error: the app goes to ERROR) -> CLOSED

BOOTSTRAPPING: every partition of every global topic is read from its store's offset (the topic's start if
the store is empty) to the end offset read when the bootstrap began, like a restore: bulk writes without the
WAL, the restore listener (``on_restore_start`` / ``on_batch_restored`` / ``on_restore_end`` with the global
store's name and each partition of its topic) and the restore metrics (``restores["global-<p>/<store>"]``:
records, remaining, rate, ETA). RUNNING: records appended later are applied as they come (a tombstone deletes),
each poll's run of one partition in one atomic write of data and offset. A restart reads each partition from
its stored offset only.
"""
from __future__ import annotations

import enum
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka import TopicPartition as KTopicPartition

from ..config import Config
from ..errors import IllegalStateTransition
from ..observe.listener import RestoreListener, _SafeListener
from ..observe.metrics import Metrics, StoreRestoreMetrics
from ..observe.rate_limited import RateLimitedLog
from ..records import TopicPartition
from ..state.backend import StoreBackend
from ..state.global_store import GlobalStore

log = logging.getLogger(__name__)


class GlobalThreadState(enum.Enum):
    CREATED = "CREATED"
    BOOTSTRAPPING = "BOOTSTRAPPING"
    RUNNING = "RUNNING"
    FAILED = "FAILED"
    CLOSED = "CLOSED"


_TRANSITIONS = {
    GlobalThreadState.CREATED: {GlobalThreadState.BOOTSTRAPPING, GlobalThreadState.FAILED, GlobalThreadState.CLOSED},
    GlobalThreadState.BOOTSTRAPPING: {GlobalThreadState.RUNNING, GlobalThreadState.FAILED, GlobalThreadState.CLOSED},
    GlobalThreadState.RUNNING: {GlobalThreadState.FAILED, GlobalThreadState.CLOSED},
    GlobalThreadState.FAILED: {GlobalThreadState.CLOSED},
    GlobalThreadState.CLOSED: set(),
}


@dataclass
class _Part:
    """One partition of a global topic and the backend of its store that holds it."""

    store: GlobalStore
    partition: int
    backend: StoreBackend
    end: int = 0  # the bootstrap's end: the partition's end offset when the bootstrap began
    restored: int = 0
    bootstrapping: bool = False
    metrics: StoreRestoreMetrics = field(default_factory=StoreRestoreMetrics)

    @property
    def tp(self) -> TopicPartition:
        return TopicPartition(self.store.topic, self.partition)


class GlobalThread(threading.Thread):
    """Owns the global stores (opened in ``run``) and the global consumer. ``stores`` maps store name to the
    open ``GlobalStore`` once BOOTSTRAPPING began. The caller starts it, waits with ``wait_bootstrapped``, stops
    it with ``stop`` and ``join``; the stores are closed when the thread ends."""

    def __init__(self, config: Config, tables: list[Any], partitions: dict[str, int], root: str,
                 listener: RestoreListener | None, metrics: Metrics, on_error: Callable[[BaseException], None],
                 consumer_factory: Callable[[], Any]):
        super().__init__(name="hotstate-global-thread", daemon=True)
        self._config = config
        self._tables = tables  # dsl.global_table.GlobalTable
        self._partitions = partitions  # topic -> partition count
        self._root = root
        self._listener = _SafeListener(listener)
        self._metrics = metrics
        self._on_error = on_error
        self._consumer_factory = consumer_factory
        self._stop_event = threading.Event()
        self._state = GlobalThreadState.CREATED
        self._state_changed = threading.Condition()
        self._error_log = RateLimitedLog(log)
        self.stores: dict[str, GlobalStore] = {}
        self._parts: dict[tuple[str, int], _Part] = {}

    # ---- the caller's side ----
    @property
    def state(self) -> GlobalThreadState:
        return self._state

    def wait_bootstrapped(self, stop: Callable[[], bool], timeout_s: float | None = None) -> bool:
        """Blocks until every global store is bootstrapped (True), or the thread failed or ended, ``stop()``
        answers True or ``timeout_s`` passed (False)."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with self._state_changed:
            while self._state in (GlobalThreadState.CREATED, GlobalThreadState.BOOTSTRAPPING):
                if stop() or (deadline is not None and time.monotonic() >= deadline):
                    return False
                self._state_changed.wait(0.1)
            return self._state is GlobalThreadState.RUNNING

    def stop(self) -> None:
        self._stop_event.set()

    def _transition(self, to: GlobalThreadState) -> None:
        with self._state_changed:
            if to not in _TRANSITIONS[self._state]:
                raise IllegalStateTransition(f"global thread: {self._state.value} -> {to.value} is not allowed")
            self._state = to
            self._state_changed.notify_all()

    # ---- the thread ----
    def run(self) -> None:
        consumer = None
        try:
            self._open_stores()
            consumer = self._consumer_factory()
            self._transition(GlobalThreadState.BOOTSTRAPPING)
            self._bootstrap_stores(consumer)
            if self._stop_event.is_set():
                return
            self._transition(GlobalThreadState.RUNNING)
            log.info("global stores %s bootstrapped", sorted(self.stores))
            while not self._stop_event.is_set():
                self._apply(consumer.consume(self._config.restore_consume_records_max, self._config.poll_ms / 1000))
        except BaseException as exc:
            log.exception("global thread failed")
            if self._state is not GlobalThreadState.FAILED:
                self._transition(GlobalThreadState.FAILED)
            self._on_error(exc)
        finally:
            if consumer is not None:
                try:
                    consumer.close()
                except Exception:
                    log.exception("closing the global consumer failed")
            for table in self._tables:
                table.attach(None)
            for store in self.stores.values():
                store.close()
            self._transition(GlobalThreadState.CLOSED)

    def _open_stores(self) -> None:
        for table in self._tables:
            store = GlobalStore(table.store, table.topic, self._partitions[table.topic], self._root)
            self.stores[store.name] = store
            for p, backend in enumerate(store.backends):
                self._parts[(table.topic, p)] = _Part(store, p, backend)
            table.attach(store)

    def _bootstrap_stores(self, consumer: Any) -> None:
        timeout_s = self._config.broker_timeout_ms / 1000
        assign = []
        for part in self._parts.values():
            low, high = consumer.get_watermark_offsets(KTopicPartition(part.store.topic, part.partition),
                                                       timeout=timeout_s, cached=False)
            start = self._plan(part, low, high)
            assign.append(KTopicPartition(part.store.topic, part.partition, start))
            if start < high:
                self._begin(part, start, high)
        consumer.assign(assign)
        while not self._stop_event.is_set() and any(p.bootstrapping for p in self._parts.values()):
            self._apply(consumer.consume(self._config.restore_consume_records_max, 0.1))
            self._check_ends(consumer)

    def _plan(self, part: _Part, low: int, high: int) -> int:
        """Where the partition's reading starts; wipes a store whose offset the topic cannot serve."""
        stored = part.backend.changelog_offset()
        if stored is not None and (stored > high or stored < low):
            log.warning("global store %s: its offset %d of %s is outside the topic's [%d, %d] (the topic was "
                        "recreated, or records it needs were deleted); wiping that partition and reading it in full",
                        part.store.name, stored, part.tp, low, high)
            part.backend.reset()
            stored = None
        return low if stored is None else stored

    def _begin(self, part: _Part, start: int, end: int) -> None:
        part.end, part.bootstrapping = end, True
        part.metrics = StoreRestoreMetrics(restore_remaining_records=end - start, started_at_s=time.monotonic(),
                                           changelog=str(part.tp))
        self._metrics.restores[f"global-{part.partition}/{part.store.name}"] = part.metrics
        part.backend.begin_restore(end - start)
        log.info("global store %s: bootstrapping %s offsets [%d, %d)", part.store.name, part.tp, start, end)
        self._listener.on_restore_start(part.tp, part.store.name, start, end)

    def _check_ends(self, consumer: Any) -> None:
        """A partition is bootstrapped once the consumer's position reaches its end (under transactions the
        last offset may be a commit marker, never a record): its offset becomes that position."""
        pending = [p for p in self._parts.values() if p.bootstrapping]
        positions = consumer.position([KTopicPartition(p.store.topic, p.partition) for p in pending])
        for part, ktp in zip(pending, positions):
            if ktp.offset < 0 or ktp.offset < part.end:
                continue
            stored = part.backend.changelog_offset()
            if stored is None or ktp.offset > stored:
                part.backend.write_restore_batch(part.backend.restore_batch(), ktp.offset)
            part.backend.end_restore()
            part.bootstrapping = False
            part.metrics.restore_remaining_records = 0
            part.metrics.ended_at_s = time.monotonic()
            log.info("global store %s: %s bootstrapped (%d records)", part.store.name, part.tp, part.restored)
            self._listener.on_restore_end(part.tp, part.store.name, part.restored)

    def _apply(self, msgs: list) -> None:
        """Each run of consecutive records of one partition (at most ``restore_batch_records_max``) becomes one
        write with the offset after its last record: a restore batch (no WAL) while the partition bootstraps, an
        atomic durable write after. A record without a key cannot be a table row: skipped, its offset counts.
        The bootstrap's hot path: records go straight into the batch."""
        limit = self._config.restore_batch_records_max
        parts = self._parts
        run: _Part | None = None
        batch: Any = None
        put = delete = None
        n = 0
        last = -1
        for m in msgs:
            err = m.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    continue
                if err.fatal():
                    raise KafkaException(err)
                self._error_log.warning(err.code(), "global consumer: %s (librdkafka retries)", err)
                continue
            part = parts.get((m.topic(), m.partition()))
            if part is not run or n >= limit:
                if run is not None and last >= 0:
                    self._write(run, batch, n, last)
                run, n, last = part, 0, -1
                if part is not None:
                    if part.bootstrapping:
                        batch = part.backend.restore_batch()
                        put, delete = batch.put, batch.delete
                    else:
                        batch = []
                        put = lambda k, v, entries=batch: entries.append((k, v))  # noqa: E731
                        delete = lambda k, entries=batch: entries.append((k, None))  # noqa: E731
            if part is None:
                continue
            key = m.key()
            if key is not None:
                value = m.value()
                if value is None:
                    delete(key)
                else:
                    put(key, value)
                n += 1
            last = m.offset()
        if run is not None and last >= 0:
            self._write(run, batch, n, last)

    def _write(self, part: _Part, batch: Any, n: int, last_offset: int) -> None:
        backend = part.backend
        if not part.bootstrapping:
            backend.write(batch, last_offset + 1)
            return
        backend.write_restore_batch(batch, last_offset + 1)
        part.restored += n
        self._metrics.count_restored(part.metrics, n, max(0, part.end - last_offset - 1))
        self._listener.on_batch_restored(part.tp, part.store.name, last_offset, n)
