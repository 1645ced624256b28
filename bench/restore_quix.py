"""bench/restore.py's Quix Streams child: a cold recovery of one RocksDB store, ``app.run()`` until its
recovery is done. Runs in its own venv (quixstreams pins an older confluent-kafka than hotstate).

Reads the job (JSON) from argv[1]; prints one JSON line. The changelog is filled in Quix's format (raw
key/value, headers ``__column_family__`` and ``__processed_tp_offsets__``), the source topic exists, empty,
and the group's committed source offsets are past the processed offsets of the headers (so Quix applies
every changelog record, as after a clean commit)."""
from __future__ import annotations

import json
import logging
import os
import sys
import time

from quixstreams import Application
from rocksdict import AccessType, Options, Rdict


def main() -> None:
    job = json.load(open(sys.argv[1]))
    sample = {bytes.fromhex(k): bytes.fromhex(v) for k, v in json.load(open(job["sample_file"])).items()}
    app = Application(broker_address=job["bootstrap"], consumer_group=job["app_id"], state_dir=job["state_dir"],
                      auto_offset_reset="earliest", loglevel="WARNING", auto_create_topics=True)
    topic = app.topic(job["source"], key_deserializer="bytes", value_deserializer="bytes")
    sdf = app.dataframe(topic)
    sdf.update(lambda value, state: state.set("v", value), stateful=True)

    manager = app._state_manager  # the recovery runs in manager.do_recovery() on the processing loop
    recover = manager.do_recovery
    marks: dict[str, float] = {}

    def timed_recovery() -> None:
        marks.setdefault("recovery_start", time.perf_counter())
        recover()
        marks["recovery_end"] = time.perf_counter()
        app.stop()

    manager.do_recovery = timed_recovery
    t0 = time.perf_counter()
    app.run()
    if "recovery_end" not in marks:
        print(json.dumps({"error": "quix stopped without a recovery"}))
        sys.exit(1)
    seconds = marks["recovery_end"] - t0
    found, wrong = _check(job["state_dir"], sample)
    print(json.dumps({"seconds": seconds, "restore_seconds": marks["recovery_end"] - marks["recovery_start"],
                      "records": job["records"], "sample_checked": len(sample), "sample_wrong": wrong,
                      "store_dirs": found}))


def _check(state_dir: str, sample: dict[bytes, bytes]) -> tuple[int, int]:
    """Opens every RocksDB directory Quix left (read-only) and counts sampled keys without their final value."""
    got: dict[bytes, bytes] = {}
    found = 0
    for root, dirs, files in os.walk(state_dir):
        if "CURRENT" not in files:
            continue
        found += 1
        cfs = {name: Options(raw_mode=True) for name in Rdict.list_cf(root) if name != "default"}
        db = Rdict(root, Options(raw_mode=True), column_families=cfs, access_type=AccessType.read_only())
        try:
            for k in sample:
                v = db.get(k)
                if v is not None:
                    got[k] = v
        finally:
            db.close()
    return found, sum(1 for k, v in sample.items() if got.get(k) != v)


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    main()
