"""A task: partition p of one sub-topology (partition p of each of its source topics: a partition group, as in
Kafka Streams), with its stores.

Lifecycle (Kafka Streams' Task.State)::

    CREATED --> RESTORING --> RUNNING --> SUSPENDED --> CLOSED
       |            |                        ^  |
       |            +------------------------+  +--> RESTORING (revived)
       +--> SUSPENDED / CLOSED

Only the processing thread moves a task between states. While RESTORING the task belongs to the state
updater, which writes its stores; the processing thread does not touch them until it drains the task back.
"""
from __future__ import annotations

import enum
import logging
from dataclasses import dataclass
from typing import Any, Callable

from ..dsl.topology import SubTopology
from ..errors import IllegalStateTransition
from ..processor import Context, Punctuation, PunctuationQueue, PunctuationSchedule
from ..records import Record, TopicPartition
from ..state.backend import StoreBackend
from ..state.overlay import Overlay
from ..state.store import KeyValueStore, StoreSpec
from ..state.window_store import TimeOrderedStore

log = logging.getLogger(__name__)


class TaskState(enum.Enum):
    CREATED = "CREATED"
    RESTORING = "RESTORING"
    RUNNING = "RUNNING"
    SUSPENDED = "SUSPENDED"
    CLOSED = "CLOSED"


_TRANSITIONS: dict[TaskState, frozenset[TaskState]] = {
    TaskState.CREATED: frozenset({TaskState.RESTORING, TaskState.SUSPENDED, TaskState.CLOSED}),
    TaskState.RESTORING: frozenset({TaskState.RUNNING, TaskState.SUSPENDED}),
    TaskState.RUNNING: frozenset({TaskState.SUSPENDED}),
    TaskState.SUSPENDED: frozenset({TaskState.RESTORING, TaskState.CLOSED}),
    TaskState.CLOSED: frozenset(),
}


def task_id(subtopology: int, partition: int) -> str:
    return f"{subtopology}_{partition}"


@dataclass
class TaskStore:
    """One store of one task: its changelog partition, the backend and the uncommitted overlay."""

    spec: StoreSpec
    changelog: TopicPartition
    backend: StoreBackend
    overlay: Overlay
    view: KeyValueStore | TimeOrderedStore  # TimeOrderedStore: a WindowStore or a SessionStore
    reopen: Callable[[], StoreBackend]  # a fresh, empty backend after a wipe
    restored_records: int = 0  # by the last restore of this task

    @property
    def windowed(self) -> bool:
        return isinstance(self.view, TimeOrderedStore)

    @property
    def source_changelog(self) -> bool:
        """A table's store (``app.table``): its changelog is its source topic, which the app never writes."""
        return self.spec.source_topic is not None


class Task:
    def __init__(self, sub: SubTopology, partition: int, stores: dict[str, TaskStore]):
        self.id = task_id(sub.id, partition)
        self.sub = sub
        self.partition = partition
        # Partition p of every source topic of the sub-topology (its repartition topics included), in the
        # sub-topology's source order.
        self.inputs: tuple[TopicPartition, ...] = tuple(TopicPartition(t, partition) for t in sub.source_topics)
        self.stores = stores
        self.state = TaskState.CREATED
        # Per input: the offset to commit (last processed + 1), and the one committed last. An input with no
        # entry has nothing processed (next) or committed (committed) by this task.
        self.next_offsets: dict[TopicPartition, int] = {}
        self.committed_offsets: dict[TopicPartition, int] = {}
        # Stream time (Kafka Streams' task stream time): the largest record timestamp this task has processed,
        # -1 before the first. A task that starts RUNNING resumes it from its windowed stores (``resume_stream_time``).
        self.stream_time = -1
        self.committed_stream_time = -1  # as of the last commit: what a rewind goes back to
        # The processor API (processor.py): one instance per processor node of this sub-topology while RUNNING,
        # with its context, and the task's punctuation schedules by type.
        self.processors: dict[Any, tuple[Any, Context]] = {}
        self.punctuations: dict[Punctuation, PunctuationQueue] = {p: PunctuationQueue() for p in Punctuation}
        self.stream_time_punctuations = self.punctuations[Punctuation.STREAM_TIME]  # checked after every record

    def resume_stream_time(self) -> None:
        """Stream time survives a restart through the windowed stores, which keep the largest event time they
        were written with their changelog offset (a restore recomputes it from the changelog)."""
        for s in self.stores.values():
            if s.windowed:
                st = s.backend.stream_time()  # type: ignore[attr-defined]
                if st is not None and st > self.stream_time:
                    self.stream_time = st
        self.committed_stream_time = self.stream_time

    def start_record(self, ctx: "ProcessorContext", key: Any, value: Any) -> None:
        """Before the source processes a record (``ctx`` bound to this task, ``ctx.timestamp`` the record's Kafka
        timestamp): the source's timestamp extractor, if any, gives the event time, and stream time moves on to
        it if it is larger."""
        source = self.sub.source_for(ctx.topic)
        if source.timestamp_extractor is not None:
            ctx.timestamp = source.extract_timestamp(ctx.record(key, value), self.stream_time)
        if ctx.timestamp > self.stream_time:
            self.stream_time = ctx.timestamp

    # ---- the processor API (processor.py) ----
    def init_processors(self, runtime: "ProcessorContext", wall_clock: Callable[[], int]) -> None:
        """A fresh instance of each processor class of the sub-topology, ``init(context)`` called on it: when the
        task starts running, and again after a rewind (Kafka Streams re-initializes a revived task's topology).
        Punctuations start afresh with them."""
        self.close_processors()
        runtime.bind(self)
        for node in self.sub.processor_nodes():
            context = Context(node, self, runtime, wall_clock)
            instance = node.processor_class()
            self.processors[node] = (instance, context)
            init = getattr(instance, "init", None)
            if init is not None:
                context._initializing = True
                try:
                    init(context)
                finally:
                    context._initializing = False

    def close_processors(self) -> None:
        """Calls ``close()`` on each processor instance (each one, even if one raises: logged) and drops them
        and their punctuations."""
        processors, self.processors = self.processors, {}
        for node, (instance, context) in processors.items():
            context._closed = True
            close = getattr(instance, "close", None)
            if close is None:
                continue
            try:
                close()
            except Exception:
                log.exception("task %s: close() of processor %s raised; the task closes all the same", self.id,
                              type(instance).__name__)
        for queue in self.punctuations.values():
            queue.clear()

    def punctuate(self, punctuation: Punctuation, now: int, runtime: "ProcessorContext",
                  on_error: Callable[[Exception], None] | None = None) -> bool:
        """Fires this task's schedules of ``punctuation`` due at ``now`` (stream time or wall-clock ms). A callback
        runs like a record with timestamp ``now``, no headers and no input (topic "", partition and offset -1).
        ``on_error(exc)``: told when a callback raises; the other due callbacks fire if it returns. Returns
        whether one fired."""
        def fire(schedule: PunctuationSchedule, at: int) -> None:
            runtime.bind(self)
            runtime.topic, runtime.partition, runtime.offset = "", -1, -1
            runtime.timestamp, runtime.headers = at, None
            runtime._node = schedule.owner._node
            try:
                schedule.callback(at)
            except Exception as exc:
                if on_error is None:
                    raise
                on_error(exc)

        return self.punctuations[punctuation].punctuate(now, fire)

    def processed(self, tp: TopicPartition, offset: int) -> None:
        """The record at ``offset`` of input ``tp`` is done: its next offset is what a commit sends."""
        self.next_offsets[tp] = offset + 1

    def offsets_to_commit(self) -> dict[TopicPartition, int]:
        """The inputs whose next offset differs from the committed one, with it."""
        committed = self.committed_offsets
        return {tp: o for tp, o in self.next_offsets.items() if committed.get(tp) != o}

    def mark_committed(self) -> None:
        self.committed_offsets = dict(self.next_offsets)
        self.committed_stream_time = self.stream_time

    def rewind_offsets(self) -> None:
        """Back to the last commit: what was processed since is processed again."""
        self.next_offsets = dict(self.committed_offsets)

    def transition(self, to: TaskState) -> None:
        if to not in _TRANSITIONS[self.state]:
            raise IllegalStateTransition(f"task {self.id}: {self.state.value} -> {to.value} is not allowed")
        log.debug("task %s: %s -> %s", self.id, self.state.value, to.value)
        self.state = to

    def dirty_records(self) -> int:
        return sum(len(s.overlay) for s in self.stores.values())

    def dirty_bytes(self) -> int:
        return sum(s.overlay.bytes for s in self.stores.values())

    def drop_uncommitted(self) -> None:
        """Drops the writes since the last commit; stream time goes back with them (the records are processed
        again, and must meet the stream time they met the first time)."""
        for s in self.stores.values():
            s.overlay.clear()
            if isinstance(s.view, TimeOrderedStore):
                s.view.uncommitted_dropped()
        self.stream_time = self.committed_stream_time

    def needs_commit(self) -> bool:
        return bool(self.offsets_to_commit())

    def close_stores(self, keep_memory: bool = False) -> dict[str, StoreBackend]:
        """Drop uncommitted writes and close the backends (committed state stays on disk). The stores' views
        (which interactive queries hold) raise StoreClosedError from now on. Every store is closed even if one
        fails; the first failure is raised after.

        ``keep_memory``: the in-memory backends are not closed but returned (name -> backend), with their
        committed data and changelog offset, for the same task's next incarnation on this instance (a
        standby promoted to active, an active task recycled into a standby)."""
        kept: dict[str, StoreBackend] = {}
        error: BaseException | None = None
        for name, s in self.stores.items():
            s.view.mark_closed()  # first: a query failing in the backend from now on reports StoreClosedError
            s.overlay.clear()
            if keep_memory and not s.backend.persistent:
                kept[name] = s.backend
                continue
            try:
                s.backend.close()
            except Exception as exc:
                error = error or exc
        if error is not None:
            raise error
        return kept


_NO_VALUE: Any = object()


class ProcessorContext:
    """What nodes and ``process`` functions see: stores of the current task, forward, record metadata."""

    __slots__ = ("_task", "_stores", "_node", "_send", "metrics", "topic", "partition", "offset", "timestamp", "headers")

    def __init__(self, send: Any, metrics: Any):
        self._send = send
        self.metrics = metrics
        self._task: Task | None = None
        self._stores: dict[str, TaskStore] = {}
        self._node: Any = None
        self.topic, self.partition, self.offset, self.timestamp, self.headers = "", -1, -1, 0, None

    def bind(self, task: Task) -> None:
        self._task = task
        self._stores = task.stores

    @property
    def stream_time(self) -> int:
        """The current task's stream time (the largest record timestamp it has processed, this record's included)."""
        return self._task.stream_time if self._task else -1

    def store(self, name: str) -> KeyValueStore | TimeOrderedStore:
        try:
            return self._stores[name].view
        except KeyError:
            raise KeyError(
                f"store {name!r} is not connected to this processor's sub-topology; list it in process(stores=[...])"
            ) from None

    def forward(self, key: Any, value: Any = _NO_VALUE) -> None:
        """``forward(key, value)``: the current record's timestamp and headers go along; ``forward(record)`` (a
        :class:`hotstate.Record`): its own key, value, timestamp and headers."""
        if value is _NO_VALUE:
            if not isinstance(key, Record):
                raise TypeError("ctx.forward takes (key, value) or one hotstate.Record")
            self.forward_record(self._node, key)
            return
        self._node.forward(key, value, self)

    def forward_record(self, node: Any, record: Record) -> None:
        """Sends ``record`` to the children of ``node`` with its timestamp (None: the current one) and headers; the
        current record's are back afterwards."""
        timestamp, headers = self.timestamp, self.headers
        self.timestamp = timestamp if record.timestamp is None else record.timestamp
        self.headers = record.headers
        try:
            node.forward(record.key, record.value, self)
        finally:
            self.timestamp, self.headers = timestamp, headers

    def record(self, key: Any, value: Any) -> Record:
        return Record(key, value, self.timestamp, self.headers, self.topic, self.partition, self.offset)

    def send(self, topic: str, key: bytes | None, value: bytes | None, partition: int | None = None) -> None:
        """A sink's output: the current timestamp and headers (the input record's unless changed on the way).
        ``partition``: None lets the producer's partitioner choose (murmur2 of the key)."""
        self._send(topic, key, value, self.timestamp, self.headers, partition)

    @property
    def task_id(self) -> str:
        return self._task.id if self._task else ""
