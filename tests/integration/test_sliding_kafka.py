"""A sliding-window count on the real broker, under both guarantees: the last update of every window in the
output topic and the store's live windows equal the windows' definition (tests/window_reference.py), with
records ahead of stream time, out of order within grace and late beyond it; a restore from a wiped state dir
holds the same windows."""
from __future__ import annotations

import random
import shutil
import struct
import time

import pytest

import hotstate
from hotstate import serde, windows
from kafka_helpers import partition_for, wait_for, wait_processed
from window_reference import SlidingReference

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

PARTITIONS = 2
D, GRACE = 500, 300
RETENTION = 2 * D + GRACE + 1
STORE = "last-half-second"
USERS = [f"user-{i}" for i in range(5)]
KEY_SERDE = serde.time_windowed(serde.STRING, D)


def build(kafka, app_id, state_dir, source, sink, guarantee):
    app = hotstate.App(app_id=app_id, bootstrap_servers=kafka.bootstrap, state_dir=str(state_dir),
                       processing_guarantee=guarantee, commit_interval_ms=100)
    (app.stream(source, key_serde=serde.STRING, value_serde=serde.STRING)
        .group_by_key()
        .windowed_by(windows.sliding(time_difference_ms=D, grace_ms=GRACE))
        .count(store=STORE)
        .to_stream().to(sink, value_serde=serde.INT64))
    return app


def make_records(rng: random.Random, base: int, n: int) -> list[tuple[str, int]]:
    """Per partition, each record ahead of its stream time, behind it within grace, or beyond grace + D (dropped):
    the definition is exact for these (no record is late for some of its windows only)."""
    out, stream_time = [], {p: base for p in range(PARTITIONS)}
    for _ in range(n):
        user = rng.choice(USERS)
        p = partition_for(user, PARTITIONS)
        where = rng.choice(["ahead", "ahead", "ahead", "within", "beyond"])
        st = stream_time[p]
        if where == "ahead":
            ts = st + rng.randint(0, 120)
        elif where == "within":
            ts = st - rng.randint(0, GRACE)
        else:
            ts = st - GRACE - D - rng.randint(1, 500)
            if ts < base:  # not that far yet: ahead instead
                ts = st + rng.randint(0, 120)
        ts = max(base, ts)
        stream_time[p] = max(st, ts)
        out.append((user, ts))
    return out


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once_v2"])
def test_sliding_count_matches_the_definition_and_restores(kafka, tmp_state_dir, guarantee):
    source = kafka.create_topic(partitions=PARTITIONS, prefix="sld-clicks")
    sink = kafka.create_topic(partitions=PARTITIONS, prefix="sld-counts")
    app_id = kafka.app_id("sld")
    base = (int(time.time() * 1000) // 1000 - 3_600) * 1000
    records = make_records(random.Random(21), base + 10_000, 600)
    producer = kafka.producer()
    for user, ts in records:
        producer.produce(source, b"click", user.encode(), partition=partition_for(user, PARTITIONS), timestamp=ts)
    assert producer.flush(30) == 0
    refs = {p: SlidingReference(D, GRACE, RETENTION) for p in range(PARTITIONS)}
    for user, ts in records:
        refs[partition_for(user, PARTITIONS)].process(user, ts)
    assert all(r.partial == 0 for r in refs.values()) and sum(r.dropped for r in refs.values()) > 0
    every = {w: v for r in refs.values() for w, v in r.windows().items()}
    live = {w: v for r in refs.values() for w, v in r.live().items()}

    def last_updates() -> dict:
        got = {}
        for m in kafka.read_all(sink):
            w = KEY_SERDE.deserialize(m.key())
            got[(w.key, w.start_ms)] = struct.unpack(">q", m.value())[0]
        return got

    def check_store(app) -> None:
        store = app.store(STORE)
        assert sorted(store.fetch_all(0, 2**62)) == sorted((k, s, v) for (k, s), v in live.items())

    app = build(kafka, app_id, tmp_state_dir, source, sink, guarantee)
    app.start()
    try:
        app.wait_until_running(timeout_s=60)
        wait_processed(app, len(records), timeout_s=90)
        wait_for(lambda: last_updates() == every, "every window's last update to equal its definition", 60, 0.5)
        assert app.metrics()["dropped_late_records_total"] == {f"0_{p}": r.dropped for p, r in refs.items()
                                                                if r.dropped}
        check_store(app)
    finally:
        assert app.close()

    shutil.rmtree(tmp_state_dir)
    app = build(kafka, app_id, tmp_state_dir, source, sink, guarantee)
    app.start()
    try:
        app.wait_until_running(timeout_s=60)
        check_store(app)
    finally:
        assert app.close()
