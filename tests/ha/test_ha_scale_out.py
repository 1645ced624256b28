"""Issue 5, scenario 3: a fourth instance joins three. A task moves to it only after its warm-up there caught
up: on the new instance it is first a standby / warm-up, it becomes active only once its reported lag was
within acceptable_recovery_lag, and its restore on activation replays at most that much."""
from __future__ import annotations

import pytest

import ha_scenarios

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]


@pytest.mark.parametrize("standbys", [0, 1])
def test_scale_out_moves_tasks_after_warm_up(ha_settings, assert_ha, standbys):
    settings = ha_settings(num_standby_replicas=standbys)
    result = ha_scenarios.run_scale_out(settings)
    summary = assert_ha(result, min_tasks=1)
    assert result.info["changelog_partition_min"] > settings.acceptable_recovery_lag, (
        "the test needs changelog partitions longer than acceptable_recovery_lag", result.info)
    assert not result.info.get("moved_without_warm_up"), result.info
    to_new = [o for o in result.outages if o.new_owner == "i3#0"] + [
        m for o in result.outages for m in o.later_moves if m["to"] == "i3#0"]
    assert to_new, summary
    for o in result.outages:
        moves = [(o.new_owner, o.replayed, o.bound, o.note)] + [
            (m["to"], m["replayed"], m.get("bound"), m.get("note")) for m in o.later_moves]
        for to, replayed, bound, note in moves:
            if to == "i3#0":
                assert bound is not None and replayed <= bound, (o.task, replayed, bound, note)
