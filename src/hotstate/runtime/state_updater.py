"""The state updater: the one thread that restores stores from their changelogs and keeps standby replicas
current. This module holds the thread, its loop and the hand-off API; the reading itself, for active and
standby tasks alike (two modes of one reader, each store partition with its state), is the
``ChangelogReader`` in changelog_reader.py, which this thread alone drives.

Hand-off API (Kafka Streams' StateUpdater): the processing thread calls ``add(task)`` for a task in
RESTORING, ``remove(task_id) -> Future`` when it loses one, and ``drain_restored()`` /
``drain_failed()`` in its loop; ``add_standby(task)`` / ``remove_standby(task_id, reason) -> Future`` for
standby (and warm-up) tasks, and ``standby_lags()`` / ``standby_offsets()`` for the assignor. Tasks it
holds are touched by no other thread. A task id is restoring (active) or standby here, never both: ``add``
of a standby's id raises (remove the standby first), so does ``add_standby`` of a restoring or standby id.

The loop: each pass handles the queued commands (runs of adds start together: one assign call), then serves
restoring stores if there are any (a restore round, or a check of their flushes), else runs a standby
round, then the standby upkeep (flushes, changelog ends). Priority, durability, lags and errors:
changelog_reader.py. ``snapshot_source`` (optional): stores with no usable local state may start from a
downloaded snapshot (the reader's DOWNLOADING state).
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from concurrent.futures import Future
from typing import Callable

from confluent_kafka import Consumer

from ..config import Config
from ..errors import IllegalStateTransition
from ..observe.listener import RestoreListener, StandbyUpdateListener, SuspendReason, _SafeListener
from ..observe.metrics import Metrics
from .changelog_partition import FLUSH_POLL_S
from .changelog_reader import ChangelogReader
from .snapshot_download import SnapshotSource
from .task import Task

log = logging.getLogger(__name__)

_IDLE_WAIT_S = 0.1


class StateUpdater:
    def __init__(self, config: Config, consumer_factory: Callable[[], Consumer],
                 listener: RestoreListener | None, metrics: Metrics,
                 standby_listener: StandbyUpdateListener | None = None,
                 ends_consumer_factory: Callable[[], Consumer] | None = None,
                 snapshot_source: SnapshotSource | None = None, snapshot_staging_dir: str | None = None,
                 tail_consumer_factory: Callable[[], Consumer] | None = None,
                 group_consumer_factory: Callable[[], Consumer] | None = None):
        """``ends_consumer_factory``: a ``read_uncommitted`` consumer for changelog high watermarks
        (``clients.end_offsets_consumer``); without it the restore consumer is asked. ``snapshot_source`` and
        ``snapshot_staging_dir``, ``tail_consumer_factory``, ``group_consumer_factory``: see ``ChangelogReader``."""
        self._config = config
        self._consumer_factory = consumer_factory
        self._metrics = metrics
        self._reader = ChangelogReader(config, metrics, _SafeListener(listener),
                                       _SafeListener(standby_listener, "standby"), self._restored_one,
                                       self._failed_one, ends_consumer_factory, snapshot_source, snapshot_staging_dir,
                                       tail_consumer_factory, group_consumer_factory)
        self._commands: queue.Queue = queue.Queue()
        self._restored: list[Task] = []
        self._failed: list[tuple[Task, BaseException]] = []
        self._out_lock = threading.Lock()
        # Set when a task is restored or failed (or the thread failed): wakes ``wait_for_outcome``.
        self._outcome = threading.Event()
        # The processing thread's view, for refusing a task that would be active and standby at once.
        self._ids_lock = threading.Lock()
        self._active_ids: set[str] = set()  # added and not yet drained or removed
        self._standby_tasks: dict[str, Task] = {}  # added as standby and not yet removed
        self._submit_lock = threading.Lock()
        self._closed = False  # the thread answers no more commands
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="hotstate-state-updater", daemon=True)
        self.fatal_error: BaseException | None = None

    # ---- hand-off API (processing thread; standby_* any thread) ----
    def start(self) -> None:
        self._open_consumer()
        self._thread.start()

    def _open_consumer(self) -> None:
        self._reader.consumer = self._consumer_factory()

    def add(self, *tasks: Task) -> None:
        """Restore these tasks. Tasks added in one call start together (one assign call, every snapshot download
        at once): the thread may take a command as soon as it is queued, so the tasks of one assignment were
        started one by one when added one by one."""
        with self._ids_lock:
            for task in tasks:
                if task.id in self._standby_tasks:
                    raise IllegalStateTransition(
                        f"task {task.id} is a standby in the state updater; remove_standby({task.id!r}, reason) "
                        "it before adding it as an active task")
            self._active_ids.update(task.id for task in tasks)
        if tasks:
            self._commands.put(("add", list(tasks), None))

    def remove(self, task_id: str) -> Future:
        """Stop restoring the task; the future resolves to the task (its stores flushed) or None."""
        fut: Future = Future()
        with self._ids_lock:
            self._active_ids.discard(task_id)
        if not self._submit(("remove", task_id, fut)):  # nothing restores any more: the task's stores are idle
            fut.set_result(None)
        return fut

    def drain_restored(self) -> list[Task]:
        with self._out_lock:
            out, self._restored = self._restored, []
        if out:
            with self._ids_lock:
                self._active_ids.difference_update(t.id for t in out)
        return out

    def wait_for_outcome(self, timeout_s: float) -> bool:
        """Blocks until a task was restored or failed (or the thread failed) since the last call, at most
        ``timeout_s``; True if one was. The processing thread waits here instead of in the main consumer while
        it has nothing to process, so a restored task starts as soon as it is handed over (the consumer's wait
        cannot be cut short). Drain afterwards: what is handed over after this returns sets it again."""
        if self._outcome.wait(timeout_s):
            self._outcome.clear()
            return True
        return False

    def drain_failed(self) -> list[tuple[Task, BaseException]]:
        with self._out_lock:
            out, self._failed = self._failed, []
        if out:
            with self._ids_lock:
                self._active_ids.difference_update(t.id for t, _ in out)
        return out

    def add_standby(self, task: Task) -> None:
        """Keep the task's stores current from their changelogs until ``remove_standby``."""
        with self._ids_lock:
            if task.id in self._standby_tasks:
                raise IllegalStateTransition(f"task {task.id} is a standby in the state updater already")
            if task.id in self._active_ids:
                raise IllegalStateTransition(
                    f"task {task.id} is restoring as an active task in the state updater; remove it (or drain it) "
                    "before adding it as a standby")
            self._standby_tasks[task.id] = task
        self._commands.put(("add_standby", task, None))

    def remove_standby(self, task_id: str, reason: SuspendReason) -> Future:
        """Stop updating the standby; the future resolves to its task once the updater no longer touches its
        stores (None if unknown). The standby listener hears ``on_update_suspended`` for each store first."""
        fut: Future = Future()
        with self._ids_lock:
            task = self._standby_tasks.pop(task_id, None)
        if not self._submit(("remove_standby", (task_id, reason), fut)):  # no thread: its stores are idle
            fut.set_result(task)
        return fut

    def standby_lags(self) -> dict[str, int]:
        """Per standby task, the sum over its stores of (changelog end - store offset); a snapshot, any thread.
        A standby that failed (it stopped tailing after an error, see the log) is left out."""
        return self._reader.standby_lags()

    def standby_offsets(self) -> dict[str, int]:
        """Per standby task, the sum of its stores' changelog offsets (a store without state counts at its
        changelog's start); a snapshot, any thread."""
        return self._reader.standby_offsets()

    def standby_task_ids(self) -> list[str]:
        return self._reader.standby_task_ids()

    def restoring_task_ids(self) -> list[str]:
        return self._reader.active_task_ids()

    def _submit(self, cmd: tuple) -> bool:
        """Queues a command the thread must answer; False when no thread runs to answer it."""
        with self._submit_lock:
            if self._closed or not self._thread.is_alive():
                return False
            self._commands.put(cmd)
            return True

    def shutdown(self, timeout_s: float | None) -> None:
        """Stops the thread and waits for it at most ``timeout_s`` (None: until it has ended)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    # ---- the reader's outcomes (updater thread) ----
    def _restored_one(self, task: Task) -> None:
        with self._out_lock:
            self._restored.append(task)
        self._outcome.set()

    def _failed_one(self, task: Task, exc: BaseException) -> None:
        with self._out_lock:
            self._failed.append((task, exc))
        self._outcome.set()

    # ---- the thread ----
    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self.run_once()
        except BaseException as exc:  # the thread must not die silently
            log.exception("state updater failed")
            self.fatal_error = exc
            with self._out_lock:
                self._failed.extend((t, exc) for t in self._reader.active_tasks())
            self._outcome.set()
        finally:
            self._reader.close()
            with self._submit_lock:
                self._closed = True
            self._resolve_pending_removes()

    def run_once(self, wait: bool = True) -> None:
        """One pass of the thread's loop: commands, then a restore round (or a check of restore flushes), else
        a standby round, then the standby upkeep. The thread calls it in a loop; a deterministic simulation
        calls it directly (``wait=False``: no idle wait for commands)."""
        reader = self._reader
        restoring, flushing, standby = reader.activity()
        # No wait when a consume follows (it waits itself); a short one when only flushes are polled.
        self._handle_commands(wait_s=0 if not wait or restoring else FLUSH_POLL_S if flushing
                              else 0 if standby else _IDLE_WAIT_S)
        restoring, flushing, standby = reader.activity()
        if restoring or flushing:
            began = time.perf_counter()
            if restoring:
                reader.restore_round()
            else:
                reader.check_flushed()
            metrics = self._metrics
            metrics.restore_busy_s += time.perf_counter() - began
            metrics.restore_busy_rate.sample(metrics.restore_busy_s)
        elif standby:
            reader.standby_round()
        if reader.has_standbys():
            reader.maintain_standbys(time.monotonic())

    def _resolve_pending_removes(self) -> None:
        while True:
            try:
                kind, arg, fut = self._commands.get_nowait()
            except queue.Empty:
                return
            if kind == "remove":
                fut.set_result(None)
            elif kind == "remove_standby":
                fut.set_result(self._reader.forget_standby(arg[0]))

    def _handle_commands(self, wait_s: float) -> None:
        try:
            cmd = self._commands.get(timeout=wait_s) if wait_s > 0 else self._commands.get_nowait()
        except queue.Empty:
            return
        # Runs of adds start together (one assign call); everything keeps its order.
        run_kind, run = "add", []
        while True:
            kind, arg, fut = cmd
            if run and kind != run_kind:
                self._start(run_kind, run)
                run = []
            if kind == "remove":
                self._remove_task(arg, fut)
            elif kind == "remove_standby":
                fut.set_result(self._reader.remove_standby(arg[0], arg[1]))
            else:  # "add" carries a list of tasks, "add_standby" one task
                run_kind = kind
                run.extend(arg) if kind == "add" else run.append(arg)
            try:
                cmd = self._commands.get_nowait()
            except queue.Empty:
                break
        self._start(run_kind, run)
        self._reader.sync_pauses()

    def _start(self, kind: str, tasks: list[Task]) -> None:
        if not tasks:
            return
        if kind == "add":
            self._reader.start_actives(tasks)
        else:
            self._reader.start_standbys(tasks)

    def _remove_task(self, task_id: str, fut: Future) -> None:
        try:
            task = self._reader.remove_active(task_id)
        except BaseException as exc:
            fut.set_exception(exc)
            return
        if task is None:  # not restoring: maybe restored and not drained yet
            with self._out_lock:
                task = next((t for t in self._restored if t.id == task_id), None)
                if task is not None:
                    self._restored.remove(task)
        fut.set_result(task)
