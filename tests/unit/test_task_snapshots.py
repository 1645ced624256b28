"""The runtime's side of snapshots without a broker (runtime/snapshots.py): which stores are checkpointed after
a commit and when, under which ownership, what a task that leaves cancels, and that a snapshot store that
cannot be opened never stops the caller. The real-broker proofs are tests/integration/test_snapshots_kafka.py."""
from __future__ import annotations

import logging
import time
from pathlib import Path

from hotstate import serde
from hotstate.errors import SnapshotStoreError
from hotstate.observe.metrics import SnapshotMetrics
from hotstate.records import TopicPartition
from hotstate.runtime.snapshots import CHECKPOINTS_DIR, TaskSnapshots
from hotstate.runtime.task import Task, TaskState, TaskStore
from hotstate.snapshot import Catalog, ObjectStore, Outcome, PartitionPaths
from hotstate.state.memory_store import MemoryBackend
from hotstate.state.overlay import Overlay
from hotstate.state.rocksdb_store import RocksDBBackend
from hotstate.state.state_dir import StateDirectory
from hotstate.state.store import MEMORY, KeyValueStore, StoreSpec


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def _store(spec: StoreSpec, backend, partition: int) -> TaskStore:
    overlay = Overlay(backend)
    return TaskStore(spec, TopicPartition(f"unit-app-{spec.name}-changelog", partition), backend, overlay,
                     KeyValueStore(spec, overlay), lambda: backend)


def _task(app, tmp_path: Path, partition: int = 0) -> Task:
    sub = app._topology.subtopologies[0]
    stores = {"c": _store(StoreSpec("c"), RocksDBBackend("c", str(tmp_path / f"db{partition}")), partition),
              "m": _store(StoreSpec("m", kind=MEMORY), MemoryBackend("m"), partition)}
    task = Task(sub, partition, stores)
    task.transition(TaskState.RESTORING)
    task.transition(TaskState.RUNNING)
    return task


def _setup(make_app, tmp_path, open_store=ObjectStore.open, interval_ms=1000):
    app = make_app(snapshot_store=f"file://{tmp_path}/snaps", snapshot_interval_ms=interval_ms)
    app.stream("words", key_serde=serde.STRING, value_serde=serde.STRING).group_by_key().count("c")
    state_dir = StateDirectory(app.config.state_dir, app.config.app_id)
    clock, generation = Clock(), [7]
    snaps = TaskSnapshots(app.config, state_dir, SnapshotMetrics(), lambda: generation[0], open_store=open_store,
                          clock=clock)
    return app, snaps, clock, generation


def _manifests(tmp_path, partition=0) -> list[tuple[int, int]]:
    listing = Catalog(ObjectStore.open(f"file://{tmp_path}/snaps")).list_partition(
        PartitionPaths("unit-app", "c", partition))
    return sorted((m.epoch, m.offset) for m in listing.manifests)


def test_checkpoints_follow_commits_that_covered_the_state_at_most_once_per_interval(make_app, tmp_path):
    app, snaps, clock, generation = _setup(make_app, tmp_path)
    snaps.start()
    task = _task(app, tmp_path)
    snaps.task_assigned(task)  # generation 7
    generation[0] = 9  # later rebalances keep the ownership's generation
    store = task.stores["c"].backend
    store.write([(b"a", b"1")], 5)
    task.stores["m"].backend.write([(b"x", b"1")], 3)
    snaps.after_commit([])  # a commit that committed no input of this task: its state is not known committed
    assert snaps.snapshotter is not None and snaps._metrics.checkpoints_total == 0
    snaps.after_commit([task])  # the first: at once
    assert snaps.snapshotter.wait_idle(30)
    assert _manifests(tmp_path) == [(7, 5)]
    assert not (tmp_path / "snaps" / "unit-app" / "m").exists(), "a store in memory is never snapshotted"
    store.write([(b"a", b"2")], 6)
    clock.now += 0.5
    snaps.after_commit([task])  # within the interval
    clock.now += 0.6
    snaps.after_commit([])  # a later commit without input of the task: offset 6 is still the covered one
    assert snaps.snapshotter.wait_idle(30)
    assert _manifests(tmp_path) == [(7, 5), (7, 6)]
    clock.now += 5
    snaps.after_commit([task])  # the offset did not move: no checkpoint
    assert snaps._metrics.checkpoints_total == 2 and snaps._metrics.checkpoint_seconds_max > 0
    snaps.close()
    store.close()
    assert not any((Path(snaps.root)).iterdir()), "every checkpoint directory was deleted once shipped"


def test_a_task_that_leaves_drops_its_queued_checkpoint_and_a_new_ownership_starts_over(make_app, tmp_path):
    app, snaps, clock, generation = _setup(make_app, tmp_path)
    snaps.start()
    snaps.snapshotter.close()  # shipped by nobody: what is submitted stays queued... and is dropped at once
    task = _task(app, tmp_path)
    snaps.task_assigned(task)
    task.stores["c"].backend.write([(b"a", b"1")], 5)
    snaps.after_commit([task])
    results = snaps.snapshotter.drain_results()
    assert [r.outcome for r in results] == [Outcome.FAILED]  # closed uploader: dropped, directory deleted
    snaps.task_closed(task)
    assert snaps._last == {} and snaps._ownership == {}
    snaps.after_commit([task])  # a closed task has no ownership: nothing
    assert snaps._metrics.checkpoints_total == 1
    task.stores["c"].backend.close()


def test_start_deletes_checkpoints_a_killed_process_left(make_app, tmp_path):
    app, snaps, clock, generation = _setup(make_app, tmp_path)
    left = Path(snaps.root) / "0_0-c-3"
    left.mkdir(parents=True)
    (left / "000012.sst").write_bytes(b"x")
    assert snaps.root == Path(app.config.state_dir) / "unit-app" / CHECKPOINTS_DIR
    snaps.start()
    assert not left.exists()
    snaps.close()


def test_a_store_that_cannot_be_opened_leaves_the_app_running_and_is_tried_again_each_interval(make_app, tmp_path, caplog):
    attempts = []

    def failing_open(url, options):
        attempts.append(url)
        if len(attempts) < 3:
            raise SnapshotStoreError(f"snapshot store {url}: cannot use the directory (Permission denied)")
        return ObjectStore.open(url, options)

    app, snaps, clock, generation = _setup(make_app, tmp_path, open_store=failing_open)
    with caplog.at_level(logging.WARNING, "hotstate.runtime.snapshots"):
        snaps.start()
        task = _task(app, tmp_path)
        snaps.task_assigned(task)
        task.stores["c"].backend.write([(b"a", b"1")], 5)
        for _ in range(5):
            snaps.after_commit([task])  # within one interval: not tried again, nothing raised
        assert len(attempts) == 1 and snaps.snapshotter is None
        clock.now += 1.1
        snaps.after_commit([task])
        assert len(attempts) == 2
        warnings = [r for r in caplog.records if "snapshots are off" in r.getMessage()]
        assert len(warnings) == 2 and "Permission denied" in warnings[0].getMessage()
        clock.now += 1.1
        snaps.after_commit([task])  # opens now, and snapshots at once
    assert len(attempts) == 3 and snaps.snapshotter is not None
    assert snaps.snapshotter.wait_idle(30)
    assert _manifests(tmp_path) == [(7, 5)]
    snaps.close()
    task.stores["c"].backend.close()


def test_state_no_commit_covered_is_never_checkpointed(make_app, tmp_path):
    """At-least-once: a transient failure of the offset commit still writes the stores; until a later commit
    covers that state, no checkpoint of it is taken, however much time passes."""
    app, snaps, clock, generation = _setup(make_app, tmp_path)
    snaps.start()
    task = _task(app, tmp_path)
    snaps.task_assigned(task)
    store = task.stores["c"].backend
    store.write([(b"a", b"1")], 5)
    snaps.after_commit([task])  # covered at 5, shipped
    assert snaps.snapshotter.wait_idle(30)
    store.write([(b"a", b"2")], 8)  # written by a commit whose offsets were not committed
    for _ in range(3):
        clock.now += 5
        snaps.after_commit([])
    assert snaps._metrics.checkpoints_total == 1
    snaps.after_commit([task])  # the next commit covers it
    assert snaps.snapshotter.wait_idle(30)
    assert _manifests(tmp_path) == [(7, 5), (7, 8)]
    snaps.close()
    store.close()


def test_a_big_memtable_is_flushed_in_the_background_and_checkpointed_at_a_later_commit(make_app, tmp_path):
    app, snaps, clock, generation = _setup(make_app, tmp_path)
    snaps.start()
    task = _task(app, tmp_path)
    snaps.task_assigned(task)
    store = task.stores["c"].backend
    store.write([(b"k%06d" % i, b"x" * 200) for i in range(10_000)], 10_000)  # ~2 MB in the memtable
    snaps.after_commit([task])
    assert snaps._metrics.checkpoints_total == 0, "the first call only starts a background flush"
    deadline = clock.now + 3000
    while snaps._metrics.checkpoints_total == 0:  # later commits, without input of the task
        assert clock.now < deadline
        clock.now += 0.1
        time.sleep(0.005)
        snaps.after_commit([])
    assert snaps.snapshotter.wait_idle(30)
    assert _manifests(tmp_path) == [(7, 10_000)]
    snaps.close()
    store.close()


def test_a_restoring_task_is_left_to_the_state_updater(make_app, tmp_path):
    app, snaps, clock, generation = _setup(make_app, tmp_path)
    snaps.start()
    task = _task(app, tmp_path)
    snaps.task_assigned(task)
    task.stores["c"].backend.write([(b"k%06d" % i, b"x" * 200) for i in range(10_000)], 10_000)
    snaps.after_commit([task])  # covered; the checkpoint waits for a background flush
    task.transition(TaskState.SUSPENDED)
    task.transition(TaskState.RESTORING)  # e.g. an exactly-once commit of unknown outcome
    for _ in range(20):
        time.sleep(0.05)
        clock.now += 1
        snaps.after_commit([])
    assert snaps._metrics.checkpoints_total == 0, "the store of a RESTORING task belongs to the state updater"
    task.transition(TaskState.RUNNING)
    snaps.after_commit([])
    assert snaps._metrics.checkpoints_total == 1
    snaps.close()
    task.stores["c"].backend.close()
