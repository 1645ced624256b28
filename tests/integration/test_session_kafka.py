"""A session count on the real broker, under both guarantees: the output topic (merged sessions' tombstones
included, Kafka Streams' session-windowed keys), the store's queries, the late-record metric and the changelog
(every record stamped with its session's end, tombstones too) against the reference of tests/window_reference.py;
then a restore from a wiped state dir (retention-aware: it depends on those timestamps) holds the live sessions."""
from __future__ import annotations

import random
import shutil
import struct
import time
from collections import defaultdict

import pytest

import hotstate
from hotstate import serde, windows
from kafka_helpers import RecordingListener, partition_for, wait_for, wait_processed
from window_reference import SessionReference

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

PARTITIONS = 2
GAP, GRACE, RETENTION = 300, 200, 3_000
STORE = "clicks-per-session"
USERS = [f"user-{i}" for i in range(5)]


def build(kafka, app_id, state_dir, source, sink, guarantee, listener=None):
    app = hotstate.App(app_id=app_id, bootstrap_servers=kafka.bootstrap, state_dir=str(state_dir),
                       processing_guarantee=guarantee, commit_interval_ms=100)
    table = (app.stream(source, key_serde=serde.STRING, value_serde=serde.STRING)
                .group_by_key()
                .windowed_by(windows.session(inactivity_gap_ms=GAP, grace_ms=GRACE, retention_ms=RETENTION))
                .count(store=STORE))
    table.to_stream().to(sink, value_serde=serde.INT64)
    if listener is not None:
        app.set_restore_listener(listener)
    return app


def make_records(rng: random.Random, base: int, n: int) -> list[tuple[str, int]]:
    """(user, timestamp): bursts of clicks with pauses longer than the gap, out of order within and beyond grace."""
    out, now = [], base
    for _ in range(n):
        now += rng.choice([10, 40, 120, 350, 900])
        jitter = rng.choice([0, 0, 0, -rng.randint(0, 400), -rng.randint(500, 1_500)])
        out.append((rng.choice(USERS), max(base, now + jitter)))
    return out


def produce_timed(kafka, topic: str, records: list[tuple[str, int]]) -> None:
    producer = kafka.producer()
    for user, ts in records:
        producer.produce(topic, b"click", user.encode(), partition=partition_for(user, PARTITIONS), timestamp=ts)
    assert producer.flush(30) == 0


def references(records: list[tuple[str, int]]) -> dict[int, SessionReference]:
    refs = {p: SessionReference(GAP, GRACE, RETENTION) for p in range(PARTITIONS)}
    for user, ts in records:
        refs[partition_for(user, PARTITIONS)].process(user, ts)
    return refs


def first_difference(got: dict, want: dict) -> str:
    for key in sorted(set(got) | set(want)):
        if got.get(key) != want.get(key):
            return f"session {key}: got {got.get(key)}, want {want.get(key)} ({len(got)} / {len(want)} sessions)"
    return "no difference"


def live_of(refs: dict[int, SessionReference]) -> dict:
    return {s: v for r in refs.values() for s, v in r.live().items()}


def check_queries(app, live: dict) -> None:
    store = app.store(STORE)
    for user in USERS:
        assert store.fetch(user, 0, 2**62) == sorted((s, e, v) for (k, s, e), v in live.items() if k == user)
    assert sorted(store.fetch_all(0, 2**62)) == sorted((k, s, e, v) for (k, s, e), v in live.items())


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once_v2"])
def test_session_count_matches_the_reference_and_restores(kafka, tmp_state_dir, guarantee):
    source = kafka.create_topic(partitions=PARTITIONS, prefix="ses-clicks")
    sink = kafka.create_topic(partitions=PARTITIONS, prefix="ses-counts")
    app_id = kafka.app_id("ses")
    base = (int(time.time() * 1000) // 1000 - 3_600) * 1000  # an hour ago: event time far behind the wall clock
    records = make_records(random.Random(11), base, 800)
    produce_timed(kafka, source, records)
    refs = references(records)
    dropped = sum(r.dropped for r in refs.values())
    merges = sum(1 for r in refs.values() for e in r.emitted if e[3] is None)
    assert dropped > 0 and merges > 0  # the data has late records and merges

    key_serde = serde.session_windowed(serde.STRING)
    expected_out = defaultdict(list)
    for r in refs.values():
        for k, start, end, v, ts in r.emitted:
            expected_out[(k, start, end)].append((v, ts))

    def output() -> dict:
        got = defaultdict(list)
        for m in kafka.read_all(sink):
            w = key_serde.deserialize(m.key())
            v = None if m.value() is None else struct.unpack(">q", m.value())[0]
            got[(w.key, w.start_ms, w.end_ms)].append((v, m.timestamp()[1]))
        return dict(got)

    app = build(kafka, app_id, tmp_state_dir, source, sink, guarantee)
    app.start()
    try:
        app.wait_until_running(timeout_s=60)
        wait_processed(app, len(records), timeout_s=90)
        wait_for(lambda: output() == expected_out, "the output topic to equal the reference", 60, 0.5,
                 detail=lambda: first_difference(output(), expected_out))
        assert app.metrics()["dropped_late_records_total"] == {f"0_{p}": r.dropped for p, r in refs.items()
                                                                if r.dropped}
        live = live_of(refs)
        assert live and len(live) < len(expected_out)  # some sessions expired or merged away
        check_queries(app, live)
        changelog = kafka.changelog(app_id, STORE)
        msgs = kafka.read_all(changelog)
        assert any(m.value() is None for m in msgs)  # merged sessions' tombstones
        for m in msgs:  # every record stamped with its session's end (event time), never the wall clock
            assert m.timestamp()[1] == struct.unpack(">q", m.key()[-8:])[0]
    finally:
        assert app.close()

    shutil.rmtree(tmp_state_dir)
    listener = RecordingListener()
    app = build(kafka, app_id, tmp_state_dir, source, sink, guarantee, listener)
    app.start()
    try:
        app.wait_until_running(timeout_s=60)
        assert listener.total_restored() > 0
        check_queries(app, live)
        tm = app._thread.task_manager
        held = sum(len(list(t.stores[STORE].backend.range(None, None))) for t in list(tm.tasks.values()))
        assert held == len(live)
    finally:
        assert app.close()
