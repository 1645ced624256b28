"""Kafka's default partitioner for keyed records: murmur2 of the serialized key (the Java client's
``Utils.murmur2`` and ``toPositive``, librdkafka's ``murmur2_random``), so a record re-keyed here lands on the
partition a Java or librdkafka producer would choose for the same key bytes."""
from __future__ import annotations

_M = 0x5BD1E995
_SEED = 0x9747B28C
_MASK = 0xFFFFFFFF


def murmur2(data: bytes) -> int:
    """The 32-bit murmur2 hash Kafka uses, as a signed int (what Java's ``Utils.murmur2`` returns)."""
    length = len(data)
    h = (_SEED ^ length) & _MASK
    end = length - (length & 3)
    for i in range(0, end, 4):
        k = data[i] | (data[i + 1] << 8) | (data[i + 2] << 16) | (data[i + 3] << 24)
        k = (k * _M) & _MASK
        k ^= k >> 24
        k = (k * _M) & _MASK
        h = ((h * _M) & _MASK) ^ k
    rest = length & 3
    if rest == 3:
        h ^= data[end + 2] << 16
    if rest >= 2:
        h ^= data[end + 1] << 8
    if rest >= 1:
        h ^= data[end]
        h = (h * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


def partition_for(key: bytes, partitions: int) -> int:
    """The partition of a record with this serialized key: ``toPositive(murmur2(key)) % partitions``."""
    if partitions <= 0:
        raise ValueError(f"partitions must be > 0, got {partitions}")
    return (murmur2(key) & 0x7FFFFFFF) % partitions
