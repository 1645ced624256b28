"""Sub-topologies with several sources (merge), repartition topics (select_key / group_by / repartition),
partition-group tasks (record choice by timestamp, per-input offsets, commits of every input), murmur2
partitioning and the repartition purge. No broker."""
from __future__ import annotations

from concurrent.futures import Future

import pytest

import hotstate
from hotstate import serde
from hotstate.dsl.nodes import RepartitionSinkNode
from hotstate.errors import TopologyError
from hotstate.kafka.partitioner import murmur2, partition_for
from hotstate.observe.metrics import Metrics
from hotstate.records import TopicPartition
from hotstate.runtime.commit import AtLeastOnceCommitter, DeliveryTracker, ExactlyOnceCommitter
from hotstate.runtime.partition_group import by_timestamp
from hotstate.runtime.purge import RepartitionPurger
from hotstate.runtime.task_manager import TaskManager
from hotstate.state.state_dir import StateDirectory
from test_commit import FakeConsumer as AlosConsumer
from test_commit import FakeProducer as AlosProducer
from test_commit_eos import FakeConsumer as EosConsumer
from test_commit_eos import FakeTxnProducer
from test_task_manager import FakeCommitter, FakeConsumer, FakeProducer, FakeUpdater
from unit_support import FakeMsg, Harness

REP = "unit-app-KSTREAM-REPARTITION-0000000000-repartition"


def rekeyed_count(app):
    """Input keyed by order id, value "user:item"; counts per user through a repartition topic."""
    return (app.stream("orders", key_serde=serde.STRING, value_serde=serde.STRING)
            .group_by(lambda k, v: v.split(":")[0], key_serde=serde.STRING)
            .count("per-user"))


# ---- topology building ----

def test_group_by_splits_the_topology_at_a_repartition_topic(make_app):
    app = make_app()
    rekeyed_count(app).to_stream().to("out", value_serde=serde.INT64)
    t = app._topology
    first, second = t.subtopologies
    assert (first.id, first.source_topics, first.stores, first.sink_topics) == (0, ["orders"], {}, set())
    assert (second.id, second.source_topics, set(second.stores), second.sink_topics) == (1, [REP], {"per-user"}, {"out"})
    (sink,) = [n for n in first.sources[0].children[0].children if isinstance(n, RepartitionSinkNode)]
    assert sink.topic == REP and sink.spec is t.repartitions[REP]
    assert t.source_topics == ["orders", REP] and t.user_source_topics == ["orders"]
    assert t.subtopology_of(REP) is second


@pytest.mark.parametrize("step", [
    lambda s: s.select_key(lambda k, v: v, key_serde=serde.STRING),
    lambda s: s.map(lambda k, v: (v, k)),
    lambda s: s.flat_map(lambda k, v: [(v, k)]),
    lambda s: s.map(lambda k, v: (v, k)).filter(lambda k, v: True),
])
def test_group_by_key_after_a_key_change_repartitions(make_app, step):
    app = make_app()
    s = app.stream("in", key_serde=serde.STRING, value_serde=serde.STRING)
    step(s).group_by_key(key_serde=serde.STRING, value_serde=serde.STRING).count("c")
    subs = app._topology.subtopologies
    assert [x.source_topics for x in subs] == [["in"], ["unit-app-KSTREAM-REPARTITION-0000000000-repartition"]]
    assert set(subs[1].stores) == {"c"} and subs[0].stores == {}


def test_group_by_key_without_a_key_change_does_not_repartition(make_app):
    app = make_app()
    app.stream("in", key_serde=serde.STRING, value_serde=serde.STRING).filter(lambda k, v: True).group_by_key().count("c")
    assert len(app._topology.subtopologies) == 1 and app._topology.repartitions == {}


def test_generated_names_follow_build_order_and_a_named_repartition_keeps_its_name(make_app):
    app = make_app()
    s = app.stream("in", key_serde=serde.STRING, value_serde=serde.STRING)
    s.group_by(lambda k, v: v, key_serde=serde.STRING).count("a")
    s.repartition(name="by-user", partitions=6).group_by_key().count("b")
    s.group_by(lambda k, v: k + v, key_serde=serde.STRING).count("c")
    reps = app._topology.repartitions
    assert list(reps) == ["unit-app-KSTREAM-REPARTITION-0000000000-repartition", "unit-app-by-user-repartition",
                          "unit-app-KSTREAM-REPARTITION-0000000001-repartition"]
    assert reps["unit-app-by-user-repartition"].partitions == 6
    with pytest.raises(TopologyError, match="exists already"):
        s.repartition(name="by-user")
    with pytest.raises(TopologyError, match="partitions must be a positive int"):
        s.repartition(partitions=0)
    with pytest.raises(TopologyError, match="name="):
        s.repartition(name="no spaces")


def test_a_repartition_topic_is_internal_not_a_sink_and_cannot_be_written_by_to(make_app):
    app = make_app()
    s = app.stream("in", key_serde=serde.STRING, value_serde=serde.STRING)
    s.repartition(name="r").to("out")
    assert app._topology.subtopologies[0].sink_topics == set()
    with pytest.raises(TopologyError, match="both a source and a sink"):
        s.to("unit-app-r-repartition")


def test_repartition_partition_counts_upstream_fixed_and_chained(make_app):
    app = make_app()
    s = app.stream("in", key_serde=serde.STRING, value_serde=serde.STRING)
    a = s.repartition(name="a")  # in's count
    a.repartition(name="b")  # a's count
    s.repartition(name="c", partitions=2).repartition(name="d")  # c's count
    counts = app._topology.resolve_partitions({"in": 5})
    assert {t.split("-")[2]: n for t, n in counts.items() if t != "in"} == {"a": 5, "b": 5, "c": 2, "d": 2}
    assert app._topology.repartitions["unit-app-d-repartition"].partitions == 2


def test_merge_joins_sub_topologies_and_renumbers_the_later_ones(make_app):
    app = make_app()
    a = app.stream("a", key_serde=serde.STRING, value_serde=serde.STRING)
    c = app.stream("c", key_serde=serde.STRING, value_serde=serde.STRING)
    c.group_by_key().count("c-count")
    b = app.stream("b", key_serde=serde.STRING, value_serde=serde.STRING)
    merged = a.merge(b)
    assert merged.key_serde is serde.STRING and merged.value_serde is serde.STRING
    merged.group_by_key().count("ab-count")
    subs = app._topology.subtopologies
    assert [(x.id, x.source_topics, set(x.stores)) for x in subs] == [
        (0, ["a", "b"], {"ab-count"}), (1, ["c"], {"c-count"})]
    # a stream built before the merge now belongs to the merged sub-topology
    b.to("b-out")
    assert subs[0].sink_topics == {"b-out"}


def test_merge_keeps_a_key_change_and_forgets_serdes_that_differ(make_app):
    app = make_app()
    a = app.stream("a", key_serde=serde.STRING, value_serde=serde.STRING)
    b = app.stream("b", key_serde=serde.STRING, value_serde=serde.BYTES).select_key(lambda k, v: k, key_serde=serde.STRING)
    m = a.merge(b)
    assert m.key_serde is serde.STRING and m.value_serde is None
    with pytest.raises(TopologyError, match="value_serde"):
        m.group_by_key()  # key changed on one side: repartition needs the value serde
    m.group_by_key(value_serde=serde.STRING).count("n")
    assert [x.source_topics for x in app._topology.subtopologies] == [["a", "b"], [REP]]


def test_merge_of_streams_of_two_apps_raises(make_app):
    a = make_app().stream("a")
    b = make_app().stream("b")
    with pytest.raises(TopologyError, match="merge"):
        a.merge(b)


def test_copartitioning_is_checked_and_the_error_says_what_to_do(make_app):
    app = make_app()
    app.stream("a").merge(app.stream("b")).group_by_key().count("n")
    t = app._topology
    assert t.check_copartitioning(t.resolve_partitions({"a": 3, "b": 3})) == {0: 3}
    with pytest.raises(TopologyError, match=r"(?s)sub-topology 0 .*'a': 3, 'b': 4.*co-partitioned.*repartition"):
        t.check_copartitioning(t.resolve_partitions({"a": 3, "b": 4}))


def test_app_start_refuses_topics_that_are_not_copartitioned(make_app, monkeypatch):
    created = []

    class FakeAdmin:
        def __init__(self, config):
            pass

        def require_topics(self, topics, role):
            return {t: {"a": 3, "b": 4}[t] for t in topics}

        def ensure_repartition_topics(self, specs):
            created.append(specs)

    monkeypatch.setattr(hotstate.app, "Admin", FakeAdmin)
    app = make_app()
    app.stream("a").merge(app.stream("b")).to("out")
    with pytest.raises(TopologyError, match="co-partitioned"):
        app.start()
    assert app.state is hotstate.AppState.CREATED and created == []


def test_app_start_creates_repartition_topics_with_the_upstream_partition_count(make_app, monkeypatch):
    calls = {}

    class FakeAdmin:
        def __init__(self, config):
            pass

        def require_topics(self, topics, role):
            calls.setdefault(role, []).append(list(topics))
            return {t: 6 for t in topics}

        def ensure_repartition_topics(self, specs):
            calls["repartition"] = [(s.topic, s.partitions) for s in specs]

        def ensure_changelogs(self, specs):
            calls["changelogs"] = [(s.topic, s.partitions) for s in specs]

    monkeypatch.setattr(hotstate.app, "Admin", FakeAdmin)
    app = make_app()
    rekeyed_count(app)
    app._prepare_topics()
    assert calls == {"source": [["orders"]], "repartition": [(REP, 6)],
                     "changelogs": [("unit-app-per-user-changelog", 6)]}


# ---- murmur2 and the repartition sink ----

def test_murmur2_matches_the_java_clients_test_vectors():
    # Apache Kafka's UtilsTest.testMurmur2 (the Java client's Utils.murmur2)
    vectors = {b"21": -973932308, b"foobar": -790332482, b"a-little-bit-long-string": -985981536,
               b"a-little-bit-longer-string": -1486304829,
               b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971, b"abc": 479470107}
    assert {k: murmur2(k) for k in vectors} == vectors
    # DefaultPartitioner: toPositive(murmur2(key)) % partitions
    assert partition_for(b"foobar", 7) == 1357151166 % 7 == 0  # -790332482 & 0x7fffffff == 1357151166
    assert partition_for(b"21", 16) == 1173551340 % 16 == 12  # -973932308 & 0x7fffffff == 1173551340
    assert partition_for(b"abc", 5) == 479470107 % 5 == 2
    with pytest.raises(ValueError):
        partition_for(b"abc", 0)


def test_the_repartition_sink_partitions_by_murmur2_of_the_serialized_key_and_drops_null_keys(make_app):
    app = make_app()
    rekeyed_count(app)
    app._topology.resolve_partitions({"orders": 4})
    h = Harness(app, "orders")
    h.pipe("o1", "alice:book", timestamp=5)
    h.pipe("o2", "bob:pen", timestamp=6)
    h.pipe("o3", ":nothing", timestamp=7)  # empty user: a key, not a null one
    assert [(s.topic, s.key, s.value, s.timestamp, s.partition) for s in h.sent] == [
        (REP, b"alice", b"alice:book", 5, partition_for(b"alice", 4)),
        (REP, b"bob", b"bob:pen", 6, partition_for(b"bob", 4)),
        (REP, b"", b":nothing", 7, partition_for(b"", 4)),
    ]
    assert h.metrics.dropped_null_key == 0


def test_a_null_key_before_a_repartition_is_dropped_and_counted(make_app):
    app = make_app()
    (app.stream("orders", key_serde=serde.STRING, value_serde=serde.STRING)
        .group_by(lambda k, v: None if v == "anon" else v, key_serde=serde.STRING).count("n"))
    app._topology.resolve_partitions({"orders": 2})
    h = Harness(app, "orders")
    h.pipe("o1", "anon")
    h.pipe("o2", "bob")
    assert [(s.key, s.partition) for s in h.sent] == [(b"bob", partition_for(b"bob", 2))]
    assert h.metrics.dropped_null_key == 1 and h.task.next_offsets == {h.task.inputs[0]: 2}


# ---- partition groups: which record next ----

def msg(topic, partition, offset, ts):
    return FakeMsg(topic, partition, offset, b"k", b"v", timestamp=ts)


def test_records_of_a_task_are_taken_by_smallest_head_timestamp_ties_to_the_first_input():
    a = [msg("a", 0, i, ts) for i, ts in enumerate([10, 30, 31])]
    b = [msg("b", 0, i, ts) for i, ts in enumerate([5, 30, 40])]
    other = [msg("a", 1, 0, 1)]
    task_of = {("a", 0): "0_0", ("b", 0): "0_0", ("a", 1): "0_1"}.get
    rank = {"a": 0, "b": 1}.__getitem__
    out = by_timestamp(a[:2] + b[:1] + other + [a[2]] + b[1:], lambda t, p: task_of((t, p)), rank)
    assert [(m.topic(), m.partition(), m.offset()) for m in out] == [
        ("b", 0, 0), ("a", 0, 0), ("a", 0, 1), ("b", 0, 1), ("a", 0, 2), ("b", 0, 2),  # task 0_0 merged
        ("a", 1, 0),  # task 0_1
    ]


def test_an_input_keeps_its_offset_order_even_when_timestamps_go_back():
    a = [msg("a", 0, 0, 50), msg("a", 0, 1, 10)]
    b = [msg("b", 0, 0, 20)]
    out = by_timestamp(a + b, lambda t, p: "0_0", {"a": 0, "b": 1}.__getitem__)
    assert [(m.topic(), m.offset()) for m in out] == [("b", 0), ("a", 0), ("a", 1)]


def test_error_events_and_records_of_no_task_come_first():
    err = FakeMsg("a", 0, -1, None, None, error=object())
    rec = msg("a", 0, 0, 1)
    stray = msg("zz", 0, 0, 0)
    out = by_timestamp([rec, err, stray], lambda t, p: None if t == "zz" else "0_0", {"a": 0}.__getitem__)
    assert out == [err, stray, rec]


def merged_tm(make_app, consumer=None, **cfg):
    app = make_app(**cfg)
    a = app.stream("a", key_serde=serde.STRING, value_serde=serde.STRING)
    b = app.stream("b", key_serde=serde.STRING, value_serde=serde.STRING)
    seen = []
    a.merge(b).peek(lambda k, v: seen.append(v)).group_by_key().count("n")
    tm = TaskManager(app.config, app._topology, StateDirectory(app.config.state_dir, app.config.app_id),
                     consumer or FakeConsumer(), FakeUpdater(), Metrics(), FakeCommitter(FakeProducer()))
    return tm, seen


def test_a_task_owns_partition_p_of_every_source_and_processes_them_by_timestamp(make_app):
    consumer = FakeConsumer(committed={("a", 1): 7, ("b", 1): 3})
    tm, seen = merged_tm(make_app, consumer)
    tm.partitions_assigned([TopicPartition("a", 1), TopicPartition("b", 1)])
    assert list(tm.tasks) == ["0_1"]
    (task,) = tm.tasks.values()
    assert task.inputs == (TopicPartition("a", 1), TopicPartition("b", 1)) and tm._updater.added == [task]
    tm._updater.restored.extend(tm._updater.added)
    tm.handle_restored()
    assert sorted(consumer.resumed) == [("a", 1), ("b", 1)]  # every input resumes when it runs
    tm.process([FakeMsg("a", 1, 7, b"x", b"a7", timestamp=20), FakeMsg("a", 1, 8, b"x", b"a8", timestamp=40),
                FakeMsg("b", 1, 3, b"x", b"b3", timestamp=30)])
    assert seen == ["a7", "b3", "a8"]
    assert task.next_offsets == {("a", 1): 9, ("b", 1): 4}
    assert task.stores["n"].view.get("x") == 3
    # a rewind seeks every input back to the group's committed offsets
    tm.rewind([task])
    assert sorted(consumer.seeks) == [("a", 1, 7), ("b", 1, 3)] and task.next_offsets == {}
    # revoking closes the task once, with all its inputs
    tm.partitions_revoked([TopicPartition("a", 1), TopicPartition("b", 1)])
    assert tm.tasks == {} and tm._by_input == {} and task.state is hotstate.TaskState.CLOSED


def test_an_input_assigned_to_a_running_task_later_joins_it_and_is_resumed(make_app):
    consumer = FakeConsumer()
    tm, seen = merged_tm(make_app, consumer)
    tm.partitions_assigned([TopicPartition("a", 0)])
    tm._updater.restored.extend(tm._updater.added)
    tm.handle_restored()
    (task,) = tm.tasks.values()
    assert consumer.resumed == [("a", 0), ("b", 0)]
    consumer.resumed.clear()
    tm.partitions_assigned([TopicPartition("b", 0)])
    assert list(tm.tasks.values()) == [task] and consumer.resumed == [("b", 0)]
    tm.process([FakeMsg("b", 0, 0, b"x", b"b0", timestamp=1)])
    assert seen == ["b0"] and task.next_offsets == {("b", 0): 1}


def test_restore_from_changelogs_pauses_every_input_and_adopts_the_committed_offsets(make_app):
    consumer = FakeConsumer(committed={("a", 0): 4})
    tm, _ = merged_tm(make_app, consumer)
    tm.partitions_assigned([TopicPartition("a", 0), TopicPartition("b", 0)])
    tm._updater.restored.extend(tm._updater.added)
    tm.handle_restored()
    (task,) = tm.tasks.values()
    tm.process([FakeMsg("b", 0, 0, b"x", b"b0", timestamp=1)])
    tm.restore_from_changelogs([task])
    assert sorted(consumer.paused) == [("a", 0), ("b", 0)]
    assert task.committed_offsets == task.next_offsets == {("a", 0): 4}  # b has none committed
    assert sorted(consumer.seeks) == [("a", 0, 4), ("b", 0, -2)]  # -2: OFFSET_BEGINNING


# ---- commits of multi-input tasks ----

def merged_harness(make_app):
    app = make_app()
    a = app.stream("a", key_serde=serde.STRING, value_serde=serde.STRING)
    a.merge(app.stream("b", key_serde=serde.STRING, value_serde=serde.STRING)).group_by_key().count("n")
    return Harness(app, "a")


def test_at_least_once_commits_every_input_of_a_task_that_moved(make_app):
    h = merged_harness(make_app)
    events = []
    tracker = DeliveryTracker({"unit-app-n-changelog"})
    committer = AtLeastOnceCommitter(AlosConsumer(events), AlosProducer(events, tracker), tracker, Metrics(),
                                     timeout_s=1)
    h.pipe("x", "1", topic="a")
    h.pipe("x", "2", topic="b")
    h.pipe("y", "3", topic="b")
    assert committer.commit([h.task]) == [h.task]
    commits = [e for e in events if e[0] == "commit"]
    assert commits == [("commit", [("a", 0, 1), ("b", 0, 2)])]
    assert h.task.committed_offsets == {("a", 0): 1, ("b", 0): 2}
    # only the input that moved since is sent next time
    h.pipe("x", "4", topic="a")
    events.clear()
    committer.commit([h.task])
    assert [e for e in events if e[0] == "commit"] == [("commit", [("a", 0, 2)])]
    assert h.task.committed_offsets == {("a", 0): 2, ("b", 0): 2}


def test_exactly_once_sends_every_input_offset_in_the_transaction(make_app):
    h = merged_harness(make_app)
    log = []
    sent = []

    class Producer(FakeTxnProducer):
        def send_offsets_to_transaction(self, offsets, metadata, timeout):
            sent.append(sorted((o.topic, o.partition, o.offset) for o in offsets))
            super().send_offsets_to_transaction(offsets, metadata, timeout)

        def flush(self, timeout):
            super().flush(timeout)
            return 0

    tracker = DeliveryTracker(set())
    c = ExactlyOnceCommitter(EosConsumer(), Producer(log), tracker, Metrics(), 1.0, producer_factory=None,
                             call=lambda fn, bound, what: fn())
    c.begin()
    h.pipe("x", "1", topic="a")
    h.pipe("x", "2", topic="b")
    for s in h.task.stores.values():  # nothing to send to the changelog in this test
        s.overlay.clear()
    assert c.commit([h.task]) == [h.task]
    assert sent == [[("a", 0, 1), ("b", 0, 1)]]
    assert log == ["begin", "flush", "send_offsets", "commit"]
    assert h.task.committed_offsets == {("a", 0): 1, ("b", 0): 1}


# ---- the repartition purge ----

class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def committed_task(offsets):
    return type("T", (), {"committed_offsets": {TopicPartition(t, p): o for (t, p), o in offsets.items()}})()


def test_the_purge_deletes_below_committed_offsets_of_repartition_inputs_at_most_every_interval():
    requests = []
    futures = []

    def delete(offsets):
        requests.append(dict(offsets))
        f = Future()
        futures.append(f)
        return [f]

    clock = Clock()
    p = RepartitionPurger([REP], delete, interval_ms=30_000, clock=clock)
    p.committed([committed_task({(REP, 0): 10, ("orders", 0): 99})])  # a user topic is never purged
    p.maybe_purge()
    assert requests == []  # not before the interval
    clock.now = 30
    p.maybe_purge()
    assert requests == [{(REP, 0): 10}]
    p.committed([committed_task({(REP, 0): 15, (REP, 1): 3})])
    clock.now = 60
    p.maybe_purge()
    assert len(requests) == 1  # the first request is unanswered: never two in flight
    futures[0].set_result(None)
    clock.now = 90
    p.maybe_purge()
    assert requests[1] == {(REP, 0): 15, (REP, 1): 3}
    futures[1].set_exception(RuntimeError("broker said no"))
    p.committed([committed_task({(REP, 0): 15})])  # purged already: nothing new
    clock.now = 120
    p.maybe_purge()  # logs the failure; nothing pending
    assert len(requests) == 2


# ---- the assignor hands a task's partitions to one member ----

def test_the_leader_assigns_all_partitions_of_a_task_to_one_member(make_app):
    import json
    from types import SimpleNamespace

    from kafka.protocol.consumer.metadata import ConsumerProtocolAssignment, ConsumerProtocolSubscription

    from hotstate.runtime.assignor import AssignorConfig
    from hotstate.runtime.membership import TaskAssignor, task_partitions

    app = make_app()
    a = app.stream("a", key_serde=serde.STRING, value_serde=serde.STRING)
    a.merge(app.stream("b", key_serde=serde.STRING, value_serde=serde.STRING)).group_by(
        lambda k, v: v, key_serde=serde.STRING).count("n")
    topology = app._topology
    counts = {"a": 3, "b": 3, REP: 3}
    tasks = task_partitions(topology, lambda t: set(range(counts.get(t, 0))))
    assert tasks == {"0_0": [("a", 0), ("b", 0)], "0_1": [("a", 1), ("b", 1)], "0_2": [("a", 2), ("b", 2)],
                     "1_0": [(REP, 0)], "1_1": [(REP, 1)], "1_2": [(REP, 2)]}
    m = SimpleNamespace(topology=topology, standby=set(), warmup=set(), nonce=0,
                        assignor_config=AssignorConfig(), task_end_offsets=lambda ts: {t: 0 for t in ts})

    def subscription(owned):
        by_topic = {}
        for t, p in owned:
            by_topic.setdefault(t, []).append(p)
        return ConsumerProtocolSubscription(
            version=1, topics=sorted(counts), user_data=json.dumps({"v": 1, "offsets": {}, "standby": []}).encode(),
            owned_partitions=[ConsumerProtocolSubscription.TopicPartition(topic=t, partitions=ps)
                              for t, ps in by_topic.items()])

    cluster = SimpleNamespace(partitions_for_topic=lambda t: set(range(counts.get(t, 0))))
    members = [SimpleNamespace(member_id=mid, group_instance_id=None, metadata=subscription([]))
               for mid in ("m1", "m2")]
    out = TaskAssignor(m).assign(cluster, members)
    got = {}
    for mid, assignment in out.items():
        wire = ConsumerProtocolAssignment.decode(assignment.encode())
        got[mid] = {(tp.topic, tp.partition) for tp in wire.partitions()}
    assert got["m1"] | got["m2"] == {tp for tps in tasks.values() for tp in tps} and not got["m1"] & got["m2"]
    for tid, tps in tasks.items():
        holders = {mid for mid, parts in got.items() if set(tps) <= parts}
        assert len(holders) == 1, (tid, got)  # every partition of the task with one member
    # a member that reports one partition of a task as owned counts as the task's owner (sticky): it gets the
    # whole partition group again
    owned_by_m1 = sorted(tp for tp in got["m1"] if tp[0] != "b")
    assert len(owned_by_m1) < len(got["m1"])
    again = TaskAssignor(m).assign(cluster, [
        SimpleNamespace(member_id="m1", group_instance_id=None, metadata=subscription(owned_by_m1)),
        SimpleNamespace(member_id="m2", group_instance_id=None, metadata=subscription(sorted(got["m2"])))])
    again_m1 = {(tp.topic, tp.partition) for tp in ConsumerProtocolAssignment.decode(again["m1"].encode()).partitions()}
    assert again_m1 == got["m1"]
