"""Processor nodes of a sub-topology. Nodes hold no per-task state: a task passes its context."""
from __future__ import annotations

from typing import Any, Callable, Iterable

from .. import serde as _serde
from ..records import Record
from ..serde import Serde
from ..windows import Windowed


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


class WindowAggregateNode(Node):
    """Windowed count / aggregate / reduce (Kafka Streams' KStreamWindowAggregate): for each window containing
    the record's timestamp, ``agg = update(key, value, old_agg_or_None)``, stored with the window's event time
    (the larger of the record's and the window's previous one), forwarded as ``Windowed(key, start, end)``
    with that event time as the output record's timestamp.

    A window is closed once ``end + grace <= stream time`` (the task's, this record included): the record is
    dropped for that window and counted in ``dropped_late_records_total`` once per window dropped, as Kafka
    Streams' dropped-records sensor counts. A negative timestamp is an error (ValueError: the processing
    exception handler decides)."""

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
        close_ms = ctx.stream_time - windows.grace_ms
        store = ctx.store(self.store_name)
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


def _event_time(ctx: Any) -> int:
    ts = ctx.timestamp
    if ts is None or ts < 0:
        raise ValueError(f"record of {ctx.topic}[{ctx.partition}]@{ctx.offset} has no valid timestamp ({ts}); "
                         "a windowed aggregation needs one: pass app.stream(..., timestamp_extractor=...)")
    return ts


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
        close_ms = ctx.stream_time - self.windows.grace_ms - gap
        store = ctx.store(self.store_name)
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


class SinkNode(Node):
    __slots__ = ("topic", "key_serde", "value_serde")

    def __init__(self, topic: str, key_serde: Serde, value_serde: Serde):
        super().__init__()
        self.topic, self.key_serde, self.value_serde = topic, key_serde, value_serde

    def process(self, key: Any, value: Any, ctx: Any) -> None:
        ctx.send(self.topic, _serde.dumps(self.key_serde, key), _serde.dumps(self.value_serde, value))
