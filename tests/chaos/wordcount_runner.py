"""The word-count app as a process that the chaos tests kill with SIGKILL (or stop with SIGSTOP).

    python wordcount_runner.py --bootstrap B --app-id A --state-dir D --source S --sink T [--guarantee G]
        [--snapshot-store URL --snapshot-options JSON --snapshot-interval-ms N --snapshot-put-delay-ms N]
        [--windowed SIZE,ADVANCE,GRACE,RETENTION | --sessions GAP,GRACE,RETENTION] [--suppress] [--rekey]
        [--table TOPIC]

Builds the app with the public API (commit_interval_ms=100, the given processing guarantee, at_least_once
by default; with ``--snapshot-store`` it publishes store snapshots there) and calls ``app.run()``.
``--snapshot-put-delay-ms`` slows every file upload of the snapshot uploader by that much (a test hook: the
uploader is then always busy, with a checkpoint in flight and the next one queued). ``--windowed``: a windowed
count (hopping windows, milliseconds) in the same store name instead of the plain count; its output keys are
Kafka Streams' time-windowed bytes. ``--sessions``: a session count the same way (session-windowed keys).
``--suppress``: the sink gets the windowed count's final results (``suppress_until_window_closes``, buffer store
``word-counts-suppress``) instead of its updates. ``--rekey``: the input's key is not the word (the word is the
value): ``group_by(value)`` re-keys it through a repartition topic before counting. ``--table TOPIC``: the input
is keyed by an order id, re-keyed by the word (``select_key``) and joined (inner) with the table ``TOPIC`` (store
``allowed``; String keys: the words, any value) before counting: only words the table holds are counted.
It reports on stdout, one JSON object a line:

- ``{"ev": "restore_start" | "restore_batch" | "restore_end", ...}``: the restore listener's calls;
- ``{"ev": "running", "offsets": {partition: offset}}``: the app became RUNNING; the in-store changelog
  offsets then;
- ``{"ev": "offsets", "offsets": {...}}``: the in-store changelog offsets, whenever they change while
  RUNNING. Such an offset is set only after the RocksDB write (with WAL) returned, so it survives a kill -9
  of this process: a restart must not restore from below it.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import threading
import time

import hotstate
from hotstate import serde

STORE = "word-counts"
_out = threading.Lock()


def emit(**event) -> None:
    with _out:
        sys.stdout.write(json.dumps(event) + "\n")
        sys.stdout.flush()


class PrintingListener(hotstate.RestoreListener):
    def on_restore_start(self, partition, store_name, start_offset, end_offset):
        emit(ev="restore_start", partition=partition.partition, store=store_name, start=start_offset, end=end_offset)

    def on_batch_restored(self, partition, store_name, batch_end_offset, num_restored):
        emit(ev="restore_batch", partition=partition.partition, store=store_name, batch_end=batch_end_offset,
             n=num_restored)

    def on_restore_end(self, partition, store_name, total_restored):
        emit(ev="restore_end", partition=partition.partition, store=store_name, total=total_restored)


def offsets(app: hotstate.App) -> dict[int, int | None]:
    return {t.stores[STORE].changelog.partition: t.stores[STORE].changelog_offset for t in app.tasks()
            if STORE in t.stores}  # with --rekey the tasks before the repartition topic have no store


def monitor(app: hotstate.App) -> None:
    running_seen = False
    last = None
    while app.state not in (hotstate.AppState.NOT_RUNNING, hotstate.AppState.ERROR):
        if app.state is hotstate.AppState.RUNNING:
            now = offsets(app)
            if not running_seen:
                running_seen = True
                emit(ev="running", offsets=now)
            elif now != last:
                emit(ev="offsets", offsets=now)
            last = now
        time.sleep(0.02)


def slow_uploads(delay_s: float) -> None:
    from hotstate.snapshot.objects import ObjectStore

    put_file = ObjectStore.put_file

    def slow(self, name, path):
        time.sleep(delay_s)
        return put_file(self, name, path)

    ObjectStore.put_file = slow


def main() -> None:
    ap = argparse.ArgumentParser()
    for name in ("bootstrap", "app-id", "state-dir", "source", "sink"):
        ap.add_argument(f"--{name}", required=True)
    ap.add_argument("--guarantee", default="at_least_once")
    ap.add_argument("--snapshot-store")
    ap.add_argument("--snapshot-options", default="{}")
    ap.add_argument("--snapshot-interval-ms", type=int, default=300_000)
    ap.add_argument("--snapshot-put-delay-ms", type=int, default=0)
    ap.add_argument("--windowed")
    ap.add_argument("--sessions")
    ap.add_argument("--suppress", action="store_true")
    ap.add_argument("--rekey", action="store_true")
    ap.add_argument("--table")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(threadName)s %(name)s %(levelname)s %(message)s")

    app = hotstate.App(
        app_id=args.app_id,
        bootstrap_servers=args.bootstrap,
        state_dir=args.state_dir,
        processing_guarantee=args.guarantee,
        commit_interval_ms=100,
        # A killed member stays in the group until its session times out; keep restarts quick.
        session_timeout_ms=6000,
        consumer_config={"heartbeat.interval.ms": 1000},
        snapshot_store=args.snapshot_store,
        snapshot_store_options=json.loads(args.snapshot_options),
        snapshot_interval_ms=args.snapshot_interval_ms,
    )
    if args.snapshot_put_delay_ms:
        slow_uploads(args.snapshot_put_delay_ms / 1000)
    words = app.stream(args.source, key_serde=serde.STRING, value_serde=serde.STRING)
    if args.table:
        allowed = app.table(args.table, key_serde=serde.STRING, value_serde=serde.STRING, store="allowed")
        words = (words.select_key(lambda k, v: v, key_serde=serde.STRING)
                      .join(allowed, lambda word, _: word))
        grouped = words.group_by_key(value_serde=serde.STRING)
    elif args.rekey:
        grouped = words.group_by(lambda k, v: v, key_serde=serde.STRING)
    else:
        grouped = words.group_by_key()
    if args.windowed:
        size, advance, grace, retention = (int(x) for x in args.windowed.split(","))
        grouped = grouped.windowed_by(hotstate.windows.hopping(size, advance, grace, retention_ms=retention))
    elif args.sessions:
        gap, grace, retention = (int(x) for x in args.sessions.split(","))
        grouped = grouped.windowed_by(hotstate.windows.session(gap, grace, retention_ms=retention))
    counts = grouped.count(store=STORE)
    if args.suppress:
        counts = counts.suppress_until_window_closes()
    counts.to_stream().to(args.sink, value_serde=serde.INT64)
    app.set_restore_listener(PrintingListener())
    threading.Thread(target=monitor, args=(app,), name="monitor", daemon=True).start()
    app.run()
    emit(ev="closed")


if __name__ == "__main__":
    main()
