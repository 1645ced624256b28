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
    """A record as processors and ``process`` functions see it. ``topic``/``partition``/``offset`` name the input
    record the current one descends from (``""``/-1/-1 for a record made in a punctuation). ``timestamp`` is in ms
    (a new record made without one is forwarded with the current timestamp: the record being processed's, or the
    punctuation's); ``headers`` a list of ``(name, bytes)`` pairs or None.

    Records are used as values: ``with_key``, ``with_value``, ``with_timestamp`` and ``with_headers`` return a new
    record with one field changed, the rest (headers included) kept (Kafka Streams' ``api.Record``)."""

    __slots__ = ("key", "value", "timestamp", "headers", "topic", "partition", "offset")

    def __init__(self, key: Any, value: Any, timestamp: int | None = None, headers: Any = None, topic: str = "",
                 partition: int = -1, offset: int = -1):
        self.key, self.value, self.timestamp, self.headers = key, value, timestamp, headers
        self.topic, self.partition, self.offset = topic, partition, offset

    def _replace(self, **changes: Any) -> "Record":
        fields = {name: getattr(self, name) for name in self.__slots__}
        fields.update(changes)
        return Record(**fields)

    def with_key(self, key: Any) -> "Record":
        return self._replace(key=key)

    def with_value(self, value: Any) -> "Record":
        return self._replace(value=value)

    def with_timestamp(self, timestamp: int) -> "Record":
        """The same record with another timestamp (ms since the epoch, an int >= 0): the output record's."""
        if not isinstance(timestamp, int) or isinstance(timestamp, bool) or timestamp < 0:
            raise ValueError(f"with_timestamp({timestamp!r}): a timestamp is an int >= 0 (ms since the epoch)")
        return self._replace(timestamp=timestamp)

    def with_headers(self, headers: Any) -> "Record":
        """The same record with other headers: a list of ``(name, value)`` pairs or a dict (values bytes, str or
        None); None or empty: no headers. Replaces the headers; to add one, pass ``record.headers + [...]``."""
        return self._replace(headers=normalize_headers(headers))

    def __repr__(self) -> str:
        return f"Record(key={self.key!r}, value={self.value!r}, {self.topic}[{self.partition}]@{self.offset})"


def normalize_headers(headers: Any) -> list[tuple[str, bytes | None]] | None:
    """Headers as Kafka clients take them: a list of (str, bytes or None), or None for none."""
    if headers is None:
        return None
    items = headers.items() if isinstance(headers, dict) else headers
    out: list[tuple[str, bytes | None]] = []
    try:
        for name, value in items:
            if not isinstance(name, str):
                raise ValueError(f"header name {name!r} is not a str")
            if isinstance(value, str):
                value = value.encode()
            elif value is not None and not isinstance(value, (bytes, bytearray)):
                raise ValueError(f"header {name!r}: the value must be bytes, str or None, got {type(value).__name__}")
            out.append((name, None if value is None else bytes(value)))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"with_headers({headers!r}): headers are a list of (name, value) pairs or a dict "
                         f"({exc})") from None
    return out or None
