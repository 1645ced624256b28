"""The ``hotstate`` command: the operator's view of local state.

    hotstate state --app-id A [--state-dir D] [--bootstrap B]

lists every task and store on disk with the changelog offset it holds and, with ``--bootstrap``, the
changelog's end and the lag: what a restore of that store would replay right now. Safe beside a running
app: stores are opened read-only, without RocksDB's lock (a store the app writes shows its durable offset).
"""
from __future__ import annotations

import argparse
import os
import sys

from .config import default_state_dir
from .errors import HotstateError, StoreCorruptedError
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


def _ends(bootstrap: str, topics_partitions: set[tuple[str, int]]) -> dict[tuple[str, int], int]:
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "hotstate-cli", "isolation.level": "read_committed"})
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
    if args.bootstrap:
        want = {(f"{args.app_id}-{store}-changelog", int(task.split("_")[1])) for task, store, _, _ in rows}
        ends = _ends(args.bootstrap, want)
    print(f"{'task':<8} {'store':<24} {'stored offset':>14} {'changelog end':>14} {'lag':>12}  note")
    for task, store, offset, note in rows:
        end = ends.get((f"{args.app_id}-{store}-changelog", int(task.split("_")[1])))
        lag = "" if end is None else str(end - (offset or 0))
        print(f"{task:<8} {store:<24} {'-' if offset is None else offset:>14} {'' if end is None else end:>14} "
              f"{lag:>12}  {note}")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="hotstate", description="hotstate's operator commands")
    sub = ap.add_subparsers(dest="command", required=True)
    st = sub.add_parser("state", help="tasks and stores on disk, their changelog offsets and lag")
    st.add_argument("--app-id", required=True)
    st.add_argument("--state-dir", default=default_state_dir())
    st.add_argument("--bootstrap", help="bootstrap servers, to read the changelog ends and show the lag")
    st.set_defaults(fn=cmd_state)
    args = ap.parse_args(argv)
    try:
        return args.fn(args)
    except HotstateError as exc:
        print(f"hotstate: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
