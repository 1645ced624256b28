"""Cold restore, side by side: hotstate, Quix Streams, Kafka Streams 4.4 and the two floors, same broker, same run.

    .venv/bin/python bench/restore.py --keys 1000000 --partitions 4 [--value-bytes 100] [--json]
        [--systems hotstate,quix,kstreams,floor-read,floor-write] [--repeat 1] [--no-record] [--keep]

Prepares one changelog per system with the same content (bench/changelog_data.py: N 16-byte keys, 10% extra
updates of earlier keys, ``--value-bytes`` values), each in the system's own format and topic naming, with
an empty source topic of P partitions. Then, per system, in a child process: a cold restore (empty state
dir) timed from start until the app is ready (hotstate: RUNNING; Kafka Streams: RUNNING and every
onRestoreEnd; Quix: its recovery loop returned). Prints one JSON object per system, then the ratios, and
appends a row to docs/benchmarks.md. Needs the local broker (scripts/kafka start), Java 17 + Maven (the
Kafka Streams app in bench/kstreams is built on first use) and creates Quix Streams' own venv on first use
(quixstreams pins confluent-kafka < 2.13, so it cannot share hotstate's venv).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

from confluent_kafka import Consumer, Producer
from confluent_kafka import TopicPartition as KTopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

import changelog_data
import machine  # bench/machine.py

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
CACHE = os.environ.get("HOTSTATE_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "hotstate"))
QUIX_VERSION = "3.28.1"
QUIX_VENV = os.path.join(CACHE, f"bench-venv-quix-{QUIX_VERSION}")
KSTREAMS_JAR = os.path.join(HERE, "kstreams", "target", "kstreams-restore-bench.jar")
SYSTEMS = ("floor-read", "floor-write", "hotstate", "kstreams", "quix")
PEERS = ("kstreams", "quix", "floor-read", "floor-write")
# Changelog records younger than this are never compacted: every system must restore the same records.
NO_COMPACTION_MS = 7 * 24 * 3600 * 1000


def main() -> None:
    args = _parse()
    shape = changelog_data.Shape(args.keys, args.partitions, args.value_bytes, args.update_fraction)
    systems = [s for s in SYSTEMS if s in args.systems]
    run = uuid.uuid4().hex[:8]
    work = tempfile.mkdtemp(prefix=f"hotstate-bench-{run}-", dir=args.work_dir)
    _log(args, f"run {run}: {shape.records:,} records ({shape.keys:,} keys) in {shape.partitions} partitions, "
               f"{shape.value_bytes}-byte values; work dir {work}")
    _prepare_tools(args, systems)
    names = _names(run)
    admin = AdminClient({"bootstrap.servers": args.bootstrap})
    topics = _create_topics(admin, names, systems, shape)
    try:
        t0 = time.monotonic()
        sample = _produce(args.bootstrap, names, systems, shape)
        _log(args, f"produced the changelogs in {time.monotonic() - t0:.1f}s")
        if "quix" in systems:
            _commit_quix_source_offsets(args.bootstrap, names, shape)
        sample_file = os.path.join(work, "sample.json")
        with open(sample_file, "w") as f:
            json.dump({k.hex(): v.hex() for k, v in sample.items()}, f)
        results = []
        for system in systems:
            res = _measure(args, system, names, shape, work, sample_file)
            results.append(res)
            _log(args, f"{system}: {res['seconds']:.2f}s, {res['records_per_s']:,.0f} records/s")
        ratios = _ratios(results)
        for res in results:
            print(json.dumps(res) if args.json else _human(res))
        print(json.dumps(ratios) if args.json else f"hotstate vs peers (records/s ratio): {ratios['ratios']}")
        if not args.no_record:
            _record(args, shape, results)
    finally:
        if not args.keep:
            admin.delete_topics(topics)
            shutil.rmtree(work, ignore_errors=True)


def _parse() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--keys", type=int, default=1_000_000)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--value-bytes", type=int, default=100)
    ap.add_argument("--update-fraction", type=float, default=0.1, help="extra updates of earlier keys, per key")
    ap.add_argument("--systems", default=",".join(SYSTEMS), help=f"comma-separated, of {','.join(SYSTEMS)}")
    ap.add_argument("--repeat", type=int, default=1, help="restores per system; the median is reported")
    ap.add_argument("--json", action="store_true", help="one JSON object per line, nothing else on stdout")
    ap.add_argument("--bootstrap", default=f"127.0.0.1:{os.environ.get('HOTSTATE_KAFKA_PORT', '9092')}")
    ap.add_argument("--hotstate-config", default="{}", help="extra hotstate Config fields, as JSON")
    ap.add_argument("--work-dir", default=None, help="where state dirs go (default: the system's temp dir)")
    ap.add_argument("--no-record", action="store_true", help="do not append a row to docs/benchmarks.md")
    ap.add_argument("--keep", action="store_true", help="keep the topics and state dirs")
    args = ap.parse_args()
    args.systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = sorted(set(args.systems) - set(SYSTEMS))
    if unknown:
        ap.error(f"unknown systems {unknown}; choose from {list(SYSTEMS)}")
    args.hotstate_config = json.loads(args.hotstate_config)
    return args


def _log(args: argparse.Namespace, msg: str) -> None:
    print(f"bench/restore: {msg}", file=sys.stderr if args.json else sys.stdout, flush=True)


# ---- tools ----

def _prepare_tools(args: argparse.Namespace, systems: list[str]) -> None:
    if "kstreams" in systems and not os.path.exists(KSTREAMS_JAR):
        _log(args, "building the Kafka Streams app (mvn package, once) ...")
        subprocess.run(["mvn", "-q", "-B", "-Dstyle.color=never", "package"], cwd=os.path.join(HERE, "kstreams"),
                       check=True, stdout=sys.stderr)
    if "quix" in systems and not os.path.exists(os.path.join(QUIX_VENV, ".complete")):
        _log(args, f"creating Quix Streams' venv {QUIX_VENV} (quixstreams=={QUIX_VERSION}, once) ...")
        subprocess.run([sys.executable, "-m", "venv", QUIX_VENV], check=True)
        subprocess.run([os.path.join(QUIX_VENV, "bin", "pip"), "install", "-q", f"quixstreams=={QUIX_VERSION}"],
                       check=True, stdout=sys.stderr)
        open(os.path.join(QUIX_VENV, ".complete"), "w").close()


# ---- topics and data ----

def _names(run: str) -> dict[str, dict[str, str]]:
    hs, ks, qx = f"bench-restore-hs-{run}", f"bench-restore-ks-{run}", f"bench-restore-qx-{run}"
    return {
        "hotstate": {"app_id": hs, "source": f"{hs}-in", "changelog": f"{hs}-store-changelog"},
        "kstreams": {"app_id": ks, "source": f"{ks}-in", "changelog": f"{ks}-store-changelog"},
        # Quix: changelog__<group>--<source topic>--<store>, the default store is "default"
        "quix": {"app_id": qx, "source": f"{qx}-in", "changelog": f"changelog__{qx}--{qx}-in--default"},
    }


def _changelog_owners(systems: list[str]) -> list[str]:
    """Systems whose changelog must exist: the floor reads hotstate's."""
    owners = [s for s in ("hotstate", "kstreams", "quix") if s in systems]
    if "floor-read" in systems and "hotstate" not in owners:
        owners.insert(0, "hotstate")
    return owners


def _create_topics(admin: AdminClient, names: dict, systems: list[str], shape: changelog_data.Shape) -> list[str]:
    new = []
    for owner in _changelog_owners(systems):
        n = names[owner]
        new.append(NewTopic(n["source"], shape.partitions, 1))
        new.append(NewTopic(n["changelog"], shape.partitions, 1,
                            config={"cleanup.policy": "compact", "min.compaction.lag.ms": str(NO_COMPACTION_MS)}))
    for topic, fut in admin.create_topics(new, operation_timeout=30).items():
        fut.result(60)
    return [t.topic for t in new]


def _produce(bootstrap: str, names: dict, systems: list[str], shape: changelog_data.Shape) -> dict[bytes, bytes]:
    """Fills every changelog with the same records; returns the expected final values of sampled keys."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 100, "batch.size": 1_000_000,
                         "queue.buffering.max.kbytes": 1_048_576, "queue.buffering.max.messages": 2_000_000,
                         "compression.type": "none", "acks": "all"})
    owners = _changelog_owners(systems)
    plain = [names[o]["changelog"] for o in owners if o != "quix"]
    quix = names["quix"]["changelog"] if "quix" in owners else None
    quix_source = names["quix"]["source"]
    # What Quix's own changelog producer attaches to a record of the default column family.
    quix_headers = [[("__column_family__", b"default"),
                     ("__processed_tp_offsets__", json.dumps({quix_source: 0}, separators=(",", ":")).encode())]
                    for _ in range(shape.partitions)]
    tail: list[tuple[bytes, bytes]] = []
    produce = producer.produce
    for p, k, v in changelog_data.records(shape):
        for topic in plain:
            _send(producer, produce, topic, k, v, p, None)
        if quix is not None:
            _send(producer, produce, quix, k, v, p, quix_headers[p])
        tail.append((k, v))
        if len(tail) > 2000:
            del tail[:1000]
    left = producer.flush(120)
    if left:
        raise RuntimeError(f"{left} changelog records not delivered")
    sample: dict[bytes, bytes] = {}
    for k, v in reversed(tail):  # the last records of the changelog hold their keys' final values
        sample.setdefault(k, v)
        if len(sample) >= 200:
            break
    return sample


def _send(producer, produce, topic, key, value, partition, headers) -> None:
    while True:
        try:
            if headers is None:
                produce(topic, value, key, partition)
            else:
                produce(topic, value, key, partition, headers=headers)
            return
        except BufferError:
            producer.poll(0.05)


def _commit_quix_source_offsets(bootstrap: str, names: dict, shape: changelog_data.Shape) -> None:
    """Quix skips a changelog record whose processed source offset is not below the group's committed one."""
    n = names["quix"]
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": n["app_id"], "enable.auto.commit": False})
    try:
        c.commit(offsets=[KTopicPartition(n["source"], p, 1) for p in range(shape.partitions)], asynchronous=False)
    finally:
        c.close()


# ---- measuring ----

def _measure(args, system: str, names: dict, shape: changelog_data.Shape, work: str, sample_file: str) -> dict:
    runs = []
    for i in range(args.repeat):
        state_dir = os.path.join(work, f"{system}-{i}")
        os.makedirs(state_dir)
        owner = "hotstate" if system.startswith("floor") else system
        job = {"bootstrap": args.bootstrap, **names[owner], "state_dir": state_dir, "sample_file": sample_file,
               "keys": shape.keys, "partitions": shape.partitions, "value_bytes": shape.value_bytes,
               "update_fraction": shape.update_fraction, "records": shape.records,
               "timeout_s": 120 + shape.records // 5_000, "config": args.hotstate_config}
        job_file = os.path.join(work, f"{system}-{i}.json")
        with open(job_file, "w") as f:
            json.dump(job, f)
        runs.append(_child(system, job, job_file))
        shutil.rmtree(state_dir, ignore_errors=True)
    best = sorted(runs, key=lambda r: r["seconds"])[len(runs) // 2]
    seconds = statistics.median(r["seconds"] for r in runs)
    res = {"system": system, "keys": shape.keys, "partitions": shape.partitions, "records": best["records"],
           "seconds": round(seconds, 3), "records_per_s": round(best["records"] / seconds),
           "mb_per_s": round(best["records"] * shape.record_bytes / seconds / 1e6, 1)}
    extra = {k: v for k, v in best.items() if k not in ("seconds", "records")}
    if "restore_seconds" in extra:
        extra["restore_seconds"] = round(extra["restore_seconds"], 3)
    if best["records"] != shape.records:
        extra["warning"] = f"restored {best['records']} records, the changelog holds {shape.records}"
    if best.get("sample_wrong"):
        extra["warning"] = f"{best['sample_wrong']} of {best['sample_checked']} sampled keys have a wrong value"
    if args.repeat > 1:
        extra["runs_seconds"] = [round(r["seconds"], 3) for r in runs]
    res.update(extra)
    return res


def _child(system: str, job: dict, job_file: str) -> dict:
    env = {**os.environ, "PYTHONPATH": HERE}
    if system == "hotstate":
        cmd = [sys.executable, os.path.join(HERE, "restore_hotstate.py"), job_file]
    elif system == "quix":
        cmd = [os.path.join(QUIX_VENV, "bin", "python"), os.path.join(HERE, "restore_quix.py"), job_file]
    elif system == "kstreams":
        cmd = ["java", "-Xmx2g", "-jar", KSTREAMS_JAR, job["bootstrap"], job["app_id"], job["source"],
               job["state_dir"], str(job["partitions"]), str(job["timeout_s"])]
    else:
        cmd = [sys.executable, os.path.join(HERE, "restore_floors.py"), system.split("-")[1], job_file]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=job["timeout_s"] + 120)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{system} failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1])


def _ratios(results: list[dict]) -> dict:
    by = {r["system"]: r["records_per_s"] for r in results}
    out: dict = {"ratios": {}}
    if "hotstate" in by:
        for peer in PEERS:
            if peer in by:
                out["ratios"][f"hotstate/{peer}"] = round(by["hotstate"] / by[peer], 2)
        floors = [by[f] for f in ("floor-read", "floor-write") if f in by]
        if floors:
            out["ratios"]["hotstate/slower_floor"] = round(by["hotstate"] / min(floors), 2)
    return out


def _human(res: dict) -> str:
    more = ", ".join(f"{k}={v}" for k, v in res.items()
                     if k not in ("system", "keys", "partitions", "records", "seconds", "records_per_s", "mb_per_s"))
    return (f"{res['system']:>12}: {res['records']:>11,} records in {res['seconds']:8.2f}s = "
            f"{res['records_per_s']:>10,} records/s, {res['mb_per_s']:7.1f} MB/s  {more}")


# ---- docs/benchmarks.md ----

_TABLE_HEADER = (
    "| date | machine | command | records | hotstate | Kafka Streams | Quix | floor: read | floor: write "
    "| hs / KS | hs / Quix | hs / slower floor |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|---|\n")
_TABLE_START = "<!-- bench/restore.py appends rows below -->"


def _machine() -> str:
    return machine.describe()


def _record(args, shape: changelog_data.Shape, results: list[dict]) -> None:
    path = os.path.join(ROOT, "docs", "benchmarks.md")
    by = {r["system"]: r for r in results}

    def rate(system: str) -> str:
        r = by.get(system)
        return "" if r is None else f"{r['records_per_s'] / 1000:,.0f}k/s ({r['seconds']:.1f}s)"

    ratios = _ratios(results)["ratios"]
    cmd = "bench/restore.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    row = (f"| {datetime.date.today().isoformat()} | {_machine()} | `{cmd}` | {shape.records:,} | {rate('hotstate')} "
           f"| {rate('kstreams')} | {rate('quix')} | {rate('floor-read')} | {rate('floor-write')} "
           f"| {ratios.get('hotstate/kstreams', '')} | {ratios.get('hotstate/quix', '')} "
           f"| {ratios.get('hotstate/slower_floor', '')} |\n")
    text = open(path).read() if os.path.exists(path) else "# Benchmarks\n"
    if _TABLE_START not in text:
        text = text.rstrip("\n") + f"\n\n## Cold restore runs\n\n{_TABLE_START}\n\n{_TABLE_HEADER}"
    with open(path, "w") as f:
        f.write(text + row)


if __name__ == "__main__":
    main()
