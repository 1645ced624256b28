"""Task lifecycle: the transition table, checked against every pair of states."""
from __future__ import annotations

import itertools

import pytest

from hotstate import serde
from hotstate.dsl.nodes import SourceNode
from hotstate.dsl.topology import SubTopology
from hotstate.errors import HotstateError, IllegalStateTransition
from hotstate.records import TopicPartition
from hotstate.runtime.task import Task, TaskState, task_id

S = TaskState
# Written out here, independently of runtime.task._TRANSITIONS, from the documented lifecycle.
ALLOWED = {
    (S.CREATED, S.RESTORING), (S.CREATED, S.SUSPENDED), (S.CREATED, S.CLOSED),
    (S.RESTORING, S.RUNNING), (S.RESTORING, S.SUSPENDED),
    (S.RUNNING, S.SUSPENDED),
    (S.SUSPENDED, S.RESTORING), (S.SUSPENDED, S.CLOSED),
}
# A shortest path from CREATED to each state, to put a task there through allowed moves only.
PATH = {
    S.CREATED: [],
    S.RESTORING: [S.RESTORING],
    S.RUNNING: [S.RESTORING, S.RUNNING],
    S.SUSPENDED: [S.SUSPENDED],
    S.CLOSED: [S.CLOSED],
}


def new_task(partition: int = 3) -> Task:
    return Task(SubTopology(2, [SourceNode("in", serde.STRING, serde.STRING)]), partition, {})


def task_in(state: TaskState) -> Task:
    t = new_task()
    for s in PATH[state]:
        t.transition(s)
    assert t.state is state
    return t


def test_new_task():
    t = new_task()
    assert t.state is S.CREATED
    assert t.id == "2_3" == task_id(2, 3)
    assert t.inputs == (TopicPartition("in", 3),) and t.partition == 3
    assert t.next_offsets == {} and t.committed_offsets == {}
    assert not t.needs_commit()


@pytest.mark.parametrize("frm, to", sorted(ALLOWED, key=lambda p: (p[0].value, p[1].value)))
def test_allowed_transition(frm, to):
    t = task_in(frm)
    t.transition(to)
    assert t.state is to


DISALLOWED = [(a, b) for a, b in itertools.product(S, S) if (a, b) not in ALLOWED]


@pytest.mark.parametrize("frm, to", DISALLOWED)
def test_disallowed_transition_raises_and_keeps_state(frm, to):
    t = task_in(frm)
    with pytest.raises(IllegalStateTransition) as ei:
        t.transition(to)
    assert t.state is frm
    assert frm.value in str(ei.value) and to.value in str(ei.value) and t.id in str(ei.value)


def test_table_size():
    # 5 states -> 25 pairs: 8 allowed, 17 disallowed (self-loops included)
    assert len(ALLOWED) == 8 and len(DISALLOWED) == 17


def test_illegal_transition_is_a_hotstate_error():
    assert issubclass(IllegalStateTransition, HotstateError)


def test_full_lifecycle_with_revival():
    t = new_task()
    for s in (S.RESTORING, S.RUNNING, S.SUSPENDED, S.RESTORING, S.RUNNING, S.SUSPENDED, S.CLOSED):
        t.transition(s)
    assert t.state is S.CLOSED


def test_needs_commit_tracks_offsets():
    t = new_task()
    tp = TopicPartition("in", 3)
    t.processed(tp, 9)
    assert t.needs_commit() and t.offsets_to_commit() == {tp: 10}
    t.mark_committed()
    assert not t.needs_commit() and t.committed_offsets == {tp: 10}
    t.processed(tp, 10)
    assert t.needs_commit()
    t.rewind_offsets()
    assert t.next_offsets == {tp: 10} and not t.needs_commit()
