"""kill -9 of an at-least-once word-count app loses no update, and a restart replays only the changelog tail.

The scenario (tests/chaos/scenario.py) kills the app HOTSTATE_CHAOS_KILLS times (default 5) at seeded-random
moments while it processes and commits. At-least-once: every word's count (store and output topic) is at
least its true count; duplicates are allowed."""
from __future__ import annotations

import logging
import os

import pytest

from scenario import run_kill_scenario

pytestmark = [pytest.mark.integration, pytest.mark.chaos, pytest.mark.timeout(1800)]

log = logging.getLogger("tests.chaos")

KILLS = int(os.environ.get("HOTSTATE_CHAOS_KILLS", "5"))
SEED = int(os.environ.get("HOTSTATE_CHAOS_SEED", "4"))


def test_kill_9_loses_no_update_and_restarts_replay_only_the_tail(kafka, tmp_state_dir, tmp_path):
    r = run_kill_scenario(kafka, tmp_state_dir, tmp_path, "at_least_once", KILLS, SEED)
    lost = {w: (r.out.get(w), c) for w, c in r.truth.items() if (r.out.get(w) or 0) < c}
    assert not lost, f"{len(lost)} words lost updates in the output (got, true): {dict(list(lost.items())[:10])}"
    assert set(r.out) == set(r.truth)
    lost = {w: (r.store[w], c) for w, c in r.truth.items() if (r.store[w] or 0) < c}
    assert not lost, f"{len(lost)} words lost updates in the store (got, true): {dict(list(lost.items())[:10])}"
    assert r.store == r.out, "the store and the latest output per word disagree"
    print(r.summary("at_least_once"))
