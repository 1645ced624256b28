"""A reference for windowed aggregations, shared by the unit and integration tests: Kafka Streams' semantics
written the plain way, one task (input partition) at a time."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Reference:
    """Kafka Streams' windowed aggregation, written the plain way: every window start is found by brute force,
    stream time is the running maximum, a window is closed once end + grace <= stream time."""

    size: int
    advance: int
    grace: int
    retention: int
    stream_time: int = -1
    values: dict = field(default_factory=dict)  # (key, start) -> aggregate
    times: dict = field(default_factory=dict)  # (key, start) -> event time of its last update
    emitted: list = field(default_factory=list)  # (key, start, end, value, timestamp)
    dropped: int = 0

    def process(self, key, ts, update):
        self.stream_time = max(self.stream_time, ts)
        # Every multiple of advance from well below ts - size (a superset), kept if its window holds ts.
        lowest = max(0, ts - self.size - self.advance) // self.advance * self.advance
        for start in range(lowest, ts + 1, self.advance):
            if not start <= ts < start + self.size:
                continue
            end = start + self.size
            if end + self.grace <= self.stream_time:
                self.dropped += 1
                continue
            w = (key, start)
            self.values[w] = update(self.values.get(w))
            self.times[w] = max(ts, self.times.get(w, ts))
            self.emitted.append((key, start, end, self.values[w], self.times[w]))

    def live(self) -> dict:
        return {w: v for w, v in self.values.items() if w[1] > self.stream_time - self.retention}


@dataclass
class SessionReference:
    """Kafka Streams' session aggregation, written the plain way: a session is the list of records it holds; a
    record joins every session of its key within the gap (distance <= gap), which become one; the aggregate is
    computed from the session's records (``value_of(records)``), never merged. A record is dropped when its
    session would end before stream time - gap - grace; a session is forgotten once its end is at or below
    stream time - retention (stream time before the record: what the store had seen)."""

    gap: int
    grace: int
    retention: int
    value_of: object = len  # records [(ts, value)] -> the aggregate
    stream_time: int = -1
    sessions: dict = field(default_factory=dict)  # key -> list of record lists
    emitted: list = field(default_factory=list)  # (key, start, end, value or None, timestamp)
    dropped: int = 0

    def process(self, key, ts, value=None):
        before, self.stream_time = self.stream_time, max(self.stream_time, ts)
        live = [s for s in self.sessions.get(key, []) if max(t for t, _ in s) > before - self.retention]
        joined = [s for s in live if any(abs(t - ts) <= self.gap for t, _ in s)
                  or min(t for t, _ in s) <= ts <= max(t for t, _ in s)]
        records = sorted([r for s in joined for r in s] + [(ts, value)], key=lambda r: r[0])
        start, end = records[0][0], records[-1][0]
        if end < self.stream_time - self.grace - self.gap:
            self.dropped += 1
            self.sessions[key] = live
            return
        if (start, end) != (ts, ts):
            for s in sorted(joined, key=lambda s: min(t for t, _ in s)):
                s_start, s_end = min(t for t, _ in s), max(t for t, _ in s)
                self.emitted.append((key, s_start, s_end, None, s_end))
        self.sessions[key] = [s for s in live if not any(s is j for j in joined)] + [records]
        self.emitted.append((key, start, end, self.value_of(records), end))

    def live(self) -> dict:
        """(key, start, end) -> aggregate of the sessions the store serves."""
        out = {}
        for key, sessions in self.sessions.items():
            for s in sessions:
                start, end = min(t for t, _ in s), max(t for t, _ in s)
                if end > self.stream_time - self.retention:
                    out[(key, start, end)] = self.value_of(s)
        return out


@dataclass
class SlidingReference:
    """Kafka Streams' sliding windows, written the plain way from their definition: the windows of a key are
    the left window ``[t - d, t]`` of each of its accepted records (``[0, d]`` for ``t < d``) and the right
    window ``[t + 1, t + 1 + d]`` of each record followed by another within it; a window's aggregate is that of
    the accepted records it holds. A record is dropped when ``t + d < stream time - grace``. Exact for inputs
    whose records are either on time for all their windows (``t >= stream time - grace``) or dropped;
    ``partial`` counts the records in between (some of their windows closed), for which it is not."""

    d: int
    grace: int
    retention: int
    value_of: object = len  # the records [(ts, value)] of a window, in arrival order -> its aggregate
    stream_time: int = -1
    records: dict = field(default_factory=dict)  # key -> accepted [(ts, value)] in arrival order
    dropped: int = 0
    partial: int = 0

    def process(self, key, ts, value=None):
        self.stream_time = max(self.stream_time, ts)
        close = self.stream_time - self.grace
        if ts + self.d < close:
            self.dropped += 1
            return
        if ts < close:
            self.partial += 1
        self.records.setdefault(key, []).append((ts, value))

    def windows(self) -> dict:
        """(key, start) -> aggregate of every window, expired or not."""
        out = {}
        for key, recs in self.records.items():
            times = [t for t, _ in recs]
            starts = {0 if t < self.d else t - self.d for t in times}
            starts |= {a + 1 for a in times if any(a < b <= a + 1 + self.d for b in times)}
            for s in starts:
                out[(key, s)] = self.value_of([(t, v) for t, v in recs if s <= t <= s + self.d])
        return out

    def live(self) -> dict:
        return {w: v for w, v in self.windows().items() if w[1] > self.stream_time - self.retention}


@dataclass
class SuppressReference:
    """``suppress_until_window_closes`` written the plain way over a windowed reference's updates: the latest
    update of each window is held; after each update, every window whose end is at or below stream time -
    ``suppress_ms`` is emitted once, by (end, key bytes); a tombstone forgets its window."""

    suppress_ms: int
    key_bytes: object  # (key, start, end) -> the windowed key's bytes (the order among equal ends)
    held: dict = field(default_factory=dict)  # (key, start, end) -> (value, timestamp)
    emitted: list = field(default_factory=list)  # (key, start, end, value, timestamp)

    def updates(self, updates, stream_time):
        for k, s, e, v, ts in updates:
            if v is None:
                self.held.pop((k, s, e), None)
            else:
                self.held[(k, s, e)] = (v, ts)
            closed = [w for w in self.held if w[2] <= stream_time - self.suppress_ms]
            for w in sorted(closed, key=lambda w: (w[2], self.key_bytes(*w))):
                v2, ts2 = self.held.pop(w)
                self.emitted.append((*w, v2, ts2))
