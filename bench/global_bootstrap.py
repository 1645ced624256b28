#!/usr/bin/env python3
"""A global table's bootstrap (issue #12): how fast a new instance reads a whole topic into its global store
before it reports RUNNING, and what a clean restart reads again.

The run: a topic of ``--records`` records (``--partitions`` partitions, keys ``k<n>``, ``--value-bytes``
random bytes each) is produced once; an app with ``app.global_table(topic, store="g")`` (RocksDB, or
``--memory``) and one stream source is started on an empty state dir and timed from ``start()`` to
``wait_until_running()``; the global store's restore metrics give the records read and the rate. Then the
app is closed and started again on the same state dir: the restart's records read (0 expected) and time.
Prints one line per start (``--json``: one JSON object); the topics are deleted at the end.

    HOTSTATE_KAFKA_PORT=19650 scripts/kafka start
    HOTSTATE_KAFKA_PORT=19650 .venv/bin/python bench/global_bootstrap.py --records 1000000
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import time
import uuid

from confluent_kafka import Producer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_kafka import BenchKafka  # noqa: E402
from machine import describe  # noqa: E402

import hotstate  # noqa: E402
from hotstate import StoreSpec, serde  # noqa: E402


def produce(bootstrap: str, topic: str, records: int, value_bytes: int) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "batch.size": 1_000_000,
                         "compression.type": "lz4", "partitioner": "murmur2_random"})
    rng = random.Random(1)
    values = [rng.randbytes(value_bytes) for _ in range(1024)]
    for i in range(records):
        while True:
            try:
                producer.produce(topic, values[i & 1023], f"k{i}".encode())
                break
            except BufferError:
                producer.poll(0.05)
    assert producer.flush(120) == 0


def start(args: argparse.Namespace, topic: str, source: str, app_id: str, state_dir: str) -> tuple[hotstate.App, dict]:
    app = hotstate.App(app_id=app_id, bootstrap_servers=args.bootstrap, state_dir=state_dir)
    store = StoreSpec("g", kind="memory") if args.memory else "g"
    app.global_table(topic, key_serde=serde.BYTES, value_serde=serde.BYTES, store=store)
    app.stream(source).peek(lambda k, v: None)  # an app needs a stream; the topic stays empty
    t0 = time.monotonic()
    app.start()
    app.wait_until_running(1800)
    seconds = time.monotonic() - t0
    restores = app.metrics()["restores"]
    read = sum(r["restore_records_total"] for k, r in restores.items() if k.startswith("global-"))
    busy = max((r["restore_seconds"] for k, r in restores.items() if k.startswith("global-")), default=0.0)
    return app, {"seconds_to_running": round(seconds, 2), "records_read": read,
                 "bootstrap_seconds": busy, "records_per_s": round(read / busy) if busy else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--value-bytes", type=int, default=100)
    ap.add_argument("--memory", action="store_true", help="an in-memory global store instead of RocksDB")
    ap.add_argument("--no-verify", action="store_true", help="skip counting the store's entries")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--bootstrap", default=f"127.0.0.1:{os.environ.get('HOTSTATE_KAFKA_PORT', '9092')}")
    args = ap.parse_args()
    run = uuid.uuid4().hex[:8]
    kafka = BenchKafka(args.bootstrap, f"bench-global-{run}")
    state_dir = tempfile.mkdtemp(prefix="hotstate-bench-global-")
    try:
        topic = kafka.create_topic(f"bench-global-{run}", args.partitions)
        source = kafka.create_topic(f"bench-global-src-{run}", 1)
        t0 = time.monotonic()
        produce(args.bootstrap, topic, args.records, args.value_bytes)
        produced_s = time.monotonic() - t0
        app_id = f"bench-global-{run}"
        kafka.groups.append(app_id)
        rows = []
        for what in ("cold", "restart"):
            app, row = start(args, topic, source, app_id, state_dir)
            try:
                if what == "cold" and not args.no_verify:
                    entries = sum(1 for _ in app.store("g").all())
                    assert entries == args.records, f"the global store holds {entries} of {args.records} records"
            finally:
                app.close()
            row = {"start": what, "records": args.records, "partitions": args.partitions,
                   "value_bytes": args.value_bytes, "store": "memory" if args.memory else "rocksdb", **row}
            rows.append(row)
        for row in rows:
            if args.json:
                print(json.dumps(row))
            else:
                print(f"global bootstrap ({row['start']}, {row['store']}): {row['records_read']:,} records read in "
                      f"{row['bootstrap_seconds']} s ({row['records_per_s'] or 0:,} records/s); start to RUNNING "
                      f"{row['seconds_to_running']} s")
        if not args.json:
            print(f"(produced in {produced_s:.1f} s; machine: {describe()}; load average "
                  f"{os.getloadavg()[0]:.2f})")
    finally:
        shutil.rmtree(state_dir, ignore_errors=True)
        kafka.close_readers()
        kafka.delete_topics()
        kafka.delete_groups(10, 10)


if __name__ == "__main__":
    main()
