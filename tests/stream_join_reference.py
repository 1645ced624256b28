"""A reference for windowed stream-stream joins, computed by a nested loop over the input records (shared by the
unit and integration tests). Rules (docs/architecture.md "Stream-stream joins"): a record whose timestamp is
below stream time (the largest timestamp accepted so far, either side) minus grace is dropped; every pair of
accepted records of one key, one from each side, whose timestamps differ by at most the time difference is
joined, with the larger timestamp; in a left (outer) join an accepted left (or right) record without a partner
is emitted with None once stream time passed its timestamp + time difference + grace."""
from __future__ import annotations

from collections import Counter
from typing import Any, Iterable


def reference_join(events: Iterable[tuple[str, Any, Any, int]], kind: str, time_difference_ms: int,
                   grace_ms: int) -> tuple[Counter, int]:
    """``events``: (side "L" or "R", key, value, timestamp) in processing order; records with a None key or
    value are skipped (dropped). Returns (Counter of (key, (left, right), timestamp) outputs, late drops)."""
    stream_time, accepted, late = None, [], 0
    for side, key, value, ts in events:
        if key is None or value is None:
            continue
        if stream_time is not None and ts < stream_time - grace_ms:
            late += 1
            continue
        stream_time = ts if stream_time is None else max(stream_time, ts)
        accepted.append((side, key, value, ts))
    out: Counter = Counter()
    partnered = set()
    for i, (ls, lk, lv, lt) in enumerate(accepted):
        if ls != "L":
            continue
        for j, (rs, rk, rv, rt) in enumerate(accepted):
            if rs == "R" and rk == lk and abs(lt - rt) <= time_difference_ms:
                out[(lk, (lv, rv), max(lt, rt))] += 1
                partnered.update((i, j))
    if kind != "inner" and stream_time is not None:
        for i, (s, k, v, ts) in enumerate(accepted):
            closed = stream_time > ts + time_difference_ms + grace_ms
            if i in partnered or not closed:
                continue
            if s == "L":
                out[(k, (v, None), ts)] += 1
            elif kind == "outer":
                out[(k, (None, v), ts)] += 1
    return out, late
