"""Tables and joins against the real broker: orders (a stream, keyed by order id) joined with customers (a table)
then revenue per country, exact; a table restored from its source topic after its state dir is wiped, with no
changelog topic for it; a table-table join with updates and deletes; a table's snapshot (it names the source
topic) restoring a wiped instance."""
from __future__ import annotations

import json
import random
import shutil

import pytest

import hotstate
from hotstate import serde
from hotstate.kafka.partitioner import partition_for as murmur2_partition
from kafka_helpers import RecordingListener, utf8, wait_for, wait_processed

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

PARTITIONS = 3
COUNTRIES = ["fr", "de", "it", "es"]


def js(data):
    return None if data is None else json.loads(data)


def topics(admin) -> set[str]:
    return set(admin.list_topics(timeout=10).topics)


def produce_murmur2(kafka, topic, records, partitions):
    """As a Java producer (or librdkafka with partitioner=murmur2_random) writes them: each key to the partition
    of murmur2 of its bytes, which is where hotstate's repartition sends a re-keyed order of that key."""
    by_partition: dict[int, list] = {}
    for key, value in records:
        kb = key.encode()
        by_partition.setdefault(murmur2_partition(kb, partitions), []).append(
            (kb, None if value is None else value.encode()))
    for p, recs in by_partition.items():
        kafka.produce_to(topic, p, recs)


def enrichment_app(kafka, app_id, state_dir, orders, customers, sink, **config):
    """The README's enrichment: orders re-keyed by customer, joined with the customers table, revenue per
    country (the joined customer's country)."""
    app = hotstate.App(app_id=app_id, bootstrap_servers=kafka.bootstrap, state_dir=str(state_dir),
                       commit_interval_ms=100, **config)
    o = app.stream(orders, key_serde=serde.STRING, value_serde=serde.JSON)
    c = app.table(customers, key_serde=serde.STRING, value_serde=serde.JSON, store="customers")
    enriched = (o.select_key(lambda k, v: v["customer_id"], key_serde=serde.STRING)
                 .join(c, lambda order, customer: {**order, "country": customer["country"]}))
    totals = enriched.group_by(lambda k, v: v["country"], key_serde=serde.STRING, value_serde=serde.JSON).aggregate(
        lambda: 0, lambda k, v, agg: agg + v["amount"], store="revenue-by-country", value_serde=serde.INT64)
    totals.to_stream().to(sink, value_serde=serde.INT64)
    return app


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once_v2"])
def test_orders_joined_with_customers_then_revenue_by_country_is_exact(kafka, admin, tmp_path, guarantee):
    customers_topic = kafka.create_topic(partitions=PARTITIONS, prefix="tb-customers")
    orders_topic = kafka.create_topic(partitions=2, prefix="tb-orders")  # not co-partitioned: re-keyed first
    sink = kafka.create_topic(partitions=PARTITIONS, prefix="tb-revenue")
    app_id = kafka.app_id("tb-enrich")
    rng = random.Random(12)
    customers = {f"cust-{i}": rng.choice(COUNTRIES) for i in range(60)}
    produce_murmur2(kafka, customers_topic, [(k, json.dumps({"country": c})) for k, c in customers.items()],
                    PARTITIONS)
    app = enrichment_app(kafka, app_id, tmp_path, orders_topic, customers_topic, sink,
                         processing_guarantee=guarantee)
    app.start()
    revenue: dict[str, int] = {}
    try:
        app.wait_until_running(60)
        wait_for(lambda: all(app.store("customers").get(k) == {"country": c} for k, c in customers.items()),
                 "the customers table loaded", 60, 0.2)

        def orders(n, start):
            out = []
            for i in range(start, start + n):
                cust = f"cust-{rng.randrange(70)}"  # 60..69 are unknown customers: the inner join drops them
                amount = rng.randrange(1, 100)
                if cust in customers:
                    revenue[customers[cust]] = revenue.get(customers[cust], 0) + amount
                out.append((f"order-{i}", json.dumps({"customer_id": cust, "amount": amount})))
            return out

        first = orders(1500, 0)
        kafka.produce(orders_topic, first, partitions=2)
        wait_for(lambda: kafka.read_table(sink) == revenue, "exact revenue per country", 90, 0.3,
                 lambda: (kafka.read_table(sink), revenue, app.metrics(), [(t.id, t.state) for t in app.tasks()]))
        # customers move and get deleted: later orders follow the table as it is when they are processed
        for k in rng.sample(sorted(customers), 15):
            customers[k] = rng.choice(COUNTRIES)
        gone = rng.sample(sorted(customers), 5)
        for k in gone:
            del customers[k]
        produce_murmur2(kafka, customers_topic, [(k, json.dumps({"country": c})) for k, c in customers.items()]
                        + [(k, None) for k in gone], PARTITIONS)
        wait_for(lambda: all(app.store("customers").get(k) == ({"country": customers[k]} if k in customers else None)
                             for k in [f"cust-{i}" for i in range(60)]), "the customer updates applied", 60, 0.2)
        kafka.produce(orders_topic, orders(1500, 1500), partitions=2)
        wait_for(lambda: kafka.read_table(sink) == revenue, "exact revenue per country after the updates", 90, 0.3)
        assert {c: app.store("revenue-by-country").get(c) for c in revenue} == revenue
        assert app.metrics()["dropped_records_null_key_total"] == 0
        all_topics = topics(admin)
        assert f"{app_id}-revenue-by-country-changelog" in all_topics
        assert not any(t.startswith(app_id) and "customers" in t for t in all_topics), sorted(all_topics)
        assert kafka.watermarks(f"{app_id}-KSTREAM-REPARTITION-0000000000-repartition").keys() == set(range(PARTITIONS))
    finally:
        assert app.close()


def table_app(kafka, app_id, state_dir, source, sink, listener=None, **config):
    app = hotstate.App(app_id=app_id, bootstrap_servers=kafka.bootstrap, state_dir=str(state_dir),
                       commit_interval_ms=100, **config)
    t = app.table(source, key_serde=serde.STRING, value_serde=serde.STRING, store="profiles")
    t.map_values(lambda v: v.upper()).to_stream().to(sink, value_serde=serde.STRING)
    if listener is not None:
        app.set_restore_listener(listener)
    return app


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once_v2"])
def test_a_table_restores_from_its_source_topic_after_the_state_dir_is_wiped(kafka, admin, tmp_path, guarantee):
    source = kafka.create_topic(partitions=2, prefix="tb-profiles")
    sink = kafka.create_topic(partitions=2, prefix="tb-profiles-out")
    app_id = kafka.app_id("tb-restore")
    rng = random.Random(3)
    reference: dict[str, str] = {}
    records = []
    for i in range(2000):
        k = f"user-{rng.randrange(300)}"
        if rng.random() < 0.1:
            records.append((k, None))
            reference.pop(k, None)
        else:
            records.append((k, f"v{i}"))
            reference[k] = f"v{i}"
    kafka.produce(source, records, partitions=2)
    state = tmp_path / "state"
    app = table_app(kafka, app_id, state, source, sink, processing_guarantee=guarantee)
    app.start()
    try:
        app.wait_until_running(60)
        wait_processed(app, len(records))
        wait_for(lambda: kafka.committed(app_id, source, 2) == kafka.ends(source), "the source committed", 30)
        wait_for(lambda: {p: o for p, o in ((t.input_partitions[0].partition, t.stores["profiles"].changelog_offset)
                                            for t in app.tasks())} == kafka.ends(source),
                 "the stores at the committed offsets", 30)
        assert dict(app.store("profiles").all()) == reference
    finally:
        assert app.close()
    assert not any(t.startswith(app_id) for t in topics(admin)), "a table's changelog is its source topic"
    shutil.rmtree(state)
    listener = RecordingListener()
    app = table_app(kafka, app_id, state, source, sink, listener=listener, processing_guarantee=guarantee)
    app.start()
    try:
        app.wait_until_running(60)
        ends = kafka.ends(source)
        assert {e.topic for e in listener.events} == {source}
        assert listener.starts() == {p: (0, end) for p, end in ends.items()}
        assert sum(listener.totals().values()) == len(records)  # every record, keyless ones excepted (none here)
        assert dict(app.store("profiles").all()) == reference
        assert app.metrics()["records_processed_total"] == 0  # restored, not processed again
        # and it goes on from there
        kafka.produce(source, [("user-1", "later"), ("user-2", None)], partitions=2)
        reference["user-1"] = "later"
        reference.pop("user-2", None)
        wait_for(lambda: dict(app.store("profiles").all()) == reference, "the new updates in the table", 30)
        assert not any(t.startswith(app_id) for t in topics(admin))
    finally:
        assert app.close()
    expected_out = {k: v.upper() for k, v in reference.items()}
    out = kafka.read_table(sink, value=utf8)
    assert out == expected_out  # to_stream of map_values: every update and tombstone went out


def test_a_table_table_join_with_updates_and_deletes(kafka, tmp_path):
    left_topic = kafka.create_topic(partitions=2, prefix="tb-left")
    right_topic = kafka.create_topic(partitions=2, prefix="tb-right")
    sinks = {kind: kafka.create_topic(partitions=2, prefix=f"tb-{kind}") for kind in ("inner", "left", "outer")}
    app_id = kafka.app_id("tb-tt")
    app = hotstate.App(app_id=app_id, bootstrap_servers=kafka.bootstrap, state_dir=str(tmp_path),
                       commit_interval_ms=100)
    lt = app.table(left_topic, key_serde=serde.STRING, value_serde=serde.INT64, store="l")
    rt = app.table(right_topic, key_serde=serde.STRING, value_serde=serde.INT64, store="r")
    for kind, op in (("inner", lt.join), ("left", lt.left_join), ("outer", lt.outer_join)):
        op(rt, lambda a, b: [a, b], store=f"joined-{kind}").to_stream().to(sinks[kind], value_serde=serde.JSON)
    rng = random.Random(8)
    sides = {"l": {}, "r": {}}
    app.start()
    try:
        app.wait_until_running(60)
        for _ in range(3):  # rounds of updates and deletes on both sides, produced while the app runs
            batch = {"l": [], "r": []}
            for _ in range(400):
                side, key = rng.choice("lr"), f"k{rng.randrange(50)}"
                value = None if rng.random() < 0.25 else rng.randrange(1000)
                batch[side].append((key, None if value is None else value.to_bytes(8, "big", signed=True)))
                if value is None:
                    sides[side].pop(key, None)
                else:
                    sides[side][key] = value
            kafka.produce(left_topic, batch["l"], partitions=2)
            kafka.produce(right_topic, batch["r"], partitions=2)
        keys = set(sides["l"]) | set(sides["r"])
        expected = {
            "inner": {k: [sides["l"][k], sides["r"][k]] for k in keys if k in sides["l"] and k in sides["r"]},
            "left": {k: [sides["l"][k], sides["r"].get(k)] for k in keys if k in sides["l"]},
            "outer": {k: [sides["l"].get(k), sides["r"].get(k)] for k in keys},
        }
        for kind, sink in sinks.items():
            wait_for(lambda: kafka.read_table(sink, value=js) == expected[kind], f"the {kind} join's final table",
                     90, 0.3)
            assert dict(app.store(f"joined-{kind}").all()) == expected[kind]
        assert dict(app.store("l").all()) == sides["l"] and dict(app.store("r").all()) == sides["r"]
    finally:
        assert app.close()


def test_a_tables_snapshot_names_its_source_topic_and_a_wiped_instance_restores_from_it(kafka, tmp_path):
    from hotstate.snapshot import ObjectStore
    from snapshot_store_helpers import listings

    class Downloads(RecordingListener):
        def __init__(self):
            super().__init__()
            self.downloaded: dict[int, int] = {}

        def on_snapshot_downloaded(self, partition, store_name, snapshot_offset, num_bytes, seconds):  # noqa: ANN001
            self.downloaded[partition.partition] = snapshot_offset

    source = kafka.create_topic(partitions=2, prefix="tb-snap")
    sink = kafka.create_topic(partitions=2, prefix="tb-snap-out")
    app_id = kafka.app_id("tb-snap")
    url = f"file://{tmp_path / 'snapshots'}"
    reference = {f"user-{i}": f"v{i}" for i in range(400)}
    kafka.produce(source, list(reference.items()), partitions=2)
    state = tmp_path / "state"
    app = table_app(kafka, app_id, state, source, sink, snapshot_store=url, snapshot_interval_ms=200)
    app.start()
    try:
        app.wait_until_running(60)
        wait_processed(app, len(reference))
        objects = ObjectStore.open(url, {})
        ends = kafka.ends(source)

        def published() -> dict[int, tuple[str, int] | None]:
            out = {}
            for p, listing in listings(objects, app_id, "profiles", 2).items():
                m = listing.manifests[0].manifest if listing.manifests else None
                out[p] = None if m is None else (m.changelog_topic, m.changelog_offset)
            return out
        wait_for(lambda: published() == {p: (source, end) for p, end in ends.items()},
                 "a snapshot of each partition at its source offset", 60, 0.3, published)
    finally:
        assert app.close()
    shutil.rmtree(state)
    tail = [(f"user-{i}", f"tail{i}") for i in range(0, 400, 7)]
    kafka.produce(source, tail, partitions=2)
    reference.update(tail)
    listener = Downloads()
    app = table_app(kafka, app_id, state, source, sink, listener=listener, snapshot_store=url)
    app.start()
    try:
        app.wait_until_running(60)
        assert listener.downloaded == ends  # each store from its snapshot, at the committed offset: no replay
        assert listener.of("start") == []
        wait_for(lambda: dict(app.store("profiles").all()) == reference, "the tail processed on top", 30,
                 detail=lambda: len(dict(app.store("profiles").all())))
    finally:
        assert app.close()


def test_a_standby_of_a_table_ahead_of_the_committed_offset_takes_over(kafka, tmp_path):
    """Two instances with a standby each. The active's processing is slow (a sleep per record), its standby on the
    other instance tails the source topic to its end at once: when the active leaves, the standby is ahead of the
    committed offset. It takes over without a restore and processes the records from the committed offset again,
    committing without moving its store's offset back."""
    import time

    source = kafka.create_topic(partitions=2, prefix="tb-standby")
    sink = kafka.create_topic(partitions=2, prefix="tb-standby-out")
    app_id = kafka.app_id("tb-standby")

    def build(name, listener=None):
        app = hotstate.App(app_id=app_id, bootstrap_servers=kafka.bootstrap, state_dir=str(tmp_path / name),
                           commit_interval_ms=100, num_standby_replicas=1, session_timeout_ms=6000,
                           poll_records_max=10)  # small polls: a close stops within 10 records
        t = app.table(source, key_serde=serde.STRING, value_serde=serde.STRING, store="profiles")
        t.map_values(lambda v: (time.sleep(0.01), v.upper())[1]).to_stream().to(sink, value_serde=serde.STRING)
        if listener is not None:
            app.set_restore_listener(listener)
        return app

    def actives(app):
        return {t.id for t in app.tasks() if not t.standby and t.state is hotstate.TaskState.RUNNING}

    def standbys(app):
        return {t.id: t.lag for t in app.tasks() if t.standby}

    listener = RecordingListener()
    a, b = build("a"), build("b", listener)
    a.start()
    try:
        wait_for(lambda: actives(a) == {"0_0", "0_1"}, "a to run both tasks", 60)
        b.start()
        wait_for(lambda: len(actives(a)) == 1 and len(actives(b)) == 1, "one task to move to b", 90)
        a_task = next(iter(actives(a)))
        p = int(a_task.split("_")[1])
        wait_for(lambda: a_task in standbys(b), "b to keep a standby of a's task", 60)
        reference = {f"user-{i}": f"v{i}" for i in range(1500)}
        kafka.produce(source, list(reference.items()), partitions=2)
        end = kafka.ends(source)[p]
        wait_for(lambda: standbys(b).get(a_task) == 0, "b's standby at the end of the source", 30,
                 detail=lambda: standbys(b))
        committed = kafka.committed(app_id, source, 2).get(p, -1)
        assert committed < end, "a processed everything before its standby caught up: the test proves nothing"
        assert a.close()
        wait_for(lambda: actives(b) == {"0_0", "0_1"}, "b to run both tasks", 90)
        wait_for(lambda: dict(b.store("profiles").all()) == reference, "b's table complete", 60)
        wait_for(lambda: kafka.committed(app_id, source, 2) == kafka.ends(source), "b to commit the source", 120)
        assert b.state is hotstate.AppState.RUNNING
        assert [e for e in listener.of("start") if e.partition == p] == []  # the standby needed no restore
        stored = next(t for t in b.tasks() if t.id == a_task).stores["profiles"].changelog_offset
        assert stored == end
        assert kafka.read_table(sink, value=utf8) == {k: v.upper() for k, v in reference.items()}
    finally:
        a.close()
        assert b.close()
