"""``count`` / ``aggregate`` / ``reduce`` in terms of one update function, shared by the grouped stream
(dsl/stream.py) and the time-windowed stream (dsl/windowed.py): each turns its arguments into
``update(key, value, old_aggregate) -> new_aggregate`` and hands it to the class's ``_aggregate``."""
from __future__ import annotations

from typing import Any, Callable

from .. import serde as _serde
from ..errors import TopologyError
from ..serde import Serde
from ..state.store import StoreSpec


class Aggregations:
    """Mixed into a class with ``_stream`` (its input) and ``_aggregate(store, value_serde, update)``."""

    _stream: Any

    def _aggregate(self, store: str | StoreSpec, value_serde: Serde, update: Callable[[Any, Any, Any], Any]) -> Any:
        raise NotImplementedError

    def count(self, store: str | StoreSpec) -> Any:
        """Records per key (and window); records with a None key are dropped (and counted in a metric)."""
        return self._aggregate(store, _serde.INT64, lambda k, v, old: 1 if old is None else old + 1)

    def aggregate(self, initializer: Callable[[], Any], aggregator: Callable[[Any, Any, Any], Any],
                  store: str | StoreSpec, value_serde: Serde = _serde.JSON) -> Any:
        """``aggregator(key, value, aggregate) -> new aggregate`` per key (and window), starting from
        ``initializer()``."""
        def update(k: Any, v: Any, old: Any) -> Any:
            return aggregator(k, v, initializer() if old is None else old)
        return self._aggregate(store, value_serde, update)

    def reduce(self, reducer: Callable[[Any, Any], Any], store: str | StoreSpec) -> Any:
        """``reducer(aggregate, value) -> new aggregate``; the first value of a key (and window) is its
        aggregate."""
        vs = self._stream.value_serde
        if vs is None:
            raise TopologyError("reduce() needs a known value serde: reduce before changing the value type")
        return self._aggregate(store, vs, lambda k, v, old: v if old is None else reducer(old, v))
