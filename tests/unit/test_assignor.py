"""The pure task assignor: balance, stickiness, lag-awareness, standbys. Property tests plus examples."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hotstate.runtime.assignor import AssignorConfig, MemberAssignment, MemberInfo, assign, lag


def test_lag():
    m = MemberInfo("a", {"0_0": 90})
    assert lag(m, "0_0", 100) == 10
    assert lag(m, "0_0", 50) == 0          # ahead of the end (e.g. changelog truncated): no lag
    assert lag(m, "0_1", 100) == 100       # holds nothing: the whole changelog


def test_no_members():
    assert assign([], {"0_0": 0}) == {}


def test_duplicate_member_ids_rejected():
    with pytest.raises(ValueError, match="unique"):
        assign([MemberInfo("a"), MemberInfo("a")], {"0_0": 0})


def test_single_member_gets_everything():
    out = assign([MemberInfo("a")], {"0_0": 5, "0_1": 0}, AssignorConfig(num_standby_replicas=2))
    assert out == {"a": MemberAssignment(frozenset({"0_0", "0_1"}), frozenset())}


def test_sticky_when_caught_up():
    members = [MemberInfo("a", {"0_0": 100}, previous_active=frozenset({"0_0"})),
               MemberInfo("b", {"0_1": 100}, previous_active=frozenset({"0_1"}))]
    out = assign(members, {"0_0": 100, "0_1": 100})
    assert out["a"].active == {"0_0"} and out["b"].active == {"0_1"}


def test_lagging_previous_owner_loses_task_to_caught_up_member():
    members = [MemberInfo("a", {}, previous_active=frozenset({"0_0"})),       # lost its disk
               MemberInfo("b", {"0_0": 1_000_000})]                           # e.g. a standby
    out = assign(members, {"0_0": 1_000_000, "0_1": 0}, AssignorConfig(acceptable_recovery_lag=10))
    assert out["b"].active == {"0_0"}
    assert out["a"].active == {"0_1"}


def test_nobody_caught_up_keeps_previous_owner():
    members = [MemberInfo("a", {"0_0": 10}, previous_active=frozenset({"0_0"})), MemberInfo("b", {"0_0": 50})]
    out = assign(members, {"0_0": 1000}, AssignorConfig(acceptable_recovery_lag=0))
    assert out["a"].active == {"0_0"}


def test_nobody_caught_up_new_task_goes_to_least_lag():
    members = [MemberInfo("a", {"0_0": 10}), MemberInfo("b", {"0_0": 50})]
    out = assign(members, {"0_0": 1000}, AssignorConfig(acceptable_recovery_lag=0))
    assert out["b"].active == {"0_0"}


def test_standby_goes_to_least_lagging_other_member():
    members = [MemberInfo("a", {"0_0": 100}, previous_active=frozenset({"0_0"})),
               MemberInfo("b", {}), MemberInfo("c", {"0_0": 90})]
    out = assign(members, {"0_0": 100}, AssignorConfig(num_standby_replicas=1))
    assert out["a"].active == {"0_0"}
    assert out["c"].standby == {"0_0"} and out["b"].standby == set()


@st.composite
def scenarios(draw):
    n_members = draw(st.integers(1, 5))
    n_tasks = draw(st.integers(0, 12))
    tasks = [f"0_{i}" for i in range(n_tasks)]
    ends = {t: draw(st.integers(0, 1000)) for t in tasks}
    members = []
    for i in range(n_members):
        offsets = draw(st.dictionaries(st.sampled_from(tasks), st.integers(0, 1000))) if tasks else {}
        members.append(MemberInfo(f"m{i}", offsets))
    # previous actives: each task at most one previous owner
    prev: dict[str, set[str]] = {m.member_id: set() for m in members}
    for t in tasks:
        owner = draw(st.none() | st.sampled_from([m.member_id for m in members]))
        if owner is not None:
            prev[owner].add(t)
    members = [MemberInfo(m.member_id, m.task_offsets, frozenset(prev[m.member_id])) for m in members]
    cfg = AssignorConfig(num_standby_replicas=draw(st.integers(0, 3)),
                         acceptable_recovery_lag=draw(st.integers(0, 1000)))
    order = draw(st.permutations(members))
    return list(order), ends, cfg


@settings(max_examples=300, deadline=None)
@given(scenarios())
def test_assignment_invariants(scenario):
    members, ends, cfg = scenario
    out = assign(members, ends, cfg)
    ids = {m.member_id for m in members}
    assert set(out) == ids
    # every task exactly one active
    actives = [t for a in out.values() for t in a.active]
    assert sorted(actives) == sorted(ends)
    # balance: active counts differ by at most one
    counts = [len(a.active) for a in out.values()]
    assert max(counts) - min(counts) <= 1
    # standbys: never on the active owner, exactly min(replicas, members - 1) per task
    replicas = min(cfg.num_standby_replicas, len(ids) - 1)
    for t in ends:
        owners = [mid for mid, a in out.items() if t in a.active]
        holders = [mid for mid, a in out.items() if t in a.standby]
        assert owners[0] not in holders
        assert len(holders) == replicas
    # deterministic, whatever the member order
    assert assign(list(reversed(members)), ends, cfg) == out


@settings(max_examples=200, deadline=None)
@given(scenarios())
def test_sticky_owner_keeps_caught_up_task_when_balance_allows(scenario):
    members, ends, cfg = scenario
    # only members with at most floor(tasks / members) previous tasks are guaranteed to keep them all
    out = assign(members, ends, cfg)
    floor = len(ends) // len(members)
    for m in members:
        if len(m.previous_active) > floor:
            continue
        for t in m.previous_active:
            if lag(m, t, ends[t]) <= cfg.acceptable_recovery_lag:
                assert t in out[m.member_id].active, (m.member_id, t)


@settings(max_examples=200, deadline=None)
@given(scenarios())
def test_task_goes_to_a_caught_up_member_when_one_has_room(scenario):
    members, ends, cfg = scenario
    out = assign(members, ends, cfg)
    by_id = {m.member_id: m for m in members}
    for mid, a in out.items():
        for t in a.active:
            if lag(by_id[mid], t, ends[t]) <= cfg.acceptable_recovery_lag:
                continue
            # mid is not caught up on t: every caught-up member was full when t was placed (or nobody is
            # caught up), so each ends with at least floor(tasks / members) actives
            anyone = [o for o in by_id if lag(by_id[o], t, ends[t]) <= cfg.acceptable_recovery_lag]
            floor = len(ends) // len(members)
            assert all(len(out[o].active) >= floor for o in anyone), (mid, t, anyone)
