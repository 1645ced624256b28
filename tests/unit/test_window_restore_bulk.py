"""The windowed RocksDB store's bulk restore path (``WindowRestoreBatch.take`` + ``apply_taken``, what the
changelog reader uses) against its record-by-record ``put`` / ``delete``: after every batch write the same
windows, the same time index and the same stream time."""
from __future__ import annotations

import struct

import pytest
from confluent_kafka import Message
from hypothesis import given, settings
from hypothesis import strategies as st

from hotstate.state.window_rocksdb import WindowRocksDBBackend, WindowRestoreBatch
from hotstate.state.window_store import window_key, window_value

RETENTION = 1_000


def state(b: WindowRocksDBBackend) -> tuple:
    return (dict(b.range(None, None)), list(b._time.keys()), b.stream_time(), b.changelog_offset())


def message(key: bytes, value: bytes | None, offset: int) -> Message:
    return Message(topic="c", partition=0, offset=offset, key=key, value=value)


# (key, window start, event time, value; None: a tombstone). Times mostly >= 0, now and then negative.
record = st.tuples(st.sampled_from([b"a", b"b", b"c", b""]), st.integers(-50, 3_000), st.integers(-50, 3_000),
                   st.one_of(st.none(), st.integers(0, 9)))


@settings(max_examples=60, deadline=None)
@given(batches=st.lists(st.lists(record, min_size=1, max_size=40), min_size=1, max_size=6),
       deletes=st.booleans(), bulk=st.booleans())
def test_taken_messages_leave_the_same_store_as_puts(tmp_path_factory, batches, deletes, bulk):
    d = tmp_path_factory.mktemp("bulk")
    each, taken = (WindowRocksDBBackend("w", str(d / name), RETENTION) for name in ("each", "taken"))
    try:
        if bulk:  # the bulk-load options (vector memtable) on both
            for b in (each, taken):
                b.BULK_RESTORE_RECORDS_MIN = 1
                b.begin_restore(1)
        offset = 0
        for records in batches:
            ones, bulks = each.restore_batch(), taken.restore_batch()
            assert isinstance(bulks, WindowRestoreBatch)
            for key, start, ts, value in records:
                k = window_key(key, start)
                v = None if (value is None and deletes) else window_value(ts, struct.pack(">q", value or 0))
                if v is None:
                    ones.delete(k)
                else:
                    ones.put(k, v)
                bulks.take(message(k, v, offset))
                offset += 1
            each.write_restore_batch(ones, offset)
            taken.write_restore_batch(bulks, offset)
            assert state(taken) == state(each)
        for b in (each, taken):
            b.end_restore()
        assert state(taken) == state(each)
    finally:
        each.close()
        taken.close()


def test_a_window_that_expires_within_the_batch_is_not_written(tmp_path):
    """The bulk path checks expiry against the batch's final stream time: window 0 (live when its record
    comes, expired by the batch's last one) is not written at all; record by record it is written and purged
    after the write. Both leave the store without it."""
    b = WindowRocksDBBackend("w", str(tmp_path / "w"), RETENTION)
    try:
        batch = b.restore_batch()
        batch.take(message(window_key(b"a", 0), window_value(10, b"x" * 8), 0))
        batch.take(message(window_key(b"b", 900), window_value(1_500, b"y" * 8), 1))
        batch.apply_taken()
        assert batch.native.len() == 2  # one window, data and index: window 0 was never put
        b.write_restore_batch(batch, 2)
        assert dict(b.range(None, None)) == {window_key(b"b", 900): window_value(1_500, b"y" * 8)}
        assert b.stream_time() == 1_500
    finally:
        b.close()


def test_a_short_value_fails_as_a_put_does(tmp_path):
    b = WindowRocksDBBackend("w", str(tmp_path / "w"), RETENTION)
    try:
        batch = b.restore_batch()
        batch.take(message(window_key(b"a", 0), b"short", 0))
        with pytest.raises(ValueError, match="at least 8 bytes"):
            b.write_restore_batch(batch, 1)
    finally:
        b.close()


def test_puts_after_taken_messages_keep_the_changelog_order(tmp_path):
    b = WindowRocksDBBackend("w", str(tmp_path / "w"), RETENTION)
    try:
        batch = b.restore_batch()
        k = window_key(b"a", 100)
        batch.take(message(k, window_value(100, b"1" * 8), 0))
        batch.delete(k)  # applies the taken message first
        b.write_restore_batch(batch, 2)
        assert dict(b.range(None, None)) == {}
    finally:
        b.close()
