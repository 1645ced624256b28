"""Properties of the pure task assignor over random groups: 1-6 members, 0-30 tasks, random changelog ends,
local offsets, previous ownership and configs. Examples are in test_assignor.py."""
from __future__ import annotations

import math
from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from hotstate.runtime.assignor import AssignorConfig, MemberAssignment, MemberInfo, assign, lag, needs_probing

PROPERTY = settings(max_examples=100, deadline=None)

Group = tuple[list[MemberInfo], dict[str, int], AssignorConfig]


@st.composite
def groups(draw, min_warmups: int = 0) -> Group:
    ids = [f"m{i}" for i in range(draw(st.integers(1, 6)))]
    tasks = [f"0_{i}" for i in range(draw(st.integers(0, 30)))]
    ends = dict(zip(tasks, draw(st.lists(st.sampled_from([0, 0, 500, 1000]) | st.integers(0, 1000),
                                         min_size=len(tasks), max_size=len(tasks)))))
    owners = draw(st.lists(st.none() | st.sampled_from(ids), min_size=len(tasks), max_size=len(tasks)))
    members = []
    for mid in ids:
        offsets = draw(st.dictionaries(st.sampled_from(tasks), st.integers(0, 1000))) if tasks else {}
        active = frozenset(t for t, owner in zip(tasks, owners) if owner == mid)
        standby = frozenset(draw(st.sets(st.sampled_from(tasks))) if tasks else ()) - active
        members.append(MemberInfo(mid, offsets, active, standby))
    cfg = AssignorConfig(num_standby_replicas=draw(st.integers(0, 3)),
                         acceptable_recovery_lag=draw(st.sampled_from([0, 10, 300, 1000])),
                         max_warmup_replicas=draw(st.integers(min_warmups, 4)))
    return list(draw(st.permutations(members))), ends, cfg


def all_caught_up(members: list[MemberInfo], ends: dict[str, int]) -> list[MemberInfo]:
    return [replace(m, task_offsets=dict(ends)) for m in members]


def caught_up(member: MemberInfo, task: str, ends: dict[str, int], cfg: AssignorConfig) -> bool:
    return lag(member, task, ends[task]) <= cfg.acceptable_recovery_lag


def owner_of(out: dict[str, MemberAssignment], task: str) -> str:
    (owner,) = [mid for mid, a in out.items() if task in a.active]
    return owner


def is_balanced(out: dict[str, MemberAssignment]) -> bool:
    counts = [len(a.active) for a in out.values()]
    return max(counts) - min(counts) <= 1


def assert_actives_on_caught_up_members(members: list[MemberInfo], ends: dict[str, int], cfg: AssignorConfig,
                                        out: dict[str, MemberAssignment]) -> None:
    by_id = {m.member_id: m for m in members}
    for t in ends:
        if any(caught_up(m, t, ends, cfg) for m in members):
            assert caught_up(by_id[owner_of(out, t)], t, ends, cfg), t


@PROPERTY
@given(groups())
def test_every_task_has_exactly_one_active(group: Group):
    members, ends, cfg = group
    out = assign(members, ends, cfg)
    assert set(out) == {m.member_id for m in members}
    assert sorted(t for a in out.values() for t in a.active) == sorted(ends)


@PROPERTY
@given(groups())
def test_no_member_holds_a_task_twice(group: Group):
    members, ends, cfg = group
    for a in assign(members, ends, cfg).values():
        assert not (a.active & a.standby or a.active & a.warmup or a.standby & a.warmup)
        assert a.active | a.standby | a.warmup <= set(ends)


@PROPERTY
@given(groups())
def test_standbys_on_other_members_than_active_and_warmup(group: Group):
    members, ends, cfg = group
    out = assign(members, ends, cfg)
    for t in ends:
        warming = [mid for mid, a in out.items() if t in a.warmup]
        holders = [mid for mid, a in out.items() if t in a.standby]
        assert owner_of(out, t) not in holders + warming and len(warming) <= 1
        assert len(holders) == min(cfg.num_standby_replicas, len(members) - 1 - len(warming))


@PROPERTY
@given(groups())
def test_warmups_within_budget_only_where_a_caught_up_member_keeps_the_task(group: Group):
    members, ends, cfg = group
    out = assign(members, ends, cfg)
    by_id = {m.member_id: m for m in members}
    assert sum(len(a.warmup) for a in out.values()) <= cfg.max_warmup_replicas
    for mid, a in out.items():
        for t in a.warmup:
            assert not caught_up(by_id[mid], t, ends, cfg)
            assert caught_up(by_id[owner_of(out, t)], t, ends, cfg)


@PROPERTY
@given(groups())
def test_active_never_on_lagging_member_while_a_caught_up_one_exists(group: Group):
    members, ends, cfg = group
    assert_actives_on_caught_up_members(members, ends, cfg, assign(members, ends, cfg))


@PROPERTY
@given(groups())
def test_balanced_when_every_member_is_caught_up(group: Group):
    members, ends, cfg = group
    out = assign(all_caught_up(members, ends), ends, cfg)
    assert is_balanced(out) and not needs_probing(out)


@PROPERTY
@given(groups(min_warmups=1))
def test_unbalanced_only_while_probing(group: Group):
    members, ends, cfg = group
    out = assign(members, ends, cfg)
    assert is_balanced(out) or needs_probing(out)


@PROPERTY
@given(groups())
def test_caught_up_owner_keeps_its_tasks_when_balance_allows(group: Group):
    members, ends, cfg = group
    # only members with at most floor(tasks / members) previous tasks are sure to keep them all
    out = assign(members, ends, cfg)
    floor = len(ends) // len(members)
    for m in members:
        if len(m.previous_active) <= floor:
            kept = {t for t in m.previous_active if caught_up(m, t, ends, cfg)}
            assert kept <= out[m.member_id].active, m.member_id


@PROPERTY
@given(groups(), st.data())
def test_nothing_moves_from_a_balanced_caught_up_assignment(group: Group, data: st.DataObject):
    members, ends, cfg = group
    ids = [m.member_id for m in members]
    dealt = data.draw(st.permutations(sorted(ends)))   # round robin: counts differ by at most one
    previous = {mid: frozenset(dealt[i::len(ids)]) for i, mid in enumerate(ids)}
    members = [replace(m, previous_active=previous[m.member_id], previous_standby=m.previous_standby - previous[m.member_id])
               for m in all_caught_up(members, ends)]
    out = assign(members, ends, cfg)
    assert {mid: a.active for mid, a in out.items()} == previous and not needs_probing(out)


@PROPERTY
@given(groups())
def test_deterministic_whatever_the_input_order(group: Group):
    members, ends, cfg = group
    shuffled = [replace(m, task_offsets=dict(reversed(m.task_offsets.items()))) for m in reversed(members)]
    assert assign(shuffled, dict(reversed(ends.items())), cfg) == assign(members, ends, cfg)
    assert assign(sorted(members, key=lambda m: m.member_id), ends, cfg) == assign(members, ends, cfg)


def next_round(members: list[MemberInfo], out: dict[str, MemberAssignment], ends: dict[str, int]) -> list[MemberInfo]:
    """Members after a probing interval: whatever they held (warm-ups too) has caught up with the end;
    state of tasks they no longer hold stays on disk. Warm-ups are reported as standbys."""
    reported = []
    for m in members:
        a = out[m.member_id]
        offsets = {**m.task_offsets, **{t: ends[t] for t in a.active | a.standby | a.warmup}}
        reported.append(MemberInfo(m.member_id, offsets, a.active, a.standby | a.warmup))
    return reported


@PROPERTY
@given(groups(min_warmups=1))
def test_probing_rebalances_converge_to_balance(group: Group):
    members, ends, cfg = group
    out = assign(members, ends, cfg)
    # at most every task moves, max_warmup_replicas of them per probing rebalance
    for _ in range(math.ceil(len(ends) / cfg.max_warmup_replicas) + 1):
        if not needs_probing(out):
            break
        members = next_round(members, out, ends)
        out = assign(members, ends, cfg)
        assert_actives_on_caught_up_members(members, ends, cfg, out)
    assert not needs_probing(out) and is_balanced(out)
    assert assign(next_round(members, out, ends), ends, cfg) == out   # a fixed point: nothing moves any more
