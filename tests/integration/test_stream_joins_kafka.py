"""Windowed stream-stream joins against the real broker: an outer join's output is exactly the nested-loop
reference's (tests/stream_join_reference.py), and it survives a restart with a wiped state dir: the join stores
restore from their changelogs, so records produced after the restart join with records from before it, and
records that never found a partner come out with None once their windows close; a re-keyed side goes through a
repartition topic sized like the other side's topic."""
from __future__ import annotations

import json
import random
import shutil
import time
from collections import Counter

import pytest

import hotstate
from hotstate import serde, windows
from kafka_helpers import RecordingListener, partition_for, wait_for, wait_processed
from stream_join_reference import reference_join

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

PARTITIONS = 2
D_MS, GRACE_MS = 200, 60_000  # grace covers the whole run's disorder: no record is late, whatever the order
STORES = ("pay-this-join-store", "pay-other-join-store", "pay-outer-shared-join-store")


def join_app(kafka, app_id, state_dir, orders, payments, sink, listener=None, guarantee="at_least_once"):
    app = hotstate.App(app_id=app_id, bootstrap_servers=kafka.bootstrap, state_dir=str(state_dir),
                       commit_interval_ms=100, processing_guarantee=guarantee)
    o = app.stream(orders, key_serde=serde.STRING, value_serde=serde.JSON)
    p = app.stream(payments, key_serde=serde.STRING, value_serde=serde.JSON)
    o.outer_join(p, lambda order, payment: [order, payment],
                 window=windows.join(time_difference_ms=D_MS, grace_ms=GRACE_MS), store="pay").to(
        sink, value_serde=serde.JSON)
    if listener is not None:
        app.set_restore_listener(listener)
    return app


def produce(kafka, topic, events):
    producer = kafka.producer()
    for _, key, value, ts in events:
        producer.produce(topic, json.dumps(value).encode(), key.encode(), partition=partition_for(key, PARTITIONS),
                         timestamp=ts)
    assert producer.flush(30) == 0


def output(kafka, sink):
    return Counter((m.key().decode(), tuple(json.loads(m.value())), m.timestamp()[1]) for m in kafka.read_all(sink))


def expected(events):
    """The reference per partition: each partition is a task with its own stream time."""
    out: Counter = Counter()
    for p in range(PARTITIONS):
        mine = [e for e in events if partition_for(e[1], PARTITIONS) == p]
        out += reference_join(mine, "outer", D_MS, GRACE_MS)[0]
    return out


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once_v2"])
def test_an_outer_join_is_exact_and_joins_across_a_restart_from_its_changelogs(kafka, tmp_path, guarantee):
    orders = kafka.create_topic(partitions=PARTITIONS, prefix="ssj-orders")
    payments = kafka.create_topic(partitions=PARTITIONS, prefix="ssj-payments")
    sink = kafka.create_topic(partitions=PARTITIONS, prefix="ssj-out")
    app_id = kafka.app_id("ssj")
    rng = random.Random(12)
    base = int(time.time() * 1000) - 30_000
    keys = [f"o{i}" for i in range(20)]

    def events(side, tag, n, lo, hi):  # values name their side and round: "L-before-3"
        return [(side, rng.choice(keys), f"{side}-{tag}-{i}", base + rng.randrange(lo, hi)) for i in range(n)]

    before = events("L", "before", 150, 0, 10_000) + events("R", "before", 100, 0, 10_000)
    produce(kafka, orders, [e for e in before if e[0] == "L"])
    produce(kafka, payments, [e for e in before if e[0] == "R"])
    state = tmp_path / "state"
    app = join_app(kafka, app_id, state, orders, payments, sink, guarantee=guarantee)
    app.start()
    try:
        app.wait_until_running(60)
        wait_processed(app, len(before))
        inner_before = Counter({k: n for k, n in expected(before).items() if None not in k[1]})
        wait_for(lambda: output(kafka, sink) == inner_before, "the joined pairs of the first records", 30, 0.3)
    finally:
        assert app.close()
    shutil.rmtree(state)  # everything the join knows must come back from its changelogs

    after = events("R", "after", 100, 0, 10_000) + events("L", "after", 30, 0, 10_000)
    # One far-later record per partition moves each task's stream time past every window and its grace.
    flush_keys = {partition_for(k, PARTITIONS): k for k in (f"flush{i}" for i in range(50))}
    flush = [("L", flush_keys[p], "flush", base + 10_000 + D_MS + GRACE_MS + 1) for p in range(PARTITIONS)]
    listener = RecordingListener()
    app = join_app(kafka, app_id, state, orders, payments, sink, listener, guarantee)
    app.start()
    try:
        app.wait_until_running(60)
        restored = {e.store for e in listener.of("end") if e.a > 0}
        assert restored == set(STORES), listener.events
        produce(kafka, payments, [e for e in after if e[0] == "R"])
        produce(kafka, orders, [e for e in after if e[0] == "L"])
        produce(kafka, orders, flush)
        wait_processed(app, len(after) + len(flush))
        want = expected(before + after + flush)
        assert sum(n for (_, (o, p), _), n in want.items()
                   if o and p and "before" in o and "after" in p) > 10, "pairs span the restart"
        wait_for(lambda: output(kafka, sink) == want, "every pair and every unjoined record, once", 30, 0.3)
    finally:
        assert app.close()


def test_a_re_keyed_side_goes_through_a_repartition_topic_sized_like_the_other_side(kafka, admin, tmp_path):
    """Orders keyed by order id (2 partitions) re-keyed by customer, joined with payments keyed by customer
    (3 partitions, written as a Java producer would: murmur2): the repartition topic gets 3 partitions, and every
    pair within the window comes out once."""
    from hotstate.kafka.partitioner import partition_for as murmur2_partition

    orders = kafka.create_topic(partitions=2, prefix="ssj-rk-orders")
    payments = kafka.create_topic(partitions=3, prefix="ssj-rk-payments")
    sink = kafka.create_topic(partitions=3, prefix="ssj-rk-out")
    app_id = kafka.app_id("ssj-rk")
    rng = random.Random(5)
    base = int(time.time() * 1000) - 30_000
    customers = [f"c{i}" for i in range(15)]
    order_events = [("L", f"order-{i}", {"customer": rng.choice(customers), "n": i}, base + rng.randrange(5_000))
                    for i in range(120)]
    payment_events = [("R", rng.choice(customers), f"pay-{i}", base + rng.randrange(5_000)) for i in range(120)]
    producer = kafka.producer()
    for _, key, value, ts in order_events:
        producer.produce(orders, json.dumps(value).encode(), key.encode(), partition=partition_for(key, 2),
                         timestamp=ts)
    for _, key, value, ts in payment_events:
        producer.produce(payments, json.dumps(value).encode(), key.encode(),
                         partition=murmur2_partition(key.encode(), 3), timestamp=ts)
    assert producer.flush(30) == 0

    app = hotstate.App(app_id=app_id, bootstrap_servers=kafka.bootstrap, state_dir=str(tmp_path / "state"),
                       commit_interval_ms=100)
    o = app.stream(orders, key_serde=serde.STRING, value_serde=serde.JSON)
    p = app.stream(payments, key_serde=serde.STRING, value_serde=serde.JSON)
    (o.select_key(lambda k, v: v["customer"], key_serde=serde.STRING)
      .join(p, lambda order, payment: [order["n"], payment], window=windows.join(time_difference_ms=D_MS,
                                                                                  grace_ms=GRACE_MS))
      .to(sink, value_serde=serde.JSON))
    # Inner join, nothing late: the pairs do not depend on the order the records are read in.
    rekeyed = [("L", v["customer"], v["n"], ts) for _, _, v, ts in order_events]
    want = Counter({(k, pair, ts): n for (k, pair, ts), n in
                    reference_join(rekeyed + payment_events, "inner", D_MS, GRACE_MS)[0].items()})
    assert sum(want.values()) > 20
    app.start()
    try:
        app.wait_until_running(60)
        (rep,) = [t for t in admin.list_topics(timeout=10).topics
                  if t.startswith(app_id) and t.endswith("-repartition")]
        assert len(admin.list_topics(rep, timeout=10).topics[rep].partitions) == 3
        wait_for(lambda: output(kafka, sink) == want, "every pair within the window, once", 30, 0.3)
    finally:
        assert app.close()
