"""A full disk under the state dir (issue #10): a small tmpfs made by the test holds the state dir and is
filled to the last byte. The app fails with a clear error that names the store's path, nothing is wiped,
and once space returns a restart resumes from the stores as they were: counts exact, nothing restored
beyond the delta. Needs root (it mounts a tmpfs), as the test machines and CI run."""
from __future__ import annotations

import os
import subprocess

import pytest

import hotstate
from kafka_helpers import RecordingListener, WordCount, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

STORE = "word-counts"


@pytest.fixture
def small_disk(tmp_path):
    mnt = tmp_path / "disk"
    mnt.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=32m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()}): this test needs root")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(disk) -> str:
    """Fills the filesystem to the last byte; returns the filler's path."""
    path = os.path.join(disk, "filler")
    chunk = b"\0" * (1 << 20)
    with open(path, "wb", buffering=0) as f:
        for size in (1 << 20, 4096, 1):
            try:
                while True:
                    f.write(chunk[:size])
            except OSError:
                continue
    return path


def counts_exact(app: hotstate.App, wc: WordCount) -> bool:
    store = app.store(STORE)
    return all(store.get(w) == c for w, c in wc.expected.items())


def store_files(state_dir, app_id: str) -> dict[str, list[str]]:
    root = os.path.join(state_dir, app_id)
    return {t: sorted(f for f in os.listdir(os.path.join(root, t, STORE)) if f.endswith((".sst", ".log")))
            for t in sorted(os.listdir(root)) if os.path.isdir(os.path.join(root, t, STORE))}


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once_v2"])
def test_a_full_disk_stops_the_app_clearly_and_a_restart_resumes_once_space_returns(kafka, small_disk, guarantee):
    state_dir = small_disk / "state"
    wc = WordCount(kafka, state_dir, seed=31, partitions=2)
    wc.produce(3000)
    wc.run()  # the stores hold every count; a clean close
    before = store_files(state_dir, wc.app_id)
    assert set(before) == {"0_0", "0_1"}

    filler = fill(small_disk)
    app = wc.app(processing_guarantee=guarantee)
    app.start()
    try:
        wait_for(lambda: app.state is hotstate.AppState.ERROR, "the app to fail on the full disk", 60,
                 detail=lambda: (app.state, app.tasks()))
        error = app.error()
        assert isinstance(error, (hotstate.StoreIOError, hotstate.StateDirError)), repr(error)
        assert "No space left on device" in str(error) and str(state_dir) in str(error), str(error)
    finally:
        app.close()
    assert store_files(state_dir, wc.app_id).keys() == before.keys()  # nothing was wiped

    os.remove(filler)
    wc.produce(500)
    listener = RecordingListener()
    app = wc.app(listener, processing_guarantee=guarantee)
    app.start()
    try:
        app.wait_until_running(timeout_s=60)
        wait_for(lambda: counts_exact(app, wc), "exact counts after the disk has room again", 60)
        assert listener.total_restored() == 0, listener.events  # the stores were kept: nothing to replay
    finally:
        assert app.close()
    wc.check_output()


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once_v2"])
def test_a_disk_that_fills_while_processing_loses_nothing(kafka, small_disk, guarantee):
    state_dir = small_disk / "state"
    wc = WordCount(kafka, state_dir, seed=32, partitions=2, vocabulary=20_000)
    wc.produce(2000)
    app = wc.app(processing_guarantee=guarantee)
    app.start()
    try:
        app.wait_until_running(timeout_s=60)
        wait_for(lambda: counts_exact(app, wc), "the first counts", 60)
        filler = fill(small_disk)
        for _ in range(40):  # new keys until a store write meets the full disk
            wc.produce(5000)
            if app.state is hotstate.AppState.ERROR:
                break
        wait_for(lambda: app.state is hotstate.AppState.ERROR, "the app to fail on the full disk", 60,
                 detail=lambda: (app.state, app.metrics()["records_processed_total"]))
        error = app.error()
        assert isinstance(error, hotstate.StoreIOError), repr(error)
        assert "No space left on device" in str(error) and str(state_dir) in str(error), str(error)
    finally:
        app.close()
    os.remove(filler)
    app = wc.app(processing_guarantee=guarantee)
    app.start()
    try:
        app.wait_until_running(timeout_s=60)
        if guarantee == "exactly_once_v2":
            wait_for(lambda: counts_exact(app, wc), "exact counts after the disk has room again", 90)
        else:  # at-least-once: the input since the last commit may be counted twice, but nothing is lost
            wait_for(lambda: counts_at_least(app, wc), "every record counted after the disk has room again", 90)
    finally:
        assert app.close()
    if guarantee == "exactly_once_v2":
        wc.check_output()
    else:
        out = kafka.read_table(wc.sink)
        assert all(out.get(w, 0) >= c for w, c in wc.expected.items())


def counts_at_least(app: hotstate.App, wc: WordCount) -> bool:
    store = app.store(STORE)
    return all((store.get(w) or 0) >= c for w, c in wc.expected.items())
