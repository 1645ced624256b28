"""Repartition topics and merged streams against the real broker: a re-keyed count over two instances, a merge
of two topics into one count, the co-partitioning check at start, the purge of a repartition topic, and
murmur2 partitioning as librdkafka's ``murmur2_random`` partitioner does it."""
from __future__ import annotations

import random
from collections import Counter

import pytest
from confluent_kafka import Producer

import hotstate
from hotstate import serde
from hotstate.errors import TopologyError
from hotstate.kafka.partitioner import partition_for as murmur2_partition
from kafka_helpers import wait_for, wait_processed, words

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

PARTITIONS = 4


def rekeyed_app(kafka, app_id, state_dir, source, sink, **config):
    """Input keyed by an order id, the word in the value: counts per word through a repartition topic."""
    config.setdefault("commit_interval_ms", 100)
    app = hotstate.App(app_id=app_id, bootstrap_servers=kafka.bootstrap, state_dir=str(state_dir),
                       session_timeout_ms=6000, **config)
    (app.stream(source, key_serde=serde.STRING, value_serde=serde.STRING)
        .group_by(lambda k, v: v, key_serde=serde.STRING)
        .count("per-word")
        .to_stream().to(sink, value_serde=serde.INT64))
    return app


def orders(rng: random.Random, vocab: list[str], n: int, start: int = 0) -> list[tuple[str, str]]:
    return [(f"order-{start + i}", rng.choice(vocab)) for i in range(n)]


def actives(app) -> set[str]:
    return {t.id for t in app.tasks() if not t.standby and t.state is hotstate.TaskState.RUNNING}


def test_a_rekeyed_count_over_two_instances_is_exact_and_each_key_counts_on_its_owner(kafka, tmp_path):
    source = kafka.create_topic(partitions=PARTITIONS, prefix="rk-orders")
    sink = kafka.create_topic(partitions=PARTITIONS, prefix="rk-counts")
    app_id = kafka.app_id("rk")
    rep = f"{app_id}-KSTREAM-REPARTITION-0000000000-repartition"
    rng = random.Random(5)
    vocab = words(200)
    a = rekeyed_app(kafka, app_id, tmp_path / "a", source, sink)
    b = rekeyed_app(kafka, app_id, tmp_path / "b", source, sink)
    a.start()
    try:
        b.start()
        wait_for(lambda: len(actives(a)) == len(actives(b)) == PARTITIONS and not actives(a) & actives(b),
                 "the 8 tasks (2 sub-topologies x 4 partitions) to split over both instances", 90)
        tasks = {"a": actives(a), "b": actives(b)}
        # both sub-topologies run on both instances: a record re-keyed on one lands on the other too
        for mine in tasks.values():
            assert {t.split("_")[0] for t in mine} == {"0", "1"}, tasks
        recs = orders(rng, vocab, 4000)
        kafka.produce(source, recs, partitions=PARTITIONS)
        truth = Counter(w for _, w in recs)
        wait_for(lambda: kafka.read_table(sink) == dict(truth), "exact counts in the output", 90, 0.3)
        # each word's count is in the store of the instance that owns task 1_<murmur2 partition of the word>
        for word, n in truth.items():
            p = murmur2_partition(word.encode(), PARTITIONS)
            owner = a if f"1_{p}" in tasks["a"] else b
            other = b if owner is a else a
            assert owner.store("per-word").get(word) == n and other.store("per-word").get(word) is None, word
        # every repartition record went to its key's murmur2 partition
        rep_msgs = kafka.read_all(rep)
        assert len(rep_msgs) == len(recs)
        assert all(m.partition() == murmur2_partition(m.key(), PARTITIONS) for m in rep_msgs)
        assert {t.topic for info in a.tasks() for t in info.input_partitions} == {source, rep}
    finally:
        assert a.close() and b.close()


def test_a_merge_of_two_topics_counts_both(kafka, tmp_path):
    left = kafka.create_topic(partitions=2, prefix="mg-left")
    right = kafka.create_topic(partitions=2, prefix="mg-right")
    sink = kafka.create_topic(partitions=2, prefix="mg-counts")
    app_id = kafka.app_id("mg")
    rng = random.Random(9)
    vocab = words(100)
    recs_l = [(rng.choice(vocab), "l") for _ in range(1500)]
    recs_r = [(rng.choice(vocab), "r") for _ in range(1000)]
    # keyed by the word and partitioned the same way in both topics: co-partitioned
    kafka.produce(left, recs_l, partitions=2)
    kafka.produce(right, recs_r, partitions=2)
    truth = Counter(k for k, _ in recs_l + recs_r)
    app = hotstate.App(app_id=app_id, bootstrap_servers=kafka.bootstrap, state_dir=str(tmp_path), commit_interval_ms=100)
    l_stream = app.stream(left, key_serde=serde.STRING, value_serde=serde.STRING)
    r_stream = app.stream(right, key_serde=serde.STRING, value_serde=serde.STRING)
    l_stream.merge(r_stream).group_by_key().count("n").to_stream().to(sink, value_serde=serde.INT64)
    app.start()
    try:
        app.wait_until_running(60)
        assert sorted((t.id, sorted(t.input_partitions)) for t in app.tasks()) == [
            ("0_0", sorted([(left, 0), (right, 0)])), ("0_1", sorted([(left, 1), (right, 1)]))]
        wait_processed(app, len(recs_l) + len(recs_r))
        wait_for(lambda: kafka.read_table(sink) == dict(truth), "exact merged counts in the output", 60, 0.3)
        wait_for(lambda: kafka.committed(app_id, left, 2) == kafka.ends(left)
                 and kafka.committed(app_id, right, 2) == kafka.ends(right), "both inputs committed", 30)
    finally:
        assert app.close()


def test_start_refuses_a_merge_of_topics_with_different_partition_counts(kafka, tmp_path):
    left = kafka.create_topic(partitions=2, prefix="cp-left")
    right = kafka.create_topic(partitions=3, prefix="cp-right")
    app = hotstate.App(app_id=kafka.app_id("cp"), bootstrap_servers=kafka.bootstrap, state_dir=str(tmp_path))
    app.stream(left).merge(app.stream(right)).group_by_key().count("n")
    with pytest.raises(TopologyError, match="co-partitioned"):
        app.start()
    assert app.state is hotstate.AppState.CREATED


def test_the_repartition_topic_is_created_like_its_source_and_purged_below_the_committed_offsets(kafka, tmp_path):
    source = kafka.create_topic(partitions=3, prefix="pg-orders")
    sink = kafka.create_topic(partitions=3, prefix="pg-counts")
    app_id = kafka.app_id("pg")
    rep = f"{app_id}-by-word-repartition"
    app = hotstate.App(app_id=app_id, bootstrap_servers=kafka.bootstrap, state_dir=str(tmp_path),
                       commit_interval_ms=100, repartition_purge_interval_ms=300)
    (app.stream(source, key_serde=serde.STRING, value_serde=serde.STRING)
        .select_key(lambda k, v: v, key_serde=serde.STRING)
        .repartition(name="by-word")
        .group_by_key().count("n").to_stream().to(sink, value_serde=serde.INT64))
    recs = orders(random.Random(3), words(50), 2000)
    kafka.produce(source, recs, partitions=3)
    app.start()
    try:
        app.wait_until_running(60)
        wait_processed(app, 2 * len(recs))  # each record once from the source, once from the repartition topic
        # processed is not yet committed: the last counts reach the sink with the next commit
        wait_for(lambda: kafka.read_table(sink) == dict(Counter(w for _, w in recs)), "exact counts in the output", 30,
                 0.3)
        marks = kafka.watermarks(rep)
        assert len(marks) == 3 and sum(high for _, high in marks.values()) >= len(recs)

        def purged() -> bool:
            committed = kafka.committed(app_id, rep, 3)
            lows = {p: low for p, (low, high) in kafka.watermarks(rep).items()}
            # below the committed offset everything is deleted, and nothing at or past it
            return all(lows[p] == committed[p] > 0 for p in lows)
        wait_for(purged, "the repartition topic's low watermarks to reach the committed offsets", 30, 0.2)
    finally:
        assert app.close()


def test_murmur2_partitions_as_librdkafkas_murmur2_random_partitioner(kafka):
    topic = kafka.create_topic(partitions=7, prefix="murmur")
    producer = Producer({"bootstrap.servers": kafka.bootstrap, "partitioner": "murmur2_random"})
    got: dict[bytes, int] = {}
    keys = [f"key-{i}".encode() for i in range(200)] + [b"", b"21", b"foobar"]
    for k in keys:
        producer.produce(topic, b"v", k, on_delivery=lambda err, msg: got.__setitem__(msg.key(), msg.partition()))
    assert producer.flush(30) == 0
    assert got == {k: murmur2_partition(k, 7) for k in keys}
