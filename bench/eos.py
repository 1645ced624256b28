"""Exactly-once, measured: hotstate's throughput under exactly_once_v2 vs at_least_once, and what a restart
after kill -9 replays, hotstate vs Kafka Streams 4.4 (its defaults, exactly_once_v2). Same broker, same run.

    .venv/bin/python bench/eos.py [--records N] [--keys K] [--partitions P] [--kills M] [--json]
        [--chunk C] [--commit-interval-ms MS] [--repeat R] [--parts throughput,restore] [--no-verify]
        [--no-record] [--keep]

The input: N records (key = a word of K distinct ones, every word at least once when N >= K, the rest drawn
uniformly; value "x"), partition = crc32(word) % P. The throughput runs share one input topic; each system of
the restore part has its own with the same records (the N, then the same C-record chunk per kill cycle).

1. Throughput (each run a fresh app id and state dir, in a child process): hotstate's word count (STRING keys,
   ``group_by_key().count()`` into a RocksDB store, INT64 counts to a sink topic) under at_least_once and
   exactly_once_v2 at the same commit interval (``--commit-interval-ms``, default 100: exactly_once_v2's
   default), plus at_least_once at its own default interval (30 s). Timed from ``App.start()`` until
   ``metrics()['records_processed_total']`` reached N and the group's committed offsets reached the input's
   end offsets (for the 30 s interval: ``close()`` commits, and is inside the time).
2. Restore after kill -9, per system, one app id and state dir for the whole scenario: the app processes the
   whole input (the changelog then holds at least K keys); then M times: C more records are produced, the
   app is SIGKILLed once its committed offsets moved a random 20-60% into them (so it is mid-work: records
   processed and a transaction open), and restarted on the same state dir. At each restart: the changelog's
   offsets (sum over partitions of high - low, transaction markers included), the records the restore
   listener reports replayed, process start until RUNNING, and the restore window (first restore start to
   last restore end); for Kafka Streams also whether its task directories held a .checkpoint file before the
   restart and its warnings about wiping a task's local state. After the last restart the app catches up and
   is closed with SIGTERM; with verification on, its output topic (read_committed) must hold every word's
   exact count (exactly-once across the kills).
   hotstate: tests/chaos/wordcount_runner.py --guarantee exactly_once_v2 (commit interval 100 ms, session
   timeout 6 s). Kafka Streams: bench/eos_kstreams (built with Maven on first use), defaults plus
   exactly_once_v2 and the same 6 s session timeout, so both restarts wait the same for the killed member
   to leave the group.

Prints one JSON object per measurement and one with the ratios (``--json``: nothing else on stdout), and
inserts a dated entry into the "Exactly-once" section of docs/benchmarks.md (``--no-record`` skips it).
Needs the local broker (scripts/kafka start), Java 17 and Maven.
"""
from __future__ import annotations

import argparse
import datetime
import glob
import json
import os
import random
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import zlib
from collections import Counter

from confluent_kafka import Producer
import machine  # bench/machine.py
from bench_kafka import BenchKafka  # bench/bench_kafka.py

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
KSTREAMS_DIR = os.path.join(HERE, "eos_kstreams")
KSTREAMS_JAR = os.path.join(KSTREAMS_DIR, "target", "kstreams-eos-bench.jar")
HOTSTATE_RUNNER = os.path.join(ROOT, "tests", "chaos", "wordcount_runner.py")
STORE = "word-counts"
SEED = 3
SESSION_TIMEOUT_MS = 6000  # the runner's; given to Kafka Streams too
ALOS_DEFAULT_COMMIT_MS = 30_000
# Kafka Streams' StreamThread warning when it discards the local state of tasks (under EOS after an unclean
# shutdown: no checkpoint file, see ProcessorStateManager) and restores them from the changelog's start.
_KS_WIPE = re.compile(r"Detected the states of tasks \[([^\]]*)\] are corrupted\. Will close the task as dirty "
                      r"and re-create and bootstrap from scratch")


def main() -> None:
    args = _parse()
    if args.child_throughput:
        _throughput_child(args.child_throughput)
        return
    run = uuid.uuid4().hex[:8]
    work = tempfile.mkdtemp(prefix=f"hotstate-bench-eos-{run}-", dir=args.work_dir)
    load_before = os.getloadavg()
    _log(args, f"run {run}: {args.records:,} records, {args.keys:,} keys, {args.partitions} partitions, "
               f"{args.kills} kills of {args.chunk:,}-record chunks; work dir {work}")
    if "restore" in args.parts and "kstreams" in args.systems and not os.path.exists(KSTREAMS_JAR):
        _log(args, "building the Kafka Streams app (mvn package, once) ...")
        subprocess.run(["mvn", "-q", "-B", "-Dstyle.color=never", "package"], cwd=KSTREAMS_DIR, check=True,
                       stdout=sys.stderr)
    kafka = _Kafka(args.bootstrap)
    source = kafka.create_topic(f"bench-eos-{run}-in", args.partitions)
    data = _Input(args, kafka, source)
    results: list[dict] = []
    failed = True
    try:
        if "throughput" in args.parts:
            t0 = time.monotonic()
            data.produce(data.initial())
            _log(args, f"produced {args.records:,} input records in {time.monotonic() - t0:.1f}s")
            runs = [("at_least_once", args.commit_interval_ms), ("exactly_once_v2", args.commit_interval_ms),
                    ("at_least_once", ALOS_DEFAULT_COMMIT_MS)]
            for guarantee, ci in runs:
                res = _throughput(args, kafka, run, source, work, guarantee, ci)
                results.append(res)
                _log(args, f"throughput {guarantee} (commit {ci} ms): {res['records_per_s']:,} records/s "
                           f"({res['seconds']:.1f}s)")
        if "restore" in args.parts:
            for system in args.systems:
                res = _restore_scenario(args, kafka, run, work, data, system)
                results.append(res)
                _log(args, f"restore {system}: replayed {res['replayed_records']} of changelogs "
                           f"{res['changelog_records']}, to RUNNING {res['seconds_to_running']}s")
        ratios = _ratios(args, results)
        for res in results:
            print(json.dumps(res) if args.json else _human(res))
        print(json.dumps(ratios) if args.json else "ratios: " + json.dumps(ratios["ratios"]))
        if not args.no_record:
            _record(args, results, ratios, load_before, os.getloadavg())
        failed = False
    finally:
        if not args.keep:
            kafka.cleanup()
            if failed:
                _log(args, f"failed: the apps' logs stay in {work}")
            else:
                shutil.rmtree(work, ignore_errors=True)


def _parse() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=1_000_000, help="input records (default 1,000,000)")
    ap.add_argument("--keys", type=int, default=250_000, help="distinct words (default 250,000)")
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--kills", type=int, default=3, help="kill -9 + restart cycles per system (default 3)")
    ap.add_argument("--chunk", type=int, default=None, help="records produced per kill cycle (default max(20k, N/10))")
    ap.add_argument("--commit-interval-ms", type=int, default=100,
                    help="throughput: the commit interval of both guarantees (default 100, exactly_once_v2's default)")
    ap.add_argument("--repeat", type=int, default=1, help="throughput runs per guarantee; the median is reported")
    ap.add_argument("--parts", default="throughput,restore")
    ap.add_argument("--systems", default="hotstate,kstreams", help="restore: hotstate,kstreams")
    ap.add_argument("--json", action="store_true", help="one JSON object per line, nothing else on stdout")
    ap.add_argument("--bootstrap", default=f"127.0.0.1:{os.environ.get('HOTSTATE_KAFKA_PORT', '9092')}")
    ap.add_argument("--work-dir", default=None, help="where state dirs go (default: the system's temp dir)")
    ap.add_argument("--no-verify", action="store_true", help="restore: skip checking the output's exact counts")
    ap.add_argument("--no-record", action="store_true", help="do not write to docs/benchmarks.md")
    ap.add_argument("--keep", action="store_true", help="keep topics, groups and state dirs")
    ap.add_argument("--child-throughput", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    args.systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    if args.chunk is None:
        args.chunk = max(20_000, args.records // 10)
    if set(args.parts) - {"throughput", "restore"} or set(args.systems) - {"hotstate", "kstreams"}:
        ap.error("--parts takes throughput,restore; --systems takes hotstate,kstreams")
    if not args.child_throughput and (args.records < 1 or args.keys < 1 or args.partitions < 1 or args.kills < 0):
        ap.error("records, keys, partitions must be >= 1 and kills >= 0")
    return args


def _log(args: argparse.Namespace, msg: str) -> None:
    print(f"bench/eos: {msg}", file=sys.stderr if args.json else sys.stdout, flush=True)


# ---- Kafka ----

class _Kafka(BenchKafka):
    """Topics and groups this run makes (deleted at the end), watermarks, committed offsets, reading."""

    def __init__(self, bootstrap: str):
        super().__init__(bootstrap, "bench-eos")

    def read_table(self, topic: str, partitions: int) -> dict[bytes, bytes]:
        """The latest value per key of ``topic``, read_committed, to its current end."""
        return {msg.key(): msg.value() for msg in self.read(topic, partitions, timeout_s=300)}

    def wait_committed(self, group: str, topic: str, partitions: int, target: dict[int, int], timeout_s: float,
                       proc: "_Proc | None" = None) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            got = self.committed(group, topic, partitions)
            if all(got[p] >= target[p] for p in target):
                return
            if proc is not None:
                proc.check_alive()
            if time.monotonic() > deadline:
                raise TimeoutError(f"{group}: committed {got}, want {target} within {timeout_s}s")
            time.sleep(0.05)

    def cleanup(self) -> None:
        self.close_readers()
        self.delete_topics()
        # A Kafka Streams member does not leave the group on close: its group is non-empty until the session
        # times out.
        left = self.delete_groups(request_timeout_s=30, result_timeout_s=60,
                                  retry_non_empty_s=3 * SESSION_TIMEOUT_MS / 1000)
        if left:
            print(f"bench/eos: could not delete the groups {left} (not empty)", file=sys.stderr)


class _Input:
    """The input records: deterministic words, what was produced so far (the true counts)."""

    def __init__(self, args: argparse.Namespace, kafka: _Kafka, topic: str, vocab: list[str] | None = None):
        self.args, self.kafka, self.topic = args, kafka, topic
        self.vocab = vocab or [f"w{i:07d}" for i in range(args.keys)]
        self.truth: Counter = Counter()
        self.produced = 0

    def initial(self) -> list[str]:
        rng = random.Random(SEED)
        n, k = self.args.records, self.args.keys
        words = self.vocab[:n] + rng.choices(self.vocab, k=max(0, n - k))
        rng.shuffle(words)
        return words

    def chunk(self, k: int) -> list[str]:
        """The records of kill cycle k: the same for every system."""
        return random.Random(SEED * 1000 + k).choices(self.vocab, k=self.args.chunk)

    def produce(self, words: list[str]) -> None:
        parts = self.args.partitions
        producer = Producer({"bootstrap.servers": self.kafka.bootstrap, "enable.idempotence": True,
                             "linger.ms": 20, "batch.size": 1_000_000, "queue.buffering.max.messages": 1_000_000})
        produce = producer.produce
        for w in words:
            kb = w.encode()
            while True:
                try:
                    produce(self.topic, b"x", kb, zlib.crc32(kb) % parts)
                    break
                except BufferError:
                    producer.poll(0.05)
        left = producer.flush(120)
        if left:
            raise RuntimeError(f"{left} input records not delivered")
        self.truth.update(words)
        self.produced += len(words)


# ---- 1. throughput ----

def _throughput(args, kafka: _Kafka, run: str, source: str, work: str, guarantee: str, commit_ms: int) -> dict:
    runs = []
    tag = "eos" if guarantee == "exactly_once_v2" else "alos"
    for i in range(args.repeat):
        app_id = kafka.app(f"bench-eos-{run}-tp-{tag}-{commit_ms}-{i}")
        sink = kafka.create_topic(f"{app_id}-out", args.partitions)
        state_dir = os.path.join(work, app_id)
        job = {"bootstrap": args.bootstrap, "app_id": app_id, "source": source, "sink": sink,
               "state_dir": state_dir, "guarantee": guarantee, "commit_interval_ms": commit_ms,
               "records": args.records, "partitions": args.partitions,
               "timeout_s": 120 + args.records // 2_000}
        job_file = os.path.join(work, f"{app_id}.json")
        with open(job_file, "w") as f:
            json.dump(job, f)
        proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--child-throughput", job_file],
                              capture_output=True, text=True, timeout=job["timeout_s"] + 120)
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
        if proc.returncode != 0 or not lines:
            raise RuntimeError(f"throughput run {app_id} failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n"
                               f"{proc.stderr[-3000:]}")
        runs.append(json.loads(lines[-1]))
        shutil.rmtree(state_dir, ignore_errors=True)
    best = sorted(runs, key=lambda r: r["seconds"])[len(runs) // 2]
    res = {"measure": "throughput", "system": "hotstate", "guarantee": guarantee, "commit_interval_ms": commit_ms,
           "records": args.records, "keys": args.keys, "partitions": args.partitions,
           "seconds": round(statistics.median(r["seconds"] for r in runs), 3)}
    res["records_per_s"] = round(args.records / res["seconds"])
    res.update({k: v for k, v in best.items() if k not in res})
    if args.repeat > 1:
        res["runs_seconds"] = [round(r["seconds"], 3) for r in runs]
    return res


def _throughput_child(job_file: str) -> None:
    """One throughput run in this process: start -> every input record processed and its offset committed."""
    import logging
    import resource

    import hotstate
    from hotstate import serde

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    job = json.load(open(job_file))
    app = hotstate.App(app_id=job["app_id"], bootstrap_servers=job["bootstrap"], state_dir=job["state_dir"],
                       processing_guarantee=job["guarantee"], commit_interval_ms=job["commit_interval_ms"])
    counts = (app.stream(job["source"], key_serde=serde.STRING, value_serde=serde.STRING)
                 .group_by_key()
                 .count(store=STORE))
    counts.to_stream().to(job["sink"], value_serde=serde.INT64)
    kafka = _Kafka(job["bootstrap"])
    parts, n = job["partitions"], job["records"]
    ends = kafka.ends(job["source"], parts)
    assert sum(ends.values()) == n, (ends, n)

    def cpu() -> float:
        ru = resource.getrusage(resource.RUSAGE_SELF)
        return ru.ru_utime + ru.ru_stime

    deadline = time.monotonic() + job["timeout_s"]
    t0, cpu0 = time.perf_counter(), cpu()
    app.start()
    closed = False
    try:
        app.wait_until_running(timeout_s=job["timeout_s"])
        t_running = time.perf_counter()
        while app.metrics()["records_processed_total"] < n:
            if app.state is hotstate.AppState.ERROR or time.monotonic() > deadline:
                raise RuntimeError(f"processing failed or timed out: {app.state} {app.error()} {app.metrics()}")
            time.sleep(0.01)
        t_processed = time.perf_counter()
        if job["commit_interval_ms"] > 5_000:  # waiting for the interval would time the interval: close commits
            closed = app.close(timeout_s=120)
        while kafka.committed(job["app_id"], job["source"], parts) != ends:
            if time.monotonic() > deadline:
                raise RuntimeError(f"offsets not committed: {kafka.committed(job['app_id'], job['source'], parts)}")
            time.sleep(0.01)
        t_done = time.perf_counter()
        cpu_s = cpu() - cpu0
        m = app.metrics()
    finally:
        if not closed:
            app.close(timeout_s=120)
        kafka.close_readers()
    print(json.dumps({
        "seconds": t_done - t0,
        "seconds_to_running": round(t_running - t0, 3),
        "seconds_running_to_processed": round(t_processed - t_running, 3),
        "seconds_processed_to_committed": round(t_done - t_processed, 3),
        "records_per_s_while_running": round(n / (t_processed - t_running)),
        "cpu_seconds": round(cpu_s, 2),
        "records_processed_total": m["records_processed_total"],
        "commit_total": m["commit_total"],
    }))


# ---- 2. restore after kill -9 ----

class _Proc:
    """An app process; its stdout JSON events, each stamped with the monotonic time it was read."""

    def __init__(self, cmd: list[str], stderr_path: str):
        self.stderr_path = stderr_path
        self._stderr = open(stderr_path, "w")
        self.t_spawn = time.monotonic()
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self._stderr, text=True, bufsize=1)
        self.events: list[dict] = []
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            now = time.monotonic()
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            ev["_t"] = now
            with self._cond:
                self.events.append(ev)
                self._cond.notify_all()

    def of(self, kind: str) -> list[dict]:
        with self._cond:
            return [e for e in self.events if e["ev"] == kind]

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise RuntimeError(f"the app (pid {self.proc.pid}) exited ({self.proc.returncode}) "
                               f"{time.monotonic() - self.t_spawn:.1f}s after its start; see {self.stderr_path}")

    def wait_for(self, pred, what: str, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while not pred():
                self.check_alive()
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no {what} within {timeout_s}s; see {self.stderr_path}")
                self._cond.wait(min(left, 0.2))

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)
        self._reader.join(10)
        self._stderr.close()

    def terminate(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(120)
        self._reader.join(10)
        self._stderr.close()
        return rc

    def ensure_dead(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)
        if not self._stderr.closed:
            self._stderr.close()


def _restore_scenario(args, kafka: _Kafka, run: str, work: str, shared: _Input, system: str) -> dict:
    """Every system gets its own input topic with the same records: the initial N, then the same chunk per cycle."""
    tag = "hs" if system == "hotstate" else "ks"
    app_id = kafka.app(f"bench-eos-{run}-{tag}")
    source = kafka.create_topic(f"{app_id}-in", args.partitions)
    data = _Input(args, kafka, source, shared.vocab)
    data.produce(data.initial())
    sink = kafka.create_topic(f"{app_id}-out", args.partitions)
    changelog = f"{app_id}-{STORE}-changelog"
    state_dir = os.path.join(work, app_id)
    os.makedirs(state_dir)
    parts = args.partitions
    rng = random.Random(SEED + 1)  # the same kill moments (fractions of the chunk) for every system
    if system == "hotstate":
        cmd = [sys.executable, HOTSTATE_RUNNER, "--bootstrap", args.bootstrap, "--app-id", app_id,
               "--state-dir", state_dir, "--source", source, "--sink", sink, "--guarantee", "exactly_once_v2"]
    else:
        cmd = ["java", "-Xmx2g", "-jar", KSTREAMS_JAR, args.bootstrap, app_id, source, sink, state_dir,
               str(SESSION_TIMEOUT_MS)]
    timeout_s = 120 + data.produced // 2_000
    cycles: list[dict] = []
    proc = _Proc(cmd, os.path.join(work, f"{system}-0.stderr"))
    config_event: dict = {}
    try:
        proc.wait_for(lambda: proc.of("running"), "RUNNING", 120)
        config_event = next(iter(proc.of("config")), {})
        t0 = time.monotonic()
        kafka.wait_committed(app_id, source, parts, kafka.ends(source, parts), timeout_s, proc)
        backlog_s = time.monotonic() - t0
        _log(args, f"{system}: processed the backlog ({data.produced:,} records) in {backlog_s:.1f}s after RUNNING")
        for k in range(1, args.kills + 1):
            base = kafka.committed(app_id, source, parts)
            data.produce(data.chunk(k))
            ends = kafka.ends(source, parts)
            frac = rng.uniform(0.2, 0.6)
            goal = sum(base.values()) + frac * (sum(ends.values()) - sum(base.values()))
            deadline = time.monotonic() + timeout_s
            while sum(kafka.committed(app_id, source, parts).values()) < goal:
                proc.check_alive()
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{system}: no progress into the chunk within {timeout_s}s")
                time.sleep(0.01)
            proc.kill()
            committed = kafka.committed(app_id, source, parts)
            uncommitted = sum(ends.values()) - sum(committed.values())
            marks = kafka.watermarks(changelog, parts)
            disk = _state_dir_facts(system, state_dir, app_id)
            proc = _Proc(cmd, os.path.join(work, f"{system}-{k}.stderr"))
            proc.wait_for(lambda: proc.of("running"), "RUNNING after the restart", timeout_s)

            def restored() -> bool:
                return {e["partition"] for e in proc.of("restore_end")} >= {e["partition"] for e in proc.of("restore_start")}
            proc.wait_for(restored, "every restore to end", timeout_s)
            cycles.append(_cycle(k, proc, marks, uncommitted, frac, disk))
            _log(args, f"{system} kill {k}: {json.dumps(cycles[-1])}")
            kafka.wait_committed(app_id, source, parts, kafka.ends(source, parts), timeout_s, proc)
        rc = proc.terminate()
        if rc not in (0, 128 + signal.SIGTERM):
            raise RuntimeError(f"{system} exited with {rc} after SIGTERM; see {proc.stderr_path}")
    finally:
        proc.ensure_dead()
    res = {"measure": "restore_after_kill", "system": system, "guarantee": "exactly_once_v2",
           "kills": args.kills, "keys": args.keys, "partitions": parts,
           "changelog_records": [c["changelog_records"] for c in cycles],
           "replayed_records": [c["replayed_records"] for c in cycles],
           "replayed_records_max": max((c["replayed_records"] for c in cycles), default=0),
           "replayed_fraction_max": max((c["replayed_fraction"] for c in cycles), default=0.0),
           "seconds_to_running": [c["seconds_to_running"] for c in cycles],
           "restore_seconds": [c["restore_seconds"] for c in cycles],
           "restarts_from_changelog_start": [c["restored_from_low"] for c in cycles],
           "uncommitted_input_at_kill": [c["uncommitted_input_at_kill"] for c in cycles],
           "backlog_seconds": round(backlog_s, 2), "input_records": data.produced, "cycles": cycles}
    if system == "kstreams":
        res["kstreams_config"] = {k: v for k, v in config_event.items() if k not in ("ev", "_t")}
    if not args.no_verify:
        out = kafka.read_table(sink, parts)
        wrong = sum(1 for w, n in data.truth.items()
                    if int.from_bytes(out.get(w.encode(), b""), "big", signed=True) != n)
        res["verify"] = {"words": len(data.truth), "wrong_counts": wrong}
    return res


def _state_dir_facts(system: str, state_dir: str, app_id: str) -> dict:
    """What the killed app left on disk. Kafka Streams: task dirs <state>/<app>/<task>/ with a .checkpoint file
    only after a clean close or a suspend (under EOS it is deleted once the task's offsets are read)."""
    base = os.path.join(state_dir, app_id)
    tasks = sorted(d for d in os.listdir(base) if os.path.isdir(os.path.join(base, d))) if os.path.isdir(base) else []
    facts: dict = {"tasks": len(tasks)}
    if system == "kstreams":
        facts["tasks_with_checkpoint"] = sum(1 for t in tasks if os.path.exists(os.path.join(base, t, ".checkpoint")))
    facts["store_bytes"] = sum(os.path.getsize(f) for f in glob.glob(os.path.join(base, "*", "**", "*"), recursive=True)
                               if os.path.isfile(f))
    return facts


def _cycle(k: int, proc: _Proc, marks: dict, uncommitted: int, frac: float, disk: dict) -> dict:
    starts = {e["partition"]: e for e in proc.of("restore_start")}
    ends = {e["partition"]: e for e in proc.of("restore_end")}
    replayed = sum(e["total"] for e in ends.values())
    changelog = sum(hi - lo for lo, hi in marks.values())
    t_running = proc.of("running")[0]["_t"]
    first = min((e["_t"] for e in starts.values()), default=None)
    last = max((e["_t"] for e in ends.values()), default=None)
    wiped: set[str] = set()
    evidence = None
    with open(proc.stderr_path, errors="replace") as f:
        for line in f:
            m = _KS_WIPE.search(line)
            if m:
                wiped.update(t.strip() for t in m.group(1).split(","))
                evidence = evidence or m.group(0)
    return {
        "kill": k,
        "killed_at_fraction_of_chunk": round(frac, 2),
        "uncommitted_input_at_kill": uncommitted,
        "changelog_records": changelog,
        "changelog_end_offsets": {p: hi for p, (lo, hi) in marks.items()},
        "restore_start_offsets": {p: e["start"] for p, e in sorted(starts.items())},
        "restored_from_low": bool(starts) and all(e["start"] <= marks[p][0] for p, e in starts.items()),
        "replayed_records": replayed,
        "replayed_fraction": round(replayed / changelog, 4) if changelog else 0.0,
        "seconds_to_running": round(t_running - proc.t_spawn, 3),
        "seconds_to_restored": round(max(t_running, last or t_running) - proc.t_spawn, 3),
        "restore_seconds": round(last - first, 3) if first is not None else 0.0,
        "state_dir_before_restart": disk,
        "tasks_wiped_per_log": sorted(wiped),
        "log_evidence": evidence,
    }


# ---- output ----

def _ratios(args, results: list[dict]) -> dict:
    tp = {(r["guarantee"], r["commit_interval_ms"]): r for r in results if r["measure"] == "throughput"}
    rs = {r["system"]: r for r in results if r["measure"] == "restore_after_kill"}
    out: dict = {"ratios": {}}
    eos = tp.get(("exactly_once_v2", args.commit_interval_ms))
    alos = tp.get(("at_least_once", args.commit_interval_ms))
    alos_default = tp.get(("at_least_once", ALOS_DEFAULT_COMMIT_MS))
    if eos and alos:
        out["ratios"]["throughput_eos_over_alos_same_commit_interval"] = round(eos["records_per_s"] / alos["records_per_s"], 3)
    if eos and alos_default:
        out["ratios"]["throughput_eos_over_alos_default_interval"] = round(eos["records_per_s"] / alos_default["records_per_s"], 3)
    hs, ks = rs.get("hotstate"), rs.get("kstreams")
    if hs and ks and ks["replayed_records_max"]:
        out["ratios"]["replayed_hotstate_over_kstreams_max"] = round(hs["replayed_records_max"] / ks["replayed_records_max"], 5)
        out["ratios"]["replayed_hotstate_over_kstreams_total"] = round(
            sum(hs["replayed_records"]) / max(1, sum(ks["replayed_records"])), 5)
        out["ratios"]["seconds_to_running_hotstate_over_kstreams_median"] = round(
            statistics.median(hs["seconds_to_running"]) / statistics.median(ks["seconds_to_running"]), 3)
    return out


def _human(res: dict) -> str:
    if res["measure"] == "throughput":
        return (f"throughput hotstate {res['guarantee']:>16} commit {res['commit_interval_ms']:>6} ms: "
                f"{res['records']:,} records in {res['seconds']:.2f}s = {res['records_per_s']:,} records/s "
                f"(to RUNNING {res['seconds_to_running']}s, cpu {res['cpu_seconds']}s)")
    return (f"restore after kill -9 {res['system']:>9}: replayed {res['replayed_records']} (max "
            f"{res['replayed_records_max']:,}) of changelogs {res['changelog_records']}; to RUNNING "
            f"{res['seconds_to_running']}s; restore {res['restore_seconds']}s; from changelog start "
            f"{res['restarts_from_changelog_start']}; verify {res.get('verify')}")


def _machine() -> str:
    return machine.describe()


_SECTION = "## Exactly-once (`bench/eos.py`)"
_END = "<!-- bench/eos.py inserts runs above this line -->"
_INTRO = f"""{_SECTION}

What it measures, against the same local broker in the same run (details in the script's docstring):
hotstate's word count (STRING keys, `count()` into RocksDB, INT64 output) under `at_least_once` and
`exactly_once_v2` on the same input, timed from `App.start()` until every input record is processed and its
offset committed; and, for hotstate and Kafka Streams 4.4.0 (`bench/eos_kstreams`, defaults with
`processing.guarantee=exactly_once_v2`; only the session timeout set to hotstate runner's 6 s), what a
restart after `kill -9` mid-work replays from the changelog (restore listener totals, all partitions),
the changelog's size then (offsets, transaction markers included) and process start to RUNNING.

{_END}
"""


def _record(args, results: list[dict], ratios: dict, load_before, load_after) -> None:
    path = os.path.join(ROOT, "docs", "benchmarks.md")
    cmd = "bench/eos.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    lines = [f"### {datetime.date.today().isoformat()}", "",
             f"Machine: {_machine()}; load average {load_before[0]:.2f} before, {load_after[0]:.2f} after "
             "(shared with other benchmarks: numbers as measured).", "",
             f"Command: `{cmd}`", ""]
    tp = [r for r in results if r["measure"] == "throughput"]
    if tp:
        lines += ["| guarantee | commit interval | records | seconds | records/s | to RUNNING | cpu s |",
                  "|---|---|---|---|---|---|---|"]
        for r in tp:
            lines.append(f"| {r['guarantee']} | {r['commit_interval_ms']} ms | {r['records']:,} | {r['seconds']:.2f} "
                         f"| {r['records_per_s']:,} | {r['seconds_to_running']:.2f}s | {r['cpu_seconds']} |")
        lines.append("")
    rs = [r for r in results if r["measure"] == "restore_after_kill"]
    if rs:
        lines += ["| system (exactly_once_v2) | kills | changelog records at each restart | replayed per restart "
                  "| max replayed | start to RUNNING (s) | restore window (s) | restored from changelog start "
                  "| tasks wiped (Kafka Streams' log) | output exact | first pass over the N records (s from RUNNING) |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in rs:
            v = r.get("verify")
            wiped = ", ".join(f"{len(c['tasks_wiped_per_log'])}/{c['state_dir_before_restart']['tasks']}"
                              for c in r["cycles"]) if r["system"] == "kstreams" else "n/a"
            exact = "not checked" if v is None else ("yes" if v["wrong_counts"] == 0 else f"NO: {v['wrong_counts']} words wrong")
            lines.append(f"| {r['system']} | {r['kills']} | {', '.join(f'{x:,}' for x in r['changelog_records'])} "
                         f"| {', '.join(f'{x:,}' for x in r['replayed_records'])} | {r['replayed_records_max']:,} "
                         f"| {', '.join(f'{x:.1f}' for x in r['seconds_to_running'])} "
                         f"| {', '.join(f'{x:.2f}' for x in r['restore_seconds'])} "
                         f"| {', '.join('yes' if x else 'no' for x in r['restarts_from_changelog_start'])} "
                         f"| {wiped} | {exact} | {r['backlog_seconds']:.1f} |")
        lines.append("")
    if ratios["ratios"]:
        lines += ["Ratios: " + ", ".join(f"{k} = {v}" for k, v in ratios["ratios"].items()), ""]
    entry = "\n".join(lines) + "\n"
    text = open(path).read() if os.path.exists(path) else "# Benchmarks\n"
    if _END not in text:
        # The section goes before the other sections: bench/restore.py appends its rows at the end of the file.
        head, sep, rest = text.partition("\n## ")
        text = head.rstrip("\n") + "\n\n" + _INTRO + ("\n## " + rest if sep else "")
    text = text.replace(_END, entry + _END, 1)
    with open(path, "w") as f:
        f.write(text)


if __name__ == "__main__":
    main()
