"""Global tables (Kafka Streams' GlobalKTable) and stream-globaltable joins.

``app.global_table(topic, ...)`` declares a ``GlobalTable``: every instance holds the whole topic in a local
store, bootstrapped before processing starts and kept current by the global thread
(runtime/global_thread.py). It is not part of any sub-topology: no task, no assignment, no changelog.

``stream.join(global_table, key_selector=, joiner=)`` / ``left_join`` (Kafka Streams'
``KStream#join(GlobalKTable, KeyValueMapper, ValueJoiner)``): each stream record looks up
``key_selector(key, value)`` in the local store, so neither co-partitioning nor a repartition is needed. The
record keeps its key and timestamp; its value becomes ``joiner(value, table_value)``.

Dropped, as Kafka Streams' KStreamKTableJoinProcessor drops them: a record with a null value (a stream's null
value is "no message", not a deletion), counted in ``dropped_records_null_value_total``; for the inner join,
a record whose selected key is None or absent from the table (the None key counted in
``dropped_records_null_key_total``). The left join calls ``joiner(value, None)`` for both. A ``key_selector``
or ``joiner`` that raises fails the record like any user code (``processing_exception_handler``).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from ..errors import TopologyError
from ..serde import Serde
from .nodes import Node

if TYPE_CHECKING:
    from ..state.global_store import GlobalStore, GlobalKeyValueView
    from ..state.store import StoreSpec
    from .stream import Stream


class GlobalTable:
    """A table holding the whole of ``topic`` on every instance (``App.global_table``). Join streams with it
    (``Stream.join`` / ``Stream.left_join`` with a ``key_selector``) and query it (``App.store(store_name)``)."""

    def __init__(self, topic: str, spec: "StoreSpec", app_id: str):
        self.topic = topic
        self.store = spec
        self.key_serde: Serde = spec.key_serde
        self.value_serde: Serde = spec.value_serde
        self._app_id = app_id
        # The live store, set when the app (or the test driver) opens it; None before start and after close.
        self.live: "GlobalStore | None" = None
        self.view: "GlobalKeyValueView | None" = None

    def attach(self, store: "GlobalStore | None") -> None:
        from ..state.global_store import GlobalKeyValueView
        self.live = store
        self.view = None if store is None else GlobalKeyValueView(store)

    def __repr__(self) -> str:
        return f"GlobalTable({self.topic!r}, store={self.store.name!r})"


class GlobalJoinNode(Node):
    """Looks each record up in a global table; see the module docstring for what is dropped."""

    __slots__ = ("table", "key_selector", "joiner", "left")

    def __init__(self, table: GlobalTable, key_selector: Callable[[Any, Any], Any],
                 joiner: Callable[[Any, Any], Any], left: bool):
        super().__init__()
        self.table, self.key_selector, self.joiner, self.left = table, key_selector, joiner, left

    def process(self, key: Any, value: Any, ctx: Any) -> None:
        if value is None:
            ctx.metrics.dropped_null_value += 1
            return
        table_key = self.key_selector(key, value)
        if table_key is None:
            if not self.left:
                ctx.metrics.dropped_null_key += 1
                return
            self.forward(key, self.joiner(value, None), ctx)
            return
        view = self.table.view
        if view is None:
            raise RuntimeError(f"global table {self.table.store.name!r} is not open (the app opens it at start)")
        found = view.get(table_key)
        if found is None and not self.left:
            return
        self.forward(key, self.joiner(value, found), ctx)


def join_global(stream: "Stream", table: GlobalTable, key_selector: Any, joiner: Any, left: bool) -> "Stream":
    """``Stream.join`` / ``left_join`` with a GlobalTable: checks the arguments at build time."""
    op = "left_join" if left else "join"
    if table._app_id != stream._topology.app_id:
        raise TopologyError(f"{op}(): the global table {table!r} belongs to another app")
    if key_selector is None:
        raise TopologyError(
            f"{op}() with global table {table.store.name!r}: a global table is joined by key_selector=, a function "
            "(key, value) -> the table's key for this record (e.g. key_selector=lambda k, v: v['country']); "
            "it needs no co-partitioning")
    if not callable(key_selector):
        raise TopologyError(f"{op}() with global table {table.store.name!r}: key_selector must be a function "
                            f"(key, value) -> table key, got {type(key_selector).__name__}")
    if joiner is None or not callable(joiner):
        raise TopologyError(f"{op}() with global table {table.store.name!r}: joiner must be a function "
                            f"(stream_value, table_value) -> new value, got {type(joiner).__name__}")
    node = GlobalJoinNode(table, key_selector, joiner, left)
    return stream._then(node, stream.key_serde, None, stream._key_changed)
