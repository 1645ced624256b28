#!/usr/bin/env python3
"""Spike: how often does librdkafka lose a transactional group-coordinator request across broker restarts?

Issue #10 (docs/faults.md, "Found: exactly-once stream threads that hung after a restart"). N transactional
producers loop begin -> produce 10 records -> send_offsets_to_transaction -> commit_transaction (every call with
a 10 s timeout) while the broker is restarted every ~12 s (``scripts/kafka restart`` on its own port). A call
still inside librdkafka 40 s after it began is reported STUCK (its timeout is 10 s), and UNSTUCK if it ever
returns. The summary line counts calls, STUCK calls and the ones still stuck at the end (after a 60 s wait).

    HOTSTATE_KAFKA_PORT=19430 scripts/kafka start
    .venv/bin/python scripts/spikes/txn_stuck_spike.py --port 19430 --seconds 300 [--handling recreate|abort]
        [--producers 8] [--config '{"connections.max.idle.ms": 5000}']

``--handling``: after a failed call, ``recreate`` drops the producer and makes a new one (hotstate's way);
``abort`` calls abort_transaction when the error requires it, retries retriable ones, recreates otherwise.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import threading
import time
import uuid

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

KAFKA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "kafka")
STUCK_S = 40.0
CALL_TIMEOUT_S = 10.0


class Stats:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.calls = self.stuck = self.stuck_now = 0
        self.errors: dict[str, int] = {}

    def error(self, exc: Exception) -> None:
        err = exc.args[0] if exc.args else None
        name = err.name() if hasattr(err, "name") else type(exc).__name__
        with self.lock:
            self.errors[name] = self.errors.get(name, 0) + 1


def call(stats: Stats, what: str, fn, who: int) -> None:
    done, out = threading.Event(), []

    def run() -> None:
        try:
            fn()
        except Exception as exc:  # handed to the caller
            out.append(exc)
        finally:
            done.set()

    began = time.monotonic()
    threading.Thread(target=run, daemon=True).start()
    if not done.wait(STUCK_S):
        with stats.lock:
            stats.stuck += 1
            stats.stuck_now += 1
        print(f"STUCK producer {who} {what} at {time.strftime('%H:%M:%S')}", flush=True)
        done.wait()
        with stats.lock:
            stats.stuck_now -= 1
        print(f"UNSTUCK producer {who} {what} after {time.monotonic() - began:.0f}s", flush=True)
    with stats.lock:
        stats.calls += 1
    if out:
        raise out[0]


def worker(args, bootstrap: str, topic: str, who: int, stats: Stats, stop: threading.Event) -> None:
    meta = Consumer({"bootstrap.servers": bootstrap, "group.id": f"g-{topic}-{who}",
                     "reconnect.backoff.max.ms": 1000}).consumer_group_metadata()

    def make() -> Producer:
        p = Producer({"bootstrap.servers": bootstrap, "transactional.id": f"t-{topic}-{who}",
                      "transaction.timeout.ms": 10000, "linger.ms": 5, "reconnect.backoff.max.ms": 1000,
                      "log_level": 2, **args.config})
        while True:
            try:
                p.init_transactions(CALL_TIMEOUT_S)
                return p
            except KafkaException:
                time.sleep(0.5)

    p, offset = make(), 0
    while not stop.is_set():
        try:
            p.begin_transaction()
            for k in range(10):
                p.produce(topic, b"v", str(k).encode(), partition=who % 4)
            offset += 10
            offsets = [TopicPartition(topic, who % 4, offset)]
            call(stats, "send_offsets", lambda: p.send_offsets_to_transaction(offsets, meta, CALL_TIMEOUT_S), who)
            call(stats, "commit", lambda: p.commit_transaction(CALL_TIMEOUT_S), who)
        except KafkaException as exc:
            stats.error(exc)
            err = exc.args[0]
            if args.handling == "abort" and err.txn_requires_abort():
                try:
                    call(stats, "abort", lambda: p.abort_transaction(CALL_TIMEOUT_S), who)
                    continue
                except KafkaException:
                    pass
            elif args.handling == "abort" and err.retriable():
                time.sleep(0.2)
                continue
            p = None
            p = make()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--port", default=os.environ.get("HOTSTATE_KAFKA_PORT", "19430"))
    ap.add_argument("--seconds", type=float, default=300)
    ap.add_argument("--producers", type=int, default=8)
    ap.add_argument("--handling", choices=["recreate", "abort"], default="recreate")
    ap.add_argument("--config", type=json.loads, default={}, help="extra librdkafka settings (JSON)")
    args = ap.parse_args()
    bootstrap = f"127.0.0.1:{args.port}"
    topic = "txn-stuck-" + uuid.uuid4().hex[:6]
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, 4, 1)])[topic].result(30)
    stats, stop = Stats(), threading.Event()
    for who in range(args.producers):
        threading.Thread(target=worker, args=(args, bootstrap, topic, who, stats, stop), daemon=True).start()
    began, restarts = time.monotonic(), 0
    while time.monotonic() - began < args.seconds:
        time.sleep(12)
        subprocess.run([KAFKA, "restart"], env={**os.environ, "HOTSTATE_KAFKA_PORT": str(args.port)},
                       capture_output=True, check=True)
        restarts += 1
        print(f"restart {restarts} at {time.strftime('%H:%M:%S')}: calls={stats.calls} stuck={stats.stuck}",
              flush=True)
    stop.set()
    time.sleep(60)
    print(f"summary: handling={args.handling} config={json.dumps(args.config)} restarts={restarts} "
          f"calls={stats.calls} stuck={stats.stuck} still_stuck={stats.stuck_now} errors={stats.errors}", flush=True)
    os._exit(0)  # stuck calls keep their threads inside librdkafka


if __name__ == "__main__":
    main()
