"""kill -9 of a process while it ships snapshots (several seeds, random moments), on file:// and S3: no
manifest ever points to a missing object, and the next snapshot (by a new process) completes."""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hotstate.snapshot import Catalog, ObjectStore, Outcome, PartitionPaths, Restorer, Snapshotter, take_checkpoint
from snapshot_support import contents, open_db, request, write_keys

pytestmark = pytest.mark.chaos
CHILD = Path(__file__).with_name("snapshot_crash_child.py")


def _published_manifests_are_whole(objects) -> int:
    listing = Catalog(objects).list_partition(PartitionPaths("app", "counts", 0))
    assert all(m.manifest is not None for m in listing.manifests), [m.problem for m in listing.manifests]
    for ref in listing.manifests:
        for f in ref.manifest.files:
            info = listing.files.get(f.object)
            assert info is not None, f"{ref.name} names {f.object}, which is missing"
            assert info.size == f.size, f"{f.object} is {info.size} bytes, {ref.name} says {f.size}"
    return len(listing.manifests)


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_kill_during_upload_leaves_only_whole_manifests_and_the_next_snapshot_completes(store_url, tmp_path, seed):
    url, options = store_url
    rng = random.Random(seed)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(CHILD.parent), os.environ.get("PYTHONPATH", "")])}
    child = subprocess.Popen([sys.executable, str(CHILD), url, json.dumps(options), str(tmp_path / "db"),
                              str(tmp_path / "checkpoints")], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    time.sleep(rng.uniform(1.0, 4.0))  # the child needs ~1 s to start; then it uploads continuously
    child.send_signal(signal.SIGKILL)
    out, err = child.communicate(timeout=30)
    assert child.returncode == -signal.SIGKILL, err.decode()[-2000:]
    published = [line for line in out.decode().splitlines() if line.startswith("PUBLISHED")]

    objects = ObjectStore.open(url, options)
    manifests = _published_manifests_are_whole(objects)
    assert manifests >= min(1, len(published))

    # A new process takes over the same store (its lock died with the child) and snapshots it.
    db = open_db(tmp_path / "db")
    try:
        write_keys(db, 0, 1000, tag=b"after")
        s = Snapshotter(objects, "app", instance_id="next", retain=2)
        s.start()
        s.submit(request(take_checkpoint(db, tmp_path / "next").path, offset=10 ** 9))
        assert s.wait_idle(120)
        [result] = s.drain_results()
        s.close()
        assert result.outcome is Outcome.PUBLISHED, result
        _published_manifests_are_whole(objects)
        fetched = Restorer(objects, "app").fetch("counts", 0, None, tmp_path / "restored")
        assert fetched is not None and fetched.offset == 10 ** 9
        restored = open_db(fetched.path)
        try:
            assert contents(restored) == contents(db)
        finally:
            restored.close()
    finally:
        db.close()
