"""The retention-aware restore of windowed stores (issue #11): start reading the changelog where its live
records start, not where it starts.

A windowed changelog (``compact,delete``) keeps records for the store's retention plus
``windowstore_changelog_additional_retention_ms`` (a day by default), so most of what a full restore would read
belongs to expired windows that the store would skip as it writes them. Every changelog record carries its
update's event time as its Kafka timestamp, and that event time is at least its window's start, so:

1. ``newest``: the largest event time the changelog is known to hold: the store's stored stream time (local
   state, or an adopted snapshot) and the largest timestamp among the last committed records of the changelog
   (``newest_committed_timestamp``; read_committed, so an aborted transaction's records never count). Both are
   lower bounds of the store's stream time once restored, so the seek below never skips too much.
2. ``target = newest - retention + 1``: a record whose timestamp is below it belongs to a window whose start is
   at or below ``newest - retention``: expired once the store is restored.
3. ``offsets_for_times(target)``: the first offset whose record has a timestamp >= target (the broker's time
   index); every record before it is older, hence expired. No such record: every record from the start on is
   expired (reading starts at the end).
4. Reading starts at that offset when it is past where it would have started (the stored offset, or the
   changelog's start), and the offsets in between are counted as skipped. The record holding ``newest`` lies at
   or after the seek, so the restored stream time is the same as after a full restore.

Nothing here writes the store; the reader decides what to do with the answer.
"""
from __future__ import annotations

import logging
import time

from confluent_kafka import Consumer
from confluent_kafka import TopicPartition as KTopicPartition

from .task import TaskStore

log = logging.getLogger(__name__)

# How many offsets at the changelog's end are read for their timestamps, and for how long at most. Fewer
# offsets can only find an older newest timestamp (a seek a little earlier, never past a live record); 100
# (was 500: 1% of the live records of bench/restore.py --windowed, 200k records in 4 partitions) still
# holds the newest record of an in-order changelog. Under exactly-once, if all of them belong to a transaction
# still open, nothing is read within TAIL_READ_S_MAX and the restore reads from its start (no seek), as with
# 500 when the open transaction spanned those.
TAIL_OFFSETS = 100
TAIL_READ_S_MAX = 5.0
# A restore of at most this many offsets reads them all instead (the lookup costs more than it saves).
LOOKUP_OFFSETS_MIN = 500


def newest_committed_timestamp(consumer: Consumer, topic: str, partition: int, low: int, end: int,
                               timeout_s: float = TAIL_READ_S_MAX) -> int | None:
    """The largest timestamp among the committed records of the last ``TAIL_OFFSETS`` offsets before ``end``,
    read with ``consumer`` (read_committed, assigned here and unassigned after); None if none was read within
    ``timeout_s`` (then the caller does not seek)."""
    start = max(low, end - TAIL_OFFSETS)
    if start >= end:
        return None
    ktp = KTopicPartition(topic, partition, start)
    consumer.assign([ktp])
    newest: int | None = None
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            msgs = consumer.consume(TAIL_OFFSETS, 0.2)
            for m in msgs:
                if m.error() is None:
                    ts = m.timestamp()[1]
                    if ts >= 0 and (newest is None or ts > newest):
                        newest = ts
            position = consumer.position([KTopicPartition(topic, partition)])[0].offset
            if position >= end or (not msgs and position >= start and newest is not None):
                break  # at the end, or at the last stable offset (an open transaction holds the rest)
    finally:
        consumer.unassign()
    return newest


def live_start(store: TaskStore, start: int, end: int, newest_in_tail: int | None, lookup: Consumer,
               timeout_s: float) -> int:
    """Where a windowed store's restore reads from: ``start`` (where it would read anyway) or a later offset
    before which every record is expired (steps 2-4 of the module docstring). ``newest_in_tail``: step 1's
    reading of the changelog's end; ``lookup`` answers ``offsets_for_times``."""
    retention = store.spec.retention_ms
    assert retention is not None
    stored = store.backend.stream_time()  # type: ignore[attr-defined]
    known = [t for t in (stored, newest_in_tail) if t is not None]
    if not known or start >= end:
        return start
    target = max(known) - retention + 1
    if target <= 0:
        return start
    tp = store.changelog
    found = lookup.offsets_for_times([KTopicPartition(tp.topic, tp.partition, target)], timeout=timeout_s)[0]
    if found.error is not None:
        log.warning("changelog %s: looking up the first offset at time %d failed (%s); restoring from %d", tp,
                    target, found.error, start)
        return start
    first_live = end if found.offset < 0 else min(found.offset, end)
    return max(start, first_live)
