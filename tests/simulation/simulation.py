"""The seeded simulation's driver: hotstate's own task manager, committers and state updater (single-threaded,
``StateUpdater.run_once``) run a word count against the in-memory Kafka and disk of fake_kafka.py. A seed
fixes everything: the input, the order records are handed out, where each process is killed, which client
calls fail. After the last process closes gracefully the checks compare the stores with a replay of their
committed changelogs and the output with the truth.

    .venv/bin/python tests/simulation/simulation.py SEED [at_least_once|exactly_once_v2] [FAULT=P ...] [punctuate]

replays one seed and prints its trace."""
from __future__ import annotations

import random
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass, field

from confluent_kafka import KafkaException
from confluent_kafka import TopicPartition as KTopicPartition

import hotstate
from hotstate import serde
from hotstate.observe.metrics import Metrics
from hotstate.records import TopicPartition
from hotstate.runtime.commit import AtLeastOnceCommitter, DeliveryTracker, ExactlyOnceCommitter
from hotstate.runtime.state_updater import StateUpdater
from hotstate.runtime.task import TaskState
from hotstate.runtime.task_manager import TaskManager
from hotstate.state.state_dir import StateDirectory

from fake_kafka import (Broker, Crash, FakeConsumer, FakeMember, FakeProducer, Rec, Sim, SimBackend, SimDisk,
                        partition_for)

INPUT, OUTPUT, STORE = "words", "counts", "counts-store"
SUMMARIES, TOTALS = "summaries", "totals"  # the processor API's scenario (Scenario.punctuate)
APP_ID = "sim"
STEPS_MAX = 20_000  # loop passes of one process before the simulation calls it stuck


class SyncUpdater(StateUpdater):
    """The state updater without its thread: commands are handled when submitted, rounds run when the
    driver calls ``run_once(wait=False)``."""

    def start(self) -> None:
        self._open_consumer()

    def _submit(self, cmd: tuple) -> bool:
        self._commands.put(cmd)
        self._handle_commands(0)
        return True


@dataclass
class Scenario:
    seed: int
    guarantee: str
    partitions: int = 2
    records: int = 120
    vocabulary: int = 8
    crashes_max: int = 3
    crash_window: int = 300  # a process is killed at a step drawn from [1, crash_window]
    first_crash_at: int | None = None  # kill the first process at exactly this step (the exhaustive test)
    faults: dict[str, float] = field(default_factory=dict)
    # Also a processor (processor API) counting its task's records in a store, whose STREAM_TIME punctuation
    # forwards (offset of the last record, count) and counts its summaries in the store; input record i gets the
    # timestamp i * 10 ms. (Command line: the argument "punctuate".)
    punctuate: bool = False


@dataclass
class Outcome:
    truth: Counter
    crashes: int
    traces: list[list[str]]
    problems: list[str]


class _Summaries:
    """Counts its task's records (TOTALS["n"]); every 50 ms of stream time forwards {partition, offset of the
    last record, n} to SUMMARIES and counts that in TOTALS["summaries"]. Exactly-once makes n == offset + 1 in
    every committed summary, and the committed counter equal to the number of committed summaries."""

    def init(self, context):
        self.context, self.store, self.last_offset = context, context.store(TOTALS), None
        context.schedule(50, hotstate.Punctuation.STREAM_TIME, self.summarize)

    def process(self, record):
        self.store.put("n", (self.store.get("n") or 0) + 1)
        self.last_offset = record.offset

    def summarize(self, timestamp):
        self.store.put("summaries", (self.store.get("summaries") or 0) + 1)
        self.context.forward(hotstate.Record("summary", {"partition": self.context.partition,
                                                         "offset": self.last_offset, "n": self.store.get("n")},
                                             timestamp))


def _app(guarantee: str, state_dir: str, punctuate: bool = False) -> hotstate.App:
    app = hotstate.App(app_id=APP_ID, bootstrap_servers="sim:9092", state_dir=state_dir,
                       processing_guarantee=guarantee, commit_interval_ms=100)
    words = app.stream(INPUT, key_serde=serde.STRING, value_serde=serde.STRING)
    (words.group_by_key().count(store=STORE)
        .to_stream().to(OUTPUT, value_serde=serde.INT64))
    if punctuate:
        (words.process(_Summaries, stores=[hotstate.StoreSpec(TOTALS, serde.STRING, serde.INT64)],
                       key_serde=serde.STRING, value_serde=serde.JSON)
            .to(SUMMARIES))
    return app


def _run_process(sim: Sim, rng: random.Random, broker: Broker, disk: SimDisk, app: hotstate.App,
                 state_dir: str, producers: list) -> None:
    cfg, topology = app.config, app._topology
    eos = cfg.exactly_once
    tracker = DeliveryTracker({cfg.changelog_topic(name) for name in topology.store_specs()})
    metrics = Metrics()

    def new_producer() -> FakeProducer:
        p = FakeProducer(broker, sim, f"{APP_ID}-txn" if eos else None, on_delivery=tracker)
        producers.append(p)
        return p

    producer = new_producer()
    consumer = FakeConsumer(broker, sim, rng)
    member = FakeMember(broker, sim)
    updater = SyncUpdater(cfg, lambda: FakeConsumer(broker, sim, rng), None, metrics,
                          ends_consumer_factory=lambda: FakeConsumer(broker, sim, rng, read_committed=False))
    if eos:
        committer = ExactlyOnceCommitter(member, producer, tracker, metrics, 1.0, producer_factory=new_producer,
                                         call=lambda fn, timeout_s, what: fn())
    else:
        committer = AtLeastOnceCommitter(member, producer, tracker, metrics, 1.0)
    tm = TaskManager(cfg, topology, StateDirectory(state_dir, APP_ID), consumer, updater, metrics, committer,
                     member, open_backend=lambda name, path: SimBackend(name, path, disk, sim))
    if eos:
        committer.init()
    updater.start()
    parts = [TopicPartition(INPUT, p) for p in range(broker.partitions(INPUT))]
    ktps = [KTopicPartition(INPUT, p) for p in range(broker.partitions(INPUT))]

    def assign() -> None:  # what GroupMembership.on_assigned does
        consumer.incremental_assign(ktps)
        consumer.pause(ktps)
        tm.partitions_assigned(parts)

    def lose() -> None:  # what GroupMembership.drop_out does: every partition lost
        tm.partitions_lost(parts)
        consumer.incremental_unassign(ktps)

    member.on_drop_out = lose
    assign()
    ends = {p: broker.end(INPUT, p) for p in range(broker.partitions(INPUT))}
    for _ in range(STEPS_MAX):
        if member.rejoin_pending:  # the next rebalance gives the member its partitions back
            member.rejoin_pending = False
            member.generation = broker.generation
            assign()
        updater.run_once(wait=False)
        tm.handle_restored()
        msgs = consumer.consume(rng.randint(1, 30), 0)
        if msgs:
            tm.process(msgs)
        tm.handle_corrupted()
        if rng.random() < 0.25:
            tm.commit()
        if (all(t.state is TaskState.RUNNING for t in tm.tasks.values())
                and all(broker.group_offsets.get((INPUT, p)) == e for p, e in ends.items())
                and tm.dirty_records() == 0):
            tm.shutdown(clean=True)
            return
    raise AssertionError(f"the process made no progress in {STEPS_MAX} passes: tasks "
                         f"{[(t.id, t.state.value) for t in tm.tasks.values()]}, committed {broker.group_offsets}")


def simulate(sc: Scenario) -> Outcome:
    rng = random.Random(sc.seed)
    broker = Broker()
    for topic in (INPUT, OUTPUT, f"{APP_ID}-{STORE}-changelog", SUMMARIES, f"{APP_ID}-{TOTALS}-changelog"):
        broker.create_topic(topic, sc.partitions)
    vocab = [f"w{i}" for i in range(sc.vocabulary)]
    truth: Counter = Counter()
    for i in range(sc.records):
        word = rng.choice(vocab)
        key = word.encode()
        broker.append(INPUT, partition_for(key, sc.partitions), Rec(key, b"x", timestamp=i * 10 if sc.punctuate else 0))
        truth[word] += 1
    disk = SimDisk()
    traces: list[list[str]] = []
    crashes = 0
    with tempfile.TemporaryDirectory(prefix="hotstate-sim-") as state_dir:
        app = _app(sc.guarantee, state_dir, sc.punctuate)
        while True:
            crash_at = rng.randint(1, sc.crash_window) if crashes < sc.crashes_max else None
            if sc.first_crash_at is not None:
                crash_at = sc.first_crash_at if not traces else None
            sim = Sim(rng, crash_at, sc.faults if crash_at is not None else {})
            producers: list = []
            try:
                _run_process(sim, rng, broker, disk, app, state_dir, producers)
                traces.append(sim.trace)
                break
            except Crash:
                pass
            except KafkaException:
                # A client error the runtime does not survive (e.g. a record that timed out under at-least-once,
                # after message.timeout.ms): the app goes to ERROR and is started again; modelled as a kill.
                sim.crashed = True
            except BaseException:
                if not sim.crashed:
                    traces.append(sim.trace)
                    raise
            traces.append(sim.trace)
            crashes += 1
            disk.crash()
            for p in producers:
                p.crash(rng)
    return Outcome(truth, crashes, traces, check(broker, disk, truth, sc))


def _stored(broker: Broker, disk: SimDisk, store: str, p: int, problems: list[str]) -> dict:
    """The durable store of task 0_p, checked against a replay of its committed changelog."""
    changelog = f"{APP_ID}-{store}-changelog"
    paths = [k for k in disk.durable if k.endswith(f"/0_{p}/{store}")]
    data, offset = disk.durable[paths[0]] if paths else ({}, None)
    replay: dict = {}
    for _, rec in broker.committed_records(changelog, p, offset):
        if rec.value is None:
            replay.pop(rec.key, None)
        else:
            replay[rec.key] = rec.value
    if data != replay:
        diff = sorted(k for k in set(data) | set(replay) if data.get(k) != replay.get(k))
        problems.append(f"store {store} of 0_{p} differs from a replay of its committed changelog below offset "
                        f"{offset}: keys {diff[:5]}")
    return data


def check(broker: Broker, disk: SimDisk, truth: Counter, sc: Scenario) -> list[str]:
    problems: list[str] = []
    counts: Counter = Counter()
    for p in range(sc.partitions):
        for k, v in _stored(broker, disk, STORE, p, problems).items():
            counts[k.decode()] = serde.INT64.deserialize(v)
    if sc.punctuate:
        problems += _check_summaries(broker, disk, sc, problems)
    outputs: dict[str, list[int]] = {}
    for p in range(sc.partitions):
        for _, rec in broker.committed_records(OUTPUT, p):
            outputs.setdefault(rec.key.decode(), []).append(serde.INT64.deserialize(rec.value))
    for word, n in truth.items():
        seq = outputs.get(word, [])
        if sc.guarantee == "exactly_once_v2":
            if counts[word] != n:
                problems.append(f"store count of {word!r} is {counts[word]}, want {n}")
            if seq != list(range(1, n + 1)):
                problems.append(f"outputs of {word!r} are {seq}, want 1..{n}")
        else:
            if counts[word] < n:
                problems.append(f"store count of {word!r} is {counts[word]} < {n}: an update was lost")
            if not seq or max(seq) < n or set(range(1, n + 1)) - set(seq):
                problems.append(f"outputs of {word!r} are {seq}: missing values of 1..{n}")
    return problems


def _check_summaries(broker: Broker, disk: SimDisk, sc: Scenario, problems: list[str]) -> list[str]:
    """What the punctuations forwarded and wrote (see _Summaries)."""
    out: list[str] = []
    summaries: dict[int, list[dict]] = {}
    for q in range(sc.partitions):
        for _, rec in broker.committed_records(SUMMARIES, q):
            v = serde.JSON.deserialize(rec.value)
            summaries.setdefault(v["partition"], []).append(v)
    for p in range(sc.partitions):
        inputs = len(broker.committed_records(INPUT, p))
        stored = {k.decode(): serde.INT64.deserialize(v) for k, v in _stored(broker, disk, TOTALS, p, problems).items()}
        seen = summaries.get(p, [])
        if inputs and not seen:
            out.append(f"task 0_{p}: no summary was committed")
        for s in seen:
            if s["offset"] is None or (s["n"] != s["offset"] + 1 if sc.guarantee == "exactly_once_v2"
                                       else s["n"] < s["offset"] + 1):
                out.append(f"task 0_{p}: summary {s} does not count the records up to its offset")
        # Every record that moves stream time past a multiple of 50 (and the first) fires the punctuation, so its
        # summary must be committed; a restart or a rewind adds one for its first record (fresh schedules).
        offsets = [s["offset"] for s in seen]
        ts = [r.timestamp for _, r in broker.committed_records(INPUT, p)]
        required = [j for j in range(len(ts)) if j == 0 or ts[j] // 50 > ts[j - 1] // 50]
        missing = sorted(set(required) - set(offsets))
        if missing:
            out.append(f"task 0_{p}: no summary after the records at offsets {missing[:5]}, which advanced stream "
                       "time past the punctuation's next time")
        if sc.guarantee == "exactly_once_v2":
            if len(set(offsets)) != len(offsets):
                out.append(f"task 0_{p}: a summary was committed twice: {sorted(offsets)}")
            if stored.get("n") != inputs:
                out.append(f"task 0_{p}: stored count {stored.get('n')}, want {inputs}")
            if stored.get("summaries", 0) != len(seen):
                out.append(f"task 0_{p}: {len(seen)} summaries committed but the store counted "
                           f"{stored.get('summaries', 0)}: a punctuation's output and its store write were not atomic")
    return out


FAULTS = ("flush", "send_offsets", "commit_unknown", "commit_offsets", "zombie")

if __name__ == "__main__":
    seed = int(sys.argv[1])
    guarantee = sys.argv[2] if len(sys.argv) > 2 else "exactly_once_v2"
    faults = {k: float(v) for k, v in (a.split("=") for a in sys.argv[3:] if a != "punctuate")}
    out = simulate(Scenario(seed, guarantee, faults=faults, punctuate="punctuate" in sys.argv[3:]))
    for i, t in enumerate(out.traces):
        print(f"process {i}: {len(t)} steps, last {t[-12:]}")
    print("\n".join(out.problems) or "ok")
