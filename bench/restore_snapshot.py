"""Cold restore by snapshot + changelog tail vs full changelog replay, hotstate only, same run, file:// store.

    .venv/bin/python bench/restore_snapshot.py [--keys 1000000] [--partitions 4] [--value-bytes 100]
        [--tail-fraction 0.01] [--json]

1. Fills a changelog with bench/changelog_data.py's N keys (10% extra updates) and restores it cold once
   (bench/restore_hotstate.py, a child process): that state dir is the snapshot's source.
2. Checkpoints each store partition and publishes it with ``Snapshotter`` to a file:// store at the store's
   changelog offset (what the upload side does after a commit).
3. Writes the tail: ``--tail-fraction`` x N updates of existing keys.
4. Same run, each a child process with an EMPTY state dir: a cold restore with ``snapshot_store`` set
   (download + tail) and one without (full replay of N records + the tail). Times are start -> RUNNING.
The sampled keys (some updated by the tail) are checked in both. Needs the local broker. Prints JSON lines:
``seconds`` start -> RUNNING; ``download_seconds`` summed over the store partitions' downloads;
``restore_window_seconds`` first ``on_restore_start`` -> last ``on_restore_end``.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

import changelog_data
from hotstate.snapshot import ObjectStore, Outcome, SnapshotRequest, Snapshotter, take_checkpoint
from hotstate.state.rocksdb_store import RocksDBBackend

HERE = os.path.dirname(os.path.abspath(__file__))
NO_COMPACTION_MS = 7 * 24 * 3600 * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--keys", type=int, default=1_000_000)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--value-bytes", type=int, default=100)
    ap.add_argument("--tail-fraction", type=float, default=0.01)
    ap.add_argument("--bootstrap", default=f"127.0.0.1:{os.environ.get('HOTSTATE_KAFKA_PORT', '9092')}")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    shape = changelog_data.Shape(args.keys, args.partitions, args.value_bytes)
    run = uuid.uuid4().hex[:8]
    app_id = f"bench-snaprestore-{run}"
    names = {"app_id": app_id, "source": f"{app_id}-in", "changelog": f"{app_id}-store-changelog"}
    work = Path(tempfile.mkdtemp(prefix=f"hotstate-bench-snap-{run}-"))
    admin = AdminClient({"bootstrap.servers": args.bootstrap})
    topics = [NewTopic(names["source"], shape.partitions, 1),
              NewTopic(names["changelog"], shape.partitions, 1,
                       config={"cleanup.policy": "compact", "min.compaction.lag.ms": str(NO_COMPACTION_MS)})]
    for fut in admin.create_topics(topics, operation_timeout=30).values():
        fut.result(60)
    log = (lambda m: print(f"bench/restore_snapshot: {m}", file=sys.stderr, flush=True))
    try:
        producer = Producer({"bootstrap.servers": args.bootstrap, "linger.ms": 100, "batch.size": 1_000_000,
                             "queue.buffering.max.kbytes": 1_048_576, "queue.buffering.max.messages": 2_000_000,
                             "acks": "all"})
        keys: list[bytes] = []
        final: dict[bytes, bytes] = {}
        t0 = time.monotonic()
        for p, k, v in changelog_data.records(shape):
            _send(producer, names["changelog"], k, v, p)
            if len(keys) < shape.keys:
                keys.append(k)
            if k in final or len(final) < 300:
                final[k] = v
        assert producer.flush(120) == 0
        log(f"produced {shape.records:,} records in {time.monotonic() - t0:.1f}s")

        source_state = work / "source"
        first = _restore(args, names, source_state, work / "sample0.json", final, {}, "full-initial")
        log(f"initial full replay {first['seconds']:.2f}s")

        snap_url = f"file://{work / 'snapshots'}"
        objects = ObjectStore.open(snap_url)
        s = Snapshotter(objects, app_id, instance_id="bench")
        s.start()
        t0 = time.monotonic()
        try:
            for p in range(shape.partitions):
                backend = RocksDBBackend("store", str(source_state / app_id / f"0_{p}" / "store"))
                try:
                    offset = backend.changelog_offset()
                    cp = take_checkpoint(backend._db, work / f"cp-{p}").path
                finally:
                    backend.close()
                s.submit(SnapshotRequest("store", f"0_{p}", names["changelog"], p, offset, 1, cp))
            assert s.wait_idle(600)
            results = s.drain_results()
        finally:
            s.close()
        assert [r.outcome for r in results] == [Outcome.PUBLISHED] * shape.partitions, results
        snap_bytes = sum(f.stat().st_size for f in (work / "snapshots").rglob("*") if f.is_file())
        log(f"published {shape.partitions} snapshots ({snap_bytes:,} bytes) in {time.monotonic() - t0:.1f}s")
        shutil.rmtree(source_state)

        rng = random.Random(7)
        tail = max(1, int(shape.keys * args.tail_fraction))
        sampled = list(final)[:150]
        for i in range(tail):
            k = sampled[i] if i < len(sampled) else keys[rng.randrange(len(keys))]
            v = b"tail-%09d-" % i + rng.randbytes(max(0, shape.value_bytes - 15))
            _send(producer, names["changelog"], k, v, changelog_data.partition_of(k, shape.partitions))
            if k in final:
                final[k] = v
        assert producer.flush(120) == 0
        log(f"produced a tail of {tail:,} updates")

        rows = []
        for label, config in (("snapshot+tail", {"snapshot_store": snap_url}), ("full-replay", {})):
            res = _restore(args, names, work / label, work / f"sample-{label}.json", final, config, label)
            rows.append(res)
            log(f"{label}: {res['seconds']:.2f}s")
        for r in rows:
            r.update(keys=shape.keys, partitions=shape.partitions, value_bytes=shape.value_bytes, tail=tail,
                     snapshot_bytes=snap_bytes)
            print(json.dumps(r))
        print(json.dumps({"speedup": round(rows[1]["seconds"] / rows[0]["seconds"], 2)}))
    finally:
        admin.delete_topics([t.topic for t in topics])
        shutil.rmtree(work, ignore_errors=True)


def _send(producer, topic, key, value, partition) -> None:
    while True:
        try:
            producer.produce(topic, value, key, partition)
            return
        except BufferError:
            producer.poll(0.05)


def _restore(args, names, state_dir: Path, sample_file: Path, final: dict, config: dict, label: str) -> dict:
    state_dir.mkdir(parents=True)
    sample_file.write_text(json.dumps({k.hex(): v.hex() for k, v in final.items()}))
    job = {"bootstrap": args.bootstrap, **names, "state_dir": str(state_dir), "sample_file": str(sample_file),
           "timeout_s": 600, "config": config}
    job_file = state_dir.with_suffix(".json")
    job_file.write_text(json.dumps(job))
    out = subprocess.run([sys.executable, os.path.join(HERE, "restore_hotstate.py"), str(job_file)], check=True,
                         capture_output=True, text=True, env={**os.environ, "PYTHONPATH": HERE})
    res = json.loads(out.stdout.strip().splitlines()[-1])
    if res.get("sample_wrong"):
        raise AssertionError(f"{label}: {res['sample_wrong']} of {res['sample_checked']} sampled keys are wrong")
    return {"row": label, "seconds": round(res["seconds"], 3), "records_replayed": res["records"],
            "download_bytes": res.get("download_bytes"), "download_seconds": res.get("download_seconds"),
            "restore_window_seconds": round(res["restore_seconds"], 3), "cpu_seconds": round(res["cpu_seconds"], 2),
            "sample_checked": res["sample_checked"]}


if __name__ == "__main__":
    main()
