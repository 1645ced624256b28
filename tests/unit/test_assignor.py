"""The pure task assignor, by example: balance, stickiness, lag-awareness, standbys, warm-ups and probing
rebalances. The properties over random groups are in test_assignor_properties.py."""
from __future__ import annotations

import pytest

from hotstate.runtime.assignor import (AssignorConfig, MemberAssignment, MemberInfo, assign, lag,
                                       needs_probing)

F = frozenset


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
    assert out == {"a": MemberAssignment(F({"0_0", "0_1"}), F(), F())}
    assert not needs_probing(out)


def test_sticky_when_caught_up():
    members = [MemberInfo("a", {"0_0": 100}, previous_active=F({"0_0"})),
               MemberInfo("b", {"0_1": 100}, previous_active=F({"0_1"}))]
    out = assign(members, {"0_0": 100, "0_1": 100})
    assert out["a"].active == {"0_0"} and out["b"].active == {"0_1"}


def test_lagging_previous_owner_loses_task_to_caught_up_member():
    members = [MemberInfo("a", {}, previous_active=F({"0_0"})),       # lost its disk
               MemberInfo("b", {"0_0": 1_000_000})]                     # e.g. a standby
    out = assign(members, {"0_0": 1_000_000, "0_1": 0}, AssignorConfig(acceptable_recovery_lag=10))
    assert out["b"].active == {"0_0"}
    assert out["a"].active == {"0_1"}
    assert not needs_probing(out)


def test_nobody_caught_up_keeps_previous_owner():
    members = [MemberInfo("a", {"0_0": 10}, previous_active=F({"0_0"})), MemberInfo("b", {"0_0": 50})]
    out = assign(members, {"0_0": 1000}, AssignorConfig(acceptable_recovery_lag=0))
    assert out["a"].active == {"0_0"}


def test_nobody_caught_up_new_task_goes_to_least_lag():
    members = [MemberInfo("a", {"0_0": 10}), MemberInfo("b", {"0_0": 50})]
    out = assign(members, {"0_0": 1000}, AssignorConfig(acceptable_recovery_lag=0))
    assert out["b"].active == {"0_0"}


def test_nobody_caught_up_goes_to_balanced_target_without_warmup():
    members = [MemberInfo("a", {}, previous_active=F({"0_0", "0_1"})), MemberInfo("b")]   # a lost its disk
    out = assign(members, {"0_0": 1000, "0_1": 1000}, AssignorConfig(acceptable_recovery_lag=10))
    assert out["a"].active == {"0_0"} and out["b"].active == {"0_1"}
    assert not needs_probing(out)


def test_standby_goes_to_least_lagging_other_member():
    members = [MemberInfo("a", {"0_0": 100}, previous_active=F({"0_0"})),
               MemberInfo("b", {}), MemberInfo("c", {"0_0": 90})]
    out = assign(members, {"0_0": 100}, AssignorConfig(num_standby_replicas=1))
    assert out["a"].active == {"0_0"}
    assert out["c"].standby == {"0_0"} and out["b"].standby == set()


def test_standby_sticks_to_previous_holder_on_equal_lag():
    members = [MemberInfo("a", {"0_0": 100}, previous_active=F({"0_0"})),
               MemberInfo("b", {"0_0": 100}), MemberInfo("c", {"0_0": 100}, previous_standby=F({"0_0"}))]
    out = assign(members, {"0_0": 100}, AssignorConfig(num_standby_replicas=1))
    assert out["c"].standby == {"0_0"} and out["b"].standby == set()


# Scale-out: a and b own 6 caught-up tasks each; c joins with an empty disk.
ENDS = {f"0_{i}": 1000 for i in range(12)}
A_TASKS, B_TASKS = F(f"0_{i}" for i in range(6)), F(f"0_{i}" for i in range(6, 12))
SCALE_OUT = [MemberInfo("a", {t: 1000 for t in A_TASKS}, previous_active=A_TASKS),
             MemberInfo("b", {t: 1000 for t in B_TASKS}, previous_active=B_TASKS),
             MemberInfo("c")]
CFG = AssignorConfig(acceptable_recovery_lag=10, max_warmup_replicas=2)


def next_round(members: list[MemberInfo], out: dict[str, MemberAssignment]) -> list[MemberInfo]:
    """What members report after a probing interval: everything they held is caught up (warm-ups too)."""
    reported = []
    for m in members:
        a = out[m.member_id]
        offsets = {**m.task_offsets, **{t: ENDS[t] for t in a.active | a.standby | a.warmup}}
        reported.append(MemberInfo(m.member_id, offsets, a.active, a.standby | a.warmup))
    return reported


def test_scale_out_keeps_tasks_on_caught_up_owners_and_warms_up_the_new_member():
    out = assign(SCALE_OUT, ENDS, CFG)
    assert out["a"].active == A_TASKS and out["b"].active == B_TASKS   # nothing moves to an empty disk
    assert out["c"] == MemberAssignment(F(), F(), F({"0_4", "0_5"}))   # the budget: 2 warm-ups, on c
    assert needs_probing(out)


def test_caught_up_warmups_move_on_the_probing_rebalance():
    first = assign(SCALE_OUT, ENDS, CFG)
    out = assign(next_round(SCALE_OUT, first), ENDS, CFG)
    assert out["c"].active == {"0_4", "0_5"}                            # the warmed-up tasks moved to c
    assert out["a"].active == A_TASKS - {"0_4", "0_5"} and out["b"].active == B_TASKS
    assert len(out["c"].warmup) == 2 and out["c"].warmup <= B_TASKS     # the next two warm up
    assert needs_probing(out)


def test_scale_out_converges_to_balance():
    members, out = SCALE_OUT, assign(SCALE_OUT, ENDS, CFG)
    for _ in range(2):
        members = next_round(members, out)
        out = assign(members, ENDS, CFG)
    assert [len(out[m].active) for m in "abc"] == [4, 4, 4] and not needs_probing(out)
    assert assign(next_round(members, out), ENDS, CFG) == out           # and stays there


def test_exhausted_warmup_budget_leaves_the_task_on_its_caught_up_owner():
    out = assign(SCALE_OUT, ENDS, AssignorConfig(acceptable_recovery_lag=10, max_warmup_replicas=1))
    assert out["a"].active == A_TASKS and out["b"].active == B_TASKS
    assert out["c"].warmup == {"0_4"}


def test_task_stays_with_its_caught_up_previous_owner_rather_than_a_less_loaded_one():
    # balance sends 0_3, 0_4 (a's) and 0_8 (b's) to c, which is caught up on none of them
    a_tasks, b_tasks = F(f"0_{i}" for i in range(5)), F(f"0_{i}" for i in range(5, 9))
    members = [MemberInfo("a", {t: 9 for t in a_tasks}, previous_active=a_tasks),
               MemberInfo("b", {t: 9 for t in b_tasks | {"0_4"}}, previous_active=b_tasks), MemberInfo("c")]
    out = assign(members, {f"0_{i}": 9 for i in range(9)}, AssignorConfig(acceptable_recovery_lag=0))
    assert out["a"].active == a_tasks and out["b"].active == b_tasks   # 0_4 stays on a, though b has fewer
    assert out["c"].warmup == {"0_3", "0_4"}                            # budget 2: 0_8 waits on b


def test_task_without_caught_up_owner_stays_on_least_loaded_caught_up_member():
    # 0_3 is new; a and b are caught up on it, its balanced target c is not: b (fewer actives) keeps it
    members = [MemberInfo("a", {"0_0": 9, "0_1": 9, "0_3": 9}, previous_active=F({"0_0", "0_1"})),
               MemberInfo("b", {"0_2": 9, "0_3": 9}, previous_active=F({"0_2"})), MemberInfo("c")]
    out = assign(members, {"0_0": 9, "0_1": 9, "0_2": 9, "0_3": 9}, AssignorConfig(acceptable_recovery_lag=0))
    assert out["a"].active == {"0_0", "0_1"} and out["b"].active == {"0_2", "0_3"}
    assert out["c"].warmup == {"0_3"}


def test_standbys_avoid_the_warmup_member():
    out = assign(SCALE_OUT, ENDS, AssignorConfig(num_standby_replicas=1, acceptable_recovery_lag=10))
    assert out["c"].warmup == {"0_4", "0_5"} and not out["c"].standby & {"0_4", "0_5"}
    assert {"0_4", "0_5"} <= out["b"].standby


def test_needs_probing():
    assert not needs_probing({})
    assert not needs_probing({"a": MemberAssignment(F({"0_0"}), F({"0_1"}))})
    assert needs_probing({"a": MemberAssignment(F(), F(), F({"0_0"})), "b": MemberAssignment(F({"0_0"}), F())})


def test_a_failed_over_task_goes_to_its_standby_not_to_another_caught_up_member():
    """Both survivors are within acceptable_recovery_lag of the dead member's tasks, but only the standby
    holder has lag 0: the task goes there and replays nothing (values from a live crash run)."""
    i0 = MemberInfo("i0", {"0_0": 1149, "0_2": 1226, "0_4": 536, "0_1": 1228, "0_3": 1183, "0_5": 793},
                    frozenset({"0_0", "0_2"}), frozenset({"0_1", "0_3", "0_5"}))
    i1 = MemberInfo("i1", {"0_1": 1228, "0_3": 1183, "0_5": 514, "0_0": 1149, "0_2": 1226, "0_4": 792},
                    frozenset({"0_1", "0_3"}), frozenset({"0_0", "0_2", "0_4"}))
    ends = {"0_0": 1149, "0_1": 1228, "0_2": 1226, "0_3": 1183, "0_4": 792, "0_5": 793}
    out = assign([i0, i1], ends, AssignorConfig(1, 300, 2))
    assert "0_4" in out["i1"].active and "0_5" in out["i0"].active


def test_each_sub_topology_spreads_over_the_members():
    # a held all 8 tasks (2 stateless sub-topologies x 4 partitions); b joins. Balance moves 4 tasks, and each
    # member ends with 2 of each sub-topology, so the work of each (and a repartition hop) spans both.
    tasks = F(f"{s}_{p}" for s in (0, 1) for p in range(4))
    members = [MemberInfo("a", previous_active=tasks), MemberInfo("b")]
    out = assign(members, {t: 0 for t in tasks})
    for mid in ("a", "b"):
        assert sorted(t.split("_")[0] for t in out[mid].active) == ["0", "0", "1", "1"], out
    fresh = assign([MemberInfo("a"), MemberInfo("b")], {t: 0 for t in tasks})  # nobody held anything
    for mid in ("a", "b"):
        assert sorted(t.split("_")[0] for t in fresh[mid].active) == ["0", "0", "1", "1"], fresh
