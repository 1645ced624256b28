"""The retention-aware restore of a session store on the real broker: a session changelog (puts and the
tombstones of merged sessions, each stamped with its session's end) whose oldest records are expired but kept by
the broker is restored from a wiped state dir by seeking past them; the store's sessions equal the reference."""
from __future__ import annotations

import shutil
import struct
import time

import pytest

import hotstate
from hotstate import serde, windows
from kafka_helpers import RecordingListener, wait_processed
from window_reference import SessionReference

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

GAP, GRACE = 300, 0  # retention gap + grace = 300 ms
STORE = "sessions"
USERS = [f"u{i:02d}" for i in range(40)]


def build(kafka, app_id, state_dir, source, guarantee, listener=None):
    app = hotstate.App(app_id=app_id, bootstrap_servers=kafka.bootstrap, state_dir=str(state_dir),
                       processing_guarantee=guarantee, commit_interval_ms=100)
    (app.stream(source, key_serde=serde.STRING, value_serde=serde.STRING)
        .group_by_key().windowed_by(windows.session(inactivity_gap_ms=GAP, grace_ms=GRACE)).count(store=STORE))
    if listener is not None:
        app.set_restore_listener(listener)
    return app


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once_v2"])
def test_a_wiped_restore_of_a_session_store_seeks_past_the_expired_records(kafka, tmp_state_dir, guarantee):
    source = kafka.create_topic(partitions=1, prefix="ses-restore")
    app_id = kafka.app_id("ses-restore")
    base = int(time.time() * 1000) // 1000 * 1000  # event time close to the wall clock (see the windowed test)
    # Each user's records come in pairs 10 ms apart (the second merges into the first's session: a tombstone),
    # every 800 ms (a new session): 40 s of event time, ~99% of the sessions expire.
    records = [(USERS[(i // 2) % len(USERS)], base + i * 10) for i in range(4_000)]
    producer = kafka.producer()
    app = build(kafka, app_id, tmp_state_dir, source, guarantee)
    app.start()
    try:
        app.wait_until_running(timeout_s=60)
        for i in range(0, len(records), 200):  # in slices: many commits' worth of changelog records
            for user, ts in records[i:i + 200]:
                producer.produce(source, b"x", user.encode(), partition=0, timestamp=ts)
            producer.flush(30)
            wait_processed(app, i + 200, timeout_s=60)
    finally:
        assert app.close()

    ref = SessionReference(GAP, GRACE, GAP + GRACE)
    for user, ts in records:
        ref.process(user, ts)
    live = ref.live()
    changelog = kafka.changelog(app_id, STORE)
    msgs = kafka.read_all(changelog)
    end = kafka.ends(changelog)[0]
    assert any(m.value() is None for m in msgs)
    expired = [m for m in msgs if struct.unpack(">q", m.key()[-8:])[0] <= ref.stream_time - GAP - GRACE]
    assert len(expired) >= 0.9 * len(msgs), (len(expired), len(msgs))  # the premise: the oldest 90% expired

    shutil.rmtree(tmp_state_dir)
    listener = RecordingListener()
    app = build(kafka, app_id, tmp_state_dir, source, guarantee, listener)
    app.start()
    try:
        app.wait_until_running(timeout_s=60)
        (start, end_offset), = listener.starts().values()
        assert end_offset == end and app.metrics()["restore_skipped_records_total"] == start
        first_live = min(m.offset() for m in msgs
                         if struct.unpack(">q", m.key()[-8:])[0] > ref.stream_time - GAP - GRACE)
        assert start >= 0.9 * end and start <= first_live
        store = app.store(STORE)
        assert sorted(store.fetch_all(0, 2**62)) == sorted((k, s, e, v) for (k, s, e), v in live.items())
        task, = app._thread.task_manager.tasks.values()
        assert task.stream_time == ref.stream_time
        assert len(list(task.stores[STORE].backend.range(None, None))) == len(live)  # nothing expired written
    finally:
        assert app.close()
