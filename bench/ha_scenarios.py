"""The high-availability scenarios of issue 5, on the real broker, with several app instances (processes).

Shared by the benchmark (bench/ha.py: large sizes, timings) and the tests (tests/ha/: small sizes,
behaviour only). Each scenario runs a word count (bench/ha_runner.py for hotstate; bench/kstreams_ha for
Kafka Streams 4.4, same events) as N processes of one app, with a feeder producing to the input topic the
whole time, makes one of the three events that make a task restore happen, and returns a
``ScenarioResult``:

- per affected task, a ``TaskOutage``: the time it could not process, from the moment its previous owner
  stopped (kill -9 time; or when the owner closed it: it left the owner's RUNNING tasks, or the owner's
  ``closing`` event) until it is RUNNING on its next owner (for Kafka Streams: its first processed record
  there, or the instance RUNNING with the task's restore ended); split into "assigned" (stop -> the task
  appears on the new owner) and "restoring" (appears -> RUNNING); the records its new owner replayed (restore
  listener totals) and the bound the scenario allows;
- ``violations``: every breach of the issue's contract the run saw (replay bounds, warm-up before move);
- ``correctness``: the output topic against the true counts of everything produced. at_least_once: every
  word's final count >= its truth, its output sequence starts at 1 and never jumps (each value <= the one
  before + 1). exactly_once_v2 (read_committed): every word's output is exactly 1..n.

The scenarios (issue 5):

1. ``crash``: three instances, ``num_standby_replicas=1``; kill -9 the one with the most active tasks. Each
   of its tasks must replay at most what its standby was missing: the lag the standby reported just before
   the kill plus the records the victim wrote to that changelog partition after that report (measured:
   the changelog end right after the kill minus (standby offset + lag) of that report).
2. ``rolling``: three instances with static membership (``group_instance_id``) restart one after another
   (graceful close, started again at once: within ``session_timeout_ms``). A task restored on the restarted
   instance replays at most its delta: the changelog end when its restore began minus the changelog end
   when its owner was asked to stop. A task restored elsewhere replays at most what that instance's standby
   was missing (its last reported offset); elsewhere without a standby is a violation.
3. ``scale_out``: a fourth instance joins. On it, every task that becomes active was a standby / warm-up
   first, was last reported with a lag <= ``acceptable_recovery_lag`` (plus the records written between that
   report and the move), and replays at most that much on activation. (A task whose whole changelog partition
   is within ``acceptable_recovery_lag`` may move at once: the new instance is caught up on it without state;
   ``info["moved_without_warm_up"]`` lists such tasks. The tests size the data so that it does not happen.)
   Tasks that move between the old instances replay at most what their standby there was missing.
4. ``move_back``: one instance runs every task; a second joins (warm-ups, then tasks move to it), then closes
   gracefully (it leaves the group): its tasks move back to the first within ``state_cleanup_delay_ms``. Each
   task that moved away and back must resume from the local state it left (restore start >= the offset the
   first instance last reported for it) and replay at most the changelog records written since.

Nothing here asserts timings; the benchmark reports them. Each scenario works in a temp dir (``work_dir``):
per instance incarnation ``<name>#<n>`` its state dir ``<name>/``, its stderr and its events
(``<name>#<n>.events.jsonl``); deleted when the scenario passed, kept (``ScenarioResult.logs``) when not.
"""
from __future__ import annotations

import json
import os
import random
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import zlib
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

from confluent_kafka import KafkaException, Producer

from bench_kafka import BenchKafka  # bench/bench_kafka.py

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
RUNNER = os.path.join(HERE, "ha_runner.py")
KSTREAMS_DIR = os.path.join(HERE, "kstreams_ha")
KSTREAMS_JAR = os.path.join(KSTREAMS_DIR, "target", "kstreams-ha-bench.jar")
STORE = "word-counts"
SCENARIOS = ("crash", "rolling", "scale_out", "move_back")
SYSTEMS = ("hotstate", "kstreams")


def task_id(partition: int) -> str:
    return f"0_{partition}"


def partition_of(task: str) -> int:
    return int(task.split("_")[1])


# ---------------------------------------------------------------------------------------------------------
# Settings and results

@dataclass
class Settings:
    bootstrap: str
    system: str = "hotstate"  # or "kstreams"
    guarantee: str = "at_least_once"
    partitions: int = 6
    keys: int = 3_000
    updates_per_key: float = 2.0  # the preload: every key once, plus this many extra records per key
    feed_rate: float = 1_000.0  # records/s produced during the scenario
    num_standby_replicas: int = 1
    acceptable_recovery_lag: int = 10_000
    max_warmup_replicas: int = 2
    probing_rebalance_interval_ms: int = 600_000
    session_timeout_ms: int = 8_000
    commit_interval_ms: int = 100
    state_cleanup_delay_ms: int = 600_000
    warm_s: float = 2.0  # the feeder runs this long before the event
    after_s: float = 2.0  # and this long after the group settled again
    settle_timeout_s: float = 120.0  # for the group to settle after an event
    sample_ms: float = 20.0  # the runners' task sampling period
    verify: bool = True
    seed: int = 7
    work_dir: str | None = None
    keep: bool = False
    hotstate_config: dict = field(default_factory=dict)  # more hotstate Config fields for every instance
    java_opts: tuple = ("-Xmx1g",)
    log: Callable[[str], None] = lambda msg: None

    def public(self) -> dict:
        d = asdict(self)
        for k in ("log", "bootstrap", "work_dir", "keep", "java_opts"):
            d.pop(k, None)
        return d


@dataclass
class TaskOutage:
    task: str
    old_owner: str
    new_owner: str | None
    stopped_at: float  # wall clock
    assigned_at: float | None  # appeared as active on the new owner
    running_at: float | None
    replayed: int  # records the new owner's restore listener reported for it (0: nothing to restore)
    bound: int | None = None  # the most the contract lets it replay (None: no bound applies)
    note: str = ""
    # moves after the first, before the group settled (e.g. a warm-up took the task over later):
    # {"from", "to", "seconds", "replayed"}
    later_moves: list[dict] = field(default_factory=list)

    @property
    def first_seconds(self) -> float | None:
        return None if self.running_at is None else max(0.0, self.running_at - self.stopped_at)

    @property
    def seconds(self) -> float | None:
        """All the time it could not process: the first outage and every later one."""
        first = self.first_seconds
        return None if first is None else first + sum(m["seconds"] or 0 for m in self.later_moves)

    @property
    def replayed_total(self) -> int:
        return self.replayed + sum(m["replayed"] for m in self.later_moves)

    @property
    def assign_seconds(self) -> float | None:
        return None if self.assigned_at is None else max(0.0, self.assigned_at - self.stopped_at)

    @property
    def restoring_seconds(self) -> float | None:
        if self.running_at is None or self.assigned_at is None:
            return None
        return max(0.0, self.running_at - max(self.assigned_at, self.stopped_at))

    def as_dict(self) -> dict:
        d = asdict(self)
        d.update(seconds=_r(self.seconds), first_seconds=_r(self.first_seconds), replayed_total=self.replayed_total,
                 assign_seconds=_r(self.assign_seconds), restoring_seconds=_r(self.restoring_seconds))
        for k in ("stopped_at", "assigned_at", "running_at"):
            d.pop(k)
        return d


def _r(x: float | None, nd: int = 3) -> float | None:
    return None if x is None else round(x, nd)


@dataclass
class ScenarioResult:
    scenario: str
    system: str
    guarantee: str
    settings: dict
    outages: list[TaskOutage] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    correctness: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)
    logs: str = ""  # where the instances' stderr went (kept when the scenario failed)

    @property
    def correct(self) -> bool:
        return bool(self.correctness) and not self.correctness.get("problems")

    def seconds(self) -> list[float]:
        return [o.seconds for o in self.outages if o.seconds is not None]

    def summary(self) -> dict:
        secs = self.seconds()
        replayed = [o.replayed_total for o in self.outages]
        return {
            "scenario": self.scenario, "system": self.system, "guarantee": self.guarantee,
            "tasks_affected": len(self.outages),
            "longest_s": _r(max(secs)) if secs else None,
            "median_s": _r(statistics.median(secs)) if secs else None,
            "assign_median_s": _r(_median([o.assign_seconds for o in self.outages])),
            "restoring_median_s": _r(_median([o.restoring_seconds for o in self.outages])),
            "restoring_longest_s": _r(max((o.restoring_seconds for o in self.outages
                                           if o.restoring_seconds is not None), default=None)),
            "replayed_total": sum(replayed), "replayed_max": max(replayed, default=0),
            "not_running": [o.task for o in self.outages if o.running_at is None],
            "violations": self.violations,
            "correct": self.correct,
            "correctness": {k: v for k, v in self.correctness.items() if k != "examples"},
            "info": self.info,
            "tasks": [o.as_dict() for o in self.outages],
        }


def _median(xs: list) -> float | None:
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


# ---------------------------------------------------------------------------------------------------------
# The broker: topics this scenario makes, watermarks, committed offsets, reading the output

class Broker(BenchKafka):
    """BenchKafka with a missing changelog's ends as zeros, the output read as INT64 sequences, best-effort cleanup."""

    def __init__(self, bootstrap: str):
        super().__init__(bootstrap, "ha-bench")

    def ends(self, topic: str, partitions: int) -> dict[int, int]:
        """High watermarks. A changelog that does not exist yet: zeros."""
        try:
            return super().ends(topic, partitions)
        except KafkaException:
            return {p: 0 for p in range(partitions)}

    def read_sequences(self, topic: str, partitions: int, timeout_s: float = 300) -> dict[bytes, list[int]]:
        """key -> every INT64 value of ``topic`` (read_committed) up to its current end, in order."""
        seqs: dict[bytes, list[int]] = {}
        unpack = struct.Struct(">q").unpack
        for msg in self.read(topic, partitions, timeout_s):
            v = msg.value()
            seqs.setdefault(msg.key(), []).append(None if v is None else unpack(v)[0])
        return seqs

    def cleanup(self) -> None:
        self.close_readers()
        try:
            self.delete_topics()
            # static members and Kafka Streams' members stay until their session ends: best effort
            self.delete_groups(request_timeout_s=10, result_timeout_s=15)
        except Exception as exc:
            print(f"ha_scenarios: cleanup failed (ignored): {exc!r}", file=sys.stderr)


# ---------------------------------------------------------------------------------------------------------
# Input: the preload and the feeder

def vocabulary(keys: int) -> list[str]:
    return [f"w{i:07d}" for i in range(keys)]


class Producing:
    """Produces words to the input topic (partition = crc32(word) % P) and keeps the true counts."""

    def __init__(self, bootstrap: str, topic: str, partitions: int):
        self.topic, self.partitions = topic, partitions
        self.truth: Counter = Counter()
        self.produced = 0
        self._lock = threading.Lock()
        self._producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 5,
                                   "batch.size": 1_000_000, "queue.buffering.max.messages": 2_000_000})

    def produce(self, words: list[str], timeout_s: float = 120) -> None:
        produce, parts, topic = self._producer.produce, self.partitions, self.topic
        for w in words:
            kb = w.encode()
            while True:
                try:
                    produce(topic, b"x", kb, zlib.crc32(kb) % parts)
                    break
                except BufferError:
                    self._producer.poll(0.05)
        left = self._producer.flush(timeout_s)
        if left:
            raise RuntimeError(f"{left} input records not delivered within {timeout_s}s")
        with self._lock:
            self.truth.update(words)
            self.produced += len(words)

    def snapshot(self) -> Counter:
        with self._lock:
            return Counter(self.truth)


class Feeder:
    """Produces ``rate`` records/s of uniformly drawn words on a thread, in batches every 50 ms."""

    def __init__(self, out: Producing, vocab: list[str], rate: float, seed: int):
        self._out, self._vocab, self._rate = out, vocab, rate
        self._rng = random.Random(seed)
        self._stop = threading.Event()
        self.errors: list[BaseException] = []
        self.started_at: float | None = None
        self._thread = threading.Thread(target=self._run, name="ha-feeder", daemon=True)

    def _run(self) -> None:
        try:
            period = 0.05
            t0 = time.monotonic()
            sent = 0
            while not self._stop.is_set():
                due = int((time.monotonic() - t0) * self._rate) - sent
                if due > 0:
                    self._out.produce(self._rng.choices(self._vocab, k=due))
                    sent += due
                self._stop.wait(period)
        except BaseException as exc:
            self.errors.append(exc)

    def start(self) -> None:
        self.started_at = time.time()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(60)
        if self.errors:
            raise RuntimeError(f"the feeder failed: {self.errors[0]!r}") from self.errors[0]


# ---------------------------------------------------------------------------------------------------------
# An instance: one process of the app

class Instance:
    """One incarnation (process) of a named instance. Its stdout events are collected with their ``t``."""

    def __init__(self, dep: "Deployment", name: str, incarnation: int, group_instance_id: str | None):
        self.dep, self.name, self.incarnation = dep, name, incarnation
        self.label = f"{name}#{incarnation}"
        self.group_instance_id = group_instance_id
        self.state_dir = os.path.join(dep.work, name)
        os.makedirs(self.state_dir, exist_ok=True)
        self.stderr_path = os.path.join(dep.work, f"{self.label}.stderr")
        self._stderr = open(self.stderr_path, "w")
        self._events_file = open(os.path.join(dep.work, f"{self.label}.events.jsonl"), "w", buffering=1)
        self.events: list[dict] = []
        self._cond = threading.Condition()
        self.started_at = time.time()
        self.ended_at: float | None = None  # kill time, or when it closed
        self.killed = False
        self.stopped = False  # killed or terminated on purpose
        self.proc = subprocess.Popen(self._cmd(), stdout=subprocess.PIPE, stderr=self._stderr, text=True, bufsize=1,
                                     cwd=ROOT)
        self._reader = threading.Thread(target=self._read, name=f"ha-read-{self.label}", daemon=True)
        self._reader.start()

    def _cmd(self) -> list[str]:
        s, d = self.dep.settings, self.dep
        if s.system == "hotstate":
            cmd = [sys.executable, RUNNER, "--bootstrap", s.bootstrap, "--app-id", d.app_id,
                   "--state-dir", self.state_dir, "--source", d.source, "--sink", d.sink, "--name", self.label,
                   "--num-standby-replicas", str(d.num_standby), "--acceptable-recovery-lag",
                   str(s.acceptable_recovery_lag), "--max-warmup-replicas", str(s.max_warmup_replicas),
                   "--probing-rebalance-interval-ms", str(s.probing_rebalance_interval_ms),
                   "--guarantee", s.guarantee, "--session-timeout-ms", str(s.session_timeout_ms),
                   "--commit-interval-ms", str(s.commit_interval_ms),
                   "--state-cleanup-delay-ms", str(s.state_cleanup_delay_ms), "--sample-ms", str(s.sample_ms),
                   "--config", json.dumps(s.hotstate_config)]
            if self.group_instance_id:
                cmd += ["--group-instance-id", self.group_instance_id]
            return cmd
        job = {"bootstrap": s.bootstrap, "app_id": d.app_id, "state_dir": self.state_dir, "source": d.source,
               "sink": d.sink, "name": self.label, "group_instance_id": self.group_instance_id,
               "num_standby_replicas": d.num_standby, "acceptable_recovery_lag": s.acceptable_recovery_lag,
               "max_warmup_replicas": s.max_warmup_replicas,
               "probing_rebalance_interval_ms": max(60_000, s.probing_rebalance_interval_ms),
               "guarantee": s.guarantee, "session_timeout_ms": s.session_timeout_ms,
               "commit_interval_ms": s.commit_interval_ms, "state_cleanup_delay_ms": s.state_cleanup_delay_ms,
               "sample_ms": s.sample_ms}
        return ["java", *s.java_opts, "-jar", KSTREAMS_JAR,
                *(f"{k}={'' if v is None else v}" for k, v in job.items())]

    def _read(self) -> None:
        for line in self.proc.stdout:
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            if not isinstance(ev, dict) or "ev" not in ev:
                continue
            ev.setdefault("t", time.time())
            self._events_file.write(line if line.endswith("\n") else line + "\n")
            with self._cond:
                self.events.append(ev)
                self._cond.notify_all()
        self._events_file.close()
        with self._cond:
            self._cond.notify_all()

    # ---- queries ----
    def of(self, *kinds: str) -> list[dict]:
        with self._cond:
            return [e for e in self.events if e["ev"] in kinds]

    def alive(self) -> bool:
        return self.proc.poll() is None and not self.stopped

    def latest_tasks(self) -> dict:
        """The latest task view: {"ev": "tasks", "active": {task: state}, "standby": {task: lag}, "offsets":
        {...}}: the last ``tasks`` event, with the lags and offsets of a later ``sample`` if there is one."""
        with self._cond:
            sample = None
            for e in reversed(self.events):
                if e["ev"] == "sample" and sample is None:
                    sample = e
                elif e["ev"] == "tasks":
                    if sample is None:
                        return e
                    return {**e, "standby": {t: sample["standby"].get(t, lag) for t, lag in e["standby"].items()},
                            "offsets": {**e.get("offsets", {}), **sample.get("offsets", {})}}
        return {"active": {}, "standby": {}, "offsets": {}}

    def running(self) -> set[str]:
        return {t for t, st in self.latest_tasks().get("active", {}).items() if st == "RUNNING"}

    def last_report(self, task: str, before: float, standby: bool | None = None,
                    through_gaps: bool = False) -> dict | None:
        """The latest (t, lag, offset) this incarnation reported for ``task`` before (strictly) ``before``: from its
        ``tasks`` and ``sample`` events. ``standby``: only while it was a standby (True) or active (False).
        None if it did not hold the task so at its last report before then, unless ``through_gaps``: then the
        last report from when it did."""
        with self._cond:
            for e in reversed(self.events):
                if e["t"] >= before or e["ev"] not in ("tasks", "sample"):
                    continue
                sb = e.get("standby") or {}
                is_sb = task in sb
                if e["ev"] == "tasks":
                    is_act = task in (e.get("active") or {})
                    if not (is_sb or is_act):
                        if through_gaps:
                            continue
                        # it did not hold the task then (unless its standby listener says otherwise since)
                        return self._last_standby_batch(task, before, e["t"]) if standby else None
                elif not is_sb and task not in (e.get("offsets") or {}):
                    continue
                if standby is not None and is_sb != standby:
                    if through_gaps:
                        continue
                    return self._last_standby_batch(task, before, e["t"]) if standby else None
                return {"t": e["t"], "lag": sb.get(task), "offset": (e.get("offsets") or {}).get(task)}
        return self._last_standby_batch(task, before, 0.0) if standby else None

    def _last_standby_batch(self, task: str, before: float, after: float) -> dict | None:
        """From the standby update listener: the last batch a standby of ``task`` loaded in (after, before).
        (Kafka Streams may list a standby in no thread's metadata for a while.)"""
        with self._cond:
            for e in reversed(self.events):
                if e["t"] <= after:
                    return None
                if e["t"] < before and e.get("task") == task and e["ev"] == "standby_batch":
                    return {"t": e["t"], "lag": max(0, e["end"] - e["batch_end"] - 1), "offset": e["batch_end"] + 1}
        return None

    def restores(self, task: str, after: float, before: float = float("inf")) -> list[dict]:
        """Restores of ``task`` that started in [after, before): {"t", "start", "end", "total", "t_end"}."""
        out, open_ = [], {}
        with self._cond:
            evs = [e for e in self.events if e.get("task") == task and e["ev"] in ("restore_start", "restore_end")]
        for e in evs:
            if e["ev"] == "restore_start":
                if after <= e["t"] < before:
                    r = {"t": e["t"], "start": e["start"], "end": e["end"], "total": None, "t_end": None}
                    out.append(r)
                    open_[task] = r
            elif task in open_:
                r = open_.pop(task)
                r["total"], r["t_end"] = e["total"], e["t"]
        return out

    def wait(self, pred: Callable[[], bool], what: str, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while not pred():
                if not self.alive():
                    raise RuntimeError(f"{self.label} exited ({self.proc.returncode}) waiting for {what}; "
                                       f"see {self.stderr_path}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{self.label}: no {what} within {timeout_s}s; see {self.stderr_path}")
                self._cond.wait(min(left, 0.2))

    def end_time(self) -> float:
        """When it stopped processing: the kill, its ``closing`` event, or its exit; now if it runs."""
        if self.killed and self.ended_at is not None:
            return self.ended_at
        closing = self.of("closing")
        if closing:
            return closing[0]["t"]
        if self.ended_at is not None:
            return self.ended_at
        return time.time()

    # ---- actions ----
    def kill(self) -> float:
        t = time.time()
        self.proc.send_signal(signal.SIGKILL)
        self.killed = self.stopped = True
        self.ended_at = t
        self.proc.wait(30)
        self._reader.join(10)
        self._stderr.close()
        return t

    def terminate(self, timeout_s: float = 120) -> int:
        self.stopped = True
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait(30)
        self.ended_at = time.time()
        self._reader.join(10)
        self._stderr.close()
        return rc

    def ensure_dead(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)
            if self.ended_at is None:
                self.ended_at = time.time()
        if not self._stderr.closed:
            self._stderr.close()


# ---------------------------------------------------------------------------------------------------------
# Timelines: when each task was RUNNING where

def running_intervals(incarnations: list[Instance]) -> dict[str, list[tuple[float, float, str]]]:
    """task -> [(from, to, label)]: the spans in which an incarnation had the task active and RUNNING. A span
    ends at the first sample without it (or not RUNNING), or when the incarnation stopped processing."""
    out: dict[str, list[tuple[float, float, str]]] = {}
    for inst in incarnations:
        end = inst.end_time()
        since: dict[str, float] = {}
        for e in inst.of("tasks"):
            if e["t"] > end:
                break
            running = {t for t, st in (e.get("active") or {}).items() if st == "RUNNING"}
            for t in list(since):
                if t not in running:
                    out.setdefault(t, []).append((since.pop(t), e["t"], inst.label))
            for t in running:
                since.setdefault(t, e["t"])
        for t, t0 in since.items():
            out.setdefault(t, []).append((t0, end, inst.label))
    for spans in out.values():
        spans.sort()
    return out


def first_active(inst: Instance, task: str, after: float) -> float | None:
    for e in inst.of("tasks"):
        if e["t"] >= after and task in (e.get("active") or {}):
            return e["t"]
    return None


# ---------------------------------------------------------------------------------------------------------
# A deployment: one app (topics, group) with its instances

class Deployment:
    def __init__(self, settings: Settings, scenario: str, num_standby: int | None = None,
                 broker: Broker | None = None):
        self.settings = s = settings
        self.scenario = scenario
        self.num_standby = s.num_standby_replicas if num_standby is None else num_standby
        self.broker = broker or Broker(s.bootstrap)
        run = uuid.uuid4().hex[:8]
        tag = "hs" if s.system == "hotstate" else "ks"
        self.app_id = f"ha-{scenario.replace('_', '-')}-{tag}-{run}"
        self.broker.app(self.app_id)
        self.work = tempfile.mkdtemp(prefix=f"{self.app_id}-", dir=s.work_dir)
        self.source = self.broker.create_topic(f"{self.app_id}-in", s.partitions)
        self.sink = self.broker.create_topic(f"{self.app_id}-out", s.partitions)
        self.changelog = f"{self.app_id}-{STORE}-changelog"
        self.input = Producing(s.bootstrap, self.source, s.partitions)
        self.vocab = vocabulary(s.keys)
        self.feeder: Feeder | None = None
        self.incarnations: list[Instance] = []
        self.current: dict[str, Instance] = {}  # name -> its live incarnation
        self.tasks = [task_id(p) for p in range(s.partitions)]
        # a JVM that ran its shutdown hooks after SIGTERM exits with 128 + 15
        self.clean_exit_codes = (0,) if s.system == "hotstate" else (0, 128 + signal.SIGTERM)

    def log(self, msg: str) -> None:
        self.settings.log(f"[{self.scenario}/{self.settings.system}] {msg}")

    # ---- input ----
    def preload(self) -> None:
        s = self.settings
        rng = random.Random(s.seed)
        words = list(self.vocab) + rng.choices(self.vocab, k=int(s.keys * s.updates_per_key))
        rng.shuffle(words)
        t0 = time.monotonic()
        self.input.produce(words)
        self.log(f"preloaded {len(words):,} records ({s.keys:,} keys) in {time.monotonic() - t0:.1f}s")

    def start_feeder(self) -> None:
        self.feeder = Feeder(self.input, self.vocab, self.settings.feed_rate, self.settings.seed + 1)
        self.feeder.start()

    # ---- instances ----
    def start(self, name: str, group_instance_id: str | None = None) -> Instance:
        n = sum(1 for i in self.incarnations if i.name == name)
        inst = Instance(self, name, n, group_instance_id)
        self.incarnations.append(inst)
        self.current[name] = inst
        return inst

    def alive(self) -> list[Instance]:
        return [i for i in self.current.values() if i.alive()]

    def view(self) -> dict[str, dict]:
        return {i.name: i.latest_tasks() for i in self.alive()}

    def owners(self) -> dict[str, list[str]]:
        """task -> the live instances that list it as active (any state)."""
        out: dict[str, list[str]] = {t: [] for t in self.tasks}
        for name, v in self.view().items():
            for t in v.get("active") or {}:
                out.setdefault(t, []).append(name)
        return out

    def settled(self, min_active: dict[str, int] | None = None, standby_lag_max: int | None = None) -> bool:
        """Every task active and RUNNING on exactly one live instance, actives balanced (max - min <= 1),
        every task with its standbys (min(num_standby, instances - 1)), ``min_active`` met, and if given
        every standby's lag <= ``standby_lag_max``."""
        view = self.view()
        if not view:
            return False
        counts = {name: 0 for name in view}
        standbys: Counter = Counter()
        for name, v in view.items():
            if v.get("ev") != "tasks":
                return False
            active = v.get("active") or {}
            counts[name] = len(active)
            for t, st in active.items():
                if st != "RUNNING":
                    return False
            for t, lag in (v.get("standby") or {}).items():
                standbys[t] += 1
                if standby_lag_max is not None and (lag is None or lag > standby_lag_max):
                    return False
        owners = self.owners()
        if any(len(owners.get(t, [])) != 1 for t in self.tasks):
            return False
        if max(counts.values()) - min(counts.values()) > 1:
            return False
        want_sb = min(self.num_standby, len(view) - 1)
        if any(standbys[t] < want_sb for t in self.tasks):
            return False
        for name, n in (min_active or {}).items():
            if counts.get(name, 0) < n:
                return False
        return True

    def wait_settled(self, what: str, timeout_s: float | None = None, stable_s: float = 1.0, **kw: Any) -> float:
        """Waits until ``settled(**kw)`` held for ``stable_s``; returns when it started to hold."""
        timeout_s = timeout_s or self.settings.settle_timeout_s
        deadline = time.monotonic() + timeout_s
        since = None
        while True:
            for inst in self.current.values():
                if not inst.stopped and inst.proc.poll() is not None:
                    raise RuntimeError(f"{inst.label} exited ({inst.proc.returncode}); see {inst.stderr_path}")
            if self.feeder is not None and self.feeder.errors:
                raise RuntimeError(f"the feeder failed: {self.feeder.errors[0]!r}")
            if self.settled(**kw):
                since = since or time.time()
                if time.time() - since >= stable_s:
                    return since
            else:
                since = None
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what}: the group did not settle within {timeout_s}s: {self._describe()}")
            time.sleep(0.05)

    def _describe(self) -> str:
        parts = []
        for name, v in self.view().items():
            parts.append(f"{name}: active {v.get('active')}, standby {v.get('standby')}")
        return "; ".join(parts) + f" (logs in {self.work})"

    def wait_processed(self, timeout_s: float) -> None:
        """Until the group's committed input offsets reach the input's end offsets (read now)."""
        s = self.settings
        ends = self.broker.ends(self.source, s.partitions)
        deadline = time.monotonic() + timeout_s
        while True:
            got = self.broker.committed(self.app_id, self.source, s.partitions)
            if all(got[p] >= ends[p] for p in ends):
                return
            if any(not i.stopped and i.proc.poll() is not None for i in self.current.values()):
                bad = [i for i in self.current.values() if not i.stopped and i.proc.poll() is not None]
                raise RuntimeError(f"{bad[0].label} exited; see {bad[0].stderr_path}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"the group committed {got}, want {ends}, within {timeout_s}s")
            time.sleep(0.1)

    def changelog_ends(self) -> dict[int, int]:
        return self.broker.ends(self.changelog, self.settings.partitions)

    # ---- the common frame ----
    def bring_up(self, names: list[str], static: bool) -> None:
        """Start the instances on the empty input, wait until the group settled, then preload and wait until
        the group processed it. (Preloading first would let the instances that join first process part of
        it and keep that state on disk when the group spreads out: state that later makes them "caught up"
        on tasks they do not run, which would blur what the scenarios measure.)"""
        s = self.settings
        t0 = time.monotonic()
        for name in names:
            self.start(name, f"{self.app_id}-{name}" if static else None)
        self.wait_settled("start-up", timeout_s=max(s.settle_timeout_s, 60.0))
        self.preload()
        self.wait_processed(timeout_s=120 + self.input.produced / 2_000)
        self.log(f"{len(names)} instances up and through the preload in {time.monotonic() - t0:.1f}s")

    def warm(self) -> None:
        """Feeder on; the standbys catch up to a small lag; run ``warm_s``."""
        s = self.settings
        self.start_feeder()
        ready_lag = int(2 * s.feed_rate / s.partitions) + 100
        try:
            self.wait_settled("standbys catching up", standby_lag_max=ready_lag)
        except TimeoutError as exc:
            self.log(f"standbys did not reach lag <= {ready_lag}; going on: {exc}")
        time.sleep(s.warm_s)

    def finish(self, result: ScenarioResult) -> None:
        """Feeder off; every input record processed and committed; check the output; stop the instances."""
        s = self.settings
        time.sleep(s.after_s)
        if self.feeder is not None:
            self.feeder.stop()
        self.wait_processed(timeout_s=120 + self.input.produced / 5_000)
        if s.verify:
            result.correctness = check_output(self.broker.read_sequences(self.sink, s.partitions),
                                              self.input.snapshot(), s.guarantee)
        result.info["input_records"] = self.input.produced
        result.info["changelog_end_offsets"] = sum(self.changelog_ends().values())

    def close(self, failed: bool) -> str:
        for inst in list(self.current.values()):
            if inst.alive():
                try:
                    inst.terminate(timeout_s=60)
                except Exception:
                    pass
        for inst in self.incarnations:
            inst.ensure_dead()
        if self.feeder is not None and self.feeder._thread.is_alive():
            self.feeder._stop.set()
        if not self.settings.keep:
            self.broker.cleanup()
            if not failed:
                shutil.rmtree(self.work, ignore_errors=True)
                return ""
        return self.work

    def restore_total(self, inst: Instance, task: str, after: float, before: float = float("inf")) -> int:
        return sum(r["total"] or 0 for r in inst.restores(task, after, before))

    def find_instance(self, label: str) -> Instance:
        return next(i for i in self.incarnations if i.label == label)

    def outage(self, task: str, old_label: str, stopped_at: float, until: float | None = None) -> TaskOutage:
        """The task's outage from ``stopped_at``: until the next incarnation had it RUNNING; plus, up to
        ``until`` (the group settled), every later gap (a further move, e.g. once a warm-up caught up)."""
        spans = running_intervals(self.incarnations).get(task, [])
        after = [sp for sp in spans if sp[0] > stopped_at + 1e-6 or (sp[0] >= stopped_at - 1e-6 and sp[2] != old_label)]
        if not after:
            return TaskOutage(task, old_label, None, stopped_at, None, None, 0, note="not RUNNING anywhere afterwards")
        first = after[0]
        new = self.find_instance(first[2])
        window = stopped_at - 0.5  # sampling jitter
        assigned = first_active(new, task, window)
        replayed = self.restore_total(new, task, window, first[0] + 1e-3)
        o = TaskOutage(task, old_label, new.label, stopped_at, assigned, first[0], replayed)
        until = time.time() if until is None else until
        prev = first
        for cur in after[1:]:
            if cur[0] > until:
                break
            if cur[2] == prev[2] and cur[0] <= prev[1] + 1e-6:
                prev = (prev[0], max(prev[1], cur[1]), prev[2])
                continue
            gap = max(0.0, cur[0] - prev[1])
            inst = self.find_instance(cur[2])
            o.later_moves.append({"from": prev[2], "to": cur[2], "seconds": _r(gap), "at": prev[1],
                                  "running_at": cur[0],
                                  "replayed": self.restore_total(inst, task, prev[1] - 0.5, cur[0] + 1e-3)})
            prev = cur
        return o


# ---------------------------------------------------------------------------------------------------------
# Output checks

def check_output(seqs: dict[bytes, list[int]], truth: Counter, guarantee: str) -> dict:
    lost = doubled = gaps = missing = 0
    examples: dict[str, Any] = {}
    for word, n in truth.items():
        seq = seqs.get(word.encode(), [])
        if not seq:
            missing += 1
            lost += 1
            examples.setdefault("missing", word)
            continue
        if guarantee == "exactly_once_v2":
            if seq != list(range(1, n + 1)):
                if seq[-1] < n or len(seq) < n:
                    lost += 1
                    examples.setdefault("lost", (word, n, seq[:20]))
                else:
                    doubled += 1
                    examples.setdefault("doubled", (word, n, seq[:20]))
        else:
            if seq[-1] < n:
                lost += 1
                examples.setdefault("lost", (word, n, seq[-5:]))
            if seq[0] != 1 or any(b > a + 1 for a, b in zip(seq, seq[1:])):
                gaps += 1
                examples.setdefault("gap", (word, n, seq[:20]))
            if seq[-1] > n:
                doubled += 1  # allowed under at-least-once
    unknown = sum(1 for k in seqs if k.decode() not in truth)
    problems = []
    if lost:
        problems.append(f"{lost} words lost updates")
    if gaps:
        problems.append(f"{gaps} words have gaps in their output sequence")
    if unknown:
        problems.append(f"{unknown} output keys were never produced")
    if guarantee == "exactly_once_v2" and doubled:
        problems.append(f"{doubled} words counted twice")
    return {"words": len(truth), "records": sum(truth.values()), "output_records": sum(len(v) for v in seqs.values()),
            "lost": lost, "missing": missing, "gaps": gaps, "doubled": doubled, "unknown": unknown,
            "problems": problems, "examples": examples}


# ---------------------------------------------------------------------------------------------------------
# The scenarios

def _slack(s: Settings, seconds: float) -> int:
    """Records one changelog partition may receive in ``seconds`` (twice the mean share of the feed, + 10)."""
    return int(2 * s.feed_rate / s.partitions * max(0.0, seconds)) + 10


def _check_later_moves(res: ScenarioResult, o: TaskOutage, s: Settings) -> None:
    """A move after the first (the group rebalancing again, e.g. a warm-up caught up) may replay at most
    acceptable_recovery_lag records (plus what was written while it moved)."""
    for m in o.later_moves:
        bound = s.acceptable_recovery_lag + _slack(s, (m["seconds"] or 0) + 1.0)
        if m["replayed"] > bound:
            res.violations.append(f"{res.scenario}: task {o.task} moved again ({m['from']} -> {m['to']}) and replayed "
                                  f"{m['replayed']} records, more than acceptable_recovery_lag "
                                  f"{s.acceptable_recovery_lag} (+ slack: {bound})")


def _run(settings: Settings, scenario: str, body: Callable[[Deployment, ScenarioResult], None],
         num_standby: int | None = None) -> ScenarioResult:
    if settings.system == "kstreams":
        ensure_kstreams_jar(settings.log)
    result = ScenarioResult(scenario, settings.system, settings.guarantee, settings.public())
    broker = Broker(settings.bootstrap)
    try:
        dep = Deployment(settings, scenario, num_standby, broker)
    except BaseException:
        broker.cleanup()
        raise
    result.settings["num_standby_replicas"] = dep.num_standby
    failed = True
    try:
        body(dep, result)
        failed = bool(result.violations) or (settings.verify and not result.correct)
        return result
    finally:
        result.logs = dep.close(failed)
        if result.logs:
            settings.log(f"[{scenario}/{settings.system}] logs kept in {result.logs}")


def run_crash(settings: Settings, instances: int = 3) -> ScenarioResult:
    """Scenario 1: kill -9 one of ``instances``; its tasks move to their standbys."""
    def body(dep: Deployment, res: ScenarioResult) -> None:
        s = dep.settings
        names = [f"i{k}" for k in range(instances)]
        dep.bring_up(names, static=False)
        dep.warm()
        victim = max(dep.alive(), key=lambda i: (len(i.running()), i.name))
        tasks = sorted(victim.running())
        # the standby holders and what each reported last, just before the kill
        before = {}
        t_look = time.time()
        for t in tasks:
            holders = {}
            for inst in dep.alive():
                if inst is victim:
                    continue
                rep = inst.last_report(t, t_look, standby=True)
                if rep is not None and rep["offset"] is not None:
                    holders[inst.label] = rep
            before[t] = holders
        t_kill = victim.kill()
        ends_at_kill = dep.changelog_ends()
        dep.log(f"killed {victim.label} (tasks {tasks}); standbys before: "
                f"{ {t: {k: (v['lag'], v['offset']) for k, v in h.items()} for t, h in before.items()} }")
        settled_at = dep.wait_settled("after the kill", timeout_s=s.settle_timeout_s + s.session_timeout_ms / 1000)
        res.info.update(victim=victim.label, killed_at=t_kill, settled_after_s=_r(settled_at - t_kill))
        for t in tasks:
            o = dep.outage(t, victim.label, t_kill, settled_at)
            p = partition_of(t)

            def bound_of(rep: dict) -> tuple[int, str]:
                written_after = max(0, ends_at_kill[p] - (rep["offset"] + (rep["lag"] or 0)))
                return ((rep["lag"] or 0) + written_after,
                        f"standby lag {rep['lag']} reported {t_kill - rep['t']:.3f}s before the kill, "
                        f"{written_after} records written after it")

            rep = before[t].get(o.new_owner) if o.new_owner else None
            if rep is None and before[t] and o.new_owner is not None:
                # Promoted to a standby holder, then moved on by a later rebalance to an instance whose new
                # standby had caught up as far (the assignor balances among caught-up instances, as Kafka Streams'
                # does): held to what the best standby holder would have replayed.
                holder = min(before[t], key=lambda k: bound_of(before[t][k])[0])
                o.bound, why = bound_of(before[t][holder])
                o.note = f"moved on to {o.new_owner}, a caught-up instance, after its standby holder {holder}: {why}"
            elif rep is not None:
                o.bound, o.note = bound_of(rep)
            if o.bound is not None:
                if o.replayed > o.bound:
                    res.violations.append(f"crash: task {t} replayed {o.replayed} records on {o.new_owner}, more "
                                          f"than its standby was missing ({o.bound}: {o.note})")
            elif dep.num_standby > 0 and o.new_owner is not None:
                o.note = f"moved to {o.new_owner}, which held no standby of it (standbys: {sorted(before[t])})"
                res.violations.append(f"crash: task {t} {o.note}; replayed {o.replayed}")
            if o.running_at is None:
                res.violations.append(f"crash: task {t} was not RUNNING anywhere after the kill")
            _check_later_moves(res, o, s)
            res.outages.append(o)
        dep.finish(res)

    return _run(settings, "crash", body)


def run_rolling(settings: Settings, instances: int = 3) -> ScenarioResult:
    """Scenario 2: static members restart one after another (graceful close, start again at once)."""
    def body(dep: Deployment, res: ScenarioResult) -> None:
        s = dep.settings
        names = [f"i{k}" for k in range(instances)]
        dep.bring_up(names, static=True)
        dep.warm()
        restarts = []
        for name in names:
            old = dep.current[name]
            tasks = sorted(old.running())
            others_before = {i.label: i for i in dep.alive() if i is not old}
            ends_before = dep.changelog_ends()
            t_term = time.time()
            rc = old.terminate()
            new = dep.start(name, old.group_instance_id)
            t_new = time.time()
            settled_at = dep.wait_settled(f"restart of {name}",
                                          timeout_s=s.settle_timeout_s + s.session_timeout_ms / 1000)
            stopped = old.end_time()
            restarts.append({"instance": name, "exit_code": rc, "close_s": _r(old.ended_at - t_term),
                             "start_after_term_s": _r(t_new - t_term), "settled_after_s": _r(settled_at - t_term),
                             "tasks_before": tasks, "tasks_after": sorted(new.running())})
            if rc not in dep.clean_exit_codes:
                res.violations.append(f"rolling: {old.label} exited with {rc} after SIGTERM")
            for t in tasks:
                o = dep.outage(t, old.label, min(stopped, t_term + 60), settled_at)
                p = partition_of(t)
                if o.new_owner == new.label:
                    rs = new.restores(t, t_term)
                    end = max((r["end"] for r in rs), default=ends_before[p])
                    o.bound = max(0, end - ends_before[p])
                    o.note = "back on the restarted instance"
                elif o.new_owner is not None:
                    holder = others_before.get(o.new_owner)
                    rep = holder.last_report(t, t_term + 0.5, standby=True) if holder is not None else None
                    if rep is None or rep["offset"] is None:
                        o.note = f"moved to {o.new_owner}, which held no state of it"
                        res.violations.append(f"rolling: task {t} of {old.label} {o.note}")
                    else:
                        rs = dep.find_instance(o.new_owner).restores(t, t_term)
                        end = max((r["end"] for r in rs), default=rep["offset"])
                        o.bound = max(0, end - rep["offset"])
                        o.note = f"moved to {o.new_owner} (standby at offset {rep['offset']})"
                if o.bound is not None and o.replayed > o.bound:
                    res.violations.append(f"rolling: task {t} replayed {o.replayed} records on {o.new_owner}, "
                                          f"more than its delta {o.bound} ({o.note})")
                if o.running_at is None:
                    res.violations.append(f"rolling: task {t} was not RUNNING anywhere after {name}'s restart")
                _check_later_moves(res, o, s)
                res.outages.append(o)
            # any other restore in the window that started below what the instance held (a wiped store)
            for inst in dep.alive():
                if inst is new:
                    continue
                for t in dep.tasks:
                    for r in inst.restores(t, t_term, settled_at + 1):
                        rep = inst.last_report(t, r["t"], standby=None)
                        if rep is not None and rep["offset"] is not None and r["start"] < rep["offset"]:
                            res.violations.append(f"rolling: {inst.label} restored task {t} from {r['start']}, "
                                                  f"below the offset {rep['offset']} its state held")
            time.sleep(0.5)
        res.info["restarts"] = restarts
        dep.finish(res)

    return _run(settings, "rolling", body)


def _judge_scale_out_move(dep: Deployment, res: ScenarioResult, t: str, to: str, at: float, replayed: int,
                          new: Instance) -> tuple[int | None, str]:
    """One move of task ``t`` to ``to`` (its previous owner let go at ``at``) during a scale-out. To the new
    instance: it must have been a standby / warm-up there first, last reported with a lag <=
    acceptable_recovery_lag (+ what was written since), and replay at most that. To an old instance: at most
    what its standby there was missing (or acceptable_recovery_lag without one)."""
    s = dep.settings
    inst = dep.find_instance(to)
    ta = first_active(inst, t, at - 0.5) or at
    if inst is new:
        sb = [e for e in new.of("tasks") if t in (e.get("standby") or {}) and e["t"] < ta]
        if not sb:
            # Without state the new instance is caught up only if the whole changelog partition is within
            # acceptable_recovery_lag: then it may take the task at once, replaying at most that much.
            bound = s.acceptable_recovery_lag + _slack(s, 1.0)
            rs = new.restores(t, at - 0.5)
            note = (f"no warm-up: the changelog partition was within acceptable_recovery_lag "
                    f"(restored {[(r['start'], r['end']) for r in rs]})")
            if replayed > bound or any(r["end"] - r["start"] > bound for r in rs):
                res.violations.append(f"scale-out: task {t} became active on {new.label} without being a standby / "
                                      f"warm-up there first, and replayed {replayed} records (> acceptable_recovery_lag "
                                      f"{s.acceptable_recovery_lag})")
                note = "no warm-up"
            res.info.setdefault("moved_without_warm_up", []).append(t)
            return bound, note
        # through gaps: in a cooperative hand-over the warm-up may be dropped one rebalance before the task
        # arrives (the old owner revokes it in between, nobody processes it meanwhile)
        rep = new.last_report(t, ta, standby=True, through_gaps=True)
        lag = rep["lag"] if rep else None
        age = ta - rep["t"] if rep else 1.0
        slack = _slack(s, age + 0.5)
        bound = s.acceptable_recovery_lag + slack
        note = (f"warm-up from {sb[0]['t'] - new.started_at:.2f}s after the join; last lag {lag} reported "
                f"{age:.3f}s before the move")
        if lag is None and s.system == "kstreams":
            # bench/kstreams_ha samples lags from allLocalStorePartitionLags() every 100 ms: a warm-up that caught up
            # and moved between two samples has none; the replay bound below still applies
            note += " (Kafka Streams: no lag sampled)"
            res.info.setdefault("warm_up_lag_unknown", []).append(t)
        elif lag is None or lag > bound:
            res.violations.append(f"scale-out: task {t} moved to {new.label} with a warm-up lag of {lag} > "
                                  f"acceptable_recovery_lag {s.acceptable_recovery_lag} (+{slack} written since)")
        if replayed > bound:
            res.violations.append(f"scale-out: task {t} replayed {replayed} records on {new.label} on activation, "
                                  f"more than acceptable_recovery_lag {s.acceptable_recovery_lag} (+{slack})")
        return bound, note
    rep = inst.last_report(t, ta, standby=True, through_gaps=True)
    if rep is not None and rep["offset"] is not None:
        rs = inst.restores(t, at - 0.5)
        end = max((r["end"] for r in rs), default=rep["offset"])
        bound = max(0, end - rep["offset"]) + _slack(s, 0.5)
        if replayed > bound:
            res.violations.append(f"scale-out: task {t} replayed {replayed} records on {to}, more than its standby "
                                  f"there was missing ({bound})")
        return bound, f"to {to}, which held a standby at offset {rep['offset']}"
    bound = s.acceptable_recovery_lag + _slack(s, 1.0)
    if replayed > bound:
        res.violations.append(f"scale-out: task {t} moved to {to} without a standby there and replayed {replayed} "
                              f"records (> acceptable_recovery_lag {s.acceptable_recovery_lag})")
    return bound, f"to {to}, without a standby there"


def run_scale_out(settings: Settings, instances: int = 3, num_standby: int | None = None) -> ScenarioResult:
    """Scenario 3: an instance joins ``instances`` running ones; tasks move to it only after warming up."""
    def body(dep: Deployment, res: ScenarioResult) -> None:
        s = dep.settings
        names = [f"i{k}" for k in range(instances)]
        dep.bring_up(names, static=False)
        dep.warm()
        owner_before = {t: dep.current[os[0]].label for t, os in dep.owners().items() if os}
        ends_before = dep.changelog_ends()
        res.info["changelog_partition_min"] = min(ends_before.values())
        if min(ends_before.values()) <= s.acceptable_recovery_lag:
            res.info["warning"] = ("some changelog partition holds <= acceptable_recovery_lag records: a new "
                                   "instance is caught up on it without state")
        t_join = time.time()
        new_name = f"i{instances}"
        new = dep.start(new_name)
        floor = s.partitions // (instances + 1)
        timeout = s.settle_timeout_s + (s.probing_rebalance_interval_ms / 1000 if s.system == "kstreams" else 0)
        settled_at = dep.wait_settled("scale-out", timeout_s=timeout, min_active={new_name: floor}, stable_s=2.0)
        res.info.update(joined_at=t_join, settled_after_s=_r(settled_at - t_join))
        owner_after = {t: dep.current[os[0]].label for t, os in dep.owners().items() if os}
        spans = running_intervals(dep.incarnations)
        affected = []  # tasks whose owner before the join let go of them
        for t in dep.tasks:
            old_label = owner_before.get(t)
            old_spans = [sp for sp in spans.get(t, []) if sp[2] == old_label and sp[1] >= t_join]
            if old_spans and old_spans[0][1] < settled_at - 0.01:
                affected.append((t, old_label, old_spans[0][1]))
        res.info["moved"] = {t: [owner_before.get(t), owner_after.get(t)] for t, _, _ in affected}
        to_new = 0
        for t, old_label, stopped in affected:
            o = dep.outage(t, old_label, stopped, settled_at)
            moves = [(o.new_owner, o.stopped_at, o.replayed, None)] + [
                (m["to"], m["at"], m["replayed"], m) for m in o.later_moves]
            for to, at, replayed, later in moves:
                if to is None:
                    continue
                to_new += to == new.label
                bound, note = _judge_scale_out_move(dep, res, t, to, at, replayed, new)
                if later is None:
                    o.bound, o.note = bound, note
                else:
                    later.update(bound=bound, note=note)
            if o.running_at is None:
                res.violations.append(f"scale-out: task {t} was not RUNNING anywhere after the join")
            res.outages.append(o)
        if not to_new:
            res.violations.append(f"scale-out: no task moved to the new instance {new.label}")
        # the warm-ups' restores on the new instance (while it was not active): what the join cost it
        res.info["new_instance_restored_total"] = sum(
            r["total"] or 0 for t in dep.tasks for r in new.restores(t, t_join))
        dep.finish(res)

    return _run(settings, "scale_out", body, num_standby)


def run_move_back(settings: Settings) -> ScenarioResult:
    """Scenario 4: tasks move from instance a to a new instance b (after warm-ups), then b closes and they
    move back to a, which still holds their state (within state_cleanup_delay_ms)."""
    def body(dep: Deployment, res: ScenarioResult) -> None:
        s = dep.settings
        dep.bring_up(["a"], static=False)
        dep.warm()
        a = dep.current["a"]
        t_join = time.time()
        b = dep.start("b")
        timeout = s.settle_timeout_s + (s.probing_rebalance_interval_ms / 1000 if s.system == "kstreams" else 0)
        dep.wait_settled("b joining", timeout_s=timeout, min_active={"b": 1}, stable_s=2.0)
        moved = sorted(b.running())
        # when a let go of each moved task, and the offset it last reported for it as its active owner
        left_at, left_offset = {}, {}
        for t in moved:
            spans = [sp for sp in running_intervals([a]).get(t, []) if sp[1] >= t_join]
            left_at[t] = spans[0][1] if spans else t_join
            rep = a.last_report(t, left_at[t] - 1e-3, standby=False)
            left_offset[t] = rep["offset"] if rep else None
        time.sleep(max(1.0, s.warm_s))
        t_close = time.time()
        rc = b.terminate()
        if rc not in dep.clean_exit_codes:
            res.violations.append(f"move-back: {b.label} exited with {rc} after SIGTERM")
        stopped = b.end_time()
        settled_at = dep.wait_settled("b leaving", timeout_s=s.settle_timeout_s + s.session_timeout_ms / 1000)
        res.info.update(moved=moved, away_s=_r(t_close - min(left_at.values())) if left_at else None)
        for t in moved:
            o = dep.outage(t, b.label, stopped, settled_at)
            if o.new_owner != a.label:
                res.violations.append(f"move-back: task {t} went to {o.new_owner}, not back to {a.label}")
            else:
                rs = a.restores(t, t_close)
                start = min((r["start"] for r in rs), default=None)
                end = max((r["end"] for r in rs), default=None)
                off = left_offset[t]
                if off is None:
                    o.note = "a reported no offset for it before it moved"
                elif rs:
                    o.bound = max(0, end - off)
                    o.note = f"left a at offset >= {off}; restored [{start}, {end})"
                    if start < off:
                        res.violations.append(f"move-back: task {t} restored on a from {start}, below the offset "
                                              f"{off} its state on a held when it moved away (state not reused)")
                    if o.replayed > o.bound:
                        res.violations.append(f"move-back: task {t} replayed {o.replayed} records, more than its "
                                              f"delta {o.bound}")
                else:
                    o.bound, o.note = 0, f"left a at offset >= {off}; nothing to restore"
            _check_later_moves(res, o, s)
            res.outages.append(o)
        if not moved:
            res.violations.append("move-back: no task moved to b")
        dep.finish(res)

    return _run(settings, "move_back", body, num_standby=0)


RUNNERS = {"crash": run_crash, "rolling": run_rolling, "scale_out": run_scale_out, "move_back": run_move_back}


def run(scenario: str, settings: Settings) -> ScenarioResult:
    return RUNNERS[scenario](settings)


# ---------------------------------------------------------------------------------------------------------
# Kafka Streams

def ensure_kstreams_jar(log: Callable[[str], None] = lambda m: None) -> str:
    """Builds bench/kstreams_ha with Maven (once; offline first, it needs only what bench/kstreams uses)."""
    if os.path.exists(KSTREAMS_JAR):
        src = os.path.join(KSTREAMS_DIR, "src")
        newest = max((os.path.getmtime(os.path.join(d, f)) for d, _, fs in os.walk(src) for f in fs), default=0)
        newest = max(newest, os.path.getmtime(os.path.join(KSTREAMS_DIR, "pom.xml")))
        if os.path.getmtime(KSTREAMS_JAR) >= newest:
            return KSTREAMS_JAR
    log("building the Kafka Streams app bench/kstreams_ha (mvn package) ...")
    base = ["mvn", "-q", "-B", "-Dstyle.color=never", "package"]
    proc = subprocess.run(["mvn", "-o", *base[1:]], cwd=KSTREAMS_DIR, capture_output=True, text=True)
    if proc.returncode != 0:
        proc = subprocess.run(base, cwd=KSTREAMS_DIR, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"building bench/kstreams_ha failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return KSTREAMS_JAR
