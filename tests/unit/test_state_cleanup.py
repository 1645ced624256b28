"""state_cleanup_delay_ms: the state of a task that left stays on disk that long, then the cleaner deletes it."""
from __future__ import annotations

import os

from hotstate.state.state_dir import StateDirectory


def make(tmp_path, *tasks):
    sd = StateDirectory(str(tmp_path), "app")
    for tid in tasks:
        os.makedirs(os.path.join(sd.root, tid, "store"))
    return sd


def age(sd, tid, seconds_ago, now):
    path = os.path.join(sd.root, tid)
    os.utime(path, (now - seconds_ago, now - seconds_ago))


def test_only_old_directories_of_tasks_not_running_here_are_deleted(tmp_path):
    sd = make(tmp_path, "0_0", "0_1", "0_2", "1_0")
    (tmp_path / "app" / "process-id").write_text("x")  # not a task: never touched
    now = 1_000_000.0
    age(sd, "0_0", 700, now)  # left 700 s ago: past a 600 s delay
    age(sd, "0_1", 100, now)  # left 100 s ago: kept for a comeback
    age(sd, "0_2", 9_999, now)  # old, but running here again
    age(sd, "1_0", 601, now)
    removed = sd.clean_obsolete({"0_2"}, delay_ms=600_000, now_s=now)
    assert removed == ["0_0", "1_0"]
    assert sd.task_dirs() == ["0_1", "0_2"]
    assert (tmp_path / "app" / "process-id").exists()


def test_mark_closed_restarts_the_delay(tmp_path):
    sd = make(tmp_path, "0_0")
    now = os.stat(os.path.join(sd.root, "0_0")).st_mtime
    age(sd, "0_0", 3_600, now)
    sd.mark_closed("0_0")  # the task just left this instance
    assert sd.clean_obsolete(set(), delay_ms=600_000) == []
    assert sd.clean_obsolete(set(), delay_ms=600_000, now_s=now + 601) == ["0_0"]


def test_no_state_dir_yet_means_nothing_to_clean(tmp_path):
    sd = StateDirectory(str(tmp_path / "missing"), "app")
    assert sd.task_dirs() == [] and sd.clean_obsolete(set(), delay_ms=1) == []
