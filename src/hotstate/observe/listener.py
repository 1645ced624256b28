"""Restore listeners (Kafka Streams' StateRestoreListener).

Threading: every callback runs on the state updater (restore) thread, never on the processing thread.
A callback must be quick and must not call back into the app (``close`` from a callback deadlocks).
An exception raised by a callback is logged and otherwise ignored: a listener cannot fail a restore.
"""
from __future__ import annotations

import logging

from ..records import TopicPartition

log = logging.getLogger(__name__)


class RestoreListener:
    """Subclass and override what you need. ``partition`` is the changelog's (topic, partition)."""

    def on_restore_start(self, partition: TopicPartition, store_name: str, start_offset: int, end_offset: int) -> None:
        """Restore of one store partition begins: it will read changelog offsets [start_offset, end_offset)."""

    def on_batch_restored(self, partition: TopicPartition, store_name: str, batch_end_offset: int, num_restored: int) -> None:
        """A batch was written to the store: ``num_restored`` records, the last at ``batch_end_offset``."""

    def on_restore_end(self, partition: TopicPartition, store_name: str, total_restored: int) -> None:
        """The store partition reached the changelog end after ``total_restored`` records."""


class _SafeListener:
    """Calls a user listener, logging (not raising) what it throws."""

    def __init__(self, inner: RestoreListener | None):
        self._inner = inner

    def __getattr__(self, name: str):  # on_restore_start / on_batch_restored / on_restore_end
        inner = self._inner

        def call(*args: object) -> None:
            if inner is None:
                return
            try:
                getattr(inner, name)(*args)
            except Exception:
                log.exception("restore listener %s.%s raised; ignored", type(inner).__name__, name)

        return call
