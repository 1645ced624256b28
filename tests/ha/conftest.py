"""Fixtures of the high-availability scenario tests (issue 5): several app processes on the real broker.

The scenarios live in bench/ha_scenarios.py (shared with the benchmark bench/ha.py); these tests run them at
small sizes and assert behaviour only - replay bounds, nothing lost or doubled, warm-up before a move - never
timings. ``ha_settings(**overrides)`` makes the settings; ``assert_ha(result)`` checks a result and prints its
summary on failure. The broker fixtures come from tests/kafka_helpers.py."""
from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

import pytest

_TESTS = Path(__file__).resolve().parents[1]
_BENCH = _TESTS.parent / "bench"
if str(_TESTS) not in sys.path:
    sys.path.insert(0, str(_TESTS))
if str(_BENCH) not in sys.path:  # appended: bench's modules must not shadow anything the other suites import
    sys.path.append(str(_BENCH))

import ha_scenarios  # noqa: E402  (bench/ha_scenarios.py)
from kafka_helpers import admin, bootstrap  # noqa: E402,F401

log = logging.getLogger("tests.ha")

# Small but meaningful: 6 partitions, 3,000 keys, a preload of 12,000 records (about 2,000 per changelog
# partition), so an instance without a task's state is never within acceptable_recovery_lag (300) of it and
# every move has to go through a standby or a warm-up. A kill -9 is noticed after the 6 s session timeout.
SMALL = dict(partitions=6, keys=3_000, updates_per_key=3.0, feed_rate=600.0, acceptable_recovery_lag=300,
             num_standby_replicas=1, max_warmup_replicas=2, session_timeout_ms=6_000, commit_interval_ms=100,
             warm_s=1.5, after_s=1.0, settle_timeout_s=60.0)


@pytest.fixture
def ha_settings(bootstrap: str):
    """Settings for one scenario. The instances' state dirs, stderr and events (``<instance>.events.jsonl``)
    go to a temp dir (HOTSTATE_HA_WORK_DIR, else the system's) that is deleted when the scenario passes and
    kept, named in the failure, when it does not (pytest's own tmp dirs are rotated away too soon)."""
    def make(**overrides) -> ha_scenarios.Settings:
        values = {**SMALL, **overrides}
        return ha_scenarios.Settings(bootstrap=bootstrap, work_dir=os.environ.get("HOTSTATE_HA_WORK_DIR"),
                                     log=lambda msg: log.warning("%s", msg), **values)
    return make


@pytest.fixture
def assert_ha():
    def check(result: ha_scenarios.ScenarioResult, min_tasks: int = 1) -> dict:
        summary = result.summary()
        text = json.dumps(summary, indent=1, default=str)
        sys.stderr.write(f"{result.scenario} summary:\n{text}\n")
        where = f"\n(logs and events: {result.logs})" if result.logs else ""
        assert not result.violations, f"{len(result.violations)} violations: {result.violations}{where}\n{text}"
        assert result.correct, f"output wrong: {result.correctness}{where}\n{text}"
        assert len(result.outages) >= min_tasks, f"expected at least {min_tasks} affected tasks\n{text}"
        assert not summary["not_running"], f"tasks never RUNNING again: {summary['not_running']}\n{text}"
        return summary
    return check
