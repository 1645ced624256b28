"""What taking snapshots costs the stream thread, on the real broker: the word-count app processes the same
input twice from the start, without and with ``snapshot_store`` (a file:// directory), and reports the
processing time of each run and the checkpoints the stream thread took (count, total and longest time, from
``app.metrics()``), under each processing guarantee.

    .venv/bin/python bench/snapshot_runtime.py [--records 400000] [--words 200000] [--interval-ms 1000]
        [--commit-interval-ms 1000] [--guarantees at_least_once,exactly_once_v2] [--json]

Needs the local broker (``scripts/kafka start``). The machine is shared: the load average is printed with
the numbers, and the two runs of a guarantee follow each other so they meet similar load.
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
import zlib
from pathlib import Path

from confluent_kafka import Producer

import hotstate
from hotstate import serde

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from bench_kafka import BenchKafka  # noqa: E402

PARTITIONS = 4


def produce(bootstrap: str, topic: str, records: int, words: int, seed: int) -> None:
    rng = random.Random(seed)
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "batch.size": 1 << 20})
    pad = "x" * 24
    for i in range(records):
        w = f"w{rng.randrange(words):07d}{pad}"
        while True:
            try:
                p.produce(topic, b"x", w.encode(), partition=zlib.crc32(w.encode()) % PARTITIONS)
                break
            except BufferError:
                p.poll(0.05)
        if i % 10000 == 0:
            p.poll(0)
    assert p.flush(120) == 0


def run(bootstrap: str, source: str, state_dir: Path, guarantee: str, records: int, commit_interval_ms: int,
        snapshot_store: str | None, interval_ms: int, kafka: BenchKafka) -> dict:
    app_id = kafka.app(f"bench-snaprt-{uuid.uuid4().hex[:8]}")
    cfg = dict(app_id=app_id, bootstrap_servers=bootstrap, state_dir=str(state_dir), processing_guarantee=guarantee,
               commit_interval_ms=commit_interval_ms)
    if snapshot_store is not None:
        cfg.update(snapshot_store=snapshot_store, snapshot_interval_ms=interval_ms)
    app = hotstate.App(**cfg)
    app.stream(source, key_serde=serde.STRING, value_serde=serde.STRING).group_by_key().count("counts")
    app.start()
    try:
        app.wait_until_running(120)
        started = time.monotonic()
        while app.metrics()["records_processed_total"] < records:
            if app.state is hotstate.AppState.ERROR:
                raise RuntimeError(f"the app failed: {app.error()}")
            time.sleep(0.05)
        seconds = time.monotonic() - started
        time.sleep(commit_interval_ms / 1000 * 2 + 0.5)  # the last commits (and their checkpoints)
        m = app.metrics()
    finally:
        app.close(60)
    n = m["snapshot_checkpoints_total"]
    return {"process_s": round(seconds, 2), "records_per_s": round(records / seconds),
            "checkpoints": n, "checkpoint_s_total": round(m["snapshot_checkpoint_seconds_total"], 3),
            "checkpoint_ms_mean": round(m["snapshot_checkpoint_seconds_total"] / n * 1000, 2) if n else None,
            "checkpoint_ms_max": round(m["snapshot_checkpoint_seconds_max"] * 1000, 2),
            "snapshots_published": m["snapshots_total"], "uploaded_MB": round(m["snapshot_upload_bytes_total"] / 1e6, 1)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=400_000)
    ap.add_argument("--words", type=int, default=200_000)
    ap.add_argument("--interval-ms", type=int, default=1000)
    ap.add_argument("--commit-interval-ms", type=int, default=1000)
    ap.add_argument("--guarantees", default="at_least_once,exactly_once_v2")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    bootstrap = subprocess.run([str(ROOT / "scripts" / "kafka"), "start"], capture_output=True, text=True,
                               check=True).stdout.split()[-1]
    kafka = BenchKafka(bootstrap, "bench-snaprt")
    work = Path(tempfile.mkdtemp(prefix="hotstate-snaprt-"))
    rows: dict = {"records": args.records, "words": args.words, "snapshot_interval_ms": args.interval_ms,
                  "commit_interval_ms": args.commit_interval_ms}
    try:
        source = kafka.create_topic(f"bench-snaprt-words-{uuid.uuid4().hex[:8]}", PARTITIONS)
        produce(bootstrap, source, args.records, args.words, 1)
        for guarantee in args.guarantees.split(","):
            for label, store in (("off", None), ("on", f"file://{work / 'snapshots'}")):
                rows[f"{guarantee}/{label}"] = {
                    "load_avg_1m": round(os.getloadavg()[0], 1),
                    **run(bootstrap, source, work / f"state-{guarantee}-{label}", guarantee, args.records,
                          args.commit_interval_ms, store, args.interval_ms, kafka)}
    finally:
        kafka.close_readers()
        kafka.delete_topics()
        kafka.delete_groups(10, 15)
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(rows, indent=None if args.json else 2))


if __name__ == "__main__":
    main()
