"""The hotstate demo: a word-count store of about a million keys, restarted clean and from a wiped disk.

Run it with ``scripts/demo`` (it starts the local broker if none runs). Options: ``--keys N``.
"""
from __future__ import annotations

import argparse
import collections
import logging
import os
import shutil
import sys
import time
import uuid

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

import hotstate
from hotstate import serde
from hotstate.observe.progress import RestoreProgress


def build(app_id: str, bootstrap: str, state_dir: str, topic: str) -> hotstate.App:
    app = hotstate.App(app_id=app_id, bootstrap_servers=bootstrap, state_dir=state_dir, commit_interval_ms=1000)
    (app.stream(topic, key_serde=serde.STRING, value_serde=serde.STRING)
        .group_by_key()
        .count(store="word-counts")
        .to_stream()
        .to(f"{topic}-counts", value_serde=serde.INT64))
    return app


def produce(bootstrap: str, topic: str, keys: int, updates: int) -> collections.Counter:
    """keys distinct words, plus `updates` repeats of the first words: a changelog with updated keys."""
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "batch.num.messages": 10000,
                  "compression.type": "lz4", "partitioner": "murmur2_random"})
    expected: collections.Counter = collections.Counter()
    words = [f"word-{i:08d}" for i in range(keys)] + [f"word-{i:08d}" for i in range(updates)]
    for w in words:
        while True:
            try:
                p.produce(topic, value=b"1", key=w.encode())
                break
            except BufferError:
                p.poll(0.05)
        expected[w] += 1
    p.flush()
    return expected


def run_until_caught_up(app: hotstate.App, target: int, label: str) -> float:
    t0 = time.monotonic()
    app.start()
    app.wait_until_running(timeout_s=600)
    ready = time.monotonic() - t0
    while app.metrics()["records_processed_total"] < target:
        time.sleep(0.2)
        done = app.metrics()["records_processed_total"]
        print(f"\r    {label}: processed {done:>10,} / {target:,}", end="", flush=True)
    print()
    return ready


def check(app: hotstate.App, expected: collections.Counter, sample: int = 20000) -> None:
    store = app.store("word-counts")
    keys = list(expected)[:: max(1, len(expected) // sample)]
    wrong = [(k, store.get(k), expected[k]) for k in keys if store.get(k) != expected[k]]
    if wrong:
        print(f"    counts: {len(wrong)} of {len(keys)} sampled keys WRONG, e.g. {wrong[:3]}")
        sys.exit(1)
    print(f"    counts: {len(keys):,} sampled keys checked, all correct "
          f"(e.g. {keys[0]!r} -> {store.get(keys[0])}, {keys[-1]!r} -> {store.get(keys[-1])})")


def restored(app: hotstate.App) -> int:
    return sum(s.restored_records for t in app.tasks() for s in t.stores.values())


def restart_and_check(app_id: str, bootstrap: str, state_dir: str, topic: str, expected: collections.Counter) -> None:
    """Starts the app, times it to RUNNING, says what it replayed, checks the counts, closes it."""
    app = build(app_id, bootstrap, state_dir, topic)
    t0 = time.monotonic()
    with RestoreProgress(app):  # live records, rate and ETA per store while it restores
        app.start()
        app.wait_until_running(timeout_s=600)
    took = time.monotonic() - t0
    n = restored(app)
    rate = f" ({n / took:,.0f} records/s)" if n else ""
    print(f"    RUNNING after {took:.2f}s, {n:,} changelog records replayed{rate}")
    check(app, expected)
    app.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--bootstrap", default=f"127.0.0.1:{os.environ.get('HOTSTATE_KAFKA_PORT', '9092')}")
    ap.add_argument("--keys", type=int, default=1_000_000)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--data-dir", default=os.path.join(os.path.expanduser("~"), ".cache", "hotstate", "demo"))
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    run = uuid.uuid4().hex[:8]
    topic, app_id = f"demo-words-{run}", f"demo-wordcount-{run}"
    state_dir = os.path.join(args.data_dir, "state")
    admin = AdminClient({"bootstrap.servers": args.bootstrap})
    for t in (topic, f"{topic}-counts"):
        admin.create_topics([NewTopic(t, args.partitions, 1)])[t].result(30)

    updates = args.keys // 10
    print(f"1. producing {args.keys:,} distinct words (+{updates:,} repeats) to {topic} ({args.partitions} partitions)")
    t0 = time.monotonic()
    expected = produce(args.bootstrap, topic, args.keys, updates)
    total_in = args.keys + updates
    print(f"    {total_in:,} records in {time.monotonic() - t0:.1f}s")

    print("2. counting them into a RocksDB store (changelog-backed)")
    app = build(app_id, args.bootstrap, state_dir, topic)
    t0 = time.monotonic()
    run_until_caught_up(app, total_in, "first run")
    took = time.monotonic() - t0
    print(f"    {total_in:,} records in {took:.1f}s ({total_in / took:,.0f} records/s)")
    check(app, expected)
    app.close()

    print("3. clean restart: the store keeps its changelog offset, so only the delta is replayed")
    restart_and_check(app_id, args.bootstrap, state_dir, topic, expected)

    print("4. wiped state dir: the whole changelog is replayed on the restore thread")
    shutil.rmtree(state_dir)
    restart_and_check(app_id, args.bootstrap, state_dir, topic, expected)

    print(f"done. Data: broker topics {topic}, {topic}-counts, {app_id}-word-counts-changelog; "
          f"state dir {os.path.join(state_dir, app_id)}")


if __name__ == "__main__":
    main()
