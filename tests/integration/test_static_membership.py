"""Static membership (group_instance_id): an instance that restarts within the session timeout gets its
tasks back without a rebalance — the other instance's tasks keep running — and replays nothing."""
from __future__ import annotations

import threading
import time

import pytest

import hotstate
from kafka_helpers import RecordingListener, build_word_count, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


def running_ids(app: hotstate.App) -> set[str]:
    return {t.id for t in app.tasks() if t.state is hotstate.TaskState.RUNNING}


def test_static_member_restarts_without_a_rebalance(kafka, tmp_path):
    source = kafka.create_topic(partitions=4, prefix="static-words")
    app_id = kafka.app_id("static")
    for p in range(4):
        kafka.produce_to(source, p, [(f"w{p}-{i}".encode(), b"x") for i in range(200)])

    def build(name: str, listener=None) -> hotstate.App:
        return build_word_count(kafka.bootstrap, app_id, tmp_path / name, source, None, listener=listener,
                                group_instance_id=f"{app_id}-{name}", session_timeout_ms=30_000)

    a, b = build("a"), build("b")
    a.start()
    b.start()
    watching = threading.Event()
    a_changes: list[set[str]] = []
    try:
        wait_for(lambda: len(running_ids(a)) == 2 and len(running_ids(b)) == 2, "two tasks on each instance", 90,
                 detail=lambda: {"a": [(t.id, t.state.value) for t in a.tasks()], "b": [(t.id, t.state.value) for t in b.tasks()],
                                 "a metrics": a.metrics()["rebalances_total"], "b metrics": b.metrics()["rebalances_total"]})
        wait_for(lambda: all(t.stores["word-counts"].changelog_offset == 200 for t in a.tasks() + b.tasks()),
                 "both to commit what they processed", 60)
        a_tasks, b_tasks = running_ids(a), running_ids(b)
        a_rebalances = a.metrics()["rebalances_total"]

        def watch_a() -> None:  # any change of a's RUNNING tasks during b's restart is a rebalance
            while watching.is_set():
                now = running_ids(a)
                if now != a_tasks:
                    a_changes.append(now)
                time.sleep(0.01)

        watching.set()
        watcher = threading.Thread(target=watch_a, daemon=True)
        watcher.start()
        assert b.close()
        listener = RecordingListener()
        b = build("b", listener)
        b.start()
        b.wait_until_running(timeout_s=25)  # well within the 30 s session timeout
        assert running_ids(b) == b_tasks, "the restarted static member got other tasks"
        assert listener.total_restored() == 0, listener.events
        watching.clear()
        watcher.join(5)
        assert a_changes == [], f"the other instance's tasks changed during the restart: {a_changes}"
        assert a.metrics()["rebalances_total"] == a_rebalances, "the restart caused a rebalance"
        assert running_ids(a) == a_tasks
    finally:
        watching.clear()
        b.close()
        a.close()
