"""Punctuation schedules without a task: Kafka Streams' PunctuationQueue / PunctuationSchedule semantics
(hotstate/processor.py), and the checks of schedule()'s arguments."""
from __future__ import annotations

import datetime

import pytest

from hotstate.processor import PunctuationQueue, PunctuationSchedule, check_interval


def queue_with(*schedules):
    q = PunctuationQueue()
    cancellables = [q.add(s) for s in schedules]
    return q, cancellables


def run(q, now):
    fired = []
    q.punctuate(now, lambda s, at: fired.append((s.callback, at)))
    return fired


def test_stream_time_schedule_aligned_to_zero_fires_once_per_advance():
    q, _ = queue_with(PunctuationSchedule(0, 10, "p"))
    assert run(q, -1) == []  # stream time unknown: nothing
    assert run(q, 5) == [("p", 5)]  # the first record fires it at once (aligned to 0)
    assert run(q, 9) == []  # next is 10
    assert run(q, 10) == [("p", 10)]
    assert run(q, 10) == []  # no advance, no punctuation


def test_several_skipped_intervals_fire_once_and_realign():
    q, _ = queue_with(PunctuationSchedule(0, 10, "p"))
    run(q, 0)
    # Stream time jumps from 0 to 47: 10, 20, 30 and 40 were skipped; one punctuation, at 47.
    assert run(q, 47) == [("p", 47)]
    assert run(q, 49) == []  # the next one is at 50 (the grid of the interval), not 47 + 10
    assert run(q, 50) == [("p", 50)]
    assert run(q, 59) == []
    assert run(q, 60) == [("p", 60)]


def test_wall_clock_style_schedule_starts_one_interval_out():
    q, _ = queue_with(PunctuationSchedule(1_000 + 100, 100, "w"))  # scheduled at 1000, every 100
    assert run(q, 1_099) == []
    assert run(q, 1_100) == [("w", 1_100)]
    assert run(q, 1_450) == [("w", 1_450)]  # fell behind by 3 intervals: once
    assert run(q, 1_499) == []
    assert run(q, 1_500) == [("w", 1_500)]


def test_due_schedules_fire_in_time_order_then_by_scheduling_order():
    q, _ = queue_with(PunctuationSchedule(20, 20, "b"), PunctuationSchedule(0, 7, "a"), PunctuationSchedule(20, 5, "c"))
    assert run(q, 25) == [("a", 25), ("b", 25), ("c", 25)]
    assert q.due(28) and not q.due(27)  # a: 28 (grid of 7), c: 30, b: 40


def test_cancel_stops_a_schedule_before_it_fires():
    q, (a, b) = queue_with(PunctuationSchedule(0, 10, "a"), PunctuationSchedule(0, 10, "b"))
    a.cancel()
    assert run(q, 5) == [("b", 5)]
    assert run(q, 100) == [("b", 100)]
    assert len(q) == 1


def test_cancel_from_inside_the_callback_ends_the_schedule():
    q = PunctuationQueue()
    fired = []

    def fire(schedule, at):
        fired.append(at)
        schedule.cancellable.cancel()

    q.add(PunctuationSchedule(0, 10, "p"))
    assert q.punctuate(3, fire)
    assert not q.punctuate(1_000, fire)
    assert fired == [3] and len(q) == 0 and not q.due(10**9)


def test_a_schedule_added_by_a_callback_fires_when_due():
    q = PunctuationQueue()
    fired = []

    def fire(schedule, at):
        fired.append(schedule.callback)
        if schedule.callback == "first":
            q.add(PunctuationSchedule(0, 10, "added"))

    q.add(PunctuationSchedule(0, 10, "first"))
    q.punctuate(5, fire)
    assert fired == ["first", "added"]


def test_a_failing_callback_is_rescheduled_and_the_error_propagates():
    q, _ = queue_with(PunctuationSchedule(0, 10, "p"))

    def boom(schedule, at):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        q.punctuate(5, boom)
    assert not q.due(9) and q.due(10)


@pytest.mark.parametrize("bad", [0, -5, True, 1.5, "10", None, datetime.timedelta(microseconds=10)])
def test_bad_intervals_are_refused(bad):
    with pytest.raises(ValueError, match="interval"):
        check_interval(bad)


def test_intervals_in_ms_or_timedelta():
    assert check_interval(1) == 1
    assert check_interval(datetime.timedelta(seconds=2)) == 2_000
