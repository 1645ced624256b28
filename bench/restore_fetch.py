"""The snapshot download alone (``Restorer.fetch``), without Kafka or RocksDB: for profiling and comparing download
paths quickly (issue #9). Starts SeaweedFS on loopback (bench/seaweedfs.py), publishes ``--partitions`` synthetic
snapshots shaped like a compacted store partition's (``--mb-per-partition``: SST files of 64 MB and one smaller, plus
4 small files; random bytes), then runs ``--repeat`` rounds of: every partition's ``Restorer.fetch`` at once
(as the changelog reader's download pool does), and the S3 floor (the same objects, 16 whole-object GETs in
flight, no checksum). Prints one JSON line per round: wall seconds, MB/s and this process's CPU seconds per GB
(user + system), with the load average.

    .venv/bin/python bench/restore_fetch.py [--partitions 4] [--mb-per-partition 315] [--repeat 3]
        [--concurrency 4] [--part-mb 16[,8,...]] [--direct-io 1|0|0,1] [--rows fetch,floor-s3]
"""
from __future__ import annotations

import argparse
import concurrent.futures
import datetime as dt
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import restore_download  # noqa: E402
import seaweedfs  # noqa: E402

from hotstate.snapshot import ObjectStore  # noqa: E402
from hotstate.snapshot.manifest import FileEntry, Manifest, PartitionPaths, Writer  # noqa: E402
from hotstate.snapshot.restorer import Restorer  # noqa: E402

APP, STORE = "fetchbench", "kv"


def _file_sizes(total: int) -> list[int]:
    sizes, left = [], total - 4 * 4096
    while left > 64_000_000:
        sizes.append(64_000_000)
        left -= 64_000_000
    sizes.append(left)
    return sizes + [4096] * 4


def publish(objects: ObjectStore, partitions: int, mb: int, work: Path) -> int:
    total = 0
    for p in range(partitions):
        paths = PartitionPaths(APP, STORE, p)
        entries = []
        sizes = _file_sizes(mb * 1_000_000)
        for i, size in enumerate(sizes):
            small = ("CURRENT", "MANIFEST-000005", "OPTIONS-000007", "IDENTITY")
            name = small[i - (len(sizes) - 4)] if i >= len(sizes) - 4 else f"{i + 10:06d}.sst"
            path = work / f"src-{p}-{name}"
            with open(path, "wb") as f:
                for at in range(0, size, 8 << 20):
                    f.write(os.urandom(min(8 << 20, size - at)))
            with open(path, "rb") as f:
                digest = hashlib.file_digest(f, "sha256").hexdigest()
            entry = FileEntry(name, paths.file_object(name, digest), size, digest)
            objects.put_file(entry.object, path)
            path.unlink()
            entries.append(entry)
            total += size
        manifest = Manifest(APP, STORE, f"0_{p}", "cl", p, 1000, tuple(entries), dt.datetime.now(dt.timezone.utc),
                            Writer("bench", os.getpid(), "localhost", 1))
        objects.put_bytes(manifest.name, manifest.to_json())
    return total


def fetch_round(objects: ObjectStore, partitions: int, work: Path, concurrency: int, part_bytes: int,
                direct_io: bool = True) -> dict:
    restorer = Restorer(objects, APP, concurrency=concurrency, part_bytes=part_bytes, direct_io=direct_io)
    dirs = [work / f"into-{p}" for p in range(partitions)]
    t0, c0 = time.perf_counter(), os.times()
    with concurrent.futures.ThreadPoolExecutor(partitions) as pool:
        fetched = list(pool.map(lambda p: restorer.fetch(STORE, p, None, dirs[p]), range(partitions)))
    seconds, c1 = time.perf_counter() - t0, os.times()
    if any(f is None for f in fetched):
        raise RuntimeError("a fetch returned None (see the log)")
    num_bytes = sum(f.num_bytes for f in fetched)
    for d in dirs:
        shutil.rmtree(d)
    cpu = (c1.user - c0.user) + (c1.system - c0.system)
    return {"row": "fetch", "seconds": round(seconds, 3), "mb_per_s": round(num_bytes / seconds / 1e6, 1),
            "cpu_s_per_gb": round(cpu / (num_bytes / 1e9), 2), "user": round(c1.user - c0.user, 2),
            "sys": round(c1.system - c0.system, 2), "load": os.getloadavg()}


def floor_round(objects: ObjectStore, work: Path) -> dict:
    c0 = os.times()
    res = restore_download.floor_s3_download(objects, f"{APP}/", work / "floor")
    c1 = os.times()
    cpu = (c1.user - c0.user) + (c1.system - c0.system)
    return {"row": "floor-s3", "seconds": round(res["seconds"], 3), "mb_per_s": res["mb_per_s"],
            "cpu_s_per_gb": round(cpu / (res["bytes"] / 1e9), 2), "load": os.getloadavg()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--mb-per-partition", type=int, default=315)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--part-mb", default="16", help="MiB per range; several, comma-separated: alternated per round")
    ap.add_argument("--direct-io", default="1", help="1, 0 or both (0,1): alternated per round")
    ap.add_argument("--rows", default="fetch,floor-s3")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="hotstate-fetchbench-"))
    server = seaweedfs.SeaweedS3.start(str(work))
    try:
        server.create_bucket("bench")
        os.environ.update(server.env())
        objects = ObjectStore.open("s3://bench/run", server.options())
        total = publish(objects, args.partitions, args.mb_per_partition, work)
        print(json.dumps({"published_bytes": total, "load": os.getloadavg()}), flush=True)
        for _ in range(args.repeat):
            for row in args.rows.split(","):
                if row != "fetch":
                    print(json.dumps(floor_round(objects, work)), flush=True)
                    continue
                for part_mb in args.part_mb.split(","):
                    for direct in args.direct_io.split(","):
                        res = fetch_round(objects, args.partitions, work, args.concurrency,
                                          int(float(part_mb) * (1 << 20)), direct == "1")
                        print(json.dumps({**res, "part_mb": float(part_mb), "direct_io": direct == "1"}), flush=True)
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
