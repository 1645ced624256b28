"""Windowed stores as processors and interactive queries see them, and the bytes they are made of.

One entry per (key, window): the store key is the key's bytes followed by the window start, 8 bytes big-endian
signed (Kafka Streams' time-windowed key, ``serde.time_windowed``); the store value is the event time of the
window's last update, 8 bytes big-endian signed, followed by the value's bytes (Kafka Streams' timestamped
store value, ``ValueAndTimestamp``). Changelog records are these same bytes, with the event time as their
Kafka timestamp. Layouts on disk: ``window_rocksdb.py``, ``window_memory.py``; docs/formats.md.

Retention: a window whose start is at or below ``stream time - retention_ms`` is expired: never served, and
purged by the backend. A window store's stream time is the largest event time it was written (it moves on
when the window's updates commit; the view adds its uncommitted writes).
"""
from __future__ import annotations

import struct
from typing import Any, Callable, Iterator, TypeVar

from ..errors import StoreClosedError
from .backend import WindowBackend
from .overlay import Overlay
from .store import StoreSpec

TIME = struct.Struct(">q")
TIME_BYTES = TIME.size

T = TypeVar("T")


def window_key(key: bytes, start_ms: int) -> bytes:
    return key + TIME.pack(start_ms)


def split_window_key(raw: bytes) -> tuple[bytes, int]:
    """(key bytes, window start) of a store key. ValueError for fewer than 8 bytes."""
    if len(raw) < TIME_BYTES:
        raise ValueError(f"a windowed store key has at least {TIME_BYTES} bytes, got {len(raw)}")
    return raw[:-TIME_BYTES], TIME.unpack_from(raw, len(raw) - TIME_BYTES)[0]


def window_value(timestamp_ms: int, value: bytes) -> bytes:
    return TIME.pack(timestamp_ms) + value


def value_timestamp(raw: bytes) -> int:
    """The event time of a store value. ValueError for fewer than 8 bytes."""
    if len(raw) < TIME_BYTES:
        raise ValueError(f"a windowed store value has at least {TIME_BYTES} bytes, got {len(raw)}")
    return TIME.unpack_from(raw)[0]


def key_timestamp(raw: bytes) -> int:
    """The time a windowed store's key ends with (a window's start; a session store's: the session end), at
    least 0: the timestamp of a tombstone in the changelog. ValueError for fewer than 8 bytes."""
    if len(raw) < TIME_BYTES:
        raise ValueError(f"a windowed store key has at least {TIME_BYTES} bytes, got {len(raw)}")
    return max(0, TIME.unpack_from(raw, len(raw) - TIME_BYTES)[0])


def expired(start_ms: int, stream_time_ms: int | None, retention_ms: int) -> bool:
    return stream_time_ms is not None and start_ms <= stream_time_ms - retention_ms


def check_time_range(from_ms: object, to_ms: object) -> None:
    """Bad query bounds get a clear error (ValueError) instead of a failure deep in the byte encoding."""
    for name, value in (("from_ms", from_ms), ("to_ms", to_ms)):
        if not isinstance(value, int) or isinstance(value, bool):
            raise ValueError(f"{name}={value!r} is invalid: give a time in milliseconds (an int)")


def live_from(stream_time_ms: int | None, retention_ms: int) -> int | None:
    """The smallest window start still served, or None when every start is (nothing written yet)."""
    return None if stream_time_ms is None else stream_time_ms - retention_ms + 1


class TimeOrderedStore:
    """What windowed and session stores share: a backend with a stream time and expiry (``WindowBackend``), the
    overlay, read-your-writes of the stream time, and reads that raise StoreClosedError once the task closed it.

    Interactive queries read through the same object; once the task closes it (``mark_closed``) every read
    raises StoreClosedError, as :class:`~hotstate.state.store.KeyValueStore` does."""

    def __init__(self, spec: StoreSpec, overlay: Overlay):
        assert spec.retention_ms is not None
        self.spec = spec
        self.name = spec.name
        self.retention_ms = spec.retention_ms
        self._overlay = overlay
        self._ks = spec.key_serde
        self._vs = spec.value_serde
        self._closed = False
        self._put_max: int | None = None  # the largest event time put through this view

    def mark_closed(self) -> None:
        self._closed = True

    def _read(self, fn: Callable[[], T]) -> T:
        if self._closed:
            raise StoreClosedError.of(self.name)
        try:
            return fn()
        except StoreClosedError:
            raise
        except Exception as exc:
            if self._closed:
                raise StoreClosedError.of(self.name) from exc
            raise

    def _backend(self) -> WindowBackend:
        return self._overlay.backend  # type: ignore[return-value]

    def uncommitted_dropped(self) -> None:
        """The overlay was cleared without reaching the backend (an aborted transaction, a lost task)."""
        self._put_max = None

    def _put_time(self, timestamp_ms: int) -> None:
        if self._put_max is None or timestamp_ms > self._put_max:
            self._put_max = timestamp_ms

    def stream_time(self) -> int | None:
        """The largest event time written to this store (committed or not); None before the first write."""
        committed = self._read(lambda: self._backend().stream_time())
        mine = self._put_max
        if committed is None:
            return mine
        return committed if mine is None else max(committed, mine)

    def _scan(self, lo: bytes | None, hi: bytes | None) -> Iterator[tuple[bytes, bytes]]:
        if self._closed:
            raise StoreClosedError.of(self.name)
        try:
            for entry in self._overlay.range(lo, hi):
                if self._closed:
                    raise StoreClosedError.of(self.name)
                yield entry
        except StoreClosedError:
            raise
        except Exception as exc:
            if self._closed:
                raise StoreClosedError.of(self.name) from exc
            raise

    def approximate_num_entries(self) -> int:
        return self._read(lambda: self._overlay.backend.approximate_num_entries())


class WindowStore(TimeOrderedStore):
    """A task's windowed store: get / put per (key, window start), fetch over a time range, read-your-writes."""

    def get_with_timestamp(self, key: Any, start_ms: int) -> tuple[Any, int] | None:
        """(value, event time of its last update) of the window of ``key`` starting at ``start_ms``, or None.
        Expired windows read as None."""
        raw_key = window_key(self._ks.serialize(key), start_ms)
        raw = self._read(lambda: self._overlay.get(raw_key))
        if raw is None or expired(start_ms, self.stream_time(), self.retention_ms):
            return None
        return self._vs.deserialize(raw[TIME_BYTES:]), value_timestamp(raw)

    def get(self, key: Any, start_ms: int) -> Any:
        found = self.get_with_timestamp(key, start_ms)
        return None if found is None else found[0]

    def put(self, key: Any, start_ms: int, value: Any, timestamp_ms: int) -> None:
        """Writes the window's value; ``timestamp_ms`` is the update's event time (the changelog record's
        timestamp). A value of None deletes the window."""
        raw_key = window_key(self._ks.serialize(key), start_ms)
        if value is None:
            self._overlay.put(raw_key, None)
            return
        self._overlay.put(raw_key, window_value(timestamp_ms, self._vs.serialize(value)))
        self._put_time(timestamp_ms)

    def fetch(self, key: Any, from_ms: int, to_ms: int) -> list[tuple[int, Any]]:
        """[(window start, value)] of ``key``'s live windows whose start is in [from_ms, to_ms], by start."""
        return [(start, value) for start, value, _ in self.fetch_with_timestamps(key, from_ms, to_ms)]

    def fetch_with_timestamps(self, key: Any, from_ms: int, to_ms: int) -> list[tuple[int, Any, int]]:
        """[(window start, value, event time of its last update)] of ``key``'s live windows whose start is in
        [from_ms, to_ms], by start."""
        check_time_range(from_ms, to_ms)
        kb = self._ks.serialize(key)
        lo_ms = from_ms
        bound = live_from(self.stream_time(), self.retention_ms)
        if bound is not None:
            lo_ms = max(lo_ms, bound)
        if lo_ms > to_ms:
            return []
        width = len(kb) + TIME_BYTES
        lo, hi = window_key(kb, max(lo_ms, 0)), window_key(kb, to_ms)
        out = []
        for raw_key, raw in self._scan(lo, hi):
            # Keys of other lengths sort in between (b"a" + start vs b"a\x00" + start): only this key's entries.
            if len(raw_key) == width and raw_key.startswith(kb):
                out.append((split_window_key(raw_key)[1], self._vs.deserialize(raw[TIME_BYTES:]), value_timestamp(raw)))
        return out

    def fetch_all(self, from_ms: int, to_ms: int) -> list[tuple[Any, int, Any]]:
        """[(key, window start, value)] of every live window whose start is in [from_ms, to_ms], sorted by
        (window start, key bytes)."""
        check_time_range(from_ms, to_ms)
        bound = live_from(self.stream_time(), self.retention_ms)
        lo_ms = from_ms if bound is None else max(from_ms, bound)
        if lo_ms > to_ms:
            return []
        dirty = self._overlay.entries()  # a copy: the processing thread may write on meanwhile
        committed = self._read(lambda: list(self._backend().windows_between(lo_ms, to_ms)))
        found: dict[bytes, bytes | None] = dict(committed)
        for raw_key, raw in dirty:
            if lo_ms <= split_window_key(raw_key)[1] <= to_ms:
                found[raw_key] = raw  # the overlay wins; None: deleted
        if self._closed:
            raise StoreClosedError.of(self.name)
        windows = sorted((split_window_key(k)[1], k[:-TIME_BYTES], v) for k, v in found.items() if v is not None)
        return [(self._ks.deserialize(kb), start, self._vs.deserialize(raw[TIME_BYTES:])) for start, kb, raw in windows]


class ReadOnlyTimeOrderedStore:
    def __init__(self, name: str, stores: list[Any]):
        self.name = name
        self._stores = stores

    def approximate_num_entries(self) -> int:
        return sum(s.approximate_num_entries() for s in self._stores)


class ReadOnlyWindowStore(ReadOnlyTimeOrderedStore):
    """An interactive-query view of one windowed store over the instance's active tasks (see
    :class:`~hotstate.state.store.ReadOnlyStore` for what reads see and when they raise StoreClosedError)."""

    def fetch(self, key: Any, from_ms: int, to_ms: int) -> list[tuple[int, Any]]:
        """[(window start, value)] of ``key``'s windows whose start is in [from_ms, to_ms], sorted by start;
        windows older than the store's retention (relative to its stream time) are not served."""
        check_time_range(from_ms, to_ms)
        out = [entry for store in self._stores for entry in store.fetch(key, from_ms, to_ms)]
        out.sort(key=lambda e: e[0])
        return out

    def fetch_all(self, from_ms: int, to_ms: int) -> list[tuple[Any, int, Any]]:
        """[(key, window start, value)] of every window whose start is in [from_ms, to_ms], sorted by window
        start (then by the key's bytes within a task)."""
        check_time_range(from_ms, to_ms)
        out = [entry for store in self._stores for entry in store.fetch_all(from_ms, to_ms)]
        out.sort(key=lambda e: e[1])
        return out
