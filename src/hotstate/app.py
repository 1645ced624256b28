"""App: configuration, topology building, start / run / close, state and queries."""
from __future__ import annotations

import enum
import logging
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from . import serde as _serde
from .config import Config
from .dsl.global_table import GlobalTable
from .dsl.nodes import SourceNode
from .dsl.stream import Stream, check_serde
from .dsl.tables import Table
from .dsl.topology import Topology
from .errors import HotstateError, IllegalStateTransition, StoreClosedError, TopologyError
from .kafka.admin import Admin, ChangelogSpec, RepartitionTopicSpec
from .observe.listener import RestoreListener, StandbyUpdateListener
from .observe.metrics import Metrics
from .records import Record, TopicPartition
from .runtime.global_thread import GlobalThread
from .runtime.stream_thread import StreamThread
from .runtime.task import TaskState
from .serde import Serde
from .state.state_dir import StateDirectory
from .state.store import StoreSpec
from .state.store import ReadOnlyStore
from .state.session_store import ReadOnlySessionStore
from .state.window_store import ReadOnlyWindowStore

log = logging.getLogger(__name__)


class AppState(enum.Enum):
    """The app's lifecycle (Kafka Streams' KafkaStreams.State)::

        CREATED -> REBALANCING <-> RUNNING -> PENDING_SHUTDOWN -> NOT_RUNNING
        any state but NOT_RUNNING -> ERROR (the stream thread failed; close() still cleans up)

    REBALANCING: the group is assigning tasks or some active task is still RESTORING.
    RUNNING: every assigned active task is RUNNING."""

    CREATED = "CREATED"
    REBALANCING = "REBALANCING"
    RUNNING = "RUNNING"
    PENDING_SHUTDOWN = "PENDING_SHUTDOWN"
    NOT_RUNNING = "NOT_RUNNING"
    ERROR = "ERROR"


_APP_TRANSITIONS = {
    AppState.CREATED: {AppState.REBALANCING, AppState.PENDING_SHUTDOWN, AppState.ERROR},
    AppState.REBALANCING: {AppState.RUNNING, AppState.PENDING_SHUTDOWN, AppState.ERROR},
    AppState.RUNNING: {AppState.REBALANCING, AppState.PENDING_SHUTDOWN, AppState.ERROR},
    AppState.PENDING_SHUTDOWN: {AppState.NOT_RUNNING, AppState.ERROR},
    AppState.ERROR: {AppState.PENDING_SHUTDOWN},
    AppState.NOT_RUNNING: set(),
}


@dataclass(frozen=True)
class StoreInfo:
    changelog: TopicPartition
    changelog_offset: int | None  # the next changelog offset the local store would apply
    restored_records: int  # by this task's last restore


@dataclass(frozen=True)
class TaskInfo:
    id: str
    input_partitions: list[TopicPartition]
    state: TaskState
    stores: dict[str, StoreInfo] = field(default_factory=dict)
    # A standby (or warm-up) replica: kept current from the changelog, not processing. Its state is
    # RUNNING while the state updater tails it; ``lag`` is how many changelog records it is behind.
    standby: bool = False
    lag: int | None = None

    @property
    def changelog_offsets(self) -> dict[str, int | None]:
        return {name: s.changelog_offset for name, s in self.stores.items()}


def read_only_store(topology: Topology, name: str,
                    tasks: list[Any]) -> ReadOnlyStore | ReadOnlyWindowStore | ReadOnlySessionStore:
    """The read-only view of store ``name`` over the RUNNING ones of ``tasks`` (``App.store``, and
    ``hotstate.testing.TopologyTestDriver.store``)."""
    specs = topology.store_specs()
    table = topology.global_tables.get(name)
    if table is not None:
        if table.view is None:
            raise StoreClosedError(f"global store {name} is not open: the app opens it at start() (its bootstrap "
                                   "ends before the app is RUNNING) and closes it at close()")
        return ReadOnlyStore(name, [table.view])
    if name not in specs:
        raise KeyError(f"no store named {name!r}; stores: {sorted(specs) + sorted(topology.global_tables)}")
    views = [t.stores[name].view for t in tasks if t.state is TaskState.RUNNING and name in t.stores]
    if specs[name].sessions:
        return ReadOnlySessionStore(name, views)
    if specs[name].windowed:
        return ReadOnlyWindowStore(name, views)
    return ReadOnlyStore(name, views)


class App:
    """A hotstate application. Build the topology with :meth:`stream`, then :meth:`start` or :meth:`run`.

    Configuration keywords are :class:`hotstate.config.Config` fields (Kafka Streams' names, Python spelling)."""

    def __init__(self, **config: Any):
        self.config = Config.from_kwargs(**config)
        self._topology = Topology(self.config.app_id)
        self._listener: RestoreListener | None = None
        self._standby_listener: StandbyUpdateListener | None = None
        self._metrics = Metrics()
        self._state = AppState.CREATED
        self._state_lock = threading.Condition()
        self._error: BaseException | None = None
        self._thread: StreamThread | None = None
        self._global_thread: GlobalThread | None = None
        self._global_partitions: dict[str, int] = {}
        self._state_dir = StateDirectory(self.config.state_dir, self.config.app_id)
        self._metrics_server: Any = None

    # ---- building ----
    def stream(self, topic: str, key_serde: Serde = _serde.BYTES, value_serde: Serde = _serde.BYTES,
               timestamp_extractor: Callable[[Record, int], int] | None = None) -> Stream:
        """A stream of the records of ``topic`` (which must exist when the app starts).

        ``timestamp_extractor(record, partition_time_ms) -> int``: each record's event time in milliseconds
        (>= 0), from its deserialized key and value (Kafka Streams' TimestampExtractor); ``partition_time_ms``
        is the task's stream time so far (-1 before its first record). None: the record's Kafka timestamp.
        The event time drives windows and stream time and is the timestamp of the records sent downstream.
        An extractor that raises or answers something else than an int >= 0 fails the record (the processing
        exception handler decides)."""
        self._require(AppState.CREATED, "stream()")
        check_serde(key_serde, "key_serde")
        check_serde(value_serde, "value_serde")
        if timestamp_extractor is not None and not callable(timestamp_extractor):
            raise TopologyError("timestamp_extractor must be None or a callable (record, partition_time_ms) -> int, "
                                f"got {type(timestamp_extractor).__name__}")
        source = SourceNode(topic, key_serde, value_serde, timestamp_extractor)
        sub = self._topology.add_source(source)
        return Stream(self._topology, sub, source, key_serde, value_serde)

    def table(self, topic: str, key_serde: Serde = _serde.BYTES, value_serde: Serde = _serde.BYTES,
              store: str | StoreSpec | None = None,
              timestamp_extractor: Callable[[Record, int], int] | None = None) -> Table:
        """A table materialised from ``topic`` (Kafka Streams' ``builder.table``): each record is its key's new
        value, a None value (tombstone) deletes the key, a record without a key is dropped (and counted). The
        table lives in ``store`` (a name: RocksDB; a StoreSpec: its name and kind, "rocksdb" or "memory"; None:
        an internal name), queryable with ``app.store(name)``.

        The topic is the store's changelog (Kafka Streams' source-topic optimisation): no changelog topic is
        created, the store restores from the topic up to the group's committed offset, and standbys tail it.
        Key and value serdes must round-trip the topic's bytes: the restore puts them into the store as they
        are. Joins with the table need the stream co-partitioned with ``topic``; see docs/architecture.md."""
        from .dsl.table_nodes import TableSourceNode
        from .dsl.tables import table_store_spec
        self._require(AppState.CREATED, "table()")
        check_serde(key_serde, "key_serde")
        check_serde(value_serde, "value_serde")
        if timestamp_extractor is not None and not callable(timestamp_extractor):
            raise TopologyError("timestamp_extractor must be None or a callable (record, partition_time_ms) -> int, "
                                f"got {type(timestamp_extractor).__name__}")
        topology = self._topology
        name = store if store is not None else topology.internal_store_name("KTABLE-SOURCE")
        spec = table_store_spec(f"table({topic!r})", name, key_serde, value_serde, source_topic=topic)
        source = SourceNode(topic, key_serde, value_serde, timestamp_extractor)
        sub = topology.add_source(source)
        topology.claim_store(sub, spec, f"table({topic!r})")
        node = TableSourceNode(spec.name)
        source.children.append(node)
        return Table(Stream(topology, sub, node, key_serde, value_serde), spec)

    def global_table(self, topic: str, key_serde: Serde = _serde.BYTES, value_serde: Serde = _serde.BYTES,
                     store: str | StoreSpec | None = None) -> GlobalTable:
        """A table holding the whole of ``topic`` (all its partitions) on every instance (Kafka Streams'
        GlobalKTable), in the local store ``store`` (a name: RocksDB; a ``StoreSpec`` may choose
        ``kind="memory"``; the serdes are these). The topic is the store's changelog: no changelog topic is
        created. At start the store is bootstrapped to the topic's end before processing starts (the app is
        RUNNING only then); afterwards new records are applied as they arrive (a null value deletes the key).
        Join a stream with it by ``stream.join(table, key_selector=..., joiner=...)`` (or ``left_join``); read
        it with ``app.store(name)``. See docs/architecture.md, "Global tables"."""
        self._require(AppState.CREATED, "global_table()")
        check_serde(key_serde, "key_serde")
        check_serde(value_serde, "value_serde")
        if not isinstance(topic, str) or not topic:
            raise TopologyError(f"global_table(): topic must be a topic name, got {topic!r}")
        if store is None:
            raise TopologyError(f"global_table({topic!r}): pass store='<name>' (or a hotstate.StoreSpec): the name "
                                "of the local store that holds the table, and of its queries (app.store(name))")
        if isinstance(store, StoreSpec):
            spec = StoreSpec(store.name, key_serde, value_serde, store.kind)
        elif isinstance(store, str):
            spec = StoreSpec(store, key_serde, value_serde)
        else:
            raise TopologyError(f"global_table({topic!r}): store must be a name or a hotstate.StoreSpec, got "
                                f"{type(store).__name__}")
        if spec.windowed:
            raise TopologyError(f"global_table({topic!r}): store kind {spec.kind!r} is windowed; a global table is "
                                "a key-value store: use kind 'rocksdb' or 'memory'")
        table = GlobalTable(topic, spec, self.config.app_id)
        self._topology.add_global_table(table)
        return table

    def set_restore_listener(self, listener: RestoreListener) -> None:
        """Called on the state updater thread; see :class:`hotstate.RestoreListener`."""
        self._require(AppState.CREATED, "set_restore_listener()")
        self._listener = listener

    def set_standby_listener(self, listener: StandbyUpdateListener) -> None:
        """Called on the state updater thread; see :class:`hotstate.StandbyUpdateListener`."""
        self._require(AppState.CREATED, "set_standby_listener()")
        self._standby_listener = listener

    # ---- lifecycle ----
    def start(self) -> None:
        """Checks the broker, topics and state dir and binds ``metrics_port`` (raising a clear error at once),
        then starts processing in the background. Non-blocking. When one of these fails, nothing was started: no
        thread runs, the state dir is unlocked, the app is still CREATED (fix the cause and start() again)."""
        self._require(AppState.CREATED, "start()")
        if not self._topology.subtopologies:
            raise TopologyError("the app has no source: call app.stream(topic) before start()")
        self._state_dir.lock()
        try:
            self._prepare_topics()
            if self.config.metrics_port is not None:
                self._metrics_server = self._serve_metrics(self.config.metrics_port)
        except BaseException:
            self._state_dir.unlock()
            raise
        self._transition(AppState.REBALANCING)
        try:
            if self._topology.global_tables:
                self._global_thread = self._new_global_thread()
                self._global_thread.start()
            self._thread = StreamThread(self.config, self._topology, self._state_dir, self._listener, self._metrics,
                                        self._on_tasks_running, self._on_error, self._standby_listener,
                                        global_thread=self._global_thread)
            self._thread.start()
        except BaseException as exc:  # no thread runs (e.g. the interpreter cannot start one)
            self._stop_global_thread(5)
            self._thread = None
            self._stop_metrics_server()
            self._state_dir.unlock()
            self._on_error(exc)
            raise

    def _new_global_thread(self) -> GlobalThread:
        from .kafka import clients
        cfg = self.config
        tables = list(self._topology.global_tables.values())
        return GlobalThread(cfg, tables, self._global_partitions, self._state_dir.root, self._listener,
                            self._metrics, self._on_global_error, lambda: clients.global_consumer(cfg))

    def _on_global_error(self, exc: BaseException) -> None:
        """The global thread failed: its tables are no longer kept current, so processing stops too (Kafka
        Streams moves the whole app to ERROR when its global thread dies); close() cleans up."""
        self._on_error(exc)
        thread = self._thread
        if thread is not None:
            thread.stop()

    def _stop_global_thread(self, timeout_s: float) -> bool:
        """Stops the global thread (after the stream thread, whose joins read its stores). False if it did not
        end within ``timeout_s``."""
        thread = self._global_thread
        if thread is None:
            return True
        thread.stop()
        if thread.is_alive():
            thread.join(timeout_s)
        if thread.is_alive():
            log.warning("app %s: the global thread did not end within %ss", self.config.app_id, timeout_s)
            return False
        return True

    def _serve_metrics(self, port: int) -> Any:
        from .errors import ConfigError
        from .observe.prometheus import MetricsServer
        try:
            return MetricsServer(self.config.app_id, self._metrics.snapshot, port)
        except OSError as exc:
            raise ConfigError(f"metrics_port {port} cannot be bound ({exc.strerror or exc}): another process, or "
                              "another app in this one, serves on it; choose a free port or leave metrics_port "
                              "unset") from exc

    def _stop_metrics_server(self) -> None:
        if self._metrics_server is not None:
            self._metrics_server.close()
            self._metrics_server = None

    def _prepare_topics(self) -> None:
        admin = Admin(self.config)
        topology = self._topology
        sources = admin.require_topics(topology.user_source_topics, "source")
        counts = topology.resolve_partitions(sources)  # repartition topics: their upstream's count, or partitions=
        sub_partitions = topology.check_copartitioning(counts)
        if topology.repartitions:
            admin.ensure_repartition_topics([RepartitionTopicSpec(t, counts[t]) for t in topology.repartitions])
        dlq = self.config.dead_letter_topic
        if dlq is not None and dlq in counts:
            raise TopologyError(f"dead_letter_topic={dlq!r} is a source topic of this app: its dead-letter "
                                "records would be processed again; give another topic")
        if topology.global_tables:  # their topics are their changelogs: nothing is created for them
            globals_ = sorted({t.topic for t in topology.global_tables.values()})
            self._global_partitions = admin.require_topics(globals_, "global table")
        sinks = sorted({t for sub in topology.subtopologies for t in sub.sink_topics})
        if sinks:
            admin.require_topics(sinks, "sink")
        specs = [self._changelog_spec(spec, sub_partitions[sub.id])
                 for sub in topology.subtopologies for spec in sub.stores.values()
                 if spec.source_topic is None]  # a table's changelog is its source topic: none is created
        admin.ensure_changelogs(specs)
        if dlq is not None:
            admin.ensure_dead_letter_topic(dlq, max(sources.values()))

    def _changelog_spec(self, spec: StoreSpec, partitions: int) -> ChangelogSpec:
        """A windowed store's changelog is compacted and deleted by time (Kafka Streams' windowed changelogs):
        ``retention.ms`` = the store's retention + ``windowstore_changelog_additional_retention_ms``."""
        topic = self.config.changelog_topic(spec.name)
        if not spec.windowed:
            return ChangelogSpec(topic, partitions)
        assert spec.retention_ms is not None
        return ChangelogSpec(topic, partitions, "compact,delete",
                             spec.retention_ms + self.config.windowstore_changelog_additional_retention_ms)

    def wait_until_running(self, timeout_s: float = 60) -> None:
        """Blocks until every assigned active task is RUNNING (and so every global store is bootstrapped: the app
        joins the group only then). Raises the app's error if it failed, and TimeoutError after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        with self._state_lock:
            while True:
                if self._state is AppState.ERROR:
                    raise HotstateError(f"the app failed: {self._error}") from self._error
                if self._state is AppState.RUNNING:
                    return
                if self._state in (AppState.CREATED, AppState.PENDING_SHUTDOWN, AppState.NOT_RUNNING):
                    raise HotstateError(f"the app is {self._state.value}; start() it first")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"the app was not RUNNING within {timeout_s}s (state {self._state.value}; "
                                       f"tasks {[(t.id, t.state.value) for t in self.tasks()]})")
                self._state_lock.wait(min(left, 0.5))

    def close(self, timeout_s: float = 30) -> bool:
        """Graceful: commits, flushes the producer, persists store offsets, leaves the group.

        Returns False if the threads did not finish within ``timeout_s``. They then still hold stores open, so
        the app keeps its state dir locked (and its metrics endpoint) and stays PENDING_SHUTDOWN (or ERROR):
        call close() again to wait longer (it finishes the job once they have ended), or let the process
        exit, which ends the threads and releases the lock."""
        with self._state_lock:
            if self._state is AppState.NOT_RUNNING:
                return True
            if self._state is AppState.CREATED:
                self._state = AppState.NOT_RUNNING
                self._state_lock.notify_all()
                return True
        if self._state is not AppState.PENDING_SHUTDOWN:
            self._transition(AppState.PENDING_SHUTDOWN)
        if self._thread is not None:
            self._thread.stop()
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                log.warning("app %s: the stream thread did not end within %ss; the state dir stays locked until "
                            "it does (close() again, or exit the process)", self.config.app_id, timeout_s)
                return False
        if not self._stop_global_thread(timeout_s):
            return False
        self._state_dir.unlock()
        self._stop_metrics_server()
        with self._state_lock:
            # A failure during shutdown moved the app to ERROR; it stays there (error() tells what happened).
            if self._state is AppState.PENDING_SHUTDOWN:
                self._transition(AppState.NOT_RUNNING)
        return True

    def run(self) -> None:
        """Starts and blocks until closed; SIGTERM / SIGINT close gracefully. Raises if the app failed."""
        stop = threading.Event()

        def handler(signum: int, frame: Any) -> None:
            log.info("signal %d: closing", signum)
            stop.set()

        old = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            self.start()
            while not stop.is_set() and self._state not in (AppState.ERROR, AppState.NOT_RUNNING):
                stop.wait(0.2)
        finally:
            for s, h in old.items():
                signal.signal(s, h)
            error = self._error
            self.close()
        if error is not None:
            raise error

    # ---- observing ----
    @property
    def state(self) -> AppState:
        return self._state

    def error(self) -> BaseException | None:
        """The error that moved the app to ERROR, if any."""
        return self._error

    def tasks(self) -> list[TaskInfo]:
        tm = self._thread.task_manager if self._thread else None
        if tm is None:
            return []
        out = []
        for task in list(tm.tasks.values()):
            stores = {name: StoreInfo(s.changelog, s.backend.changelog_offset(), s.restored_records)
                      for name, s in task.stores.items()}
            out.append(TaskInfo(task.id, list(task.inputs), task.state, stores))
        lags = tm.standby_lags()
        for task in list(tm.standbys.values()):
            stores = {name: StoreInfo(s.changelog, s.backend.changelog_offset(), s.restored_records)
                      for name, s in task.stores.items()}
            out.append(TaskInfo(task.id, list(task.inputs), TaskState.RUNNING, stores, standby=True, lag=lags.get(task.id)))
        return sorted(out, key=lambda t: (t.standby, t.id))

    def store(self, name: str) -> ReadOnlyStore | ReadOnlyWindowStore | ReadOnlySessionStore:
        """A read-only view of store ``name`` over this instance's RUNNING tasks: ``get`` / ``all`` for a
        key-value store, ``fetch`` / ``fetch_all`` for a windowed or a session one."""
        tm = self._thread.task_manager if self._thread else None
        return read_only_store(self._topology, name, list(tm.tasks.values()) if tm is not None else [])

    def metrics(self) -> dict:
        return self._metrics.snapshot()

    # ---- internals ----
    def _require(self, state: AppState, what: str) -> None:
        if self._state is not state:
            raise HotstateError(f"{what} is allowed only in state {state.value}; the app is {self._state.value}")

    def _transition(self, to: AppState) -> None:
        with self._state_lock:
            if to not in _APP_TRANSITIONS[self._state]:
                raise IllegalStateTransition(f"app: {self._state.value} -> {to.value} is not allowed")
            log.info("app %s: %s -> %s", self.config.app_id, self._state.value, to.value)
            self._state = to
            self._state_lock.notify_all()

    def _on_tasks_running(self, all_running: bool) -> None:
        want = AppState.RUNNING if all_running else AppState.REBALANCING
        if self._state in (AppState.RUNNING, AppState.REBALANCING) and self._state is not want:
            with self._state_lock:
                if self._state in (AppState.RUNNING, AppState.REBALANCING) and self._state is not want:
                    self._transition(want)

    def _on_error(self, exc: BaseException) -> None:
        """The first error is the app's error (what went wrong); later ones, often its consequences while
        shutting down, are only logged."""
        with self._state_lock:
            if self._error is not None:
                log.warning("after the app's error %r, also: %r", self._error, exc)
            else:
                self._error = exc
            if self._state is not AppState.NOT_RUNNING and AppState.ERROR in _APP_TRANSITIONS[self._state]:
                self._state = AppState.ERROR
            self._state_lock.notify_all()
