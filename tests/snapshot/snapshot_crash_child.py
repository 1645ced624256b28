"""Run by test_snapshot_crash.py as its own process, then killed with SIGKILL at a random moment: writes a
store, checkpoints it and ships snapshots in a loop, printing each outcome.

    python snapshot_crash_child.py URL OPTIONS_JSON DB_DIR CHECKPOINT_ROOT
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from hotstate.snapshot import ObjectStore, Snapshotter, take_checkpoint
from snapshot_support import open_db, request, write_keys


def main() -> None:
    url, options, db_dir, cp_root = sys.argv[1], json.loads(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4])
    objects = ObjectStore.open(url, options)
    snapshotter = Snapshotter(objects, "app", instance_id="child", retain=2, gc_grace_s=0.5, listing_valid_s=0.2)
    snapshotter.start()
    db = open_db(db_dir)
    for round_ in range(1_000_000):
        write_keys(db, round_ * 20_000, 20_000, value_bytes=200, tag=b"r%d" % round_)
        db.flush()
        cp = take_checkpoint(db, cp_root / f"cp{round_}").path
        snapshotter.submit(request(cp, offset=(round_ + 1) * 20_000))
        snapshotter.wait_idle(60)
        for result in snapshotter.drain_results():
            print(result.outcome.value, result.request.changelog_offset, flush=True)


if __name__ == "__main__":
    main()
