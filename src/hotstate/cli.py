"""The ``hotstate`` command: the operator's view of local state.

    hotstate state --app-id A [--state-dir D] [--bootstrap B]

lists every task and store on disk with the changelog offset it holds and, with ``--bootstrap``, the
changelog's end and the lag: what a restore of that store would replay right now. Safe beside a running
app: stores are opened read-only, without RocksDB's lock (a store the app writes shows its durable offset).

    hotstate snapshots --app-id A --snapshot-store URL [--option k=v ...] [--bootstrap B]

lists the snapshot manifests of every store partition in the object store (offset, files, size, age) and
what a cold restore would download, then replay (with ``--bootstrap``: how many changelog offsets).
Credentials come from the environment, as for the app.

Both take ``--command-config FILE``: librdkafka settings for the command's Kafka clients (a secured cluster's
security.protocol, sasl.*, ssl.*), as the app's ``kafka_config``; a JSON object, or a Kafka ``.properties``
file as Kafka's own tools take (``key=value`` lines, ``#`` comments). A ``bootstrap.servers`` in it stands for
``--bootstrap`` when that is not given (so ``scripts/kafka client-config --sasl`` output works as is).
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import datetime as dt

from . import kafka_settings
from .config import check_snapshot_store, default_state_dir
from .errors import ConfigError, HotstateError, StoreCorruptedError
from .state.rocksdb_store import read_stored_offset
from .state.state_dir import StateDirectory


def _stored_offsets(root: str) -> list[tuple[str, str, int | None, str]]:
    """Stores are opened read-only (no RocksDB lock), so this works beside a running app and never blocks
    it; a store that cannot be read gets a note and the others are still listed."""
    rows = []
    state_dir = StateDirectory(os.path.dirname(root), os.path.basename(root))
    for task in state_dir.task_dirs():
        for store in state_dir.store_names(task):
            try:
                rows.append((task, store, read_stored_offset(store, state_dir.store_path(task, store)), ""))
            except StoreCorruptedError as exc:
                rows.append((task, store, None, f"corrupted: {exc}"))
            except Exception as exc:  # e.g. a permission error: say so, go on with the other stores
                rows.append((task, store, None, f"unreadable: {exc!r}"))
    return rows


def parse_properties(text: str) -> dict[str, str]:
    """A Java ``.properties`` file's entries: ``key=value``, ``key: value`` or ``key value`` lines, ``#`` and
    ``!`` comments, a trailing backslash continues a line, backslash escapes (\\t, \\n, \\=, \\:, \\\\)."""
    out: dict[str, str] = {}
    logical = ""
    for raw in text.splitlines():
        line = raw.lstrip()
        if not logical and (not line or line[0] in "#!"):
            continue
        trailing = len(line) - len(line.rstrip("\\"))
        if trailing % 2 == 1:  # an odd number of backslashes: the line continues
            logical += line[:-1]
            continue
        logical += line
        key, value = _split_property(logical)
        out[key] = value
        logical = ""
    if logical:
        key, value = _split_property(logical)
        out[key] = value
    return out


_ESCAPES = {"t": "\t", "n": "\n", "r": "\r", "f": "\f"}


def _split_property(line: str) -> tuple[str, str]:
    key: list[str] = []
    i = 0
    while i < len(line):
        ch = line[i]
        if ch == "\\" and i + 1 < len(line):
            key.append(_ESCAPES.get(line[i + 1], line[i + 1]))
            i += 2
            continue
        if ch in "=: \t":
            break
        key.append(ch)
        i += 1
    rest = line[i:].lstrip(" \t")
    if rest[:1] in ("=", ":"):
        rest = rest[1:].lstrip(" \t")
    value: list[str] = []
    i = 0
    while i < len(rest):
        if rest[i] == "\\" and i + 1 < len(rest):
            value.append(_ESCAPES.get(rest[i + 1], rest[i + 1]))
            i += 2
        else:
            value.append(rest[i])
            i += 1
    return "".join(key), "".join(value)


def load_command_config(path: str) -> dict[str, object]:
    """``--command-config FILE``: a JSON object or a ``.properties`` file of librdkafka settings."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as exc:
        raise ConfigError(f"--command-config {path}: cannot read it ({exc.strerror})") from None
    if path.endswith(".json") or text.lstrip().startswith("{"):
        try:
            settings = json.loads(text)
        except ValueError as exc:
            raise ConfigError(f"--command-config {path}: not valid JSON ({exc}); give a JSON object or a Kafka "
                              ".properties file") from None
        if not isinstance(settings, dict):
            raise ConfigError(f"--command-config {path}: give a JSON object of librdkafka settings")
        return settings
    return dict(parse_properties(text))


def _client_settings(args: argparse.Namespace) -> tuple[str | None, dict[str, object]]:
    """(bootstrap, settings) from --bootstrap and --command-config; settings are checked as kafka_config is."""
    settings: dict[str, object] = {}
    bootstrap = args.bootstrap
    if args.command_config:
        settings = load_command_config(args.command_config)
        from_file = settings.pop("bootstrap.servers", None)
        bootstrap = bootstrap or (str(from_file) if from_file else None)
        kafka_settings.check(settings, name=f"--command-config {args.command_config}")
    return bootstrap, settings


def _ends(args: argparse.Namespace, topics_partitions: set[tuple[str, int]]) -> dict[tuple[str, int], int]:
    from confluent_kafka import Consumer, TopicPartition

    bootstrap, settings = _client_settings(args)
    if not bootstrap:
        raise ConfigError(f"--command-config {args.command_config} has no bootstrap.servers: give --bootstrap HOST:PORT")
    c = Consumer({"bootstrap.servers": bootstrap, **settings, "group.id": "hotstate-cli",
                  "isolation.level": "read_committed"})
    try:
        return {(t, p): c.get_watermark_offsets(TopicPartition(t, p), timeout=10, cached=False)[1]
                for t, p in sorted(topics_partitions)}
    finally:
        c.close()


def cmd_state(args: argparse.Namespace) -> int:
    root = os.path.join(os.path.abspath(os.path.expanduser(args.state_dir)), args.app_id)
    if not os.path.isdir(root):
        print(f"no state for app {args.app_id!r} under {args.state_dir}", file=sys.stderr)
        return 1
    rows = _stored_offsets(root)
    ends: dict[tuple[str, int], int] = {}
    if args.bootstrap or args.command_config:
        want = {(f"{args.app_id}-{store}-changelog", int(task.split("_")[1])) for task, store, _, _ in rows}
        ends = _ends(args, want)
    print(f"{'task':<8} {'store':<24} {'stored offset':>14} {'changelog end':>14} {'lag':>12}  note")
    for task, store, offset, note in rows:
        end = ends.get((f"{args.app_id}-{store}-changelog", int(task.split("_")[1])))
        lag = "" if end is None else str(end - (offset or 0))
        print(f"{task:<8} {store:<24} {'-' if offset is None else offset:>14} {'' if end is None else end:>14} "
              f"{lag:>12}  {note}")
    return 0


def _options(pairs: list[str]) -> dict[str, str]:
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"--option {pair.split('=', 1)[0]!r} is invalid: give name=value, e.g. --option region=eu-west-1")
        options[key] = value
    return options


def _size(num_bytes: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if num_bytes < 1024 or unit == "GiB":
            return f"{num_bytes:.0f} {unit}" if unit == "B" else f"{num_bytes:.1f} {unit}"
        num_bytes /= 1024
    return str(num_bytes)


def _age(created: dt.datetime, now: dt.datetime) -> str:
    seconds = max(0, int((now - created).total_seconds()))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    return f"{seconds // 3600}h" if seconds < 172800 else f"{seconds // 86400}d"


def cmd_snapshots(args: argparse.Namespace) -> int:
    from .snapshot.catalog import Catalog
    from .snapshot.objects import ObjectStore

    options = _options(args.option or [])
    check_snapshot_store(args.snapshot_store, options)
    catalog = Catalog(ObjectStore.open(args.snapshot_store, options, create=False))
    partitions = catalog.partitions(args.app_id)
    if not partitions:
        print(f"no snapshots of app {args.app_id!r} in {catalog.objects.location}", file=sys.stderr)
        return 1
    listings = [catalog.list_partition(p) for p in partitions]
    ends: dict[tuple[str, int], int] = {}
    if args.bootstrap or args.command_config:
        ends = _ends(args, {(f"{args.app_id}-{p.store}-changelog", p.partition) for p in partitions})
    now = dt.datetime.now(dt.timezone.utc)
    print(f"{'store':<24} {'part':>4} {'epoch':>6} {'offset':>14} {'files':>6} {'size':>10} {'age':>6}  note")
    for listing in listings:
        p = listing.paths
        for ref in listing.manifests:
            m = ref.manifest
            if m is None:
                note = "unknown format (newer hotstate)" if ref.unknown_version else f"unusable: {ref.problem}"
                print(f"{p.store:<24} {p.partition:>4} {ref.epoch:>6} {ref.offset:>14} {'-':>6} {'-':>10} "
                      f"{_age(ref.info.last_modified, now):>6}  {note}")
                continue
            print(f"{p.store:<24} {p.partition:>4} {ref.epoch:>6} {m.changelog_offset:>14} {len(m.files):>6} "
                  f"{_size(m.num_bytes):>10} {_age(m.created_at, now):>6}")
        print(f"  {p.store}[{p.partition}] cold restore: {_cold_restore(listing, args.app_id, ends)}")
    return 0


def _cold_restore(listing, app_id: str, ends: dict[tuple[str, int], int]) -> str:
    p = listing.paths
    topic = f"{app_id}-{p.store}-changelog"
    end = ends.get((topic, p.partition))
    readable = listing.readable
    if not readable:
        tail = "" if end is None else f" ({end} offsets)"
        return f"no usable snapshot: replays {topic}[{p.partition}] from its start{tail}"
    m = readable[0].manifest
    tail = f" to {end} ({max(0, end - m.changelog_offset)} offsets)" if end is not None else " to its end"
    return (f"downloads {len(m.files)} files, {_size(m.num_bytes)} ({readable[0].name.rsplit('/', 1)[1]}), "
            f"then replays {topic}[{p.partition}] from {m.changelog_offset}{tail}")


COMMAND_CONFIG_HELP = ("librdkafka settings for the command's Kafka clients (e.g. a secured cluster's "
                       "security.protocol, sasl.*, ssl.*): a JSON object or a Kafka .properties file")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="hotstate", description="hotstate's operator commands")
    sub = ap.add_subparsers(dest="command", required=True)
    st = sub.add_parser("state", help="tasks and stores on disk, their changelog offsets and lag")
    st.add_argument("--app-id", required=True)
    st.add_argument("--state-dir", default=default_state_dir())
    st.add_argument("--bootstrap", help="bootstrap servers, to read the changelog ends and show the lag")
    st.add_argument("--command-config", metavar="FILE", help=COMMAND_CONFIG_HELP)
    st.set_defaults(fn=cmd_state)
    sn = sub.add_parser("snapshots", help="snapshot manifests in the object store, and what a cold restore needs")
    sn.add_argument("--app-id", required=True)
    sn.add_argument("--snapshot-store", required=True, help="file:///abs/dir or s3://bucket/prefix")
    sn.add_argument("--option", action="append", metavar="NAME=VALUE",
                    help="an object-store option (as snapshot_store_options), repeatable: --option region=eu-west-1")
    sn.add_argument("--bootstrap", help="bootstrap servers, to read the changelog ends and show the tail to replay")
    sn.add_argument("--command-config", metavar="FILE", help=COMMAND_CONFIG_HELP)
    sn.set_defaults(fn=cmd_snapshots)
    args = ap.parse_args(argv)
    try:
        return args.fn(args)
    except HotstateError as exc:
        print(f"hotstate: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
