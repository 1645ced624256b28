"""Tables (Kafka Streams' KTable): a table materialised from a topic (``app.table``), the result of an
aggregation, or a table derived from another (``filter``, ``map_values``, table-table joins).

A table materialised from a topic keeps its source topic as its changelog (Kafka Streams' source-topic
optimisation): its store restores from that topic, no ``-changelog`` topic is created. See
docs/architecture.md "Tables and joins"."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from .. import serde as _serde
from ..errors import TopologyError
from ..serde import Serde
from ..state.store import MEMORY, ROCKSDB, StoreSpec
from .nodes import PassThroughNode
from .table_nodes import INNER, LEFT, OUTER, TableFilterNode, TableMapValuesNode, TableTableJoinNode

if TYPE_CHECKING:
    from .stream import Stream


def table_store_spec(op: str, store: str | StoreSpec, key_serde: Serde, value_serde: Serde,
                     source_topic: str | None = None) -> StoreSpec:
    """The store a table materialises into: a name (RocksDB) or a StoreSpec (its name and kind: "rocksdb" or
    "memory"); the serdes are the table's."""
    if isinstance(store, StoreSpec):
        if store.kind not in (ROCKSDB, MEMORY):
            raise TopologyError(f"{op}: a table's store is a key-value store, kind 'rocksdb' or 'memory'; got "
                                f"{store.kind!r}")
        return StoreSpec(store.name, key_serde, value_serde, store.kind, source_topic=source_topic)
    if not isinstance(store, str):
        raise TopologyError(f"{op}: store must be a name or a hotstate.StoreSpec, got {type(store).__name__}")
    return StoreSpec(store, key_serde, value_serde, ROCKSDB, source_topic=source_topic)


class Table:
    """A table: one current value per key, kept in a store (``store``), or derived without one
    (``filter`` / ``map_values`` without ``store=``: usable with ``to_stream``, not in a join)."""

    def __init__(self, updates: "Stream", store: StoreSpec | None):
        self._updates = updates
        self.store = store

    def to_stream(self) -> "Stream":
        """The stream of the table's updates: one record per change of a key (None: the key was deleted)."""
        return self._updates

    def _derive(self, op: str, node: Any, store: str | StoreSpec | None, value_serde: Serde | None) -> "Table":
        from .stream import Stream
        u = self._updates
        spec = None
        if store is not None:
            if u.key_serde is None or value_serde is None:
                raise TopologyError(f"{op}: materialising into store {store!r} needs the key and value serdes; pass "
                                    "value_serde=")
            spec = table_store_spec(op, store, u.key_serde, value_serde)
            u._topology.claim_store(u._sub, spec, op)
            node.store_name = spec.name
        u._node.children.append(node)
        return Table(Stream(u._topology, u._sub, node, u.key_serde, value_serde), spec)

    def filter(self, predicate: Callable[[Any, Any], bool], store: str | StoreSpec | None = None) -> "Table":
        """The rows for which ``predicate(key, value)`` is true; an update it refuses is forwarded as a tombstone
        (Kafka Streams' KTable.filter). ``store``: materialise the result (needed to join it)."""
        return self._derive("filter()", TableFilterNode(predicate, None), store, self._updates.value_serde)

    def map_values(self, fn: Callable[[Any], Any], store: str | StoreSpec | None = None,
                   value_serde: Serde | None = None) -> "Table":
        """``fn(value)`` per row; tombstones stay tombstones. ``store`` (with ``value_serde``, JSON by default):
        materialise the result (needed to join it)."""
        vs = value_serde if value_serde is not None else (_serde.JSON if store is not None else None)
        return self._derive("map_values()", TableMapValuesNode(fn, None), store, vs)

    # ---- table-table joins ----
    def join(self, other: "Table", joiner: Callable[[Any, Any], Any], store: str | StoreSpec | None = None,
             value_serde: Serde = _serde.JSON) -> "Table":
        """Inner join with another table on the key: ``joiner(value, other_value)`` while both have the key.
        Each change of either side emits the key's new result; a deletion that ends a result emits a tombstone.
        The result is materialised in ``store`` (or an internal store)."""
        return table_table_join(self, other, joiner, INNER, "join()", store, value_serde)

    def left_join(self, other: "Table", joiner: Callable[[Any, Any], Any], store: str | StoreSpec | None = None,
                  value_serde: Serde = _serde.JSON) -> "Table":
        """Left join: a result while this table has the key; ``other_value`` is None when the other lacks it."""
        return table_table_join(self, other, joiner, LEFT, "left_join()", store, value_serde)

    def outer_join(self, other: "Table", joiner: Callable[[Any, Any], Any], store: str | StoreSpec | None = None,
                   value_serde: Serde = _serde.JSON) -> "Table":
        """Outer join: a result while either table has the key; the missing side's value is None."""
        return table_table_join(self, other, joiner, OUTER, "outer_join()", store, value_serde)


def require_materialized(table: Any, op: str) -> StoreSpec:
    if not isinstance(table, Table):
        raise TopologyError(f"{op} takes a Table (app.table(...), an aggregation, ...), got {type(table).__name__}")
    if table.store is None:
        raise TopologyError(f"{op}: the table is not materialised (filter() / map_values() without store=); pass "
                            "store= to it so the join can look values up")
    return table.store


def table_table_join(left: Table, right: Table, joiner: Callable[[Any, Any], Any], kind: str, op: str,
                     store: str | StoreSpec | None, value_serde: Serde) -> Table:
    """Both tables' sub-topologies become one (co-partitioned: task p holds partition p of both stores); each
    side's updates go through its join node into the result store."""
    from .stream import Stream, check_serde
    left_spec = require_materialized(left, op)
    right_spec = require_materialized(right, op)
    if not callable(joiner):
        raise TopologyError(f"{op}: joiner must be a callable (value, other_value) -> result")
    check_serde(value_serde, "value_serde")
    lu, ru = left._updates, right._updates
    if ru._topology is not lu._topology:
        raise TopologyError(f"{op}: both tables must come from the same app")
    if left_spec.name == right_spec.name:
        raise TopologyError(f"{op}: a table joined with itself; join two different tables")
    topology = lu._topology
    sub = topology.merge(lu._sub, ru._sub)
    name = store if store is not None else topology.internal_store_name("KTABLE-JOIN")
    spec = table_store_spec(op, name, left_spec.key_serde, value_serde)
    topology.claim_store(sub, spec, op)
    merged = PassThroughNode()
    for table, is_left, other in ((lu, True, right_spec), (ru, False, left_spec)):
        node = TableTableJoinNode(is_left, other.name, spec.name, joiner, kind)
        node.children.append(merged)
        table._node.children.append(node)
    return Table(Stream(topology, sub, merged, left_spec.key_serde, value_serde), spec)
