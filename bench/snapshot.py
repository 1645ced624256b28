"""Snapshot package speeds on this machine: the RocksDB checkpoint of a store of N keys, then a full upload
and a cold download of its files, to a file:// directory and to a moto_server process on loopback.

    .venv/bin/python bench/snapshot.py [--keys 1000000] [--value-bytes 200] [--targets file,moto] [--json]
    .venv/bin/python bench/snapshot.py --checkpoint-after-writes [--json]

The second form measures what a checkpoint of a hotstate RocksDB store costs its caller (the stream thread)
after 0 to 48 MB of writes since the last one: called directly (it flushes the memtable itself) and after
a background flush (what ``RocksDBBackend.checkpoint`` arranges; docs/architecture.md, "Snapshots in the
runtime"). Median and max of 3 each.

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


def checkpoint_after_writes(work: Path, value_bytes: int = 200) -> dict:
    import statistics

    from hotstate.state.rocksdb_store import RocksDBBackend, _flushed

    b = RocksDBBackend("bench", str(work / "db"))
    offset = 0

    def write_mb(mb: float) -> None:
        nonlocal offset
        n = int(mb * 1e6 / (value_bytes + 16))
        blob = os.urandom(value_bytes * 1000)
        for start in range(0, n, 1000):
            entries = [(b"key-%012d" % ((start + j) * 7919 % 2_000_000), blob[j * value_bytes:(j + 1) * value_bytes])
                       for j in range(min(1000, n - start))]
            offset += len(entries)
            b.write(entries, offset)

    rows = {}
    try:
        write_mb(100)
        assert b.checkpoint(str(work / "first")) is False  # flushes in the background
        while not b.checkpoint(str(work / "first")):
            time.sleep(0.01)
        for mb in (0, 1, 4, 16, 48):
            direct, ahead = [], []
            for i in range(3):
                write_mb(mb)
                b.CHECKPOINT_FLUSH_AHEAD_BYTES = 1 << 40  # never defer: the caller pays the flush
                started = time.perf_counter()
                assert b.checkpoint(str(work / f"d{mb}-{i}"))
                direct.append(time.perf_counter() - started)
                write_mb(mb)
                b._db.flush(False)
                while not _flushed(b._db):
                    time.sleep(0.01)
                started = time.perf_counter()
                assert b.checkpoint(str(work / f"a{mb}-{i}"))
                ahead.append(time.perf_counter() - started)
                shutil.rmtree(work / f"d{mb}-{i}"), shutil.rmtree(work / f"a{mb}-{i}")
            rows[f"{mb}MB"] = {"direct_ms": [round(statistics.median(direct) * 1000, 1), round(max(direct) * 1000, 1)],
                               "after_background_flush_ms": [round(statistics.median(ahead) * 1000, 1),
                                                             round(max(ahead) * 1000, 1)]}
    finally:
        b.close()
    return {"checkpoint_after_writes (median, max)": rows, "load_avg_1m": round(os.getloadavg()[0], 1)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--keys", type=int, default=1_000_000)
    ap.add_argument("--value-bytes", type=int, default=200)
    ap.add_argument("--targets", default="file,moto")
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--checkpoint-after-writes", action="store_true")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="hotstate-snapbench-"))
    if args.checkpoint_after_writes:
        try:
            print(json.dumps(checkpoint_after_writes(work, args.value_bytes), indent=None if args.json else 2))
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return
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
