"""Slow work during a rebalance must not cost the group membership (issue #10, defect 8). Opening a task's
stores, committing and closing revoked tasks can take long (a big RocksDB open, an exactly-once commit, a
flush); kafka-python runs the rebalance callbacks on the event loop that also sends the heartbeats, so work
done inside them for longer than session_timeout_ms got the member evicted mid-rebalance. The callbacks now
only record what changed; the stream thread does the work between the member's polls."""
from __future__ import annotations

import logging
import time

import pytest

import hotstate
from hotstate.state import backend as backend_mod
from hotstate.state.backend import ROCKSDB, BackendKind, register_backend
from hotstate.state.rocksdb_store import RocksDBBackend
from kafka_helpers import build_word_count, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

SESSION_MS = 6000


class SlowToOpen(RocksDBBackend):
    """A store whose open takes longer than the session timeout (a large RocksDB after a crash, a slow disk)."""

    opened: list[str] = []

    def __init__(self, name, path, *args, **kwargs):
        time.sleep(SESSION_MS / 1000 * 1.5)
        SlowToOpen.opened.append(path)
        super().__init__(name, path, *args, **kwargs)


def running_ids(app: hotstate.App) -> set[str]:
    return {t.id for t in app.tasks() if not t.standby and t.state is hotstate.TaskState.RUNNING}


def test_a_store_open_longer_than_the_session_timeout_keeps_the_member_in_the_group(kafka, tmp_path, monkeypatch,
                                                                                 caplog):
    caplog.set_level(logging.WARNING)
    source = kafka.create_topic(partitions=2, prefix="slow-open-words")
    app_id = kafka.app_id("slow-open")
    for p in range(2):
        kafka.produce_to(source, p, [(f"w{p}-{i % 20}".encode(), b"x") for i in range(200)])
    monkeypatch.setattr(backend_mod, "_KINDS", dict(backend_mod._KINDS))  # the registration ends with the test
    register_backend(BackendKind(ROCKSDB, persistent=True,
                                 open=lambda name, path, on_corruption: SlowToOpen(name, path, on_corruption)))
    SlowToOpen.opened = []
    app = build_word_count(kafka.bootstrap, app_id, tmp_path / "a", source, None, session_timeout_ms=SESSION_MS)
    app.start()
    try:
        wait_for(lambda: running_ids(app) == {"0_0", "0_1"}, "both tasks to run", 90,
                 detail=lambda: [(t.id, t.state.value) for t in app.tasks()])
        wait_for(lambda: app.store("word-counts").get("w1-19") == 10, "the records to be counted", 30)
        time.sleep(SESSION_MS / 1000)  # an eviction would show as a rebalance or lost partitions by now
        assert app.state is hotstate.AppState.RUNNING, app.error()
        # An evicted member loses its tasks and opens their stores again when it gets them back (a benign
        # second rebalance, e.g. after a metadata change, reopens nothing).
        assert len(SlowToOpen.opened) == 2, f"stores opened {SlowToOpen.opened}: the member was evicted"
        lost = [r.getMessage() for r in caplog.records  # hotstate's own report of lost tasks (not kafka-python's
                if r.name.startswith("hotstate") and "lost" in r.getMessage()]  # "Connection lost" of other tests)
        assert not lost, lost
    finally:
        assert app.close()
