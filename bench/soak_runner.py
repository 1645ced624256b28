"""One hotstate word-count instance for the soak (bench/soak.py).

    python bench/soak_runner.py --bootstrap B --app-id A --state-dir D --source S --sink T --name N
        [--guarantee at_least_once] [--num-standby-replicas 1] [--session-timeout-ms 10000]
        [--commit-interval-ms 100] [--report-s 1]

The app: String words from S, ``group_by_key().count()`` into the RocksDB store "word-counts", INT64 counts
to T; built with the public API only. SIGTERM (or SIGINT) closes it gracefully; the soak also SIGKILLs it.

It reports on stdout, one JSON object a line, each with ``t`` (``time.time()``) and ``ev``:

- ``start``: ``pid``, ``name``;
- ``state``: ``state``, on every change of ``app.state``;
- ``metrics`` every ``--report-s``: ``processed`` (records_processed_total), ``rebalances``, ``commits``,
  ``restored`` (restore_records_total), ``active`` and ``standby`` (task counts), ``stores`` (open RocksDB
  stores) and ``rocksdb_mb`` (what they hold in memtables, block cache and table readers), ``state``;
- ``closing`` (the signal arrived), ``closed`` (``close()`` returned: ``clean``), ``error``.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time

import hotstate
from hotstate import serde

STORE = "word-counts"
_out = threading.Lock()


def emit(ev: str, **fields) -> None:
    line = json.dumps({"t": time.time(), "ev": ev, **fields}, default=repr)
    with _out:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


_ROCKSDB_PROPERTIES = ("rocksdb.size-all-mem-tables", "rocksdb.block-cache-usage", "rocksdb.estimate-table-readers-mem")


def rocksdb_memory(app: hotstate.App) -> tuple[int, int]:
    """(open RocksDB stores, bytes they hold in memtables, block cache and table readers), over the active and
    standby tasks of this instance. Reads hotstate internals (there is no public accessor): measurement only,
    so the soak can tell RocksDB's bounded buffers from the rest of the process's memory."""
    tm = getattr(getattr(app, "_thread", None), "task_manager", None)
    if tm is None:
        return 0, 0
    stores = total = 0
    for task in list(tm.tasks.values()) + list(tm.standbys.values()):
        for store in list(task.stores.values()):
            db = getattr(store.backend, "_db", None)
            if db is None:
                continue
            try:
                total += sum(db.property_int_value(p) or 0 for p in _ROCKSDB_PROPERTIES)
                stores += 1
            except Exception:  # closed under us by the thread that owns it
                pass
    return stores, total


def report(app: hotstate.App, done: threading.Event, every_s: float) -> None:
    last_state = None
    next_metrics = 0.0
    while not done.is_set():
        state = app.state
        if state is not last_state:
            emit("state", state=state.value)
            last_state = state
        now = time.monotonic()
        if now >= next_metrics:
            next_metrics = now + every_s
            try:
                tasks = app.tasks()
                m = app.metrics()
                stores, rocksdb_bytes = rocksdb_memory(app)
                emit("metrics", processed=m["records_processed_total"], rebalances=m["rebalances_total"],
                     commits=m["commit_total"], restored=m["restore_records_total"],
                     active=sum(1 for t in tasks if not t.standby), standby=sum(1 for t in tasks if t.standby),
                     stores=stores, rocksdb_mb=round(rocksdb_bytes / 2**20, 1), state=state.value)
            except Exception as exc:  # the task manager changing under us: report next time
                logging.getLogger("soak_runner").debug("metrics failed: %r", exc)
        done.wait(0.05)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for name in ("bootstrap", "app-id", "state-dir", "source", "sink", "name"):
        ap.add_argument(f"--{name}", required=True)
    ap.add_argument("--guarantee", default="at_least_once")
    ap.add_argument("--num-standby-replicas", type=int, default=1)
    ap.add_argument("--session-timeout-ms", type=int, default=10_000)
    ap.add_argument("--commit-interval-ms", type=int, default=100)
    ap.add_argument("--report-s", type=float, default=1.0)
    ap.add_argument("--close-timeout-s", type=float, default=60)
    ap.add_argument("--log-level", default="INFO")
    args = ap.parse_args()
    logging.basicConfig(level=args.log_level, stream=sys.stderr,
                        format="%(asctime)s %(threadName)s %(name)s %(levelname)s %(message)s")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    emit("start", pid=os.getpid(), name=args.name)

    app = hotstate.App(
        app_id=args.app_id,
        bootstrap_servers=args.bootstrap,
        state_dir=args.state_dir,
        processing_guarantee=args.guarantee,
        commit_interval_ms=args.commit_interval_ms,
        session_timeout_ms=args.session_timeout_ms,
        num_standby_replicas=args.num_standby_replicas,
    )
    counts = (app.stream(args.source, key_serde=serde.STRING, value_serde=serde.STRING)
                 .group_by_key()
                 .count(store=STORE))
    counts.to_stream().to(args.sink, value_serde=serde.INT64)
    done = threading.Event()
    reporter = threading.Thread(target=report, args=(app, done, args.report_s), name="soak-report", daemon=True)
    reporter.start()
    rc = 0
    try:
        app.start()
        while not stop.is_set() and app.state not in (hotstate.AppState.ERROR, hotstate.AppState.NOT_RUNNING):
            stop.wait(0.1)
        if app.state is hotstate.AppState.ERROR:
            emit("error", error=repr(app.error()))
            rc = 1
        emit("closing")
    except Exception as exc:
        emit("error", error=repr(exc))
        rc = 1
    finally:
        t0 = time.monotonic()
        clean = app.close(timeout_s=args.close_timeout_s)
        done.set()
        reporter.join(5)
        emit("closed", clean=clean, state=app.state.value, close_s=round(time.monotonic() - t0, 3))
    sys.exit(rc if clean else 2)


if __name__ == "__main__":
    main()
