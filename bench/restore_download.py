"""bench/restore.py's restore-by-download side (issue #9): the snapshot the ``snapshot`` row restores from, and
the floors it is compared with, all against a SeaweedFS S3 server the bench starts (bench/seaweedfs.py).

- ``publish_snapshots``: checkpoints every store partition of a restored hotstate state dir and publishes them
  with ``Snapshotter`` (what the app's uploader does after a commit), at the stores' changelog offsets. Each store
  is first opened with its processing options and RocksDB's background compaction is let finish, as in a running
  app between snapshots (a store just restored in bulk holds uncompacted L0 files; a snapshot of those would be
  larger and make the restoring app compact them while it downloads the other partitions).
- ``floor_s3_download``: the server's download rate for the same bytes: every object of those snapshots, all
  partitions at once (``concurrency`` GETs in flight), streamed to files, no checksum.
- ``floor_s3_object``: the server's upload and download throughput for one object of ``num_bytes`` random
  bytes (multipart upload, as the uploader's; a streamed download to a file).
- ``floor_cp``: ``cp -r`` of the same files (the checkpoint directories) on the local disk.
"""
from __future__ import annotations

import concurrent.futures
import os
import shutil
import subprocess
import time
from pathlib import Path

import obstore

from hotstate.snapshot import ObjectStore, Outcome, SnapshotRequest, Snapshotter, take_checkpoint
from hotstate.state.rocksdb_store import RocksDBBackend

_CHUNK_BYTES = 8 * 1024 * 1024


def publish_snapshots(objects: ObjectStore, app_id: str, store: str, changelog: str, state_dir: Path,
                      partitions: int, work: Path) -> dict:
    """Checkpoints ``<state_dir>/<app_id>/0_<p>/<store>`` for every partition, keeps a hard-linked copy of each
    checkpoint under ``work/files-<p>`` (for ``floor_cp``), publishes them and waits; returns the figures."""
    snapshotter = Snapshotter(objects, app_id, instance_id="bench", upload_concurrency=8)
    snapshotter.start()
    started = time.monotonic()
    kept = []
    try:
        for p in range(partitions):
            backend = RocksDBBackend(store, str(state_dir / app_id / f"0_{p}" / store))
            try:
                _wait_compacted(backend, timeout_s=1800)
                offset = backend.changelog_offset()
                cp = take_checkpoint(backend._db, work / f"checkpoint-{p}").path
            finally:
                backend.close()
            copy = work / f"files-{p}"
            shutil.copytree(cp, copy, copy_function=os.link)  # the uploader deletes its checkpoint when done
            kept.append(copy)
            snapshotter.submit(SnapshotRequest(store, f"0_{p}", changelog, p, offset, 1, cp))
        if not snapshotter.wait_idle(3600):
            raise RuntimeError("the snapshots were not published within an hour")
        results = snapshotter.drain_results()
    finally:
        snapshotter.close()
    if sorted(r.outcome.name for r in results) != [Outcome.PUBLISHED.name] * partitions:
        raise RuntimeError(f"publishing the snapshots failed: {results}")
    files = [f for d in kept for f in d.iterdir()]
    return {"snapshot_bytes": sum(f.stat().st_size for f in files), "snapshot_files": len(files),
            "publish_seconds": round(time.monotonic() - started, 2), "file_dirs": [str(d) for d in kept]}


def _wait_compacted(backend: RocksDBBackend, timeout_s: float) -> None:
    """Until RocksDB has no compaction running or pending (checked twice, 0.5 s apart)."""
    prop = backend._db.property_int_value
    deadline = time.monotonic() + timeout_s
    quiet = 0
    while quiet < 2:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the store's compaction did not finish within {timeout_s} s")
        busy = (prop("rocksdb.compaction-pending") or 0) + (prop("rocksdb.num-running-compactions") or 0)
        quiet = 0 if busy else quiet + 1
        time.sleep(0.5)


def floor_s3_download(objects: ObjectStore, prefix: str, into: Path, concurrency: int = 16) -> dict:
    """GETs every object under ``prefix`` (the snapshots' data files, not manifests) into ``into``."""
    names = [o for o in objects.list(prefix) if "/files/" in o.name]
    into.mkdir(parents=True)
    store = objects._store

    def get(i: int, name: str) -> int:
        written = 0
        with open(into / f"{i}", "wb") as out:
            for chunk in obstore.get(store, name).stream(min_chunk_size=_CHUNK_BYTES):
                out.write(chunk)
                written += len(chunk)
        return written

    ordered = [o.name for o in sorted(names, key=lambda o: o.size, reverse=True)]  # largest first, as Restorer
    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
        total = sum(pool.map(get, range(len(ordered)), ordered))
    seconds = time.perf_counter() - started
    shutil.rmtree(into, ignore_errors=True)
    return {"seconds": seconds, "bytes": total, "objects": len(names), "concurrency": concurrency,
            "mb_per_s": round(total / seconds / 1e6, 1)}


def floor_s3_object(objects: ObjectStore, name: str, work: Path, num_bytes: int = 1_000_000_000) -> dict:
    """Uploads one object of ``num_bytes`` random bytes from a file, downloads it to another file, deletes it."""
    src, dest = work / "floor-object.bin", work / "floor-object.out"
    with open(src, "wb") as f:
        for _ in range(0, num_bytes, 64 << 20):
            f.write(os.urandom(min(64 << 20, num_bytes - f.tell())))
    try:
        started = time.perf_counter()
        objects.put_file(name, src)
        upload_s = time.perf_counter() - started
        started = time.perf_counter()
        written = 0
        with open(dest, "wb") as out:
            for chunk in obstore.get(objects._store, name).stream(min_chunk_size=_CHUNK_BYTES):
                out.write(chunk)
                written += len(chunk)
        download_s = time.perf_counter() - started
        if written != num_bytes:
            raise RuntimeError(f"downloaded {written} bytes of the {num_bytes}-byte object")
    finally:
        objects.delete(name)
        src.unlink(missing_ok=True)
        dest.unlink(missing_ok=True)
    return {"bytes": num_bytes, "upload_seconds": round(upload_s, 2),
            "upload_mb_per_s": round(num_bytes / upload_s / 1e6, 1), "download_seconds": round(download_s, 2),
            "download_mb_per_s": round(num_bytes / download_s / 1e6, 1)}


def floor_cp(dirs: list[str], into: Path) -> dict:
    """``cp -r`` of the directories into ``into`` (one cp process), timed; the copy is deleted after."""
    into.mkdir(parents=True)
    total = sum(f.stat().st_size for d in dirs for f in Path(d).iterdir())
    started = time.perf_counter()
    subprocess.run(["cp", "-r", *dirs, str(into)], check=True)
    seconds = time.perf_counter() - started
    shutil.rmtree(into, ignore_errors=True)
    return {"seconds": seconds, "bytes": total, "mb_per_s": round(total / seconds / 1e6, 1)}
