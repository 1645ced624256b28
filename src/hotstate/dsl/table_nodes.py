"""Processor nodes of tables and joins (Kafka Streams' KTableSource, KTableFilter, KTableMapValues,
KStreamKTableJoin, KTableKTableJoin). Like every node they hold no per-task state: stores are the task's.

A table node forwards ``(key, new value)`` downstream after its store holds the new value; a None value is a
tombstone (the key was deleted, or a filter dropped it)."""
from __future__ import annotations

from typing import Any, Callable

from .nodes import Node

INNER, LEFT, OUTER = "inner", "left", "outer"


def _materialize(ctx: Any, store_name: str | None, key: Any, value: Any) -> None:
    if store_name is None:
        return
    store = ctx.store(store_name)
    if value is None:
        store.delete(key)
    else:
        store.put(key, value)


class TableSourceNode(Node):
    """``app.table(topic)``: each record of the topic is the key's new value, put into the table's store; a
    None value (tombstone) deletes the key. A record without a key is dropped and counted
    (``dropped_records_null_key_total``). Every update, tombstones included, is forwarded."""

    __slots__ = ("store_name",)

    def __init__(self, store_name: str):
        super().__init__()
        self.store_name = store_name

    def process(self, key: Any, value: Any, ctx: Any) -> None:
        if key is None:
            ctx.metrics.dropped_null_key += 1
            return
        _materialize(ctx, self.store_name, key, value)
        self.forward(key, value, ctx)


class TableFilterNode(Node):
    """``Table.filter(predicate)``: a value the predicate refuses becomes a tombstone (the key leaves the
    filtered table), as Kafka Streams' KTableFilter forwards it. ``store_name``: materialised there, or None."""

    __slots__ = ("predicate", "store_name")

    def __init__(self, predicate: Callable[[Any, Any], bool], store_name: str | None):
        super().__init__()
        self.predicate, self.store_name = predicate, store_name

    def process(self, key: Any, value: Any, ctx: Any) -> None:
        out = value if value is not None and self.predicate(key, value) else None
        _materialize(ctx, self.store_name, key, out)
        self.forward(key, out, ctx)


class TableMapValuesNode(Node):
    """``Table.map_values(fn)``: ``fn(value)`` per update; a tombstone stays a tombstone."""

    __slots__ = ("fn", "store_name")

    def __init__(self, fn: Callable[[Any], Any], store_name: str | None):
        super().__init__()
        self.fn, self.store_name = fn, store_name

    def process(self, key: Any, value: Any, ctx: Any) -> None:
        out = None if value is None else self.fn(value)
        _materialize(ctx, self.store_name, key, out)
        self.forward(key, out, ctx)


class StreamTableJoinNode(Node):
    """``stream.join(table)`` / ``stream.left_join(table)`` (Kafka Streams' KStreamKTableJoinProcessor): each
    stream record looks its key up in the table's store as it is when the record is processed; table updates
    emit nothing. Inner: no table value, no output. Left: ``joiner(value, None)``. A stream record with a None
    value is dropped (``dropped_records_null_value_total``); one with a None key is dropped by the inner join
    (``dropped_records_null_key_total``) and joined with None by the left join, as Kafka Streams 3.7+ does
    (KIP-962)."""

    __slots__ = ("store_name", "joiner", "left")

    def __init__(self, store_name: str, joiner: Callable[[Any, Any], Any], left: bool):
        super().__init__()
        self.store_name, self.joiner, self.left = store_name, joiner, left

    def process(self, key: Any, value: Any, ctx: Any) -> None:
        if value is None:
            ctx.metrics.dropped_null_value += 1
            return
        if key is None:
            if not self.left:
                ctx.metrics.dropped_null_key += 1
                return
            self.forward(key, self.joiner(value, None), ctx)
            return
        other = ctx.store(self.store_name).get(key)
        if other is None and not self.left:
            return
        self.forward(key, self.joiner(value, other), ctx)


def join_result(kind: str, joiner: Callable[[Any, Any], Any], left: Any, right: Any) -> Any:
    """The table-table join's value for a key whose sides are ``left`` and ``right`` (None: absent), or None
    when the key has no result: inner needs both sides, left the left one, outer either."""
    if kind == INNER:
        present = left is not None and right is not None
    elif kind == LEFT:
        present = left is not None
    else:
        present = left is not None or right is not None
    return joiner(left, right) if present else None


class TableTableJoinNode(Node):
    """One side of a table-table join (Kafka Streams' KTableKTableJoin and its left and outer variants): an
    update of this side's table (already in its store) is joined with the other side's current value
    (``other_store``), ``joiner(left, right)``. The result is kept in ``result_store`` and forwarded; when the
    key has no result any more (inner: a side deleted; left: the left side deleted; outer: both) and it had one,
    the result is deleted and a tombstone forwarded; when it had none, nothing is forwarded."""

    __slots__ = ("is_left", "other_store", "result_store", "joiner", "kind")

    def __init__(self, is_left: bool, other_store: str, result_store: str, joiner: Callable[[Any, Any], Any],
                 kind: str):
        super().__init__()
        self.is_left, self.other_store, self.result_store = is_left, other_store, result_store
        self.joiner, self.kind = joiner, kind

    def process(self, key: Any, value: Any, ctx: Any) -> None:
        if key is None:
            ctx.metrics.dropped_null_key += 1
            return
        other = ctx.store(self.other_store).get(key)
        left, right = (value, other) if self.is_left else (other, value)
        result = join_result(self.kind, self.joiner, left, right)
        store = ctx.store(self.result_store)
        if result is None:
            if store.get(key) is None:
                return
            store.delete(key)
        else:
            store.put(key, result)
        self.forward(key, result, ctx)
