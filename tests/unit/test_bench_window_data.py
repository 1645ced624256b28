"""bench/restore.py --windowed's data: the updates and the reference it checks both systems against, recomputed
the straightforward way (every update kept, counted afterwards)."""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "bench"))

import changelog_data  # noqa: E402


def test_window_reference_matches_a_recount():
    shape = changelog_data.WindowShape(records=30_000, keys=50, partitions=3, size_ms=60_000, grace_ms=5_000,
                                       retention_ms=600_000, span_retentions=10, end_ms=1_800_000_123_456)
    ref = changelog_data.WindowReference(shape, sample_keys=20)
    updates = list(changelog_data.window_updates(shape))
    for p, j, key, ws, ts, count in updates:
        ref.add(p, j, ws, ts, count)
    assert len(updates) == shape.records
    assert all(shape.start_ms <= ts <= shape.end_ms and ws == ts - ts % shape.size_ms
               for _, _, _, ws, ts, _ in updates)
    # counts: the number of updates of (key, window) so far; the partition is the key's
    seen: dict[tuple[bytes, int], int] = {}
    newest = [None] * shape.partitions
    for p, _, key, ws, ts, count in updates:
        seen[key, ws] = seen.get((key, ws), 0) + 1
        assert count == seen[key, ws]
        assert p == changelog_data.partition_of(key, shape.partitions)
        newest[p] = ts
    bound = [n - shape.retention_ms + 1 for n in newest]
    live = sum(1 for p, _, _, ws, _, _ in updates if ws >= bound[p])
    in_retention = sum(1 for p, _, _, _, ts, _ in updates if ts >= bound[p])
    assert ref.counts() == {"records": shape.records, "live_records": live, "in_retention_records": in_retention}
    assert 0.09 < live / shape.records < 0.11  # 10 retentions: about 90% expired
    sample = ref.sample()
    assert len(sample) == 20
    for hexkey, q in sample.items():
        key = bytes.fromhex(hexkey)
        p = changelog_data.partition_of(key, shape.partitions)
        want = sorted([ws, c] for (k, ws), c in seen.items() if k == key and ws >= bound[p])
        assert q["windows"] == want and q["from_ms"] == bound[p] and q["to_ms"] == newest[p]
