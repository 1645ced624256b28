"""Stream joins: stream-table (inner, left); stream-stream joins are in stream_joins.py, table-table joins in
tables.py.

Both sides of a join must be co-partitioned: the stream and the table end up in one sub-topology, whose task
p reads partition p of the stream's topic and of the table's topic and holds partition p of the table's store
(the multi-source sub-topologies of dsl/topology.py). A stream whose key changed (``select_key``, ``map``, ...)
goes through a repartition topic first, sized like the table's topic. See docs/architecture.md "Tables and
joins"."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from ..errors import TopologyError
from .table_nodes import INNER, LEFT, OUTER, StreamTableJoinNode
from .tables import Table, require_materialized

if TYPE_CHECKING:
    from .stream import Stream


def stream_join(stream: "Stream", other: Any, joiner: Callable[[Any, Any], Any], left: bool,
                window: Any = None, store: str | None = None) -> "Stream":
    """``stream.join`` / ``stream.left_join``: with a Table, a stream-table join; with a Stream, a windowed
    stream-stream join (stream_joins.py; without a window a TopologyError says which to use)."""
    from .stream import Stream
    op = "left_join()" if left else "join()"
    if isinstance(other, Stream):
        if window is None:
            raise TopologyError(
                f"{op}: a join of two streams needs a window: pass window=windows.join(time_difference_ms=..., "
                "grace_ms=...) (or join the stream with a table: app.table(...))")
        from .stream_joins import stream_stream_join
        return stream_stream_join(stream, other, joiner, LEFT if left else INNER, window, store)
    if store is not None:
        raise TopologyError(f"{op}: store= names a stream-stream join's stores; a stream-table join uses the "
                            "table's store")
    if window is not None:
        raise TopologyError(f"{op}: a stream-table join takes no window (the table's current value is used)")
    return stream_table_join(stream, other, joiner, left, op)


def stream_outer_join(stream: "Stream", other: Any, joiner: Callable[[Any, Any], Any], window: Any = None,
                      store: str | None = None) -> "Stream":
    """``stream.outer_join``: only with another stream, windowed (Kafka Streams has no stream-table outer join)."""
    from .stream import Stream
    if not isinstance(other, Stream):
        raise TopologyError("outer_join(): a stream's outer join takes another stream and "
                            "window=windows.join(...); a stream joins a table with join() or left_join()")
    if window is None:
        raise TopologyError("outer_join(): a join of two streams needs a window: pass "
                            "window=windows.join(time_difference_ms=..., grace_ms=...)")
    from .stream_joins import stream_stream_join
    return stream_stream_join(stream, other, joiner, OUTER, window, store)


def stream_table_join(stream: "Stream", table: Table, joiner: Callable[[Any, Any], Any], left: bool,
                      op: str) -> "Stream":
    from .stream import Stream
    spec = require_materialized(table, op)
    if not callable(joiner):
        raise TopologyError(f"{op}: joiner must be a callable (stream_value, table_value) -> result")
    tu = table._updates
    if tu._topology is not stream._topology:
        raise TopologyError(f"{op}: the stream and the table must come from the same app")
    topology = stream._topology
    if stream._key_changed:
        # Co-partitioning: the re-keyed records go to the partition of their new key, in a topic with as many
        # partitions as the table's topic (known at start).
        stream = stream._repartition(op, None, None, None, None)
        rep = topology.repartitions[stream._sub.sources[0].topic]
        rep.copartition_with = topology.resolve(tu._sub).source_topics[0]  # resolved before it (build order)
    sub = topology.merge(stream._sub, tu._sub)
    node = StreamTableJoinNode(spec.name, joiner, left)
    stream._node.children.append(node)
    return Stream(topology, sub, node, stream.key_serde, None)
