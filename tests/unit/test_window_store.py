"""Windowed stores, RocksDB and in memory, behind the store contract: bytes, expiry and purge, queries,
restore through RestoreTarget (restore batches, flushes), reopening, the uncommitted overlay, snapshots."""
from __future__ import annotations

import random
import struct

import pytest

from hotstate import serde
from hotstate.errors import StoreCorruptedError
from hotstate.state.overlay import Overlay
from hotstate.state.rocksdb_store import RocksDBBackend, read_stored_offset
from hotstate.state.store import StoreSpec
from hotstate.state.window_memory import WindowMemoryBackend
from hotstate.state.window_rocksdb import WindowRocksDBBackend
from hotstate.state.window_store import WindowStore, window_key, window_value

RETENTION = 1_000


def i64(n: int) -> bytes:
    return struct.pack(">q", n)


@pytest.fixture(params=["window-memory", "window-rocksdb"])
def wbackend(request, tmp_path):
    b = (WindowMemoryBackend("w", RETENTION) if request.param == "window-memory"
         else WindowRocksDBBackend("w", str(tmp_path / "w"), RETENTION))
    yield b
    b.close()


def view(backend) -> WindowStore:
    kind = "window-memory" if isinstance(backend, WindowMemoryBackend) else "window-rocksdb"
    spec = StoreSpec("w", serde.STRING, serde.INT64, kind, backend.retention_ms)
    return WindowStore(spec, Overlay(backend))


def entry(key: str, start: int, ts: int, value: int) -> tuple[bytes, bytes]:
    return window_key(key.encode(), start), window_value(ts, i64(value))


def stored(backend) -> dict[tuple[bytes, int], tuple[int, int]]:
    """Everything the backend holds: (key bytes, start) -> (event time, value)."""
    return {(k[:-8], struct.unpack(">q", k[-8:])[0]): (struct.unpack(">q", v[:8])[0], struct.unpack(">q", v[8:])[0])
            for k, v in backend.range(None, None)}


def test_store_bytes_are_key_then_start_and_time_then_value():
    assert window_key(b"user-1", 120_000) == b"user-1" + b"\x00\x00\x00\x00\x00\x01\xd4\xc0"
    assert window_value(7, b"v") == b"\x00" * 7 + b"\x07" + b"v"


def test_writes_move_stream_time_and_purge_expired_windows(wbackend):
    assert wbackend.stream_time() is None
    wbackend.write([entry("a", 0, 10, 1), entry("b", 500, 600, 2), entry("a", 900, 950, 3)], 3)
    assert wbackend.stream_time() == 950 and wbackend.changelog_offset() == 3
    assert set(stored(wbackend)) == {(b"a", 0), (b"b", 500), (b"a", 900)}
    # Stream time 1000: window 0 is expired (0 <= 1000 - 1000) and purged; a write of an expired window is skipped.
    wbackend.write([entry("c", 1_000, 1_000, 4), entry("late", 0, 5, 9)], 5)
    assert wbackend.stream_time() == 1_000
    assert set(stored(wbackend)) == {(b"b", 500), (b"a", 900), (b"c", 1_000)}
    wbackend.write([entry("d", 1_400, 1_499, 5)], 6)  # 1499 - 1000 = 499: 500 is still live
    assert set(stored(wbackend)) == {(b"b", 500), (b"a", 900), (b"c", 1_000), (b"d", 1_400)}
    wbackend.write([entry("d", 1_400, 1_500, 6)], 7)
    assert set(stored(wbackend)) == {(b"a", 900), (b"c", 1_000), (b"d", 1_400)}
    assert stored(wbackend)[(b"d", 1_400)] == (1_500, 6)
    wbackend.write([(window_key(b"a", 900), None)], 8)  # a tombstone deletes
    assert set(stored(wbackend)) == {(b"c", 1_000), (b"d", 1_400)}
    with pytest.raises(RuntimeError, match="backwards"):
        wbackend.write([], 7)


def test_queries_read_through_the_overlay_and_hide_expired_windows(wbackend):
    store = view(wbackend)
    store.put("a", 0, 1, timestamp_ms=10)
    store.put("a", 200, 2, timestamp_ms=250)
    store.put("ab", 100, 3, timestamp_ms=150)  # another key whose bytes sort among "a"'s windows
    store.put("b", 200, 4, timestamp_ms=260)
    assert wbackend.changelog_offset() is None  # nothing reached the backend: the overlay holds it
    assert store.fetch("a", 0, 1_000) == [(0, 1), (200, 2)]
    assert store.fetch("a", 1, 200) == [(200, 2)]
    assert store.fetch("ab", 0, 1_000) == [(100, 3)]
    assert store.fetch_all(0, 1_000) == [("a", 0, 1), ("ab", 100, 3), ("a", 200, 2), ("b", 200, 4)]
    assert store.fetch_all(150, 200) == [("a", 200, 2), ("b", 200, 4)]
    assert store.get_with_timestamp("a", 200) == (2, 250)
    wbackend.write(store._overlay.entries(), 4)
    store._overlay.clear()
    store.put("c", 1_000, 5, timestamp_ms=1_050)  # uncommitted, yet it moves the view's stream time: 0 expires
    assert store.stream_time() == 1_050 and wbackend.stream_time() == 260
    assert store.fetch("a", 0, 2_000) == [(200, 2)]
    assert store.get("a", 0) is None
    assert store.fetch_all(0, 2_000) == [("ab", 100, 3), ("a", 200, 2), ("b", 200, 4), ("c", 1_000, 5)]
    store.uncommitted_dropped()  # an aborted transaction: the overlay goes, and so does its stream time
    store._overlay.clear()
    assert store.stream_time() == 260 and store.fetch("a", 0, 2_000) == [(0, 1), (200, 2)]


def reference_live(records: list[tuple[str, int, int, int]], retention: int) -> dict:
    latest, st = {}, None
    for key, start, ts, value in records:
        st = ts if st is None else max(st, ts)
        latest[(key.encode(), start)] = (ts, value)
    return {w: v for w, v in latest.items() if w[1] > st - retention}, st


def test_queries_refuse_bad_bounds_with_a_clear_error(wbackend):
    store = view(wbackend)
    with pytest.raises(ValueError, match="from_ms='0' is invalid"):
        store.fetch("a", "0", 10)
    with pytest.raises(ValueError, match="to_ms=None is invalid"):
        store.fetch_all(0, None)
    assert store.fetch("a", 10, 0) == []  # an empty range is not an error


@pytest.mark.parametrize("bulk", [False, True])
def test_restore_through_the_contract_skips_and_purges_expired_windows(wbackend, bulk):
    if bulk:  # RocksDB's bulk-load options (a reopen at begin_restore and at end_restore); memory has none
        wbackend.BULK_RESTORE_RECORDS_MIN = 1
    rng = random.Random(11)
    records = []
    for i in range(3_000):
        ts = i * 2 + rng.randint(-400, 0)  # time moves on, out of order by up to 400 ms
        ts = max(ts, 0)
        start = ts // 100 * 100
        records.append((rng.choice("abcdef"), start, ts, i))
    wbackend.begin_restore(len(records))
    offset = 0
    for chunk in range(0, len(records), 500):
        batch = wbackend.restore_batch()
        for key, start, ts, value in records[chunk:chunk + 500]:
            k, v = entry(key, start, ts, value)
            batch.put(k, v)
        offset += len(records[chunk:chunk + 500])
        wbackend.write_restore_batch(batch, offset)
    wbackend.request_restore_flush()
    while not wbackend.restore_flushed():
        pass
    wbackend.end_restore()
    live, st = reference_live(records, RETENTION)
    assert wbackend.stream_time() == st and wbackend.changelog_offset() == len(records)
    assert stored(wbackend) == live
    assert view(wbackend).fetch("a", 0, 10**9) == sorted((s, v) for (k, s), (t, v) in live.items() if k == b"a")


def test_reset_drops_data_offset_and_stream_time(wbackend):
    wbackend.write([entry("a", 0, 10, 1)], 1)
    wbackend.reset()
    assert wbackend.changelog_offset() is None and wbackend.stream_time() is None
    assert list(wbackend.range(None, None)) == []
    wbackend.write([entry("a", 0, 5, 1)], 1)  # usable again, from nothing
    assert wbackend.stream_time() == 5


def test_rocksdb_window_store_keeps_offset_stream_time_and_index_across_reopen(tmp_path):
    path = str(tmp_path / "w")
    b = WindowRocksDBBackend("w", path, RETENTION)
    b.write([entry("a", 0, 10, 1), entry("b", 300, 320, 2)], 2)
    b.close()
    assert read_stored_offset("w", path) == 2  # the CLI and snapshots read a windowed store's offset too
    b = WindowRocksDBBackend("w", path, RETENTION)
    try:
        assert (b.changelog_offset(), b.stream_time()) == (2, 320)
        b.write([entry("c", 1_200, 1_250, 3)], 3)  # purges via the index written before the reopen
        assert set(stored(b)) == {(b"b", 300), (b"c", 1_200)}
    finally:
        b.close()


def test_a_key_value_store_and_a_windowed_store_do_not_open_each_other(tmp_path):
    kv = RocksDBBackend("s", str(tmp_path / "kv"))
    kv.write([(b"k", b"v")], 1)
    kv.close()
    with pytest.raises(StoreCorruptedError, match="unknown format"):
        WindowRocksDBBackend("s", str(tmp_path / "kv"), RETENTION)
    w = WindowRocksDBBackend("w", str(tmp_path / "w"), RETENTION)
    w.write([entry("a", 0, 1, 1)], 1)
    w.close()
    with pytest.raises(Exception):
        RocksDBBackend("w", str(tmp_path / "w"))


def test_rocksdb_window_store_snapshot_is_adopted_with_its_stream_time(tmp_path):
    b = WindowRocksDBBackend("w", str(tmp_path / "w"), RETENTION)
    b.write([entry("a", 150, 150, 1), entry("b", 900, 990, 2)], 7)
    assert b.checkpoint(str(tmp_path / "cp"))
    b.close()
    other = WindowRocksDBBackend("w", str(tmp_path / "w2"), RETENTION)
    try:
        other.open_from_files(str(tmp_path / "cp"))
        assert (other.changelog_offset(), other.stream_time()) == (7, 990)
        assert set(stored(other)) == {(b"a", 150), (b"b", 900)}
        other.write([entry("c", 1_100, 1_100, 3)], 8)
        assert set(stored(other)) == {(b"a", 150), (b"b", 900), (b"c", 1_100)}  # 150 > 1100 - 1000
        other.write([entry("c", 1_100, 1_150, 4)], 9)
        assert set(stored(other)) == {(b"b", 900), (b"c", 1_100)}
    finally:
        other.close()


def test_fetch_all_reads_the_time_range_only_and_merges_the_overlay(wbackend):
    wbackend.write([entry(k, s, s, n) for n, (k, s) in enumerate([("a", 0), ("b", 100), ("a", 200), ("c", 300)])], 4)
    assert [(k[:-8], v[8:]) for k, v in wbackend.windows_between(100, 250)] == [(b"b", i64(1)), (b"a", i64(2))]
    assert list(wbackend.windows_between(301, 10_000)) == []
    store = view(wbackend)
    store.put("b", 100, None, timestamp_ms=310)  # deleted in the overlay
    store.put("a", 200, 9, timestamp_ms=310)  # changed in the overlay
    store.put("d", 150, 4, timestamp_ms=310)  # new in the overlay
    assert store.fetch_all(100, 300) == [("d", 150, 4), ("a", 200, 9), ("c", 300, 3)]


def test_queries_on_a_closed_window_store_raise_store_closed(wbackend):
    from hotstate.errors import StoreClosedError
    wbackend.write([entry("a", 0, 5, 1)], 1)
    store = view(wbackend)
    store.mark_closed()
    for query in (lambda: store.fetch("a", 0, 10), lambda: store.fetch_all(0, 10), lambda: store.get("a", 0)):
        with pytest.raises(StoreClosedError):
            query()


def test_windowed_restores_switch_to_the_bulk_options_from_20000_records(tmp_path):
    """Issue #11's restore work: a windowed store's restore takes RocksDB's bulk-load options (vector memtable)
    from 20,000 records (a key-value store from 100,000): bench/restore.py --windowed restores ~50,000 a
    partition, where the processing options' skip list made the data puts the larger part of the restore."""
    small = WindowRocksDBBackend("w", str(tmp_path / "small"), RETENTION)
    big = WindowRocksDBBackend("w", str(tmp_path / "big"), RETENTION)
    kv = RocksDBBackend("kv", str(tmp_path / "kv"))
    try:
        small.begin_restore(19_999)
        big.begin_restore(20_000)
        kv.begin_restore(20_000)
        assert (small._bulk, big._bulk, kv._bulk) == (False, True, False)
        big.restore([entry("a", 0, 10, 1)], 1)
        big.end_restore()  # back to the processing options, the data kept
        assert not big._bulk and stored(big) == {(b"a", 0): (10, 1)} and big.changelog_offset() == 1
    finally:
        for b in (small, big, kv):
            b.close()
