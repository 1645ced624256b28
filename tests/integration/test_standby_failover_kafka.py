"""Standby replicas with two instances of one app on the real broker: each instance keeps a standby of the
other's task, current from the changelog; when one instance leaves, its task becomes active on the other
and replays only the standby's lag."""
from __future__ import annotations

import threading

import pytest

import hotstate
from kafka_helpers import RecordingListener, build_word_count, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


class StandbyEvents(hotstate.StandbyUpdateListener):
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.events: list[tuple] = []

    def on_update_start(self, partition, store_name, starting_offset):  # noqa: ANN001
        with self.lock:
            self.events.append(("start", partition.partition, starting_offset))

    def on_batch_loaded(self, partition, store_name, task_id, batch_end_offset, batch_size, current_end_offset):  # noqa: ANN001
        with self.lock:
            self.events.append(("batch", partition.partition, batch_end_offset, batch_size))

    def on_update_suspended(self, partition, store_name, store_offset, current_end_offset, reason):  # noqa: ANN001
        with self.lock:
            self.events.append(("suspended", partition.partition, store_offset, reason))

    def of(self, kind: str) -> list[tuple]:
        with self.lock:
            return [e for e in self.events if e[0] == kind]


def actives(app: hotstate.App) -> set[str]:
    return {t.id for t in app.tasks() if not t.standby and t.state is hotstate.TaskState.RUNNING}


def standbys(app: hotstate.App) -> dict[str, int | None]:
    return {t.id: t.lag for t in app.tasks() if t.standby}


def produce_round(kafka, source: str, tag: str, n: int = 400) -> None:
    for p in (0, 1):
        kafka.produce_to(source, p, [(f"{tag}-{p}-{i % 50}".encode(), b"x") for i in range(n)])


@pytest.mark.parametrize("guarantee, kind", [("at_least_once", "rocksdb"), ("exactly_once_v2", "rocksdb"),
                                             ("at_least_once", "memory"), ("exactly_once_v2", "memory")])
def test_a_standby_follows_the_changelog_and_takes_over_replaying_only_its_lag(kafka, tmp_path, guarantee, kind):
    """Also with in-memory stores: the promoted standby hands its in-memory state to the active task."""
    source = kafka.create_topic(partitions=2, prefix="standby-words")
    app_id = kafka.app_id("standby")
    changelog = kafka.changelog(app_id, "word-counts")
    produce_round(kafka, source, "r1")
    common = dict(num_standby_replicas=1, session_timeout_ms=6000, processing_guarantee=guarantee,
                  store=hotstate.StoreSpec("word-counts", kind=kind))
    standby_a = StandbyEvents()
    a = build_word_count(kafka.bootstrap, app_id, tmp_path / "a", source, None, **common)
    a.set_standby_listener(standby_a)
    restore_b, standby_b = RecordingListener(), StandbyEvents()
    b = build_word_count(kafka.bootstrap, app_id, tmp_path / "b", source, None, listener=restore_b, **common)
    b.set_standby_listener(standby_b)
    a.start()
    try:
        wait_for(lambda: actives(a) == {"0_0", "0_1"}, "a to run both tasks", 60)
        wait_for(lambda: all(a.store("word-counts").get(f"r1-{p}-49") == 8 for p in (0, 1))
                 and all(t.stores["word-counts"].changelog_offset for t in a.tasks()), "a to commit round 1", 60)
        b.start()
        wait_for(lambda: len(actives(a)) == 1 and len(actives(b)) == 1, "one task to move to b", 90)
        a_task, b_task = next(iter(actives(a))), next(iter(actives(b)))
        wait_for(lambda: set(standbys(b)) == {a_task} and set(standbys(a)) == {b_task},
                 "each instance to keep a standby of the other's task", 60)
        p = int(a_task.split("_")[1])
        # a ran b's task before it moved: its standby of that task starts from the state a had (an in-memory
        # store is recycled from the revoked active task, a RocksDB store reopens from disk), not from 0.
        starts_a = [e for e in standby_a.of("start") if e[1] == int(b_task.split("_")[1])]
        assert starts_a and starts_a[0][2] > 0, standby_a.events

        produce_round(kafka, source, "r2")
        wait_for(lambda: a.store("word-counts").get(f"r2-{p}-49") == 8, "a to process round 2", 60)
        # The store shows writes before they are committed (its overlay), and under exactly-once the commit
        # marker reaches the changelog after commit_transaction returns: the end is read once a committed
        # every input record of round 2 and the changelog ends where a's committed store offset says it
        # must (one past it under exactly-once: the marker).
        input_end = kafka.ends(source)[p]
        wait_for(lambda: kafka.committed(app_id, source, 2).get(p) == input_end, "a to commit round 2", 60)
        marker = 1 if guarantee == "exactly_once_v2" else 0

        def a_stored() -> int | None:
            return next(t for t in a.tasks() if t.id == a_task).stores["word-counts"].changelog_offset

        wait_for(lambda: a_stored() is not None and kafka.ends(changelog)[p] == a_stored() + marker,
                 "the changelog end to settle after a's last commit", 30,
                 detail=lambda: (a_stored(), kafka.ends(changelog)[p]))
        end_before = kafka.ends(changelog)[p]

        def standby_offset() -> int | None:
            return next(t for t in b.tasks() if t.standby).stores["word-counts"].changelog_offset

        wait_for(lambda: standby_offset() == end_before, "b's standby store to reach the changelog end", 60,
                 detail=lambda: (standby_offset(), end_before, kafka.ends(changelog)[p]))
        wait_for(lambda: standbys(b).get(a_task) == 0, "b's standby to report lag 0", 30)
        assert standby_b.of("start") and standby_b.of("batch"), "the standby listener saw the standby load batches"

        assert a.close()  # a leaves the group: its task fails over to b's standby
        wait_for(lambda: actives(b) == {"0_0", "0_1"}, "b to take over a's task", 60)
        suspended = [e for e in standby_b.of("suspended") if e[1] == p]
        assert suspended and suspended[-1][3] is hotstate.SuspendReason.PROMOTED
        replayed = restore_b.totals().get(p, 0)
        # a's close may commit what it processed since the standby last caught up; nothing else is replayed.
        assert replayed <= kafka.ends(changelog)[p] - end_before, (replayed, end_before)
        store = b.store("word-counts")
        assert store.get(f"r1-{p}-7") == 8 and store.get(f"r2-{p}-7") == 8
    finally:
        a.close()
        b.close()
