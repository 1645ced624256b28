"""Global tables and stream-globaltable joins (issue #12) without a broker: the join node's semantics through
the TopologyTestDriver (inner / left, null selected keys, null values, tombstones, a failing key_selector),
build-time errors, the global store over several partitions, and the global thread's bootstrap and tailing
against a fake consumer (offsets per partition, the restore listener, a restart reading only the delta), and
both joins against a reference over random interleavings of table updates and stream records (hypothesis)."""
from __future__ import annotations

import threading

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import hotstate
from hotstate import StoreSpec, serde
from hotstate.errors import ProcessingError, StoreClosedError, TopologyError
from hotstate.observe.metrics import Metrics
from hotstate.records import TopicPartition
from hotstate.runtime.global_thread import GlobalThread, GlobalThreadState
from hotstate.state.global_store import GlobalStore
from hotstate.testing import TopologyTestDriver


def enrich(app, left: bool, store: str | StoreSpec = "countries"):
    orders = app.stream("orders", key_serde=serde.STRING, value_serde=serde.JSON)
    countries = app.global_table("countries", key_serde=serde.STRING, value_serde=serde.JSON, store=store)
    join = orders.left_join if left else orders.join
    (join(countries, key_selector=lambda k, v: v.get("country"),
          joiner=lambda o, c: {**o, "country_name": c and c["name"]})
        .to("enriched", value_serde=serde.JSON))
    return app


def kv(records):
    return [(r.key, r.value) for r in records]


@pytest.mark.parametrize("kind", ["rocksdb", "memory"])
def test_inner_join_enriches_matches_and_drops_the_rest(make_app, kind):
    app = enrich(make_app(), left=False, store=StoreSpec("countries", kind=kind))
    with TopologyTestDriver(app, partitions={"countries": 3}) as driver:
        driver.pipe("countries", "fr", {"name": "France"})
        driver.pipe("countries", "de", {"name": "Germany"})
        driver.pipe("orders", "o1", {"country": "fr", "amount": 3}, timestamp_ms=7)
        driver.pipe("orders", "o2", {"country": "xx", "amount": 4})  # no such country: dropped
        driver.pipe("orders", "o3", {"country": "de", "amount": 5})
        out = driver.read_output("enriched")
        assert kv(out) == [("o1", {"country": "fr", "amount": 3, "country_name": "France"}),
                           ("o3", {"country": "de", "amount": 5, "country_name": "Germany"})]
        assert out[0].timestamp == 7  # the stream record's timestamp
        # The table changes: later records see the new value; a tombstone deletes.
        driver.pipe("countries", "fr", {"name": "République française"})
        driver.pipe("countries", "de", None)
        driver.pipe("orders", "o4", {"country": "fr"})
        driver.pipe("orders", "o5", {"country": "de"})
        assert kv(driver.read_output("enriched")) == [("o4", {"country": "fr", "country_name": "République française"})]


def test_left_join_calls_the_joiner_with_none_for_a_missing_row_and_a_none_selected_key(make_app):
    app = enrich(make_app(), left=True)
    with TopologyTestDriver(app) as driver:
        driver.pipe("countries", "fr", {"name": "France"})
        driver.pipe("orders", "o1", {"country": "fr"})
        driver.pipe("orders", "o2", {"country": "xx"})
        driver.pipe("orders", "o3", {})  # key_selector answers None
        assert kv(driver.read_output("enriched")) == [
            ("o1", {"country": "fr", "country_name": "France"}),
            ("o2", {"country": "xx", "country_name": None}),
            ("o3", {"country_name": None})]
        assert driver.metrics()["dropped_records_null_key_total"] == 0


def test_inner_join_drops_and_counts_a_none_selected_key(make_app):
    app = enrich(make_app(), left=False)
    with TopologyTestDriver(app) as driver:
        driver.pipe("countries", "fr", {"name": "France"})
        driver.pipe("orders", "o1", {})
        driver.pipe("orders", "o2", {"country": "fr"})
        assert [r.key for r in driver.read_output("enriched")] == ["o2"]
        assert driver.metrics()["dropped_records_null_key_total"] == 1


@pytest.mark.parametrize("left", [False, True])
def test_a_stream_record_with_a_null_value_is_dropped_and_counted(make_app, left):
    calls = []
    app = make_app()
    orders = app.stream("orders", key_serde=serde.STRING, value_serde=serde.JSON)
    countries = app.global_table("countries", key_serde=serde.STRING, value_serde=serde.JSON, store="countries")
    join = orders.left_join if left else orders.join
    join(countries, key_selector=lambda k, v: calls.append(v) or "fr", joiner=lambda o, c: [o, c]).to(
        "enriched", value_serde=serde.JSON)
    with TopologyTestDriver(app) as driver:
        driver.pipe("countries", "fr", {"name": "France"})
        driver.pipe("orders", "o1", None)
        assert driver.read_output("enriched") == []
        assert calls == []  # the key_selector never sees a null value
        assert driver.metrics()["dropped_records_null_value_total"] == 1
        driver.pipe("orders", "o2", 1)
        assert kv(driver.read_output("enriched")) == [("o2", [1, {"name": "France"}])]


def test_a_raising_key_selector_follows_the_processing_exception_handler(make_app):
    def boom(k, v):
        raise KeyError("no country")

    for handler, expect_error in (("log_and_fail", True), ("log_and_continue", False)):
        app = make_app(processing_exception_handler=handler)
        orders = app.stream("orders", key_serde=serde.STRING, value_serde=serde.JSON)
        countries = app.global_table("countries", key_serde=serde.STRING, value_serde=serde.JSON, store="c")
        orders.join(countries, key_selector=boom, joiner=lambda o, c: o).to("out", value_serde=serde.JSON)
        with TopologyTestDriver(app) as driver:
            if expect_error:
                with pytest.raises(ProcessingError):
                    driver.pipe("orders", "o1", {"a": 1})
            else:
                driver.pipe("orders", "o1", {"a": 1})
                assert driver.read_output("out") == []
                assert driver.metrics()["dropped_records_total"] == 1


def test_the_global_store_holds_every_partition_and_is_queried_whole(make_app):
    app = enrich(make_app(), left=False)
    with TopologyTestDriver(app, partitions={"countries": 4}) as driver:
        rows = {f"c{i:02d}": {"name": f"n{i}"} for i in range(40)}
        for k, v in rows.items():
            driver.pipe("countries", k, v)
        store = driver._globals["countries"]
        assert sum(1 for b in store.backends if b.changelog_offset()) > 1  # spread over partitions
        view = driver.store("countries")
        assert dict(view.all()) == rows
        assert [k for k, _ in view.all()] == sorted(rows)  # merged in key order across partitions
        assert list(view.range("c05", "c07")) == [(k, rows[k]) for k in ("c05", "c06", "c07")]
        assert view.get("c13") == {"name": "n13"} and view.get("zz") is None
        assert view.approximate_num_entries() == 40
    with pytest.raises(StoreClosedError):
        view.get("c13")


def test_build_errors_name_the_operation(make_app):
    app = make_app()
    orders = app.stream("orders", key_serde=serde.STRING, value_serde=serde.JSON)
    countries = app.global_table("countries", key_serde=serde.STRING, value_serde=serde.JSON, store="countries")
    with pytest.raises(TopologyError, match=r"^join\(\) with global table 'countries'.*key_selector"):
        orders.join(countries, lambda o, c: o)
    with pytest.raises(TopologyError, match=r"^left_join\(\) with global table 'countries'.*key_selector"):
        orders.left_join(countries, joiner=lambda o, c: o)
    with pytest.raises(TopologyError, match="joiner"):
        orders.join(countries, key_selector=lambda k, v: k)
    with pytest.raises(TopologyError, match="store 'countries' is used already"):
        app.global_table("other", store="countries")
    with pytest.raises(TopologyError, match="already the topic of a global table"):
        app.stream("countries")
    with pytest.raises(TopologyError, match="already a source"):
        app.global_table("orders", store="o")
    with pytest.raises(TopologyError, match="pass store="):
        app.global_table("x")
    with pytest.raises(TopologyError, match="store of a global table"):
        orders.group_by_key().count("countries")
    with pytest.raises(TopologyError, match=r"windows\.join"):  # a stream joins a stream only within a window
        orders.join(orders, lambda a, b: a)
    # not part of the group's work: no task reads the topic, the member does not subscribe to it, no changelog
    assert app._topology.source_topics == ["orders"] and "countries" not in app._topology.store_specs()


# ---- the global thread against a fake consumer ----

class FakeMsg:
    def __init__(self, topic, partition, offset, key, value):
        self._t, self._p, self._o, self._k, self._v = topic, partition, offset, key, value

    def error(self): return None
    def topic(self): return self._t
    def partition(self): return self._p
    def offset(self): return self._o
    def key(self): return self._k
    def value(self): return self._v


class FakeConsumer:
    """An in-memory topic: ``logs[p]`` is partition p's records (key, value); hands out up to 2 records per call."""

    def __init__(self, topic, logs):
        self.topic, self.logs = topic, logs
        self.pos: dict[int, int] = {}
        self.consumed = 0
        self.closed = False

    def get_watermark_offsets(self, ktp, timeout=None, cached=False):
        return 0, len(self.logs[ktp.partition])

    def assign(self, ktps):
        self.pos = {k.partition: k.offset for k in ktps}

    def consume(self, n, timeout):
        out = []
        for p, off in self.pos.items():
            while off < len(self.logs[p]) and len(out) < 2:
                out.append(FakeMsg(self.topic, p, off, *self.logs[p][off]))
                off += 1
            self.pos[p] = off
        self.consumed += len(out)
        if not out:
            threading.Event().wait(min(timeout, 0.01))
        return out

    def position(self, ktps):
        from confluent_kafka import TopicPartition as K
        return [K(k.topic, k.partition, self.pos.get(k.partition, -1001)) for k in ktps]

    def close(self):
        self.closed = True


class Listener(hotstate.RestoreListener):
    def __init__(self):
        self.calls = []

    def on_restore_start(self, partition, store_name, start_offset, end_offset):
        self.calls.append(("start", partition, store_name, start_offset, end_offset))

    def on_batch_restored(self, partition, store_name, batch_end_offset, num_restored):
        self.calls.append(("batch", partition, num_restored))

    def on_restore_end(self, partition, store_name, total_restored):
        self.calls.append(("end", partition, store_name, total_restored))


def run_thread(app, logs, root, listener, metrics):
    table = app._topology.global_tables["countries"]
    consumer = FakeConsumer("countries", logs)
    errors = []
    thread = GlobalThread(app.config, [table], {"countries": len(logs)}, root, listener, metrics, errors.append,
                          lambda: consumer)
    thread.start()
    assert thread.wait_bootstrapped(lambda: False, timeout_s=10), errors
    return thread, table, consumer, errors


def test_global_thread_bootstraps_tails_and_a_restart_reads_only_the_delta(make_app, tmp_path):
    app = make_app()
    app.stream("orders")
    app.global_table("countries", key_serde=serde.STRING, value_serde=serde.STRING, store="countries")
    logs = [[(b"a", b"1"), (b"b", b"2"), (None, b"x"), (b"a", b"3")], [(b"c", b"4")], []]
    listener, metrics = Listener(), Metrics()
    thread, table, consumer, errors = run_thread(app, logs, str(tmp_path), listener, metrics)
    assert thread.state is GlobalThreadState.RUNNING
    assert dict(table.view.all()) == {"a": "3", "b": "2", "c": "4"}
    starts = [c for c in listener.calls if c[0] == "start"]
    ends = [c for c in listener.calls if c[0] == "end"]
    assert starts == [("start", TopicPartition("countries", 0), "countries", 0, 4),
                      ("start", TopicPartition("countries", 1), "countries", 0, 1)]  # partition 2 is empty
    assert ends == [("end", TopicPartition("countries", 0), "countries", 3),  # the keyless record is skipped
                    ("end", TopicPartition("countries", 1), "countries", 1)]
    snap = metrics.snapshot()["restores"]
    assert snap["global-0/countries"]["restore_records_total"] == 3
    assert snap["global-0/countries"]["state"] == "RESTORED"
    # Kept current: a new record and a tombstone.
    logs[2].append((b"d", b"5"))
    logs[0].append((b"b", None))
    deadline = threading.Event()
    for _ in range(200):
        if dict(table.view.all()) == {"a": "3", "c": "4", "d": "5"}:
            break
        deadline.wait(0.02)
    assert dict(table.view.all()) == {"a": "3", "c": "4", "d": "5"}
    thread.stop()
    thread.join(10)
    assert not thread.is_alive() and consumer.closed and table.view is None and not errors
    # A restart on the same state dir: each partition from its stored offset.
    logs[1].append((b"e", b"6"))
    listener2 = Listener()
    thread, table, consumer, errors = run_thread(app, logs, str(tmp_path), listener2, Metrics())
    try:
        assert consumer.consumed == 1  # only the delta
        assert [c for c in listener2.calls if c[0] == "start"] == [
            ("start", TopicPartition("countries", 1), "countries", 1, 2)]
        assert dict(table.view.all()) == {"a": "3", "c": "4", "d": "5", "e": "6"}
    finally:
        thread.stop()
        thread.join(10)


def test_global_store_offsets_survive_a_reopen(tmp_path):
    spec = StoreSpec("g", serde.STRING, serde.STRING)
    store = GlobalStore(spec, "t", 2, str(tmp_path))
    store.backends[0].write([(b"k", b"v")], 5)
    store.backends[1].write([(b"m", b"w")], 9)
    store.close()
    again = GlobalStore(spec, "t", 2, str(tmp_path))
    try:
        assert again.offsets() == {0: 5, 1: 9}
        assert again.get(b"m") == b"w"
        assert (tmp_path / "global" / "g" / "1").is_dir()
    finally:
        again.close()


def test_a_global_thread_that_fails_reports_it_and_never_counts_as_bootstrapped(make_app, tmp_path):
    app = make_app()
    app.stream("orders")
    table = app.global_table("countries", store="countries")

    def no_consumer():
        raise RuntimeError("broker gone")

    errors = []
    thread = GlobalThread(app.config, [table], {"countries": 2}, str(tmp_path), None, Metrics(), errors.append,
                          no_consumer)
    thread.start()
    assert thread.wait_bootstrapped(lambda: False, timeout_s=10) is False
    thread.join(10)
    assert thread.state is GlobalThreadState.CLOSED
    assert [str(e) for e in errors] == ["broker gone"]
    assert table.view is None  # the stores it opened are closed and detached


# ---- against a reference: random interleavings of table updates and stream records ----

KEYS = ["a", "b", "c", "d", None]
ops = st.lists(st.one_of(
    st.tuples(st.just("table"), st.sampled_from(KEYS[:4]), st.one_of(st.none(), st.integers(0, 9))),
    st.tuples(st.just("stream"), st.sampled_from(KEYS), st.one_of(st.none(), st.integers(0, 9)))),
    max_size=40)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=ops, left=st.booleans(), partitions=st.integers(1, 3))
def test_joins_match_a_reference_over_random_interleavings(make_app, ops, left, partitions):
    app = make_app()
    stream = app.stream("s", key_serde=serde.STRING, value_serde=serde.JSON)
    table = app.global_table("t", key_serde=serde.STRING, value_serde=serde.JSON,
                             store=StoreSpec("t", kind="memory"))
    # the stream value names the table key: None for the records whose "k" is None
    join = stream.left_join if left else stream.join
    join(table, key_selector=lambda k, v: v["k"], joiner=lambda v, row: [v["n"], row]).to("out",
                                                                                        value_serde=serde.JSON)
    model: dict[str, int] = {}
    expect, null_keys, null_values = [], 0, 0
    with TopologyTestDriver(app, partitions={"t": partitions}) as driver:
        for i, (kind, key, n) in enumerate(ops):
            if kind == "table":
                driver.pipe("t", key, n)
                if n is None:
                    model.pop(key, None)
                else:
                    model[key] = n
                continue
            value = None if n is None else {"k": key, "n": n}
            driver.pipe("s", f"r{i}", value)
            if value is None:
                null_values += 1
            elif key is None and not left:
                null_keys += 1
            elif key is not None and key in model:
                expect.append((f"r{i}", [n, model[key]]))
            elif left:
                expect.append((f"r{i}", [n, None]))
        assert kv(driver.read_output("out")) == expect
        m = driver.metrics()
        assert (m["dropped_records_null_key_total"], m["dropped_records_null_value_total"]) == (null_keys, null_values)
        assert dict(driver.store("t").all()) == model
