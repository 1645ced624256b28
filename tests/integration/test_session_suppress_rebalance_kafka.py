"""A session count and its final results on the real broker while the group changes, under both guarantees: a
second instance joins (a task moves to it and restores its session store and suppression buffer from their
changelogs; each instance keeps a standby of the other's task), then the first leaves (its task moves over to
the second's standby). Every session's final result is emitted exactly once, equal to the reference, and the
live sessions are served by whichever instance runs their task."""
from __future__ import annotations

import random
import struct
import time
from collections import defaultdict

import pytest

import hotstate
from hotstate import serde, windows
from kafka_helpers import partition_for, wait_for
from window_reference import SessionReference, SuppressReference

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

PARTITIONS = 2
GAP, GRACE = 300, 200
STORE = "visits"
USERS = [f"user-{i}" for i in range(6)]
KEY_SERDE = serde.session_windowed(serde.STRING)


def build(kafka, app_id, state_dir, source, final_topic, guarantee):
    app = hotstate.App(app_id=app_id, bootstrap_servers=kafka.bootstrap, state_dir=str(state_dir),
                       processing_guarantee=guarantee, commit_interval_ms=100, session_timeout_ms=6000,
                       num_standby_replicas=1)
    sessions = (app.stream(source, key_serde=serde.STRING, value_serde=serde.STRING)
                   .group_by_key()
                   .windowed_by(windows.session(inactivity_gap_ms=GAP, grace_ms=GRACE))
                   .count(store=STORE))
    sessions.suppress_until_window_closes().to_stream().to(final_topic, value_serde=serde.INT64)
    return app


def make_records(rng: random.Random, base: int, n: int) -> list[tuple[str, int]]:
    out, now = [], base
    for _ in range(n):
        now += rng.choice([10, 40, 120, 350])
        jitter = rng.choice([0, 0, 0, -rng.randint(0, 300), -rng.randint(600, 1_500)])
        out.append((rng.choice(USERS), max(base, now + jitter)))
    return out


def produce_timed(kafka, topic: str, records: list[tuple[str, int]]) -> None:
    producer = kafka.producer()
    for user, ts in records:
        producer.produce(topic, b"visit", user.encode(), partition=partition_for(user, PARTITIONS), timestamp=ts)
    assert producer.flush(30) == 0


def reference(records: list[tuple[str, int]]) -> tuple[dict, dict]:
    """(final results: (user, start, end) -> [(count, timestamp)], live sessions: (user, start, end) -> count)."""
    refs = {p: SessionReference(GAP, GRACE, GAP + GRACE) for p in range(PARTITIONS)}
    finals = {p: SuppressReference(GAP + GRACE, lambda k, s, e: KEY_SERDE.serialize(hotstate.Windowed(k, s, e)))
              for p in range(PARTITIONS)}
    for user, ts in records:
        p = partition_for(user, PARTITIONS)
        done = len(refs[p].emitted)
        refs[p].process(user, ts)
        finals[p].updates(refs[p].emitted[done:], refs[p].stream_time)
    out = defaultdict(list)
    for f in finals.values():
        for k, s, e, v, ts in f.emitted:
            out[(k, s, e)].append((v, ts))
    return dict(out), {w: v for r in refs.values() for w, v in r.live().items()}


class PromotedStores(hotstate.StandbyUpdateListener):
    """The stores whose standby was promoted to active (``on_update_suspended`` with PROMOTED)."""

    def __init__(self) -> None:
        self.promoted: set[str] = set()

    def on_update_suspended(self, partition, store_name, store_offset, current_end_offset, reason):  # noqa: ANN001
        if reason is hotstate.SuspendReason.PROMOTED:
            self.promoted.add(store_name)


def actives(app: hotstate.App) -> set[str]:
    return {t.id for t in app.tasks() if not t.standby and t.state is hotstate.TaskState.RUNNING}


def first_difference(got: dict, want: dict) -> str:
    for key in sorted(set(got) | set(want)):
        if got.get(key) != want.get(key):
            return f"session {key}: got {got.get(key)}, want {want.get(key)} ({len(got)} / {len(want)} sessions)"
    return "no difference"


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once_v2"])
def test_final_session_results_once_while_tasks_move_between_instances(kafka, tmp_path, guarantee):
    source = kafka.create_topic(partitions=PARTITIONS, prefix="visits")
    final_topic = kafka.create_topic(partitions=PARTITIONS, prefix="visits-final")
    app_id = kafka.app_id("visits")
    base = (int(time.time() * 1000) // 1000 - 3_600) * 1000
    records = make_records(random.Random(3), base, 900)
    parts = [records[:300], records[300:600], records[600:]]

    def output() -> dict:
        got = defaultdict(list)
        for m in kafka.read_all(final_topic):
            w = KEY_SERDE.deserialize(m.key())
            got[(w.key, w.start_ms, w.end_ms)].append((struct.unpack(">q", m.value())[0], m.timestamp()[1]))
        return dict(got)

    def settle(upto: int, what: str) -> dict:
        want, live = reference([r for part in parts[:upto] for r in part])
        wait_for(lambda: output() == want, what, 90, 0.5, detail=lambda: first_difference(output(), want))
        return live

    a = build(kafka, app_id, tmp_path / "a", source, final_topic, guarantee)
    b = build(kafka, app_id, tmp_path / "b", source, final_topic, guarantee)
    standby_b = PromotedStores()
    b.set_standby_listener(standby_b)
    a.start()
    try:
        wait_for(lambda: actives(a) == {"0_0", "0_1"}, "a to run both tasks", 60)
        produce_timed(kafka, source, parts[0])
        settle(1, "a's final results of the first part")

        b.start()  # one task moves to b, which restores its session store and buffer from the changelogs
        wait_for(lambda: len(actives(a)) == 1 and len(actives(b)) == 1, "one task to move to b", 90)
        produce_timed(kafka, source, parts[1])
        live = settle(2, "final results with the tasks on two instances")
        want_live = sorted((k, s, e, v) for (k, s, e), v in live.items())
        wait_for(lambda: sorted(a.store(STORE).fetch_all(0, 2**62) + b.store(STORE).fetch_all(0, 2**62)) == want_live,
                 "the live sessions, served by the instance running their task", 30, 0.2)

        wait_for(lambda: {t.id for t in b.tasks() if t.standby} == actives(a), "b to keep a standby of a's task", 60)
        assert a.close()  # a leaves: its task moves to b, where its standby is promoted
        wait_for(lambda: actives(b) == {"0_0", "0_1"}, "b to run both tasks", 90)
        assert standby_b.promoted == {STORE, f"{STORE}-suppress"}
        produce_timed(kafka, source, parts[2])
        live = settle(3, "every final result, once")
        want_live = sorted((k, s, e, v) for (k, s, e), v in live.items())
        wait_for(lambda: sorted(b.store(STORE).fetch_all(0, 2**62)) == want_live, "b to serve every live session",
                 30, 0.2)
    finally:
        a.close()
        b.close()
