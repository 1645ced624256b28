"""Session stores, RocksDB and in memory, behind the store contract: the key bytes, expiry and purge by
session end, queries through the overlay, restore through RestoreTarget, reopening, the format."""
from __future__ import annotations

import struct

import pytest

from hotstate import serde
from hotstate.errors import StoreCorruptedError
from hotstate.state.overlay import Overlay
from hotstate.state.rocksdb_store import read_stored_offset
from hotstate.state.session_store import SessionStore, session_key, split_session_key
from hotstate.state.store import StoreSpec
from hotstate.state.window_memory import WindowMemoryBackend
from hotstate.state.window_rocksdb import SessionRocksDBBackend, WindowRocksDBBackend
from hotstate.state.window_store import window_value

RETENTION = 1_000


def i64(n: int) -> bytes:
    return struct.pack(">q", n)


@pytest.fixture(params=["session-memory", "session-rocksdb"])
def sbackend(request, tmp_path):
    b = (WindowMemoryBackend("s", RETENTION) if request.param == "session-memory"
         else SessionRocksDBBackend("s", str(tmp_path / "s"), RETENTION))
    yield b
    b.close()


def view(backend) -> SessionStore:
    kind = "session-memory" if isinstance(backend, WindowMemoryBackend) else "session-rocksdb"
    return SessionStore(StoreSpec("s", serde.STRING, serde.INT64, kind, RETENTION), Overlay(backend))


def entry(key: str, start: int, end: int, value: int) -> tuple[bytes, bytes]:
    return session_key(key.encode(), start, end), window_value(end, i64(value))


def held(backend) -> set[tuple[bytes, int, int]]:
    return {split_session_key(k) for k, _ in backend.range(None, None)}


def test_session_key_bytes_are_key_then_start_then_end():
    assert session_key(b"u", 5, 7) == b"u" + i64(5) + i64(7)
    assert split_session_key(b"u" + i64(5) + i64(7)) == (b"u", 5, 7)
    with pytest.raises(ValueError, match="at least 16 bytes"):
        split_session_key(b"x" * 15)


def test_writes_expire_sessions_by_their_end_and_purge_them(sbackend):
    sbackend.write([entry("a", 0, 600, 1), entry("b", 100, 100, 2), entry("c", 50, 200, 3)], 3)
    assert sbackend.stream_time() == 600 and sbackend.changelog_offset() == 3
    # Stream time 1200: [100, 100] and [50, 200] ended at or below 200 = 1200 - 1000: purged; [0, 600] is live
    # though it started long before (expiry goes by the end).
    sbackend.write([entry("d", 1_150, 1_200, 4), entry("late", 10, 150, 9)], 5)
    assert held(sbackend) == {(b"a", 0, 600), (b"d", 1_150, 1_200)}
    sbackend.write([(session_key(b"a", 0, 600), None)], 6)  # a merged session's tombstone deletes it
    assert held(sbackend) == {(b"d", 1_150, 1_200)}
    assert [split_session_key(k) for k, _ in sbackend.windows_between(0, 2**62)] == [(b"d", 1_150, 1_200)]


def test_queries_find_overlapping_sessions_through_the_overlay(sbackend):
    store = view(sbackend)
    store.put("a", 0, 100, 1)
    store.put("a", 300, 450, 2)
    store.put("ab", 120, 130, 3)  # another key whose bytes sort among "a"'s sessions
    sbackend.write(Overlay.entries(store._overlay), 3)
    store._overlay.clear()
    store.put("a", 600, 600, 4)  # uncommitted
    store.remove("a", 300, 450)  # uncommitted delete
    assert store.fetch("a", 0, 10_000) == [(0, 100, 1), (600, 600, 4)]
    assert store.fetch("a", 100, 599) == [(0, 100, 1)]  # end 100 >= 100
    assert store.fetch("a", 101, 599) == []
    assert store.find_sessions("a", 550, 650) == [(600, 600, 4)]
    assert store.fetch_all(0, 10_000) == [("a", 0, 100, 1), ("ab", 120, 130, 3), ("a", 600, 600, 4)]
    store.put("b", 1_150, 1_150, 5)  # stream time 1150 (uncommitted): [0, 100] expired, hidden at once
    assert store.fetch("a", 0, 10_000) == [(600, 600, 4)]
    assert store.stream_time() == 1_150
    with pytest.raises(ValueError, match="from_ms"):
        store.fetch("a", "0", 1)
    with pytest.raises(ValueError, match="0 <= start_ms <= end_ms"):
        store.put("a", 10, 5, 1)


def test_restore_batches_skip_expired_sessions_and_keep_stream_time(tmp_path):
    b = SessionRocksDBBackend("s", str(tmp_path / "s"), RETENTION)
    batch = b.restore_batch()
    for e in (entry("a", 0, 100, 1), entry("b", 500, 1_500, 2), entry("c", 450, 501, 3), entry("d", 50, 90, 4)):
        batch.put(*e)
    batch.delete(session_key(b"b", 500, 1_500))
    b.write_restore_batch(batch, 4)
    b.end_restore()
    assert b.stream_time() == 1_500 and held(b) == {(b"c", 450, 501)}
    b.close()
    b = SessionRocksDBBackend("s", str(tmp_path / "s"), RETENTION)  # reopened: offset, stream time, data
    assert (b.changelog_offset(), b.stream_time(), held(b)) == (4, 1_500, {(b"c", 450, 501)})
    b.close()
    assert read_stored_offset("s", str(tmp_path / "s")) == 4  # session-1 is a known format
    with pytest.raises(StoreCorruptedError, match="unknown format b'session-1'"):
        WindowRocksDBBackend("s", str(tmp_path / "s"), RETENTION)  # a window store refuses a session store's files


def test_a_checkpoint_of_a_session_store_is_adopted_with_its_offset_and_stream_time(tmp_path):
    b = SessionRocksDBBackend("s", str(tmp_path / "s"), RETENTION)
    b.write([entry("a", 100, 150, 1), entry("b", 600, 990, 2)], 7)
    assert b.checkpoint(str(tmp_path / "cp"))
    b.close()
    other = SessionRocksDBBackend("s", str(tmp_path / "s2"), RETENTION)
    try:
        other.open_from_files(str(tmp_path / "cp"))
        assert (other.changelog_offset(), other.stream_time()) == (7, 990)
        assert held(other) == {(b"a", 100, 150), (b"b", 600, 990)}
        other.write([entry("c", 1_100, 1_150, 3)], 8)  # 150 <= 1150 - 1000: [100, 150] expires by its end
        assert held(other) == {(b"b", 600, 990), (b"c", 1_100, 1_150)}
    finally:
        other.close()
    window_store = WindowRocksDBBackend("w", str(tmp_path / "w"), RETENTION)
    try:
        with pytest.raises(StoreCorruptedError, match="format"):  # a window store refuses a session checkpoint
            window_store.open_from_files(str(tmp_path / "s2"))
    finally:
        window_store.close()
