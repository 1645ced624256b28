"""bench/restore.py's hotstate child: a cold restore of one RocksDB store through App, start -> RUNNING.

Reads the job (JSON) from argv[1]; prints one JSON line. The changelog ``<app_id>-store-changelog`` is filled
and the source topic exists, empty, with the same partition count.

With ``"windowed": true`` (bench/restore.py --windowed) the store is a windowed count,
``group_by_key().windowed_by(windows.tumbling(size, grace, retention)).count(store="store")``: the line adds the
offsets its retention-aware restore seeked past (``restore_skipped_records_total``), the offsets announced by
``on_restore_start`` and the windows of the sampled keys (``sample_file``: {key hex: {"from_ms", "to_ms", ...}})
as ``store.fetch`` returns them, written to ``sample_out``."""
from __future__ import annotations

import json
import os
import resource
import sys
import threading
import time

import hotstate
from hotstate import serde, windows


class _Window(hotstate.RestoreListener):
    """First on_restore_start to last on_restore_end: the restore itself, without group join."""

    def __init__(self) -> None:
        self.first_start = self.last_end = None
        self.restored = 0
        self.announced = 0  # end - start offsets of every on_restore_start
        self.download_s = 0.0  # summed over store partitions
        self.download_first_start = self.download_last_end = None  # the window, however the downloads overlap

    def on_snapshot_downloaded(self, partition, store_name, snapshot_offset, num_bytes, seconds):
        now = time.perf_counter()
        self.download_s += seconds
        if self.download_first_start is None or now - seconds < self.download_first_start:
            self.download_first_start = now - seconds
        self.download_last_end = now

    def on_restore_start(self, partition, store_name, start_offset, end_offset):
        now = time.perf_counter()
        if self.first_start is None or now < self.first_start:
            self.first_start = now
        self.announced += end_offset - start_offset

    def on_restore_end(self, partition, store_name, total_restored):
        self.last_end = time.perf_counter()
        self.restored += total_restored


def _cpu_s() -> float:
    """CPU seconds of this process, all threads (librdkafka's and RocksDB's included)."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def _thread_cpu_s() -> dict[str, float]:
    """CPU seconds per thread name (Linux): where the process spent its CPU."""
    out: dict[str, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        name = stat[stat.index("(") + 1:stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2:].split()
        name = name.rstrip("0123456789")
        out[name] = round(out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / tick, 2)
    return out


def _updater_cpu_s() -> float | None:
    """CPU seconds of the state updater's thread (the restore's thread; Linux), None if it is not found."""
    tick = os.sysconf("SC_CLK_TCK")
    for t in threading.enumerate():
        if t.name.startswith("hotstate-state-updater") and t.native_id is not None:
            try:
                with open(f"/proc/self/task/{t.native_id}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                return None
            return round((int(fields[11]) + int(fields[12])) / tick, 2)
    return None


class _NoTimeline:
    def mark(self, what: str, reset: bool = False) -> None:
        pass


def _timeline(job: dict):
    """bench/start_timeline.py, installed when the job names a file for it (bench/restore.py --timeline)."""
    if not job.get("timeline"):
        return _NoTimeline()
    import start_timeline
    start_timeline.install(job["timeline"])
    return start_timeline


def main() -> None:
    job = json.load(open(sys.argv[1]))
    if job.get("windowed"):
        windowed(job)
        return
    sample = {bytes.fromhex(k): bytes.fromhex(v) for k, v in json.load(open(job["sample_file"])).items()}
    app = hotstate.App(app_id=job["app_id"], bootstrap_servers=job["bootstrap"], state_dir=job["state_dir"],
                       commit_interval_ms=60_000, **job.get("config", {}))
    app.stream(job["source"]).process(lambda record, ctx: None,
                                      stores=[hotstate.StoreSpec("store", serde.BYTES, serde.BYTES)])
    window = _Window()
    app.set_restore_listener(window)
    timeline = _timeline(job)
    t0, cpu0 = time.perf_counter(), _cpu_s()
    timeline.mark("App.start() called", reset=True)
    app.start()
    timeline.mark("App.start() returned")
    try:
        app.wait_until_running(timeout_s=job["timeout_s"])
        seconds, cpu_seconds = time.perf_counter() - t0, _cpu_s() - cpu0
        timeline.mark("wait_until_running() returned")
        threads = _thread_cpu_s()
        records = sum(s.restored_records for t in app.tasks() for s in t.stores.values())
        store = app.store("store")
        wrong = sum(1 for k, v in sample.items() if store.get(k) != v)
        download_bytes = app.metrics()["restore_download_bytes_total"]
    finally:
        app.close()
    download_window = (None if window.download_first_start is None
                       else round(window.download_last_end - window.download_first_start, 3))
    print(json.dumps({"seconds": seconds, "restore_seconds": window.last_end - window.first_start,
                      "cpu_seconds": cpu_seconds, "thread_cpu_seconds": threads, "records": records,
                      "sample_checked": len(sample), "sample_wrong": wrong, "download_bytes": download_bytes,
                      "download_seconds": round(window.download_s, 3), "download_window_seconds": download_window}))


def windowed(job: dict) -> None:
    sample = json.load(open(job["sample_file"]))
    app = hotstate.App(app_id=job["app_id"], bootstrap_servers=job["bootstrap"], state_dir=job["state_dir"],
                       commit_interval_ms=60_000, **job.get("config", {}))
    (app.stream(job["source"], key_serde=serde.BYTES, value_serde=serde.BYTES)
        .group_by_key()
        .windowed_by(windows.tumbling(size_ms=job["size_ms"], grace_ms=job["grace_ms"],
                                      retention_ms=job["retention_ms"]))
        .count(store="store"))
    window = _Window()
    app.set_restore_listener(window)
    t0, cpu0 = time.perf_counter(), _cpu_s()
    app.start()
    try:
        app.wait_until_running(timeout_s=job["timeout_s"])
        seconds, cpu_seconds = time.perf_counter() - t0, _cpu_s() - cpu0
        threads = _thread_cpu_s()
        updater_cpu = _updater_cpu_s()
        records = sum(s.restored_records for t in app.tasks() for s in t.stores.values())
        skipped = app.metrics()["restore_skipped_records_total"]
        store = app.store("store")
        found = {k: [[start, count] for start, count in store.fetch(bytes.fromhex(k), q["from_ms"], q["to_ms"])]
                 for k, q in sample.items()}
    finally:
        app.close()
    with open(job["sample_out"], "w") as f:
        json.dump(found, f)
    print(json.dumps({"seconds": seconds, "restore_seconds": window.last_end - window.first_start,
                      "cpu_seconds": cpu_seconds, "thread_cpu_seconds": threads, "records": records,
                      "records_announced": window.announced, "skipped": skipped, "sample_checked": len(found),
                      "updater_cpu_seconds": updater_cpu}))


if __name__ == "__main__":
    main()
