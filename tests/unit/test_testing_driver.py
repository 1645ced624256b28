"""hotstate.testing.TopologyTestDriver: apps run without a broker through the runtime's own task manager, stores,
committer and exception handlers (word count, windows, punctuations, repartition hops, merge, serde errors), and
never a network client."""
from __future__ import annotations

import json
import socket

import pytest

import hotstate
from hotstate import Punctuation, Record, StoreSpec, Windowed, serde, windows
from hotstate.errors import DeserializationError, ProcessingError
from hotstate.kafka.partitioner import partition_for
from hotstate.testing import TopologyTestDriver


def word_count(app, store="counts"):
    (app.stream("lines", key_serde=serde.STRING, value_serde=serde.STRING)
        .flat_map(lambda k, line: [(w, w) for w in line.split()])
        .group_by_key(key_serde=serde.STRING, value_serde=serde.STRING)
        .count(store)
        .to_stream().to("counts-out", value_serde=serde.INT64))
    return app


def kv(records):
    return [(r.key, r.value) for r in records]


# ---- a word count: store, output topic, reading consumes, commits ----

def test_word_count_fills_the_store_and_the_output_topic(make_app):
    with TopologyTestDriver(word_count(make_app()), wall_clock_ms=0) as driver:
        driver.pipe("lines", None, "a b a", timestamp_ms=5)
        out = driver.read_output("counts-out")
        assert kv(out) == [("a", 1), ("b", 1), ("a", 2)]
        assert {r.timestamp for r in out} == {5}  # the input's timestamp, through the repartition hop
        assert [r.offset for r in out] == [0, 1, 2]
        assert driver.read_output("counts-out") == []  # consumed
        driver.pipe("lines", "k", "b c", timestamp_ms=6)
        assert kv(driver.read_output("counts-out")) == [("b", 2), ("c", 1)]
        store = driver.store("counts")
        assert sorted(store.all()) == [("a", 2), ("b", 2), ("c", 1)]
        assert store.get("a") == 2 and store.get("zzz") is None
        assert list(store.range("b", "c")) == [("b", 2), ("c", 1)]
        assert driver.metrics()["records_processed_total"] == 2 + 5  # input lines + repartitioned words


def test_each_pipe_is_committed_stores_hold_committed_state_and_the_changelog_has_it(make_app):
    app = word_count(make_app())
    with TopologyTestDriver(app, wall_clock_ms=0) as driver:
        driver.pipe("lines", None, "a a b")
        (task,) = [t for t in driver._tm.tasks.values() if "counts" in t.stores]
        assert task.dirty_records() == 0  # nothing uncommitted
        backend = task.stores["counts"].backend
        assert backend.get(b"a") == (2).to_bytes(8, "big")
        changelog = driver.read_output(app.config.changelog_topic("counts"), key_serde=serde.STRING,
                                       value_serde=serde.INT64)
        assert kv(changelog) == [("a", 2), ("b", 1)]  # one record per key and commit
        assert backend.changelog_offset() == 2


def test_the_same_driver_api_on_a_rocksdb_and_a_memory_store(make_app):
    for kind in ("rocksdb", "memory"):
        app = make_app()
        (app.stream("in", key_serde=serde.STRING, value_serde=serde.STRING).group_by_key()
            .count(StoreSpec("c", kind=kind)).to_stream().to("out", value_serde=serde.INT64))
        with TopologyTestDriver(app) as driver:
            for k in ("x", "y", "x"):
                driver.pipe("in", k, "v")
            assert sorted(driver.store("c").all()) == [("x", 2), ("y", 1)], kind


def test_an_exactly_once_app_gives_the_same_results_in_the_driver(make_app):
    outputs = []
    for guarantee in ("at_least_once", "exactly_once_v2"):
        app = word_count(make_app(processing_guarantee=guarantee))
        with TopologyTestDriver(app, wall_clock_ms=0) as driver:
            driver.pipe("lines", None, "p q p")
            driver.pipe("lines", None, "q")
            outputs.append((kv(driver.read_output("counts-out")), sorted(driver.store("counts").all())))
    assert outputs[0] == outputs[1] == ([("p", 1), ("q", 1), ("p", 2), ("q", 2)], [("p", 2), ("q", 2)])


# ---- a windowed count ----

def test_windowed_count_with_late_records(make_app):
    app = make_app()
    (app.stream("clicks", key_serde=serde.STRING, value_serde=serde.STRING).group_by_key()
        .windowed_by(windows.tumbling(size_ms=100, grace_ms=10, retention_ms=1000)).count("per-window")
        .to_stream().to("per-window-out", value_serde=serde.INT64))
    with TopologyTestDriver(app) as driver:
        for key, ts in [("u", 5), ("u", 50), ("v", 99), ("u", 120), ("u", 105), ("u", 230), ("u", 60)]:
            driver.pipe("clicks", key, "click", timestamp_ms=ts)
        # ts 60 came after stream time 230 closed [0, 100) (230 >= 100 + 10): dropped and counted
        out = driver.read_output("per-window-out")
        assert [(r.key, r.value, r.timestamp) for r in out] == [
            (Windowed("u", 0, 100), 1, 5), (Windowed("u", 0, 100), 2, 50), (Windowed("v", 0, 100), 1, 99),
            (Windowed("u", 100, 200), 1, 120), (Windowed("u", 100, 200), 2, 120), (Windowed("u", 200, 300), 1, 230)]
        store = driver.store("per-window")
        assert store.fetch("u", 0, 300) == [(0, 2), (100, 2), (200, 1)]
        assert sorted(store.fetch_all(0, 0)) == [("u", 0, 2), ("v", 0, 1)]
        assert sum(driver.metrics()["dropped_late_records_total"].values()) == 1


# ---- a processor with punctuations ----

class Batcher(hotstate.Processor):
    """Sums values per key in a store; every 1000 ms of wall-clock time forwards the sums and clears them;
    every 100 ms of stream time forwards ("stream-time", its time)."""

    def init(self, context):
        self.context = context
        self.sums = context.store("sums")
        context.schedule(1000, Punctuation.WALL_CLOCK_TIME, self.flush)
        context.schedule(100, Punctuation.STREAM_TIME,
                         lambda ts: context.forward(Record("stream-time", ts, ts)))

    def process(self, record):
        self.sums.put(record.key, (self.sums.get(record.key) or 0) + record.value)

    def flush(self, timestamp):
        for key, total in list(self.sums.all()):
            self.context.forward(Record(key, total, timestamp))
            self.sums.delete(key)


def batcher_app(make_app):
    app = make_app()
    (app.stream("amounts", key_serde=serde.STRING, value_serde=serde.INT64)
        .process(Batcher, stores=[StoreSpec("sums", key_serde=serde.STRING, value_serde=serde.INT64)],
                 key_serde=serde.STRING, value_serde=serde.INT64)
        .to("batches"))
    return app


def test_wall_clock_punctuations_fire_on_advance_wall_clock_and_stream_time_ones_on_records(make_app):
    with TopologyTestDriver(batcher_app(make_app), wall_clock_ms=10_000) as driver:
        driver.pipe("amounts", "a", 3, timestamp_ms=0)  # stream time 0: the STREAM_TIME schedule fires at once
        driver.pipe("amounts", "a", 4, timestamp_ms=50)
        driver.pipe("amounts", "b", 1, timestamp_ms=150)  # stream time 150: fires (due since 100)
        assert [(r.key, r.value, r.timestamp) for r in driver.read_output("batches")] == [
            ("stream-time", 0, 0), ("stream-time", 150, 150)]
        driver.advance_wall_clock(999)
        assert driver.read_output("batches") == []  # one interval after init: 11_000
        driver.advance_wall_clock(1)
        assert [(r.key, r.value, r.timestamp) for r in driver.read_output("batches")] == [
            ("a", 7, 11_000), ("b", 1, 11_000)]
        assert list(driver.store("sums").all()) == []
        driver.advance_wall_clock(5_500)  # several intervals: fires once
        assert driver.read_output("batches") == []  # nothing to flush
        driver.pipe("amounts", "c", 2, timestamp_ms=160)
        driver.advance_wall_clock(500)  # 17_000: the schedule is back on its grid
        assert kv(driver.read_output("batches")) == [("c", 2)]


def test_close_calls_the_processors_close_and_closes_the_stores(make_app):
    closed = []

    class Closing(hotstate.Processor):
        def init(self, context):
            self.store = context.store("s")

        def process(self, record):
            self.store.put(record.key, 1)

        def close(self):
            closed.append(self.store.get("k"))  # stores are still open in close()

    app = make_app()
    app.stream("in", key_serde=serde.STRING, value_serde=serde.STRING).process(
        Closing, stores=[StoreSpec("s", key_serde=serde.STRING, value_serde=serde.INT64)])
    driver = TopologyTestDriver(app)
    driver.pipe("in", "k", "v")
    view = driver.store("s")
    driver.close()
    driver.close()  # idempotent
    assert closed == [1]
    with pytest.raises(hotstate.StoreClosedError):
        view.get("k")
    with pytest.raises(hotstate.HotstateError, match="closed"):
        driver.pipe("in", "k", "v")


# ---- re-keying through a repartition topic ----

def test_group_by_goes_through_the_repartition_topic_to_the_task_of_the_new_key(make_app):
    app = make_app()
    (app.stream("orders", key_serde=serde.STRING, value_serde=serde.JSON)
        .group_by(lambda k, order: order["user"], key_serde=serde.STRING)
        .aggregate(lambda: 0, lambda user, order, total: total + order["amount"], store="spent",
                   value_serde=serde.INT64)
        .to_stream().to("spent-out", value_serde=serde.INT64))
    users = [f"user-{i}" for i in range(12)]
    with TopologyTestDriver(app, partitions=3) as driver:
        for i in range(60):
            driver.pipe("orders", f"order-{i}", {"user": users[i % 12], "amount": i}, timestamp_ms=i)
        expected = {u: sum(i for i in range(60) if users[i % 12] == u) for u in users}
        assert dict(driver.store("spent").all()) == expected
        assert driver.read_output("spent-out")[-1].value == expected[users[59 % 12]]
        # each user's total lives only in the task of murmur2(user) % 3 (the repartition topic's partitioner)
        by_task = {t.id: dict(t.stores["spent"].view.all()) for t in driver._tm.tasks.values() if "spent" in t.stores}
        assert set(by_task) == {"1_0", "1_1", "1_2"}
        for u in users:
            owner = f"1_{partition_for(u.encode(), 3)}"
            assert [tid for tid, totals in by_task.items() if u in totals] == [owner]
        rep = "unit-app-KSTREAM-REPARTITION-0000000000-repartition"
        assert [len(p) for p in driver._log.topics[rep]] == [
            sum(1 for i in range(60) if partition_for(users[i % 12].encode(), 3) == p) for p in range(3)]


def test_a_null_key_after_a_key_change_is_dropped_before_the_repartition_topic(make_app):
    app = make_app()
    (app.stream("in", key_serde=serde.STRING, value_serde=serde.STRING)
        .group_by(lambda k, v: None if v == "none" else v, key_serde=serde.STRING).count("c"))
    with TopologyTestDriver(app) as driver:
        for v in ("x", "none", "x"):
            driver.pipe("in", "k", v)
        assert list(driver.store("c").all()) == [("x", 2)]
        assert driver.metrics()["dropped_records_null_key_total"] == 1


# ---- merge ----

def test_merge_counts_both_topics_in_one_task_in_timestamp_order(make_app):
    app = make_app()
    eu = app.stream("orders-eu", key_serde=serde.STRING, value_serde=serde.STRING)
    us = app.stream("orders-us", key_serde=serde.STRING, value_serde=serde.STRING)
    eu.merge(us).group_by_key().count("orders").to_stream().to("orders-out", value_serde=serde.INT64)
    with TopologyTestDriver(app) as driver:
        driver.pipe("orders-eu", "shoes", "o1", timestamp_ms=1)
        driver.pipe("orders-us", "shoes", "o2", timestamp_ms=2)
        driver.pipe("orders-us", "hats", "o3", timestamp_ms=3)
        assert kv(driver.read_output("orders-out")) == [("shoes", 1), ("shoes", 2), ("hats", 1)]
        assert sorted(driver.store("orders").all()) == [("hats", 1), ("shoes", 2)]
        assert [t.id for t in driver._tm.tasks.values()] == ["0_0"]  # one sub-topology, one task


def test_topics_of_a_merge_must_be_co_partitioned(make_app):
    app = make_app()
    a = app.stream("a", key_serde=serde.STRING, value_serde=serde.STRING)
    a.merge(app.stream("b", key_serde=serde.STRING, value_serde=serde.STRING)).to("out")
    with pytest.raises(hotstate.TopologyError, match="co-partitioned"):
        TopologyTestDriver(app, partitions={"a": 2, "b": 3})


# ---- serdes both ways; the exception handlers ----

def test_a_record_the_source_cannot_read_fails_through_the_deserialization_handler(make_app):
    app = make_app()
    app.stream("in", key_serde=serde.STRING, value_serde=serde.JSON).to("out")
    with TopologyTestDriver(app) as driver:
        driver.pipe("in", "k", {"n": 1})
        with pytest.raises(DeserializationError) as err:
            driver.pipe("in", "k", b"{not json", value_serde=serde.BYTES)  # log_and_fail (the default)
        assert (err.value.topic, err.value.partition, err.value.offset) == ("in", 0, 1)
        assert kv(driver.read_output("out")) == [("k", {"n": 1})]


def test_log_and_continue_skips_an_undecodable_record_and_dead_letters_it(make_app):
    app = make_app(deserialization_exception_handler="log_and_continue", dead_letter_topic="dlq")
    app.stream("in", key_serde=serde.STRING, value_serde=serde.JSON).group_by_key().count("c")
    with TopologyTestDriver(app) as driver:
        driver.pipe("in", "k", {"n": 1})
        driver.pipe("in", "k", b"\xff not json", value_serde=serde.BYTES, headers={"trace": b"42"})
        driver.pipe("in", "k", {"n": 2})
        assert list(driver.store("c").all()) == [("k", 2)]
        m = driver.metrics()
        assert (m["skipped_records_total"], m["dead_letter_records_total"]) == (1, 1)
        (dead,) = driver.read_output("dlq")
        assert (dead.key, dead.value) == (b"k", b"\xff not json")
        headers = dict(dead.headers)
        assert headers["trace"] == b"42"
        assert headers["__streams.errors.topic"] == b"in" and headers["__streams.errors.offset"] == b"1"


def test_a_value_the_sink_cannot_write_fails_through_the_processing_handler(make_app):
    app = make_app()
    app.stream("in", key_serde=serde.STRING, value_serde=serde.STRING).to("out", value_serde=serde.INT64)
    with TopologyTestDriver(app) as driver:
        with pytest.raises(ProcessingError):
            driver.pipe("in", "k", "not an int")
        assert driver.read_output("out") == []


def test_pipe_serializes_with_the_source_serdes_and_read_output_deserializes_with_the_sinks(make_app):
    app = make_app()
    (app.stream("in", key_serde=serde.STRING, value_serde=serde.JSON)
        .map_values(lambda v: v["n"] * 2).to("out", value_serde=serde.INT64))
    with TopologyTestDriver(app) as driver:
        with pytest.raises(Exception):
            driver.pipe("in", "k", {1, 2})  # a set is no JSON: the serde's error shows at pipe
        driver.pipe("in", "k", {"n": 21}, headers=[("h", b"1")])
        assert driver._log.topics["in"][0][-1].value == json.dumps({"n": 21}, separators=(",", ":")).encode()
        (rec,) = driver.read_output("out")
        assert (rec.key, rec.value, rec.headers) == ("k", 42, [("h", b"1")])
        assert driver._log.topics["out"][0][0].value == (42).to_bytes(8, "big")
        with pytest.raises(KeyError, match="not an output topic"):
            driver.read_output("nope")
        with pytest.raises(KeyError, match="not a source topic"):
            driver.pipe("out", "k", 1)


# ---- no network ----

def test_the_driver_never_makes_a_kafka_client_nor_opens_a_socket(make_app, monkeypatch):
    import confluent_kafka

    from hotstate.kafka import admin, clients

    def refuse(*args, **kwargs):
        raise AssertionError("the test driver must not talk to Kafka")

    for name in ("main_consumer", "restore_consumer", "tail_consumer", "end_offsets_consumer", "producer"):
        monkeypatch.setattr(clients, name, refuse)
    for module in (clients, admin, confluent_kafka):
        for name in ("Consumer", "Producer", "AdminClient"):
            if hasattr(module, name):
                monkeypatch.setattr(module, name, refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    app = word_count(make_app(bootstrap_servers="127.0.0.1:1"))
    with TopologyTestDriver(app) as driver:
        driver.pipe("lines", None, "x y x")
        driver.advance_wall_clock(60_000)
        assert kv(driver.read_output("counts-out")) == [("x", 1), ("y", 1), ("x", 2)]
    # the patches are live: a client made the app's way would have failed
    with pytest.raises(AssertionError, match="must not talk to Kafka"):
        clients.producer(app.config)
