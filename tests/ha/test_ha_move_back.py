"""Issue 5, scenario 4: a task that moved away and comes back within state_cleanup_delay_ms replays only its
delta. Instance a runs every task; b joins and takes some (after warm-ups); b closes gracefully (it leaves the
group) and its tasks go back to a, which kept their state on disk: each restore there starts at or above the
offset a's store held when the task left, and replays at most the records b wrote meanwhile."""
from __future__ import annotations

import pytest

import ha_scenarios

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]


def test_task_moved_away_and_back_replays_only_its_delta(ha_settings, assert_ha):
    result = ha_scenarios.run_move_back(ha_settings(num_standby_replicas=0, max_warmup_replicas=3))
    assert_ha(result, min_tasks=1)
    for o in result.outages:
        assert o.new_owner == "a#0", (o.task, o.new_owner)
        assert o.bound is not None, f"task {o.task}: {o.note}"
        assert o.replayed <= o.bound, f"task {o.task} replayed {o.replayed} > its delta {o.bound}: {o.note}"
