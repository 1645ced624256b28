"""Stream and GroupedStream builders (Kafka Streams' KStream / KGroupedStream). Tables are in tables.py, joins in
joins.py."""
from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Callable, Iterable

from .. import serde as _serde
from ..errors import TopologyError
from ..processor import check_processor_class
from ..records import Record
from ..serde import Serde
from ..state.store import ROCKSDB, StoreSpec
from .aggregations import Aggregations
from .nodes import (AggregateNode, FilterNode, FlatMapNode, MapNode, MapValuesNode, Node, PassThroughNode,
                    PeekNode, ProcessNode, ProcessorNode, RepartitionSinkNode, SelectKeyNode, SinkNode, SourceNode)
from .tables import Table
from .topology import SubTopology, Topology

if TYPE_CHECKING:
    from .branch import BranchedStream
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


_NAME = re.compile(r"[A-Za-z0-9._-]{1,200}")


class Stream:
    """A record stream. ``key_serde``/``value_serde`` are known until an operation changes the types.

    ``select_key``, ``map``, ``flat_map`` and ``process`` mark the key as changed: a following ``group_by_key``
    (and ``group_by`` always) sends the records through a repartition topic, so that each key's records meet in
    one task (Kafka Streams' repartition topics; see docs/architecture.md)."""

    def __init__(self, topology: Topology, sub: SubTopology, node: Node,
                 key_serde: Serde | None, value_serde: Serde | None, key_changed: bool = False):
        self._topology, self._sub_ref, self._node = topology, sub, node
        self.key_serde, self.value_serde = key_serde, value_serde
        self._key_changed = key_changed

    @property
    def _sub(self) -> SubTopology:
        """The sub-topology this stream's node is in now (a later ``merge`` may have joined it into another)."""
        return self._topology.resolve(self._sub_ref)

    def _then(self, node: Node, key_serde: Serde | None, value_serde: Serde | None, key_changed: bool) -> "Stream":
        self._node.children.append(node)
        return Stream(self._topology, self._sub, node, key_serde, value_serde, key_changed)

    def map(self, fn: Callable[[Any, Any], tuple[Any, Any]]) -> "Stream":
        """``fn(key, value) -> (new_key, new_value)``."""
        return self._then(MapNode(fn), None, None, True)

    def select_key(self, fn: Callable[[Any, Any], Any], key_serde: Serde | None = None) -> "Stream":
        """``fn(key, value) -> new_key``; the value stays. Marks the key as changed. ``key_serde``: the new key's
        serde (needed by a later repartition or ``to``)."""
        check_serde(key_serde, "key_serde")
        return self._then(SelectKeyNode(fn), key_serde, self.value_serde, True)

    def merge(self, other: "Stream") -> "Stream":
        """One stream of the records of both (Kafka Streams' merge). Both streams' sub-topologies become one:
        its tasks read the partitions of both inputs (their topics must have the same partition count, checked
        at start). The serdes stay known where both streams have the same."""
        if not isinstance(other, Stream):
            raise TopologyError(f"merge() takes a Stream, got {type(other).__name__}")
        if other._topology is not self._topology:
            raise TopologyError("merge(): both streams must come from the same app")
        node = PassThroughNode()
        self._node.children.append(node)
        other._node.children.append(node)
        sub = self._topology.merge(self._sub, other._sub)
        return Stream(self._topology, sub, node,
                      self.key_serde if self.key_serde is other.key_serde else None,
                      self.value_serde if self.value_serde is other.value_serde else None,
                      self._key_changed or other._key_changed)

    def repartition(self, name: str | None = None, partitions: int | None = None,
                    key_serde: Serde | None = None, value_serde: Serde | None = None) -> "Stream":
        """Sends the records through the internal topic ``<app_id>-<name>-repartition`` (Kafka Streams'
        ``repartition(Repartitioned)``), partitioned by the serialized key with Kafka's default partitioner
        (murmur2), and goes on from it in a new sub-topology. The app creates the topic at start with
        ``partitions`` partitions, else the partition count of this stream's source topics. ``name``: generated
        from the build order if not given (``KSTREAM-REPARTITION-0000000000``): name it to keep it when the
        topology changes. Records with a null key are dropped (``dropped_records_null_key_total``)."""
        return self._repartition("repartition()", name, partitions, key_serde, value_serde)

    def _repartition(self, op: str, name: str | None, partitions: int | None, key_serde: Serde | None,
                     value_serde: Serde | None) -> "Stream":
        check_serde(key_serde, "key_serde")
        check_serde(value_serde, "value_serde")
        ks, vs = key_serde or self.key_serde, value_serde or self.value_serde
        if ks is None or vs is None:
            which = " and ".join(n for n, v in (("key_serde", ks), ("value_serde", vs)) if v is None)
            raise TopologyError(
                f"{op}: the records go through a repartition topic, which needs the stream's {which}; it is unknown "
                f"after a type-changing step (map, flat_map, map_values, process, join): pass {which}=")
        if partitions is not None and (not isinstance(partitions, int) or isinstance(partitions, bool)
                                       or partitions <= 0):
            raise TopologyError(f"{op}: partitions must be a positive int or None, got {partitions!r}")
        if name is not None and (not isinstance(name, str) or not _NAME.fullmatch(name)):
            raise TopologyError(f"{op}: name={name!r} is invalid: letters, digits, '.', '_' or '-' (it names the "
                                "topic <app_id>-<name>-repartition)")
        topology = self._topology
        name = name if name is not None else topology.repartition_name()
        topic = topology.repartition_topic(name)
        sink = RepartitionSinkNode(topic, ks, vs)
        source = SourceNode(topic, ks, vs)
        sub = topology.add_repartition(self._sub, sink, source, name, partitions)
        self._node.children.append(sink)
        return Stream(topology, sub, source, ks, vs)

    def split(self, name: str | None = None) -> "BranchedStream":
        """Branches: ``split(name="s-").branch(pred, name="a").default_branch(name="rest")`` -> ``{"s-a": ...,
        "s-rest": ...}``; each record goes to the first branch whose predicate holds (Kafka Streams' split and
        BranchedKStream; see dsl/branch.py for the names)."""
        if name is not None and not isinstance(name, str):
            raise TopologyError(f"split(): name must be a str or None, got {type(name).__name__}")
        from .branch import BranchedStream
        return BranchedStream(self, name if name is not None else self._topology.split_name())

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

    def group_by_key(self, key_serde: Serde | None = None, value_serde: Serde | None = None) -> "GroupedStream":
        """Groups by the current key. After a key change (``select_key``, ``map``, ``flat_map``, ``process``) the
        records first go through a repartition topic (see ``repartition``), which needs the key and value serdes:
        the stream's, or ``key_serde``/``value_serde`` given here (Kafka Streams' ``Grouped.with``)."""
        check_serde(key_serde, "key_serde")
        check_serde(value_serde, "value_serde")
        if self._key_changed:
            return GroupedStream(self._repartition("group_by_key()", None, None, key_serde, value_serde))
        stream = self
        if key_serde is not None or value_serde is not None:
            stream = Stream(self._topology, self._sub, self._node, key_serde or self.key_serde,
                            value_serde or self.value_serde)
        if stream.key_serde is None:
            raise TopologyError("group_by_key() needs a known key serde")
        return GroupedStream(stream)

    def group_by(self, fn: Callable[[Any, Any], Any], key_serde: Serde | None = None,
                 value_serde: Serde | None = None) -> "GroupedStream":
        """Groups by ``fn(key, value)``: ``select_key(fn)`` then a repartition topic (always, as in Kafka
        Streams), so the records of each new key meet in one task. ``key_serde``: the new key's serde (needed);
        ``value_serde``: defaults to the stream's."""
        check_serde(key_serde, "key_serde")
        check_serde(value_serde, "value_serde")
        return GroupedStream(self.select_key(fn, key_serde)._repartition("group_by()", None, None, None, value_serde))

    def join(self, other: Any, joiner: Callable[[Any, Any], Any] | None = None, window: Any = None,
             store: str | None = None, *, key_selector: Callable[[Any, Any], Any] | None = None) -> "Stream":
        """Inner join, by the type of ``other``.

        A table (``app.table(...)`` or an aggregation): ``joiner(value, table_value)`` for each record whose key
        the table holds when the record is processed (table updates emit nothing); a key-changed stream is
        repartitioned first; records with a None key or value are dropped (dsl/joins.py).

        Another stream, with ``window=windows.join(time_difference_ms=..., grace_ms=...)``: a windowed
        stream-stream join, ``joiner(value, other_value)`` for each pair of records of a key whose timestamps
        differ by at most the time difference (dsl/stream_joins.py); ``store`` names its stores.

        A ``GlobalTable`` (``app.global_table(...)``): ``key_selector(key, value)`` picks the table key,
        ``joiner(value, table_value)`` the new value; records without a match are dropped (dsl/global_table.py)."""
        return self._join(other, joiner, window, store, key_selector, left=False)

    def left_join(self, other: Any, joiner: Callable[[Any, Any], Any] | None = None, window: Any = None,
                  store: str | None = None, *, key_selector: Callable[[Any, Any], Any] | None = None) -> "Stream":
        """Left join, by the type of ``other`` as ``join``: ``joiner(value, None)`` for a record without a match
        (with another stream: once its window closed)."""
        return self._join(other, joiner, window, store, key_selector, left=True)

    def outer_join(self, other: Any, joiner: Callable[[Any, Any], Any], window: Any = None,
                   store: str | None = None) -> "Stream":
        """Outer join with another stream (``window=`` needed): as ``left_join``, and ``joiner(None, value)`` for a
        record of the other stream that found no partner, once its window closed."""
        from .joins import stream_outer_join
        return stream_outer_join(self, other, joiner, window, store)

    def _join(self, other: Any, joiner: Any, window: Any, store: Any, key_selector: Any, left: bool) -> "Stream":
        from .global_table import GlobalTable, join_global
        if isinstance(other, GlobalTable):
            return join_global(self, other, key_selector, joiner, left)
        op = "left_join()" if left else "join()"
        if key_selector is not None:
            raise TopologyError(f"{op}: key_selector is for a join with a GlobalTable (app.global_table(...)); a "
                                f"table or stream joins on the key: select_key(...) first")
        if joiner is None:
            raise TopologyError(f"{op}: pass joiner=, a function (value, other_value) -> joined value")
        from .joins import stream_join
        return stream_join(self, other, joiner, left, window, store)

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
        s._topology.claim_store(s._sub, spec, "aggregate()")
        node = AggregateNode(spec.name, update)
        s._node.children.append(node)
        return Table(Stream(s._topology, s._sub, node, s.key_serde, value_serde), spec)

    def windowed_by(self, windows: Any) -> "TimeWindowedStream | SessionWindowedStream":
        """Aggregates per window: ``windows`` from :mod:`hotstate.windows` (``tumbling``, ``hopping``,
        ``sliding``, ``session``)."""
        from .windowed import windowed_stream
        return windowed_stream(self._stream, windows)
