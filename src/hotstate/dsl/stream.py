"""Stream, GroupedStream and Table builders (Kafka Streams' KStream / KGroupedStream / KTable)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Iterable

from .. import serde as _serde
from ..errors import TopologyError
from ..processor import check_processor_class
from ..records import Record
from ..serde import Serde
from ..state.store import ROCKSDB, StoreSpec
from .aggregations import Aggregations
from .nodes import (AggregateNode, FilterNode, FlatMapNode, MapNode, MapValuesNode, Node, PeekNode,
                    ProcessNode, ProcessorNode, SinkNode)
from .topology import SubTopology, Topology

if TYPE_CHECKING:
    from .windowed import SessionWindowedStream, TimeWindowedStream


def check_serde(serde: object, what: str) -> None:
    if serde is not None and not isinstance(serde, Serde):
        raise TopologyError(f"{what} must be a hotstate serde (hotstate.serde.STRING, ... or serde.of(...)), "
                            f"got {type(serde).__name__}")


def _store_spec(store: str | StoreSpec, key_serde: Serde, value_serde: Serde) -> StoreSpec:
    """Aggregations fix their store's serdes; a StoreSpec given by the user contributes name and kind."""
    if isinstance(store, StoreSpec):
        return StoreSpec(store.name, key_serde, value_serde, store.kind)
    if not isinstance(store, str):
        raise TopologyError(f"store must be a name or a hotstate.StoreSpec, got {type(store).__name__}")
    return StoreSpec(store, key_serde, value_serde, ROCKSDB)


class Stream:
    """A record stream. ``key_serde``/``value_serde`` are known until an operation changes the types."""

    def __init__(self, topology: Topology, sub: SubTopology, node: Node,
                 key_serde: Serde | None, value_serde: Serde | None, key_changed: bool = False):
        self._topology, self._sub, self._node = topology, sub, node
        self.key_serde, self.value_serde = key_serde, value_serde
        self._key_changed = key_changed

    def _then(self, node: Node, key_serde: Serde | None, value_serde: Serde | None, key_changed: bool) -> "Stream":
        self._node.children.append(node)
        return Stream(self._topology, self._sub, node, key_serde, value_serde, key_changed)

    def map(self, fn: Callable[[Any, Any], tuple[Any, Any]]) -> "Stream":
        """``fn(key, value) -> (new_key, new_value)``."""
        return self._then(MapNode(fn), None, None, True)

    def map_values(self, fn: Callable[[Any], Any]) -> "Stream":
        """``fn(value) -> new_value``; the key stays."""
        return self._then(MapValuesNode(fn), self.key_serde, None, self._key_changed)

    def filter(self, predicate: Callable[[Any, Any], bool]) -> "Stream":
        """Keeps the records for which ``predicate(key, value)`` is true."""
        return self._then(FilterNode(predicate), self.key_serde, self.value_serde, self._key_changed)

    def flat_map(self, fn: Callable[[Any, Any], Iterable[tuple[Any, Any]]]) -> "Stream":
        """``fn(key, value) -> iterable of (key, value)``."""
        return self._then(FlatMapNode(fn), None, None, True)

    def peek(self, fn: Callable[[Any, Any], None]) -> "Stream":
        """Calls ``fn(key, value)`` for its side effect; forwards the record unchanged."""
        return self._then(PeekNode(fn), self.key_serde, self.value_serde, self._key_changed)

    def process(self, fn: Callable[[Record, Any], None] | type, stores: Iterable[str | StoreSpec] = (),
                key_serde: Serde | None = None, value_serde: Serde | None = None) -> "Stream":
        """Low-level processing, in two forms.

        A processor class (Kafka Streams' Processor API): one instance per task, made when the task starts
        running; ``init(context)`` first (``context.store(name)``, ``context.schedule(interval_ms,
        hotstate.Punctuation.STREAM_TIME | WALL_CLOCK_TIME, callback)``), then ``process(record)`` per record
        (``context.forward(record)`` sends downstream, e.g. ``record.with_value(v)``, keeping the input's timestamp
        and headers unless changed), ``close()`` when the task closes. See :mod:`hotstate.processor`.

        A function ``fn(record, ctx)``: ``ctx.store(name)`` gives one of ``stores`` (get / put / delete / range);
        ``ctx.forward(key, value)`` (or ``ctx.forward(record)``) sends a record downstream.

        A store given by name is a RocksDB store with this stream's key serde (BYTES if unknown) and
        JSON values; pass a :class:`hotstate.StoreSpec` to choose serdes or an in-memory store.
        ``key_serde``/``value_serde`` describe the forwarded records, for a later ``to``."""
        if isinstance(fn, type):
            check_processor_class(fn)
        elif not callable(fn):
            raise TopologyError(f"process() takes a processor class or a function fn(record, ctx), got "
                                f"{type(fn).__name__}")
        check_serde(key_serde, "key_serde")
        check_serde(value_serde, "value_serde")
        names = []
        for store in stores:
            spec = store if isinstance(store, StoreSpec) else StoreSpec(store, self.key_serde or _serde.BYTES, _serde.JSON)
            self._topology.add_store(self._sub, spec)
            names.append(spec.name)
        node = ProcessorNode(fn, names) if isinstance(fn, type) else ProcessNode(fn, names)
        return self._then(node, key_serde, value_serde, True)

    def group_by_key(self) -> "GroupedStream":
        """Groups by the current key. The key must not have been changed since the source: hotstate has
        no repartition topics yet."""
        if self._key_changed:
            raise TopologyError(
                "group_by_key() after map/flat_map/process would need a repartition topic, which hotstate does "
                "not create yet; key the input topic by the grouping key, or use map_values/filter before grouping"
            )
        if self.key_serde is None:
            raise TopologyError("group_by_key() needs a known key serde")
        return GroupedStream(self)

    def to(self, topic: str, key_serde: Serde | None = None, value_serde: Serde | None = None) -> None:
        """Writes the stream to ``topic`` (which must exist). Serdes default to the stream's own."""
        check_serde(key_serde, "key_serde")
        check_serde(value_serde, "value_serde")
        ks = key_serde or self.key_serde
        vs = value_serde or self.value_serde
        if ks is None or vs is None:
            which = "key_serde" if ks is None else "value_serde"
            raise TopologyError(f"to({topic!r}): the stream's {which} is unknown after a type-changing step; pass {which}=")
        sink = SinkNode(topic, ks, vs)
        self._topology.add_sink(self._sub, sink)
        self._node.children.append(sink)


class GroupedStream(Aggregations):
    def __init__(self, stream: Stream):
        self._stream = stream

    def _aggregate(self, store: str | StoreSpec, value_serde: Serde, update: Callable[[Any, Any, Any], Any]) -> "Table":
        s = self._stream
        assert s.key_serde is not None
        spec = _store_spec(store, s.key_serde, value_serde)
        s._topology.add_store(s._sub, spec)
        node = AggregateNode(spec.name, update)
        s._node.children.append(node)
        return Table(Stream(s._topology, s._sub, node, s.key_serde, value_serde), spec)

    def windowed_by(self, windows: Any) -> "TimeWindowedStream | SessionWindowedStream":
        """Aggregates per window: ``windows`` from :mod:`hotstate.windows` (``tumbling``, ``hopping``,
        ``sliding``, ``session``)."""
        from .windowed import windowed_stream
        return windowed_stream(self._stream, windows)


class Table:
    """A changelog-backed table (Kafka Streams' KTable) produced by an aggregation."""

    def __init__(self, updates: Stream, store: StoreSpec):
        self._updates = updates
        self.store = store

    def to_stream(self) -> Stream:
        """The stream of the table's updates: one record per change of a key's aggregate."""
        return self._updates
