"""One hotstate word-count instance for the high-availability scenarios (bench/ha_scenarios.py).

    python bench/ha_runner.py --bootstrap B --app-id A --state-dir D --source S --sink T --name N
        [--group-instance-id ID] [--num-standby-replicas 1] [--acceptable-recovery-lag 10000]
        [--max-warmup-replicas 2] [--probing-rebalance-interval-ms MS] [--guarantee at_least_once]
        [--session-timeout-ms 10000] [--commit-interval-ms 100] [--state-cleanup-delay-ms MS]
        [--sample-ms 20] [--lag-every-ms 50] [--config JSON]

The app: String words from S, ``group_by_key().count()`` into the RocksDB store "word-counts", INT64 counts
to T; built with the public API only. SIGTERM (or SIGINT) closes it gracefully; the scenarios SIGKILL it to
crash it.

It reports on stdout, one JSON object a line, each with ``t`` (wall-clock seconds, ``time.time()``: the
scenario compares them with its own clock) and ``ev``:

- ``start``: ``pid``, ``name``, the config that matters;
- ``state``: ``state``, on every change of ``app.state``;
- ``tasks``: on every change of the instance's task set or of a task's state, sampled from ``app.tasks()``
  every ``--sample-ms``: ``active`` {task: state}, ``standby`` {task: lag}, ``offsets`` {task: the changelog
  offset its local store holds} (active and standby);
- ``sample``: ``standby`` {task: lag} and ``offsets`` {task: offset} of every task (active and standby),
  when they changed, at most every ``--lag-every-ms``;
- ``restore_start`` / ``restore_batch`` / ``restore_end``: the restore listener (``partition`` of the
  changelog, ``task``, offsets, counts);
- ``standby_start`` / ``standby_batch`` / ``standby_suspended``: the standby update listener (standbys and
  warm-ups: offsets, batch sizes, the changelog end it saw, why it stopped);
- ``closing`` (the signal arrived), ``closed`` (``close()`` returned: ``clean``), ``error``.
"""
from __future__ import annotations

import argparse
import enum
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
SUBTOPOLOGY = 0  # the word count has one sub-topology: task "0_<partition>" owns changelog partition <partition>
_out = threading.Lock()


def emit(ev: str, **fields) -> None:
    line = json.dumps({"t": time.time(), "ev": ev, **fields}, default=_printable)
    with _out:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def _printable(value):
    if isinstance(value, enum.Enum):
        return value.value
    if hasattr(value, "topic") and hasattr(value, "partition"):
        return {"topic": value.topic, "partition": value.partition}
    return repr(value)


def task_of(partition) -> str:
    return f"{SUBTOPOLOGY}_{partition.partition}"


class PrintingRestoreListener(hotstate.RestoreListener):
    def on_restore_start(self, partition, store_name, start_offset, end_offset):
        emit("restore_start", partition=partition.partition, task=task_of(partition), store=store_name,
             start=start_offset, end=end_offset)

    def on_batch_restored(self, partition, store_name, batch_end_offset, num_restored):
        emit("restore_batch", partition=partition.partition, task=task_of(partition), store=store_name,
             batch_end=batch_end_offset, n=num_restored)

    def on_restore_end(self, partition, store_name, total_restored):
        emit("restore_end", partition=partition.partition, task=task_of(partition), store=store_name,
             total=total_restored)


def standby_listener():
    """A StandbyUpdateListener that prints its calls, or None if this hotstate has none."""
    base = getattr(hotstate, "StandbyUpdateListener", None)
    if base is None:
        try:
            from hotstate.observe.listener import StandbyUpdateListener as base
        except ImportError:
            return None

    class PrintingStandbyListener(base):
        def on_update_start(self, partition, store_name, starting_offset, *rest):
            emit("standby_start", partition=partition.partition, task=task_of(partition), store=store_name,
                 start=starting_offset)

        def on_batch_loaded(self, partition, store_name, task_id, batch_end_offset, batch_size,
                            current_end_offset, *rest):
            emit("standby_batch", partition=partition.partition, task=task_of(partition), store=store_name,
                 batch_end=batch_end_offset, n=batch_size, end=current_end_offset)

        def on_update_suspended(self, partition, store_name, store_offset, current_end_offset, reason, *rest):
            emit("standby_suspended", partition=partition.partition, task=task_of(partition), store=store_name,
                 offset=store_offset, end=current_end_offset, reason=reason)

    return PrintingStandbyListener()


def snapshot(app: hotstate.App) -> tuple[dict, dict, dict]:
    active, standby, offsets = {}, {}, {}
    for t in app.tasks():
        try:
            offsets[t.id] = t.stores[STORE].changelog_offset if STORE in t.stores else None
        except Exception:  # a store being closed under us
            offsets[t.id] = None
        if t.standby:
            standby[t.id] = t.lag
        else:
            active[t.id] = t.state.value
    return active, standby, offsets


def monitor(app: hotstate.App, done: threading.Event, sample_s: float, lag_every_s: float) -> None:
    """Samples the app until the main thread is done; reports what changed."""
    last_state = None
    last_shape = None
    last_lags = None
    next_lags = 0.0
    while not done.is_set():
        state = app.state
        if state is not last_state:
            emit("state", state=state.value)
            last_state = state
        try:
            active, standby, offsets = snapshot(app)
        except Exception as exc:  # the task manager changing under us: sample again
            logging.getLogger("ha_runner").debug("tasks() failed: %r", exc)
            time.sleep(sample_s)
            continue
        shape = (active, sorted(standby))
        now = time.monotonic()
        if shape != last_shape:
            emit("tasks", active=active, standby=standby, offsets=offsets)
            last_shape, last_lags, next_lags = shape, (standby, offsets), now + lag_every_s
        elif (standby, offsets) != last_lags and now >= next_lags:
            emit("sample", standby=standby, offsets=offsets)
            last_lags, next_lags = (standby, offsets), now + lag_every_s
        time.sleep(sample_s)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for name in ("bootstrap", "app-id", "state-dir", "source", "sink", "name"):
        ap.add_argument(f"--{name}", required=True)
    ap.add_argument("--group-instance-id", default=None)
    ap.add_argument("--num-standby-replicas", type=int, default=1)
    ap.add_argument("--acceptable-recovery-lag", type=int, default=10_000)
    ap.add_argument("--max-warmup-replicas", type=int, default=2)
    ap.add_argument("--probing-rebalance-interval-ms", type=int, default=600_000)
    ap.add_argument("--guarantee", default="at_least_once")
    ap.add_argument("--session-timeout-ms", type=int, default=10_000)
    ap.add_argument("--commit-interval-ms", type=int, default=100)
    ap.add_argument("--state-cleanup-delay-ms", type=int, default=600_000)
    ap.add_argument("--sample-ms", type=float, default=20)
    ap.add_argument("--lag-every-ms", type=float, default=50)
    ap.add_argument("--close-timeout-s", type=float, default=60)
    ap.add_argument("--config", default="{}", help="more hotstate Config fields, as JSON")
    ap.add_argument("--log-level", default="INFO")
    args = ap.parse_args()
    logging.basicConfig(level=args.log_level, stream=sys.stderr,
                        format="%(asctime)s %(threadName)s %(name)s %(levelname)s %(message)s")

    config = dict(
        app_id=args.app_id,
        bootstrap_servers=args.bootstrap,
        state_dir=args.state_dir,
        processing_guarantee=args.guarantee,
        commit_interval_ms=args.commit_interval_ms,
        session_timeout_ms=args.session_timeout_ms,
        num_standby_replicas=args.num_standby_replicas,
        acceptable_recovery_lag=args.acceptable_recovery_lag,
        max_warmup_replicas=args.max_warmup_replicas,
        probing_rebalance_interval_ms=args.probing_rebalance_interval_ms,
        state_cleanup_delay_ms=args.state_cleanup_delay_ms,
        group_instance_id=args.group_instance_id,
    )
    config.update(json.loads(args.config))
    stop = threading.Event()

    def on_signal(signum, frame):
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    emit("start", pid=os.getpid(), name=args.name,
         config={k: v for k, v in config.items() if k not in ("bootstrap_servers",)})

    app = hotstate.App(**config)
    counts = (app.stream(args.source, key_serde=serde.STRING, value_serde=serde.STRING)
                 .group_by_key()
                 .count(store=STORE))
    counts.to_stream().to(args.sink, value_serde=serde.INT64)
    app.set_restore_listener(PrintingRestoreListener())
    sl = standby_listener()
    if sl is not None and hasattr(app, "set_standby_listener"):
        app.set_standby_listener(sl)
    done = threading.Event()
    watcher = threading.Thread(target=monitor, args=(app, done, args.sample_ms / 1000, args.lag_every_ms / 1000),
                               name="ha-monitor", daemon=True)
    watcher.start()
    rc = 0
    try:
        app.start()
        while not stop.is_set() and app.state not in (hotstate.AppState.ERROR, hotstate.AppState.NOT_RUNNING):
            stop.wait(0.05)
        if app.state is hotstate.AppState.ERROR:
            emit("error", error=repr(app.error()))
            rc = 1
        emit("closing")
    except Exception as exc:
        emit("error", error=repr(exc))
        rc = 1
    finally:
        clean = app.close(timeout_s=args.close_timeout_s)
        time.sleep(args.sample_ms / 1000 * 2)  # let the monitor see the tasks go
        done.set()
        watcher.join(5)
        emit("closed", clean=clean, state=app.state.value)
    sys.exit(rc if clean else 2)


if __name__ == "__main__":
    main()
