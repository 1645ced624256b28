"""Building topologies with the DSL: what is rejected, and which stores are registered."""
from __future__ import annotations

import pytest

from hotstate import StoreSpec, serde
from hotstate.dsl.nodes import AggregateNode, MapValuesNode, SinkNode
from hotstate.errors import TopologyError


def topo(app):
    return app._topology


@pytest.mark.parametrize("step", [
    lambda s: s.map(lambda k, v: (v, k)),
    lambda s: s.flat_map(lambda k, v: [(k, v)]),
    lambda s: s.process(lambda r, ctx: None),
    lambda s: s.map(lambda k, v: (k, v)).filter(lambda k, v: True),  # key stays "changed" downstream
    lambda s: s.map(lambda k, v: (k, v)).map_values(str).peek(print),
])
def test_group_by_key_after_key_change_without_serdes_raises(make_app, step):
    """A key change makes group_by_key() go through a repartition topic, which needs both serdes: after these
    steps one of them is unknown, and the error says which to pass."""
    s = make_app().stream("in", key_serde=serde.STRING, value_serde=serde.STRING)
    with pytest.raises(TopologyError, match=r"group_by_key\(\).*repartition topic.*pass .*serde="):
        step(s).group_by_key()


def test_group_by_key_after_key_preserving_steps_is_fine(make_app):
    s = make_app().stream("in", key_serde=serde.STRING, value_serde=serde.STRING)
    table = s.filter(lambda k, v: True).map_values(len).peek(lambda k, v: None).group_by_key().count("c")
    assert table.store.key_serde is serde.STRING


def test_to_without_known_serdes_raises(make_app):
    s = make_app().stream("in", key_serde=serde.STRING, value_serde=serde.STRING)
    with pytest.raises(TopologyError, match="key_serde"):
        s.map(lambda k, v: (k, v)).to("out")
    with pytest.raises(TopologyError, match="value_serde"):
        s.map_values(len).to("out")
    # passing the unknown serde fixes it
    s.map(lambda k, v: (k, v)).to("out", key_serde=serde.STRING, value_serde=serde.STRING)


def test_to_with_a_non_serde_raises(make_app):
    s = make_app().stream("in", key_serde=serde.STRING, value_serde=serde.STRING)
    with pytest.raises(TopologyError):
        s.to("out", value_serde="INT64")


def test_same_source_topic_twice_raises(make_app):
    app = make_app()
    app.stream("in")
    with pytest.raises(TopologyError, match="already a source"):
        app.stream("in")


def test_store_in_two_subtopologies_raises(make_app):
    app = make_app()
    app.stream("a", key_serde=serde.STRING).group_by_key().count("shared")
    with pytest.raises(TopologyError, match="two sub-topologies"):
        app.stream("b", key_serde=serde.STRING).group_by_key().count("shared")


def test_same_store_twice_with_different_settings_raises(make_app):
    s = make_app().stream("a", key_serde=serde.STRING, value_serde=serde.STRING)
    s.group_by_key().count("x")
    with pytest.raises(TopologyError, match="different settings"):
        s.process(lambda r, c: None, stores=[StoreSpec("x", serde.STRING, serde.JSON)])


def test_same_store_twice_with_same_settings_is_shared(make_app):
    app = make_app()
    s = app.stream("a", key_serde=serde.STRING)
    s.process(lambda r, c: None, stores=["st"])
    s.process(lambda r, c: None, stores=["st"])
    assert list(topo(app).store_specs()) == ["st"]


def test_sink_equal_to_source_raises(make_app):
    app = make_app()
    s = app.stream("in", key_serde=serde.STRING, value_serde=serde.STRING)
    with pytest.raises(TopologyError, match="both a source and a sink"):
        s.to("in")
    app.stream("other", key_serde=serde.STRING, value_serde=serde.STRING)
    with pytest.raises(TopologyError, match="both a source and a sink"):
        s.to("other")  # a source of another sub-topology


def test_source_added_after_sink_on_same_topic_raises(make_app):
    app = make_app()
    app.stream("in", key_serde=serde.STRING, value_serde=serde.STRING).to("out")
    with pytest.raises(TopologyError, match="both a source and a sink"):
        app.stream("out")


def test_count_registers_int64_store(make_app):
    app = make_app()
    t = app.stream("in", key_serde=serde.STRING, value_serde=serde.STRING).group_by_key().count("word-counts")
    spec = topo(app).store_specs()["word-counts"]
    assert spec == StoreSpec("word-counts", serde.STRING, serde.INT64, "rocksdb")
    assert t.store == spec
    assert t.to_stream().key_serde is serde.STRING and t.to_stream().value_serde is serde.INT64


def test_aggregate_registers_json_store_by_default_and_custom_serde(make_app):
    app = make_app()
    s = app.stream("in", key_serde=serde.BYTES, value_serde=serde.STRING)
    g = s.group_by_key()
    g.aggregate(lambda: [], lambda k, v, a: a + [v], store="lists")
    g.aggregate(lambda: 0, lambda k, v, a: a + 1, store="ints", value_serde=serde.INT64)
    specs = topo(app).store_specs()
    assert (specs["lists"].key_serde, specs["lists"].value_serde) == (serde.BYTES, serde.JSON)
    assert specs["ints"].value_serde is serde.INT64


def test_reduce_uses_the_stream_value_serde(make_app):
    app = make_app()
    app.stream("in", key_serde=serde.STRING, value_serde=serde.INT64).group_by_key().reduce(max, store="maxes")
    assert topo(app).store_specs()["maxes"] == StoreSpec("maxes", serde.STRING, serde.INT64)


def test_reduce_after_value_type_change_raises(make_app):
    s = make_app().stream("in", key_serde=serde.STRING, value_serde=serde.STRING)
    with pytest.raises(TopologyError, match="value serde"):
        s.map_values(len).group_by_key().reduce(max, store="m")


def test_storespec_store_keeps_name_and_kind_but_not_serdes(make_app):
    app = make_app()
    s = app.stream("in", key_serde=serde.STRING, value_serde=serde.STRING)
    s.group_by_key().count(StoreSpec("mem-counts", serde.BYTES, serde.JSON, kind="memory"))
    assert topo(app).store_specs()["mem-counts"] == StoreSpec("mem-counts", serde.STRING, serde.INT64, "memory")


def test_store_argument_of_wrong_type_raises(make_app):
    s = make_app().stream("in", key_serde=serde.STRING, value_serde=serde.STRING)
    with pytest.raises(TopologyError, match="store must be"):
        s.group_by_key().count(42)


def test_process_store_by_name_gets_stream_key_serde_and_json(make_app):
    app = make_app()
    app.stream("in", key_serde=serde.STRING).process(lambda r, c: None, stores=["p"])
    app.stream("in2").map(lambda k, v: (k, v)).process(lambda r, c: None, stores=["q"])
    specs = topo(app).store_specs()
    assert specs["p"] == StoreSpec("p", serde.STRING, serde.JSON, "rocksdb")
    assert specs["q"] == StoreSpec("q", serde.BYTES, serde.JSON, "rocksdb")


def test_topology_shape_and_subtopology_ids(make_app):
    app = make_app()
    a = app.stream("a", key_serde=serde.STRING, value_serde=serde.STRING)
    a.map_values(str.upper).group_by_key().count("c").to_stream().to("a-out")
    app.stream("b")
    t = topo(app)
    assert t.source_topics == ["a", "b"]
    sub_a, sub_b = t.subtopologies
    assert (sub_a.id, sub_b.id) == (0, 1)
    assert t.subtopology_of("b") is sub_b
    with pytest.raises(KeyError):
        t.subtopology_of("zzz")
    assert sub_a.sink_topics == {"a-out"} and sub_b.sink_topics == set()
    assert set(sub_a.stores) == {"c"} and sub_b.stores == {}
    (mv,) = sub_a.sources[0].children
    assert isinstance(mv, MapValuesNode)
    (agg,) = mv.children
    assert isinstance(agg, AggregateNode) and agg.store_name == "c"
    (sink,) = agg.children
    assert isinstance(sink, SinkNode) and sink.topic == "a-out" and sink.value_serde is serde.INT64


def test_branching_a_stream(make_app):
    app = make_app()
    s = app.stream("in", key_serde=serde.STRING, value_serde=serde.STRING)
    s.filter(lambda k, v: True).to("x")
    s.filter(lambda k, v: False).to("y")
    assert len(topo(app).subtopologies[0].sources[0].children) == 2
    assert topo(app).subtopologies[0].sink_topics == {"x", "y"}
