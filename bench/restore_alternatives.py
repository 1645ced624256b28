"""Restore designs measured against the one hotstate ships (docs/benchmarks.md has the numbers):

  processes   the same restore (hotstate's consumer settings, RocksDBBackend's bulk-load restore) split over
              1..N worker processes, each restoring its own partitions with its own consumer;
  compaction  the cost of a full compaction after a restore, before going RUNNING.

    .venv/bin/python bench/restore_alternatives.py --keys 1000000 --partitions 4 [--processes 1,2]

Prepares a changelog like bench/restore.py (hotstate's format) and deletes it afterwards.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import shutil
import tempfile
import time
import uuid

from confluent_kafka import TopicPartition as KTopicPartition
from confluent_kafka.admin import AdminClient

import changelog_data
import restore as bench
from hotstate.config import Config
from hotstate.kafka import clients
from hotstate.state.rocksdb_store import RocksDBBackend


def _worker(bootstrap: str, topic: str, partitions: list[int], state_dir: str, go, out) -> None:
    try:
        _restore(bootstrap, topic, partitions, state_dir, go, out)
    except BaseException as exc:
        out.put({"error": repr(exc)})
        raise


def _restore(bootstrap: str, topic: str, partitions: list[int], state_dir: str, go, out) -> None:
    """One process: restores ``partitions`` of ``topic`` like the state updater does, one store each."""
    config = Config(app_id=f"alt-{uuid.uuid4().hex[:6]}", bootstrap_servers=bootstrap)
    consumer = clients.restore_consumer(config)
    ends = {p: consumer.get_watermark_offsets(KTopicPartition(topic, p), timeout=30)[1] for p in partitions}
    stores = {p: RocksDBBackend("store", os.path.join(state_dir, f"p{p}")) for p in partitions}
    go.wait()
    t0 = time.perf_counter()
    consumer.assign([KTopicPartition(topic, p, 0) for p in partitions])
    for p, store in stores.items():
        store.begin_restore(ends[p])
    pending = dict(ends)
    records = 0
    while pending:
        msgs = consumer.consume(config.restore_consume_records_max, 0.1)
        runs: dict[int, tuple] = {}
        for m in msgs:
            p = m.partition()
            run = runs.get(p)
            if run is None:
                batch = stores[p].restore_batch()
                runs[p] = run = [batch, batch.put, m]
            run[1](m.key(), m.value())
            run[2] = m
        for p, (batch, _, last) in runs.items():
            stores[p].write_restore_batch(batch, last.offset() + 1)
            if last.offset() + 1 >= pending.get(p, 1 << 62):
                del pending[p]
        records += len(msgs)
    for store in stores.values():
        store.end_restore()
        store.close()
    out.put({"seconds": time.perf_counter() - t0, "records": records})
    consumer.close()


def processes(bootstrap: str, topic: str, partitions: int, n: int, work: str) -> dict:
    ctx = mp.get_context("spawn")
    go, out = ctx.Event(), ctx.Queue()
    shares = [list(range(partitions))[i::n] for i in range(n)]
    procs = [ctx.Process(target=_worker, args=(bootstrap, topic, share, os.path.join(work, f"w{i}"), go, out))
             for i, share in enumerate(shares)]
    for p in procs:
        p.start()
    time.sleep(3)  # imports, connections, watermarks: not part of the restore
    t0 = time.perf_counter()
    go.set()
    results = [out.get(timeout=900) for _ in procs]
    errors = [r["error"] for r in results if "error" in r]
    if errors:
        raise RuntimeError(f"a restore worker failed: {errors}")
    seconds = time.perf_counter() - t0
    for p in procs:
        p.join()
    records = sum(r["records"] for r in results)
    return {"alternative": f"processes={n}", "records": records, "seconds": round(seconds, 3),
            "records_per_s": round(records / seconds)}


def compaction(shape: changelog_data.Shape, work: str) -> dict:
    """Bulk-loads one store with every record (as a restore does), then times a full compaction."""
    store = RocksDBBackend("store", os.path.join(work, "compaction"))
    recs = [(k, v) for _, k, v in changelog_data.records(shape)]
    t0 = time.perf_counter()
    store.begin_restore(len(recs))
    for i in range(0, len(recs), 20_000):
        batch = store.restore_batch()
        for k, v in recs[i:i + 20_000]:
            batch.put(k, v)
        store.write_restore_batch(batch, i + 20_000)
    store.end_restore()
    written = time.perf_counter() - t0
    l0 = store._db.property_int_value("rocksdb.num-files-at-level0")
    t1 = time.perf_counter()
    store._db.compact_range(None, None)
    compacted = time.perf_counter() - t1
    store.close()
    return {"alternative": "compaction before RUNNING", "records": len(recs), "write_seconds": round(written, 3),
            "l0_files_after_restore": l0, "compaction_seconds": round(compacted, 3),
            "records_per_s_with_compaction": round(len(recs) / (written + compacted)),
            "records_per_s_without": round(len(recs) / written)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--keys", type=int, default=1_000_000)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--processes", default="1,2")
    ap.add_argument("--bootstrap", default=f"127.0.0.1:{os.environ.get('HOTSTATE_KAFKA_PORT', '9092')}")
    args = ap.parse_args()
    shape = changelog_data.Shape(args.keys, args.partitions)
    work = tempfile.mkdtemp(prefix="hotstate-bench-alt-")
    names = bench._names(uuid.uuid4().hex[:8])
    admin = AdminClient({"bootstrap.servers": args.bootstrap})
    topics = bench._create_topics(admin, names, ["hotstate"], shape)
    try:
        bench._produce(args.bootstrap, names, ["hotstate"], shape)
        for i, n in enumerate(int(x) for x in args.processes.split(",")):
            print(json.dumps(processes(args.bootstrap, names["hotstate"]["changelog"], shape.partitions, n,
                                       os.path.join(work, f"run{i}"))), flush=True)
        print(json.dumps(compaction(shape, work)), flush=True)
    finally:
        admin.delete_topics(topics)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
