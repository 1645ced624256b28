"""Membership: how this instance learns which input partitions (tasks) it owns.

The port is ``MembershipListener``: ``partitions_assigned`` / ``partitions_revoked`` /
``partitions_lost``, called on the processing thread. Newly assigned partitions start paused; the task
manager resumes each one when its task is RUNNING.

Today's adapter, ``ConsumerGroupMembership``, rides on the main consumer's group with librdkafka's
built-in cooperative-sticky assignor: librdkafka has no pluggable assignor, so the pure
``assignor.assign`` cannot run inside it. Standby and warm-up replicas need a member that carries our
assignor and per-member user data over the classic group protocol; docs/architecture.md records the spike
that chose the client for it.
"""
from __future__ import annotations

from typing import Protocol

from confluent_kafka import Consumer
from confluent_kafka import TopicPartition as KTopicPartition

from ..records import TopicPartition


class MembershipListener(Protocol):
    def partitions_assigned(self, partitions: list[TopicPartition]) -> None: ...

    def partitions_revoked(self, partitions: list[TopicPartition]) -> None:
        """Still owned while this runs: commit, then close."""
        ...

    def partitions_lost(self, partitions: list[TopicPartition]) -> None:
        """Already owned by someone else: close without committing."""
        ...


def _tps(partitions: list[KTopicPartition]) -> list[TopicPartition]:
    return [TopicPartition(p.topic, p.partition) for p in partitions]


class ConsumerGroupMembership:
    def __init__(self, consumer: Consumer):
        self._consumer = consumer
        self._listener: MembershipListener | None = None

    def join(self, topics: list[str], listener: MembershipListener) -> None:
        self._listener = listener
        self._consumer.subscribe(topics, on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost)

    # librdkafka calls these inside consumer.consume(), on the processing thread.
    def _on_assign(self, consumer: Consumer, partitions: list[KTopicPartition]) -> None:
        consumer.incremental_assign(partitions)
        if partitions:
            consumer.pause(partitions)
        self._listener.partitions_assigned(_tps(partitions))

    def _on_revoke(self, consumer: Consumer, partitions: list[KTopicPartition]) -> None:
        self._listener.partitions_revoked(_tps(partitions))
        consumer.incremental_unassign(partitions)

    def _on_lost(self, consumer: Consumer, partitions: list[KTopicPartition]) -> None:
        self._listener.partitions_lost(_tps(partitions))
        consumer.incremental_unassign(partitions)
