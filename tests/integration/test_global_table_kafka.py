"""Global tables on the real broker (issue #12): two instances each hold the whole table and enrich their own
partitions' records, the table is kept current while the apps run, a bootstrap of 50k records ends before the
app is RUNNING (restore listener and rate reported), a restart reads only the delta, exactly_once_v2 reads
read_committed. The 1M-record bootstrap is bench/global_bootstrap.py."""
from __future__ import annotations

import json
import time

import pytest
from confluent_kafka import Producer

import hotstate
from hotstate import serde
from kafka_helpers import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]


class Recorder(hotstate.RestoreListener):
    def __init__(self):
        self.starts, self.ends, self.batches = {}, {}, 0

    def on_restore_start(self, partition, store_name, start_offset, end_offset):
        self.starts[(store_name, partition.partition)] = (start_offset, end_offset)

    def on_batch_restored(self, partition, store_name, batch_end_offset, num_restored):
        self.batches += 1

    def on_restore_end(self, partition, store_name, total_restored):
        self.ends[(store_name, partition.partition)] = total_restored


def enrich_app(kafka, app_id, state_dir, orders, countries, out, **config):
    config.setdefault("commit_interval_ms", 100)
    app = hotstate.App(app_id=app_id, bootstrap_servers=kafka.bootstrap, state_dir=str(state_dir),
                       session_timeout_ms=6000, **config)
    table = app.global_table(countries, key_serde=serde.STRING, value_serde=serde.JSON, store="countries")
    (app.stream(orders, key_serde=serde.STRING, value_serde=serde.JSON)
        .left_join(table, key_selector=lambda k, v: v["country"],
                   joiner=lambda o, c: {**o, "country_name": c and c["name"]})
        .to(out, value_serde=serde.JSON))
    return app


def as_json(records):
    return [(k, json.dumps(v)) for k, v in records]


def actives(app):
    return {t.id for t in app.tasks() if not t.standby and t.state is hotstate.TaskState.RUNNING}


def test_two_instances_each_hold_the_whole_table_and_enrich_their_own_partitions(kafka, tmp_path):
    countries = kafka.create_topic(partitions=3, prefix="gt-countries")
    orders = kafka.create_topic(partitions=4, prefix="gt-orders")
    out = kafka.create_topic(partitions=1, prefix="gt-out")
    rows = {f"c{i:02d}": {"name": f"Country {i}"} for i in range(50)}
    kafka.produce(countries, as_json(rows.items()), partitions=3)
    app_id = kafka.app_id("gt")
    a = enrich_app(kafka, app_id, tmp_path / "a", orders, countries, out)
    b = enrich_app(kafka, app_id, tmp_path / "b", orders, countries, out)
    a.start()
    try:
        b.start()
        a.wait_until_running(90)
        b.wait_until_running(90)
        wait_for(lambda: len(actives(a)) == len(actives(b)) == 2 and not actives(a) & actives(b),
                 "the 4 order tasks to split over both instances", 90)
        for app in (a, b):  # the whole table on each instance, not only the partitions of its tasks
            assert dict(app.store("countries").all()) == rows
            # no task reads the global topic: it is not assigned
            assert {tp.topic for t in app.tasks() for tp in t.input_partitions} == {orders}
        assert kafka._partition_count(f"{app_id}-countries-changelog") is None  # no changelog topic
        recs = [(f"o{i}", {"country": f"c{i % 60:02d}", "n": i}) for i in range(400)]  # c50..c59: no row
        kafka.produce(orders, as_json(recs), partitions=4)
        expect = {k: {**v, "country_name": rows.get(v["country"], {}).get("name")} for k, v in recs}
        wait_for(lambda: kafka.read_table(out, value=lambda b: json.loads(b)) == expect,
                 "every order enriched", 90, 0.3)
        assert a.metrics()["records_processed_total"] > 0 and b.metrics()["records_processed_total"] > 0
        # Kept current: a new row and a tombstone reach both instances while they run.
        kafka.produce(countries, [("c55", json.dumps({"name": "New"})), ("c01", None)], partitions=3)
        for app in (a, b):
            wait_for(lambda: app.store("countries").get("c55") == {"name": "New"}
                     and app.store("countries").get("c01") is None, "the update on both instances", 30)
        more = [("p1", {"country": "c55"}), ("p2", {"country": "c01"})]
        kafka.produce(orders, as_json(more), partitions=4)
        wait_for(lambda: {k: v["country_name"] for k, v in kafka.read_table(out, value=json.loads).items()
                          if k in ("p1", "p2")} == {"p1": "New", "p2": None}, "joins see the update", 60, 0.3)
    finally:
        assert a.close() and b.close()


def test_a_50k_bootstrap_ends_before_running_and_a_restart_reads_only_the_delta(kafka, tmp_path):
    n = 50_000
    countries = kafka.create_topic(partitions=2, prefix="gt-big")
    orders = kafka.create_topic(partitions=1, prefix="gt-orders")
    out = kafka.create_topic(partitions=1, prefix="gt-out")
    kafka.produce(countries, ((f"k{i:06d}", json.dumps({"name": str(i)})) for i in range(n)), partitions=2)
    ends = {p: hi for p, (lo, hi) in kafka.watermarks(countries, 2).items()}
    app_id = kafka.app_id("gt-big")

    def started(listener):
        app = enrich_app(kafka, app_id, tmp_path / "s", orders, countries, out)
        app.set_restore_listener(listener)
        t0 = time.monotonic()
        app.start()
        app.wait_until_running(180)
        return app, time.monotonic() - t0

    first = Recorder()
    app, seconds = started(first)
    try:
        # RUNNING only once caught up: every record is in the store at that moment
        assert sum(1 for _ in app.store("countries").all()) == n
        assert first.starts == {("countries", p): (0, ends[p]) for p in (0, 1)}
        assert first.ends == {("countries", p): ends[p] for p in (0, 1)} and first.batches > 0
        restores = app.metrics()["restores"]
        assert {k: r["restore_records_total"] for k, r in restores.items()} == {
            f"global-{p}/countries": ends[p] for p in (0, 1)}
        print(f"\nBENCH global bootstrap: {n} records in {seconds:.2f} s to RUNNING "
              f"({n / seconds:,.0f} records/s)")
    finally:
        assert app.close()
    kafka.produce(countries, [("k000003", json.dumps({"name": "three"})), ("new", json.dumps({"name": "n"})),
                              ("k000004", None)], partitions=2)
    second = Recorder()
    app, _ = started(second)
    try:
        assert sum(second.ends.values()) == 3  # the delta only
        assert all(start == ends[p] for (_, p), (start, _) in second.starts.items())
        store = app.store("countries")
        assert store.get("k000003") == {"name": "three"} and store.get("new") == {"name": "n"}
        assert store.get("k000004") is None and store.get("k000005") == {"name": "5"}
        assert sum(1 for _ in store.all()) == n
    finally:
        assert app.close()


def test_exactly_once_v2_reads_the_global_topic_read_committed(kafka, tmp_path):
    countries = kafka.create_topic(partitions=1, prefix="gt-txn")
    orders = kafka.create_topic(partitions=1, prefix="gt-orders")
    out = kafka.create_topic(partitions=1, prefix="gt-out")
    producer = Producer({"bootstrap.servers": kafka.bootstrap, "transactional.id": kafka.app_id("gt-txn")})
    producer.init_transactions(30)
    for commit, key in ((True, "kept"), (False, "aborted"), (True, "kept2")):
        producer.begin_transaction()
        producer.produce(countries, json.dumps({"name": key}).encode(), key.encode())
        producer.flush(30)
        (producer.commit_transaction if commit else producer.abort_transaction)(30)
    app = enrich_app(kafka, kafka.app_id("gt-eos"), tmp_path / "s", orders, countries, out,
                     processing_guarantee="exactly_once_v2")
    app.start()
    try:
        app.wait_until_running(90)
        assert dict(app.store("countries").all()) == {"kept": {"name": "kept"}, "kept2": {"name": "kept2"}}
        producer.begin_transaction()
        producer.produce(countries, json.dumps({"name": "late"}).encode(), b"late")
        producer.flush(30)
        time.sleep(1.0)  # the app polls meanwhile: an open transaction's record stays invisible
        assert app.store("countries").get("late") is None
        producer.commit_transaction(30)
        wait_for(lambda: app.store("countries").get("late") == {"name": "late"}, "the committed record", 30)
    finally:
        assert app.close()


def test_a_missing_global_topic_fails_start_with_a_clear_error(kafka, tmp_path):
    orders = kafka.create_topic(partitions=1, prefix="gt-orders")
    out = kafka.create_topic(partitions=1, prefix="gt-out")
    missing = f"gt-missing-{kafka.app_id('x')}"
    app = enrich_app(kafka, kafka.app_id("gt-missing"), tmp_path / "s", orders, missing, out)
    with pytest.raises(hotstate.TopologyError, match=rf"global table topic\(s\) \['{missing}'\] do not exist"):
        app.start()
    assert app.state is hotstate.AppState.CREATED
    with pytest.raises(hotstate.errors.StoreClosedError, match="not open"):
        app.store("countries")


def test_exactly_once_v2_bootstraps_a_topic_that_ends_with_an_aborted_transaction(kafka, tmp_path):
    countries = kafka.create_topic(partitions=1, prefix="gt-txn-end")
    orders = kafka.create_topic(partitions=1, prefix="gt-orders")
    out = kafka.create_topic(partitions=1, prefix="gt-out")
    producer = Producer({"bootstrap.servers": kafka.bootstrap, "transactional.id": kafka.app_id("gt-txn-end")})
    producer.init_transactions(30)
    for commit, key in ((True, "kept"), (False, "aborted")):
        producer.begin_transaction()
        for i in range(3):
            producer.produce(countries, json.dumps({"name": key}).encode(), f"{key}{i}".encode())
        producer.flush(30)
        (producer.commit_transaction if commit else producer.abort_transaction)(30)
    app = enrich_app(kafka, kafka.app_id("gt-eos-end"), tmp_path / "s", orders, countries, out,
                     processing_guarantee="exactly_once_v2")
    app.start()
    try:
        app.wait_until_running(60)  # the last records are aborted ones and a marker: the bootstrap still ends
        assert sorted(k for k, _ in app.store("countries").all()) == ["kept0", "kept1", "kept2"]
    finally:
        assert app.close()
