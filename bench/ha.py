"""High availability, measured (issue 5): how long tasks cannot process, and what they replay, when an instance
crashes, when instances restart one by one, and when an instance joins. hotstate and Kafka Streams 4.4, the
same scenarios against the same local broker in the same run.

    .venv/bin/python bench/ha.py [--json] [--keys 200000] [--partitions 6] [--feed-rate 2000]
        [--scenarios crash,rolling,scale_out] [--systems hotstate,kstreams] [--guarantee at_least_once]
        [--session-timeout-ms 10000] [--standbys 1] [--acceptable-recovery-lag 10000]
        [--max-warmup-replicas 2] [--probing-rebalance-interval-ms 60000] [--commit-interval-ms 100]
        [--updates-per-key 0.5] [--no-verify] [--keep] [--work-dir DIR]

Each scenario (bench/ha_scenarios.py has the details) runs a word count as several processes of one app, on a
fresh input topic preloaded with every key once plus ``--updates-per-key`` extra records per key (so each
changelog partition holds about (1 + u) * keys / partitions records), with a feeder producing ``--feed-rate``
records/s the whole time:

- crash: three instances, one standby per task; kill -9 of the instance with the most active tasks;
- rolling: three instances with static membership restart one after another (graceful close, started again at
  once: within the session timeout);
- scale_out: a fourth instance joins three; tasks move to it after their warm-ups caught up.

Per scenario and system it prints the longest and the median time a task could not process (seconds: from the
moment its owner stopped - the kill, or when it closed / let go of the task - until it is RUNNING on its next
owner, plus any later move before the group settled), the records replayed (restore listener totals over the
affected tasks, and the largest), the contract violations seen and whether the output was correct (every update
counted: at-least-once, no word's output sequence has a gap; exactly-once: exactly 1..n). Then the ratios
hotstate / Kafka Streams.

Both systems get the same settings: ``num.standby.replicas``, ``acceptable.recovery.lag``,
``max.warmup.replicas``, ``probing.rebalance.interval.ms`` (Kafka Streams' minimum is 60 s; hotstate also
probes at once when a warm-up caught up), ``session.timeout.ms`` (how long a crash goes unnoticed), the commit
interval, one processing thread; Kafka Streams with its record cache off (statestore.cache.max.bytes=0: every
update goes out at once, as in hotstate). Kafka Streams' app is bench/kstreams_ha (Maven builds it on first
use; offline if the local repository has Kafka Streams 4.4.0). Needs the local broker (scripts/kafka start).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import ha_scenarios  # noqa: E402
import machine  # noqa: E402  (bench/machine.py)

BENCH_SCENARIOS = ("crash", "rolling", "scale_out")


def main() -> None:
    args = _parse()
    t_start = time.monotonic()
    load_before = os.getloadavg()

    def log(msg: str) -> None:
        print(f"bench/ha: {time.monotonic() - t_start:6.1f}s {msg}", file=sys.stderr if args.json else sys.stdout,
              flush=True)

    if "kstreams" in args.systems:
        ha_scenarios.ensure_kstreams_jar(log)
    results = []
    failures = []
    for scenario in args.scenarios:
        for system in args.systems:
            settings = ha_scenarios.Settings(
                bootstrap=args.bootstrap, system=system, guarantee=args.guarantee, partitions=args.partitions,
                keys=args.keys, updates_per_key=args.updates_per_key, feed_rate=args.feed_rate,
                num_standby_replicas=args.standbys, acceptable_recovery_lag=args.acceptable_recovery_lag,
                max_warmup_replicas=args.max_warmup_replicas,
                probing_rebalance_interval_ms=args.probing_rebalance_interval_ms,
                session_timeout_ms=args.session_timeout_ms, commit_interval_ms=args.commit_interval_ms,
                warm_s=args.warm_s, after_s=args.after_s, settle_timeout_s=args.settle_timeout_s,
                verify=not args.no_verify, work_dir=args.work_dir, keep=args.keep, log=log)
            t0 = time.monotonic()
            log(f"{scenario} / {system} ...")
            try:
                res = ha_scenarios.run(scenario, settings)
            except Exception as exc:  # one failed run must not lose the others' numbers
                failures.append({"measure": "ha", "scenario": scenario, "system": system, "error": repr(exc)})
                log(f"{scenario} / {system} failed: {exc!r}")
                continue
            summary = res.summary()
            summary = {"measure": "ha", **summary, "scenario_seconds": round(time.monotonic() - t0, 1)}
            if res.logs:
                summary["logs"] = res.logs
            results.append(summary)
            log(f"{scenario} / {system}: longest {summary['longest_s']}s, median {summary['median_s']}s, "
                f"replayed {summary['replayed_total']:,} (max {summary['replayed_max']:,}), "
                f"violations {len(summary['violations'])}, correct {summary['correct']} "
                f"({summary['scenario_seconds']}s)")
    ratios = _ratios(results)
    meta = {"measure": "ha_run", "command": "bench/ha.py " + " ".join(sys.argv[1:]), "machine": machine.describe(),
            "load_before": [round(x, 2) for x in load_before], "load_after": [round(x, 2) for x in os.getloadavg()],
            "seconds": round(time.monotonic() - t_start, 1),
            "settings": {k: v for k, v in vars(args).items() if k not in ("json",)}}
    if args.json:
        for r in results + failures:
            print(json.dumps(r))
        print(json.dumps(ratios))
        print(json.dumps(meta))
    else:
        print(_table(results, failures))
        print("ratios hotstate / kstreams:", json.dumps(ratios["ratios"]))
        print(f"machine: {meta['machine']}; load {meta['load_before']} -> {meta['load_after']}; "
              f"{meta['seconds']}s")
    if failures or any(r["violations"] or r["correct"] is False for r in results):
        sys.exit(1)


def _parse() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", action="store_true", help="one JSON object per line, nothing else on stdout")
    ap.add_argument("--keys", type=int, default=200_000, help="distinct words (default 200,000)")
    ap.add_argument("--updates-per-key", type=float, default=0.5,
                    help="extra preload records per key (default 0.5: 300,000 records at 200k keys)")
    ap.add_argument("--partitions", type=int, default=6)
    ap.add_argument("--feed-rate", type=float, default=2_000, help="records/s produced during each scenario")
    ap.add_argument("--scenarios", default=",".join(BENCH_SCENARIOS),
                    help=f"comma-separated, of {','.join(ha_scenarios.SCENARIOS)}")
    ap.add_argument("--systems", default="hotstate,kstreams")
    ap.add_argument("--guarantee", default="at_least_once", choices=("at_least_once", "exactly_once_v2"))
    ap.add_argument("--session-timeout-ms", type=int, default=10_000)
    ap.add_argument("--standbys", type=int, default=1, help="num_standby_replicas (default 1)")
    ap.add_argument("--acceptable-recovery-lag", type=int, default=10_000)
    ap.add_argument("--max-warmup-replicas", type=int, default=2)
    ap.add_argument("--probing-rebalance-interval-ms", type=int, default=60_000,
                    help="default 60000, Kafka Streams' minimum")
    ap.add_argument("--commit-interval-ms", type=int, default=100)
    ap.add_argument("--warm-s", type=float, default=3.0, help="feeding before the event (default 3)")
    ap.add_argument("--after-s", type=float, default=2.0, help="feeding after the group settled (default 2)")
    ap.add_argument("--settle-timeout-s", type=float, default=180.0)
    ap.add_argument("--bootstrap", default=f"127.0.0.1:{os.environ.get('HOTSTATE_KAFKA_PORT', '9092')}")
    ap.add_argument("--work-dir", default=None, help="where state dirs go (default: the system's temp dir)")
    ap.add_argument("--no-verify", action="store_true", help="skip reading and checking the output topic")
    ap.add_argument("--keep", action="store_true", help="keep topics, groups and state dirs")
    args = ap.parse_args()
    args.scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    args.systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    if set(args.scenarios) - set(ha_scenarios.SCENARIOS) or not args.scenarios:
        ap.error(f"--scenarios takes {','.join(ha_scenarios.SCENARIOS)}")
    if set(args.systems) - set(ha_scenarios.SYSTEMS) or not args.systems:
        ap.error(f"--systems takes {','.join(ha_scenarios.SYSTEMS)}")
    if args.keys < 1 or args.partitions < 2 or args.feed_rate <= 0:
        ap.error("--keys >= 1, --partitions >= 2, --feed-rate > 0")
    return args


def _ratios(results: list[dict]) -> dict:
    by = {(r["scenario"], r["system"]): r for r in results}
    ratios: dict = {}
    for scenario in dict.fromkeys(r["scenario"] for r in results):
        hs, ks = by.get((scenario, "hotstate")), by.get((scenario, "kstreams"))
        if not hs or not ks:
            continue
        out = {}
        for key in ("longest_s", "median_s", "replayed_total", "replayed_max"):
            a, b = hs.get(key), ks.get(key)
            if a is None or b is None:
                continue
            out[key] = round(a / b, 3) if b else (None if a else 1.0)
        ratios[scenario] = out
    return {"measure": "ha_ratios", "note": "hotstate / kstreams (below 1: hotstate is better)", "ratios": ratios}


def _table(results: list[dict], failures: list[dict]) -> str:
    lines = ["| scenario | system | tasks | longest s | median s | assign median s | restoring median s "
             "| replayed total | replayed max | violations | correct |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['scenario']} | {r['system']} | {r['tasks_affected']} | {r['longest_s']} | {r['median_s']} "
                     f"| {r['assign_median_s']} | {r['restoring_median_s']} | {r['replayed_total']:,} "
                     f"| {r['replayed_max']:,} | {len(r['violations'])} | {'yes' if r['correct'] else 'NO'} |")
    for f in failures:
        lines.append(f"| {f['scenario']} | {f['system']} | failed: {f['error'][:120]} |")
    for r in results:
        for v in r["violations"]:
            lines.append(f"violation ({r['scenario']}/{r['system']}): {v}")
        if r.get("correctness", {}).get("problems"):
            lines.append(f"output ({r['scenario']}/{r['system']}): {r['correctness']['problems']}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
