"""The low-level ``process(fn, stores=[...])`` API and the DSL operators, end to end on a real broker,
including a restore of what they stored."""
from __future__ import annotations

import json
import shutil

import pytest

import hotstate
from hotstate import serde
from kafka_helpers import RecordingListener, int64, utf8, wait_for, wait_processed

pytestmark = pytest.mark.integration


def _kv_app(kafka, app_id, state_dir, source, sink, listener=None):
    app = hotstate.App(app_id=app_id, bootstrap_servers=kafka.bootstrap, state_dir=str(state_dir), commit_interval_ms=100)

    def fn(record, ctx):
        kv = ctx.store("kv")
        seen = ctx.store("seen")  # given by name: the stream's key serde, JSON values
        cmd = record.value
        if cmd["op"] == "put":
            kv.put(record.key, cmd["v"])
        else:
            kv.delete(record.key)
        seen.put(record.key, (seen.get(record.key) or 0) + 1)
        ctx.forward(record.key, {
            "offset": record.offset,
            "get": kv.get(record.key),  # read-your-writes within the commit interval
            "keys": [k for k, _ in kv.range()],
            "b_to_c": [[k, v] for k, v in kv.range("b", "c")],
        })
        if cmd["op"] == "put" and cmd["v"] >= 100:
            ctx.forward(record.key + "!", {"big": cmd["v"]})  # several forwards per record

    (app.stream(source, key_serde=serde.STRING, value_serde=serde.JSON)
        .process(fn, stores=[hotstate.StoreSpec("kv", key_serde=serde.STRING, value_serde=serde.INT64), "seen"],
                 key_serde=serde.STRING, value_serde=serde.JSON)
        .to(sink))
    if listener is not None:
        app.set_restore_listener(listener)
    return app


COMMANDS = [
    ("a", {"op": "put", "v": 1}),
    ("b", {"op": "put", "v": 2}),
    ("c", {"op": "put", "v": 3}),
    ("b", {"op": "del"}),
    ("d", {"op": "put", "v": 400}),
    ("bb", {"op": "put", "v": 5}),
    ("a", {"op": "put", "v": 6}),
]


def test_process_with_stores_put_get_delete_range_and_forward(kafka, tmp_state_dir):
    source = kafka.create_topic(partitions=1, prefix="it-cmds")
    sink = kafka.create_topic(partitions=1, prefix="it-cmds-out")
    app_id = kafka.app_id("it-proc")
    kafka.produce(source, [(k, json.dumps(v)) for k, v in COMMANDS])

    app = _kv_app(kafka, app_id, tmp_state_dir, source, sink)
    app.start()
    try:
        app.wait_until_running(timeout_s=60)
        wait_processed(app, len(COMMANDS))
        kv = app.store("kv")
        assert {k: kv.get(k) for k in ["a", "b", "bb", "c", "d", "zz"]} == {
            "a": 6, "b": None, "bb": 5, "c": 3, "d": 400, "zz": None}
        assert sorted(kv.all()) == [("a", 6), ("bb", 5), ("c", 3), ("d", 400)]
        assert app.store("seen").get("b") == 2
    finally:
        assert app.close()

    out = [(utf8(m.key()), json.loads(m.value())) for m in kafka.read_all(sink)]
    assert out == [
        ("a", {"offset": 0, "get": 1, "keys": ["a"], "b_to_c": []}),
        ("b", {"offset": 1, "get": 2, "keys": ["a", "b"], "b_to_c": [["b", 2]]}),
        ("c", {"offset": 2, "get": 3, "keys": ["a", "b", "c"], "b_to_c": [["b", 2], ["c", 3]]}),
        ("b", {"offset": 3, "get": None, "keys": ["a", "c"], "b_to_c": [["c", 3]]}),
        ("d", {"offset": 4, "get": 400, "keys": ["a", "c", "d"], "b_to_c": [["c", 3]]}),
        ("d!", {"big": 400}),
        ("bb", {"offset": 5, "get": 5, "keys": ["a", "bb", "c", "d"], "b_to_c": [["bb", 5], ["c", 3]]}),
        ("a", {"offset": 6, "get": 6, "keys": ["a", "bb", "c", "d"], "b_to_c": [["bb", 5], ["c", 3]]}),
    ]

    # Wipe the state: the restore replays puts and the delete's tombstone.
    shutil.rmtree(tmp_state_dir)
    tmp_state_dir.mkdir()
    listener = RecordingListener()
    app = _kv_app(kafka, app_id, tmp_state_dir, source, sink, listener)
    app.start()
    try:
        app.wait_until_running(timeout_s=60)
        assert {e.store for e in listener.of("end")} == {"kv", "seen"}
        kv = app.store("kv")
        assert sorted(kv.all()) == [("a", 6), ("bb", 5), ("c", 3), ("d", 400)]
        assert kv.get("b") is None
        assert sorted(app.store("seen").all()) == [("a", 2), ("b", 2), ("bb", 1), ("c", 1), ("d", 1)]
    finally:
        assert app.close()


def test_process_error_in_user_code_names_the_record(kafka, tmp_state_dir):
    source = kafka.create_topic(partitions=1, prefix="it-cmds")
    kafka.produce(source, [("k", "1"), ("k", "2"), ("k", "boom"), ("k", "3")])
    app = hotstate.App(app_id=kafka.app_id("it-proc"), bootstrap_servers=kafka.bootstrap,
                       state_dir=str(tmp_state_dir), commit_interval_ms=100)

    def fn(record, ctx):
        ctx.store("s").put(record.key, int(record.value))

    app.stream(source, key_serde=serde.STRING, value_serde=serde.STRING).process(fn, stores=["s"])
    app.start()
    try:
        wait_for(lambda: app.state is hotstate.AppState.ERROR, "the app to fail", 30)
        with pytest.raises(hotstate.HotstateError) as info:
            app.wait_until_running(timeout_s=1)
        cause = info.value.__cause__
        assert isinstance(cause, hotstate.ProcessingError), repr(cause)
        assert (cause.topic, cause.partition, cause.offset) == (source, 0, 2)
        assert isinstance(cause.__cause__, ValueError)
    finally:
        assert app.close()


def test_dsl_operators_end_to_end(kafka, tmp_state_dir):
    source = kafka.create_topic(partitions=2, prefix="it-dsl")
    sums_out = kafka.create_topic(partitions=2, prefix="it-dsl-sums")
    app = hotstate.App(app_id=kafka.app_id("it-dsl"), bootstrap_servers=kafka.bootstrap,
                       state_dir=str(tmp_state_dir), commit_interval_ms=100)
    peeked = []
    s = app.stream(source, key_serde=serde.STRING, value_serde=serde.STRING)
    digits = s.filter(lambda k, v: v.isdigit())
    digits.group_by_key().reduce(lambda agg, v: str(max(int(agg), int(v))), store="max")  # STRING values
    nums = digits.map_values(int).peek(lambda k, v: peeked.append((k, v)))
    (nums.group_by_key()
         .aggregate(lambda: 0, lambda k, v, agg: agg + v, store="sum", value_serde=serde.INT64)
         .to_stream().to(sums_out))
    s.group_by_key().aggregate(list, lambda k, v, agg: agg + [v], store="all")
    s.flat_map(lambda k, v: [(k, c) for c in v]).filter(lambda k, v: v == "x").to(
        sums_out, key_serde=serde.STRING, value_serde=serde.of(lambda v: b"\x00" * 7 + b"\x01", lambda b: b))

    recs = [("a", "1"), ("b", "5"), ("a", "x"), ("a", "10"), ("b", "2"), ("c", "xx")]
    kafka.produce(source, recs, partitions=2)
    app.start()
    try:
        app.wait_until_running(timeout_s=60)
        wait_processed(app, len(recs))
        assert {k: app.store("max").get(k) for k in "abc"} == {"a": "10", "b": "5", "c": None}
        assert {k: app.store("sum").get(k) for k in "abc"} == {"a": 11, "b": 7, "c": None}
        assert {k: app.store("all").get(k) for k in "abc"} == {"a": ["1", "x", "10"], "b": ["5", "2"], "c": ["xx"]}
        assert sorted(peeked) == [("a", 1), ("a", 10), ("b", 2), ("b", 5)]
    finally:
        assert app.close()
    out = [(utf8(m.key()), int64(m.value())) for m in kafka.read_all(sums_out)]
    assert sorted(out) == sorted([("a", 1), ("b", 5), ("a", 11), ("b", 7), ("a", 1), ("c", 1), ("c", 1)])


def test_start_creates_every_changelog_of_a_many_store_app(kafka, tmp_state_dir):
    """An app with several stores creates all its changelogs in one start(). Listing the topics right after
    creating them must not make a just-created changelog look absent ("has None partitions")."""
    for attempt in range(4):
        source = kafka.create_topic(partitions=4, prefix="it-many")
        app = hotstate.App(app_id=kafka.app_id("it-many"), bootstrap_servers=kafka.bootstrap,
                           state_dir=str(tmp_state_dir), commit_interval_ms=100)
        names = [f"s{i}" for i in range(12)]
        app.stream(source, key_serde=serde.STRING).process(lambda r, ctx: None, stores=names)
        try:
            app.start()
            app.wait_until_running(timeout_s=60)
        finally:
            app.close()
        for name in names:
            assert len(kafka.watermarks(kafka.changelog(app.config.app_id, name))) == 4


# ---- the processor API (issue 11: timers and the processor API) ----

class _Totals(hotstate.Processor):
    """Keeps a running total per key (store "totals") and forwards each update; on every STREAM_TIME punctuation
    (1 s) forwards one summary of all keys and counts its summaries in the store (under "#summaries")."""

    def init(self, context):
        self.context = context
        self.totals = context.store("totals")
        context.schedule(1_000, hotstate.Punctuation.STREAM_TIME, self.summarize)

    def process(self, record):
        total = (self.totals.get(record.key) or 0) + record.value["n"]
        self.totals.put(record.key, total)
        self.context.forward(record.with_value({"total": total}))  # the input's timestamp and headers

    def summarize(self, timestamp):
        keys = {k: v for k, v in self.totals.all() if k != "#summaries"}
        self.totals.put("#summaries", (self.totals.get("#summaries") or 0) + 1)
        self.context.forward(hotstate.Record("summary", {"at": timestamp, "totals": keys}, timestamp)
                             .with_headers([("kind", b"summary")]))


# (key, n, timestamp, headers): stream time 1000 (first record: fires), 1500, 2100 (fires: passed 2000),
# 1800 (out of order: no), 2999, 5200 (fires once although 3000, 4000 and 5000 were passed), 5999 (no: next 6000)
_TIMED = [("a", 1, 1_000, [("trace", b"t0")]), ("b", 2, 1_500, None), ("a", 3, 2_100, [("trace", b"t2")]),
          ("b", 4, 1_800, None), ("a", 5, 2_999, None), ("b", 6, 5_200, None), ("a", 7, 5_999, None)]


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once_v2"])
def test_processor_stream_time_punctuation_forwards_summaries(kafka, tmp_state_dir, guarantee):
    source = kafka.create_topic(partitions=1, prefix="it-punct")
    sink = kafka.create_topic(partitions=1, prefix="it-punct-out")
    app_id = kafka.app_id("it-punct")
    producer = kafka.producer()
    for key, n, ts, headers in _TIMED:
        producer.produce(source, json.dumps({"n": n}).encode(), key.encode(), timestamp=ts, headers=headers)
    assert producer.flush(30) == 0

    app = hotstate.App(app_id=app_id, bootstrap_servers=kafka.bootstrap, state_dir=str(tmp_state_dir),
                       commit_interval_ms=100, processing_guarantee=guarantee)
    (app.stream(source, key_serde=serde.STRING, value_serde=serde.JSON)
        .process(_Totals, stores=["totals"], key_serde=serde.STRING, value_serde=serde.JSON)
        .to(sink))
    app.start()
    try:
        app.wait_until_running(timeout_s=60)
        wait_processed(app, len(_TIMED))
    finally:
        assert app.close()

    out = [(utf8(m.key()), json.loads(m.value()), m.timestamp()[1], m.headers()) for m in kafka.read_all(sink)]
    summary = [("kind", b"summary")]
    assert out == [
        ("a", {"total": 1}, 1_000, [("trace", b"t0")]),
        ("summary", {"at": 1_000, "totals": {"a": 1}}, 1_000, summary),
        ("b", {"total": 2}, 1_500, None),
        ("a", {"total": 4}, 2_100, [("trace", b"t2")]),
        ("summary", {"at": 2_100, "totals": {"a": 4, "b": 2}}, 2_100, summary),
        ("b", {"total": 6}, 1_800, None),
        ("a", {"total": 9}, 2_999, None),
        ("b", {"total": 12}, 5_200, None),
        ("summary", {"at": 5_200, "totals": {"a": 9, "b": 12}}, 5_200, summary),
        ("a", {"total": 16}, 5_999, None),
    ]
    # What the punctuations wrote is committed with the task: in the changelog (read_committed under EOS).
    changelog = {utf8(m.key()): json.loads(m.value()) for m in kafka.read_all(kafka.changelog(app_id, "totals"))}
    assert changelog == {"a": 16, "b": 12, "#summaries": 3}


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once_v2"])
def test_processor_wall_clock_punctuation_fires_without_input(kafka, tmp_state_dir, guarantee):
    source = kafka.create_topic(partitions=1, prefix="it-tick")  # never written to
    sink = kafka.create_topic(partitions=1, prefix="it-tick-out")
    app_id = kafka.app_id("it-tick")

    class Ticker:
        def init(self, context):
            self.context = context
            self.store = context.store("ticks")
            context.schedule(100, hotstate.Punctuation.WALL_CLOCK_TIME, self.tick)

        def process(self, record):
            raise AssertionError("no input is produced")

        def tick(self, timestamp):
            n = (self.store.get("n") or 0) + 1
            self.store.put("n", n)
            self.context.forward(hotstate.Record("tick", {"n": n, "at": timestamp}, timestamp))

    app = hotstate.App(app_id=app_id, bootstrap_servers=kafka.bootstrap, state_dir=str(tmp_state_dir),
                       commit_interval_ms=100, processing_guarantee=guarantee)
    (app.stream(source, key_serde=serde.STRING, value_serde=serde.JSON)
        .process(Ticker, stores=["ticks"], key_serde=serde.STRING, value_serde=serde.JSON)
        .to(sink))
    app.start()
    try:
        app.wait_until_running(timeout_s=60)
        # Committed ticks (read_committed under EOS): bounded polling, no timing expectation.
        wait_for(lambda: len(kafka.read_all(sink)) >= 3, "3 committed ticks in the sink", 60, interval_s=0.2)
        assert app.metrics()["records_processed_total"] == 0
    finally:
        assert app.close()
    out = [(utf8(m.key()), json.loads(m.value()), m.timestamp()[1], m.headers()) for m in kafka.read_all(sink)]
    assert len(out) >= 3
    assert [v["n"] for _, v, _, _ in out] == list(range(1, len(out) + 1))
    assert all(k == "tick" and ts == v["at"] and h is None for k, v, ts, h in out)  # stamped with the wall clock
    assert [ts for _, _, ts, _ in out] == sorted(ts for _, _, ts, _ in out)
    changelog = [json.loads(m.value()) for m in kafka.read_all(kafka.changelog(app_id, "ticks"))]
    assert changelog and changelog[-1] == len(out)  # the store's writes committed with the outputs


def test_processor_instances_close_with_the_app_and_start_fresh_on_restart(kafka, tmp_state_dir):
    """close() runs when the app closes; a restart makes a new instance whose init() schedules again, over the
    store the first run committed (its first record fires the STREAM_TIME punctuation: stream time restarts)."""
    source = kafka.create_topic(partitions=1, prefix="it-life")
    sink = kafka.create_topic(partitions=1, prefix="it-life-out")
    app_id = kafka.app_id("it-life")
    events = []

    class Lifecycle(_Totals):
        def init(self, context):
            events.append(("init", id(self)))
            super().init(context)

        def close(self):
            events.append(("close", id(self)))

    def run(records):
        producer = kafka.producer()
        for key, n, ts in records:
            producer.produce(source, json.dumps({"n": n}).encode(), key.encode(), timestamp=ts)
        assert producer.flush(30) == 0
        app = hotstate.App(app_id=app_id, bootstrap_servers=kafka.bootstrap, state_dir=str(tmp_state_dir),
                           commit_interval_ms=100)
        (app.stream(source, key_serde=serde.STRING, value_serde=serde.JSON)
            .process(Lifecycle, stores=["totals"], key_serde=serde.STRING, value_serde=serde.JSON)
            .to(sink))
        app.start()
        try:
            app.wait_until_running(timeout_s=60)
            wait_processed(app, len(records))
        finally:
            assert app.close()

    run([("a", 1, 1_000), ("a", 2, 1_200)])
    assert [e for e, _ in events] == ["init", "close"]
    run([("a", 4, 1_300)])
    assert [e for e, _ in events] == ["init", "close", "init", "close"]
    assert events[0][1] == events[1][1] and events[2][1] == events[3][1]  # each close ends its own instance
    summaries = [(json.loads(m.value()), m.timestamp()[1]) for m in kafka.read_all(sink) if m.key() == b"summary"]
    assert summaries == [({"at": 1_000, "totals": {"a": 1}}, 1_000), ({"at": 1_300, "totals": {"a": 7}}, 1_300)]


@pytest.mark.timeout(300)
def test_processor_instances_follow_their_task_through_a_rebalance(kafka, tmp_path):
    """A second instance joins: the task that moves has its processor closed on the first instance and a new
    one initialized on the second, over the store restored from the changelog; each task has exactly one open
    instance, and its punctuations run where the task runs."""
    source = kafka.create_topic(partitions=2, prefix="it-move")
    sink = kafka.create_topic(partitions=1, prefix="it-move-out")
    app_id = kafka.app_id("it-move")
    producer = kafka.producer()
    keys = {0: "k0", 1: "k1"}  # written to that partition

    def produce(ts):
        for p, key in keys.items():
            producer.produce(source, json.dumps({"n": 1}).encode(), key.encode(), partition=p, timestamp=ts)
        assert producer.flush(30) == 0

    def app_with(name, events):
        class Tracked(_Totals):
            def init(self, context):
                events.append(("init", context.task_id))
                super().init(context)

            def close(self):
                events.append(("close", self.context.task_id))

        app = hotstate.App(app_id=app_id, bootstrap_servers=kafka.bootstrap, state_dir=str(tmp_path / name),
                           commit_interval_ms=100, session_timeout_ms=6000)
        (app.stream(source, key_serde=serde.STRING, value_serde=serde.JSON)
            .process(Tracked, stores=["totals"], key_serde=serde.STRING, value_serde=serde.JSON)
            .to(sink))
        return app

    def open_instances(events):
        count: dict[str, int] = {}
        for what, tid in events:
            count[tid] = count.get(tid, 0) + (1 if what == "init" else -1)
        return {tid for tid, n in count.items() if n}

    def active(app):
        return {t.id for t in app.tasks() if not t.standby and t.state is hotstate.TaskState.RUNNING}

    first_events, second_events = [], []
    first, second = app_with("first", first_events), app_with("second", second_events)
    produce(1_000)
    first.start()
    try:
        first.wait_until_running(timeout_s=60)
        wait_processed(first, 2)
        assert open_instances(first_events) == {"0_0", "0_1"}
        second.start()
        try:
            wait_for(lambda: len(active(first)) == 1 and len(active(second)) == 1, "one task on each instance", 120)
            moved = active(second)
            # (init runs right after a task turns RUNNING, close right after it leaves the task list: polled)
            wait_for(lambda: open_instances(first_events) == active(first) and open_instances(second_events) == moved,
                     "one open processor instance per task, where the task runs", 30,
                     detail=lambda: (first_events, second_events, active(first), moved))
            assert ("close", next(iter(moved))) in first_events
            produce(2_500)  # each task's next punctuation: on the instance that runs it now
            wait_for(lambda: first.metrics()["records_processed_total"] + second.metrics()["records_processed_total"]
                     >= 4, "the second records processed", 60)
        finally:
            assert second.close()
    finally:
        assert first.close()
    summaries = [json.loads(m.value()) for m in kafka.read_all(sink) if m.key() == b"summary"]
    late = sorted((s["at"], sorted(s["totals"].items())) for s in summaries if s["at"] == 2_500)
    assert late == sorted((2_500, [(key, 2)]) for key in keys.values())  # the moved task's store was restored
