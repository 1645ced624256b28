"""Restore runs on its own thread: while one task restores a long changelog, a RUNNING task keeps
processing new input (Kafka Streams' state updater behaviour)."""
from __future__ import annotations

import shutil
import threading
import time

import pytest

import hotstate
from kafka_helpers import build_word_count, wait_for, wait_processed

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


class SlowRestore(hotstate.RestoreListener):
    """Slows down the restore of changelog partition 0 so the test can act while it is under way."""

    def __init__(self) -> None:
        self.batches = 0
        self.release = threading.Event()

    def on_batch_restored(self, partition, store_name, batch_end_offset, num_restored):
        if partition.partition == 0:
            self.batches += 1
            self.release.wait(0.5)


def states(app: hotstate.App) -> dict[str, hotstate.TaskState]:
    return {t.id: t.state for t in app.tasks()}


def test_running_task_processes_while_another_restores(kafka, tmp_state_dir):
    source = kafka.create_topic(partitions=2, prefix="conc-words")
    app_id = kafka.app_id("conc")
    kafka.produce_to(source, 0, [(f"p0-{i}".encode(), b"x") for i in range(3000)])
    kafka.produce_to(source, 1, [(b"p1-old", b"x")])
    app = build_word_count(kafka.bootstrap, app_id, tmp_state_dir, source, None)
    app.start()
    try:
        app.wait_until_running(timeout_s=60)
        wait_processed(app, 3001)
    finally:
        assert app.close()
    shutil.rmtree(tmp_state_dir / app_id / "0_0")  # task 0_0 must restore 3000 records; 0_1 nothing

    listener = SlowRestore()
    app = build_word_count(kafka.bootstrap, app_id, tmp_state_dir, source, None, listener=listener,
                           restore_batch_records_max=100, restore_consume_records_max=100)
    app.start()
    try:
        wait_for(lambda: states(app).get("0_1") is hotstate.TaskState.RUNNING
                 and states(app).get("0_0") is hotstate.TaskState.RESTORING, "0_1 RUNNING while 0_0 RESTORING", 60)
        kafka.produce_to(source, 1, [(b"p1-new", b"x"), (b"p1-old", b"x")])
        wait_for(lambda: app.store("word-counts").get("p1-new") == 1, "0_1 to process new input", 30)
        assert app.store("word-counts").get("p1-old") == 2
        assert states(app)["0_0"] is hotstate.TaskState.RESTORING, "the restore should still be under way"
        assert app.state is hotstate.AppState.REBALANCING  # not every task RUNNING yet
        listener.release.set()
        app.wait_until_running(timeout_s=60)
        assert listener.batches >= 2
        store = app.store("word-counts")
        assert [store.get(f"p0-{i}") for i in (0, 1500, 2999)] == [1, 1, 1]
    finally:
        listener.release.set()
        assert app.close()
