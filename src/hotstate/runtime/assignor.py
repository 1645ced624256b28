"""Task assignment as a pure function: members and tasks in, an assignment out. No I/O, no clock.

Kafka Streams' HighAvailabilityTaskAssignor (KIP-441), in small. Each member reports, per task, the
changelog offset its local state holds (active, standby, warm-up, or state left on disk). A task's *lag*
on a member is the task's changelog end minus that offset (the whole end if the member holds nothing;
a stateless task has end 0, so every member is caught up on it). A member is *caught up* on a task when
its lag is within ``acceptable_recovery_lag``.

Rules, in order:
1. Balanced target: every task gets exactly one active, and active counts differ by at most one. Tasks
   with the fewest caught-up members are placed first. Sticky: a task stays with its previous active
   owner while that owner has room and is caught up (or nobody is). Otherwise it goes to the caught-up
   member with room and the least lag (so a failover lands on the standby that replays least), then the
   fewest tasks of the same sub-topology, then the fewest actives; if no such member, to the member with room
   and the smallest lag (then the same tie-breaks). The sub-topologies' tasks are taken in turn, so a previous
   owner with room for only part of its tasks keeps some of each sub-topology.
2. Warm-ups: a task whose target is not caught up, while some member is, does not move there. It stays
   on its previous owner if that one is caught up, else goes to the caught-up member with the least lag,
   then the fewest actives; and while ``max_warmup_replicas`` (over the whole group) lasts, the target gets a *warm-up*
   replica of it: a standby that restores the task so that it can move there later. Balance is broken
   until then: ``needs_probing`` tells the group leader to schedule a probing rebalance, which moves
   the task once the warm-up has caught up (rule 1 then places it on the caught-up target).
3. Standbys: ``num_standby_replicas`` per task (at most members - 1) on members other than the active
   owner and the warm-up holder: least lag first, then previous standby holders, then fewest tasks
   (active, standby and warm-up), then member id.
A member never holds one task twice (active, standby, warm-up). A member reports the warm-ups it held as
``previous_standby``. Same input, same output, whatever the order of members or of the offsets.

The group leader runs it inside the group protocol (runtime/membership.py); see docs/architecture.md.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping


@dataclass(frozen=True)
class MemberInfo:
    member_id: str
    # task id -> changelog offset (summed over the task's stores) the member's local state holds
    task_offsets: Mapping[str, int] = field(default_factory=dict)
    previous_active: frozenset[str] = frozenset()
    previous_standby: frozenset[str] = frozenset()  # warm-ups included


@dataclass(frozen=True)
class AssignorConfig:
    num_standby_replicas: int = 0
    acceptable_recovery_lag: int = 10_000
    max_warmup_replicas: int = 2


@dataclass(frozen=True)
class MemberAssignment:
    active: frozenset[str]
    standby: frozenset[str]
    warmup: frozenset[str] = frozenset()


def lag(member: MemberInfo, task: str, end_offset: int) -> int:
    held = member.task_offsets.get(task)
    return end_offset if held is None else max(0, end_offset - held)


def needs_probing(assignment: Mapping[str, MemberAssignment]) -> bool:
    """True while some member has warm-ups: the leader schedules a probing rebalance to move their tasks."""
    return any(a.warmup for a in assignment.values())


def assign(members: list[MemberInfo], task_end_offsets: Mapping[str, int],
           config: AssignorConfig = AssignorConfig()) -> dict[str, MemberAssignment]:
    """``task_end_offsets``: task id -> changelog end offset (summed over the task's stores; 0 if stateless)."""
    if not members:
        return {}
    ids = sorted(m.member_id for m in members)
    if len(set(ids)) != len(ids):
        raise ValueError("member ids must be unique")
    by_id = {m.member_id: m for m in members}
    floor, extra = divmod(len(task_end_offsets), len(members))  # `extra` members may carry floor + 1
    active: dict[str, set[str]] = {mid: set() for mid in ids}

    def lag_of(mid: str, task: str) -> int:
        return lag(by_id[mid], task, task_end_offsets[task])

    caught_up = {task: {mid for mid in ids if lag_of(mid, task) <= config.acceptable_recovery_lag}
                 for task in task_end_offsets}
    previous_owner = {task: next((mid for mid in ids if task in by_id[mid].previous_active), None)
                      for task in task_end_offsets}
    # scarce first: a full owner keeps the tasks nobody else could take over at once; then the sub-topologies'
    # tasks in turn, so an owner with room for only some of its tasks keeps a mix of sub-topologies
    rank: dict[str, int] = {}  # a task's place among its sub-topology's tasks (by id)
    seen: dict[str, int] = {}
    for task in sorted(task_end_offsets):
        rank[task] = seen.get(_group(task), 0)
        seen[_group(task)] = rank[task] + 1
    tasks = sorted(task_end_offsets, key=lambda task: (len(caught_up[task]), rank[task], task))

    def has_room(mid: str) -> bool:
        n = len(active[mid])
        if n < floor:
            return True
        at_ceiling = sum(1 for other in ids if len(active[other]) > floor)
        return n == floor and at_ceiling < extra

    unplaced = []
    for task in tasks:  # rule 1, sticky
        owner = previous_owner[task]
        if owner is not None and has_room(owner) and (owner in caught_up[task] or not caught_up[task]):
            active[owner].add(task)
        else:
            unplaced.append(task)
    def same_group(mid: str, task: str) -> int:  # tasks of the task's sub-topology the member has
        group = _group(task)
        return sum(1 for t in active[mid] if _group(t) == group)

    for task in unplaced:  # rule 1, the rest
        open_ids = [mid for mid in ids if has_room(mid)]
        fresh = [mid for mid in open_ids if mid in caught_up[task]]
        # the least lag (a failover to a standby replays only the standby's lag), then the fewest tasks of the
        # same sub-topology (each sub-topology's work spreads over the members, as Kafka Streams balances it)
        best = min(fresh or open_ids, key=lambda mid: (lag_of(mid, task), same_group(mid, task), len(active[mid]), mid))
        active[best].add(task)

    warmup: dict[str, set[str]] = {mid: set() for mid in ids}
    budget = config.max_warmup_replicas
    for task in sorted(task_end_offsets):  # rule 2
        target = next(mid for mid in ids if task in active[mid])
        if target in caught_up[task] or not caught_up[task]:
            continue
        owner = previous_owner[task]
        keeper = owner if owner in caught_up[task] else min(caught_up[task],
                                                             key=lambda mid: (lag_of(mid, task), len(active[mid]), mid))
        active[target].remove(task)
        active[keeper].add(task)
        if budget > 0:
            warmup[target].add(task)
            budget -= 1

    standby: dict[str, set[str]] = {mid: set() for mid in ids}
    replicas = max(0, min(config.num_standby_replicas, len(ids) - 1))
    for task in sorted(task_end_offsets):  # rule 3
        candidates = [mid for mid in ids if task not in active[mid] and task not in warmup[mid]]
        candidates.sort(key=lambda mid: (lag_of(mid, task), task not in by_id[mid].previous_standby,
                                         len(active[mid]) + len(standby[mid]) + len(warmup[mid]), mid))
        for mid in candidates[:replicas]:
            standby[mid].add(task)
    return {mid: MemberAssignment(frozenset(active[mid]), frozenset(standby[mid]), frozenset(warmup[mid]))
            for mid in ids}


def _group(task: str) -> str:
    """The sub-topology of a task id ``<subtopology>_<partition>`` (docs/formats.md); the whole id otherwise."""
    return task.split("_", 1)[0]

