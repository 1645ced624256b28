"""The at-least-once commit, in numbered steps. What a crash right after each step leaves:

1. ``send_changelogs``: every store's uncommitted entries are handed to the producer, one record per key
   to the store's changelog partition. Crash: some may reach the changelog; stores and input offsets are
   unchanged. Restart restores those records too (the store then holds updates whose input is
   reprocessed: duplicates, allowed under at-least-once).
2. ``flush``: the producer delivers changelog and output records (acks=all, idempotent) and reports each
   changelog partition's last offset. Crash: as after 1, with all records in Kafka.
3. ``write_stores``: per store, the entries and the new changelog offset in one atomic RocksDB batch.
   Crash: stores are consistent with their changelogs; input offsets are not committed, so records since
   the last commit are processed again (duplicates downstream and in the aggregates: at-least-once).
4. ``commit_offsets``: the input offsets are committed synchronously. Crash: nothing is lost or repeated.

A crash never leaves a store ahead of its changelog: the store's offset only moves in step 3, after
step 2 made the records durable.
"""
from __future__ import annotations

import logging
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka import TopicPartition as KTopicPartition

from ..observe.metrics import Metrics
from .task import Task

log = logging.getLogger(__name__)


class DeliveryTracker:
    """The producer's delivery callback: remembers the last offset per changelog partition and errors."""

    def __init__(self, changelog_topics: set[str]):
        self._changelogs = changelog_topics
        self.last_offsets: dict[tuple[str, int], int] = {}
        self.errors: list[KafkaError] = []

    def __call__(self, err: KafkaError | None, msg: Any) -> None:
        if err is not None:
            self.errors.append(err)
            return
        topic = msg.topic()
        if topic in self._changelogs:
            key = (topic, msg.partition())
            offset = msg.offset()
            if offset > self.last_offsets.get(key, -1):
                self.last_offsets[key] = offset

    def take_errors(self) -> list[KafkaError]:
        errors, self.errors = self.errors, []
        return errors


class Committer:
    def __init__(self, consumer: Consumer, producer: Producer, tracker: DeliveryTracker, metrics: Metrics,
                 flush_timeout_s: float):
        self._consumer = consumer
        self._producer = producer
        self._tracker = tracker
        self._metrics = metrics
        self._flush_timeout_s = flush_timeout_s

    def commit(self, tasks: list[Task]) -> None:
        pending = {t.id: [(s, s.overlay.entries()) for s in t.stores.values()] for t in tasks}
        self.send_changelogs(tasks, pending)
        self.flush()
        self.write_stores(tasks, pending)
        self.commit_offsets(tasks)
        self._metrics.commits_total += 1

    def send_changelogs(self, tasks: list[Task], pending: dict) -> None:
        produce, poll = self._producer.produce, self._producer.poll
        for task in tasks:
            for store, entries in pending[task.id]:
                topic, partition = store.changelog
                for key, value in entries:
                    while True:
                        try:
                            produce(topic, value, key, partition=partition)
                            break
                        except BufferError:
                            poll(0.05)

    def flush(self) -> None:
        remaining = self._producer.flush(self._flush_timeout_s)
        if remaining:
            raise KafkaException(KafkaError(KafkaError._TIMED_OUT,
                                            f"{remaining} records not delivered within {self._flush_timeout_s}s"))
        errors = self._tracker.take_errors()
        if errors:
            raise KafkaException(errors[0])

    def write_stores(self, tasks: list[Task], pending: dict) -> None:
        last = self._tracker.last_offsets
        for task in tasks:
            for store, entries in pending[task.id]:
                if not entries:
                    continue
                offset = last.get((store.changelog.topic, store.changelog.partition))
                if offset is None:
                    raise RuntimeError(f"task {task.id}: no delivery report for changelog {store.changelog}")
                store.backend.write(entries, offset + 1)
                store.overlay.clear()

    def commit_offsets(self, tasks: list[Task]) -> None:
        offsets = [KTopicPartition(t.input.topic, t.input.partition, t.next_offset)
                   for t in tasks if t.needs_commit()]
        if not offsets:
            return
        try:
            self._consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            # e.g. a rebalance took the partitions away: the new owner reprocesses from the last commit.
            log.warning("committing input offsets failed (%s); the records since the last commit will be "
                        "processed again", exc.args[0])
            return
        for task in tasks:
            task.committed_offset = task.next_offset
