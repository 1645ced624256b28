"""live_restore.live_start: where a windowed store's restore starts, from the newest known event time, the
retention and the broker's time lookup (a stand-in answering offsets_for_times: the decision is pure logic; the
seek against a real changelog is tests/integration/test_windowed_restore_kafka.py)."""
from __future__ import annotations

from confluent_kafka import TopicPartition as KTopicPartition

from hotstate import serde
from hotstate.records import TopicPartition
from hotstate.runtime.live_restore import TAIL_OFFSETS, live_start, newest_committed_timestamp
from hotstate.runtime.task import TaskStore
from hotstate.state.overlay import Overlay
from hotstate.state.store import StoreSpec
from hotstate.state.window_memory import WindowMemoryBackend
from hotstate.state.window_store import WindowStore, window_key, window_value

RETENTION = 1_000


class Lookup:
    """Answers offsets_for_times with ``offset`` (or an error) and records the asked timestamps."""

    def __init__(self, offset: int, error: object = None):
        self.offset, self.error, self.asked = offset, error, []

    def offsets_for_times(self, tps, timeout):
        self.asked.extend(tp.offset for tp in tps)
        tp = KTopicPartition(tps[0].topic, tps[0].partition, self.offset)
        if self.error is not None:
            tp = type("Failed", (), {"offset": -1, "error": self.error})()
        return [tp]


def store(stream_time: int | None = None) -> TaskStore:
    spec = StoreSpec("w", serde.STRING, serde.INT64, "window-memory", RETENTION)
    backend = WindowMemoryBackend("w", RETENTION)
    if stream_time is not None:
        backend.write([(window_key(b"k", stream_time), window_value(stream_time, b"\0" * 8))], 10)
    overlay = Overlay(backend)
    return TaskStore(spec, TopicPartition("app-w-changelog", 0), backend, overlay, WindowStore(spec, overlay),
                     lambda: backend)


def test_seeks_to_the_first_record_at_newest_minus_retention_plus_one():
    lookup = Lookup(700)
    assert live_start(store(), 0, 1_000, 50_000, lookup, 1.0) == 700
    assert lookup.asked == [50_000 - RETENTION + 1]


def test_the_stored_stream_time_counts_when_it_is_newer_than_the_tail():
    lookup = Lookup(400)
    assert live_start(store(stream_time=60_000), 10, 1_000, 50_000, lookup, 1.0) == 400
    assert lookup.asked == [60_000 - RETENTION + 1]


def test_never_before_where_it_would_start_anyway():
    assert live_start(store(), 300, 1_000, 50_000, Lookup(120), 1.0) == 300


def test_no_record_at_or_after_the_target_means_everything_is_expired():
    assert live_start(store(stream_time=60_000), 10, 1_000, None, Lookup(-1), 1.0) == 1_000


def test_without_a_known_newest_time_or_with_a_failed_lookup_it_reads_from_the_start():
    lookup = Lookup(700)
    assert live_start(store(), 5, 1_000, None, lookup, 1.0) == 5 and lookup.asked == []
    assert live_start(store(), 5, 1_000, 500, lookup, 1.0) == 5 and lookup.asked == []  # target <= 0
    assert live_start(store(), 5, 1_000, 50_000, Lookup(700, error="UNKNOWN"), 1.0) == 5


class TailConsumer:
    """A stand-in consumer for newest_committed_timestamp: serves records (timestamp = offset * 10) from the
    assigned offset to ``end``, and records where it was assigned."""

    class Msg:
        def __init__(self, ts: int):
            self.ts = ts

        def error(self):
            return None

        def timestamp(self):
            return (1, self.ts)

    def __init__(self, end: int):
        self.end, self.position_, self.assigned = end, None, []

    def assign(self, tps):
        self.assigned.append(tps[0].offset)
        self.position_ = tps[0].offset

    def consume(self, n, timeout):
        msgs = [self.Msg(o * 10) for o in range(self.position_, min(self.end, self.position_ + n))]
        self.position_ += len(msgs)
        return msgs

    def position(self, tps):
        return [KTopicPartition(tps[0].topic, tps[0].partition, self.position_)]

    def unassign(self):
        pass


def test_the_tail_read_covers_the_last_tail_offsets_only():
    """Issue #11's restore work: the newest timestamp comes from the last 100 offsets (was 500: 1% of the live
    records of bench/restore.py --windowed); a shorter changelog is read from its start."""
    assert TAIL_OFFSETS == 100
    consumer = TailConsumer(end=10_000)
    assert newest_committed_timestamp(consumer, "c", 0, 0, 10_000, timeout_s=1.0) == 9_999 * 10
    assert consumer.assigned == [10_000 - TAIL_OFFSETS]
    short = TailConsumer(end=60)
    assert newest_committed_timestamp(short, "c", 0, 5, 60, timeout_s=1.0) == 590
    assert short.assigned == [5]
