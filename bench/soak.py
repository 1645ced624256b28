"""The soak (issue #10): a word count over 1,000,000 keys runs for MINUTES under a steady feed while one instance
is killed and another restarted gracefully, in turns, every minute; the instance that is never touched must stay
bounded in memory, threads and open files, and no update may be lost.

    .venv/bin/python bench/soak.py [--minutes 20] [--guarantee at_least_once] [--rate 3000] [--keys 1000000]
        [--partitions 4] [--png docs/soak-rss.png] [--summary-csv docs/soak-summary.csv] [--work-dir DIR] [--keep]

(``scripts/soak [MINUTES] [GUARANTEE] [more options]`` runs it.) What it does:

1. Creates an input and an output topic (``--partitions``) and produces every key once (the preload: the stores
   hold the whole key space from the start, so RSS growth is not the state growing).
2. Starts three processes of one app (bench/soak_runner.py: ``group_by_key().count()`` to a RocksDB store,
   ``num_standby_replicas=1``, commit interval 100 ms, session timeout 10 s, each its own state dir):
   ``longlived`` is never stopped; ``killed`` is SIGKILLed and started again (same state dir) every 2 minutes;
   ``bounced`` is closed with SIGTERM and started again every 2 minutes, a minute after ``killed``. So a kill or
   a graceful restart (each a rebalance, or several) happens every minute. Waits until the preload is processed.
3. The soak: a feeder produces ``--rate`` records/s of uniformly drawn keys for ``--minutes``; the first event is
   a minute in, none in the last 30 s. Every ``--sample-s`` (5 s) it samples each live process from /proc:
   VmRSS, Threads, the number of open file descriptors, plus the records it processed (its metrics), and the
   group's input lag (input end offsets - committed offsets).
4. Stops the feeder, waits until the group committed every input offset, closes every instance (SIGTERM) and
   reads the output topic (read_committed) to its end.

Checks, per word (``w0000000`` ...): ``lost`` = its last output count is below the records produced for it;
``gaps`` = its output sequence jumps (a value above the one before + 1: an update lost even if made up later);
``doubled`` = its last count is above its records (allowed under at_least_once, a violation under
exactly_once_v2); under exactly_once_v2 also ``eos_violations`` = its output sequence is not exactly 1..n.

Bounded, judged on ``longlived`` over the soak phase (quarters of MINUTES; the first quarter is warm-up):
- memory: the last quarter's max of RSS outside RocksDB (VmRSS minus the memtables, block cache and table
  readers its open stores report) <= the second quarter's max * (1 + ``--rss-growth-max``, 10 %). RocksDB's
  own memory is bounded by its options per store and moves with the stores held: reported, not judged;
- threads: the max of the second half <= the max of the second quarter + ``--threads-slack`` (2), and the
  last sample <= the max of the second quarter;
- fds outside the state dir (sockets, pipes, ...): the max of the second half <= the max of the second
  quarter + ``--fds-slack`` (4), and the last sample <= the max of the second quarter. The state dir's files
  come and go with flushes, compactions and the stores held: reported, not judged.
Restarts: every started process must reach RUNNING before it is stopped, and no process may exit unless told.

Output: a raw CSV per sample (``samples.csv``) and the events (``events.csv``) in the work dir (a temp dir
unless ``--work-dir``; state dirs deleted at the end unless ``--keep``), a per-minute summary CSV
(``--summary-csv``), the plot (``--png``: RSS, threads, fds and input lag over time per instance, kills and
graceful restarts marked), and one line on stdout:

    soak summary: guarantee=... minutes=... rate=... records=... kills=... restarts=... rebalances=... lost=...
        doubled=... gaps=... rss_start_mb=... rss_q2_max_mb=... rss_max_mb=... rss_end_mb=... rocksdb_end_mb=...
        other_q2_max_mb=... other_q4_max_mb=... threads_max=... fds_max=... fds_other_max=... stall_max_s=...
        all_rss_max_mb=... ... bounded=yes|no result=pass|FAIL

(``rebalances``: assignments the group leader computed in the soak phase; ``stall_*``: seconds in which the
instance held an active task and processed nothing.) ``--replot WORK_DIR`` writes the CSV and the plot again
from a finished run's files.

Exit status 1 on a lost update, unbounded growth, or a process that exited on its own or never reached RUNNING.
Needs the local broker (scripts/kafka start); loads the machine (3 app processes, the feeder, the broker).
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import random
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from array import array
from dataclasses import asdict, dataclass
from types import SimpleNamespace
from typing import Callable

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
if HERE not in sys.path:
    sys.path.insert(0, HERE)

from confluent_kafka import Producer  # noqa: E402

import machine  # noqa: E402  (bench/machine.py)
from bench_kafka import BenchKafka  # noqa: E402  (bench/bench_kafka.py)

RUNNER = os.path.join(HERE, "soak_runner.py")
LONGLIVED, KILLED, BOUNCED = "longlived", "killed", "bounced"
NAMES = (LONGLIVED, KILLED, BOUNCED)


@dataclass
class Settings:
    bootstrap: str = "127.0.0.1:9092"
    minutes: float = 20.0
    guarantee: str = "at_least_once"
    keys: int = 1_000_000
    rate: float = 3_000.0
    partitions: int = 4
    standbys: int = 1
    event_every_s: float = 60.0  # a kill or a graceful restart every this long (each instance: every 2x)
    quiet_end_s: float = 30.0  # no event in the soak's last this long
    sample_s: float = 5.0
    session_timeout_ms: int = 10_000
    commit_interval_ms: int = 100
    rss_growth_max: float = 0.10
    threads_slack: int = 2
    fds_slack: int = 4
    warmup_timeout_s: float = 900.0
    drain_timeout_s: float = 600.0
    seed: int = 10


def log(msg: str, t0: list[float] = [time.monotonic()]) -> None:
    print(f"bench/soak: {time.monotonic() - t0[0]:7.1f}s {msg}", file=sys.stderr, flush=True)


def key_of(i: int) -> bytes:
    return b"w%07d" % i


# ---------------------------------------------------------------------------------------------------------
# Input: the preload and the feeder, with the true count of every key

class Input:
    def __init__(self, bootstrap: str, topic: str, partitions: int, keys: int):
        self.topic, self.partitions, self.keys = topic, partitions, keys
        self.truth = array("l", bytes(8 * keys)) if array("l").itemsize == 8 else array("q", bytes(8 * keys))
        self.produced = 0
        self._producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 5,
                                   "batch.size": 1_000_000, "queue.buffering.max.messages": 2_000_000})
        self._stop = threading.Event()
        self.errors: list[BaseException] = []
        self._thread: threading.Thread | None = None

    def produce(self, idx: list[int], timeout_s: float = 120) -> None:
        produce, parts, topic, poll = self._producer.produce, self.partitions, self.topic, self._producer.poll
        for i in idx:
            while True:
                try:
                    produce(topic, b"x", key_of(i), i % parts)
                    break
                except BufferError:
                    poll(0.05)
        left = self._producer.flush(timeout_s)
        if left:
            raise RuntimeError(f"{left} input records not delivered within {timeout_s}s")
        truth = self.truth
        for i in idx:
            truth[i] += 1
        self.produced += len(idx)

    def preload(self, rng: random.Random) -> None:
        idx = list(range(self.keys))
        rng.shuffle(idx)
        self.produce(idx, timeout_s=300)

    def start_feeder(self, rate: float, rng: random.Random) -> None:
        def run() -> None:
            try:
                t0, sent, keys = time.monotonic(), 0, self.keys
                while not self._stop.is_set():
                    due = int((time.monotonic() - t0) * rate) - sent
                    if due > 0:
                        self.produce([rng.randrange(keys) for _ in range(due)])
                        sent += due
                    self._stop.wait(0.05)
            except BaseException as exc:
                self.errors.append(exc)

        self._thread = threading.Thread(target=run, name="soak-feeder", daemon=True)
        self._thread.start()

    def stop_feeder(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(120)
        if self.errors:
            raise RuntimeError(f"the feeder failed: {self.errors[0]!r}") from self.errors[0]


# ---------------------------------------------------------------------------------------------------------
# An instance incarnation: one process

class Incarnation:
    def __init__(self, soak: "Soak", name: str, n: int):
        self.name, self.n, self.label = name, n, f"{name}#{n}"
        s = soak.s
        self.state_dir = state_dir = os.path.join(soak.work, name)
        os.makedirs(state_dir, exist_ok=True)
        self.stderr_path = os.path.join(soak.work, f"{self.label}.stderr")
        self._stderr = open(self.stderr_path, "w")
        self.started_at = time.time()
        self.running_at: float | None = None
        self.ended_at: float | None = None
        self.how: str | None = None  # "killed" | "stopped" (told), or "exited" (on its own)
        self.rc: int | None = None
        self.close_s: float | None = None
        self.metrics: dict = {}
        self.first_metrics: dict = {}
        self.history: list[tuple[float, int, int]] = []  # (t, records processed, active tasks), once a second
        self.errors: list[str] = []
        cmd = [sys.executable, RUNNER, "--bootstrap", s.bootstrap, "--app-id", soak.app_id, "--state-dir", state_dir,
               "--source", soak.source, "--sink", soak.sink, "--name", self.label, "--guarantee", s.guarantee,
               "--num-standby-replicas", str(s.standbys), "--session-timeout-ms", str(s.session_timeout_ms),
               "--commit-interval-ms", str(s.commit_interval_ms)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self._stderr, text=True, bufsize=1, cwd=ROOT)
        self.pid = self.proc.pid
        self._reader = threading.Thread(target=self._read, name=f"soak-read-{self.label}", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            kind = ev.get("ev")
            if kind == "metrics":
                self.metrics = ev
                self.history.append((ev["t"], ev.get("processed") or 0, ev.get("active") or 0))
                if not self.first_metrics:
                    self.first_metrics = ev
            elif kind == "state" and ev.get("state") == "RUNNING" and self.running_at is None:
                self.running_at = ev["t"]
            elif kind == "error":
                self.errors.append(ev.get("error", ""))
            elif kind == "closed":
                self.close_s = ev.get("close_s")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        self.how = "killed"
        self.proc.send_signal(signal.SIGKILL)
        self._finish(30)

    def terminate(self, timeout_s: float = 120) -> None:
        self.how = "stopped"
        self.proc.send_signal(signal.SIGTERM)
        try:
            self._finish(timeout_s)
        except subprocess.TimeoutExpired:
            self.errors.append(f"did not exit within {timeout_s}s of SIGTERM; killed")
            self.proc.kill()
            self._finish(30)

    def _finish(self, timeout_s: float) -> None:
        self.rc = self.proc.wait(timeout_s)
        self.ended_at = time.time()
        self._reader.join(10)
        self._stderr.close()

    def exited_on_its_own(self) -> bool:
        if self.how is None and self.proc.poll() is not None:
            self.how = "exited"
            self._finish(1)
            return True
        return False


def proc_sample(pid: int, state_dir: str) -> tuple[float, int, int, int] | None:
    """(RSS MiB, threads, open fds, of which files under ``state_dir``) of a live process, or None if it is
    gone. The state dir's files (RocksDB's tables, logs, locks) come and go with the stores the instance holds;
    the rest (sockets, pipes, eventfds, ...) should not grow at all."""
    try:
        rss_kb, threads = 0, 0
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    rss_kb = int(line.split()[1])
                elif line.startswith("Threads:"):
                    threads = int(line.split()[1])
        fd_dir = f"/proc/{pid}/fd"
        fds = state = 0
        prefix = os.path.realpath(state_dir) + os.sep
        for fd in os.listdir(fd_dir):
            fds += 1
            try:
                state += os.readlink(os.path.join(fd_dir, fd)).startswith(prefix)
            except OSError:  # closed meanwhile
                pass
        return rss_kb / 1024, threads, fds, state
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None


# ---------------------------------------------------------------------------------------------------------
# The run

SAMPLE_FIELDS = ["t_s", "minute", "phase", "instance", "incarnation", "pid", "rss_mb", "rocksdb_mb", "other_mb",
                 "threads", "fds", "fds_state", "fds_other", "processed", "rebalances", "commits", "active", "standby",
                 "stores", "state", "lag", "load1"]
EVENT_FIELDS = ["t_s", "minute", "event", "instance", "incarnation", "detail"]


class Soak:
    def __init__(self, s: Settings, work_dir: str | None):
        self.s = s
        run = uuid.uuid4().hex[:8]
        self.app_id = f"soak-{run}"
        self.work = work_dir or tempfile.mkdtemp(prefix=f"hotstate-{self.app_id}-")
        os.makedirs(self.work, exist_ok=True)
        self.broker = BenchKafka(s.bootstrap, "soak")
        self.broker.app(self.app_id)
        self.source = self.broker.create_topic(f"{self.app_id}-in", s.partitions)
        self.sink = self.broker.create_topic(f"{self.app_id}-out", s.partitions)
        self.input = Input(s.bootstrap, self.source, s.partitions, s.keys)
        self.current: dict[str, Incarnation] = {}
        self.incarnations: list[Incarnation] = []
        self.samples: list[dict] = []
        self.events: list[dict] = []
        self.t0 = time.time()  # the first instance started: t_s = 0 (rebased to the soak start at the end)
        self.soak_start: float | None = None
        self.soak_end: float | None = None
        self.phase = "setup"
        self._lock = threading.Lock()  # current / incarnations / events
        self._sampler_stop = threading.Event()
        self._sampler: threading.Thread | None = None
        self.lag_max_soak = 0

    # ---- instances and events ----
    def event(self, kind: str, inc: Incarnation | None, detail: str = "") -> None:
        with self._lock:
            self.events.append({"t": time.time(), "event": kind, "instance": inc.name if inc else "",
                                "incarnation": inc.label if inc else "", "detail": detail})
        log(f"{kind} {inc.label if inc else ''} {detail}".rstrip())

    def start(self, name: str) -> Incarnation:
        with self._lock:
            n = sum(1 for i in self.incarnations if i.name == name)
            inc = Incarnation(self, name, n)
            self.incarnations.append(inc)
            self.current[name] = inc
        self.event("start", inc, f"pid {inc.pid}")
        return inc

    def kill_and_restart(self, name: str) -> None:
        inc = self.current[name]
        inc.kill()
        self.event("kill", inc, f"rc {inc.rc}")
        self.start(name)

    def stop_and_restart(self, name: str) -> None:
        inc = self.current[name]
        t = time.time()
        inc.terminate()
        self.event("stop", inc, f"rc {inc.rc}, exit after {time.time() - t:.1f}s")
        self.start(name)

    def check_exits(self) -> None:
        for name, inc in list(self.current.items()):
            if inc.exited_on_its_own():
                self.event("unexpected_exit", inc, f"rc {inc.rc}; see {inc.stderr_path}")
                if self.phase in ("warmup", "soak"):
                    self.start(name)

    # ---- sampling ----
    def _sample_loop(self) -> None:
        broker = BenchKafka(self.s.bootstrap, "soak-sampler")
        s = self.s
        try:
            nxt = time.monotonic()
            while not self._sampler_stop.is_set():
                try:
                    self.sample_once(broker)
                except Exception as exc:  # a broker hiccup: sample again next time
                    log(f"sample failed: {exc!r}")
                nxt += s.sample_s
                self._sampler_stop.wait(max(0.0, nxt - time.monotonic()))
        finally:
            broker.close_readers()

    def sample_once(self, broker: BenchKafka) -> None:
        s = self.s
        ends = broker.ends(self.source, s.partitions)
        committed = broker.committed(self.app_id, self.source, s.partitions)
        lag = sum(max(0, ends[p] - committed.get(p, 0)) for p in ends)
        now = time.time()
        if self.phase == "soak":
            self.lag_max_soak = max(self.lag_max_soak, lag)
        load1 = os.getloadavg()[0]
        with self._lock:
            live = list(self.current.values())
        for inc in live:
            got = proc_sample(inc.pid, inc.state_dir) if inc.alive() else None
            if got is None:
                continue
            rss, threads, fds, state_fds = got
            m = inc.metrics
            rocksdb = m.get("rocksdb_mb") or 0.0
            self.samples.append({
                "t": now, "phase": self.phase, "instance": inc.name, "incarnation": inc.label, "pid": inc.pid,
                "rss_mb": round(rss, 1), "rocksdb_mb": rocksdb, "other_mb": round(rss - rocksdb, 1),
                "threads": threads, "fds": fds, "fds_state": state_fds, "fds_other": fds - state_fds,
                "processed": m.get("processed"), "rebalances": m.get("rebalances"),
                "commits": m.get("commits"), "active": m.get("active"), "standby": m.get("standby"),
                "stores": m.get("stores"), "state": m.get("state"), "lag": lag, "load1": round(load1, 2)})

    def start_sampler(self) -> None:
        self._sampler = threading.Thread(target=self._sample_loop, name="soak-sampler", daemon=True)
        self._sampler.start()

    def stop_sampler(self) -> None:
        self._sampler_stop.set()
        if self._sampler is not None:
            self._sampler.join(30)

    # ---- waiting ----
    def lag(self) -> int:
        ends = self.broker.ends(self.source, self.s.partitions)
        committed = self.broker.committed(self.app_id, self.source, self.s.partitions)
        return sum(max(0, ends[p] - committed.get(p, 0)) for p in ends)

    def wait_drained(self, what: str, timeout_s: float) -> float:
        t = time.monotonic()
        deadline = t + timeout_s
        last_log = t
        while True:
            self.check_exits()
            lag = self.lag()
            if lag == 0:
                return time.monotonic() - t
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what}: input lag still {lag} after {timeout_s}s (logs in {self.work})")
            if time.monotonic() - last_log > 15:
                log(f"{what}: lag {lag:,}")
                last_log = time.monotonic()
            time.sleep(0.5)

    # ---- the whole run ----
    def run(self) -> dict:
        s = self.s
        rng = random.Random(s.seed)
        log(f"app {self.app_id}, work dir {self.work}")
        t = time.monotonic()
        self.input.preload(rng)
        log(f"preloaded {self.input.produced:,} records ({s.keys:,} keys) in {time.monotonic() - t:.1f}s")
        self.phase = "warmup"
        self.t0 = time.time()
        self.start_sampler()
        for name in NAMES:
            self.start(name)
        took = self.wait_drained("warm-up (the preload)", s.warmup_timeout_s)
        log(f"preload processed {took:.1f}s after the instances started")

        self.phase = "soak"
        self.soak_start = time.time()
        self.input.start_feeder(s.rate, random.Random(s.seed + 1))
        duration = s.minutes * 60
        k = 1
        mono0 = time.monotonic()
        while True:
            elapsed = time.monotonic() - mono0
            if elapsed >= duration:
                break
            self.check_exits()
            if self.input.errors:
                raise RuntimeError(f"the feeder failed: {self.input.errors[0]!r}")
            at = k * s.event_every_s
            if at <= duration - s.quiet_end_s and elapsed >= at:
                if k % 2 == 1:
                    self.stop_and_restart(BOUNCED)
                else:
                    self.kill_and_restart(KILLED)
                k += 1
            time.sleep(0.2)
        self.soak_end = time.time()
        self.phase = "drain"
        self.input.stop_feeder()
        log(f"soak over: {self.input.produced:,} records produced; draining")
        took = self.wait_drained("drain", s.drain_timeout_s)
        log(f"drained in {took:.1f}s")
        time.sleep(s.sample_s)  # one more sample with everything processed
        self.phase = "close"
        for name in (KILLED, BOUNCED, LONGLIVED):
            inc = self.current[name]
            if inc.alive():
                inc.terminate()
                self.event("stop", inc, f"rc {inc.rc} (end of run)")
            else:
                self.check_exits()
        self.stop_sampler()
        log("reading the output topic")
        t = time.monotonic()
        check = self.check_output()
        log(f"output read in {time.monotonic() - t:.1f}s")
        return check

    def check_output(self) -> dict:
        n = self.s.keys
        eos = self.s.guarantee == "exactly_once_v2"
        last = array("q", bytes(8 * n))
        gap = bytearray(n)
        bad_seq = bytearray(n)
        unpack = struct.Struct(">q").unpack
        outputs = 0
        for msg in self.broker.read(self.sink, self.s.partitions, timeout_s=900):
            k, v = msg.key(), msg.value()
            i = int(k[1:])
            value = unpack(v)[0]
            prev = last[i]
            if value > prev + 1:
                gap[i] = 1
            if eos and value != prev + 1:
                bad_seq[i] = 1
            last[i] = value
            outputs += 1
        truth = self.input.truth
        lost = doubled = 0
        examples: list[str] = []
        for i in range(n):
            t, got = truth[i], last[i]
            if got < t:
                lost += 1
                if len(examples) < 5:
                    examples.append(f"{key_of(i).decode()}: output {got} < {t} records")
            elif got > t:
                doubled += 1
        return {"outputs": outputs, "lost": lost, "doubled": doubled, "gaps": sum(gap),
                "eos_violations": sum(bad_seq) if eos else None, "lost_examples": examples}

    def shutdown(self, keep: bool) -> None:
        self._sampler_stop.set()
        for inc in self.incarnations:
            if inc.alive():
                inc.proc.kill()
                try:
                    inc.proc.wait(30)
                except subprocess.TimeoutExpired:
                    pass
        self.broker.close_readers()
        try:
            self.broker.delete_topics()
            self.broker.delete_groups(request_timeout_s=10, result_timeout_s=15)
        except Exception as exc:
            log(f"cleanup failed (ignored): {exc!r}")
        if not keep:
            for name in NAMES:
                shutil.rmtree(os.path.join(self.work, name), ignore_errors=True)


# ---------------------------------------------------------------------------------------------------------
# Judging, the files, the plot

def quarter_stats(samples: list[dict], start: float, end: float, field: str) -> dict:
    q = (end - start) / 4
    vals = {k: [r[field] for r in samples if start + k * q <= r["t"] < start + (k + 1) * q + (0.001 if k == 3 else 0)]
            for k in range(4)}
    return vals


def judge(s: Settings, soak: Soak) -> tuple[dict, list[str]]:
    """The long-lived instance's numbers over the soak phase, and the breaches of the bounded rule."""
    start, end = soak.soak_start, soak.soak_end
    ll = [r for r in soak.samples if r["instance"] == LONGLIVED and start <= r["t"] <= end]
    out: dict = {}
    if len(ll) < 8:
        return out, [f"too few samples of {LONGLIVED} in the soak phase ({len(ll)}) to judge growth"]
    for field in ("rss_mb", "other_mb", "rocksdb_mb", "threads", "fds", "fds_other", "fds_state"):
        q = quarter_stats(ll, start, end, field)
        if not q[1] or not q[3]:
            return out, [f"{field}: a quarter without samples"]
        out[field] = {"start": ll[0][field], "q2_max": max(q[1]), "q4_max": max(q[3]), "max": max(r[field] for r in ll),
                      "end": ll[-1][field], "half2_max": max(q[2] + q[3])}
    problems: list[str] = []
    o, t, f = out["other_mb"], out["threads"], out["fds_other"]
    if o["q4_max"] > o["q2_max"] * (1 + s.rss_growth_max):
        problems.append(f"RSS: outside RocksDB, the last quarter's max {o['q4_max']} MiB > the second quarter's max "
                        f"{o['q2_max']} MiB + {s.rss_growth_max:.0%}")
    if t["half2_max"] > t["q2_max"] + s.threads_slack:
        problems.append(f"threads: the second half's max {t['half2_max']} > the second quarter's max {t['q2_max']} "
                        f"+ {s.threads_slack}")
    if t["end"] > t["q2_max"]:
        problems.append(f"threads: the last sample {t['end']} > the second quarter's max {t['q2_max']}")
    if f["half2_max"] > f["q2_max"] + s.fds_slack:
        problems.append(f"fds: outside the state dir, the second half's max {f['half2_max']} > the second quarter's "
                        f"max {f['q2_max']} + {s.fds_slack}")
    if f["end"] > f["q2_max"]:
        problems.append(f"fds: outside the state dir, the last sample {f['end']} > the second quarter's max {f['q2_max']}")
    return out, problems


def stalls(inc: Incarnation, start: float, end: float) -> tuple[float, float]:
    """(longest, total) seconds in [start, end] in which ``inc`` held an active task and processed nothing, from
    its once-a-second metrics (the feed gives every partition records all the time)."""
    longest = total = 0.0
    run = 0.0
    h = [x for x in inc.history if start <= x[0] <= end]
    for (t0, p0, a0), (t1, p1, _) in zip(h, h[1:]):
        if p1 == p0 and a0 > 0:
            run += t1 - t0
            total += t1 - t0
            longest = max(longest, run)
        else:
            run = 0.0
    return round(longest, 1), round(total, 1)


def write_csvs(soak: Soak, samples_path: str, events_path: str, summary_path: str | None, raw: bool = True) -> None:
    base = soak.t0 if soak.soak_start is None else soak.soak_start

    def rel(t: float) -> tuple[float, int]:
        x = t - base
        return round(x, 1), int(x // 60)

    if raw:
        write_raw_csvs(soak, samples_path, events_path, rel)
    if summary_path:
        write_summary_csv(soak, summary_path, rel)


def write_raw_csvs(soak: Soak, samples_path: str, events_path: str, rel: Callable) -> None:
    with open(samples_path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=SAMPLE_FIELDS)
        w.writeheader()
        for r in soak.samples:
            t_s, minute = rel(r["t"])
            w.writerow({**{k: v for k, v in r.items() if k != "t"}, "t_s": t_s, "minute": minute})
    with open(events_path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=EVENT_FIELDS)
        w.writeheader()
        for e in soak.events:
            t_s, minute = rel(e["t"])
            w.writerow({**{k: v for k, v in e.items() if k != "t"}, "t_s": t_s, "minute": minute})


def write_summary_csv(soak: Soak, summary_path: str, rel: Callable) -> None:
    # per minute (from the soak's start; warm-up minutes are negative) and instance: the maxima, and what happened
    rows: dict[tuple[int, str], dict] = {}
    for r in soak.samples:
        _, minute = rel(r["t"])
        row = rows.setdefault((minute, r["instance"]), {
            "minute": minute, "instance": r["instance"], "samples": 0, "rss_mb_max": 0.0, "rocksdb_mb_max": 0.0,
            "other_mb_max": 0.0, "stores_max": 0, "threads_max": 0, "fds_max": 0, "fds_other_max": 0,
            "processed_last": None, "lag_max": 0, "events": ""})
        row["samples"] += 1
        row["rss_mb_max"] = max(row["rss_mb_max"], r["rss_mb"])
        row["rocksdb_mb_max"] = max(row["rocksdb_mb_max"], r["rocksdb_mb"] or 0.0)
        row["other_mb_max"] = max(row["other_mb_max"], r["other_mb"])
        row["stores_max"] = max(row["stores_max"], r["stores"] or 0)
        row["fds_other_max"] = max(row["fds_other_max"], r["fds_other"])
        row["threads_max"] = max(row["threads_max"], r["threads"])
        row["fds_max"] = max(row["fds_max"], r["fds"])
        row["processed_last"] = r["processed"]
        row["lag_max"] = max(row["lag_max"], r["lag"])
    for e in soak.events:
        _, minute = rel(e["t"])
        row = rows.get((minute, e["instance"]))
        if row is not None:
            row["events"] = (row["events"] + "; " if row["events"] else "") + f"{e['event']} {e['incarnation']}"
    order = {n: i for i, n in enumerate(NAMES)}
    os.makedirs(os.path.dirname(os.path.abspath(summary_path)), exist_ok=True)
    with open(summary_path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["minute", "instance", "samples", "rss_mb_max", "rocksdb_mb_max",
                                          "other_mb_max", "stores_max", "threads_max", "fds_max", "fds_other_max",
                                          "processed_last", "lag_max", "events"])
        w.writeheader()
        for key in sorted(rows, key=lambda k: (k[0], order.get(k[1], 9))):
            w.writerow(rows[key])


def plot(soak: Soak, s: Settings, png: str, title_extra: str, judged: dict) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    base = soak.t0 if soak.soak_start is None else soak.soak_start
    colors = {LONGLIVED: "tab:blue", KILLED: "tab:red", BOUNCED: "tab:green"}
    fig, axes = plt.subplots(4, 1, figsize=(13, 10), sharex=True,
                             gridspec_kw={"height_ratios": [3, 1.5, 1.5, 1.3]})
    panels = [("rss_mb", "RSS (MiB)"), ("threads", "threads"), ("fds", "open fds")]
    for ax, (field, label) in zip(axes, panels):
        for name in NAMES:
            first = True
            for inc in [i for i in soak.incarnations if i.name == name]:
                pts = [((r["t"] - base) / 60, r[field]) for r in soak.samples if r["incarnation"] == inc.label]
                if not pts:
                    continue
                xs, ys = zip(*pts)
                ax.plot(xs, ys, color=colors[name], lw=1.6 if name == LONGLIVED else 1.0,
                        marker="." if len(pts) < 3 else None, ms=3, label=name if first else None)
                first = False
        part = {"rss_mb": ("other_mb", "longlived outside RocksDB (judged)"),
                "fds": ("fds_other", "longlived outside the state dir (judged)")}.get(field)
        if part:
            # not while closing: its stores are closed then, so all of RSS would count as outside RocksDB
            pts = [((r["t"] - base) / 60, r[part[0]]) for r in soak.samples
                   if r["instance"] == LONGLIVED and r["phase"] != "close"]
            if pts:
                xs, ys = zip(*pts)
                ax.plot(xs, ys, color="navy", ls="--", lw=1.1, label=part[1])
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    # the input lag, once per sample time
    lag_pts = sorted({((r["t"] - base) / 60, r["lag"]) for r in soak.samples})
    if lag_pts:
        xs, ys = zip(*lag_pts)
        axes[3].plot(xs, ys, color="black", lw=1)
    axes[3].set_yscale("symlog", linthresh=1000)  # the preload's million and the few hundred between events
    axes[3].set_ylabel("input lag\n(records)")
    axes[3].grid(alpha=0.3)
    axes[3].set_xlabel("minutes since the soak started (negative: the preload being processed)")
    # kills and graceful restarts, the soak's window, the quarters the rule compares
    for e in soak.events:
        x = (e["t"] - base) / 60
        if e["event"] == "kill":
            kw = dict(color="tab:red", ls="--", lw=0.9, alpha=0.8)
        elif e["event"] == "stop" and "end of run" not in e["detail"]:
            kw = dict(color="tab:green", ls=":", lw=1.1, alpha=0.9)
        elif e["event"] == "unexpected_exit":
            kw = dict(color="black", ls="-", lw=1.5)
        else:
            continue
        for ax in axes:
            ax.axvline(x, **kw)
    if soak.soak_start is not None and soak.soak_end is not None:
        m = (soak.soak_end - soak.soak_start) / 60
        for ax in axes:
            ax.axvline(0, color="gray", lw=0.8)
            ax.axvline(m, color="gray", lw=0.8)
        ax0 = axes[0]
        ax0.axvspan(m / 4, m / 2, color="tab:blue", alpha=0.06)
        ax0.axvspan(3 * m / 4, m, color="tab:blue", alpha=0.06)
        r = judged.get("other_mb")
        if r:
            limit = r["q2_max"] * (1 + s.rss_growth_max)
            ax0.hlines(limit, 3 * m / 4, m, color="navy", ls="-", lw=1)
            ax0.text(3 * m / 4, limit, f" limit {limit:.0f} MiB", va="bottom", fontsize=8, color="navy")
            ax0.text(m / 4, ax0.get_ylim()[1], " Q2", va="top", fontsize=8, color="tab:blue")
            ax0.text(3 * m / 4, ax0.get_ylim()[1], " Q4", va="top", fontsize=8, color="tab:blue")
    from matplotlib.lines import Line2D
    handles, labels = axes[0].get_legend_handles_labels()
    handles += [Line2D([], [], color="tab:red", ls="--", lw=0.9), Line2D([], [], color="tab:green", ls=":", lw=1.1)]
    labels += ["SIGKILL of killed (restarted at once)", "SIGTERM of bounced (restarted at once)"]
    axes[0].legend(handles, labels, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, borderaxespad=0)
    h2 = [h for h, lab in zip(*axes[2].get_legend_handles_labels()) if "judged" in lab]
    axes[2].legend(h2, ["longlived outside the state dir (judged)"], loc="upper left", bbox_to_anchor=(1.01, 1.0),
                   fontsize=8, borderaxespad=0)
    axes[0].set_ylim(bottom=0)
    axes[1].set_ylim(bottom=0)
    axes[2].set_ylim(bottom=0)
    fig.suptitle(f"hotstate soak: {s.guarantee}, {s.keys:,} keys, {s.rate:,.0f} records/s, {s.partitions} partitions, "
                 f"1 standby, 3 instances\n{title_extra}", fontsize=10)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(png)), exist_ok=True)
    fig.savefig(png, dpi=100)
    plt.close(fig)


def count_rebalances(soak: Soak) -> int | None:
    """Rebalances completed in the soak phase: the group leader logs each assignment it computes (one per
    generation; any incarnation may be the leader), so the lines of all incarnations' logs in that window."""
    if not (soak.soak_start and soak.soak_end):
        return None
    n = 0
    for inc in soak.incarnations:
        try:
            with open(inc.stderr_path) as f:
                for line in f:
                    if "assignment (leader)" not in line:
                        continue
                    try:
                        t = time.mktime(time.strptime(line[:19], "%Y-%m-%d %H:%M:%S")) + int(line[20:23]) / 1000
                    except ValueError:
                        continue
                    n += soak.soak_start <= t <= soak.soak_end
        except OSError:
            pass
    return n


def title_of(f: dict) -> str:
    """The plot's second title line, from the summary's fields."""
    return (f"{f['minutes']:g} min, {f['records']:,} records, {f['kills']} kills, {f['restarts']} graceful restarts, "
            f"lost={f['lost']}, bounded={f['bounded']}; longlived RSS {f['rss_start_mb']} -> {f['rss_end_mb']} MiB, "
            f"of which outside RocksDB max {f['other_q2_max_mb']} (Q2) -> {f['other_q4_max_mb']} (Q4) MiB")


class _Replay:
    """A finished run read back from its work dir (samples.csv, events.csv, summary.json), for ``--replot``."""

    def __init__(self, work: str):
        with open(os.path.join(work, "summary.json")) as f:
            self.details = json.load(f)
        ints = {"pid", "threads", "fds", "fds_state", "fds_other", "processed", "rebalances", "commits", "active",
                "standby", "stores", "lag"}
        floats = {"rss_mb", "rocksdb_mb", "other_mb", "load1"}

        def conv(k: str, v: str):
            if v == "":
                return None
            return int(v) if k in ints else float(v) if k in floats else v

        with open(os.path.join(work, "samples.csv")) as f:
            self.samples = [{**{k: conv(k, v) for k, v in r.items()}, "t": float(r["t_s"])} for r in csv.DictReader(f)]
        with open(os.path.join(work, "events.csv")) as f:
            self.events = [{**r, "t": float(r["t_s"])} for r in csv.DictReader(f)]
        # times are relative to the soak's start; the soak ran its settings' minutes (its loop ends within 0.2 s)
        self.soak_start, self.soak_end = 0.0, self.details["settings"]["minutes"] * 60
        self.t0 = min((r["t"] for r in self.samples), default=0.0)
        seen: dict[str, SimpleNamespace] = {}
        for r in self.samples:
            seen.setdefault(r["incarnation"], SimpleNamespace(name=r["instance"], label=r["incarnation"]))
        self.incarnations = list(seen.values())


def replot(work: str, png: str | None, summary_csv: str | None) -> None:
    """Writes the per-minute CSV and the plot again from a finished run's work dir (no broker needed)."""
    run = _Replay(work)
    d = run.details
    s = Settings(**{k: v for k, v in d["settings"].items() if k in Settings.__dataclass_fields__})
    judged, _ = judge(s, run)
    if summary_csv:
        write_csvs(run, os.path.join(work, "samples.csv"), os.path.join(work, "events.csv"), summary_csv,
                   raw=False)
    if png:
        plot(run, s, png, title_of(d["summary"]), judged)
    print("soak summary: " + " ".join(f"{k}={v}" for k, v in d["summary"].items()))


def main() -> None:
    args = parse()
    if args.replot:
        replot(args.replot, args.png, args.summary_csv)
        return
    s = Settings(bootstrap=args.bootstrap, minutes=args.minutes, guarantee=args.guarantee, keys=args.keys,
                 rate=args.rate, partitions=args.partitions, sample_s=args.sample_s, seed=args.seed,
                 rss_growth_max=args.rss_growth_max, threads_slack=args.threads_slack,
                 fds_slack=args.fds_slack)
    load_before = os.getloadavg()
    soak = Soak(s, args.work_dir)
    failed_run: BaseException | None = None
    check: dict = {}
    try:
        check = soak.run()
    except BaseException as exc:
        failed_run = exc
        log(f"the run failed: {exc!r}")
    finally:
        soak.shutdown(args.keep)
    load_after = os.getloadavg()

    samples_csv = os.path.join(soak.work, "samples.csv")
    events_csv = os.path.join(soak.work, "events.csv")
    write_csvs(soak, samples_csv, events_csv, args.summary_csv)
    judged, growth = judge(s, soak) if soak.soak_start and soak.soak_end else ({}, ["the soak phase did not run"])
    problems = list(growth)

    kills = sum(1 for e in soak.events if e["event"] == "kill")
    restarts = sum(1 for e in soak.events if e["event"] == "stop" and "end of run" not in e["detail"])
    unexpected = [e for e in soak.events if e["event"] == "unexpected_exit"]
    never_running = [i.label for i in soak.incarnations if i.running_at is None]
    to_running = [i.running_at - i.started_at for i in soak.incarnations if i.running_at is not None]
    bad_close = [f"{i.label} rc {i.rc}" for i in soak.incarnations if i.how == "stopped" and i.rc != 0]
    ll_incs = [i for i in soak.incarnations if i.name == LONGLIVED]
    ll_last = ll_incs[-1].metrics if ll_incs else {}
    ll_soak = [r for r in soak.samples if r["instance"] == LONGLIVED and r["phase"] == "soak"]
    ll_rebalances_metric = (ll_soak[-1]["rebalances"] or 0) - (ll_soak[0]["rebalances"] or 0) if ll_soak else None
    rebalances = count_rebalances(soak)
    soak_rows = [r for r in soak.samples if r["phase"] == "soak"]
    if unexpected:
        problems.append(f"{len(unexpected)} process(es) exited on their own: " +
                        ", ".join(f"{e['incarnation']} ({e['detail']})" for e in unexpected))
    if never_running:
        problems.append(f"never reached RUNNING: {', '.join(never_running)}")
    if bad_close:
        problems.append(f"graceful close failed: {', '.join(bad_close)}")
    lost = check.get("lost")
    correct = bool(check) and not check["lost"] and not check["gaps"] and not check.get("eos_violations")
    bounded = bool(judged) and not growth
    ok = failed_run is None and correct and not problems

    r, o, t, f = (judged.get(k, {}) for k in ("rss_mb", "other_mb", "threads", "fds"))
    fo, rdb = judged.get("fds_other", {}), judged.get("rocksdb_mb", {})
    stall = [stalls(i, soak.soak_start, soak.soak_end) for i in ll_incs] if soak.soak_start and soak.soak_end else []
    stall_all = [stalls(i, soak.soak_start, soak.soak_end) for i in soak.incarnations] if stall else []
    fields = {
        "guarantee": s.guarantee, "minutes": s.minutes, "rate": int(s.rate), "keys": s.keys,
        "partitions": s.partitions, "records": soak.input.produced, "kills": kills, "restarts": restarts,
        "rebalances": rebalances, "lost": lost, "doubled": check.get("doubled"), "gaps": check.get("gaps"),
    }
    if s.guarantee == "exactly_once_v2":
        fields["eos_violations"] = check.get("eos_violations")
    fields.update({
        "rss_start_mb": r.get("start"), "rss_q2_max_mb": r.get("q2_max"), "rss_q4_max_mb": r.get("q4_max"),
        "rss_max_mb": r.get("max"), "rss_end_mb": r.get("end"),
        "rocksdb_end_mb": rdb.get("end"), "other_q2_max_mb": o.get("q2_max"), "other_q4_max_mb": o.get("q4_max"),
        "other_end_mb": o.get("end"),
        "threads_start": t.get("start"), "threads_max": t.get("max"), "threads_end": t.get("end"),
        "fds_start": f.get("start"), "fds_max": f.get("max"), "fds_end": f.get("end"),
        "fds_other_q2_max": fo.get("q2_max"), "fds_other_max": fo.get("max"), "fds_other_end": fo.get("end"),
        "processed": ll_last.get("processed"),
        "stall_max_s": max((x[0] for x in stall), default=None),
        "stall_total_s": round(sum(x[1] for x in stall), 1) if stall else None,
        "all_rss_max_mb": max((x["rss_mb"] for x in soak_rows), default=None),
        "all_threads_max": max((x["threads"] for x in soak_rows), default=None),
        "all_fds_max": max((x["fds"] for x in soak_rows), default=None),
        "all_stall_max_s": max((x[0] for x in stall_all), default=None),
        "lag_max": soak.lag_max_soak,
        "to_running_max_s": round(max(to_running), 1) if to_running else None,
        "unexpected_exits": len(unexpected),
        "bounded": "yes" if bounded else "no", "result": "pass" if ok else "FAIL",
    })
    line = "soak summary: " + " ".join(f"{k}={v}" for k, v in fields.items())
    title = title_of(fields)
    if args.png:
        try:
            plot(soak, s, args.png, title, judged)
        except Exception as exc:
            log(f"plotting failed: {exc!r}")
    details = {"settings": asdict(s), "summary": fields, "judged": judged, "problems": problems, "check": check,
               "longlived_rebalances_total_metric": ll_rebalances_metric, "machine": machine.describe(),
               "load_before": load_before, "load_after": load_after,
               "incarnations": [{"label": i.label, "pid": i.pid, "how": i.how, "rc": i.rc,
                                 "to_running_s": None if i.running_at is None else round(i.running_at - i.started_at, 2),
                                 "close_s": i.close_s, "errors": i.errors,
                                 "processed": i.metrics.get("processed")} for i in soak.incarnations],
               "error": repr(failed_run) if failed_run else None}
    with open(os.path.join(soak.work, "summary.json"), "w") as fh:
        json.dump(details, fh, indent=1, default=repr)
    for p in problems:
        log(f"problem: {p}")
    if check.get("lost_examples"):
        log(f"lost, e.g.: {check['lost_examples']}")
    log(f"machine: {machine.describe()}; load average {load_before[0]:.2f} before, {load_after[0]:.2f} after")
    log(f"raw samples {samples_csv}, events {events_csv}, details {os.path.join(soak.work, 'summary.json')}")
    print(line, flush=True)
    if failed_run is not None and not isinstance(failed_run, Exception):
        raise failed_run
    sys.exit(0 if ok else 1)


def parse() -> argparse.Namespace:
    d = Settings()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bootstrap", default=d.bootstrap)
    ap.add_argument("--minutes", type=float, default=d.minutes)
    ap.add_argument("--guarantee", default=d.guarantee, choices=("at_least_once", "exactly_once_v2"))
    ap.add_argument("--keys", type=int, default=d.keys)
    ap.add_argument("--rate", type=float, default=d.rate)
    ap.add_argument("--partitions", type=int, default=d.partitions)
    ap.add_argument("--sample-s", type=float, default=d.sample_s)
    ap.add_argument("--seed", type=int, default=d.seed)
    ap.add_argument("--rss-growth-max", type=float, default=d.rss_growth_max)
    ap.add_argument("--threads-slack", type=int, default=d.threads_slack)
    ap.add_argument("--fds-slack", type=int, default=d.fds_slack)
    ap.add_argument("--png", default=os.path.join(ROOT, "docs", "soak-rss.png"), help="'' for no plot")
    ap.add_argument("--summary-csv", default=os.path.join(ROOT, "docs", "soak-summary.csv"), help="'' for none")
    ap.add_argument("--work-dir", default=None)
    ap.add_argument("--keep", action="store_true", help="keep the instances' state dirs")
    ap.add_argument("--replot", metavar="WORK_DIR", help="only write --summary-csv and --png again from a finished "
                    "run's work dir (its samples.csv, events.csv, summary.json)")
    return ap.parse_args()


if __name__ == "__main__":
    main()
