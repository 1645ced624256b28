"""Windowed aggregations: ``GroupedStream.windowed_by(windows)`` -> TimeWindowedStream -> WindowedTable
(Kafka Streams' TimeWindowedKStream and the windowed KTable it builds)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from .. import serde as _serde
from ..errors import TopologyError
from ..serde import Serde
from ..state.backend import MEMORY, ROCKSDB, SESSION_MEMORY, SESSION_ROCKSDB, WINDOW_MEMORY, WINDOW_ROCKSDB
from ..state.store import StoreSpec
from ..windows import SessionWindows, SlidingWindows, TimeWindows
from .aggregations import Aggregations
from .nodes import SessionAggregateNode, SlidingAggregateNode, SuppressNode, WindowAggregateNode

if TYPE_CHECKING:
    from .stream import Stream

# What a store kind the user names becomes for a windowed aggregation, and for a session aggregation.
_WINDOWED_KIND = {ROCKSDB: WINDOW_ROCKSDB, MEMORY: WINDOW_MEMORY, WINDOW_ROCKSDB: WINDOW_ROCKSDB,
                  WINDOW_MEMORY: WINDOW_MEMORY}
_SESSION_KIND = {ROCKSDB: SESSION_ROCKSDB, MEMORY: SESSION_MEMORY, SESSION_ROCKSDB: SESSION_ROCKSDB,
                 SESSION_MEMORY: SESSION_MEMORY}


def window_store_spec(store: str | StoreSpec, key_serde: Serde, value_serde: Serde, windows: Any,
                      kinds: dict[str, str] = _WINDOWED_KIND) -> StoreSpec:
    """The windowed store of an aggregation: the user's name and kind ("rocksdb" or "memory", made windowed
    or session by ``kinds``), the aggregation's serdes, the windows' retention."""
    if isinstance(store, StoreSpec):
        kind = kinds.get(store.kind)
        if kind is None:
            what = "sessions" if kinds is _SESSION_KIND else "windows"
            raise TopologyError(f"store {store.name!r}: kind={store.kind!r} cannot hold {what}; use 'rocksdb' or "
                                "'memory'")
        return StoreSpec(store.name, key_serde, value_serde, kind, windows.retention_ms)
    if not isinstance(store, str):
        raise TopologyError(f"store must be a name or a hotstate.StoreSpec, got {type(store).__name__}")
    return StoreSpec(store, key_serde, value_serde, kinds[ROCKSDB], windows.retention_ms)


def windowed_stream(stream: "Stream", windows: Any) -> "TimeWindowedStream | SessionWindowedStream":
    """What ``GroupedStream.windowed_by(windows)`` returns for each kind of windows."""
    if isinstance(windows, SessionWindows):
        return SessionWindowedStream(stream, windows)
    return TimeWindowedStream(stream, windows)


class TimeWindowedStream(Aggregations):
    """A grouped stream cut into time windows (tumbling, hopping or sliding): ``count`` / ``aggregate`` /
    ``reduce`` per (key, window). Sliding windows' keys are ``Windowed(key, start, start + time_difference_ms)``
    with both ends inclusive (Kafka Streams' sliding windows)."""

    def __init__(self, stream: "Stream", windows: TimeWindows | SlidingWindows):
        if not isinstance(windows, (TimeWindows, SlidingWindows)):
            raise TopologyError("windowed_by() takes windows from hotstate.windows (tumbling(...), hopping(...), "
                                f"sliding(...), session(...)), got {type(windows).__name__}")
        self._stream = stream
        self.windows = windows

    def _aggregate(self, store: str | StoreSpec, value_serde: Serde,
                   update: Callable[[Any, Any, Any], Any]) -> "WindowedTable":
        from .stream import Stream
        s = self._stream
        assert s.key_serde is not None
        spec = window_store_spec(store, s.key_serde, value_serde, self.windows)
        s._topology.claim_store(s._sub, spec, "windowed_by(...).aggregate()")
        node: WindowAggregateNode | SlidingAggregateNode
        if isinstance(self.windows, SlidingWindows):
            node = SlidingAggregateNode(spec.name, self.windows, update)
        else:
            node = WindowAggregateNode(spec.name, self.windows, update)
        s._node.children.append(node)
        key_serde = _serde.time_windowed(s.key_serde, self.windows.size_ms)
        return WindowedTable(Stream(s._topology, s._sub, node, key_serde, value_serde), spec, self.windows)


def suppress_ms(windows: Any) -> int:
    """How long after a window's end its result is final (Kafka Streams' GraphGraceSearchUtil): the grace, and for
    sessions the inactivity gap too (a session may still grow until then)."""
    if isinstance(windows, SessionWindows):
        return windows.inactivity_gap_ms + windows.grace_ms
    return windows.grace_ms


class WindowedTable:
    """The result of a windowed aggregation: a table keyed by ``hotstate.Windowed(key, start_ms, end_ms)``."""

    def __init__(self, updates: "Stream", store: StoreSpec, windows: Any):
        self._updates = updates
        self.store = store
        self.windows = windows

    def suppress_until_window_closes(self, buffer_store: str | StoreSpec | None = None) -> "SuppressedTable":
        """One final result per window, emitted once stream time reaches ``window end + grace`` (for sessions:
        ``session end + inactivity gap + grace``), as Kafka Streams' ``suppress(untilWindowCloses(unbounded()))``.

        The suppression buffer is a key-value store with a changelog, so it survives restarts and rebalances
        under both guarantees: ``buffer_store`` names it (default ``<store>-suppress``, RocksDB) or is a
        StoreSpec giving name and kind ("rocksdb" or "memory"; its serdes are the buffer's own). It is
        unbounded: it holds every window not yet closed. Where Kafka Streams' rule emits a sliding window or a
        session that can still change, so does this (docs/architecture.md, "Final results")."""
        from .stream import Stream
        s = self._updates
        name = f"{self.store.name}-suppress"
        kind = ROCKSDB
        if isinstance(buffer_store, StoreSpec):
            name, kind = buffer_store.name, buffer_store.kind
            if kind not in (ROCKSDB, MEMORY):
                raise TopologyError(f"store {name!r}: kind={kind!r} cannot be a suppression buffer; use 'rocksdb' "
                                    "or 'memory'")
        elif isinstance(buffer_store, str):
            name = buffer_store
        elif buffer_store is not None:
            raise TopologyError("buffer_store must be a name or a hotstate.StoreSpec, got "
                                f"{type(buffer_store).__name__}")
        assert s.key_serde is not None and s.value_serde is not None
        if name in s._topology.store_specs():
            raise TopologyError(f"store {name!r} already exists: a suppression buffer needs a store of its own "
                                "(suppress a table once, or pass buffer_store=)")
        spec = StoreSpec(name, _serde.BYTES, _serde.BYTES, kind)
        s._topology.add_store(s._sub, spec)
        node = SuppressNode(spec.name, self.store.name, suppress_ms(self.windows), s.key_serde, s.value_serde)
        s._node.children.append(node)
        return SuppressedTable(Stream(s._topology, s._sub, node, s.key_serde, s.value_serde), spec, self.windows)

    def to_stream(self) -> "Stream":
        """The stream of the table's updates: one record per change of a window's aggregate, keyed by
        ``hotstate.Windowed``. Its key serde is ``serde.time_windowed(key serde, size)`` (Kafka Streams'
        time-windowed key bytes), ``serde.session_windowed(key serde)`` for sessions; ``to(topic,
        key_serde=...)`` takes another serde of Windowed keys. Sessions merged away are tombstones (value None)."""
        return self._updates


class SessionWindowedStream:
    """A grouped stream cut into sessions (Kafka Streams' SessionWindowedKStream): ``count`` / ``aggregate`` /
    ``reduce`` per (key, session), in a session store."""

    def __init__(self, stream: "Stream", windows: SessionWindows):
        self._stream = stream
        self.windows = windows

    def _aggregate(self, store: str | StoreSpec, value_serde: Serde, initializer: Callable[[], Any],
                   aggregator: Callable[[Any, Any, Any], Any],
                   merger: Callable[[Any, Any, Any], Any]) -> "WindowedTable":
        from .stream import Stream
        s = self._stream
        assert s.key_serde is not None
        spec = window_store_spec(store, s.key_serde, value_serde, self.windows, _SESSION_KIND)
        s._topology.claim_store(s._sub, spec, "windowed_by(session).aggregate()")
        node = SessionAggregateNode(spec.name, self.windows, initializer, aggregator, merger)
        s._node.children.append(node)
        key_serde = _serde.session_windowed(s.key_serde)
        return WindowedTable(Stream(s._topology, s._sub, node, key_serde, value_serde), spec, self.windows)

    def count(self, store: str | StoreSpec) -> "WindowedTable":
        """Records per key and session; records with a None key are dropped (and counted in a metric)."""
        return self._aggregate(store, _serde.INT64, lambda: 0, lambda k, v, agg: agg + 1, lambda k, a, b: a + b)

    def aggregate(self, initializer: Callable[[], Any], aggregator: Callable[[Any, Any, Any], Any],
                  merger: Callable[[Any, Any, Any], Any], store: str | StoreSpec,
                  value_serde: Serde = _serde.JSON) -> "WindowedTable":
        """``aggregator(key, value, aggregate) -> new aggregate`` per session, starting from ``initializer()``;
        ``merger(key, agg1, agg2) -> aggregate`` combines the sessions a record joins."""
        for name, fn in (("initializer", initializer), ("aggregator", aggregator), ("merger", merger)):
            if not callable(fn):
                raise TopologyError(f"session aggregate(): {name} must be callable, got {type(fn).__name__}")
        return self._aggregate(store, value_serde, initializer, aggregator, merger)

    def reduce(self, reducer: Callable[[Any, Any], Any], store: str | StoreSpec) -> "WindowedTable":
        """``reducer(aggregate, value) -> new aggregate`` per session; also merges sessions a record joins."""
        vs = self._stream.value_serde
        if vs is None:
            raise TopologyError("reduce() needs a known value serde: reduce before changing the value type")

        def merge(k: Any, agg: Any, other: Any) -> Any:  # Kafka Streams' mergerForAggregator(reduce aggregator)
            return other if agg is None else reducer(agg, other)
        return self._aggregate(store, vs, lambda: None, lambda k, v, agg: merge(k, agg, v), merge)


class SuppressedTable:
    """A windowed table's final results (``WindowedTable.suppress_until_window_closes``): ``to_stream()`` has
    one record per window, after it closed. ``buffer`` is the suppression buffer's store."""

    def __init__(self, updates: "Stream", buffer: StoreSpec, windows: Any):
        self._updates = updates
        self.buffer = buffer
        self.windows = windows

    def to_stream(self) -> "Stream":
        """The final results, keyed by ``hotstate.Windowed`` (the same key serde as the table's updates)."""
        return self._updates
