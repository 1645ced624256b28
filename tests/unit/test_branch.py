"""stream.split() and its branches (Kafka Streams' BranchedKStream): first matching predicate wins, the default
branch takes the rest (or they are dropped), the dict's keys are the split's name + the branch's name or
position. Run through the test driver."""
from __future__ import annotations

import pytest

from hotstate import serde
from hotstate.errors import TopologyError
from hotstate.testing import TopologyTestDriver


def source(app):
    return app.stream("numbers", key_serde=serde.STRING, value_serde=serde.INT64)


def test_first_matching_branch_wins_and_the_default_takes_the_rest(make_app):
    app = make_app()
    branches = (source(app).split(name="n-")
                .branch(lambda k, v: v < 0, name="negative")
                .branch(lambda k, v: v % 2 == 0, name="even")
                .branch(lambda k, v: v < 100, name="small")  # an even small number went to "even" already
                .default_branch(name="rest"))
    assert list(branches) == ["n-negative", "n-even", "n-small", "n-rest"]
    for name, stream in branches.items():
        stream.to(f"out-{name}")
    with TopologyTestDriver(app) as driver:
        for i, v in enumerate([-4, 2, 3, 101, -1, 100, 7, 1001]):
            driver.pipe("numbers", f"k{i}", v, timestamp_ms=i)
        got = {name: [r.value for r in driver.read_output(f"out-{name}")] for name in branches}
    assert got == {"n-negative": [-4, -1], "n-even": [2, 100], "n-small": [3, 7], "n-rest": [101, 1001]}


def test_without_a_default_branch_unmatched_records_are_dropped(make_app):
    app = make_app()
    branches = source(app).split(name="s").branch(lambda k, v: v > 0, name="pos").no_default_branch()
    assert list(branches) == ["spos"]
    branches["spos"].to("out")
    with TopologyTestDriver(app) as driver:
        for v in (1, -1, 0, 5):
            driver.pipe("numbers", "k", v)
        assert [r.value for r in driver.read_output("out")] == [1, 5]
        assert driver.metrics()["records_processed_total"] == 4


def test_unnamed_branches_take_their_position_and_the_default_zero(make_app):
    app = make_app()
    first = source(app).split(name="a-").branch(lambda k, v: True).branch(lambda k, v: True).default_branch()
    assert list(first) == ["a-1", "a-2", "a-0"]
    other = app.stream("other", key_serde=serde.STRING, value_serde=serde.STRING)
    second = other.split().branch(lambda k, v: True, name="x").default_branch()
    third = other.split().branch(lambda k, v: True).no_default_branch()
    # an unnamed split gets Kafka Streams' generated prefix, counted per app
    assert list(second) == ["KSTREAM-BRANCH-0000000000x", "KSTREAM-BRANCH-00000000000"]
    assert list(third) == ["KSTREAM-BRANCH-00000000011"]


def test_chain_transforms_a_branch_and_a_chain_returning_none_leaves_it_out(make_app):
    app = make_app()
    branches = (source(app).split(name="c-")
                .branch(lambda k, v: v > 0, name="pos", chain=lambda s: s.map_values(lambda v: v * 10))
                .default_branch(name="rest", chain=lambda s: s.to("rest-out")))
    assert list(branches) == ["c-pos"]
    branches["c-pos"].to("pos-out", value_serde=serde.INT64)
    with TopologyTestDriver(app) as driver:
        for v in (1, -2, 3):
            driver.pipe("numbers", "k", v)
        assert [r.value for r in driver.read_output("pos-out")] == [10, 30]
        assert [r.value for r in driver.read_output("rest-out")] == [-2]


def test_branches_keep_the_serdes_and_a_key_change_repartitions_after_them(make_app):
    app = make_app()
    branches = (source(app).select_key(lambda k, v: str(v % 3), key_serde=serde.STRING)
                .split(name="b-").branch(lambda k, v: v >= 0, name="pos").no_default_branch())
    branches["b-pos"].group_by_key().count("per-rest").to_stream().to("out", value_serde=serde.INT64)
    assert len(app._topology.subtopologies) == 2  # the key change still needs a repartition topic
    with TopologyTestDriver(app, partitions=2) as driver:
        for v in (3, 4, 6, -1, 7):
            driver.pipe("numbers", f"k{v}", v)
        assert sorted(driver.store("per-rest").all()) == [("0", 2), ("1", 2)]


def test_split_mistakes_are_refused_at_build_time(make_app):
    app = make_app()
    split = source(app).split(name="m-").branch(lambda k, v: True, name="a")
    with pytest.raises(TopologyError, match="exists already"):
        split.branch(lambda k, v: True, name="a")
    with pytest.raises(TopologyError, match="predicate"):
        split.branch("not callable")
    split.default_branch()
    with pytest.raises(TopologyError, match="ended"):
        split.branch(lambda k, v: True)
    with pytest.raises(TopologyError, match="name"):
        source(make_app()).split(name=3)
