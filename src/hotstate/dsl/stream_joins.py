"""Windowed stream-stream joins: ``stream.join / left_join / outer_join(other_stream, joiner,
window=windows.join(...))`` (Kafka Streams' KStream-KStream join with ``JoinWindows``).

Both sides must be co-partitioned: they end up in one sub-topology, whose task p reads partition p of both
inputs and holds partition p of the join's stores. A side whose key changed goes through a repartition topic
first (sized like the other side's topic; both re-keyed: like the first one's). Stores, in build order,
named like Kafka Streams' (``KSTREAM-JOINTHIS-0000000000-store``, ``KSTREAM-JOINOTHER-0000000001-store``, and for
left / outer joins ``KSTREAM-OUTERSHARED-0000000000-store``) or after ``store=`` (``<store>-this-join-store``,
``<store>-other-join-store``, ``<store>-outer-shared-join-store``). Each has a changelog and restores like any
store. Semantics: stream_join_nodes.py and docs/architecture.md "Stream-stream joins"."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from .. import serde as _serde
from ..errors import TopologyError
from ..state.backend import ROCKSDB, WINDOW_ROCKSDB
from ..state.store import StoreSpec
from ..windows import JoinWindows
from .nodes import PassThroughNode
from .stream_join_nodes import StreamJoinSideNode, ValueList
from .table_nodes import INNER, LEFT, OUTER

if TYPE_CHECKING:
    from .stream import Stream


def _store_names(stream: "Stream", store: str | None, outer: bool) -> tuple[str, str, str | None]:
    if store is not None:
        if not isinstance(store, str):
            raise TopologyError(f"store must be a name (str) for a stream-stream join, got {type(store).__name__}")
        return (f"{store}-this-join-store", f"{store}-other-join-store",
                f"{store}-outer-shared-join-store" if outer else None)
    this = stream._topology.generated_store_name("KSTREAM-JOINTHIS")
    other = stream._topology.generated_store_name("KSTREAM-JOINOTHER")
    outer_name = this.replace("KSTREAM-JOINTHIS", "KSTREAM-OUTERSHARED") if outer else None
    return this, other, outer_name


def stream_stream_join(stream: "Stream", other: "Stream", joiner: Callable[[Any, Any], Any], kind: str,
                       window: Any, store: str | None = None) -> "Stream":
    """``kind``: "inner", "left" or "outer". Returns the joined stream (its value serde unknown: the joiner's)."""
    from .stream import Stream
    op = {INNER: "join()", LEFT: "left_join()", OUTER: "outer_join()"}[kind]
    if not isinstance(window, JoinWindows):
        raise TopologyError(f"{op}: a join of two streams takes window=windows.join(time_difference_ms=..., "
                            f"grace_ms=...), got {type(window).__name__}")
    if not callable(joiner):
        raise TopologyError(f"{op}: joiner must be a callable (left_value, right_value) -> result")
    if other._topology is not stream._topology:
        raise TopologyError(f"{op}: both streams must come from the same app")
    for side, s in (("this stream", stream), ("the other stream", other)):
        if s.key_serde is None or s.value_serde is None:
            which = "key_serde" if s.key_serde is None else "value_serde"
            raise TopologyError(f"{op}: {side}'s {which} is unknown after a type-changing step (map, map_values, "
                                "process, join); the join's stores need it: pass it to repartition(...) or "
                                "select_key(...) before the join")
    if stream.key_serde is not other.key_serde:
        raise TopologyError(f"{op}: both streams must have the same key serde (the join compares key bytes), got "
                            f"{stream.key_serde!r} and {other.key_serde!r}")
    topology = stream._topology
    rep_this = rep_other = None
    if stream._key_changed:
        stream = stream._repartition(op, None, None, None, None)
        rep_this = topology.repartitions[stream._sub.sources[0].topic]
    if other._key_changed:
        other = other._repartition(op, None, None, None, None)
        rep_other = topology.repartitions[other._sub.sources[0].topic]
    # Co-partitioning: a repartition topic takes the partition count of the other side's first topic (the
    # first side's repartition topic when both were re-keyed: it is sized first, in build order).
    if rep_this is not None and rep_other is None:
        rep_this.copartition_with = topology.resolve(other._sub).source_topics[0]
    elif rep_other is not None:
        rep_other.copartition_with = (rep_this.topic if rep_this is not None
                                      else topology.resolve(stream._sub).source_topics[0])
    this_sub, other_sub = stream._sub, other._sub
    sub = topology.merge(this_sub, other_sub)
    this_name, other_name, outer_name = _store_names(stream, store, kind != INNER)
    key_serde = stream.key_serde
    assert key_serde is not None and stream.value_serde is not None and other.value_serde is not None
    for name, vs in ((this_name, stream.value_serde), (other_name, other.value_serde)):
        topology.claim_store(sub, StoreSpec(name, key_serde, ValueList(vs), WINDOW_ROCKSDB, window.retention_ms), op)
    if outer_name is not None:
        topology.claim_store(sub, StoreSpec(outer_name, _serde.BYTES, _serde.BYTES, ROCKSDB), op)
    left = StreamJoinSideNode(True, this_name, other_name, outer_name, kind != INNER, joiner, window, key_serde,
                              stream.value_serde, other.value_serde)
    right = StreamJoinSideNode(False, other_name, this_name, outer_name, kind == OUTER, joiner, window, key_serde,
                               other.value_serde, stream.value_serde)
    merged = PassThroughNode()
    left.children.append(merged)
    right.children.append(merged)
    stream._node.children.append(left)
    other._node.children.append(right)
    return Stream(topology, sub, merged, key_serde, None)
