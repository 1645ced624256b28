"""Snapshots of the active tasks' stores, the runtime's side (issue #9): when a checkpoint is taken, of what,
under which ownership, and the hand-off to the uploader thread (``snapshot.Snapshotter``), which ships it.

``TaskSnapshots`` belongs to the stream thread; every method runs there. Steps (what a kill -9 right after
each leaves: docs/architecture.md, "Snapshots in the runtime"):

0. ``start``: delete the checkpoint directories a killed process left (``CHECKPOINTS_DIR`` under the app's
   state dir), open the object store and start the uploader. A store that cannot be opened (a file://
   directory that cannot be created) is opened again at most once per ``snapshot_interval_ms``; the app runs
   on without snapshots meanwhile.
1. ``task_assigned``: the ownership of a new active task: the group generation now and the wall-clock time.
2. ``after_commit(tasks)``, after every commit that went through: ``tasks`` are those whose input it
   committed (the group offsets under at-least-once, the transaction under exactly_once_v2;
   ``Committer.commit``), so their stores now hold committed state: each store's offset is remembered as
   *covered*. A store of a RUNNING task whose offset is still the covered one (unchanged since), that has
   files, holds state not shipped yet and whose last checkpoint in this ownership is ``snapshot_interval_ms``
   old (or that has none: the first comes with the task's first covering commit) is checkpointed into a new
   directory and submitted. With much data still in the memtable the backend first flushes it in the
   background (``checkpoint`` returns False) and the checkpoint follows at a later commit, as long as the
   store is unchanged or covered again. The checkpoint is the only cost to this thread (measured in
   docs/architecture.md, "Snapshots in the runtime").
3. ``task_closed``: the uploader forgets the partition: its queued checkpoint is dropped and the one in
   flight publishes nothing (a task that left this instance must not publish).
4. ``close``: the uploader stops within a bounded wait; queued checkpoints are deleted.

The fencing epoch is claimed by the uploader thread from the ownership (``snapshot.catalog.claim_epoch``,
one list call), never here: this thread never waits for the object store.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Callable

from ..config import Config
from ..errors import SnapshotStoreError
from ..observe.metrics import SnapshotMetrics
from ..observe.rate_limited import RateLimitedLog
from ..snapshot import ObjectStore, Ownership, SnapshotRequest, Snapshotter, remove_checkpoints
from ..snapshot.gc import LISTING_VALID_S
from ..state.state_dir import StateDirectory
from .task import Task, TaskState

log = logging.getLogger(__name__)

# Under the app's state dir (<state_dir>/<app_id>/): on the stores' file system, so checkpoints hard-link.
CHECKPOINTS_DIR = ".snapshot-checkpoints"
CLOSE_TIMEOUT_S = 10.0


class TaskSnapshots:
    def __init__(self, config: Config, state_dir: StateDirectory, metrics: SnapshotMetrics,
                 generation: Callable[[], int], instance_id: str | None = None,
                 open_store: Callable[[str, dict], ObjectStore] = ObjectStore.open,
                 clock: Callable[[], float] = time.monotonic, wall_clock: Callable[[], float] = time.time):
        """``generation()``: the group generation of this member right now (-1 without one)."""
        assert config.snapshot_store is not None
        self._config = config
        self._metrics = metrics
        self._generation = generation
        self._instance_id = instance_id
        self._open_store = open_store
        self._clock, self._wall = clock, wall_clock
        self._interval_s = config.snapshot_interval_ms / 1000
        self.root = Path(state_dir.root) / CHECKPOINTS_DIR
        self.snapshotter: Snapshotter | None = None
        self._next_open = 0.0
        self._ownership: dict[str, tuple[Task, Ownership]] = {}  # task id -> this instance's ownership of it
        self._covered: dict[tuple[str, str], int] = {}  # (task, store) -> offset a commit made committed state
        self._last: dict[tuple[str, str], tuple[float, int]] = {}  # (task, store) -> (taken at, changelog offset)
        self._seq = 0
        self._errors = RateLimitedLog(log, every_s=max(1.0, self._interval_s), clock=clock)

    # ---- 0 ----
    def start(self) -> None:
        removed = remove_checkpoints(self.root)
        if removed:
            log.info("deleted %d snapshot checkpoints a previous process left in %s", removed, self.root)
        self._open()

    def _open(self) -> bool:
        if self.snapshotter is not None:
            return True
        now = self._clock()
        if now < self._next_open:
            return False
        self._next_open = now + self._interval_s
        cfg = self._config
        try:
            objects = self._open_store(cfg.snapshot_store, cfg.snapshot_store_options)
        except SnapshotStoreError as exc:
            self._errors.warning("open", "snapshots are off until the snapshot store can be opened (tried again "
                                 "every snapshot_interval_ms): %s", exc)
            return False
        # A process stopped longer than half its session may have lost its tasks: it lists again first.
        publish_within_s = min(LISTING_VALID_S, cfg.session_timeout_ms / 2000)
        self.snapshotter = Snapshotter(objects, cfg.app_id, instance_id=self._instance_id,
                                       retain=cfg.snapshot_retain, error_log_every_s=self._interval_s,
                                       publish_within_s=publish_within_s, metrics=self._metrics)
        self.snapshotter.start()
        log.info("snapshots of the stores go to %s every %d ms", objects.location, cfg.snapshot_interval_ms)
        return True

    # ---- 1 and 3 ----
    def task_assigned(self, task: Task) -> None:
        generation = self._generation()
        if generation < 0:  # not expected: an assignment comes with a generation
            log.warning("task %s: assigned without a group generation; its stores are not snapshotted", task.id)
            return
        self._ownership[task.id] = (task, Ownership(generation, self._wall()))

    def task_closed(self, task: Task) -> None:
        self._ownership.pop(task.id, None)
        for name, store in task.stores.items():
            self._last.pop((task.id, name), None)
            self._covered.pop((task.id, name), None)
            if self.snapshotter is not None and store.backend.supports_checkpoint:
                self.snapshotter.forget(name, store.changelog.partition)

    # ---- 2 ----
    def after_commit(self, tasks: list[Task]) -> None:
        for task in tasks:
            if task.id in self._ownership:
                for name, store in task.stores.items():
                    offset = store.backend.changelog_offset() if store.backend.supports_checkpoint else None
                    if offset is not None:
                        self._covered[(task.id, name)] = offset
        if not self._covered or not self._open():
            return
        now = self._clock()
        for (tid, name), covered in list(self._covered.items()):
            task, ownership = self._ownership[tid]
            if task.state is not TaskState.RUNNING:  # restoring: the state updater owns its stores now
                continue
            offset = task.stores[name].backend.changelog_offset()
            last = self._last.get((tid, name))
            if offset != covered or (last is not None and (last[1] == offset or now - last[0] < self._interval_s)):
                continue
            self._take(task, name, offset, ownership, now)

    def _take(self, task: Task, name: str, offset: int, ownership: Ownership, now: float) -> None:
        store = task.stores[name]
        self._seq += 1
        into = self.root / f"{task.id}-{name}-{self._seq}"
        started = time.perf_counter()
        try:
            if not store.backend.checkpoint(str(into)):
                return  # flushing in the background first: tried again after the next commit
        except Exception as exc:  # e.g. a full disk: the app goes on; the next interval tries again
            self._last[(task.id, name)] = (now, -1)
            self._errors.warning(("checkpoint", name), "task %s: no snapshot of store %s this time, its checkpoint "
                                 "failed: %s", task.id, name, exc)
            return
        self._metrics.add_checkpoint(time.perf_counter() - started)
        self._last[(task.id, name)] = (now, offset)
        assert self.snapshotter is not None
        self.snapshotter.submit(SnapshotRequest(name, task.id, store.changelog.topic, store.changelog.partition,
                                                offset, None, into, ownership))

    # ---- 4 ----
    def close(self, timeout_s: float = CLOSE_TIMEOUT_S) -> None:
        if self.snapshotter is not None:
            self.snapshotter.close(timeout_s)
