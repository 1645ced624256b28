"""A windowed count on the real broker, under both guarantees: the output topic, the changelog (its records'
timestamps, its topic config), the store's queries and the late-record metric against the reference of
tests/window_reference.py; then a restore from a wiped state dir, and stream time surviving it."""
from __future__ import annotations

import random
import shutil
import struct
import time
from collections import defaultdict

import pytest
from confluent_kafka.admin import ConfigResource, ResourceType

import hotstate
from hotstate import serde, windows
from kafka_helpers import RecordingListener, partition_for, wait_for, wait_processed
from window_reference import Reference

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

PARTITIONS = 2
SIZE, ADVANCE, GRACE, RETENTION = 1_000, 500, 300, 4_000
STORE = "clicks-per-window"
USERS = [f"user-{i}" for i in range(6)]


def build(kafka, app_id, state_dir, source, sink, guarantee, listener=None):
    app = hotstate.App(app_id=app_id, bootstrap_servers=kafka.bootstrap, state_dir=str(state_dir),
                       processing_guarantee=guarantee, commit_interval_ms=100)
    table = (app.stream(source, key_serde=serde.STRING, value_serde=serde.STRING)
                .group_by_key()
                .windowed_by(windows.hopping(size_ms=SIZE, advance_ms=ADVANCE, grace_ms=GRACE, retention_ms=RETENTION))
                .count(store=STORE))
    table.to_stream().to(sink, value_serde=serde.INT64)
    if listener is not None:
        app.set_restore_listener(listener)
    return app


def make_records(rng: random.Random, base: int, n: int) -> list[tuple[str, int]]:
    """(user, timestamp): time moves on ~20 ms a record, out of order by up to 1.5 s (within and beyond grace)."""
    out = []
    for i in range(n):
        jitter = rng.choice([0, 0, 0, -rng.randint(0, 250), -rng.randint(300, 1_500)])
        out.append((rng.choice(USERS), max(base, base + i * 20 + jitter)))
    return out


def produce_timed(kafka, topic: str, records: list[tuple[str, int]]) -> None:
    producer = kafka.producer()
    for user, ts in records:
        producer.produce(topic, b"click", user.encode(), partition=partition_for(user, PARTITIONS), timestamp=ts)
    assert producer.flush(30) == 0


def references(records: list[tuple[str, int]]) -> dict[int, Reference]:
    refs = {p: Reference(SIZE, ADVANCE, GRACE, RETENTION) for p in range(PARTITIONS)}
    for user, ts in records:
        refs[partition_for(user, PARTITIONS)].process(user, ts, lambda old: 1 if old is None else old + 1)
    return refs


def first_difference(got: dict, want: dict) -> str:
    for key in sorted(set(got) | set(want)):
        if got.get(key) != want.get(key):
            return f"window {key}: got {got.get(key)}, want {want.get(key)} ({len(got)} / {len(want)} windows)"
    return "no difference"


def window_key(raw: bytes) -> tuple[str, int]:
    return raw[:-8].decode(), struct.unpack(">q", raw[-8:])[0]


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once_v2"])
def test_windowed_count_matches_the_reference_and_restores_only_live_windows(kafka, tmp_state_dir, guarantee):
    source = kafka.create_topic(partitions=PARTITIONS, prefix="win-clicks")
    sink = kafka.create_topic(partitions=PARTITIONS, prefix="win-counts")
    app_id = kafka.app_id("win")
    base = (int(time.time() * 1000) // 1000 - 3_600) * 1000  # an hour ago, on a window boundary
    records = make_records(random.Random(5), base, 1_500)
    produce_timed(kafka, source, records)
    refs = references(records)
    dropped = sum(r.dropped for r in refs.values())
    assert dropped > 0  # the data has late records

    app = build(kafka, app_id, tmp_state_dir, source, sink, guarantee)
    app.start()
    try:
        app.wait_until_running(timeout_s=60)
        wait_processed(app, len(records), timeout_s=90)
        changelog = kafka.changelog(app_id, STORE)
        # The output: every update of every window, in order per window (a window's key picks its output
        # partition), stamped with the window's event time.
        expected_out = defaultdict(list)
        for r in refs.values():
            for k, start, end, v, ts in r.emitted:
                expected_out[(k, start)].append((v, ts))

        def output() -> dict[tuple[str, int], list]:
            got = defaultdict(list)
            for m in kafka.read_all(sink):
                got[window_key(m.key())].append((struct.unpack(">q", m.value())[0], m.timestamp()[1]))
            return dict(got)
        wait_for(lambda: output() == expected_out, "the output topic to equal the reference", 60, 0.5,
                 detail=lambda: first_difference(output(), expected_out))
        assert sum(app.metrics()["dropped_late_records_total"].values()) == dropped
        per_task = {f"0_{p}": r.dropped for p, r in refs.items() if r.dropped}
        assert app.metrics()["dropped_late_records_total"] == per_task

        # Interactive queries: the live windows of the reference, nothing expired.
        store = app.store(STORE)
        live = {w: v for r in refs.values() for w, v in r.live().items()}
        assert live and len(live) < sum(len(r.values) for r in refs.values())  # some windows expired
        for user in USERS:
            assert store.fetch(user, 0, 2**62) == sorted((s, v) for (k, s), v in live.items() if k == user)
        assert sorted(store.fetch_all(0, 2**62)) == sorted((k, s, v) for (k, s), v in live.items())

        # The changelog: compact,delete with retention + the additional retention; records stamped with event time.
        res = ConfigResource(ResourceType.TOPIC, changelog)
        configs = kafka.admin.describe_configs([res])[res].result(timeout=30)
        assert set(configs["cleanup.policy"].value.split(",")) == {"compact", "delete"}
        assert int(configs["retention.ms"].value) == RETENTION + 86_400_000
        wait_for(lambda: sum(kafka.ends(changelog).values()) > 0, "changelog records", 30)
        msgs = kafka.read_all(changelog)
        assert msgs and all(m.timestamp()[1] == struct.unpack(">q", m.value()[:8])[0] for m in msgs)
    finally:
        assert app.close()

    # A restore from a wiped state dir holds exactly the live windows, and stream time came back with it: a
    # record late for the newest stream time is dropped, not counted into a window that had closed.
    shutil.rmtree(tmp_state_dir)
    listener = RecordingListener()
    app = build(kafka, app_id, tmp_state_dir, source, sink, guarantee, listener)
    app.start()
    try:
        app.wait_until_running(timeout_s=60)
        assert listener.total_restored() > 0
        store = app.store(STORE)
        for user in USERS:
            assert store.fetch(user, 0, 2**62) == sorted((s, v) for (k, s), v in live.items() if k == user)
        # The restore wrote no expired window into the stores (read before anything else can write them).
        tm = app._thread.task_manager
        held = sum(len(list(t.stores[STORE].backend.range(None, None))) for t in list(tm.tasks.values()))
        assert held == len(live)
        user = USERS[0]
        p = partition_for(user, PARTITIONS)
        late = refs[p].stream_time - SIZE - GRACE - 1  # every window holding it closed before the restart
        produce_timed(kafka, source, [(user, late)])
        wait_processed(app, 1, timeout_s=60)
        wait_for(lambda: app.metrics()["dropped_late_records_total"].get(f"0_{p}", 0) == 2,  # two hopping windows
                 "the late record to be dropped", 30, 0.2, detail=lambda: app.metrics()["dropped_late_records_total"])
        assert store.fetch(user, 0, 2**62) == sorted((s, v) for (k, s), v in live.items() if k == user)
    finally:
        assert app.close()
