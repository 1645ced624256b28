"""Processor nodes of a sub-topology. Nodes hold no per-task state: a task passes its context."""
from __future__ import annotations

from typing import Any, Callable, Iterable

from .. import serde as _serde
from ..records import Record
from ..serde import Serde


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
    __slots__ = ("topic", "key_serde", "value_serde")

    def __init__(self, topic: str, key_serde: Serde, value_serde: Serde):
        super().__init__()
        self.topic, self.key_serde, self.value_serde = topic, key_serde, value_serde

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


class SinkNode(Node):
    __slots__ = ("topic", "key_serde", "value_serde")

    def __init__(self, topic: str, key_serde: Serde, value_serde: Serde):
        super().__init__()
        self.topic, self.key_serde, self.value_serde = topic, key_serde, value_serde

    def process(self, key: Any, value: Any, ctx: Any) -> None:
        ctx.send(self.topic, _serde.dumps(self.key_serde, key), _serde.dumps(self.value_serde, value))
