"""Task assignment as a pure function: members and tasks in, an assignment out. No I/O, no clock.

Each member reports, per task, the changelog offset its local state holds (active, standby, or state
left on disk). A task's *lag* on a member is the task's changelog end minus that offset (the whole end
if the member holds nothing). A member is *caught up* on a task when its lag is within
``acceptable_recovery_lag``.

Rules, in order:
1. Every task gets exactly one active; active counts differ by at most one between members.
2. Sticky: a task stays with its previous active owner if that owner is caught up (or nobody is).
3. Otherwise the task goes to the caught-up member with the fewest actives; if none is caught up, to the
   member with the smallest lag (fewest actives, then member id, break ties).
4. Standbys (``num_standby_replicas`` per task) go to other members, least lag first, then fewest tasks.

Warm-up replicas and probing rebalances (``max_warmup_replicas``) build on this in a later step.
Today the membership carries librdkafka's built-in cooperative-sticky assignor; see docs/architecture.md.
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
    previous_standby: frozenset[str] = frozenset()


@dataclass(frozen=True)
class AssignorConfig:
    num_standby_replicas: int = 0
    acceptable_recovery_lag: int = 10_000


@dataclass(frozen=True)
class MemberAssignment:
    active: frozenset[str]
    standby: frozenset[str]


def lag(member: MemberInfo, task: str, end_offset: int) -> int:
    held = member.task_offsets.get(task)
    return end_offset if held is None else max(0, end_offset - held)


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
    tasks = sorted(task_end_offsets)

    def has_room(mid: str) -> bool:
        n = len(active[mid])
        if n < floor:
            return True
        at_ceiling = sum(1 for other in ids if len(active[other]) > floor)
        return n == floor and at_ceiling < extra

    def caught_up(mid: str, task: str) -> bool:
        return lag(by_id[mid], task, task_end_offsets[task]) <= config.acceptable_recovery_lag

    unplaced = []
    for task in tasks:  # rule 2: sticky
        owner = next((mid for mid in ids if task in by_id[mid].previous_active), None)
        anyone_caught_up = any(caught_up(mid, task) for mid in ids)
        if owner is not None and has_room(owner) and (caught_up(owner, task) or not anyone_caught_up):
            active[owner].add(task)
        else:
            unplaced.append(task)
    for task in unplaced:  # rule 3
        open_ids = [mid for mid in ids if has_room(mid)]
        fresh = [mid for mid in open_ids if caught_up(mid, task)]
        if fresh:
            best = min(fresh, key=lambda mid: (len(active[mid]), mid))
        else:
            best = min(open_ids, key=lambda mid: (lag(by_id[mid], task, task_end_offsets[task]), len(active[mid]), mid))
        active[best].add(task)

    standby: dict[str, set[str]] = {mid: set() for mid in ids}
    replicas = min(config.num_standby_replicas, len(ids) - 1)
    for task in tasks:  # rule 4
        owner = next(mid for mid in ids if task in active[mid])
        candidates = [mid for mid in ids if mid != owner]
        candidates.sort(key=lambda mid: (lag(by_id[mid], task, task_end_offsets[task]),
                                         len(active[mid]) + len(standby[mid]), mid))
        for mid in candidates[:replicas]:
            standby[mid].add(task)
    return {mid: MemberAssignment(frozenset(active[mid]), frozenset(standby[mid])) for mid in ids}
