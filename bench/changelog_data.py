"""The changelog content every system of bench/restore.py restores: deterministic, so a child process
(the rocksdict floor) can build the very same records without reading Kafka.

N distinct 16-byte random keys, written once each in order; after every ``1 / update_fraction``-th key
one extra record updates a key written earlier (a real changelog has keys updated more than once).
A value is ``value_bytes`` long: its record's sequence number (8 bytes, big-endian) then random filler.
A record's partition is a function of its key alone, so every system sees the same records in the
same partition in the same order.
"""
from __future__ import annotations

import bisect
import random
import struct
from array import array
from dataclasses import dataclass
from typing import Iterator

SEED = 4
KEY_BYTES = 16
_SEQ = struct.Struct(">Q")
_FILLER_BYTES = 1 << 16


@dataclass(frozen=True)
class Shape:
    keys: int
    partitions: int
    value_bytes: int = 100
    update_fraction: float = 0.1

    def __post_init__(self) -> None:
        if self.keys < 1 or self.partitions < 1:
            raise ValueError("keys and partitions must be >= 1")
        if not 8 <= self.value_bytes <= _FILLER_BYTES // 2:
            raise ValueError(f"value_bytes must be in [8, {_FILLER_BYTES // 2}]")
        if not 0 <= self.update_fraction <= 1:
            raise ValueError("update_fraction must be in [0, 1]")

    @property
    def update_every(self) -> int:
        """One update record after every ``update_every`` keys (0: no updates)."""
        return 0 if self.update_fraction == 0 else max(1, round(1 / self.update_fraction))

    @property
    def records(self) -> int:
        every = self.update_every
        return self.keys + (self.keys // every if every else 0)

    @property
    def record_bytes(self) -> int:
        return KEY_BYTES + self.value_bytes


def partition_of(key: bytes, partitions: int) -> int:
    return int.from_bytes(key[:4], "big") % partitions


def key_blob(shape: Shape) -> bytes:
    """The N keys, ``KEY_BYTES`` each, concatenated: key i is ``blob[KEY_BYTES * i:KEY_BYTES * (i + 1)]``."""
    return random.Random(SEED).randbytes(KEY_BYTES * shape.keys)  # records() draws them first, the same way


def records(shape: Shape) -> Iterator[tuple[int, bytes, bytes]]:
    """(partition, key, value) in changelog order (order within a partition is what matters)."""
    rng = random.Random(SEED)
    key_blob = rng.randbytes(KEY_BYTES * shape.keys)  # key_blob(shape)
    filler = rng.randbytes(_FILLER_BYTES)
    span = _FILLER_BYTES - shape.value_bytes
    tail = shape.value_bytes - 8
    every = shape.update_every
    parts = shape.partitions
    pack = _SEQ.pack
    seq = 0
    for i in range(shape.keys):
        key = key_blob[KEY_BYTES * i:KEY_BYTES * (i + 1)]
        at = (seq * 131) % span
        yield int.from_bytes(key[:4], "big") % parts, key, pack(seq) + filler[at:at + tail]
        seq += 1
        if every and i % every == every - 1:
            j = rng.randrange(i + 1)
            key = key_blob[KEY_BYTES * j:KEY_BYTES * (j + 1)]
            at = (seq * 131) % span
            yield int.from_bytes(key[:4], "big") % parts, key, pack(seq) + filler[at:at + tail]
            seq += 1


def by_partition(shape: Shape) -> list[list[tuple[bytes, bytes]]]:
    """All records as one list of (key, value) per partition (memory: about records x 200 bytes)."""
    out: list[list[tuple[bytes, bytes]]] = [[] for _ in range(shape.partitions)]
    for p, k, v in records(shape):
        out[p].append((k, v))
    return out


# ---- windowed changelogs (bench/restore.py --windowed) ----

@dataclass(frozen=True)
class WindowShape:
    """A windowed count's changelog: ``records`` updates of tumbling windows of ``size_ms``, one update per input
    record, keys drawn from ``keys`` 16-byte keys, event times evenly spread in order over ``span_retentions`` x
    ``retention_ms`` ending at ``end_ms`` (so about ``1 - 1 / span_retentions`` of the records belong to windows
    that are expired once the store's stream time reaches the newest record)."""
    records: int
    keys: int
    partitions: int
    size_ms: int
    grace_ms: int
    retention_ms: int
    span_retentions: float
    end_ms: int

    def __post_init__(self) -> None:
        if self.records < 1 or self.keys < 1 or self.partitions < 1:
            raise ValueError("records, keys and partitions must be >= 1")
        if self.retention_ms < self.size_ms + self.grace_ms:
            raise ValueError("retention_ms must be at least size_ms + grace_ms")
        if self.span_retentions < 1:
            raise ValueError("span_retentions must be >= 1")

    @property
    def span_ms(self) -> int:
        return int(self.retention_ms * self.span_retentions)

    @property
    def start_ms(self) -> int:
        return self.end_ms - self.span_ms


def window_updates(shape: WindowShape) -> Iterator[tuple[int, int, bytes, int, int, int]]:
    """(partition, key index, key, window start, event time, count after the update) in changelog order: event
    times never go back, so each window's updates are consecutive and its count is the number of its records
    so far; the event time of a window's last update is that record's."""
    key_blob_ = random.Random(SEED).randbytes(KEY_BYTES * shape.keys)
    rng = random.Random(SEED + 2)
    parts = shape.partitions
    size = shape.size_ms
    start, span, n = shape.start_ms, shape.span_ms, shape.records
    counts: dict[int, int] = {}
    current = None
    for i in range(n):
        ts = start + (i * span) // n
        ws = ts - ts % size
        if ws != current:
            counts.clear()
            current = ws
        j = rng.randrange(shape.keys)
        c = counts.get(j, 0) + 1
        counts[j] = c
        key = key_blob_[KEY_BYTES * j:KEY_BYTES * (j + 1)]
        yield int.from_bytes(key[:4], "big") % parts, j, key, ws, ts, c


class WindowReference:
    """What a correct restore of the windowed changelog holds, per partition: fed every update in order
    (``add``), then asked which records are live and which windows sampled keys have."""

    def __init__(self, shape: WindowShape, sample_keys: int = 100):
        self.shape = shape
        self.starts = [array("q") for _ in range(shape.partitions)]
        self.times = [array("q") for _ in range(shape.partitions)]
        blob = random.Random(SEED).randbytes(KEY_BYTES * shape.keys)
        picks = random.Random(SEED + 3).sample(range(shape.keys), min(sample_keys, shape.keys))
        self.sample_keys = {j: blob[KEY_BYTES * j:KEY_BYTES * (j + 1)] for j in picks}
        self._windows: dict[int, dict[int, int]] = {j: {} for j in picks}  # key index -> window start -> count

    def add(self, partition: int, j: int, ws: int, ts: int, count: int) -> None:
        self.starts[partition].append(ws)
        self.times[partition].append(ts)
        w = self._windows.get(j)
        if w is not None:
            w[ws] = count

    def newest(self, partition: int) -> int | None:
        t = self.times[partition]
        return t[-1] if t else None

    def live_from(self, partition: int) -> int | None:
        """The smallest live window start of the partition's store once restored (stream time - retention + 1)."""
        newest = self.newest(partition)
        return None if newest is None else newest - self.shape.retention_ms + 1

    def counts(self) -> dict:
        """records; live_records: the records of windows still live at the end (start >= live_from);
        in_retention_records: the records whose event time is >= live_from (what a seek by time reaches)."""
        total = live = in_retention = 0
        for p in range(self.shape.partitions):
            total += len(self.times[p])
            lf = self.live_from(p)
            if lf is None:
                continue
            live += len(self.starts[p]) - bisect.bisect_left(self.starts[p], lf)
            in_retention += len(self.times[p]) - bisect.bisect_left(self.times[p], lf)
        return {"records": total, "live_records": live, "in_retention_records": in_retention}

    def sample(self) -> dict:
        """{key hex: {"partition", "from_ms", "to_ms", "windows": [[start, count], ...]}} for the sampled keys:
        their live windows, by start."""
        out = {}
        for j, key in self.sample_keys.items():
            p = int.from_bytes(key[:4], "big") % self.shape.partitions
            lf = self.live_from(p)
            if lf is None:
                continue
            windows = sorted([ws, c] for ws, c in self._windows[j].items() if ws >= lf)
            out[key.hex()] = {"partition": p, "from_ms": lf, "to_ms": self.newest(p), "windows": windows}
        return out
