"""Interactive queries racing with the close of their task's stores (issue #10, defect 10): every read of a
store whose task closed raises StoreClosedError (Kafka Streams: InvalidStateStoreException), never a
backend's own error, whatever the interleaving."""
from __future__ import annotations

import struct
import threading

import pytest

from hotstate import StoreSpec, TopicPartition, serde
from hotstate.errors import StoreClosedError
from hotstate.runtime.task import Task, TaskStore
from hotstate.state.memory_store import MemoryBackend
from hotstate.state.overlay import Overlay
from hotstate.state.rocksdb_store import RocksDBBackend
from hotstate.state.store import KeyValueStore, ReadOnlyStore


def task_with(make_app, backend) -> Task:
    """A task whose store "c" is ``backend``, built as TaskManager._open_store builds one."""
    app = make_app()
    app.stream("words", key_serde=serde.STRING).group_by_key().count(store=StoreSpec("c", kind=(
        "rocksdb" if backend.persistent else "memory")))
    sub = app._topology.subtopology_of("words")
    spec = sub.stores["c"]
    overlay = Overlay(backend)
    store = TaskStore(spec, TopicPartition("unit-app-c-changelog", 0), backend, overlay,
                      KeyValueStore(spec, overlay), lambda: backend)
    return Task(sub, 0, {"c": store})


@pytest.fixture(params=["rocksdb", "memory"])
def task(request, make_app, tmp_path):
    backend = RocksDBBackend("c", str(tmp_path / "c")) if request.param == "rocksdb" else MemoryBackend("c")
    backend.write([(f"k{i}".encode(), struct.pack(">q", i)) for i in range(100)], 100)
    t = task_with(make_app, backend)
    yield t
    backend.close()


def query(task: Task) -> ReadOnlyStore:
    return ReadOnlyStore("c", [task.stores["c"].view])


def test_every_read_of_a_closed_store_raises_store_closed(task):
    ro = query(task)
    assert ro.get("k7") == 7 and ro.approximate_num_entries() > 0
    task.close_stores()
    with pytest.raises(StoreClosedError):
        ro.get("k7")
    with pytest.raises(StoreClosedError):
        list(ro.all())
    with pytest.raises(StoreClosedError):
        ro.approximate_num_entries()  # RocksDB raised AttributeError; Kafka Streams throws here too


def test_an_iteration_under_way_when_the_store_closes_raises_store_closed(task):
    it = query(task).all()
    assert next(it) == ("k0", 0)
    task.close_stores()
    with pytest.raises(StoreClosedError):
        next(it)  # RocksDB's iterator kept the closed database alive and went on yielding


class _GatedDb:
    """Stands in for the open rocksdict database of a RocksDBBackend: ``get`` waits at a gate first, so a
    test can close the store between the backend's own "is it closed?" check and the database call."""

    def __init__(self, db):
        self._db = db
        self.entered, self.release = threading.Event(), threading.Event()

    def get(self, key):
        self.entered.set()
        assert self.release.wait(10)
        return self._db.get(key)

    def __getattr__(self, name):
        return getattr(self._db, name)


def test_a_get_that_the_close_overtakes_inside_the_backend_raises_store_closed(make_app, tmp_path):
    backend = RocksDBBackend("c", str(tmp_path / "c"))
    backend.write([(b"k", struct.pack(">q", 1))], 1)
    task = task_with(make_app, backend)
    gate = backend._db = _GatedDb(backend._db)
    ro = query(task)
    out: list = []

    def reader():
        try:
            out.append(ro.get("k"))
        except BaseException as exc:  # noqa: BLE001 - the test inspects what leaked
            out.append(exc)

    t = threading.Thread(target=reader)
    t.start()
    assert gate.entered.wait(10)
    task.close_stores()  # the processing thread closes the task while the query is inside the backend
    gate.release.set()
    t.join(10)
    assert len(out) == 1 and isinstance(out[0], StoreClosedError), out


def test_readers_in_a_loop_while_the_store_closes_see_values_or_store_closed_only(task):
    ro = query(task)
    errors: list[BaseException] = []
    reads = [0]
    started = threading.Event()

    give_up = threading.Event()

    def reader(op):
        while not give_up.is_set():
            try:
                op()
            except StoreClosedError:
                return
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)
                return
            reads[0] += 1
            started.set()

    ops = [lambda: ro.get("k42"), lambda: sum(1 for _ in ro.all()), ro.approximate_num_entries]
    threads = [threading.Thread(target=reader, args=(op,), daemon=True) for op in ops]
    for t in threads:
        t.start()
    assert started.wait(10)
    task.close_stores()
    for t in threads:
        t.join(10)
    give_up.set()
    assert not any(t.is_alive() for t in threads), "a reader never saw the close"
    assert errors == [] and reads[0] > 0
