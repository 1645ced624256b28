"""Broker faults under running word-count apps: the pieces shared by test_broker_restart.py (a single broker
restarted with ``scripts/kafka restart``) and test_cluster_node_kill.py (one node of a three-node cluster
killed with ``kill -9``).

Each fault hits several deployments of the word-count app at once, each in its own app id and topics, all
in this process:

- ``Processing``: one instance processing a steady input;
- ``Standby``: two instances with ``num_standby_replicas=1``, both processing, each tailing a standby of the
  other's tasks;
- ``Restoring``: one instance restoring a changelog of 200k records from an empty state dir. Its restore
  listener holds the restore thread after a few batches until the fault has happened (``release()``), so
  the restore is provably under way when the broker goes: started, not ended, most of it still to fetch
  (the restore consumer prefetches at most 1 MiB, so the rest must come from the broker after the fault).

A ``Feeder`` thread produces to every deployment's input throughout and keeps the true counts. After the
fault each deployment must recover by itself (no restart of the app): RUNNING, committing again, restores
ended, standbys tailing again. Then the output (read_committed) is judged: under exactly_once_v2 each word's
values are exactly 1..n; under at_least_once its last value is at least n (nothing lost).
"""
from __future__ import annotations

import logging
import os
import random
import struct
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

import hotstate
from kafka_helpers import (KAFKA_SCRIPT, Kafka, RecordingListener, build_word_count, true_counts, unique,
                           wait_for, word_records, words)
from scenario import output_sequences

PARTITIONS = 4
STORE = "word-counts"
RECOVERY_TIMEOUT_S = 120

log = logging.getLogger("tests.faults")


# ---------------------------------------------------------------------------------------------------------
# The test's own broker or cluster, through scripts/kafka on a port of its own.

class BrokerCtl:
    def __init__(self, port: str, brokers: int = 1):
        self.port, self.brokers = str(port), brokers
        self.env = {**os.environ, "HOTSTATE_KAFKA_PORT": self.port}

    def run(self, *args: str, timeout_s: float = 300) -> str:
        proc = subprocess.run([str(KAFKA_SCRIPT), *args], capture_output=True, text=True, timeout=timeout_s,
                              env=self.env)
        assert proc.returncode == 0, (f"scripts/kafka {' '.join(args)} on port {self.port} failed:\n"
                                      f"{proc.stdout}\n{proc.stderr}")
        lines = proc.stdout.strip().splitlines()
        return lines[-1] if lines else ""

    def start(self) -> str:
        return self.run("start", "--brokers", str(self.brokers))

    def reset(self) -> None:
        keep = os.environ.get("HOTSTATE_FAULT_BROKER_LOGS")  # a directory: the broker's log is kept there
        if keep:
            import glob
            import shutil
            cache = os.environ.get("HOTSTATE_CACHE", os.path.expanduser("~/.cache/hotstate"))
            for path in glob.glob(f"{cache}/kafka-*-{self.port}/**/server.log*", recursive=True):
                shutil.copy(path, os.path.join(keep, f"{int(time.time())}-{path.replace('/', '_')}"))
        self.run("reset")

    def restart_async(self) -> subprocess.Popen:
        """``scripts/kafka restart`` in the background; its stderr says "stopped" once the broker is gone."""
        return subprocess.Popen([str(KAFKA_SCRIPT), "restart"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env=self.env)

    def kafka(self, bootstrap: str) -> "FaultKafka":
        # Produce calls wait out an outage: a broker restart or a node's fencing takes ~10 s.
        return FaultKafka(bootstrap, AdminClient({"bootstrap.servers": bootstrap}), timeout_s=60)


class FaultKafka(Kafka):
    def close_producer(self) -> None:
        """Drops the test's producer: left alive it would retry the reset broker for as long as the
        process lives."""
        if self._producer is not None:
            self._producer.flush(5)
            self._producer = None


def create_topic(kafka: Kafka, prefix: str, partitions: int = PARTITIONS, config: dict | None = None,
                 name: str | None = None) -> str:
    """A topic with the broker's default replication factor (3 on the cluster, 1 on a single broker)."""
    name = name or unique(prefix)
    kafka.admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=-1,
                                        config=config or {})])[name].result(timeout=30)
    wait_for(lambda: kafka._partition_count(name) == partitions and kafka._watermarks_ok(name, partitions),
             f"topic {name} to serve", 30)
    return name


class WipeWatch(logging.Handler):
    """Counts hotstate's warnings that it wipes a store (every wipe path logs 'wiping')."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        msg = record.getMessage()
        if "wiping" in msg:
            self.messages.append(msg)

    def __enter__(self) -> "WipeWatch":
        logging.getLogger("hotstate").addHandler(self)
        return self

    def __exit__(self, *exc) -> None:
        logging.getLogger("hotstate").removeHandler(self)


# ---------------------------------------------------------------------------------------------------------
# Input.

class Feeder:
    """Produces word records to each source on one thread until stopped, keeping the true counts per source."""

    def __init__(self, kafka: Kafka, sources: list[str], seed: int, batch: int = 30, vocabulary: int = 400):
        self._kafka, self._sources, self._batch = kafka, sources, batch
        self._rng = random.Random(seed)
        self._vocab = words(vocabulary)
        self._truth: dict[str, Counter] = {s: Counter() for s in sources}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.errors: list[BaseException] = []
        self._thread = threading.Thread(target=self._run, name="feeder", daemon=True)

    def produce(self, source: str, n: int) -> None:
        recs = word_records(self._rng, self._vocab, n)
        self._kafka.produce(source, recs, partitions=PARTITIONS, timeout_s=240)  # waits out an outage
        with self._lock:
            self._truth[source].update(true_counts(recs))

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                for source in self._sources:
                    self.produce(source, self._batch)
                time.sleep(0.05)
        except BaseException as exc:  # surfaced by the test through .errors
            self.errors.append(exc)

    def start(self) -> None:
        self._thread.start()

    def halt(self) -> None:
        """Stops producing without judging (for a test's clean-up)."""
        self._stop.set()
        self._thread.join(120) if self._thread.is_alive() else None

    def stop(self, timeout_s: float = 120) -> dict[str, Counter]:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)
        assert not self._thread.is_alive(), "the feeder did not stop"
        assert not self.errors, f"producing the input failed: {self.errors}"
        with self._lock:
            return {s: Counter(c) for s, c in self._truth.items()}


# ---------------------------------------------------------------------------------------------------------
# Deployments.

class StandbyEvents(hotstate.StandbyUpdateListener):
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.batches: list[float] = []  # monotonic time of each on_batch_loaded
        self.suspended: list[tuple] = []

    def on_update_start(self, partition, store_name, starting_offset):  # noqa: ANN001
        pass

    def on_batch_loaded(self, partition, store_name, task_id, batch_end_offset, batch_size, current_end_offset):  # noqa: ANN001
        with self.lock:
            self.batches.append(time.monotonic())

    def on_update_suspended(self, partition, store_name, store_offset, current_end_offset, reason):  # noqa: ANN001
        with self.lock:
            self.suspended.append((partition.partition, store_offset, reason))

    def batches_since(self, t: float) -> int:
        with self.lock:
            return sum(1 for b in self.batches if b >= t)


class GatedRestoreListener(RecordingListener):
    """Records the restore; once the restores of ``partitions`` partitions started and ``hold_after`` batches
    were restored, it holds the restore thread until ``release()`` (at most ``hold_max_s``): the fault then
    comes while the restore is under way."""

    def __init__(self, partitions: int = PARTITIONS, hold_after: int = 3, hold_max_s: float = 120) -> None:
        super().__init__()
        self.gate = threading.Event()
        self._partitions, self._hold_after, self._hold_max_s = partitions, hold_after, hold_max_s

    def on_batch_restored(self, partition, store_name, batch_end_offset, num_restored):  # noqa: ANN001
        super().on_batch_restored(partition, store_name, batch_end_offset, num_restored)
        if len(self.of("start")) >= self._partitions and len(self.of("batch")) >= self._hold_after:
            self.gate.wait(self._hold_max_s)

    def release(self) -> None:
        self.gate.set()


@dataclass
class Figures:
    scenario: str
    guarantee: str
    words: int = 0
    records: int = 0
    lost: int = 0
    doubled: int = 0
    recovery_s: float | None = None
    notes: dict = field(default_factory=dict)

    def line(self, fault: str, wiped: int) -> str:
        rec = "never" if self.recovery_s is None else f"{self.recovery_s:.1f}s"
        extra = "".join(f" {k}={v}" for k, v in self.notes.items())
        return (f"fault summary: fault={fault} scenario={self.scenario} guarantee={self.guarantee} "
                f"records={self.records} words={self.words} lost={self.lost} doubled={self.doubled} "
                f"wiped={wiped} recovery={rec}{extra}")


class Deployment:
    """One word-count app id with its topics and its instances."""

    name = "?"

    def __init__(self, kafka: Kafka, tmp_path, guarantee: str):
        self.kafka, self.guarantee = kafka, guarantee
        self.source = create_topic(kafka, f"{self.name}-words")
        self.sink = create_topic(kafka, f"{self.name}-counts")
        self.app_id = kafka.app_id(f"fault-{self.name}")
        self.changelog = kafka.changelog(self.app_id, STORE)
        self.tmp_path = tmp_path
        self.apps: list[hotstate.App] = []
        self.recovered_at: float | None = None
        self.condition_s: dict[str, float] = {}
        self._baseline: list[int] = []

    def new_app(self, tag: str, listener=None, **config) -> hotstate.App:
        app = build_word_count(self.kafka.bootstrap, self.app_id, self.tmp_path / f"{self.name}-{tag}",
                               self.source, self.sink, listener=listener, processing_guarantee=self.guarantee,
                               **config)
        self.apps.append(app)
        return app

    def committed(self) -> dict[int, int] | None:
        """The group's committed input offsets; None while the broker cannot tell (e.g. its coordinator loads
        after a restart)."""
        try:
            return self.kafka.committed(self.app_id, self.source, PARTITIONS)
        except KafkaException as exc:
            log.info("reading %s's committed offsets: %s", self.app_id, exc)
            return None

    def committed_total(self) -> int | None:
        offsets = self.committed()
        return None if offsets is None else sum(max(0, o) for o in offsets.values())

    def check_alive(self) -> None:
        for app in self.apps:
            if app.state is hotstate.AppState.ERROR:
                raise AssertionError(f"{self.name}: an instance went to ERROR: {app.error()!r}")
            assert app.state is not hotstate.AppState.NOT_RUNNING, f"{self.name}: an instance stopped"

    def commits(self) -> list[int]:
        return [app.metrics()["commit_total"] for app in self.apps]

    def mark_fault(self) -> None:
        """Called when the broker is back (restart) or the node is dead (kill). Recovered means: every
        instance RUNNING, each committed since (its ``commit_total`` grew) and the group's committed input
        offsets in Kafka moved past where they were at the first read after this call (at_least_once counts
        a commit whose offsets failed too, so Kafka is asked)."""
        self._baseline = self.commits()
        self._kafka_baseline: int | None = None
        self.condition_at: dict[str, float] = {}

    def conditions(self) -> dict[str, bool]:
        if self._kafka_baseline is None:
            self._kafka_baseline = self.committed_total()
        return {"running": all(app.state is hotstate.AppState.RUNNING for app in self.apps),
                "commit_total": all(now > then for now, then in zip(self.commits(), self._baseline)),
                "kafka_committed": self._kafka_baseline is not None
                and (self.committed_total() or -1) > self._kafka_baseline}

    def recovered(self) -> bool:
        """Every condition held since the fault (the first time each did is kept in ``condition_at``), and
        "running" holds now (its time is that of the last move to RUNNING)."""
        self.check_alive()
        now = time.monotonic()
        conditions = self.conditions()
        for name, ok in conditions.items():
            if ok and name not in self.condition_at:
                self.condition_at[name] = now
            elif not ok and name == "running":
                self.condition_at.pop(name, None)
        return len(self.condition_at) == len(conditions)

    def wait_all_committed(self) -> None:
        ends = self.kafka.ends(self.source)

        def done() -> bool:
            self.check_alive()
            return self.committed() == ends

        wait_for(done, f"{self.name}: every input offset committed", 120, 0.3)

    def judge(self, truth: Counter) -> Figures:
        """Lost: a word whose count is missing an update (exactly_once_v2: a value of 1..n missing from its
        outputs; at_least_once: its last output below n). Doubled: exactly_once_v2: a value repeated or above
        n; at_least_once: its last output above n (allowed there)."""
        seqs = output_sequences(self.kafka, self.sink)
        fig = Figures(self.name, self.guarantee, words=len(truth), records=sum(truth.values()))
        for w, n in truth.items():
            seq = seqs.get(w, [])
            if self.guarantee == "exactly_once_v2":
                lost = bool(set(range(1, n + 1)) - set(seq))
                doubled = len(seq) != len(set(seq)) or any(v > n or v < 1 for v in seq)
            else:
                last = seq[-1] if seq else 0
                lost, doubled = last < n, last > n
            fig.lost += lost
            fig.doubled += doubled
        fig.recovery_s = self.recovered_at
        fig.notes.update(self.condition_s)
        # Transactional producers given up inside a call librdkafka never returned from (runtime/commit.py).
        fig.notes["abandoned"] = sum(app.metrics()["transactional_producers_abandoned_total"] for app in self.apps)
        return fig

    def close(self) -> None:
        for app in self.apps:
            app.close(timeout_s=30)


class Processing(Deployment):
    name = "processing"

    def start(self) -> None:
        self.app = self.new_app("a")
        self.app.start()

    def ready(self) -> bool:
        self.check_alive()
        return self.app.state is hotstate.AppState.RUNNING and (self.committed_total() or 0) > 0


class Standby(Deployment):
    name = "standby"

    def start(self) -> None:
        self.listeners = [StandbyEvents(), StandbyEvents()]
        # HOTSTATE_FAULTS_DEBUG=fetch,topic: librdkafka's debug contexts for the main consumers (printed with a
        # failure), to see why a main consumer stopped fetching after the restart.
        debug = os.environ.get("HOTSTATE_FAULTS_DEBUG")
        extra = {"consumer_config": {"debug": debug}} if debug else {}
        if debug:
            logging.getLogger("hotstate.librdkafka").setLevel(logging.DEBUG)
        for tag, listener in zip("ab", self.listeners):
            app = self.new_app(tag, num_standby_replicas=1, **extra)
            app.set_standby_listener(listener)
        self.apps[0].start()
        self.apps[1].start()
        self._fault_at = 0.0

    def _split(self) -> bool:
        a, b = self.apps
        act = [{t.id for t in x.tasks() if not t.standby and t.state is hotstate.TaskState.RUNNING} for x in (a, b)]
        sb = [{t.id for t in x.tasks() if t.standby} for x in (a, b)]
        return (len(act[0]) == len(act[1]) == PARTITIONS // 2 and sb[0] == act[1] and sb[1] == act[0])

    def ready(self) -> bool:
        """Both instances RUNNING with two tasks each, each tailing a standby of the other's tasks, and
        both standbys applied a batch in the last 2 s."""
        self.check_alive()
        now = time.monotonic()
        return (all(a.state is hotstate.AppState.RUNNING for a in self.apps) and self._split()
                and all(x.batches_since(now - 2) > 0 for x in self.listeners))

    def standbys_tailing(self) -> bool:
        return all(x.batches_since(time.monotonic() - 2) > 0 for x in self.listeners)

    def mark_fault(self) -> None:
        super().mark_fault()
        self._fault_at = time.monotonic()

    def conditions(self) -> dict[str, bool]:
        """Also: each instance keeps a standby and has applied a standby batch since the fault."""
        return {**super().conditions(),
                "standbys_tailing": all(any(t.standby for t in a.tasks()) for a in self.apps)
                and all(x.batches_since(self._fault_at) > 0 for x in self.listeners)}

    def diagnose(self) -> dict:
        """What the state updaters hold, for a failure message: restoring tasks, and per standby partition its
        offsets and flags and whether the consumer has it paused."""
        import gc

        from hotstate.runtime.state_updater import StateUpdater

        out: dict = {"batches_since_fault": [x.batches_since(self._fault_at) for x in self.listeners],
                     "suspended": [x.suspended[-5:] for x in self.listeners],
                     # Is the active side behind (its changelog stopped growing) or the standby (it stopped
                     # reading a changelog that grows)?
                     "changelog_ends": _bounded(lambda: self.kafka.ends(self.changelog)),
                     "source_ends": _bounded(lambda: self.kafka.ends(self.source)),
                     "committed": _bounded(self.committed),
                     "main_consumers": [_bounded(lambda a=a: _main_consumer_view(a)) for a in self.apps]}
        for i, u in enumerate(o for o in gc.get_objects()
                              if isinstance(o, StateUpdater) and o._config.app_id == self.app_id):
            reader = u._reader
            parts = {f"{tp.topic[-12:]}-{tp.partition}": dict(mode=cp.mode.value, state=cp.state.value,
                                                               offset=cp.offset, end=cp.end_offset, dirty=cp.dirty)
                     for tp, cp in list(reader._partitions.items())}
            positions = _bounded(lambda: [(p.partition, p.offset)
                                          for p in reader.consumer.position(reader.consumer.assignment())])
            out[f"updater{i}"] = dict(alive=u._thread.is_alive(), restoring=list(reader._actives),
                                      partitions=parts, positions=positions,
                                      standby_tasks={k: v.failed for k, v in list(reader._standbys.items())})
        return out

    def wait_standbys_current(self) -> None:
        def current() -> bool:
            lags = [t.lag for a in self.apps for t in a.tasks() if t.standby]
            return bool(lags) and all(lag == 0 for lag in lags)

        wait_for(current, f"{self.name}: every standby at lag 0", 60, 0.2,
                 detail=lambda: [(t.id, t.lag) for a in self.apps for t in a.tasks() if t.standby])


class Restoring(Deployment):
    name = "restoring"
    PREFILL_PER_PARTITION = 50_000

    def prefill(self) -> int:
        """The changelog, written directly (as an earlier life of the app would have): 50k records of
        ~110 bytes per partition, under keys the input never has."""
        create_topic(self.kafka, "", config={"cleanup.policy": "compact"}, name=self.changelog)
        one = struct.pack(">q", 1)
        for p in range(PARTITIONS):
            self.kafka.produce_to(self.changelog, p, ((f"pre-{p}-{i:0100d}".encode(), one)
                                                      for i in range(self.PREFILL_PER_PARTITION)))
        return PARTITIONS * self.PREFILL_PER_PARTITION

    def start(self) -> None:
        self.listener = GatedRestoreListener()
        # The restore consumer prefetches at most 1 MiB (of ~22 MB): most of the changelog must be fetched
        # after the fault. Small batches: the listener is called early and often.
        self.app = self.new_app("a", listener=self.listener, restore_fetch_buffer_bytes_max=1024 * 1024,
                                restore_batch_records_max=2000)
        self.app.start()

    def ready(self) -> bool:
        """The restore of every partition started and the thread is held inside a batch callback."""
        self.check_alive()
        return len(self.listener.starts()) == PARTITIONS and len(self.listener.of("batch")) >= 3

    def under_way(self) -> dict:
        """What the restore looked like when the fault hit: it must have started and not ended."""
        m = self.app.metrics()
        remaining = sum(m["restore_remaining_records"].values())
        state = dict(started=len(self.listener.starts()), ended=len(self.listener.of("end")),
                     restoring_tasks=m["active_restoring_tasks"], remaining=remaining,
                     app_state=self.app.state.name)
        assert state["started"] == PARTITIONS and state["ended"] == 0 and state["restoring_tasks"] == PARTITIONS \
            and remaining > 0, f"the restore was not under way when the broker went: {state}"
        return state

    def conditions(self) -> dict[str, bool]:
        return {**super().conditions(), "restored": len(self.listener.totals()) == PARTITIONS}

    def check_restore(self, prefilled: int) -> None:
        """Each partition restored once, the whole prefilled changelog (nothing wiped, nothing twice)."""
        starts, totals = self.listener.starts(), self.listener.totals()
        assert set(starts) == set(totals) == set(range(PARTITIONS)), (starts, totals)
        assert sum(totals.values()) == prefilled, f"restored {totals}, prefilled {prefilled}"


# ---------------------------------------------------------------------------------------------------------
# Waiting for recovery.

def _main_consumer_view(app: hotstate.App) -> dict:
    """The main consumer's assignment, positions and paused partitions (librdkafka's view)."""
    tm = app._thread.task_manager if app._thread is not None else None
    consumer = getattr(tm, "_consumer", None)
    if consumer is None:
        return {}
    assigned = consumer.assignment()
    return {"positions": {p.partition: p.offset for p in consumer.position(assigned)},
            "tasks": {t.id: ({str(tp): o for tp, o in t.next_offsets.items()},
                            {str(tp): o for tp, o in t.committed_offsets.items()}) for t in list(tm.tasks.values())}}


def thread_stacks(frames: int = 4) -> dict[str, list[str]]:
    """The innermost frames of each hotstate thread (where a stream thread or state updater waits)."""
    import traceback
    names = {t.ident: t.name for t in threading.enumerate()}
    out = {}
    for ident, frame in sys._current_frames().items():
        name = names.get(ident, str(ident))
        if "hotstate" in name or "stream" in name.lower() or "updater" in name.lower():
            out[f"{name}#{ident}"] = [f"{f.filename.rsplit('/', 1)[-1]}:{f.lineno} {f.name}: {f.line}"
                                      for f in traceback.extract_stack(frame)[-frames:]]
    return out


def _bounded(fn, timeout_s: float = 5.0):
    """A diagnostic call on a client another thread uses: its result, its error, or "no answer" (it was seen to
    block the failure message for minutes)."""
    out: list = []

    def run() -> None:
        try:
            out.append(fn())
        except Exception as exc:  # noqa: BLE001 - a diagnostic
            out.append(repr(exc))

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(timeout_s)
    return out[0] if out else f"no answer within {timeout_s:g}s"


def wait_recovered(deployments: list[Deployment], t_fault: float, timeout_s: float = RECOVERY_TIMEOUT_S) -> None:
    """Polls every deployment until each recovered; sets its ``recovered_at`` (seconds after t_fault)."""
    deadline = time.monotonic() + timeout_s
    while True:
        pending = [d for d in deployments if d.recovered_at is None]
        if not pending:
            return
        for d in pending:
            if d.recovered():
                d.recovered_at = time.monotonic() - t_fault
                d.condition_s = {k: round(v - t_fault, 1) for k, v in d.condition_at.items()}
        if time.monotonic() > deadline:
            detail = {d.name: [(a.state.name, [(t.id, t.standby, t.state.name) for t in a.tasks()]) for a in d.apps]
                      for d in pending}
            detail["conditions met"] = {d.name: dict(d.condition_at) for d in pending}
            log.warning("not recovered %ss after the fault: %s", timeout_s, detail)  # before the diagnosis, which asks clients
            for d in pending:
                if hasattr(d, "diagnose"):
                    detail[f"{d.name} diagnosis"] = d.diagnose()
            detail["threads"] = thread_stacks()
            raise AssertionError(f"not recovered {timeout_s}s after the fault: {[d.name for d in pending]}: {detail}")
        time.sleep(0.1)


def report(lines: list[str]) -> None:
    for line in lines:
        log.warning(line)
    sys.stderr.write("\n".join(lines) + "\n")
