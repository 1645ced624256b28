"""A store's changelog partition in the changelog reader: its lifecycle (``ChangelogState``, the transitions
allowed, and the states each ``Mode`` may take) and the reader's record of a task. What each state means, with
the diagram: changelog_reader.py. Shared by the reader's active half (changelog_reader.py) and its standby half
(standby_reading.py)."""
from __future__ import annotations

import enum
import logging
from dataclasses import dataclass, field

from confluent_kafka import TopicPartition as KTopicPartition

from ..errors import IllegalStateTransition
from ..observe.metrics import StoreRestoreMetrics
from ..records import TopicPartition
from .task import Task, TaskStore

log = logging.getLogger("hotstate.runtime.changelog_reader")

FLUSH_POLL_S = 0.005  # nothing to read, only flushes to wait for
CONSUME_WAIT_S = 0.1


class ChangelogState(enum.Enum):
    REGISTERED = "REGISTERED"
    DOWNLOADING = "DOWNLOADING"
    RESTORING = "RESTORING"
    UPDATING = "UPDATING"
    PAUSED = "PAUSED"
    FLUSHING = "FLUSHING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CLOSED = "CLOSED"


class Mode(enum.Enum):
    ACTIVE = "ACTIVE"  # restore to the changelog end, then hand the task back
    STANDBY = "STANDBY"  # tail the changelog until removed (standby and warm-up tasks)


_S = ChangelogState
_TRANSITIONS: dict[ChangelogState, frozenset[ChangelogState]] = {
    _S.REGISTERED: frozenset({_S.DOWNLOADING, _S.RESTORING, _S.UPDATING, _S.COMPLETED, _S.FAILED, _S.CLOSED}),
    _S.DOWNLOADING: frozenset({_S.RESTORING, _S.UPDATING, _S.COMPLETED, _S.FAILED, _S.CLOSED}),
    _S.RESTORING: frozenset({_S.FLUSHING, _S.FAILED, _S.CLOSED}),
    _S.UPDATING: frozenset({_S.PAUSED, _S.FLUSHING, _S.FAILED, _S.CLOSED}),
    _S.PAUSED: frozenset({_S.UPDATING, _S.FAILED, _S.CLOSED}),
    _S.FLUSHING: frozenset({_S.COMPLETED, _S.UPDATING, _S.PAUSED, _S.FAILED, _S.CLOSED}),
    _S.COMPLETED: frozenset(),
    _S.FAILED: frozenset(),
    _S.CLOSED: frozenset(),
}
# The states a partition of each mode can be in: RESTORING and COMPLETED are active, UPDATING and PAUSED standby.
_MODE_STATES: dict[Mode, frozenset[ChangelogState]] = {
    Mode.ACTIVE: frozenset(_S) - {_S.UPDATING, _S.PAUSED},
    Mode.STANDBY: frozenset(_S) - {_S.RESTORING, _S.COMPLETED},
}
TERMINAL_STATES = frozenset({_S.COMPLETED, _S.FAILED, _S.CLOSED})
READING_STATES = {Mode.ACTIVE: frozenset({_S.RESTORING}),  # records of the partition go into its store
            Mode.STANDBY: frozenset({_S.UPDATING, _S.PAUSED, _S.FLUSHING})}
PAUSED_STATES = frozenset({_S.PAUSED, _S.FLUSHING})  # a standby partition paused in the consumer


@dataclass(eq=False)
class ChangelogPartition:
    """One store's changelog partition in the reader. Only the state updater's thread changes it; other
    threads read ``offset`` and ``end_offset`` (standby lags), which may be one update old."""

    task: Task
    store: TaskStore
    mode: Mode
    state: ChangelogState = ChangelogState.REGISTERED
    end_offset: int = 0  # active: the end read at the start; standby: the changelog end last seen
    offset: int = 0  # standby: the store's changelog offset (the changelog start while the store holds nothing)
    restored: int = 0  # active: records written by this restore
    metrics: StoreRestoreMetrics | None = None  # active
    dirty: bool = False  # standby: written since its last flush began
    flushed_at: float = 0.0  # standby
    announced: bool = False  # standby: the standby listener heard on_update_start (it hears one suspend then)
    # Assigned in the consumer, and records of it go into the store: a function of mode and state, kept with the
    # state by ``transition`` because the record loop asks it for every run of records.
    reading: bool = field(default=False, init=False)

    @property
    def tp(self) -> TopicPartition:
        return self.store.changelog

    @property
    def ktp(self) -> KTopicPartition:
        tp = self.store.changelog
        return KTopicPartition(tp.topic, tp.partition)

    @property
    def paused(self) -> bool:
        return self.mode is Mode.STANDBY and self.state in PAUSED_STATES

    @property
    def live(self) -> bool:
        return self.state not in TERMINAL_STATES

    def transition(self, to: ChangelogState) -> None:
        if to not in _TRANSITIONS[self.state] or to not in _MODE_STATES[self.mode]:
            raise IllegalStateTransition(f"changelog {self.tp} of store {self.store.spec.name} (task {self.task.id}, "
                                         f"{self.mode.value}): {self.state.value} -> {to.value} is not allowed")
        log.debug("changelog %s (%s): %s -> %s", self.tp, self.mode.value, self.state.value, to.value)
        self.state = to
        self.reading = to in READING_STATES[self.mode]


@dataclass(eq=False)
class ReaderTask:
    task: Task
    partitions: list[ChangelogPartition] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return any(p.state is ChangelogState.FAILED for p in self.partitions)

    @property
    def completed(self) -> bool:
        return all(p.state is ChangelogState.COMPLETED for p in self.partitions)
