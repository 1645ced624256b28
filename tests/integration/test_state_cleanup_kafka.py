"""state_cleanup_delay_ms with two instances of one app: a task that moves away and comes back within the
delay replays only its delta; after the delay its local state is gone and it restores in full."""
from __future__ import annotations

import pytest

import hotstate
from kafka_helpers import RecordingListener, build_word_count, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


def running_ids(app: hotstate.App) -> set[str]:
    return {t.id for t in app.tasks() if t.state is hotstate.TaskState.RUNNING}


def produce_round(kafka, source: str, tag: str, n: int = 300) -> None:
    for p in (0, 1):
        kafka.produce_to(source, p, [(f"{tag}-{p}-{i}".encode(), b"x") for i in range(n)])


@pytest.mark.parametrize("delay_ms, comes_back_with", [(600_000, "delta"), (1_000, "full")])
def test_task_moved_away_and_back(kafka, tmp_path, delay_ms, comes_back_with):
    source = kafka.create_topic(partitions=2, prefix="cleanup-words")
    app_id = kafka.app_id("cleanup")
    changelog = kafka.changelog(app_id, "word-counts")
    produce_round(kafka, source, "r1")
    listener_a = RecordingListener()
    a = build_word_count(kafka.bootstrap, app_id, tmp_path / "a", source, None, listener=listener_a,
                         state_cleanup_delay_ms=delay_ms, session_timeout_ms=6000)
    a.start()
    b = None
    try:
        wait_for(lambda: running_ids(a) == {"0_0", "0_1"}, "a to run both tasks", 60)
        wait_for(lambda: all(t.stores["word-counts"].changelog_offset == 300 for t in a.tasks()),
                 "a to commit round 1", 60)
        b = build_word_count(kafka.bootstrap, app_id, tmp_path / "b", source, None, session_timeout_ms=6000)
        b.start()
        wait_for(lambda: len(running_ids(b)) == 1 and len(running_ids(a)) == 1, "one task to move to b", 90)
        moved = next(iter(running_ids(b)))
        p = int(moved.split("_")[1])
        moved_dir = tmp_path / "a" / app_id / moved
        if comes_back_with == "full":
            wait_for(lambda: not moved_dir.exists(), "a's cleaner to delete the moved task's state", 30, 0.2)
        else:
            assert moved_dir.exists()
        produce_round(kafka, source, "r2")
        wait_for(lambda: kafka.ends(changelog)[p] >= 600, "b to process round 2 of its task", 60)
        assert b.close()
        b = None
        wait_for(lambda: running_ids(a) == {"0_0", "0_1"}, "the task to come back to a", 90)
        start, end = listener_a.starts()[p]
        ends = kafka.ends(changelog)
        assert end == ends[p]
        if comes_back_with == "delta":
            assert start == 300, "a kept the task's state: it replays only what b wrote"
            assert listener_a.totals()[p] == end - 300
        else:
            assert start == 0, "the state was cleaned up: a replays the whole changelog"
            assert listener_a.totals()[p] == end
        store = a.store("word-counts")
        assert store.get(f"r1-{p}-7") == 1 and store.get(f"r2-{p}-7") == 1
    finally:
        if b is not None:
            b.close()
        a.close()
