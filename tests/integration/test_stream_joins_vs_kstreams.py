"""Side by side with Kafka Streams 4.4: the same orders and payments through Kafka Streams' windowed inner, left
and outer joins (``JoinWindows.ofTimeDifferenceAndGrace``; tests/kstreams_joins, class
``hotstate.check.WindowedJoin``, built with Maven on first use) and hotstate's ``join`` / ``left_join`` /
``outer_join(..., window=windows.join(...))``: per key, the same multiset of (value, timestamp) results, equal to
the nested-loop reference (tests/stream_join_reference.py).

The input is shaped so that both systems' documented rules give one answer whatever order a task reads its two
topics in: rounds of records spanning less than the time difference and the grace (no record is late, and none
is behind stream time by more than the time difference, where Kafka Streams emits an unjoined record at once),
each produced once both apps have processed the previous round, rounds far enough apart that the first record of
a round closes every window of the one before (docs/architecture.md, "Stream-stream joins").

Run alone: scripts/test tests/integration/test_stream_joins_vs_kstreams.py (the first run builds the jar)."""
from __future__ import annotations

import json
import random
import time
from collections import Counter, defaultdict
from pathlib import Path

import pytest

import hotstate
from hotstate import serde, windows
from hotstate.kafka.partitioner import partition_for as murmur2_partition
from kafka_helpers import wait_for
from stream_join_reference import reference_join
from kstreams_apps import JavaApp
from test_joins_vs_kstreams import committed_to_end, kstreams_jar

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]  # the first Maven build may download a lot

PARTITIONS = 2
D_MS, GRACE_MS = 1_500, 1_000
SPAN_MS, ROUND_GAP_MS = 1_000, 20_000  # a round's records lie within SPAN_MS < D_MS and <= GRACE_MS


class WindowedJoinApp(JavaApp):
    """The jar's WindowedJoin class as a child process; closing its stdin stops it."""

    def __init__(self, args: list[str], log: Path):
        super().__init__(["java", "-Xmx512m", "-cp", str(kstreams_jar()), "hotstate.check.WindowedJoin", *args], log)


def produce(kafka, topic, events):
    """As the Java producer's default partitioner places them (murmur2 of the key bytes), with their timestamps."""
    producer = kafka.producer()
    for _, key, value, ts in events:
        kb = key.encode()
        producer.produce(topic, value.encode(), kb, partition=murmur2_partition(kb, PARTITIONS), timestamp=ts)
    assert producer.flush(30) == 0


def results(kafka, topic):
    """key -> Counter of ((left, right), timestamp)."""
    out: dict = defaultdict(Counter)
    for m in kafka.read_all(topic):
        out[m.key().decode()][(tuple(json.loads(m.value())), m.timestamp()[1])] += 1
    return dict(out)


def reference(events, kind):
    out: dict = defaultdict(Counter)
    for p in range(PARTITIONS):
        mine = [e for e in events if murmur2_partition(e[1].encode(), PARTITIONS) == p]
        for (key, pair, ts), n in reference_join(mine, kind, D_MS, GRACE_MS)[0].items():
            out[key][(pair, ts)] += n
    return dict(out)


@pytest.mark.parametrize("kind", ["inner", "left", "outer"])
def test_a_windowed_stream_stream_join_equals_kafka_streams(kafka, tmp_path, kind):
    kstreams_jar()  # before any topic exists: a first build takes long
    left = kafka.create_topic(partitions=PARTITIONS, prefix="vs-ks-ssj-orders")
    right = kafka.create_topic(partitions=PARTITIONS, prefix="vs-ks-ssj-payments")
    out = {system: kafka.create_topic(partitions=PARTITIONS, prefix=f"vs-ks-ssj-{system}")
           for system in ("hs", "ks")}
    hs_id, ks_id = kafka.app_id("vs-ks-hs-ssj"), kafka.app_id("vs-ks-ks-ssj")
    rng = random.Random(44)
    base = int(time.time() * 1000) - 120_000
    keys = [f"k{i}" for i in range(30)]
    rounds = []
    for r in range(3):
        start = base + r * ROUND_GAP_MS
        rounds.append([(side, rng.choice(keys), f"{side}{r}-{i}", start + rng.randrange(SPAN_MS))
                       for side in "LR" for i in range(40)])
    flush_keys = {murmur2_partition(k.encode(), PARTITIONS): k for k in (f"flush{i}" for i in range(50))}
    rounds.append([("L", flush_keys[p], "flush", base + 3 * ROUND_GAP_MS) for p in range(PARTITIONS)])

    app = hotstate.App(app_id=hs_id, bootstrap_servers=kafka.bootstrap, state_dir=str(tmp_path / "hs"),
                       commit_interval_ms=100)
    o = app.stream(left, key_serde=serde.STRING, value_serde=serde.STRING)
    p = app.stream(right, key_serde=serde.STRING, value_serde=serde.STRING)
    join = {"inner": o.join, "left": o.left_join, "outer": o.outer_join}[kind]
    join(p, lambda a, b: [a, b], window=windows.join(time_difference_ms=D_MS, grace_ms=GRACE_MS)).to(
        out["hs"], value_serde=serde.JSON)
    ks = WindowedJoinApp([kafka.bootstrap, ks_id, str(tmp_path / "ks"), kind, left, right, out["ks"], str(D_MS),
                          str(GRACE_MS)], tmp_path / "kstreams.log")
    app.start()
    try:
        app.wait_until_running(60)
        produced = []
        for events in rounds:
            produce(kafka, left, [e for e in events if e[0] == "L"])
            produce(kafka, right, [e for e in events if e[0] == "R"])
            produced += events

            def both_done() -> bool:
                ks.check_alive()
                return all(committed_to_end(kafka, g, t, PARTITIONS) for g in (hs_id, ks_id) for t in (left, right))
            wait_for(both_done, "both apps to process the round", 120, 0.2)
        want = reference(produced, kind)
        unjoined = sum(n for c in want.values() for (pair, _), n in c.items() if None in pair)
        assert unjoined > 10 if kind != "inner" else unjoined == 0
        assert sum(n for c in want.values() for (pair, _), n in c.items() if None not in pair) > 10

        def detail() -> object:
            return {"hotstate": results(kafka, out["hs"]), "kafka streams": results(kafka, out["ks"]),
                    "reference": want}
        wait_for(lambda: results(kafka, out["ks"]) == want, "Kafka Streams' results equal to the reference", 60,
                 0.3, detail)
        wait_for(lambda: results(kafka, out["hs"]) == want, "hotstate's results equal to the reference", 30, 0.3,
                 detail)
        ks.stop()
    finally:
        ks.kill()
        assert app.close()
