"""Session stores as processors and interactive queries see them (Kafka Streams' ``SessionStore``), and the
bytes they are made of.

One entry per session: the store key is the key's bytes, then the session start, then its end (both inclusive,
8 bytes big-endian signed each); the store value is the session's event time (its end: the largest timestamp
of its records), 8 bytes, followed by the aggregate's bytes, as in windowed stores. The backends are the
windowed ones (state/window_rocksdb.py, state/window_memory.py) under their own format (``session-1``,
docs/formats.md): they take the last 8 bytes of a key as the time they order and expire by, which here is the
session end. A session is expired once ``end <= stream time - retention_ms``: never served, and purged.

Changelog records are these same bytes, stamped with the session end (the retention-aware restore depends on
it); a session merged into a larger one is deleted (a tombstone in the changelog).
"""
from __future__ import annotations

from typing import Any

from ..errors import StoreClosedError
from .window_store import TIME, TIME_BYTES, ReadOnlyTimeOrderedStore, TimeOrderedStore, check_time_range, window_value

_MAX_TIME = 2**63 - 1
SESSION_SUFFIX = 2 * TIME_BYTES


def session_key(key: bytes, start_ms: int, end_ms: int) -> bytes:
    return key + TIME.pack(start_ms) + TIME.pack(end_ms)


def split_session_key(raw: bytes) -> tuple[bytes, int, int]:
    """(key bytes, start, end) of a session store key. ValueError for fewer than 16 bytes."""
    if len(raw) < SESSION_SUFFIX:
        raise ValueError(f"a session store key has at least {SESSION_SUFFIX} bytes, got {len(raw)}")
    n = len(raw) - SESSION_SUFFIX
    return raw[:n], TIME.unpack_from(raw, n)[0], TIME.unpack_from(raw, n + TIME_BYTES)[0]


class SessionStore(TimeOrderedStore):
    """A task's session store: the sessions of a key that a new record may join (``find_sessions``), put and
    remove, and queries over time; read-your-writes."""

    def _live(self, end_ms: int, stream_time_ms: int | None) -> bool:
        return stream_time_ms is None or end_ms > stream_time_ms - self.retention_ms

    def find_sessions(self, key: Any, earliest_end_ms: int, latest_start_ms: int) -> list[tuple[int, int, Any]]:
        """[(start, end, value)] of ``key``'s live sessions with ``end >= earliest_end_ms`` and ``start <=
        latest_start_ms``, by start (Kafka Streams' ``SessionStore.findSessions``). Reads the key's sessions that
        start at or before ``latest_start_ms`` (a key's live sessions are few: they expire by their end)."""
        if latest_start_ms < 0:
            return []
        kb = self._ks.serialize(key)
        st = self.stream_time()
        width = len(kb) + SESSION_SUFFIX
        lo, hi = session_key(kb, 0, 0), session_key(kb, latest_start_ms, _MAX_TIME)
        out = []
        for raw_key, raw in self._scan(lo, hi):
            # Keys of other lengths sort in between (b"a" + times vs b"a\x00" + times): only this key's entries.
            if len(raw_key) != width or not raw_key.startswith(kb):
                continue
            _, start, end = split_session_key(raw_key)
            if end >= earliest_end_ms and self._live(end, st):
                out.append((start, end, self._vs.deserialize(raw[TIME_BYTES:])))
        return out

    def put(self, key: Any, start_ms: int, end_ms: int, value: Any) -> None:
        """Writes the session ``[start_ms, end_ms]``; its event time (the changelog record's timestamp) is its
        end. A value of None removes it."""
        if not 0 <= start_ms <= end_ms:
            raise ValueError(f"a session needs 0 <= start_ms <= end_ms, got [{start_ms}, {end_ms}]")
        raw_key = session_key(self._ks.serialize(key), start_ms, end_ms)
        if value is None:
            self._overlay.put(raw_key, None)
            return
        self._overlay.put(raw_key, window_value(end_ms, self._vs.serialize(value)))
        self._put_time(end_ms)

    def remove(self, key: Any, start_ms: int, end_ms: int) -> None:
        self.put(key, start_ms, end_ms, None)

    def fetch(self, key: Any, from_ms: int, to_ms: int) -> list[tuple[int, int, Any]]:
        """[(start, end, value)] of ``key``'s live sessions that overlap [from_ms, to_ms] (``end >= from_ms`` and
        ``start <= to_ms``), sorted by start."""
        check_time_range(from_ms, to_ms)
        return self.find_sessions(key, from_ms, to_ms)

    def fetch_all(self, from_ms: int, to_ms: int) -> list[tuple[Any, int, int, Any]]:
        """[(key, start, end, value)] of every live session that overlaps [from_ms, to_ms], sorted by (start,
        end, key bytes)."""
        check_time_range(from_ms, to_ms)
        st = self.stream_time()
        lo_ms = from_ms if st is None else max(from_ms, st - self.retention_ms + 1)
        dirty = self._overlay.entries()  # a copy: the processing thread may write on meanwhile
        # The backend orders sessions by end: those ending at or after lo_ms, then filtered by start.
        committed = self._read(lambda: list(self._backend().windows_between(lo_ms, _MAX_TIME)))
        found: dict[bytes, bytes | None] = dict(committed)
        for raw_key, raw in dirty:
            found[raw_key] = raw  # the overlay wins; None: deleted
        if self._closed:
            raise StoreClosedError.of(self.name)
        out = []
        for raw_key, raw in found.items():
            if raw is None:
                continue
            kb, start, end = split_session_key(raw_key)
            if end >= lo_ms and start <= to_ms:
                out.append((start, end, kb, raw))
        out.sort(key=lambda e: (e[0], e[1], e[2]))
        return [(self._ks.deserialize(kb), s, e, self._vs.deserialize(raw[TIME_BYTES:])) for s, e, kb, raw in out]


class ReadOnlySessionStore(ReadOnlyTimeOrderedStore):
    """An interactive-query view of one session store over the instance's active tasks (see
    :class:`~hotstate.state.store.ReadOnlyStore` for what reads see and when they raise StoreClosedError)."""

    def fetch(self, key: Any, from_ms: int, to_ms: int) -> list[tuple[int, int, Any]]:
        """[(start, end, value)] of ``key``'s sessions that overlap [from_ms, to_ms] (``end >= from_ms``,
        ``start <= to_ms``; both ends of a session inclusive), sorted by start; sessions that ended at or before
        the store's stream time minus its retention are not served."""
        check_time_range(from_ms, to_ms)
        out = [entry for store in self._stores for entry in store.fetch(key, from_ms, to_ms)]
        out.sort(key=lambda e: (e[0], e[1]))
        return out

    def fetch_all(self, from_ms: int, to_ms: int) -> list[tuple[Any, int, int, Any]]:
        """[(key, start, end, value)] of every session that overlaps [from_ms, to_ms], sorted by (start, end)."""
        check_time_range(from_ms, to_ms)
        out = [entry for store in self._stores for entry in store.fetch_all(from_ms, to_ms)]
        out.sort(key=lambda e: (e[1], e[2]))
        return out
