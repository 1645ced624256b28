"""The broker side of the benchmarks (bench/eos.py, bench/ha_scenarios.py): the topics and groups a run makes
(deleted at the end, with the topics Kafka Streams / hotstate make for a group: ``<group>-...``), topic
creation that waits until the partitions answer, watermarks, committed offsets read without joining the group,
and reading a topic read_committed up to its current end."""
from __future__ import annotations

import time
import uuid
from typing import Iterator

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Message
from confluent_kafka import TopicPartition as KTopicPartition
from confluent_kafka.admin import AdminClient, NewTopic


class BenchKafka:
    """Topics and groups one run makes, and what the benchmarks ask the broker. ``prefix`` starts the group
    ids of the consumers this object makes for itself (they never join their group)."""

    def __init__(self, bootstrap: str, prefix: str):
        self.bootstrap = bootstrap
        self.prefix = prefix
        self.admin = AdminClient({"bootstrap.servers": bootstrap})
        self.topics: list[str] = []
        self.groups: list[str] = []
        self._readers: dict[str, Consumer] = {}
        self._watermarks_group = f"{prefix}-watermarks-{uuid.uuid4().hex[:8]}"

    def create_topic(self, name: str, partitions: int) -> str:
        """Creates ``name`` (replication 1; deleted by ``delete_topics``) and waits until its partitions answer."""
        self.topics.append(name)
        self.admin.create_topics([NewTopic(name, partitions, 1)], operation_timeout=30)[name].result(60)
        deadline = time.monotonic() + 30
        while True:
            try:
                self.watermarks(name, partitions)
                return name
            except KafkaException:
                if time.monotonic() > deadline:
                    raise
                # librdkafka may hold on to metadata from before the topic existed ("Unknown partition"):
                # ask again with a fresh client.
                stale = self._readers.pop(self._watermarks_group, None)
                if stale is not None:
                    stale.close()
                time.sleep(0.2)

    def app(self, group: str) -> str:
        """Registers an app's group (its id): deleted by ``delete_groups``, its ``<group>-`` topics by
        ``delete_topics``."""
        self.groups.append(group)
        return group

    def _reader(self, group: str) -> Consumer:
        c = self._readers.get(group)
        if c is None:
            c = Consumer({"bootstrap.servers": self.bootstrap, "group.id": group, "enable.auto.commit": False,
                          "isolation.level": "read_committed"})
            self._readers[group] = c
        return c

    def watermarks(self, topic: str, partitions: int) -> dict[int, tuple[int, int]]:
        c = self._reader(self._watermarks_group)
        return {p: c.get_watermark_offsets(KTopicPartition(topic, p), timeout=10, cached=False)
                for p in range(partitions)}

    def ends(self, topic: str, partitions: int) -> dict[int, int]:
        return {p: hi for p, (lo, hi) in self.watermarks(topic, partitions).items()}

    def committed(self, group: str, topic: str, partitions: int) -> dict[int, int]:
        """The group's committed offsets (0 where none), read without joining the group."""
        tps = self._reader(group).committed([KTopicPartition(topic, p) for p in range(partitions)], timeout=10)
        return {tp.partition: max(0, tp.offset) for tp in tps}

    def read(self, topic: str, partitions: int, timeout_s: float = 300) -> Iterator[Message]:
        """The records of ``topic``, read_committed, from the start up to its end offsets as of the call, in
        order per partition."""
        want = {p: hi for p, (lo, hi) in self.watermarks(topic, partitions).items() if hi > lo}
        if not want:
            return
        c = Consumer({"bootstrap.servers": self.bootstrap, "group.id": f"{self.prefix}-reader-{uuid.uuid4().hex[:8]}",
                      "enable.auto.commit": False, "isolation.level": "read_committed"})
        try:
            c.assign([KTopicPartition(topic, p, OFFSET_BEGINNING) for p in want])
            deadline = time.monotonic() + timeout_s
            left = set(want)
            while left:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"reading {topic} to {want} timed out")
                for msg in c.consume(10_000, 0.2):
                    if msg.error() is not None:
                        raise KafkaException(msg.error())
                    if msg.offset() < want[msg.partition()]:
                        yield msg
                # Under read_committed the last offsets may be transaction markers: go by the position.
                for tp in c.position([KTopicPartition(topic, p) for p in left]):
                    if tp.offset >= want[tp.partition]:
                        left.discard(tp.partition)
        finally:
            c.close()

    def close_readers(self) -> None:
        for c in self._readers.values():
            try:
                c.close()
            except Exception:
                pass
        self._readers.clear()

    def delete_topics(self) -> None:
        """Deletes the topics this run made and those of its groups (``<group>-...``) that exist."""
        existing = set(self.admin.list_topics(timeout=10).topics)
        mine = sorted(t for t in existing if t in self.topics or any(t.startswith(g + "-") for g in self.groups))
        if mine:
            for fut in self.admin.delete_topics(mine, operation_timeout=30).values():
                try:
                    fut.result(60)
                except Exception:
                    pass

    def delete_groups(self, request_timeout_s: float, result_timeout_s: float, retry_non_empty_s: float = 0) -> list[str]:
        """Deletes this run's groups; a group still non-empty (a member that does not leave on close stays until
        its session times out) is tried again every second for ``retry_non_empty_s``. Returns the groups left."""
        groups, deadline = list(self.groups), time.monotonic() + retry_non_empty_s
        while groups:
            failed = []
            for group, fut in self.admin.delete_consumer_groups(groups, request_timeout=request_timeout_s).items():
                try:
                    fut.result(result_timeout_s)
                except KafkaException as exc:
                    if exc.args[0].name() == "NON_EMPTY_GROUP":
                        failed.append(group)
                except Exception:
                    pass
            groups = failed
            if groups and time.monotonic() > deadline:
                break
            if groups:
                time.sleep(1)
        return groups
