"""Processing without Kafka: a sub-topology driven through ProcessorContext with in-memory stores."""
from __future__ import annotations

import struct

import pytest

from hotstate import serde
from hotstate.testing import TopologyTestDriver
from unit_support import Harness, Sent


def i64(n: int) -> bytes:
    return struct.pack(">q", n)


def word_count(make_app, store="word-counts"):
    app = make_app()
    (app.stream("words", key_serde=serde.STRING, value_serde=serde.STRING)
        .group_by_key().count(store=store)
        .to_stream().to("word-counts-out", value_serde=serde.INT64))
    return Harness(app, "words")


def test_count_stores_and_sends_int64(make_app):
    app = make_app()
    (app.stream("words", key_serde=serde.STRING, value_serde=serde.STRING)
        .group_by_key().count(store="word-counts")
        .to_stream().to("word-counts-out", value_serde=serde.INT64))
    with TopologyTestDriver(app) as driver:
        for w in ("a", "b", "a"):
            driver.pipe("words", w, w, timestamp_ms=77)
        store = driver.store("word-counts")
        assert store.get("a") == 2 and store.get("b") == 1 and store.get("c") is None
        sent = driver.read_output("word-counts-out", key_serde=serde.BYTES, value_serde=serde.BYTES)  # as written
        assert [(r.topic, r.key, r.value, r.timestamp) for r in sent] == [
            ("word-counts-out", b"a", i64(1), 77), ("word-counts-out", b"b", i64(1), 77),
            ("word-counts-out", b"a", i64(2), 77)]


def test_count_collapses_repeated_writes_per_commit_and_survives_commit(make_app):
    h = word_count(make_app)
    for w in ("a", "a", "a", "b"):
        h.pipe(w, "x")
    changelog = h.commit()["word-counts"]
    assert changelog == [(b"a", i64(3)), (b"b", i64(1))]  # one changelog record per key
    backend = h.task.stores["word-counts"].backend
    assert backend.get(b"a") == i64(3) and backend.changelog_offset() == 2
    assert len(h.task.stores["word-counts"].overlay) == 0
    h.pipe("a", "x")  # continues from the committed value
    assert h.store("word-counts").get("a") == 4
    assert h.sent[-1] == Sent("word-counts-out", b"a", i64(4), 1000)


def test_count_drops_null_keys_and_counts_them(make_app):
    h = word_count(make_app)
    h.pipe(None, "v")
    h.pipe("k", "v")
    h.pipe(None, "v")
    assert h.metrics.dropped_null_key == 2
    assert list(h.store("word-counts").all()) == [("k", 1)]
    assert [s.key for s in h.sent] == [b"k"]


def test_aggregate_uses_initializer_once_per_key(make_app):
    app = make_app()
    inits = []

    def init():
        inits.append(1)
        return {"n": 0, "chars": 0}

    (app.stream("in", key_serde=serde.STRING, value_serde=serde.STRING).group_by_key()
        .aggregate(init, lambda k, v, a: {"n": a["n"] + 1, "chars": a["chars"] + len(v)}, store="agg")
        .to_stream().to("out"))
    h = Harness(app, "in")
    h.pipe("k", "abc")
    h.pipe("k", "de")
    h.pipe("j", "")
    assert h.store("agg").get("k") == {"n": 2, "chars": 5}
    assert h.store("agg").get("j") == {"n": 1, "chars": 0}
    assert len(inits) == 2
    assert [(s.key, s.value) for s in h.sent] == [
        (b"k", b'{"n":1,"chars":3}'), (b"k", b'{"n":2,"chars":5}'), (b"j", b'{"n":1,"chars":0}')]


def test_reduce_first_value_is_the_aggregate(make_app):
    app = make_app()
    calls = []

    def reducer(agg, v):
        calls.append((agg, v))
        return agg + v

    app.stream("in", key_serde=serde.STRING, value_serde=serde.INT64).group_by_key().reduce(reducer, store="sum")
    h = Harness(app, "in")
    h.pipe("k", 5)
    assert h.store("sum").get("k") == 5 and calls == []
    h.pipe("k", -2)
    h.pipe("k", 10)
    assert h.store("sum").get("k") == 13
    assert calls == [(5, -2), (3, 10)]
    assert h.task.stores["sum"].overlay.entries() == [(b"k", i64(13))]


def test_filter_map_values_peek_before_count(make_app):
    app = make_app()
    seen = []
    (app.stream("in", key_serde=serde.STRING, value_serde=serde.STRING)
        .filter(lambda k, v: v != "skip")
        .map_values(str.upper)
        .peek(lambda k, v: seen.append((k, v)))
        .group_by_key().count("c"))
    h = Harness(app, "in")
    for k, v in (("a", "x"), ("a", "skip"), ("b", "y")):
        h.pipe(k, v)
    assert seen == [("a", "X"), ("b", "Y")]
    assert dict(h.store("c").all()) == {"a": 1, "b": 1}
    assert h.sent == []  # no sink


def test_flat_map_and_map_to_sink(make_app):
    app = make_app()
    (app.stream("lines", key_serde=serde.BYTES, value_serde=serde.STRING)
        .flat_map(lambda k, v: [(w, len(w)) for w in v.split()])
        .map(lambda k, v: (k.upper(), v * 10))
        .to("words", key_serde=serde.STRING, value_serde=serde.INT64))
    h = Harness(app, "lines")
    h.pipe(b"k", "hi there", timestamp=5)
    h.pipe(None, "", timestamp=6)  # no words, nothing sent
    assert h.sent == [Sent("words", b"HI", i64(20), 5), Sent("words", b"THERE", i64(50), 5)]


def test_sink_sends_tombstones_for_none(make_app):
    app = make_app()
    app.stream("in", key_serde=serde.STRING, value_serde=serde.STRING).to("out")
    h = Harness(app, "in")
    h.pipe(None, None)
    assert h.sent == [Sent("out", None, None, 1000)]


def test_process_with_store_and_forward(make_app):
    app = make_app()

    def dedup(record, ctx):
        seen = ctx.store("seen")
        if seen.get(record.key) is None:
            seen.put(record.key, {"first_offset": record.offset, "topic": record.topic})
            ctx.forward(record.key, record.value)

    (app.stream("in", key_serde=serde.STRING, value_serde=serde.STRING)
        .process(dedup, stores=["seen"], key_serde=serde.STRING, value_serde=serde.STRING)
        .to("out"))
    h = Harness(app, "in")
    for k, v in (("a", "1"), ("b", "2"), ("a", "3")):
        h.pipe(k, v)
    assert [(s.key, s.value) for s in h.sent] == [(b"a", b"1"), (b"b", b"2")]
    assert h.store("seen").get("a") == {"first_offset": 0, "topic": "in"}
    assert h.store("seen").get("b") == {"first_offset": 1, "topic": "in"}


def test_process_record_metadata_and_store_range_delete(make_app):
    app = make_app()
    records = []

    def fn(record, ctx):
        records.append((record.key, record.value, record.timestamp, record.headers, record.topic,
                        record.partition, record.offset, ctx.task_id))
        st = ctx.store("kv")
        st.put(record.key, record.value)
        if record.value == "drop-b":
            st.delete("b")
        ctx.forward("range", [k for k, _ in st.range("a", "c")])

    (app.stream("in", key_serde=serde.STRING, value_serde=serde.STRING)
        .process(fn, stores=["kv"]).to("out", key_serde=serde.STRING, value_serde=serde.JSON))
    h = Harness(app, "in")
    h.task.stores["kv"].backend.write([(b"b", b'"committed"')], 1)
    h.pipe("c", "x", timestamp=9, headers=[("h", b"1")])
    h.pipe("a", "drop-b")
    assert records[0] == ("c", "x", 9, [("h", b"1")], "in", 0, 0, "0_0")
    assert records[1][6] == 1
    assert [s.value for s in h.sent] == [b'["b","c"]', b'["a","c"]']


def test_process_chained_forward_goes_to_the_right_children(make_app):
    app = make_app()
    s = app.stream("in", key_serde=serde.STRING, value_serde=serde.STRING)
    first = s.process(lambda r, ctx: ctx.forward(r.key, r.value + "1"))
    second = first.process(lambda r, ctx: ctx.forward(r.key, r.value + "2"))
    second.to("out", key_serde=serde.STRING, value_serde=serde.STRING)
    first.to("mid", key_serde=serde.STRING, value_serde=serde.STRING)
    h = Harness(app, "in")
    h.pipe("k", "v")
    assert sorted((s.topic, s.value) for s in h.sent) == [("mid", b"v1"), ("out", b"v12")]


def test_process_store_not_listed_raises_key_error(make_app):
    app = make_app()
    app.stream("in", key_serde=serde.STRING).process(lambda r, ctx: ctx.store("other"))
    h = Harness(app, "in")
    with pytest.raises(KeyError, match="process\\(stores="):
        h.pipe("k", b"v")


def test_two_tasks_have_separate_stores(make_app):
    app = make_app()
    app.stream("words", key_serde=serde.STRING, value_serde=serde.STRING).group_by_key().count("c")
    h0, h1 = Harness(app, "words", 0), Harness(app, "words", 1)
    h0.pipe("a", "")
    h0.pipe("a", "")
    h1.pipe("a", "")
    assert h0.store("c").get("a") == 2 and h1.store("c").get("a") == 1
    assert h1.task.id == "0_1"
    assert h1.task.stores["c"].changelog == ("unit-app-c-changelog", 1)


def test_user_exception_propagates_and_keeps_earlier_writes_uncommitted(make_app):
    app = make_app()

    def agg(k, v, a):
        if v == "bad":
            raise ValueError("nope")
        return a + 1

    app.stream("in", key_serde=serde.STRING, value_serde=serde.STRING).group_by_key().aggregate(
        lambda: 0, agg, store="s")
    h = Harness(app, "in")
    h.pipe("k", "ok")
    with pytest.raises(ValueError, match="nope"):
        h.pipe("k", "bad")
    assert h.store("s").get("k") == 1
    assert h.task.stores["s"].backend.get(b"k") is None
