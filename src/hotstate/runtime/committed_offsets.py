"""The group's committed input offsets as a rewind reads them (runtime/task_manager.py): retried while the
coordinator moves or loads, and, after a known abort, the tasks' own last commits when the group's stay unreadable."""
from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Callable

from confluent_kafka import KafkaException
from confluent_kafka import TopicPartition as KTopicPartition

from ..config import Config
from ..observe.metrics import Metrics

if TYPE_CHECKING:
    from .task import Task

log = logging.getLogger(__name__)


def read_committed(read: Callable[[list[KTopicPartition], float], list[KTopicPartition]], tps: list[KTopicPartition],
                   config: Config, metrics: Metrics,
                   known: dict[tuple[str, int], int] | None = None) -> list[KTopicPartition]:
    """The group's committed offsets, retried while the coordinator moves or loads (a broker restart),
    for at most ``rewind_timeout_ms``.

    ``known``: after a known abort, the offsets every one of these inputs committed last from this instance.
    Those are exact: the aborted transaction committed nothing, and the group's offsets of partitions this
    member owns move only with its own commits (others' are fenced by the generation). After a broker restart
    the group was seen answering UNSTABLE_OFFSET_COMMIT for minutes although the new producer had settled this
    instance's transaction (docs/faults.md, "Session 7"); once the reads have failed for longer than a
    transaction may stay open (``transaction_timeout_ms``), the rewind goes to ``known`` instead of stopping."""
    start = time.monotonic()
    deadline = start + config.rewind_timeout_ms / 1000
    fall_back_at = start + config.transaction_timeout_ms / 1000 if known is not None else None
    delay = 0.1
    while True:
        try:
            return read(tps, config.broker_timeout_ms / 1000)
        except KafkaException as exc:
            err = exc.args[0]
            if err.fatal():
                raise RuntimeError(f"cannot read the committed input offsets to redo the work of an aborted "
                                   f"transaction: {err}; the app stops") from exc
            if fall_back_at is not None and time.monotonic() >= fall_back_at:
                assert known is not None
                log.warning("the group's committed offsets of %d input partitions are still unreadable after "
                            "%.0fs (%s); rewinding each to the offset this instance committed last, known exactly "
                            "after an aborted transaction", len(tps), time.monotonic() - start, err)
                metrics.rewinds_to_known_offsets_total += 1
                return [KTopicPartition(tp.topic, tp.partition, known[(tp.topic, tp.partition)]) for tp in tps]
            if time.monotonic() + delay > deadline:
                raise RuntimeError(f"cannot read the committed input offsets to redo the work of an aborted "
                                   f"transaction: {err}; the app stops, restart it when the broker is back") from exc
            log.warning("reading committed offsets failed (%s); retrying in %.1fs", err, delay)
            time.sleep(delay)
            delay = min(delay * 2, 2.0)


def known_committed(tasks: list[Task]) -> dict[tuple[str, int], int] | None:
    """The offset each input of ``tasks`` committed last from this instance, or None unless every input has one
    (a task that has not committed here yet knows nothing of the group's offsets)."""
    out: dict[tuple[str, int], int] = {}
    for task in tasks:
        for tp in task.inputs:
            offset = task.committed_offsets.get(tp)
            if offset is None:
                return None
            out[(tp.topic, tp.partition)] = offset
    return out
