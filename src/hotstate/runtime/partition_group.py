"""Which record a task processes next when it reads several inputs (Kafka Streams' PartitionGroup).

A task of a sub-topology with several source topics (``merge``, a repartition topic beside a source) reads
partition p of each. Per task, the records of one poll are taken input by input, always from the input whose
buffered head has the smallest timestamp (the record's Kafka timestamp; a tie goes to the input listed first in
the sub-topology). Records of one input keep their offset order.

Only what this poll returned is buffered: an input with no records in it is not waited for (Kafka Streams'
``max.task.idle.ms`` = 0 would wait for data there; hotstate processes what it has, so an input that lags
behind can see its records processed after later ones of the other inputs). The order is deterministic for a
given poll result.
"""
from __future__ import annotations

import heapq
from typing import Any, Callable, Hashable, Iterable


def by_timestamp(msgs: Iterable[Any], task_of: Callable[[str, int], Hashable | None],
                 input_rank: Callable[[str], int]) -> list[Any]:
    """``msgs`` (confluent-kafka messages of one poll) in processing order. ``task_of(topic, partition)``: the
    task reading it (None: none here). ``input_rank(topic)``: the input's position in its sub-topology (the
    tie-break). Error events and records of no task come first, in their order; then each task's records (tasks in
    the order their first record came), merged by head timestamp."""
    first: list[Any] = []
    per_task: dict[Hashable, dict[tuple[str, int], list[Any]]] = {}
    for msg in msgs:
        if msg.error() is not None:
            first.append(msg)
            continue
        topic, partition = msg.topic(), msg.partition()
        task = task_of(topic, partition)
        if task is None:
            first.append(msg)
            continue
        per_task.setdefault(task, {}).setdefault((topic, partition), []).append(msg)
    out = first
    for inputs in per_task.values():
        if len(inputs) == 1:
            out.extend(next(iter(inputs.values())))
            continue
        out.extend(_merge(list(inputs.items()), input_rank))
    return out


def _merge(inputs: list[tuple[tuple[str, int], list[Any]]], input_rank: Callable[[str], int]) -> list[Any]:
    heap = []
    for (topic, _), queue in inputs:
        heap.append((queue[0].timestamp()[1], input_rank(topic), 0, queue))
    heapq.heapify(heap)
    out = []
    while heap:
        _, rank, i, queue = heapq.heappop(heap)
        out.append(queue[i])
        if i + 1 < len(queue):
            heapq.heappush(heap, (queue[i + 1].timestamp()[1], rank, i + 1, queue))
    return out
