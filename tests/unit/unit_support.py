"""Helpers for the unit tests: tasks over in-memory stores, a harness that drives a sub-topology
without Kafka, and fake Kafka messages. Nothing here talks to a broker."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import hotstate
from hotstate.observe.metrics import Metrics
from hotstate.records import TopicPartition
from hotstate.runtime.task import ProcessorContext, Task, TaskState, TaskStore
from hotstate.state.memory_store import MemoryBackend
from hotstate.state.overlay import Overlay
from hotstate.state.store import KeyValueStore, StoreSpec
from hotstate.state.window_memory import WindowMemoryBackend
from hotstate.state.session_store import SessionStore
from hotstate.state.window_store import WindowStore


def memory_task_store(spec: StoreSpec, changelog: TopicPartition) -> TaskStore:
    """A TaskStore built the way TaskManager._open_store builds one, on a MemoryBackend (a WindowMemoryBackend
    for a windowed store)."""
    def reopen() -> MemoryBackend:
        if spec.windowed:
            return WindowMemoryBackend(spec.name, spec.retention_ms)
        return MemoryBackend(spec.name)
    backend = reopen()
    overlay = Overlay(backend, ordered=spec.windowed)
    if spec.sessions:
        view = SessionStore(spec, overlay)
    else:
        view = WindowStore(spec, overlay) if spec.windowed else KeyValueStore(spec, overlay)
    return TaskStore(spec, changelog, backend, overlay, view, reopen)


def memory_task(app: hotstate.App, topic: str, partition: int = 0) -> Task:
    sub = app._topology.subtopology_of(topic)
    stores = {name: memory_task_store(spec, TopicPartition(spec.changelog_topic(app.config.app_id), partition))
              for name, spec in sub.stores.items()}
    return Task(sub, partition, stores)


@dataclass
class Sent:
    topic: str
    key: bytes | None
    value: bytes | None
    timestamp: int
    headers: Any = None
    partition: int | None = None  # None: the producer's partitioner chooses


class Harness:
    """Drives one task of an app's sub-topology the way TaskManager.process does, minus Kafka."""

    def __init__(self, app: hotstate.App, topic: str, partition: int = 0):
        self.task = memory_task(app, topic, partition)
        self.task.transition(TaskState.RESTORING)
        self.task.transition(TaskState.RUNNING)
        self.sent: list[Sent] = []
        self.metrics = Metrics()
        self.ctx = ProcessorContext(lambda t, k, v, ts, h=None, p=None: self.sent.append(Sent(t, k, v, ts, h, p)),
                                    self.metrics)
        self.task.init_processors(self.ctx, lambda: 0)  # processor classes: their instances (punctuations not run)
        self._offsets: dict[TopicPartition, int] = {}
        self._changelog_offsets: dict[str, int] = {}

    def pipe(self, key: Any, value: Any, timestamp: int = 1000, headers: Any = None, topic: str | None = None) -> None:
        """``topic``: which input of the task (default: its first)."""
        ctx, task = self.ctx, self.task
        tp = task.inputs[0] if topic is None else TopicPartition(topic, task.partition)
        offset = self._offsets.get(tp, 0)  # each input has its own offsets
        ctx.bind(task)
        ctx.topic, ctx.partition, ctx.offset = tp.topic, tp.partition, offset
        ctx.timestamp, ctx.headers = timestamp, headers
        task.start_record(ctx, key, value)
        task.sub.source_for(tp.topic).process(key, value, ctx)
        task.processed(tp, offset)
        self._offsets[tp] = offset + 1

    def store(self, name: str) -> Any:
        return self.task.stores[name].view

    def commit(self) -> dict[str, list]:
        """What Committer.write_stores does, with made-up changelog offsets; returns the changelog entries."""
        out = {}
        for name, s in self.task.stores.items():
            entries = s.overlay.entries()
            out[name] = entries
            if entries and s.spec.source_topic is not None:  # a table's store: its source's next offset
                s.backend.write(entries, self.task.next_offsets[s.changelog])
                s.overlay.clear()
            elif entries:
                nxt = self._changelog_offsets.get(name, 0) + len(entries)
                s.backend.write(entries, nxt)
                self._changelog_offsets[name] = nxt
                s.overlay.clear()
        self.task.mark_committed()
        return out


class FakeMsg:
    """The parts of confluent_kafka.Message the runtime reads."""

    def __init__(self, topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None,
                 timestamp: int = 0, headers: Any = None, error: Any = None):
        self._t, self._p, self._o, self._k, self._v = topic, partition, offset, key, value
        self._ts, self._h, self._e = timestamp, headers, error

    def topic(self) -> str:
        return self._t

    def partition(self) -> int:
        return self._p

    def offset(self) -> int:
        return self._o

    def key(self) -> bytes | None:
        return self._k

    def value(self) -> bytes | None:
        return self._v

    def timestamp(self) -> tuple[int, int]:
        return (1, self._ts)

    def headers(self) -> Any:
        return self._h

    def error(self) -> Any:
        return self._e
