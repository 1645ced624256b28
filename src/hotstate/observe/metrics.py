"""Counters kept by the runtime; ``App.metrics()`` returns a snapshot of them.

Each counter has one writer thread (processing or restore); readers may see a value one update old."""
from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class StoreRestoreMetrics:
    restore_records_total: int = 0
    restore_remaining_records: int = 0
    started_at_s: float = 0.0
    ended_at_s: float | None = None


@dataclass
class Metrics:
    records_processed_total: int = 0
    skipped_records_total: int = 0  # undecodable records dropped by log_and_continue
    dropped_null_key: int = 0
    commits_total: int = 0
    restore_records_total: int = 0
    restores: dict[str, StoreRestoreMetrics] = field(default_factory=dict)  # "<task>/<store>" -> metrics
    started_at_s: float = field(default_factory=time.monotonic)

    def snapshot(self) -> dict:
        restoring = {k: v for k, v in self.restores.items() if v.ended_at_s is None}
        return {
            "records_processed_total": self.records_processed_total,
            "skipped_records_total": self.skipped_records_total,
            "dropped_records_null_key_total": self.dropped_null_key,
            "commit_total": self.commits_total,
            "restore_records_total": self.restore_records_total,
            "active_restoring_stores": len(restoring),
            "restore_remaining_records": {k: v.restore_remaining_records for k, v in restoring.items()},
        }
