"""A global table's store: the whole of its topic on every instance (Kafka Streams' global state stores).

The source topic is the store's changelog, so the store keeps one backend per partition of the topic, each
with that partition's offset inside it (the same contract as every store, state/backend.py): a restart reads
each partition from its own stored offset, and no changelog topic is created. Persistent backends live in
``<state_dir>/<app_id>/global/<store>/<partition>`` (docs/formats.md).

Reads go over the partitions: ``get`` asks each partition's backend until one holds the key. A key is expected
in one partition (any key-hash partitioner puts it there); if records of one key were written to several
partitions, the lowest partition that holds it answers. ``range`` merges the partitions in key order.

Writers: only the global thread (runtime/global_thread.py), or the test driver. Readers: the stream thread
(joins) and interactive queries, concurrently; a reader sees each partition's writes batch by batch.
"""
from __future__ import annotations

import heapq
import logging
import os
from typing import Any, Iterator

from ..errors import StoreClosedError, StoreCorruptedError
from .backend import StoreBackend, backend_kind
from .rocksdb_store import wipe_path
from .store import StoreSpec

log = logging.getLogger(__name__)

GLOBAL_DIR = "global"


def global_store_path(root: str, store: str, partition: int) -> str:
    return os.path.join(root, GLOBAL_DIR, store, str(partition))


class GlobalStore:
    """The byte-level store of one global table: ``backends[p]`` holds partition p of ``topic``."""

    def __init__(self, spec: StoreSpec, topic: str, partitions: int, root: str | None):
        self.spec = spec
        self.name = spec.name
        self.topic = topic
        kind = backend_kind(spec.kind)
        if kind.windowed:
            raise ValueError(f"global store {spec.name}: kind={spec.kind!r} is windowed; a global table is a "
                             "key-value store ('rocksdb' or 'memory')")
        self.persistent = kind.persistent and root is not None
        self._closed = False
        self.backends: list[StoreBackend] = []
        try:
            for p in range(partitions):
                self.backends.append(self._open(kind, p, root))
        except BaseException:
            self.close()
            raise

    def _open(self, kind: Any, partition: int, root: str | None) -> StoreBackend:
        if not kind.persistent or root is None:
            return kind.open(self.name, None, None)
        path = global_store_path(root, self.name, partition)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        try:
            return kind.open(self.name, path, None)
        except StoreCorruptedError as exc:
            log.warning("global store %s partition %d at %s is damaged (%s); wiping it: it is read again from "
                        "%s", self.name, partition, path, exc, self.topic)
            wipe_path(path)
            return kind.open(self.name, path, None)

    # ---- reads (any thread) ----
    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosedError(f"global store {self.name} is closed (the app is closing or closed)")

    def get(self, key: bytes) -> bytes | None:
        self._check_open()
        for backend in self.backends:
            value = backend.get(key)
            if value is not None:
                return value
        return None

    def range(self, lo: bytes | None, hi: bytes | None) -> Iterator[tuple[bytes, bytes]]:
        """Keys in [lo, hi] of every partition, in byte order (a key held by two partitions comes twice)."""
        self._check_open()
        if len(self.backends) == 1:
            yield from self.backends[0].range(lo, hi)
            return
        yield from heapq.merge(*(b.range(lo, hi) for b in self.backends), key=lambda kv: kv[0])

    def approximate_num_entries(self) -> int:
        self._check_open()
        return sum(b.approximate_num_entries() for b in self.backends)

    def offsets(self) -> dict[int, int | None]:
        """Partition -> the next offset of the topic the store would apply (None: nothing stored)."""
        return {p: b.changelog_offset() for p, b in enumerate(self.backends)}

    # ---- lifecycle ----
    def close(self) -> None:
        """Durable and closed; reads raise StoreClosedError from now on. Idempotent."""
        self._closed = True
        for backend in self.backends:
            try:
                backend.close()
            except Exception:
                log.exception("closing global store %s failed", self.name)


class GlobalKeyValueView:
    """The typed read view of a global store (what ``App.store`` and joins read): get / range / all."""

    def __init__(self, store: GlobalStore):
        self._store = store
        self.name = store.name
        self._ks = store.spec.key_serde
        self._vs = store.spec.value_serde

    def get(self, key: Any) -> Any:
        raw = self._store.get(self._ks.serialize(key))
        return None if raw is None else self._vs.deserialize(raw)

    def range(self, from_key: Any = None, to_key: Any = None) -> Iterator[tuple[Any, Any]]:
        lo = None if from_key is None else self._ks.serialize(from_key)
        hi = None if to_key is None else self._ks.serialize(to_key)
        for k, v in self._store.range(lo, hi):
            yield self._ks.deserialize(k), self._vs.deserialize(v)

    def all(self) -> Iterator[tuple[Any, Any]]:
        return self.range()

    def approximate_num_entries(self) -> int:
        return self._store.approximate_num_entries()
