"""A per-phase timeline of one hotstate app's start, for bench children (``bench/restore.py --timeline DIR``).

``install(path)`` wraps the start sequence's steps (client creation, admin checks, the group member, the join
rounds, the assignor, the assignment's work, the restore and the snapshot download, the app's transitions) so
that each writes ``<ms since mark(0)> <thread> enter|exit <step> [<ms inside>]`` to ``path``, and routes the
INFO/DEBUG logs of hotstate and kafka-python's coordinator to the same file with the same clock. Wrapping is
done from outside (no hotstate code knows of it); it adds microseconds per call, and only these calls are
wrapped, none per record. ``summary(path)`` turns a timeline into the phases' start and end.
"""
from __future__ import annotations

import functools
import logging
import threading
import time
from typing import Any, Callable

_t0 = time.perf_counter()
_out: Any = None
_lock = threading.Lock()


def _write(line: str) -> None:
    if _out is None:
        return
    with _lock:
        _out.write(f"{(time.perf_counter() - _t0) * 1000:9.1f} {threading.current_thread().name:<28} {line}\n")
        _out.flush()


def mark(what: str, reset: bool = False) -> None:
    """A point in the timeline; ``reset``: it is time 0 (App.start() is called next)."""
    global _t0
    if reset:
        _t0 = time.perf_counter()
    _write(f"mark {what}")


def _wrap(owner: Any, attr: str, name: str, once: bool = False) -> None:
    fn = getattr(owner, attr)
    seen = [False]

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if once and seen[0]:
            return fn(*args, **kwargs)
        began = time.perf_counter()
        _write(f"enter {name}")
        try:
            return fn(*args, **kwargs)
        finally:
            seen[0] = True
            _write(f"exit {name} {(time.perf_counter() - began) * 1000:.1f}")

    setattr(owner, attr, wrapper)


class _Handler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        try:
            msg = record.getMessage()
        except Exception:
            msg = str(record.msg)
        _write(f"log {record.name} {msg[:300]}")


def install(path: str) -> None:
    global _out
    _out = open(path, "w")
    from hotstate import app as app_mod
    from hotstate.kafka import admin, clients
    from hotstate.runtime import (changelog_reader, commit, membership, snapshot_source, state_updater,
                                  stream_thread, task_manager)
    from hotstate.snapshot import restorer
    from hotstate.state import rocksdb_store

    _wrap(admin.Admin, "__init__", "admin.create")
    _wrap(admin.Admin, "require_topics", "admin.require_topics")
    _wrap(admin.Admin, "ensure_changelogs", "admin.ensure_changelogs")
    for f in ("producer", "main_consumer", "end_offsets_consumer", "restore_consumer", "tail_consumer"):
        _wrap(clients, f, f"clients.{f}")
    # stream_thread imported the module, so the wrapped factories are the ones it calls.
    _wrap(membership, "_kafka_member", "member.create (kafka-python KafkaConsumer)")
    _wrap(membership.GroupMembership, "join", "membership.join (subscribe)")
    _wrap(membership.GroupMembership, "poll", "membership.poll (first)", once=True)
    _wrap(membership.GroupMembership, "_apply_assigned", "membership.apply_assigned")
    _wrap(membership.GroupMembership, "_start_offsets", "membership.start_offsets (committed)")
    _wrap(membership.GroupMembership, "task_end_offsets", "assignor.end_offsets")
    _wrap(membership.TaskAssignor, "assign", "assignor.assign")
    _wrap(membership.TaskAssignor, "metadata", "assignor.metadata (subscription)")
    _wrap(membership.TaskAssignor, "on_assignment", "assignor.on_assignment")
    _wrap(commit.ExactlyOnceCommitter, "init", "eos.init_transactions")
    _wrap(task_manager.TaskManager, "partitions_assigned", "tm.partitions_assigned")
    _wrap(task_manager.TaskManager, "standbys_assigned", "tm.standbys_assigned")
    _wrap(state_updater.StateUpdater, "start", "updater.start")
    _wrap(changelog_reader.ChangelogReader, "start_actives", "reader.start_actives")
    _wrap(changelog_reader.ChangelogReader, "_apply", "reader.apply (first records)", once=True)
    _wrap(changelog_reader.ChangelogReader, "_finish", "reader.finish (a partition read to its end)")
    _wrap(changelog_reader.ChangelogReader, "_complete", "reader.complete (a partition flushed)")
    _wrap(rocksdb_store.RocksDBBackend, "begin_restore", "rocksdb.begin_restore")
    _wrap(rocksdb_store.RocksDBBackend, "open_from_files", "rocksdb.open_from_files")
    _wrap(rocksdb_store.RocksDBBackend, "end_restore", "rocksdb.end_restore")
    _wrap(rocksdb_store.RocksDBBackend, "_close_handles", "rocksdb.close_handles")
    _wrap(rocksdb_store.RocksDBBackend, "_open", "rocksdb.open")
    _wrap(task_manager.TaskManager, "handle_restored", "tm.handle_restored (first)", once=True)
    _wrap(snapshot_source.RestorerSource, "fetch", "snapshot.fetch")
    _wrap(snapshot_source.RestorerSource, "_get_restorer", "snapshot.open_store", once=True)
    _wrap(restorer.Restorer, "fetch", "restorer.fetch")
    _wrap(stream_thread.StreamThread, "_loop", "stream_thread.loop")
    _wrap(app_mod.App, "_prepare_topics", "app.prepare_topics")

    handler = _Handler()
    for name, level in (("hotstate", logging.INFO), ("kafka.coordinator", logging.DEBUG),
                        ("kafka.client", logging.DEBUG), ("kafka.cluster", logging.DEBUG),
                        ("hotstate.librdkafka", logging.DEBUG)):
        lg = logging.getLogger(name)
        lg.setLevel(level)
        lg.addHandler(handler)


def summary(path: str) -> dict[str, float]:
    """Milliseconds from time 0 to the first enter / last exit of each wrapped step and to each mark."""
    out: dict[str, float] = {}
    with open(path) as f:
        for line in f:
            parts = line.split(None, 2)
            if len(parts) < 3:
                continue
            ms, rest = float(parts[0]), parts[2].rstrip("\n")
            kind, _, what = rest.partition(" ")
            if kind == "enter":
                out.setdefault(f"{what} start", ms)
            elif kind == "exit":
                out[f"{what.rsplit(' ', 1)[0]} end"] = ms
            elif kind == "mark":
                out.setdefault(what, ms)
    return out


# The start sequence as consecutive phases: (name, the summary key that ends it). Each phase runs from the end of
# the one before it (App.start() for the first) to its own end; absent steps (no snapshot) are skipped.
PHASES = (
    ("admin: topic checks and changelogs", "app.prepare_topics end"),
    ("clients, group member, state updater", "updater.start end"),
    ("group join: JoinGroup, assignor, SyncGroup", "assignor.on_assignment end"),
    ("assignment: committed offsets, tasks and stores", "tm.partitions_assigned end"),
    ("restore start: changelog ends, first download", "snapshot.fetch start"),
    ("snapshot download (all partitions)", "snapshot.fetch end"),
    ("adoption (open the files), assign", "reader.start_actives end"),
    ("changelog tail read", "reader.finish (a partition read to its end) end"),
    ("restore flush (end_restore)", "reader.complete (a partition flushed) end"),
    ("hand-over to RUNNING", "wait_until_running() returned"),
)


def phases(path: str) -> list[tuple[str, float, float]]:
    """(phase, its end in ms since App.start(), its length in ms) for a timeline written by ``install``."""
    marks = summary(path)
    out, prev = [], 0.0
    for name, key in PHASES:
        if key not in marks:
            continue
        end = max(marks[key], prev)
        out.append((name, round(end, 1), round(end - prev, 1)))
        prev = end
    return out


if __name__ == "__main__":  # .venv/bin/python bench/start_timeline.py DIR/snapshot-0.timeline ...
    import sys
    for p in sys.argv[1:]:
        print(p)
        for k, v in sorted(summary(p).items(), key=lambda kv: kv[1]):
            print(f"  {v:9.1f}  {k}")
        print("  phases (end ms, length ms):")
        for name, end, length in phases(p):
            print(f"  {end:9.1f} {length:8.1f}  {name}")

