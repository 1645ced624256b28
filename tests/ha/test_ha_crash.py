"""Issue 5, scenario 1: three instances with num_standby_replicas=1 and continuous input; one is killed with
SIGKILL. Its tasks become RUNNING on the instances that held their standbys (or, moved on by a later
rebalance, on an instance whose new standby caught up as far), replaying at most what the standby was missing
just before the kill (the lag it reported plus the records the victim wrote after that report); nothing is lost
(at-least-once) / nothing lost or doubled (exactly-once, read_committed)."""
from __future__ import annotations

import pytest

import ha_scenarios

pytestmark = [pytest.mark.integration, pytest.mark.chaos, pytest.mark.timeout(240)]


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once_v2"])
def test_crash_moves_tasks_to_their_standbys(ha_settings, assert_ha, guarantee):
    result = ha_scenarios.run_crash(ha_settings(guarantee=guarantee))
    assert_ha(result, min_tasks=1)
    for o in result.outages:
        assert o.bound is not None, f"task {o.task}: no standby bound applied ({o.note})"
        assert o.replayed <= o.bound, f"task {o.task} replayed {o.replayed} > {o.bound}: {o.note}"
    if guarantee == "exactly_once_v2":
        assert result.correctness["doubled"] == 0
    assert result.correctness["lost"] == 0
