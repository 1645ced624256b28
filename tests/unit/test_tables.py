"""Tables materialised from a topic, stream-table and table-table joins: building (sub-topologies, stores,
repartition sizing, TopologyErrors), the join logic against references computed here (hypothesis for
interleavings of table updates and stream records), the commit of a table's store (its source offset, no
changelog records) and its restore from the source topic up to the group's committed offset. No broker."""
from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import hotstate
from hotstate import serde
from hotstate.config import Config
from hotstate.dsl.nodes import SourceNode
from hotstate.dsl.topology import SubTopology
from hotstate.errors import TopologyError
from hotstate.observe.metrics import Metrics
from hotstate.records import TopicPartition
from hotstate.runtime.commit import AtLeastOnceCommitter, DeliveryTracker
from hotstate.runtime.state_updater import StateUpdater
from hotstate.runtime.task import Task, TaskState, TaskStore
from hotstate.state.memory_store import MemoryBackend
from hotstate.state.overlay import Overlay
from hotstate.state.store import KeyValueStore, StoreSpec
from test_commit import FakeConsumer as AlosConsumer
from test_commit import FakeProducer as AlosProducer
from test_state_updater import FakeRestoreConsumer, run_until_idle
from unit_support import Harness

KEYS = ["a", "b", "c"]


def enrich(app, left=False):
    orders = app.stream("orders", key_serde=serde.STRING, value_serde=serde.JSON)
    customers = app.table("customers", key_serde=serde.STRING, value_serde=serde.JSON, store="customers")
    join = orders.left_join if left else orders.join
    joined = join(customers, lambda o, c: {"order": o, "customer": c})
    joined.to("enriched", value_serde=serde.JSON)
    return app


def outputs(h):
    return [(s.key.decode() if s.key is not None else None, None if s.value is None else json.loads(s.value))
            for s in h.sent]


# ---- building ----

def test_a_table_is_a_store_whose_changelog_is_its_source_topic(make_app):
    app = make_app()
    t = app.table("customers", key_serde=serde.STRING, value_serde=serde.JSON, store="customers")
    (sub,) = app._topology.subtopologies
    assert sub.source_topics == ["customers"]
    spec = sub.stores["customers"]
    assert spec is t.store and spec.source_topic == "customers"
    assert spec.changelog_topic("unit-app") == "customers"  # not unit-app-customers-changelog
    assert StoreSpec("x").changelog_topic("unit-app") == "unit-app-x-changelog"


def test_a_stream_table_join_puts_stream_and_table_in_one_subtopology(make_app):
    app = enrich(make_app())
    (sub,) = app._topology.subtopologies
    assert sorted(sub.source_topics) == ["customers", "orders"] and list(sub.stores) == ["customers"]


def test_a_key_changed_stream_is_repartitioned_like_the_tables_topic_before_the_join(make_app):
    app = make_app()
    orders = app.stream("orders", key_serde=serde.STRING, value_serde=serde.JSON)
    customers = app.table("customers", key_serde=serde.STRING, value_serde=serde.JSON, store="customers")
    orders.select_key(lambda k, v: v["customer"], key_serde=serde.STRING).join(customers, lambda o, c: o)
    t = app._topology
    rep = "unit-app-KSTREAM-REPARTITION-0000000000-repartition"
    assert [s.source_topics for s in t.subtopologies] == [["orders"], ["customers", rep]]
    # sized like the table's topic (6), not like the stream's source (3): co-partitioned by construction
    assert t.resolve_partitions({"orders": 3, "customers": 6})[rep] == 6
    assert t.check_copartitioning(t.resolve_partitions({"orders": 3, "customers": 6})) == {0: 3, 1: 6}


def test_a_table_table_join_puts_both_tables_and_the_result_in_one_subtopology(make_app):
    app = make_app()
    a = app.table("a", key_serde=serde.STRING, value_serde=serde.JSON, store="a")
    b = app.table("b", key_serde=serde.STRING, value_serde=serde.JSON, store="b")
    j = a.outer_join(b, lambda x, y: [x, y], store="ab")
    (sub,) = app._topology.subtopologies
    assert sub.source_topics == ["a", "b"] and set(sub.stores) == {"a", "b", "ab"}
    assert j.store.name == "ab" and j.store.source_topic is None  # a result store has its own changelog
    internal = a.join(b, lambda x, y: x).store.name
    assert internal == "KTABLE-JOIN-STATE-STORE-0000000000"


@pytest.mark.parametrize("build, message", [
    (lambda app, t: app.stream("s", key_serde=serde.STRING).group_by_key().count("customers"),
     r"aggregate\(\): store name 'customers' is used twice \(first by table\('customers'\)"),
    (lambda app, t: app.table("other", key_serde=serde.STRING, store="customers"),
     r"table\('other'\): store name 'customers' is used twice"),
    (lambda app, t: t.join(app.table("x", store="x"), lambda a, b: a, store="customers"),
     r"join\(\): store name 'customers' is used twice"),
    (lambda app, t: app.stream("s").join(app.stream("p"), lambda a, b: a),
     r"join\(\): a join of two streams needs a window: pass window=windows.join\(time_difference_ms="),
    (lambda app, t: app.stream("s").left_join(app.stream("p"), lambda a, b: a),
     r"left_join\(\): a join of two streams needs a window"),
    (lambda app, t: app.stream("s").join(t.filter(lambda k, v: True), lambda a, b: a),
     r"join\(\): the table is not materialised \(filter\(\) / map_values\(\) without store=\)"),
    (lambda app, t: t.join(t, lambda a, b: a), r"join\(\): a table joined with itself"),
    (lambda app, t: app.stream("s").join(42, lambda a, b: a), r"join\(\) takes a Table"),
    (lambda app, t: app.stream("customers"), "already a source"),
])
def test_topology_mistakes_raise_at_build_time_naming_the_operation(make_app, build, message):
    app = make_app()
    t = app.table("customers", key_serde=serde.STRING, value_serde=serde.JSON, store="customers")
    with pytest.raises(TopologyError, match=message):
        build(app, t)


# ---- stream-table join ----

def test_stream_records_look_the_table_up_as_it_is_when_they_are_processed(make_app):
    h = Harness(enrich(make_app()), "orders")
    h.pipe("alice", {"n": 1}, topic="orders")  # no customer yet: inner join emits nothing
    h.pipe("alice", {"name": "A"}, topic="customers")  # table updates emit nothing
    h.pipe("alice", {"n": 2}, topic="orders")
    h.pipe("alice", {"name": "A2"}, topic="customers")
    h.pipe("alice", {"n": 3}, topic="orders")
    h.pipe("alice", None, topic="customers")  # tombstone: deletes the customer
    h.pipe("alice", {"n": 4}, topic="orders")
    assert outputs(h) == [("alice", {"order": {"n": 2}, "customer": {"name": "A"}}),
                          ("alice", {"order": {"n": 3}, "customer": {"name": "A2"}})]
    assert h.store("customers").get("alice") is None


def test_left_join_calls_the_joiner_with_none_for_a_missing_table_value(make_app):
    h = Harness(enrich(make_app(), left=True), "orders")
    h.pipe("bob", {"n": 1}, topic="orders")
    h.pipe("bob", {"name": "B"}, topic="customers")
    h.pipe("bob", {"n": 2}, topic="orders")
    assert outputs(h) == [("bob", {"order": {"n": 1}, "customer": None}),
                          ("bob", {"order": {"n": 2}, "customer": {"name": "B"}})]


@pytest.mark.parametrize("left", [False, True])
def test_null_values_are_dropped_and_null_keys_dropped_by_the_inner_join_only(make_app, left):
    h = Harness(enrich(make_app(), left=left), "orders")
    h.pipe(None, {"name": "nobody"}, topic="customers")  # a table record without a key: dropped
    h.pipe("carol", None, topic="orders")
    h.pipe(None, {"n": 1}, topic="orders")
    assert h.metrics.dropped_null_value == 1
    if left:  # Kafka Streams 3.7+ (KIP-962): a left join joins a keyless record with None
        assert h.metrics.dropped_null_key == 1 and outputs(h) == [(None, {"order": {"n": 1}, "customer": None})]
    else:
        assert h.metrics.dropped_null_key == 2 and outputs(h) == []
    assert list(h.store("customers").all()) == []


def table_event():
    """A table update (value or tombstone) or a stream record, for one of a few keys."""
    return st.one_of(
        st.tuples(st.just("table"), st.sampled_from(KEYS), st.one_of(st.none(), st.integers(0, 99))),
        st.tuples(st.just("stream"), st.sampled_from(KEYS), st.integers(0, 99)))


@settings(max_examples=150, deadline=None)
@given(events=st.lists(table_event(), max_size=40), left=st.booleans())
def test_stream_table_join_matches_a_reference_for_any_interleaving(tmp_path_factory, events, left):
    app = hotstate.App(app_id="unit-app", bootstrap_servers="127.0.0.1:1",
                       state_dir=str(tmp_path_factory.mktemp("state")))
    stream = app.stream("s", key_serde=serde.STRING, value_serde=serde.INT64)
    table = app.table("t", key_serde=serde.STRING, value_serde=serde.INT64, store="t")
    (stream.left_join if left else stream.join)(table, lambda v, tv: [v, tv]).to("out", value_serde=serde.JSON)
    h = Harness(app, "s")
    reference, expected = {}, []
    for side, key, value in events:
        if side == "table":
            if value is None:
                reference.pop(key, None)
            else:
                reference[key] = value
            h.pipe(key, value, topic="t")
        else:
            if key in reference or left:
                expected.append((key, [value, reference.get(key)]))
            h.pipe(key, value, topic="s")
    assert outputs(h) == expected
    assert dict(h.store("t").all()) == reference


# ---- table-table joins ----

def reference_join(kind, left, right):
    if kind == "inner":
        present = left is not None and right is not None
    elif kind == "left":
        present = left is not None
    else:
        present = left is not None or right is not None
    return [left, right] if present else None


@settings(max_examples=150, deadline=None)
@given(events=st.lists(st.tuples(st.sampled_from(["l", "r"]), st.sampled_from(KEYS),
                                 st.one_of(st.none(), st.integers(0, 99))), max_size=40),
       kind=st.sampled_from(["inner", "left", "outer"]))
def test_table_table_joins_match_a_reference_for_any_sequence_of_updates_and_deletes(tmp_path_factory, events,
                                                                                     kind):
    app = hotstate.App(app_id="unit-app", bootstrap_servers="127.0.0.1:1",
                       state_dir=str(tmp_path_factory.mktemp("state")))
    lt = app.table("l", key_serde=serde.STRING, value_serde=serde.INT64, store="l")
    rt = app.table("r", key_serde=serde.STRING, value_serde=serde.INT64, store="r")
    op = {"inner": lt.join, "left": lt.left_join, "outer": lt.outer_join}[kind]
    op(rt, lambda a, b: [a, b], store="joined").to_stream().to("out", value_serde=serde.JSON)
    h = Harness(app, "l")
    sides = {"l": {}, "r": {}}
    results, expected = {}, []
    for side, key, value in events:
        if value is None:
            sides[side].pop(key, None)
        else:
            sides[side][key] = value
        new = reference_join(kind, sides["l"].get(key), sides["r"].get(key))
        if new is not None:
            expected.append((key, new))
            results[key] = new
        elif key in results:  # the result ended: a tombstone
            expected.append((key, None))
            del results[key]
        h.pipe(key, value, topic=side)
    assert outputs(h) == expected
    assert dict(h.store("joined").all()) == results


def test_a_table_table_join_emits_a_tombstone_only_when_a_result_existed(make_app):
    app = make_app()
    a = app.table("a", key_serde=serde.STRING, value_serde=serde.STRING, store="a")
    b = app.table("b", key_serde=serde.STRING, value_serde=serde.STRING, store="b")
    a.join(b, lambda x, y: x + y, store="ab", value_serde=serde.STRING).to_stream().to("out", value_serde=serde.STRING)
    h = Harness(app, "a")
    h.pipe("k", "1", topic="a")  # no right side: no result, nothing emitted
    h.pipe("k", None, topic="a")  # deleting a key with no result: nothing emitted
    h.pipe("k", "2", topic="a")
    h.pipe("k", "x", topic="b")
    h.pipe("k", "y", topic="b")
    h.pipe("k", None, topic="b")
    h.pipe("k", None, topic="b")
    assert [(s.key, s.value) for s in h.sent] == [(b"k", b"2x"), (b"k", b"2y"), (b"k", None)]


def test_filter_and_map_values_forward_tombstones_and_materialise_when_asked(make_app):
    app = make_app()
    t = app.table("t", key_serde=serde.STRING, value_serde=serde.INT64, store="t")
    big = t.filter(lambda k, v: v >= 10, store="big")
    big.map_values(lambda v: v * 2).to_stream().to("out", value_serde=serde.INT64)
    h = Harness(app, "t")
    h.pipe("x", 20, topic="t")
    h.pipe("x", 5, topic="t")  # filtered out: x leaves the filtered table
    h.pipe("y", 11, topic="t")
    h.pipe("y", None, topic="t")
    got = [(s.key, None if s.value is None else serde.INT64.deserialize(s.value)) for s in h.sent]
    assert got == [(b"x", 40), (b"x", None), (b"y", 22), (b"y", None)]
    assert dict(h.store("big").all()) == {} and dict(h.store("t").all()) == {"x": 5}


# ---- commit: the table's store holds its source's next offset, no changelog record is sent ----

def test_a_tables_store_is_committed_at_its_source_offset_without_changelog_records(make_app):
    app = enrich(make_app())
    app.stream("other", key_serde=serde.STRING).group_by_key().count("n")
    h = Harness(app, "orders")
    events = []
    tracker = DeliveryTracker({"unit-app-n-changelog"})
    committer = AtLeastOnceCommitter(AlosConsumer(events), AlosProducer(events, tracker), tracker, Metrics(),
                                     timeout_s=1)
    for i in range(3):
        h.pipe(f"c{i}", {"i": i}, topic="customers")
    h.pipe("c1", {"n": 1}, topic="orders")
    assert committer.commit([h.task]) == [h.task]
    produced = [e for e in events if e[0] == "produce"]
    assert all(e[1] != "customers" for e in produced)  # the source topic is never written
    assert [e for e in events if e[0] == "commit"] == [("commit", [("customers", 0, 3), ("orders", 0, 1)])]
    store = h.task.stores["customers"]
    assert store.changelog == ("customers", 0) and store.backend.changelog_offset() == 3
    assert dict(store.view.all()) == {"c0": {"i": 0}, "c1": {"i": 1}, "c2": {"i": 2}}


# ---- restore from the source topic, up to the group's committed offset ----

SOURCE = TopicPartition("customers", 0)


def table_task(stored_offset=None, data=()):
    spec = StoreSpec("customers", serde.STRING, serde.STRING, "memory", source_topic="customers")
    backend = MemoryBackend("customers")
    if stored_offset is not None:
        backend.write(list(data), stored_offset)
    overlay = Overlay(backend)
    ts = TaskStore(spec, SOURCE, backend, overlay, KeyValueStore(spec, overlay), lambda: MemoryBackend("customers"))
    task = Task(SubTopology(0, [SourceNode("customers", serde.STRING, serde.STRING)]), 0, {"customers": ts})
    task.transition(TaskState.RESTORING)
    return task


class GroupConsumer:
    def __init__(self, committed):
        self.committed_offsets, self.asked, self.closed = committed, [], False

    def committed(self, ktps, timeout=None):
        from confluent_kafka import TopicPartition as K
        self.asked.extend((k.topic, k.partition) for k in ktps)
        return [K(k.topic, k.partition, self.committed_offsets.get((k.topic, k.partition), -1001)) for k in ktps]

    def close(self):
        self.closed = True


def source_records(n):
    """Ten customer records: keys c0..c2 updated in turn, a keyless record at 4 and a tombstone of c0 at 6."""
    out = []
    for o in range(n):
        key = None if o == 4 else f"c{o % 3}".encode()
        value = None if o == 6 else f"v{o}".encode()
        out.append((o, key, value))
    return out


def restore(task, committed, watermarks=(0, 10)):
    consumer = FakeRestoreConsumer({SOURCE: watermarks}, {SOURCE: source_records(watermarks[1])})
    group = GroupConsumer(committed)
    config = Config.from_kwargs(app_id="app", bootstrap_servers="127.0.0.1:1")
    u = StateUpdater(config, lambda: None, None, Metrics(), group_consumer_factory=lambda: group)
    u._reader.consumer = consumer
    u.add(task)
    u._handle_commands(wait_s=0)
    run_until_idle(u, consumer)
    assert u.drain_restored() == [task]
    u._reader.close()
    assert group.asked == [("customers", 0)] and group.closed
    store = task.stores["customers"]
    return store.backend.changelog_offset(), dict(store.view.all())


def test_a_table_restores_from_its_source_topic_up_to_the_committed_offset_skipping_keyless_records():
    offset, data = restore(table_task(), {("customers", 0): 8})
    # records 0..7: c0 deleted at 6, the keyless record at 4 skipped; records 8 and 9 are left to processing
    assert offset == 8 and data == {"c1": "v7", "c2": "v5"}


def test_a_table_restores_only_the_tail_after_its_stored_offset():
    offset, data = restore(table_task(7, [(b"c9", b"kept")]), {("customers", 0): 10})
    assert offset == 10 and data == {"c9": "kept", "c1": "v7", "c2": "v8", "c0": "v9"}


def test_without_a_committed_offset_a_table_restores_nothing_and_processing_builds_it():
    assert restore(table_task(), {}) == (None, {})


def test_a_table_store_ahead_of_the_committed_offset_is_kept():
    offset, data = restore(table_task(9, [(b"c0", b"ahead")]), {("customers", 0): 5})
    assert offset == 9 and data == {"c0": "ahead"}


def test_a_standby_of_a_table_tails_its_source_topic_to_the_end_skipping_keyless_records():
    from test_standby_updater import StandbyConsumer, _DrivenByTest, step
    task = table_task(2, [(b"c0", b"v0"), (b"c1", b"v1")])
    task.transition(TaskState.SUSPENDED)  # a standby task is never restored as active
    consumer = StandbyConsumer({SOURCE: (0, 10)}, {SOURCE: source_records(10)})
    group = GroupConsumer({("customers", 0): 3})
    config = Config.from_kwargs(app_id="app", bootstrap_servers="127.0.0.1:1")
    u = StateUpdater(config, lambda: None, None, Metrics(), group_consumer_factory=lambda: group)
    u._reader.consumer = consumer
    u._thread = _DrivenByTest()
    u.add_standby(task)
    step(u, consumer, rounds=3)
    assert u.drain_failed() == [] and u.standby_task_ids() == [task.id]
    store = task.stores["customers"]
    # to the end (not the committed offset: see docs/architecture.md), the keyless record at 4 skipped
    assert store.backend.changelog_offset() == 10
    assert dict(store.view.all()) == {"c1": "v7", "c2": "v8", "c0": "v9"}


def test_a_join_of_topics_with_different_partition_counts_is_refused_at_start(make_app):
    app = enrich(make_app())
    t = app._topology
    with pytest.raises(TopologyError, match=r"merge\(\) and joins put streams and tables in one sub-topology"):
        t.check_copartitioning(t.resolve_partitions({"orders": 4, "customers": 6}))
    assert t.check_copartitioning(t.resolve_partitions({"orders": 6, "customers": 6})) == {0: 6}


def test_a_table_store_ahead_of_the_committed_offset_keeps_its_offset_while_the_records_are_processed_again(
        make_app):
    h = Harness(enrich(make_app()), "orders")
    store = h.task.stores["customers"]
    store.backend.write([(b"c0", b'{"v": 9}')], 9)  # a promoted standby read the topic to offset 9
    events = []
    tracker = DeliveryTracker(set())
    committer = AtLeastOnceCommitter(AlosConsumer(events), AlosProducer(events, tracker), tracker, Metrics(),
                                     timeout_s=1)
    h.pipe("c0", {"v": 0}, topic="customers")  # offsets 0 and 1 again: the same values they put the first time
    h.pipe("c1", {"v": 1}, topic="customers")
    assert committer.commit([h.task]) == [h.task]
    assert [e for e in events if e[0] == "commit"] == [("commit", [("customers", 0, 2)])]
    assert store.backend.changelog_offset() == 9  # never backwards
    assert dict(store.view.all()) == {"c0": {"v": 0}, "c1": {"v": 1}}


# ---- which record first: the partition group's choice decides what a join sees ----

def test_within_a_poll_a_table_update_with_an_earlier_timestamp_is_applied_before_the_stream_record(make_app):
    from hotstate.runtime.partition_group import by_timestamp
    from unit_support import FakeMsg
    app = enrich(make_app())
    (sub,) = app._topology.subtopologies
    rank = {t: i for i, t in enumerate(sub.source_topics)}.__getitem__

    def run(polls):
        h = Harness(app, "orders")
        for poll in polls:
            for m in by_timestamp(poll, lambda t, p: "0_0", rank):
                h.pipe(m.key().decode(), json.loads(m.value()), timestamp=m.timestamp()[1], topic=m.topic())
        return outputs(h)

    order = FakeMsg("orders", 0, 0, b"dave", b'{"n": 1}', timestamp=200)
    customer = FakeMsg("customers", 0, 0, b"dave", b'{"name": "D"}', timestamp=100)
    joined = [("dave", {"order": {"n": 1}, "customer": {"name": "D"}})]
    assert run([[order, customer]]) == joined  # one poll: by timestamp, the customer first
    # The customer's record arrives in a later poll: the order is not held back for it (no max.task.idle.ms), so
    # the inner join finds no customer, although the customer's timestamp is earlier.
    assert run([[order], [customer]]) == []


def test_under_exactly_once_a_tables_store_is_written_after_the_commit_at_the_offset_the_transaction_sent(
        make_app):
    from test_commit_eos import FakeConsumer as EosConsumer
    from test_commit_eos import FakeTxnProducer
    from hotstate.runtime.commit import ExactlyOnceCommitter
    h = Harness(enrich(make_app()), "orders")
    log, sent, offsets_at_commit = [], [], []
    store = h.task.stores["customers"]

    class Producer(FakeTxnProducer):
        def send_offsets_to_transaction(self, offsets, metadata, timeout):
            sent.append(sorted((o.topic, o.partition, o.offset) for o in offsets))
            super().send_offsets_to_transaction(offsets, metadata, timeout)

        def commit_transaction(self, timeout):
            offsets_at_commit.append(store.backend.changelog_offset())  # the store is written after, not before
            super().commit_transaction(timeout)

    c = ExactlyOnceCommitter(EosConsumer(), Producer(log), DeliveryTracker(set()), Metrics(), 1.0,
                             producer_factory=None, call=lambda fn, bound, what: fn())
    c.begin()
    h.pipe("c0", {"i": 0}, topic="customers")
    h.pipe("c1", {"i": 1}, topic="customers")
    h.pipe("c0", None, topic="customers")
    assert c.commit([h.task]) == [h.task]
    assert "produce" not in log  # nothing to any changelog: the table's records are in its source topic
    assert sent == [[("customers", 0, 3)]] and offsets_at_commit == [None]
    assert store.backend.changelog_offset() == 3 and dict(store.view.all()) == {"c1": {"i": 1}}


def test_a_table_may_live_in_memory_but_not_in_a_windowed_store(make_app):
    app = make_app()
    t = app.table("customers", key_serde=serde.STRING, value_serde=serde.JSON,
                  store=StoreSpec("customers", kind="memory"))
    assert (t.store.kind, t.store.source_topic, t.store.key_serde, t.store.value_serde) == (
        "memory", "customers", serde.STRING, serde.JSON)
    internal = app.table("accounts", key_serde=serde.STRING)
    assert internal.store.name == "KTABLE-SOURCE-STATE-STORE-0000000000" and internal.store.kind == "rocksdb"
    with pytest.raises(TopologyError, match=r"table\('x'\): a table's store is a key-value store"):
        app.table("x", store=StoreSpec("w", kind="window-memory", retention_ms=10))
