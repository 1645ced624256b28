"""The changelog content every system of bench/restore.py restores: deterministic, so a child process
(the rocksdict floor) can build the very same records without reading Kafka.

N distinct 16-byte random keys, written once each in order; after every ``1 / update_fraction``-th key
one extra record updates a key written earlier (a real changelog has keys updated more than once).
A value is ``value_bytes`` long: its record's sequence number (8 bytes, big-endian) then random filler.
A record's partition is a function of its key alone, so every system sees the same records in the
same partition in the same order.
"""
from __future__ import annotations

import random
import struct
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
