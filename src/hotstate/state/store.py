"""Typed stores: what processors and interactive queries see."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Iterator

from .. import serde as _serde
from ..errors import StoreClosedError
from ..serde import Serde
from .backend import MEMORY, ROCKSDB, WINDOW_MEMORY, WINDOW_ROCKSDB, backend_kind, backend_kinds  # noqa: F401
from .overlay import Overlay

_STORE_NAME = re.compile(r"[A-Za-z0-9._-]{1,200}")


@dataclass(frozen=True)
class StoreSpec:
    """A store a processor uses. ``kind`` is "rocksdb" (persistent) or "memory", or another kind registered
    with ``state.backend.register_backend``. A windowed aggregation turns "rocksdb" / "memory" into the windowed
    kinds "window-rocksdb" / "window-memory" (a session aggregation: "session-rocksdb" / "session-memory"),
    which need ``retention_ms`` (the windows' retention)."""

    name: str
    key_serde: Serde = _serde.BYTES
    value_serde: Serde = _serde.JSON
    kind: str = ROCKSDB
    retention_ms: int | None = None
    # A table's store (``app.table``): its changelog is this source topic (Kafka Streams' source-topic
    # optimisation): no changelog topic is created or written; the store's offset is the topic's next offset.
    source_topic: str | None = None

    def __post_init__(self) -> None:
        from ..errors import ConfigError

        kinds = backend_kinds()
        if self.kind not in kinds:
            raise ConfigError(f"store {self.name!r}: kind={self.kind!r} is invalid; use one of "
                              + ", ".join(repr(k) for k in kinds))
        if not isinstance(self.name, str) or not _STORE_NAME.fullmatch(self.name) or self.name.startswith("."):
            raise ConfigError(f"store name {self.name!r} is invalid: it names a directory and a topic, so use "
                              "letters, digits, '.', '_' or '-', not starting with '.'")
        for what in ("key_serde", "value_serde"):
            if not isinstance(getattr(self, what), Serde):
                raise ConfigError(f"store {self.name!r}: {what} must be a hotstate serde, "
                                  f"got {type(getattr(self, what)).__name__}")
        if self.windowed:
            r = self.retention_ms
            if not isinstance(r, int) or isinstance(r, bool) or r <= 0:
                raise ConfigError(f"store {self.name!r}: a windowed store (kind={self.kind!r}) needs retention_ms, "
                                  f"a positive integer; got {r!r}")
        elif self.retention_ms is not None:
            raise ConfigError(f"store {self.name!r}: retention_ms is for windowed stores; kind={self.kind!r} is a "
                              "key-value store")

    @property
    def windowed(self) -> bool:
        return backend_kind(self.kind).windowed

    def changelog_topic(self, app_id: str) -> str:
        """The topic the store is restored from: ``<app_id>-<name>-changelog``, or a table's source topic."""
        return self.source_topic if self.source_topic is not None else f"{app_id}-{self.name}-changelog"

    @property
    def sessions(self) -> bool:
        """A session store (windowed too: a retention, a stream time, the same changelog settings)."""
        return backend_kind(self.kind).sessions

    def backend_options(self) -> dict[str, Any]:
        """Keyword arguments of the kind's backend factory (``BackendKind.open``)."""
        return {"retention_ms": self.retention_ms} if self.windowed else {}


class KeyValueStore:
    """A task's store as its processors see it: get / put / delete / range, read-your-writes.

    Interactive queries read through the same object. Once its task closes the store (``mark_closed``, before
    the backend closes), every read raises StoreClosedError, including a read already inside the backend when
    the close came (the backend's own error, such as rocksdict's DbClosedError, is not passed on) and an
    iteration under way."""

    def __init__(self, spec: StoreSpec, overlay: Overlay):
        self.spec = spec
        self.name = spec.name
        self._overlay = overlay
        self._ks = spec.key_serde
        self._vs = spec.value_serde
        self._closed = False

    def mark_closed(self) -> None:
        """The task is closing this store: reads raise StoreClosedError from now on. Called before the backend
        closes, so a read that fails in the backend meanwhile is seen to be one on a closed store."""
        self._closed = True

    @property
    def write_generation(self) -> int:
        """Changes whenever the uncommitted writes are cleared (committed, or dropped by a rewind): a processor
        may rely on what it learned of the store's content, plus its own writes since, while this stays the same."""
        return self._overlay.generation

    def _closed_error(self) -> StoreClosedError:
        return StoreClosedError.of(self.name)

    def get(self, key: Any) -> Any:
        raw_key = self._ks.serialize(key)
        if self._closed:
            raise self._closed_error()
        try:
            raw = self._overlay.get(raw_key)
        except Exception as exc:
            if self._closed:
                raise self._closed_error() from exc
            raise
        return None if raw is None else self._vs.deserialize(raw)

    def put(self, key: Any, value: Any) -> None:
        self._overlay.put(self._ks.serialize(key), _serde.dumps(self._vs, value))

    def delete(self, key: Any) -> None:
        self._overlay.put(self._ks.serialize(key), None)

    def range(self, from_key: Any = None, to_key: Any = None) -> Iterator[tuple[Any, Any]]:
        """Entries with from_key <= key <= to_key in the order of their serialized bytes."""
        lo = None if from_key is None else self._ks.serialize(from_key)
        hi = None if to_key is None else self._ks.serialize(to_key)
        if self._closed:
            raise self._closed_error()
        try:
            for k, v in self._overlay.range(lo, hi):
                if self._closed:  # a RocksDB iterator keeps a closed database alive and would go on
                    raise self._closed_error()
                yield self._ks.deserialize(k), self._vs.deserialize(v)
        except StoreClosedError:
            raise
        except Exception as exc:
            if self._closed:
                raise self._closed_error() from exc
            raise

    def all(self) -> Iterator[tuple[Any, Any]]:
        return self.range()

    def approximate_num_entries(self) -> int:
        """The backend's estimate of its committed entries; StoreClosedError once the store is closed."""
        if self._closed:
            raise self._closed_error()
        try:
            return self._overlay.backend.approximate_num_entries()
        except Exception as exc:
            if self._closed:
                raise self._closed_error() from exc
            raise


class ReadOnlyStore:
    """An interactive-query view of one store over all the instance's active tasks.

    Reads see committed state plus the writes of the current commit interval. No guarantee of a
    consistent snapshot across keys; a key held by no local task reads as None. Once one of the tasks it
    covers closes (moved away by a rebalance, the app closing), every read raises StoreClosedError (Kafka
    Streams: InvalidStateStoreException): ask ``App.store`` again once the app is RUNNING."""

    def __init__(self, name: str, stores: list[KeyValueStore]):
        self.name = name
        self._stores = stores

    def get(self, key: Any) -> Any:
        for store in self._stores:
            value = store.get(key)
            if value is not None:
                return value
        return None

    def all(self) -> Iterator[tuple[Any, Any]]:
        for store in self._stores:
            yield from store.all()

    def range(self, from_key: Any = None, to_key: Any = None) -> Iterator[tuple[Any, Any]]:
        """The entries with ``from_key <= key <= to_key`` (serialized order; None: unbounded), task by task:
        sorted within each task's part, not across tasks (as Kafka Streams' composite store)."""
        for store in self._stores:
            yield from store.range(from_key, to_key)

    def approximate_num_entries(self) -> int:
        return sum(s.approximate_num_entries() for s in self._stores)
