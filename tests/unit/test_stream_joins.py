"""Windowed stream-stream joins (inner, left, outer): building (stores, names, sub-topologies, repartition
sizing, TopologyErrors), windows.join validation, and the join against a nested-loop reference
(tests/stream_join_reference.py) over hypothesis interleavings of both sides' records, with late records, null
keys and values, and records of one key and timestamp on both sides. No broker."""
from __future__ import annotations

import json
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import hotstate
from hotstate import serde, windows
from hotstate.errors import ConfigError, TopologyError
from stream_join_reference import reference_join
from unit_support import Harness


def build(app, kind, d, grace, store=None):
    left = app.stream("left", key_serde=serde.STRING, value_serde=serde.JSON)
    right = app.stream("right", key_serde=serde.STRING, value_serde=serde.JSON)
    join = {"inner": left.join, "left": left.left_join, "outer": left.outer_join}[kind]
    join(right, lambda lv, rv: [lv, rv], window=windows.join(time_difference_ms=d, grace_ms=grace),
         store=store).to("out", value_serde=serde.JSON)
    return app


def outputs(h):
    return Counter((s.key.decode(), tuple(json.loads(s.value)), s.timestamp) for s in h.sent)


def run(h, events):
    for side, key, value, ts in events:
        h.pipe(key, value, timestamp=ts, topic="left" if side == "L" else "right")


# ---- windows.join ----

def test_join_windows_are_symmetric_with_a_retention_covering_the_window_and_grace():
    w = windows.join(time_difference_ms=60_000, grace_ms=5_000)
    assert (w.before_ms, w.after_ms, w.size_ms, w.grace_ms) == (60_000, 60_000, 120_000, 5_000)
    assert w.retention_ms == 125_001
    assert windows.join(0, 0).retention_ms == 1


@pytest.mark.parametrize("args, message", [
    ((-1, 0), r"time_difference_ms=-1 is invalid: it must be an integer >= 0"),
    ((10, -5), r"grace_ms=-5 is invalid: it must be an integer >= 0"),
    ((1.5, 0), r"time_difference_ms=1.5 is invalid"),
    ((True, 0), r"time_difference_ms=True is invalid"),
])
def test_join_windows_refuse_negative_or_non_integer_values(args, message):
    with pytest.raises(ConfigError, match=message):
        windows.join(*args)
    assert issubclass(ConfigError, ValueError)


# ---- building ----

def test_both_sides_and_the_join_stores_are_in_one_subtopology_named_like_kafka_streams(make_app):
    app = build(make_app(), "outer", 10, 5)
    (sub,) = app._topology.subtopologies
    assert sorted(sub.source_topics) == ["left", "right"]
    assert list(sub.stores) == ["KSTREAM-JOINTHIS-0000000000-store", "KSTREAM-JOINOTHER-0000000001-store",
                                "KSTREAM-OUTERSHARED-0000000000-store"]
    this = sub.stores["KSTREAM-JOINTHIS-0000000000-store"]
    assert this.windowed and this.retention_ms == 2 * 10 + 5 + 1
    assert not sub.stores["KSTREAM-OUTERSHARED-0000000000-store"].windowed
    assert this.changelog_topic("unit-app") == "unit-app-KSTREAM-JOINTHIS-0000000000-store-changelog"


def test_an_inner_join_has_no_outer_store_and_store_names_the_stores(make_app):
    app = build(make_app(), "inner", 10, 5, store="pay")
    (sub,) = app._topology.subtopologies
    assert list(sub.stores) == ["pay-this-join-store", "pay-other-join-store"]
    app2 = build(make_app(), "left", 10, 5, store="pay")
    assert list(app2._topology.subtopologies[0].stores) == ["pay-this-join-store", "pay-other-join-store",
                                                            "pay-outer-shared-join-store"]


def test_key_changed_sides_go_through_repartition_topics_sized_like_the_other_side(make_app):
    app = make_app()
    left = app.stream("left", key_serde=serde.STRING, value_serde=serde.JSON)
    right = app.stream("right", key_serde=serde.STRING, value_serde=serde.JSON)
    left.select_key(lambda k, v: v["id"], key_serde=serde.STRING).join(
        right, lambda a, b: [a, b], window=windows.join(10, 0)).to("out", value_serde=serde.JSON)
    topo = app._topology
    (rep,) = topo.repartitions.values()
    assert rep.copartition_with == "right"
    joined = topo.subtopology_of(rep.topic)
    assert sorted(joined.source_topics) == sorted([rep.topic, "right"])
    assert topo.resolve_partitions({"left": 2, "right": 5})[rep.topic] == 5


def test_both_sides_key_changed_share_the_first_repartition_topics_partition_count(make_app):
    app = make_app()
    left = app.stream("left", key_serde=serde.STRING, value_serde=serde.JSON)
    right = app.stream("right", key_serde=serde.STRING, value_serde=serde.JSON)
    rekey = lambda s: s.select_key(lambda k, v: v["id"], key_serde=serde.STRING)  # noqa: E731
    rekey(left).outer_join(rekey(right), lambda a, b: [a, b], window=windows.join(10, 0)).to(
        "out", value_serde=serde.JSON)
    first, second = app._topology.repartitions.values()
    assert second.copartition_with == first.topic
    counts = app._topology.resolve_partitions({"left": 3, "right": 7})
    assert counts[first.topic] == 3 and counts[second.topic] == 3


@pytest.mark.parametrize("make, message", [
    (lambda app, a, b: a.join(b, lambda x, y: x),
     r"join\(\): a join of two streams needs a window: pass window=windows.join\(time_difference_ms="),
    (lambda app, a, b: a.outer_join(b, lambda x, y: x),
     r"outer_join\(\): a join of two streams needs a window: pass window=windows.join\(time_difference_ms="),
    (lambda app, a, b: a.join(b, lambda x, y: x, window=windows.tumbling(10, 0)),
     r"join\(\): a join of two streams takes window=windows.join\(.*got TimeWindows"),
    (lambda app, a, b: a.left_join(b, "nope", window=windows.join(10, 0)),
     r"left_join\(\): joiner must be a callable"),
    (lambda app, a, b: a.map_values(lambda v: v).join(b, lambda x, y: x, window=windows.join(10, 0)),
     r"join\(\): this stream's value_serde is unknown"),
    (lambda app, a, b: a.outer_join(app.table("t", key_serde=serde.STRING, value_serde=serde.JSON, store="t"),
                                    lambda x, y: x, window=windows.join(10, 0)),
     r"outer_join\(\): a stream's outer join takes another stream"),
    (lambda app, a, b: [a.join(b, lambda x, y: x, window=windows.join(10, 0), store="s"),
                        a.join(b, lambda x, y: x, window=windows.join(10, 0), store="s")],
     r"join\(\): store name 's-this-join-store' is used twice"),
    (lambda app, a, b: a.join(app.stream("c", key_serde=serde.INT64, value_serde=serde.JSON), lambda x, y: x,
                              window=windows.join(10, 0)),
     r"join\(\): both streams must have the same key serde"),
])
def test_stream_stream_join_mistakes_raise_at_build_time_naming_the_operation(make_app, make, message):
    app = make_app()
    a = app.stream("a", key_serde=serde.STRING, value_serde=serde.JSON)
    b = app.stream("b", key_serde=serde.STRING, value_serde=serde.JSON)
    with pytest.raises(TopologyError, match=message):
        make(app, a, b)


# ---- semantics, by example ----

def test_inner_join_pairs_records_within_the_time_difference_before_or_after(make_app):
    h = Harness(build(make_app(), "inner", 10, 100), "left")
    run(h, [("L", "k", 1, 100), ("R", "k", "a", 110), ("R", "k", "b", 111), ("R", "k", "c", 90),
            ("L", "k", 2, 95), ("R", "x", "z", 100)])
    assert outputs(h) == Counter({("k", (1, "a"), 110): 1, ("k", (1, "c"), 100): 1, ("k", (2, "c"), 95): 1})


def test_left_join_emits_an_unjoined_record_only_once_its_window_closed(make_app):
    h = Harness(build(make_app(), "left", 10, 5), "left")
    run(h, [("L", "k", 1, 100)])
    run(h, [("R", "other", "x", 115)])  # stream time 115 = 100 + 10 + 5: not closed yet
    assert outputs(h) == Counter()
    run(h, [("R", "other", "y", 116)])  # 116 > 115: closed
    assert outputs(h) == Counter({("k", (1, None), 100): 1})
    run(h, [("R", "other", "z", 200)])  # emitted once only; right records never unjoined in a left join
    assert outputs(h) == Counter({("k", (1, None), 100): 1})


def test_a_record_that_finds_a_partner_later_is_not_emitted_unjoined(make_app):
    h = Harness(build(make_app(), "outer", 10, 5), "left")
    run(h, [("L", "k", 1, 100), ("R", "k", "a", 108), ("R", "k", "b", 300)])
    assert outputs(h) == Counter({("k", (1, "a"), 108): 1})
    run(h, [("L", "q", 9, 400)])  # closes b's window: emitted with None on the left
    assert outputs(h) == Counter({("k", (1, "a"), 108): 1, ("k", (None, "b"), 300): 1})


def test_records_of_one_key_and_timestamp_on_both_sides_all_join(make_app):
    h = Harness(build(make_app(), "inner", 0, 0), "left")
    run(h, [("L", "k", 1, 50), ("L", "k", 2, 50), ("R", "k", "a", 50), ("R", "k", "b", 50), ("L", "k", 2, 50)])
    assert outputs(h) == Counter({("k", (1, "a"), 50): 1, ("k", (2, "a"), 50): 2, ("k", (1, "b"), 50): 1,
                                  ("k", (2, "b"), 50): 2})
    assert h.store("KSTREAM-JOINTHIS-0000000000-store").get("k", 50) == [1, 2, 2]


def test_records_later_than_grace_are_dropped_and_counted(make_app):
    h = Harness(build(make_app(), "inner", 100, 10), "left")
    run(h, [("L", "k", 1, 1000), ("R", "k", "late", 989), ("R", "k", "ok", 990)])
    assert outputs(h) == Counter({("k", (1, "ok"), 1000): 1})
    assert sum(h.metrics.dropped_late_records.values()) == 1


def test_null_keys_and_values_are_dropped_and_counted(make_app):
    h = Harness(build(make_app(), "outer", 10, 0), "left")
    run(h, [("L", None, 1, 100), ("R", "k", None, 100), ("L", "k", 2, 100), ("R", "k", "a", 100)])
    assert h.metrics.dropped_null_key == 1 and h.metrics.dropped_null_value == 1
    assert outputs(h) == Counter({("k", (2, "a"), 100): 1})


def test_the_join_stores_changelog_entries_restore_the_join(make_app):
    """What a changelog holds is enough: a task rebuilt from the committed entries joins with records from
    before (the windowed store's bytes, the outer store's bytes)."""
    app = build(make_app(), "left", 10, 0)
    h = Harness(app, "left")
    run(h, [("L", "k", 1, 100), ("R", "k", "a", 100), ("L", "j", 7, 100)])
    entries = h.commit()
    waiting = [(k, v) for k, v in entries["KSTREAM-OUTERSHARED-0000000000-store"] if v is not None]
    assert len(waiting) == 1 and waiting[0][0].endswith(b"j")  # j waits; k waited, then found a partner
    h2 = Harness(app, "left")
    for name, es in entries.items():
        h2.task.stores[name].backend.write(es, len(es))
    run(h2, [("R", "k", "b", 105), ("R", "x", "y", 111)])
    assert outputs(h2) == Counter({("k", (1, "b"), 105): 1, ("j", (7, None), 100): 1})


# ---- against the reference ----

def event():
    return st.tuples(st.sampled_from("LR"), st.sampled_from(["a", "b"]), st.integers(0, 9), st.integers(0, 80))


@settings(max_examples=200, deadline=None)
@given(events=st.lists(event(), max_size=30), kind=st.sampled_from(["inner", "left", "outer"]),
       d=st.integers(0, 12), grace=st.integers(0, 12), commits=st.sets(st.integers(0, 29)))
def test_stream_stream_joins_match_a_nested_loop_reference(tmp_path_factory, events, kind, d, grace, commits):
    """``commits``: after which events the task commits (the stores' writes move from the overlay to the backend)."""
    app = hotstate.App(app_id="unit-app", bootstrap_servers="127.0.0.1:1",
                       state_dir=str(tmp_path_factory.mktemp("state")))
    h = Harness(build(app, kind, d, grace), "left")
    for i, e in enumerate(events):
        run(h, [e])
        if i in commits:
            h.commit()
    expected, late = reference_join(events, kind, d, grace)
    assert outputs(h) == expected
    assert sum(h.metrics.dropped_late_records.values()) == late
