"""Restore listeners (Kafka Streams' StateRestoreListener) and standby listeners (StandbyUpdateListener).

Threading: every callback runs on the state updater (restore) thread, never on the processing thread.
A callback must be quick and must not call back into the app (``close`` from a callback deadlocks).
An exception raised by a callback is logged and otherwise ignored: a listener cannot fail a restore,
nor stop a standby.
"""
from __future__ import annotations

import enum
import logging

from ..records import TopicPartition

log = logging.getLogger(__name__)


class RestoreListener:
    """Subclass and override what you need. ``partition`` is the changelog's (topic, partition)."""

    def on_snapshot_downloaded(self, partition: TopicPartition, store_name: str, snapshot_offset: int,
                               num_bytes: int, seconds: float) -> None:
        """The store partition adopted a snapshot downloaded from the snapshot store (``num_bytes`` in
        ``seconds``): it holds the changelog up to ``snapshot_offset``. Called only for a snapshot that was
        used, before ``on_restore_start`` of the changelog tail (which then starts at ``snapshot_offset``)."""

    def on_restore_start(self, partition: TopicPartition, store_name: str, start_offset: int, end_offset: int) -> None:
        """Restore of one store partition begins: it will read changelog offsets [start_offset, end_offset)."""

    def on_batch_restored(self, partition: TopicPartition, store_name: str, batch_end_offset: int, num_restored: int) -> None:
        """A batch was written to the store: ``num_restored`` records, the last at ``batch_end_offset``."""

    def on_restore_end(self, partition: TopicPartition, store_name: str, total_restored: int) -> None:
        """The store partition reached the changelog end after ``total_restored`` records."""


class SuspendReason(enum.Enum):
    """Why a standby store stopped being updated (Kafka Streams' StandbyUpdateListener.SuspendReason)."""

    MIGRATED = "MIGRATED"  # the standby moved to another instance (or this one is closing)
    PROMOTED = "PROMOTED"  # the task became active here: it restores from the standby's state


class StandbyUpdateListener:
    """Follows standby stores (Kafka Streams' StandbyUpdateListener). Subclass and override what you need.
    ``partition`` is the changelog's (topic, partition). A standby store partition sees one
    ``on_update_start``, any number of ``on_batch_loaded`` and one ``on_update_suspended``."""

    def on_update_start(self, partition: TopicPartition, store_name: str, starting_offset: int) -> None:
        """The store starts tailing its changelog at ``starting_offset``: the store's changelog offset (the
        next offset it will apply), or the changelog's start if it holds no state."""

    def on_batch_loaded(self, partition: TopicPartition, store_name: str, task_id: str, batch_end_offset: int,
                        batch_size: int, current_end_offset: int) -> None:
        """A batch was written to the store: ``batch_size`` records, the last at ``batch_end_offset``.
        ``current_end_offset`` is the changelog's end as last seen (its high watermark: the next offset
        to be written)."""

    def on_update_suspended(self, partition: TopicPartition, store_name: str, store_offset: int,
                            current_end_offset: int, reason: SuspendReason) -> None:
        """The store is no longer updated. ``store_offset`` is its changelog offset (every record below it
        is applied; the changelog's start if it never held state), ``current_end_offset`` the changelog end
        last seen: their difference is how far behind the store stopped."""


class _SafeListener:
    """Calls a user listener, logging (not raising) what it throws."""

    def __init__(self, inner: RestoreListener | StandbyUpdateListener | None, kind: str = "restore"):
        self._inner = inner
        self._kind = kind

    def __getattr__(self, name: str):  # on_restore_start / on_batch_restored / on_update_start / ...
        inner = self._inner
        kind = self._kind

        def call(*args: object) -> None:
            if inner is None:
                return
            try:
                getattr(inner, name)(*args)
            except Exception:
                log.exception("%s listener %s.%s raised; ignored", kind, type(inner).__name__, name)

        return call
