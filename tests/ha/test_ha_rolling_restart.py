"""Issue 5, scenario 2: three instances with static membership (group_instance_id) restart one after another:
a graceful close, then the same instance (same state dir, same group_instance_id) starts again at once, well
within session_timeout_ms. No task replays more than its delta (the changelog records written since its owner
was asked to stop), and nothing is lost."""
from __future__ import annotations

import pytest

import ha_scenarios

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]


def test_rolling_restart_replays_only_deltas(ha_settings, assert_ha):
    # a 10 s session: a restarted Python process is back well within it
    result = ha_scenarios.run_rolling(ha_settings(session_timeout_ms=10_000))
    assert_ha(result, min_tasks=3)
    for o in result.outages:
        assert o.bound is not None, f"task {o.task}: no bound applied ({o.note})"
        assert o.replayed <= o.bound, f"task {o.task} replayed {o.replayed} > its delta {o.bound}: {o.note}"
    restarts = result.info["restarts"]
    assert [r["instance"] for r in restarts] == ["i0", "i1", "i2"]
    assert all(r["exit_code"] == 0 for r in restarts), restarts
