"""The record and context types user functions receive."""
from __future__ import annotations

from typing import Any, NamedTuple


class TopicPartition(NamedTuple):
    """A (topic, partition) pair: what restore listeners and task infos name."""

    topic: str
    partition: int

    def __str__(self) -> str:
        return f"{self.topic}[{self.partition}]"


class Record:
    """A record as ``process`` functions see it. ``topic``/``partition``/``offset`` name the input record
    the current one descends from."""

    __slots__ = ("key", "value", "timestamp", "headers", "topic", "partition", "offset")

    def __init__(self, key: Any, value: Any, timestamp: int, headers: Any, topic: str, partition: int, offset: int):
        self.key, self.value, self.timestamp, self.headers = key, value, timestamp, headers
        self.topic, self.partition, self.offset = topic, partition, offset

    def __repr__(self) -> str:
        return f"Record(key={self.key!r}, value={self.value!r}, {self.topic}[{self.partition}]@{self.offset})"
