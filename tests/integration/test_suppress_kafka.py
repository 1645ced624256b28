"""suppress_until_window_closes on the real broker, under both guarantees: a windowed count's final results
(one per window, after end + grace) equal the reference of tests/window_reference.py, across a restart from a
wiped state dir in the middle of the input: the suppression buffer (its windows still open) comes back from its
changelog, so no window is lost or emitted twice."""
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
from window_reference import Reference, SuppressReference

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

PARTITIONS = 2
SIZE, GRACE = 1_000, 300
STORE = "clicks-per-second"
USERS = [f"user-{i}" for i in range(6)]
KEY_SERDE = serde.time_windowed(serde.STRING, SIZE)


def build(kafka, app_id, state_dir, source, final_topic, guarantee, listener=None):
    app = hotstate.App(app_id=app_id, bootstrap_servers=kafka.bootstrap, state_dir=str(state_dir),
                       processing_guarantee=guarantee, commit_interval_ms=100)
    table = (app.stream(source, key_serde=serde.STRING, value_serde=serde.STRING)
                .group_by_key()
                .windowed_by(windows.tumbling(size_ms=SIZE, grace_ms=GRACE))
                .count(store=STORE))
    table.suppress_until_window_closes().to_stream().to(final_topic, value_serde=serde.INT64)
    if listener is not None:
        app.set_restore_listener(listener)
    return app


def make_records(rng: random.Random, base: int, n: int) -> list[tuple[str, int]]:
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


def expected_final(records: list[tuple[str, int]]) -> tuple[dict, dict[int, SuppressReference]]:
    refs = {p: Reference(SIZE, SIZE, GRACE, SIZE + GRACE) for p in range(PARTITIONS)}
    finals = {p: SuppressReference(GRACE, lambda k, s, e: KEY_SERDE.serialize(hotstate.Windowed(k, s, e)))
              for p in range(PARTITIONS)}
    for user, ts in records:
        p = partition_for(user, PARTITIONS)
        done = len(refs[p].emitted)
        refs[p].process(user, ts, lambda old: 1 if old is None else old + 1)
        finals[p].updates(refs[p].emitted[done:], refs[p].stream_time)
    out = defaultdict(list)
    for f in finals.values():
        for k, s, e, v, ts in f.emitted:
            out[(k, s)].append((v, ts))
    return dict(out), finals


def first_difference(got: dict, want: dict) -> str:
    for key in sorted(set(got) | set(want)):
        if got.get(key) != want.get(key):
            return f"window {key}: got {got.get(key)}, want {want.get(key)} ({len(got)} / {len(want)} windows)"
    return "no difference"


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once_v2"])
def test_final_results_once_per_window_across_a_restart_from_a_wiped_state_dir(kafka, tmp_state_dir, guarantee):
    source = kafka.create_topic(partitions=PARTITIONS, prefix="sup-clicks")
    final_topic = kafka.create_topic(partitions=PARTITIONS, prefix="sup-final")
    app_id = kafka.app_id("sup")
    base = (int(time.time() * 1000) // 1000 - 3_600) * 1000
    records = make_records(random.Random(7), base, 1_200)
    first, second = records[:600], records[600:]

    def output() -> dict:
        got = defaultdict(list)
        for m in kafka.read_all(final_topic):
            w = KEY_SERDE.deserialize(m.key())
            got[(w.key, w.start_ms)].append((struct.unpack(">q", m.value())[0], m.timestamp()[1]))
        return dict(got)

    produce_timed(kafka, source, first)
    want_first, finals = expected_final(first)
    assert any(f.held for f in finals.values())  # windows still open at the restart: they wait in the buffer
    app = build(kafka, app_id, tmp_state_dir, source, final_topic, guarantee)
    app.start()
    try:
        app.wait_until_running(timeout_s=60)
        wait_processed(app, len(first), timeout_s=90)
        wait_for(lambda: output() == want_first, "the first half's final results", 60, 0.5,
                 detail=lambda: first_difference(output(), want_first))
    finally:
        assert app.close()

    shutil.rmtree(tmp_state_dir)  # the buffer comes back from its changelog alone
    listener = RecordingListener()
    app = build(kafka, app_id, tmp_state_dir, source, final_topic, guarantee, listener)
    app.start()
    try:
        app.wait_until_running(timeout_s=60)
        buffer_changelog = kafka.changelog(app_id, f"{STORE}-suppress")
        restored = sum(e.a for e in listener.of("end") if e.store == f"{STORE}-suppress")
        assert restored > 0, listener.of("end")  # the buffer was restored
        produce_timed(kafka, source, second)
        wait_processed(app, len(second), timeout_s=90)
        want, _ = expected_final(records)
        wait_for(lambda: output() == want, "every final result, once", 60, 0.5,
                 detail=lambda: first_difference(output(), want))
        assert all(len(v) == 1 for v in want.values())
        assert sum(kafka.ends(buffer_changelog).values()) > 0
    finally:
        assert app.close()
