"""``TopologyTestDriver``: an app's topology run without a broker (Kafka Streams' TopologyTestDriver).

The processing is the runtime's own: the task manager creates the tasks (one per partition of each
sub-topology), opens their stores through the backend registry (RocksDB in a temporary directory, or memory,
as each store's kind says), runs records through the nodes, applies both exception handlers, fires
punctuations and commits with the at-least-once committer. What the driver replaces is Kafka: the ports the
task manager and committer take (producer, main consumer, group member, state updater) are in memory
(``testing/_ports.py``), and its loop is the stream thread's, one pass per input record. See
docs/architecture.md, "The test driver".
"""
from __future__ import annotations

import dataclasses
import shutil
import tempfile
import time
from typing import Any, Mapping

from .. import serde as _serde
from ..app import App, read_only_store
from ..config import AT_LEAST_ONCE
from ..dsl.nodes import RepartitionSinkNode, SinkNode, walk
from ..errors import HotstateError, TopologyError
from ..kafka.partitioner import partition_for
from ..observe.metrics import Metrics
from ..records import Record, TopicPartition
from ..runtime.commit import AtLeastOnceCommitter, DeliveryTracker
from ..runtime.task_manager import TaskManager
from ..serde import Serde
from ..state.global_store import GlobalStore
from ..state.state_dir import StateDirectory
from ._ports import Consumer, Entry, Log, Member, Producer, Updater


class TopologyTestDriver:
    """Runs ``app``'s topology in this process, record by record, with no broker.

    ``pipe`` serializes a record with the source's serdes (or the ``key_serde`` / ``value_serde`` given, e.g.
    to write bytes a source cannot read), appends it to the in-memory input partition, and processes it and
    everything it causes (repartition hops: records written to a repartition topic, through its serdes and
    murmur2 partitioner, are read back by the downstream task) before returning; then it commits, so stores hold
    committed state, as Kafka Streams' driver does. An error of the processing (a ``ProcessingError`` or
    ``DeserializationError`` the exception handlers let through, a ``PunctuationError``) is raised by ``pipe``
    or ``advance_wall_clock``; the driver should then be closed.

    ``partitions``: the partition count of the source topics (an int for all, or a dict per topic); 1 by
    default, as in Kafka Streams' driver. Repartition topics take their upstream's count or their
    ``partitions=``, as at start; output topics have one partition. ``wall_clock_ms``: the mock wall clock's
    start (default: the system clock now); only ``advance_wall_clock`` moves it.

    Differences from a running app: the at-least-once commit protocol runs whatever ``processing_guarantee``
    says (one instance, no crash and a commit per record give the same outputs and stores; exactly-once's
    transactions are not simulated); ``state_dir`` is ignored (a temporary directory, deleted by ``close``);
    nothing is restored (stores start empty); repartition topics are not purged; there are no standbys.
    ``bootstrap_servers`` is never contacted.

    Global tables (``app.global_table``): a record piped into a global table's topic is applied to the global
    store at once (as the app's global thread applies it; ``partitions={topic: n}`` gives the topic n
    partitions), so joins and ``store(name)`` see it; the topics start empty (nothing to bootstrap). Use one driver per app at a time: the driver sets the partition
    counts of the app's repartition topics, as ``start()`` does."""

    def __init__(self, app: App, partitions: int | Mapping[str, int] = 1, wall_clock_ms: int | None = None):
        topology = app._topology
        if not topology.subtopologies:
            raise TopologyError("the app has no source: call app.stream(topic) before making a driver")
        self._app = app
        self._topology = topology
        self._now = int(time.time() * 1000) if wall_clock_ms is None else wall_clock_ms
        counts = topology.resolve_partitions(self._source_counts(partitions))
        topology.check_copartitioning(counts)
        self._dir = tempfile.mkdtemp(prefix=f"hotstate-driver-{app.config.app_id}-")
        self._config = dataclasses.replace(app.config, state_dir=self._dir, processing_guarantee=AT_LEAST_ONCE)
        self._log = Log({t: counts[t] for t in topology.source_topics})
        self._read: dict[str, int] = {}  # output topic -> records already returned by read_output
        self._metrics = Metrics()
        specs = topology.store_specs()
        tracker = DeliveryTracker({self._config.changelog_topic(n) for n in specs})
        self._member = Member()
        self._producer = Producer(self._log, tracker)
        inputs = [(t, p) for t in topology.source_topics for p in range(counts[t])]
        self._consumer = Consumer(self._log, inputs)
        committer = AtLeastOnceCommitter(self._member, self._producer, tracker, self._metrics, timeout_s=0)
        self._tm = TaskManager(self._config, topology, StateDirectory(self._dir, self._config.app_id),
                               self._consumer, Updater(), self._metrics, committer,
                               committed_offsets=self._member.committed, wall_clock=lambda: self._now)
        self._closed = False
        self._failed = False
        # Global tables: their stores are opened here and written by pipe() at once, as the global thread
        # applies the records of their topics (no bootstrap: the topics start empty).
        self._globals: dict[str, GlobalStore] = {}  # topic -> store
        try:
            root = StateDirectory(self._dir, self._config.app_id).root
            for table in topology.global_tables.values():
                store = GlobalStore(table.store, table.topic, self._global_counts[table.topic], root)
                self._globals[table.topic] = store
                table.attach(store)
            self._tm.partitions_assigned([TopicPartition(t, p) for t, p in inputs])
            self._tm.handle_restored()  # RUNNING: processor instances made, init() called
        except BaseException:
            self.close()
            raise

    def _source_counts(self, partitions: int | Mapping[str, int]) -> dict[str, int]:
        """The source topics' partition counts; those of global tables' topics go to ``_global_counts``."""
        globals_ = [t.topic for t in self._topology.global_tables.values()]
        sources = self._topology.user_source_topics
        if isinstance(partitions, Mapping):
            unknown = sorted(set(partitions) - set(sources) - set(globals_))
            if unknown:
                raise KeyError(f"partitions names topics that are no source of this app: {unknown}; sources: "
                               f"{sources + globals_}")
            counts = {t: partitions.get(t, 1) for t in sources + globals_}
        else:
            counts = {t: partitions for t in sources + globals_}
        for t, n in counts.items():
            if not isinstance(n, int) or isinstance(n, bool) or n <= 0:
                raise ValueError(f"partitions of {t!r} must be a positive int, got {n!r}")
        self._global_counts = {t: counts.pop(t) for t in globals_}
        return counts

    # ---- input ----
    def pipe(self, topic: str, key: Any, value: Any, timestamp_ms: int | None = None,
             headers: list[tuple[str, bytes]] | Mapping[str, bytes] | None = None, partition: int | None = None,
             key_serde: Serde | None = None, value_serde: Serde | None = None) -> None:
        """One record into source ``topic``, processed and committed before this returns. ``timestamp_ms``: its
        Kafka timestamp (default: the driver's wall clock). ``partition``: default murmur2 of the serialized key
        (partition 0 for a null key). A None key or value stays null (a tombstone)."""
        self._check_open()
        store = self._globals.get(topic)
        if store is not None:
            self._pipe_global(store, key, value, partition, key_serde, value_serde)
            return
        if topic not in self._topology.user_source_topics:
            raise KeyError(f"{topic!r} is not a source topic of this app; sources: "
                           f"{self._topology.user_source_topics + sorted(self._globals)}")
        source = self._topology.subtopology_of(topic).source_for(topic)
        raw_key = None if key is None else _serde.dumps(key_serde or source.key_serde, key)
        raw_value = None if value is None else _serde.dumps(value_serde or source.value_serde, value)
        if isinstance(headers, Mapping):
            headers = list(headers.items())
        count = len(self._log.partitions(topic))
        if partition is not None and not 0 <= partition < count:
            raise ValueError(f"partition {partition} of {topic!r}: the driver gives it {count} partition(s)")
        if partition is None:
            partition = 0 if raw_key is None else partition_for(raw_key, count)
        ts = self._now if timestamp_ms is None else timestamp_ms
        self._log.append(topic, partition, Entry(raw_key, raw_value, ts, list(headers) if headers else None))
        self._run()

    def _pipe_global(self, store: GlobalStore, key: Any, value: Any, partition: int | None,
                     key_serde: Serde | None, value_serde: Serde | None) -> None:
        """A record of a global table's topic: applied to its store at once, as the global thread applies it
        (a null value deletes; a null key is skipped), at the next offset of its partition."""
        raw_key = None if key is None else _serde.dumps(key_serde or store.spec.key_serde, key)
        raw_value = None if value is None else _serde.dumps(value_serde or store.spec.value_serde, value)
        count = len(store.backends)
        if partition is not None and not 0 <= partition < count:
            raise ValueError(f"partition {partition} of {store.topic!r}: the driver gives it {count} partition(s)")
        if partition is None:
            partition = 0 if raw_key is None else partition_for(raw_key, count)
        backend = store.backends[partition]
        offset = backend.changelog_offset() or 0
        backend.write([] if raw_key is None else [(raw_key, raw_value)], offset + 1)

    def advance_wall_clock(self, ms: int) -> None:
        """Moves the mock wall clock on by ``ms`` and fires the WALL_CLOCK_TIME punctuations due (each schedule
        once per advance, however many intervals passed, as in the app), then processes what they caused and
        commits."""
        self._check_open()
        if ms < 0:
            raise ValueError(f"advance_wall_clock({ms}): time does not go back")
        self._now += ms
        self._run()

    def _run(self) -> None:
        """The stream thread's loop (runtime/stream_thread.py) until nothing is left to read: poll, process,
        punctuate, commit after every pass."""
        tm = self._tm
        try:
            while True:
                msgs = self._consumer.poll_all()
                tm.handle_restored()
                if msgs:
                    tm.process(msgs)
                tm.punctuate()
                tm.producer.poll(0)
                tm.commit()
                if not msgs:
                    return
        except BaseException:
            self._failed = True  # as the stream thread: the tasks close without committing
            raise

    # ---- output and state ----
    def read_output(self, topic: str, key_serde: Serde | None = None,
                    value_serde: Serde | None = None) -> list[Record]:
        """The records written to ``topic`` since the last ``read_output`` of it, oldest first, deserialized
        with the serdes of the app's ``to(topic)`` (or those given; a dead-letter topic's come as bytes). Reading
        consumes: a second call returns only newer records (Kafka Streams' TestOutputTopic.readRecordsToList)."""
        self._check_open()
        ks, vs = self._output_serdes(topic, key_serde, value_serde)
        entries = self._log.topics.get(topic, [[]])[0]
        start = self._read.get(topic, 0)
        self._read[topic] = len(entries)
        return [Record(None if e.key is None else ks.deserialize(e.key),
                       None if e.value is None else vs.deserialize(e.value),
                       e.timestamp, e.headers, topic, 0, offset)
                for offset, e in enumerate(entries[start:], start)]

    def _output_serdes(self, topic: str, key_serde: Serde | None, value_serde: Serde | None) -> tuple[Serde, Serde]:
        if topic == self._config.dead_letter_topic:
            return key_serde or _serde.BYTES, value_serde or _serde.BYTES
        sinks = [n for sub in self._topology.subtopologies for s in sub.sources for n in walk(s)
                 if isinstance(n, SinkNode) and not isinstance(n, RepartitionSinkNode) and n.topic == topic]
        if not sinks and (key_serde is None or value_serde is None):
            outputs = sorted({t for sub in self._topology.subtopologies for t in sub.sink_topics})
            raise KeyError(f"{topic!r} is not an output topic of this app (outputs: {outputs}); to read another "
                           "topic pass key_serde= and value_serde=")
        if key_serde is None and len({id(n.key_serde) for n in sinks}) > 1 or \
                value_serde is None and len({id(n.value_serde) for n in sinks}) > 1:
            raise ValueError(f"the app writes {topic!r} with different serdes; pass key_serde= and value_serde=")
        return key_serde or sinks[0].key_serde, value_serde or sinks[0].value_serde

    def store(self, name: str) -> Any:
        """A read-only view of store ``name``, as ``App.store`` gives: ``get`` / ``range`` / ``all`` for a
        key-value store, ``fetch`` / ``fetch_all`` for a windowed or a session one."""
        self._check_open()
        return read_only_store(self._topology, name, list(self._tm.tasks.values()))

    def metrics(self) -> dict:
        """The counters ``App.metrics()`` has (records processed, dropped, skipped, late, ...), for this driver."""
        return self._metrics.snapshot()

    # ---- lifecycle ----
    def close(self) -> None:
        """Commits (unless processing failed), closes the tasks (processors' ``close()``, stores) and deletes the
        temporary state directory.
        Reads of a store view taken before raise StoreClosedError from now on. Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            self._tm.shutdown(clean=not self._failed)
        finally:
            for table in self._topology.global_tables.values():
                table.attach(None)
            for store in self._globals.values():
                store.close()
            shutil.rmtree(self._dir, ignore_errors=True)

    def _check_open(self) -> None:
        if self._closed:
            raise HotstateError("the TopologyTestDriver is closed")

    def __enter__(self) -> "TopologyTestDriver":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
