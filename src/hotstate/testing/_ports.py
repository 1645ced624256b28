"""The Kafka side of ``TopologyTestDriver``, in memory: the ports the task manager and the committer already take
(a producer, a main consumer, a group member that commits offsets, a state updater) over one in-memory log.
Nothing here opens a socket or makes a librdkafka client; the processing code they serve is the runtime's own.
"""
from __future__ import annotations

from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from confluent_kafka import OFFSET_BEGINNING, OFFSET_INVALID
from confluent_kafka import TopicPartition as KTopicPartition

from ..kafka.partitioner import partition_for


@dataclass(frozen=True)
class Entry:
    key: bytes | None
    value: bytes | None
    timestamp: int
    headers: list[tuple[str, bytes]] | None


class Message:
    """The parts of ``confluent_kafka.Message`` the runtime reads."""

    __slots__ = ("_topic", "_partition", "_offset", "_entry")

    def __init__(self, topic: str, partition: int, offset: int, entry: Entry):
        self._topic, self._partition, self._offset, self._entry = topic, partition, offset, entry

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes | None:
        return self._entry.key

    def value(self) -> bytes | None:
        return self._entry.value

    def timestamp(self) -> tuple[int, int]:
        return (1, self._entry.timestamp)  # TIMESTAMP_CREATE_TIME

    def headers(self) -> list[tuple[str, bytes]] | None:
        return self._entry.headers

    def error(self) -> None:
        return None


class Log:
    """Topics as lists of partitions of entries. A topic not declared gets partitions as records name them
    (a sink without a partition: partition 0 of a one-partition topic)."""

    def __init__(self, partitions: dict[str, int]):
        self.topics: dict[str, list[list[Entry]]] = {t: [[] for _ in range(n)] for t, n in partitions.items()}

    def partitions(self, topic: str) -> list[list[Entry]]:
        return self.topics.setdefault(topic, [[]])

    def append(self, topic: str, partition: int | None, entry: Entry) -> tuple[int, int]:
        """Returns (partition, offset). ``partition`` None: murmur2 of the key, as the producer's default
        partitioner (a null key: partition 0)."""
        parts = self.partitions(topic)
        if partition is None or partition < 0:
            partition = 0 if entry.key is None else partition_for(entry.key, len(parts))
        while len(parts) <= partition:
            parts.append([])
        parts[partition].append(entry)
        return partition, len(parts[partition]) - 1


class Producer:
    """The committer's producer: a record is in the log once produced; its delivery report (which gives the
    committer the changelog offsets) is served on ``poll`` / ``flush``, as librdkafka serves them."""

    def __init__(self, log: Log, on_delivery: Callable[[Any, Any], None]):
        self._log = log
        self._on_delivery = on_delivery
        self._reports: list[Message] = []

    def produce(self, topic: str, value: bytes | None = None, key: bytes | None = None, partition: int = -1,
                timestamp: int = 0, headers: Any = None, **_: Any) -> None:
        entry = Entry(key, value, timestamp, list(headers) if headers is not None else None)
        p, offset = self._log.append(topic, partition, entry)
        self._reports.append(Message(topic, p, offset, entry))

    def poll(self, timeout: float = 0) -> int:
        reports, self._reports = self._reports, []
        for msg in reports:
            self._on_delivery(None, msg)
        return len(reports)

    def flush(self, timeout: float = 0) -> int:
        self.poll()
        return 0

    def purge(self) -> None:
        self._reports.clear()


class Member:
    """The group member as the at-least-once committer uses it: commits input offsets, always in the group."""

    def __init__(self) -> None:
        self.offsets: dict[tuple[str, int], int] = {}

    def has_generation(self) -> bool:
        return True

    def commit(self, offsets: Iterable[KTopicPartition], asynchronous: bool = False) -> None:
        for tp in offsets:
            self.offsets[(tp.topic, tp.partition)] = tp.offset

    def committed(self, tps: Iterable[KTopicPartition], timeout: float = 0) -> list[KTopicPartition]:
        return [KTopicPartition(tp.topic, tp.partition, self.offsets.get((tp.topic, tp.partition), OFFSET_INVALID))
                for tp in tps]


class Consumer:
    """The main consumer: a position per input partition; ``poll_all`` hands out every record past it."""

    def __init__(self, log: Log, inputs: list[tuple[str, int]]):
        self._log = log
        self._position = {tp: 0 for tp in inputs}
        self._paused: set[tuple[str, int]] = set()

    def pause(self, tps: Iterable[KTopicPartition]) -> None:
        self._paused.update((tp.topic, tp.partition) for tp in tps)

    def resume(self, tps: Iterable[KTopicPartition]) -> None:
        self._paused.difference_update((tp.topic, tp.partition) for tp in tps)

    def seek(self, tp: KTopicPartition) -> None:
        self._position[(tp.topic, tp.partition)] = 0 if tp.offset == OFFSET_BEGINNING else tp.offset

    def poll_all(self) -> list[Message]:
        """Every record not yet handed out, input by input in the topology's order, each in offset order."""
        out = []
        for (topic, partition), position in self._position.items():
            if (topic, partition) in self._paused:
                continue
            entries = self._log.partitions(topic)[partition]
            out.extend(Message(topic, partition, o, entries[o]) for o in range(position, len(entries)))
            self._position[(topic, partition)] = len(entries)
        return out


class Updater:
    """The state updater's hand-off API with nothing to restore: a driver's stores start empty in a fresh
    directory and its changelogs are empty, so a task added is restored at once."""

    fatal_error: BaseException | None = None

    def __init__(self) -> None:
        self._restored: list[Any] = []

    def add(self, *tasks: Any) -> None:
        self._restored.extend(tasks)

    def remove(self, task_id: str) -> Future:
        self._restored = [t for t in self._restored if t.id != task_id]
        done: Future = Future()
        done.set_result(None)
        return done

    def drain_restored(self) -> list[Any]:
        restored, self._restored = self._restored, []
        return restored

    def drain_failed(self) -> list:
        return []

    def standby_lags(self) -> dict[str, int]:
        return {}
