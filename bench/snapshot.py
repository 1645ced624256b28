"""Snapshot package speeds on this machine: the RocksDB checkpoint of a store of N keys, then a full upload
and a cold download of its files, to a file:// directory and to a moto_server process on loopback.

    .venv/bin/python bench/snapshot.py [--keys 1000000] [--value-bytes 200] [--targets file,moto] [--json]

Values are random bytes (incompressible), so N x value bytes is about the SST bytes shipped. moto keeps
objects in memory in one Python process: its numbers are moto's, not S3's (the issue's restore benchmark
uses a faster server). No broker is needed.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from rocksdict import Options, Rdict, WriteBatch

from hotstate.snapshot import ObjectStore, Outcome, Restorer, SnapshotRequest, Snapshotter, take_checkpoint

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from snapshot_store_helpers import MotoServer, free_port  # noqa: E402


def build_store(path: Path, keys: int, value_bytes: int) -> Rdict:
    db = Rdict(str(path), Options(raw_mode=True))
    batch_keys = 10_000
    for start in range(0, keys, batch_keys):
        wb = WriteBatch(raw_mode=True)
        blob = os.urandom(value_bytes * batch_keys)
        for i in range(start, min(keys, start + batch_keys)):
            j = i - start
            wb.put(b"key-%012d" % i, blob[j * value_bytes:(j + 1) * value_bytes])
        db.write(wb)
    return db


def ship_and_fetch(objects: ObjectStore, cp: Path, work: Path, concurrency: int) -> dict:
    s = Snapshotter(objects, "bench", instance_id="bench", upload_concurrency=concurrency)
    s.start()
    size = sum(p.stat().st_size for p in cp.iterdir())
    started = time.perf_counter()
    s.submit(SnapshotRequest("store", "0_0", "bench-store-changelog", 0, 1, 1, cp))
    if not s.wait_idle(3600):
        raise RuntimeError("upload did not finish")
    upload_s = time.perf_counter() - started
    [result] = s.drain_results()
    s.close()
    if result.outcome is not Outcome.PUBLISHED:
        raise RuntimeError(f"upload failed: {result}")
    restorer = Restorer(objects, "bench", concurrency=concurrency)
    fetched = restorer.fetch("store", 0, None, work / "restored")
    if fetched is None:
        raise RuntimeError("download failed")
    shutil.rmtree(fetched.path)
    return {"bytes": size, "files": len(list(objects.list("bench/store/0/files/"))),
            "upload_s": round(upload_s, 2), "upload_MB_s": round(result.uploaded_bytes / upload_s / 1e6, 1),
            "download_s": round(fetched.seconds, 2), "download_MB_s": round(fetched.num_bytes / fetched.seconds / 1e6, 1)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--keys", type=int, default=1_000_000)
    ap.add_argument("--value-bytes", type=int, default=200)
    ap.add_argument("--targets", default="file,moto")
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="hotstate-snapbench-"))
    rows = {}
    try:
        started = time.perf_counter()
        db = build_store(work / "db", args.keys, args.value_bytes)
        rows["build_s"] = round(time.perf_counter() - started, 1)
        checkpoints = []
        for i in range(3):  # the first flushes the memtable; later ones only link files
            taken = take_checkpoint(db, work / f"cp{i}")
            checkpoints.append(taken)
        rows["checkpoint"] = {"keys": args.keys, "files": checkpoints[0].files, "bytes": checkpoints[0].num_bytes,
                              "first_s": round(checkpoints[0].seconds, 3),
                              "next_s": [round(c.seconds, 4) for c in checkpoints[1:]]}
        db.close()
        for target in args.targets.split(","):
            cp = checkpoints.pop(0).path
            if target == "file":
                rows["file"] = ship_and_fetch(ObjectStore.open(f"file://{work / 'store'}"), cp, work, args.concurrency)
            elif target == "moto":
                os.environ.setdefault("AWS_ACCESS_KEY_ID", "AKIABENCH")
                os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
                server = MotoServer(free_port())
                server.start()
                try:
                    server.create_bucket("bench")
                    objects = ObjectStore.open("s3://bench/snaps", server.options())
                    rows["moto"] = ship_and_fetch(objects, cp, work, args.concurrency)
                finally:
                    server.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(rows, indent=None if args.json else 2))


if __name__ == "__main__":
    main()
