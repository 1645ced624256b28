"""Purging repartition topics: records below the committed offsets are deleted, so the topics do not grow
(Kafka Streams' repartition purge). A record below a committed offset was processed and its results committed
(under exactly-once in the same transaction), so no task reads it again.

Off the critical path: the stream thread hands over committed offsets after each commit (``committed``), and at
most every ``repartition_purge_interval_ms`` one ``delete_records`` request is sent without waiting for it
(``maybe_purge``); its outcome is read the next time. While a request is unanswered no other is sent, so at most
one is in flight. A failed purge is logged and tried again with the next offsets: purging is an optimisation,
never needed for correctness.
"""
from __future__ import annotations

import logging
import time
from typing import Any, Callable, Iterable

log = logging.getLogger(__name__)


class RepartitionPurger:
    def __init__(self, topics: Iterable[str], delete_records: Callable[[dict[tuple[str, int], int]], list],
                 interval_ms: int, clock: Callable[[], float] = time.monotonic):
        """``delete_records(offsets)``: sends the request, returns its futures (``kafka.admin.Admin``)."""
        self._topics = frozenset(topics)
        self._delete = delete_records
        self._interval_s = interval_ms / 1000
        self._clock = clock
        self._next = clock() + self._interval_s
        self._pending: dict[tuple[str, int], int] = {}  # committed, not yet asked to purge
        self._purged: dict[tuple[str, int], int] = {}  # asked to purge below this
        self._in_flight: list = []
        self.requests = 0

    def committed(self, tasks: Iterable[Any]) -> None:
        """After a commit: the committed offsets of the tasks' repartition inputs."""
        for task in tasks:
            for tp, offset in task.committed_offsets.items():
                if tp.topic in self._topics and offset > self._purged.get((tp.topic, tp.partition), -1):
                    self._pending[(tp.topic, tp.partition)] = offset

    def maybe_purge(self) -> None:
        now = self._clock()
        if now < self._next or not self._topics:
            return
        self._next = now + self._interval_s
        if any(not f.done() for f in self._in_flight):
            return  # the last request is still out: never more than one in flight
        for f in self._in_flight:
            exc = f.exception()
            if exc is not None:
                log.warning("purging a repartition topic failed (%s); it is tried again with later offsets", exc)
        self._in_flight = []
        if not self._pending:
            return
        offsets, self._pending = self._pending, {}
        try:
            self._in_flight = self._delete(offsets)
        except Exception as exc:  # e.g. the admin client's local queue: tried again next time
            log.warning("purging repartition topics failed (%s); tried again in %.0fs", exc, self._interval_s)
            for tp, off in offsets.items():
                self._pending.setdefault(tp, off)
            return
        self._purged.update(offsets)
        self.requests += 1
