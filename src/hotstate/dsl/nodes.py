"""Processor nodes of a sub-topology. Nodes hold no per-task state: a task passes its context."""
from __future__ import annotations

import struct
import weakref
from typing import Any, Callable, Iterable

from .. import serde as _serde
from ..records import Record
from ..serde import Serde
from ..kafka.partitioner import partition_for
from ..windows import Windowed

_TIME = struct.Struct(">q")


class Node:
    __slots__ = ("children",)

    def __init__(self) -> None:
        self.children: list[Node] = []

    def process(self, key: Any, value: Any, ctx: Any) -> None:
        raise NotImplementedError

    def forward(self, key: Any, value: Any, ctx: Any) -> None:
        for child in self.children:
            child.process(key, value, ctx)


class SourceNode(Node):
    """``timestamp_extractor(record, partition_time_ms) -> int``: the record's event time (None: its Kafka
    timestamp); ``partition_time_ms`` is the task's stream time so far (-1 before the first record)."""

    __slots__ = ("topic", "key_serde", "value_serde", "timestamp_extractor")

    def __init__(self, topic: str, key_serde: Serde, value_serde: Serde,
                 timestamp_extractor: Callable[[Record, int], int] | None = None):
        super().__init__()
        self.topic, self.key_serde, self.value_serde = topic, key_serde, value_serde
        self.timestamp_extractor = timestamp_extractor

    def extract_timestamp(self, record: Record, partition_time_ms: int) -> int:
        """The extractor's answer, checked: an int >= 0, or ValueError (the record then goes to the
        processing exception handler, as a failure of user code)."""
        ts = self.timestamp_extractor(record, partition_time_ms)  # type: ignore[misc]
        if not isinstance(ts, int) or isinstance(ts, bool) or ts < 0:
            raise ValueError(f"timestamp_extractor returned {ts!r} for {record!r}: an event time is an int >= 0 "
                             "(milliseconds since the epoch)")
        return ts

    def process(self, key: Any, value: Any, ctx: Any) -> None:
        self.forward(key, value, ctx)


class MapNode(Node):
    __slots__ = ("fn",)

    def __init__(self, fn: Callable[[Any, Any], tuple[Any, Any]]):
        super().__init__()
        self.fn = fn

    def process(self, key: Any, value: Any, ctx: Any) -> None:
        k, v = self.fn(key, value)
        self.forward(k, v, ctx)


class MapValuesNode(Node):
    __slots__ = ("fn",)

    def __init__(self, fn: Callable[[Any], Any]):
        super().__init__()
        self.fn = fn

    def process(self, key: Any, value: Any, ctx: Any) -> None:
        self.forward(key, self.fn(value), ctx)


class FilterNode(Node):
    __slots__ = ("pred",)

    def __init__(self, pred: Callable[[Any, Any], bool]):
        super().__init__()
        self.pred = pred

    def process(self, key: Any, value: Any, ctx: Any) -> None:
        if self.pred(key, value):
            self.forward(key, value, ctx)


class FlatMapNode(Node):
    __slots__ = ("fn",)

    def __init__(self, fn: Callable[[Any, Any], Iterable[tuple[Any, Any]]]):
        super().__init__()
        self.fn = fn

    def process(self, key: Any, value: Any, ctx: Any) -> None:
        for k, v in self.fn(key, value):
            self.forward(k, v, ctx)


class PeekNode(Node):
    __slots__ = ("fn",)

    def __init__(self, fn: Callable[[Any, Any], None]):
        super().__init__()
        self.fn = fn

    def process(self, key: Any, value: Any, ctx: Any) -> None:
        self.fn(key, value)
        self.forward(key, value, ctx)


class ProcessNode(Node):
    """Low-level: ``fn(record, ctx)``; ``ctx.store(name)`` and ``ctx.forward(key, value)``."""

    __slots__ = ("fn", "store_names")

    def __init__(self, fn: Callable[[Record, Any], None], store_names: list[str]):
        super().__init__()
        self.fn, self.store_names = fn, store_names

    def process(self, key: Any, value: Any, ctx: Any) -> None:
        outer = ctx._node
        ctx._node = self
        try:
            self.fn(ctx.record(key, value), ctx)
        finally:
            ctx._node = outer


class ProcessorNode(Node):
    """The processor API: ``processor_class`` is instantiated once per task (Task.init_processors); this node
    hands each record to the task's instance as a Record. The instance forwards through its context
    (processor.Context.forward), which sends to this node's children."""

    __slots__ = ("processor_class", "store_names")

    def __init__(self, processor_class: type, store_names: list[str]):
        super().__init__()
        self.processor_class, self.store_names = processor_class, store_names

    def process(self, key: Any, value: Any, ctx: Any) -> None:
        instance = ctx._task.processors[self][0]
        outer = ctx._node
        ctx._node = self
        try:
            instance.process(ctx.record(key, value))
        finally:
            ctx._node = outer


def walk(node: Node) -> Iterable[Node]:
    """``node`` and every node after it, each once, parents before children."""
    seen: set[int] = set()
    stack = [node]
    while stack:
        n = stack.pop()
        if id(n) in seen:
            continue
        seen.add(id(n))
        yield n
        stack.extend(reversed(n.children))


class AggregateNode(Node):
    """count / aggregate / reduce: ``agg = update(key, value, old_agg_or_None)``, stored, forwarded."""

    __slots__ = ("store_name", "update")

    def __init__(self, store_name: str, update: Callable[[Any, Any, Any], Any]):
        super().__init__()
        self.store_name, self.update = store_name, update

    def process(self, key: Any, value: Any, ctx: Any) -> None:
        if key is None:
            ctx.metrics.dropped_null_key += 1
            return
        store = ctx.store(self.store_name)
        new = self.update(key, value, store.get(key))
        store.put(key, new)
        self.forward(key, new, ctx)


def _event_time(ctx: Any) -> int:
    """The record's event time; a windowed aggregation cannot place a record without one (ValueError: the
    processing exception handler decides)."""
    ts = ctx.timestamp
    if ts is None or ts < 0:
        raise ValueError(f"record of {ctx.topic}[{ctx.partition}]@{ctx.offset} has no valid timestamp ({ts}); "
                         "a windowed aggregation needs one: pass app.stream(..., timestamp_extractor=...)")
    return ts


def _observed_stream_time(store: Any, ts: int) -> int:
    """A windowed aggregation's own stream time with this record: the largest event time among the records that
    reached it (its store's stream time), as Kafka Streams' observed stream time of the processor. Records
    without a key, or filtered out before the aggregation, move the task's stream time but not this one."""
    observed = store.stream_time()
    return ts if observed is None or ts > observed else observed


class WindowAggregateNode(Node):
    """Windowed count / aggregate / reduce (Kafka Streams' KStreamWindowAggregate): for each window containing
    the record's timestamp, ``agg = update(key, value, old_agg_or_None)``, stored with the window's event time
    (the larger of the record's and the window's previous one), forwarded as ``Windowed(key, start, end)``
    with that event time as the output record's timestamp.

    A window is closed once ``end + grace <= stream time``: the record is dropped for that window and counted in
    ``dropped_late_records_total`` once per window dropped, as Kafka Streams' dropped-records sensor counts.
    Stream time here is the aggregation's own, as Kafka Streams' observed stream time of the processor: the
    largest event time among the records that reached it, this one included, which is its store's stream time
    (the largest event time written; a record that raises it is never late). Records without a key, or filtered
    out before the aggregation, move the task's stream time but close no window here. A negative timestamp is
    an error (ValueError: the processing exception handler decides)."""

    __slots__ = ("store_name", "windows", "update")

    def __init__(self, store_name: str, windows: Any, update: Callable[[Any, Any, Any], Any]):
        super().__init__()
        self.store_name, self.windows, self.update = store_name, windows, update

    def process(self, key: Any, value: Any, ctx: Any) -> None:
        if key is None:
            ctx.metrics.dropped_null_key += 1
            return
        ts = _event_time(ctx)
        windows = self.windows
        store = ctx.store(self.store_name)
        close_ms = _observed_stream_time(store, ts) - windows.grace_ms
        for start in windows.window_starts(ts):
            end = start + windows.size_ms
            if end <= close_ms:
                ctx.metrics.record_late_drop(ctx.task_id)
                continue
            old = store.get_with_timestamp(key, start)
            if old is None:
                new, new_ts = self.update(key, value, None), ts
            else:
                new, new_ts = self.update(key, value, old[0]), max(ts, old[1])
            store.put(key, start, new, new_ts)
            ctx.timestamp = new_ts
            try:
                self.forward(Windowed(key, start, end), new, ctx)
            finally:
                ctx.timestamp = ts


class SessionAggregateNode(Node):
    """Session count / aggregate / reduce (Kafka Streams' KStreamSessionWindowAggregate). A record at ``t``
    joins every live session of its key within the gap (``end >= t - gap`` and ``start <= t + gap``): starting
    from ``initializer()``, their aggregates are combined with ``merger(key, agg, session_agg)`` in order of
    start, the session becomes ``[min start, max end]`` and ``aggregator(key, value, agg)`` adds the record.

    Late: when the resulting session ends before ``stream time - gap - grace`` the record is dropped and counted
    (``dropped_late_records_total``). Otherwise, if any session was merged (unless the only one was ``[t, t]``),
    each merged session is removed and a tombstone forwarded for its key, then the new session is stored and
    forwarded. Output records carry the session's end as their timestamp."""

    __slots__ = ("store_name", "windows", "initializer", "aggregator", "merger")

    def __init__(self, store_name: str, windows: Any, initializer: Callable[[], Any],
                 aggregator: Callable[[Any, Any, Any], Any], merger: Callable[[Any, Any, Any], Any]):
        super().__init__()
        self.store_name, self.windows = store_name, windows
        self.initializer, self.aggregator, self.merger = initializer, aggregator, merger

    def process(self, key: Any, value: Any, ctx: Any) -> None:
        if key is None:
            ctx.metrics.dropped_null_key += 1
            return
        ts = _event_time(ctx)
        gap = self.windows.inactivity_gap_ms
        store = ctx.store(self.store_name)
        close_ms = _observed_stream_time(store, ts) - self.windows.grace_ms - gap
        merged = store.find_sessions(key, ts - gap, ts + gap)
        agg = self.initializer()
        start = end = ts
        for s_start, s_end, s_agg in merged:
            agg = self.merger(key, agg, s_agg)
            start, end = min(start, s_start), max(end, s_end)
        if end < close_ms:
            ctx.metrics.record_late_drop(ctx.task_id)
            return
        try:
            if (start, end) != (ts, ts):
                for s_start, s_end, _ in merged:
                    store.remove(key, s_start, s_end)
                    ctx.timestamp = s_end
                    self.forward(Windowed(key, s_start, s_end), None, ctx)
            agg = self.aggregator(key, value, agg)
            store.put(key, start, end, agg)
            ctx.timestamp = end
            self.forward(Windowed(key, start, end), agg, ctx)
        finally:
            ctx.timestamp = ts


class SlidingAggregateNode(Node):
    """Sliding-window count / aggregate / reduce (Kafka Streams' KStreamSlidingWindowAggregate, the variant it
    runs with its own stores: processReverse, windows walked newest first, hence the order of the updates).
    Windows are ``[start, start + d]`` (``d`` = time_difference_ms, both ends inclusive), stored by start in a
    windowed store with the event time of their newest record. A record at ``t``:

    - is dropped (and counted) when its own left window ``[t - d, t]`` ends before ``stream time - grace``;
    - updates every stored window that holds it, and creates its left window ``[t - d, t]`` (its aggregate
      taken from the previous record's window when that record is within ``d``) and its right window
      ``[t + 1, t + 1 + d]`` when a later record falls in it (the aggregate of the records after ``t``), and the
      previous record's right window when missing; records before ``d`` go to the window ``[0, d]``.

    A window whose end is before ``stream time - grace`` is not updated (counted as a late drop, as Kafka
    Streams counts each skipped window). Every update is forwarded as ``Windowed(key, start, start + d)``,
    stamped with the window's event time."""

    __slots__ = ("store_name", "windows", "update")

    def __init__(self, store_name: str, windows: Any, update: Callable[[Any, Any, Any], Any]):
        super().__init__()
        self.store_name, self.windows, self.update = store_name, windows, update

    def process(self, key: Any, value: Any, ctx: Any) -> None:
        if key is None:
            ctx.metrics.dropped_null_key += 1
            return
        ts = _event_time(ctx)
        d = self.windows.time_difference_ms
        close_ms = _observed_stream_time(ctx.store(self.store_name), ts) - self.windows.grace_ms
        if ts + d < close_ms:
            ctx.metrics.record_late_drop(ctx.task_id)
            return
        try:
            if ts < d:
                self._process_early(key, value, ts, close_ms, ctx)
            else:
                self._process_reverse(key, value, ts, close_ms, ctx)
        finally:
            ctx.timestamp = ts

    def _process_reverse(self, key: Any, value: Any, ts: int, close_ms: int, ctx: Any) -> None:
        """Kafka Streams' processReverse (what it runs with its own stores, which all fetch backwards): the
        key's windows newest start first, so the windows holding the record are updated in that order; the walk
        stops at the first window ending before the record (the previous record's left window), or when the
        record's left window exists and already holds a record at ``ts`` (its other windows exist then)."""
        d = self.windows.time_difference_ms
        store = ctx.store(self.store_name)
        starts: set[int] = set()
        left_agg = right_agg = None  # (aggregate, event time)
        left_exists = right_exists = False
        previous_ts: int | None = None
        found = list(store.fetch_with_timestamps(key, max(0, ts - 2 * d), ts + 1))
        for start, agg, agg_ts in reversed(found):
            starts.add(start)
            end = start + d
            if start == ts + 1:
                right_exists = True
            elif end > ts:
                if right_agg is None:
                    right_agg = (agg, agg_ts)
                self._update(key, value, start, (agg, agg_ts), ts, close_ms, ctx)
            elif end == ts:
                left_exists = True
                self._update(key, value, start, (agg, agg_ts), ts, close_ms, ctx)
                if agg_ts < ts:
                    previous_ts = agg_ts
                else:
                    return
            else:
                left_agg, previous_ts = (agg, agg_ts), agg_ts
                break
        if previous_ts is not None and previous_ts + 1 not in starts and previous_ts + 1 + d >= ts:
            self._update(key, value, previous_ts + 1, None, ts, close_ms, ctx)  # the previous record's right window
        if not left_exists:
            seed = left_agg if previous_ts is not None and ts - d <= previous_ts else None
            self._update(key, value, ts - d, None if seed is None else (seed[0], ts), ts, close_ms, ctx)
        if not right_exists and right_agg is not None and right_agg[1] > ts:
            self._put(key, ts + 1, right_agg, ctx)

    def _process_early(self, key: Any, value: Any, ts: int, close_ms: int, ctx: Any) -> None:
        """A record before ``d``: its left window would start below 0, so it goes to ``[0, d]``."""
        store = ctx.store(self.store_name)
        starts: set[int] = set()
        combined = right_agg = None
        right_exists = False
        previous_ts: int | None = None
        for start, agg, agg_ts in store.fetch_with_timestamps(key, 0, ts + 1):
            starts.add(start)
            if start == 0:
                combined = (agg, agg_ts)
                if agg_ts < ts:
                    previous_ts = agg_ts
            elif start <= ts:
                right_agg = (agg, agg_ts)
                self._update(key, value, start, (agg, agg_ts), ts, close_ms, ctx)
            elif start == ts + 1:
                right_exists = True
            else:
                raise RuntimeError(f"sliding windows of {key!r}: a window starting at {start} was found while "
                                   f"processing a record at {ts}; the store is not a sliding-window store")
        if right_agg is None and combined is not None and combined[1] > ts:
            right_agg = combined
        if not right_exists and right_agg is not None and right_agg[1] > ts:
            self._put(key, ts + 1, right_agg, ctx)
        if previous_ts is not None and previous_ts + 1 not in starts:
            self._update(key, value, previous_ts + 1, None, ts, close_ms, ctx)
        self._update(key, value, 0, combined, ts, close_ms, ctx)

    def _update(self, key: Any, value: Any, start: int, old: tuple[Any, int] | None, ts: int, close_ms: int,
                ctx: Any) -> None:
        """Adds the record to the window at ``start`` whose (aggregate, event time) was ``old`` (None: empty)."""
        if start + self.windows.time_difference_ms < close_ms:
            ctx.metrics.record_late_drop(ctx.task_id)
            return
        if old is None or old[0] is None:
            new = (self.update(key, value, None), ts)
        else:
            new = (self.update(key, value, old[0]), max(ts, old[1]))
        self._put(key, start, new, ctx)

    def _put(self, key: Any, start: int, agg: tuple[Any, int], ctx: Any) -> None:
        ctx.store(self.store_name).put(key, start, agg[0], agg[1])
        ctx.timestamp = agg[1]
        self.forward(Windowed(key, start, start + self.windows.time_difference_ms), agg[0], ctx)


class SuppressNode(Node):
    """``suppress_until_window_closes`` (Kafka Streams' KTableSuppressProcessor with ``untilWindowCloses``): each
    update of a windowed table replaces its window's entry in a buffer store; once ``window end <= stream time
    - suppress_ms`` (the windows' grace; for sessions gap + grace, as Kafka Streams' GraphGraceSearchUtil
    computes) the entry is removed and forwarded: one final result per window, stamped with its last update's
    timestamp, in order of (window end, key bytes). A tombstone (a session merged away) removes the window's
    entry: nothing is emitted for it (Kafka Streams drops buffered tombstones of final results).

    The buffer is a key-value store with a changelog (``buffer_store``), so it survives restarts and rebalances
    and takes part in commits and exactly-once like any store. Its key: the window end, 8 bytes big-endian,
    then the windowed key's bytes (``key_serde``); its value: the update's timestamp, 8 bytes, then the value's
    bytes (``value_serde``). Final results carry no headers (Kafka Streams' buffer keeps each update's headers;
    this buffer's format has no room for them).

    Stream time is the suppressed aggregation's (``aggregation_store``'s stream time, restored with it), as Kafka
    Streams' suppression keeps its own observed stream time: the largest timestamp of the updates that reached it,
    which is the aggregation's stream time (the record that raises it is never late and its updates carry its
    time). Not the task's: a record without a key ahead in time would emit a window's result while the
    aggregation still counts records into it, and emit it again with each of them."""

    __slots__ = ("buffer_store", "aggregation_store", "suppress_ms", "key_serde", "value_serde", "_least_end")

    def __init__(self, buffer_store: str, aggregation_store: str, suppress_ms: int, key_serde: Serde,
                 value_serde: Serde):
        super().__init__()
        self.buffer_store, self.aggregation_store, self.suppress_ms = buffer_store, aggregation_store, suppress_ms
        self.key_serde, self.value_serde = key_serde, value_serde
        # Per task buffer (its view): (write generation, the smallest end it may hold). Known exactly after an
        # eviction's scan, lowered by every put; a rewind clears the uncommitted writes (bringing back what was
        # evicted), which moves the generation on. No scan while stream time - suppress_ms stays below it.
        self._least_end: weakref.WeakKeyDictionary[Any, tuple[int, int | None]] = weakref.WeakKeyDictionary()

    def process(self, key: Any, value: Any, ctx: Any) -> None:
        buffer = ctx.store(self.buffer_store)
        end = key.end_ms
        buffer_key = _TIME.pack(end) + self.key_serde.serialize(key)
        generation = buffer.write_generation
        known = self._least_end.get(buffer)
        least = None if known is None or known[0] != generation else known[1]
        if value is None:
            buffer.delete(buffer_key)  # the least end stays a lower bound
        else:
            buffer.put(buffer_key, _TIME.pack(ctx.timestamp) + self.value_serde.serialize(value))
            if known is not None and known[0] == generation:
                least = end if least is None else min(least, end)
        expiry = self._stream_time(ctx) - self.suppress_ms
        if known is not None and known[0] == generation and (least is None or least > expiry):
            self._least_end[buffer] = (generation, least)
            return
        self._least_end[buffer] = (generation, self.evict(ctx))

    def _stream_time(self, ctx: Any) -> int:
        observed = ctx.store(self.aggregation_store).stream_time()
        return -1 if observed is None else observed

    def evict(self, ctx: Any) -> int | None:
        """Forwards and removes every buffered window whose end is at or below stream time - suppress_ms;
        returns the smallest end left in the buffer (None: empty)."""
        expiry = self._stream_time(ctx) - self.suppress_ms
        buffer = ctx.store(self.buffer_store)
        closed, least = [], None
        for buffer_key, raw in buffer.range(None, None):
            end = _TIME.unpack_from(buffer_key)[0]
            if end > expiry:
                least = end
                break
            closed.append((buffer_key, raw))
        ts, headers = ctx.timestamp, ctx.headers
        ctx.headers = None  # the buffer keeps no headers: not the headers of the record that closed the window
        try:
            for buffer_key, raw in closed:
                buffer.delete(buffer_key)
                ctx.timestamp = _TIME.unpack_from(raw)[0]
                self.forward(self.key_serde.deserialize(buffer_key[8:]), self.value_serde.deserialize(raw[8:]), ctx)
        finally:
            ctx.timestamp, ctx.headers = ts, headers
        return least


class SinkNode(Node):
    __slots__ = ("topic", "key_serde", "value_serde")

    def __init__(self, topic: str, key_serde: Serde, value_serde: Serde):
        super().__init__()
        self.topic, self.key_serde, self.value_serde = topic, key_serde, value_serde

    def process(self, key: Any, value: Any, ctx: Any) -> None:
        ctx.send(self.topic, _serde.dumps(self.key_serde, key), _serde.dumps(self.value_serde, value))


class SelectKeyNode(Node):
    """``select_key``: ``fn(key, value) -> new_key``; the value stays."""

    __slots__ = ("fn",)

    def __init__(self, fn: Callable[[Any, Any], Any]):
        super().__init__()
        self.fn = fn

    def process(self, key: Any, value: Any, ctx: Any) -> None:
        self.forward(self.fn(key, value), value, ctx)


class PassThroughNode(Node):
    """Where ``merge`` joins two streams: both parents forward into it."""

    __slots__ = ()

    def process(self, key: Any, value: Any, ctx: Any) -> None:
        self.forward(key, value, ctx)


class RepartitionSinkNode(SinkNode):
    """Writes to a repartition topic, to the partition Kafka's default partitioner picks for the serialized key
    (murmur2, ``kafka/partitioner.py``), out of the topic's partition count known once the app started
    (``spec.partitions``). A record with a null key has no partition: it is dropped and counted in
    ``dropped_records_null_key_total``, as Kafka Streams drops it."""

    __slots__ = ("spec",)

    def __init__(self, topic: str, key_serde: Serde, value_serde: Serde):
        super().__init__(topic, key_serde, value_serde)
        self.spec: Any = None  # dsl.topology.RepartitionTopic, set by Topology.add_repartition

    def process(self, key: Any, value: Any, ctx: Any) -> None:
        raw_key = None if key is None else _serde.dumps(self.key_serde, key)
        if raw_key is None:
            ctx.metrics.dropped_null_key += 1
            return
        partitions = self.spec.partitions
        if partitions is None:
            raise RuntimeError(f"repartition topic {self.topic!r}: partition count unknown (the app resolves it "
                               "at start)")
        ctx.send(self.topic, raw_key, _serde.dumps(self.value_serde, value), partition_for(raw_key, partitions))
