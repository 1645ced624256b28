"""bench/restore.py's floors: what one Python process can do at best on each half of a restore.

  read:  librdkafka (confluent-kafka) reads the whole changelog into Python (key and value bytes of every
         record), writing nothing;
  write: rocksdict writes the same records without Kafka: one database per partition, WriteBatches of
         ``batch`` records, WAL off, one flush per database at the end (as durable as a finished restore).

Reads the job (JSON) from argv[2]; argv[1] is the floor; prints one JSON line."""
from __future__ import annotations

import json
import os
import sys
import time

from confluent_kafka import Consumer, KafkaError, KafkaException
from confluent_kafka import TopicPartition as KTopicPartition
from rocksdict import Options, Rdict, WriteBatch, WriteOptions

import changelog_data

# The throughput settings of hotstate's restore consumer (kafka/clients.py, defaults), so the floor reads
# like it; fetch.queue.backoff.ms matters most (librdkafka's 1000 ms default idles a fast reader).
READ_CONFIG = {
    "fetch.wait.max.ms": 50,
    "fetch.max.bytes": 64 * 1024 * 1024,
    "max.partition.fetch.bytes": 8 * 1024 * 1024,
    "queued.max.messages.kbytes": 64 * 1024,
    "fetch.queue.backoff.ms": 10,
}
CONSUME_RECORDS = 50_000


def read(job: dict) -> dict:
    consumer = Consumer({"bootstrap.servers": job["bootstrap"], "group.id": f"{job['app_id']}-floor-read",
                         "enable.auto.commit": False, "isolation.level": "read_committed", **READ_CONFIG})
    topic = job["changelog"]
    ends = {}
    for p in range(job["partitions"]):
        low, high = consumer.get_watermark_offsets(KTopicPartition(topic, p), timeout=30)
        if high > low:
            ends[p] = high
    t0 = time.perf_counter()
    consumer.assign([KTopicPartition(topic, p, 0) for p in ends])
    records = 0
    pending = dict(ends)
    while pending:
        msgs = consumer.consume(CONSUME_RECORDS, 0.1)
        batch = []
        for m in msgs:
            if m.error() is not None:
                if m.error().code() == KafkaError._PARTITION_EOF:
                    continue
                raise KafkaException(m.error())
            batch.append((m.key(), m.value()))
        records += len(batch)
        if msgs:
            last = {}
            for m in msgs:
                last[m.partition()] = m.offset()
            for p, off in last.items():
                if off + 1 >= pending.get(p, 1 << 62):
                    del pending[p]
    seconds = time.perf_counter() - t0
    consumer.close()
    return {"seconds": seconds, "records": records}


def write(job: dict) -> dict:
    shape = changelog_data.Shape(job["keys"], job["partitions"], job["value_bytes"], job["update_fraction"])
    parts = changelog_data.by_partition(shape)
    batch_records = job.get("batch_records", 20_000)
    wal_off = WriteOptions()
    wal_off.disable_wal = True
    seconds = 0.0
    records = 0
    for p, recs in enumerate(parts):
        path = os.path.join(job["state_dir"], f"floor-write-{p}")
        opts = Options(raw_mode=True)
        opts.create_if_missing(True)
        db = Rdict(path, opts)
        t0 = time.perf_counter()
        for i in range(0, len(recs), batch_records):
            wb = WriteBatch(raw_mode=True)
            for k, v in recs[i:i + batch_records]:
                wb.put(k, v)
            db.write(wb, wal_off)
        db.flush()
        seconds += time.perf_counter() - t0
        records += len(recs)
        db.close()
        parts[p] = []
    return {"seconds": seconds, "records": records}


def main() -> None:
    floor, job = sys.argv[1], json.load(open(sys.argv[2]))
    out = read(job) if floor == "read" else write(job)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
