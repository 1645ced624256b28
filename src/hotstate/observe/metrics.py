"""Counters kept by the runtime; ``App.metrics()`` returns a snapshot of them.

Each counter has one writer thread (processing or restore); readers may see a value one update old.
Restore metrics use Kafka Streams' names (KIP-869): per instance ``active_restoring_tasks``,
``standby_updating_tasks``, ``restore_records_rate``, ``active_restore_ratio``; per store partition
``restore_records_total``, ``restore_remaining_records``, a rate and an ETA. Rates and ratios are over the
last ``RATE_WINDOW_S`` seconds. Standbys: ``standby_records_lag`` per standby task (changelog end - store
offset, summed over its stores; refreshed about once a second). Snapshots (issue #9): per store partition
``snapshots_total``, ``snapshot_upload_bytes_total``, ``snapshot_last_offset``, ``snapshot_age_seconds``;
per instance ``restore_download_bytes_total`` and ``restore_download_rate`` (bytes per second), and what
taking the checkpoints cost the stream thread: ``snapshot_checkpoints_total``,
``snapshot_checkpoint_seconds_total``, ``snapshot_checkpoint_seconds_max``.
"""
from __future__ import annotations

import collections
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

RATE_WINDOW_S = 10.0
_SAMPLE_EVERY_S = 0.25
_SAMPLES_MAX = int(RATE_WINDOW_S / _SAMPLE_EVERY_S) + 2


class RateWindow:
    """The growth per second of a counter over the last ``RATE_WINDOW_S`` seconds.

    The writer calls ``sample(total)`` whenever the counter moved (it keeps at most one sample per
    ``_SAMPLE_EVERY_S``, so a bounded deque); any thread calls ``rate(total)``. A counter that stopped moving
    decays to 0 once its last samples leave the window."""

    __slots__ = ("_samples", "_clock")

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self._samples: collections.deque[tuple[float, float]] = collections.deque(maxlen=_SAMPLES_MAX)

    def sample(self, total: float) -> None:
        now = self._clock()
        samples = self._samples
        if not samples or now - samples[-1][0] >= _SAMPLE_EVERY_S:
            samples.append((now, total))

    def rate(self, total: float) -> float:
        now = self._clock()
        try:
            for t, value in list(self._samples):
                if now - t <= RATE_WINDOW_S:
                    elapsed = now - t
                    return (total - value) / elapsed if elapsed > 0 else 0.0
        except RuntimeError:  # the writer mutated the deque while it was copied: report no rate this time
            pass
        return 0.0


@dataclass
class StoreRestoreMetrics:
    """One store partition's restore. ``restore_remaining_records`` counts changelog offsets left to read
    (an upper bound of records: compacted-away offsets and transaction markers count too)."""

    restore_records_total: int = 0
    restore_remaining_records: int = 0
    # Changelog offsets the retention-aware restore seeked past (windowed stores: their records were expired).
    restore_skipped_records_total: int = 0
    started_at_s: float = 0.0
    ended_at_s: float | None = None
    changelog: str = ""
    rate: RateWindow = field(default_factory=RateWindow)

    def snapshot(self) -> dict:
        done = self.ended_at_s is not None
        rate = self.rate.rate(self.restore_records_total)
        remaining = 0 if done else self.restore_remaining_records
        return {
            "changelog": self.changelog,
            "state": "RESTORED" if done else "RESTORING",
            "restore_records_total": self.restore_records_total,
            "restore_skipped_records_total": self.restore_skipped_records_total,
            "restore_remaining_records": remaining,
            "restore_records_rate": round(rate, 1),
            "restore_eta_s": 0.0 if done else (round(remaining / rate, 1) if rate > 0 else None),
            "restore_seconds": round((self.ended_at_s if done else time.monotonic()) - self.started_at_s, 3),
        }


@dataclass
class SnapshotPartitionMetrics:
    """One store partition's snapshots, written by the snapshot uploader thread only."""

    changelog: str = ""
    snapshots_total: int = 0  # manifests this instance published
    snapshot_upload_bytes_total: int = 0  # bytes of file objects uploaded (reused objects cost nothing)
    snapshot_failures_total: int = 0  # attempts that failed (store unreachable, refused, ...)
    snapshot_last_offset: int | None = None  # the newest published snapshot's changelog offset (next to apply)
    snapshot_last_created_s: float | None = None  # wall-clock time (time.time()) it was taken

    def snapshot(self, now_s: float) -> dict:
        last = self.snapshot_last_created_s
        return {
            "changelog": self.changelog,
            "snapshots_total": self.snapshots_total,
            "snapshot_upload_bytes_total": self.snapshot_upload_bytes_total,
            "snapshot_failures_total": self.snapshot_failures_total,
            "snapshot_last_offset": self.snapshot_last_offset,
            "snapshot_age_seconds": None if last is None else round(max(0.0, now_s - last), 3),
        }


@dataclass
class SnapshotMetrics:
    """Snapshots (per store partition, "<task>/<store>") and restore downloads. ``partitions`` entries are
    written by the uploader thread; the download counters by the restorer under ``lock`` (its download
    workers run in parallel)."""

    partitions: dict[str, SnapshotPartitionMetrics] = field(default_factory=dict)
    snapshots_fenced_total: int = 0  # snapshots not published: a newer owner (epoch) published already
    # Checkpoints the stream thread took (runtime/snapshots.py), and the time they took it: its only cost.
    checkpoints_total: int = 0
    checkpoint_seconds_total: float = 0.0
    checkpoint_seconds_max: float = 0.0
    restore_download_bytes_total: int = 0
    restore_download_rate: RateWindow = field(default_factory=RateWindow)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def partition(self, key: str, changelog: str) -> SnapshotPartitionMetrics:
        found = self.partitions.get(key)
        if found is None:
            found = self.partitions[key] = SnapshotPartitionMetrics(changelog=changelog)
        return found

    def add_checkpoint(self, seconds: float) -> None:
        self.checkpoints_total += 1
        self.checkpoint_seconds_total += seconds
        self.checkpoint_seconds_max = max(self.checkpoint_seconds_max, seconds)

    def add_downloaded(self, num_bytes: int) -> None:
        with self.lock:
            self.restore_download_bytes_total += num_bytes
            self.restore_download_rate.sample(self.restore_download_bytes_total)

    def snapshot(self, now_s: float | None = None) -> dict:
        now_s = time.time() if now_s is None else now_s
        parts = {k: v.snapshot(now_s) for k, v in list(self.partitions.items())}
        return {
            "snapshots_total": sum(p["snapshots_total"] for p in parts.values()),
            "snapshot_upload_bytes_total": sum(p["snapshot_upload_bytes_total"] for p in parts.values()),
            "snapshots_fenced_total": self.snapshots_fenced_total,
            "snapshot_checkpoints_total": self.checkpoints_total,
            "snapshot_checkpoint_seconds_total": round(self.checkpoint_seconds_total, 6),
            "snapshot_checkpoint_seconds_max": round(self.checkpoint_seconds_max, 6),
            "restore_download_bytes_total": self.restore_download_bytes_total,
            "restore_download_rate": round(self.restore_download_rate.rate(self.restore_download_bytes_total), 1),
            "snapshots": parts,
        }


@dataclass
class Metrics:
    records_processed_total: int = 0
    skipped_records_total: int = 0  # undecodable records dropped by log_and_continue
    # Kafka Streams' dropped-records-total: every record an exception handler skipped (undecodable records
    # under deserialization_exception_handler, failed ones under processing_exception_handler).
    dropped_records_total: int = 0
    dead_letter_records_total: int = 0  # records produced to dead_letter_topic
    dropped_null_key: int = 0
    # Stream records a stream-table join skips because their value is None (Kafka Streams' dropped-records).
    dropped_null_value: int = 0
    # Kafka Streams' dropped-records for late records: per task, one per (record, closed window) dropped by a
    # windowed aggregation. Written by the stream thread only.
    dropped_late_records: dict[str, int] = field(default_factory=dict)
    commits_total: int = 0
    # Exactly-once: producers given up inside a transactional call librdkafka never returned from (commit.py).
    transactional_producers_abandoned_total: int = 0
    # Exactly-once: rewinds that went to this instance's own last committed offsets because the group's stayed
    # unreadable (UNSTABLE_OFFSET_COMMIT after a broker restart; task_manager._committed_offsets).
    rewinds_to_known_offsets_total: int = 0
    store_corruptions_total: int = 0  # running tasks closed, wiped and restored because a read met damage
    rebalances_total: int = 0  # assignments this instance received (every rebalance it took part in)
    restore_records_total: int = 0
    restore_skipped_records_total: int = 0  # written by the state updater: see StoreRestoreMetrics
    restores: dict[str, StoreRestoreMetrics] = field(default_factory=dict)  # "<task>/<store>" -> metrics
    started_at_s: float = field(default_factory=time.monotonic)
    # Written by the state updater.
    active_restoring_tasks: int = 0
    standby_updating_tasks: int = 0
    standby_records_lag: dict[str, int] = field(default_factory=dict)  # task id -> lag; replaced, never mutated
    restore_busy_s: float = 0.0  # time the restore thread spent restoring (reading, writing, flushing)
    restore_rate: RateWindow = field(default_factory=RateWindow)
    restore_busy_rate: RateWindow = field(default_factory=RateWindow)
    # Written by the snapshot uploader and restorer (hotstate.snapshot).
    snapshots: SnapshotMetrics = field(default_factory=SnapshotMetrics)


    def count_restored(self, store: StoreRestoreMetrics, n: int, remaining: int) -> None:
        """A batch of ``n`` records restored into one store partition (a changelog restore or a global table's
        bootstrap): its totals, remaining records and rate, and the app's."""
        store.restore_records_total += n
        store.restore_remaining_records = remaining
        store.rate.sample(store.restore_records_total)
        self.restore_records_total += n
        self.restore_rate.sample(self.restore_records_total)
    def record_late_drop(self, task_id: str) -> None:
        self.dropped_late_records[task_id] = self.dropped_late_records.get(task_id, 0) + 1

    def snapshot(self) -> dict:
        restores = {k: v.snapshot() for k, v in list(self.restores.items())}
        restoring = {k: v for k, v in restores.items() if v["state"] == "RESTORING"}
        return {
            "records_processed_total": self.records_processed_total,
            "skipped_records_total": self.skipped_records_total,
            "dropped_records_total": self.dropped_records_total,
            "dead_letter_records_total": self.dead_letter_records_total,
            "dropped_records_null_key_total": self.dropped_null_key,
            "dropped_records_null_value_total": self.dropped_null_value,
            "dropped_late_records_total": dict(list(self.dropped_late_records.items())),  # task id -> count
            "commit_total": self.commits_total,
            "transactional_producers_abandoned_total": self.transactional_producers_abandoned_total,
            "rewinds_to_known_offsets_total": self.rewinds_to_known_offsets_total,
            "rebalances_total": self.rebalances_total,
            "store_corruptions_total": self.store_corruptions_total,
            "restore_records_total": self.restore_records_total,
            "restore_skipped_records_total": self.restore_skipped_records_total,
            "active_restoring_tasks": self.active_restoring_tasks,
            "standby_updating_tasks": self.standby_updating_tasks,
            "standby_records_lag": dict(self.standby_records_lag),
            "restore_records_rate": round(self.restore_rate.rate(self.restore_records_total), 1),
            "active_restore_ratio": round(min(1.0, self.restore_busy_rate.rate(self.restore_busy_s)), 3),
            "active_restoring_stores": len(restoring),
            "restore_remaining_records": {k: v["restore_remaining_records"] for k, v in restoring.items()},
            "restores": restores,
            **self.snapshots.snapshot(),
        }
