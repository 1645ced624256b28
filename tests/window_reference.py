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
