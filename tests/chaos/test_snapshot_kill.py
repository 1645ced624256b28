"""kill -9 of an app process while it publishes snapshots (seeded random moments, file:// and S3): no manifest
ever points to a missing object, the restarted process deletes the checkpoints the killed one left, and it
publishes new snapshots (of a newer epoch) of every partition."""
from __future__ import annotations

import json
import random
import signal
import time
from pathlib import Path

import pytest

from hotstate.snapshot import ObjectStore
from kafka_helpers import wait_for
from scenario import PARTITIONS, STORE, Feeder, Runner
from snapshot_store_helpers import check_manifests_whole

pytestmark = [pytest.mark.integration, pytest.mark.chaos, pytest.mark.timeout(240)]


def _vocabulary() -> list[str]:
    """Long, many distinct words: stores of a few MB, so uploads take a while."""
    return [f"w{i:06d}-" + "x" * 40 for i in range(30_000)]


def _manifests(objects, app_id) -> dict[int, list]:
    return {p: listing.manifests for p, listing in check_manifests_whole(objects, app_id, STORE, PARTITIONS).items()}


def _detail(objects, app_id, runner: Runner):
    """What a failed wait shows: each partition's manifests (epoch, offset, writer pid) and the runner's last
    warnings."""
    def show() -> str:
        published = {p: [(m.epoch, m.offset, m.manifest.writer.pid) for m in ms]
                     for p, ms in _manifests(objects, app_id).items()}
        runner.stderr.flush()
        lines = Path(runner.stderr.name).read_text().splitlines()
        warnings = [line for line in lines if " WARNING " in line or " ERROR " in line][-15:]
        return f"pid {runner.proc.pid}, manifests {published}, last warnings: {warnings}"
    return show


@pytest.mark.parametrize("seed", [1, 2])
def test_kill_while_snapshots_upload_leaves_whole_manifests_and_the_restart_publishes_again(kafka, tmp_path,
                                                                                          store_url, seed):
    url, options = store_url
    rng = random.Random(seed)
    source = kafka.create_topic(partitions=PARTITIONS, prefix="snapkill-words")
    sink = kafka.create_topic(partitions=PARTITIONS, prefix="snapkill-counts")
    app_id = kafka.app_id("snapkill")
    state = tmp_path / "state"
    snapshot_args = ["--snapshot-store", url, "--snapshot-options", json.dumps(options),
                     "--snapshot-interval-ms", "200"]
    objects = ObjectStore.open(url, options)
    feeder = Feeder(kafka, source, rng, _vocabulary(), 500)
    first = Runner(kafka, app_id, state, source, sink, tmp_path / "first.stderr", extra_args=snapshot_args)
    second = None
    try:
        feeder.start()
        first.wait_event("running", 90)
        wait_for(lambda: all(_manifests(objects, app_id).values()), "a snapshot of every partition", 60, 0.2,
                 detail=_detail(objects, app_id, first))
        time.sleep(rng.uniform(0.2, 2.0))  # snapshots go on every 200 ms: the kill lands during one
        first.kill()

        before = _manifests(objects, app_id)  # whole, checked
        old_epochs = {p: max(m.epoch for m in ms) for p, ms in before.items()}
        leftovers = state / app_id / ".snapshot-checkpoints"
        left = sorted(d.name for d in leftovers.iterdir()) if leftovers.is_dir() else []

        second = Runner(kafka, app_id, state, source, sink, tmp_path / "second.stderr", extra_args=snapshot_args)
        second.wait_event("running", 90)
        assert not any((leftovers / name).exists() for name in left), "the restart left old checkpoints behind"

        def republished() -> bool:
            now = _manifests(objects, app_id)
            return all(any(m.manifest.writer.pid == second.proc.pid for m in ms) for ms in now.values())

        wait_for(republished, "the restarted process to publish every partition again", 60, 0.2,
                 detail=_detail(objects, app_id, second))
        for p, ms in _manifests(objects, app_id).items():
            new = [m for m in ms if m.manifest.writer.pid == second.proc.pid]
            assert all(m.epoch > old_epochs[p] for m in new), f"partition {p}: new epochs {[m.epoch for m in new]}"
        feeder.stop()
        assert not feeder.errors, feeder.errors
        second.terminate()
        check_manifests_whole(objects, app_id, STORE, PARTITIONS)
    finally:
        feeder.stop()
        for r in (first, second):
            if r is not None:
                r.close_files()
