"""The typed store facade (KeyValueStore), StoreSpec validation and ReadOnlyStore."""
from __future__ import annotations

import struct

import pytest

from hotstate import serde
from hotstate.errors import ConfigError
from hotstate.state.memory_store import MemoryBackend
from hotstate.state.overlay import Overlay
from hotstate.state.rocksdb_store import RocksDBBackend
from hotstate.state.store import KeyValueStore, ReadOnlyStore, StoreSpec


@pytest.fixture(params=["memory", "rocksdb"])
def backend(request, tmp_path):
    b = MemoryBackend("s") if request.param == "memory" else RocksDBBackend("s", str(tmp_path / "db"))
    yield b
    b.close()


def kv(backend, key_serde=serde.STRING, value_serde=serde.INT64, name="s"):
    return KeyValueStore(StoreSpec(name, key_serde, value_serde), Overlay(backend))


def test_put_get_delete_through_serdes(backend):
    s = kv(backend)
    s.put("hello", 3)
    assert s.get("hello") == 3
    assert s.get("absent") is None
    # what reaches the overlay is serialized bytes
    assert s._overlay.entries() == [(b"hello", struct.pack(">q", 3))]
    s.delete("hello")
    assert s.get("hello") is None
    assert s._overlay.entries() == [(b"hello", None)]


def test_put_none_is_a_delete(backend):
    backend.write([(b"k", struct.pack(">q", 1))], 1)
    s = kv(backend)
    s.put("k", None)
    assert s.get("k") is None
    assert list(s.all()) == []


def test_reads_committed_backend_values(backend):
    backend.write([(b"a", struct.pack(">q", -5))], 1)
    assert kv(backend).get("a") == -5


def test_range_and_all_typed(backend):
    backend.write([(b"b", struct.pack(">q", 2)), (b"d", struct.pack(">q", 4))], 1)
    s = kv(backend)
    s.put("a", 1)
    s.put("c", 3)
    s.delete("d")
    assert list(s.all()) == [("a", 1), ("b", 2), ("c", 3)]
    assert list(s.range("b", "c")) == [("b", 2), ("c", 3)]
    assert list(s.range(from_key="b")) == [("b", 2), ("c", 3)]
    assert list(s.range(to_key="a")) == [("a", 1)]


def test_range_is_in_serialized_byte_order(backend):
    # INT64 keys: negative numbers serialize with a high first byte, so they sort after the positives
    s = kv(backend, key_serde=serde.INT64, value_serde=serde.STRING)
    for k in (-1, 5, 0):
        s.put(k, str(k))
    assert [k for k, _ in s.all()] == [0, 5, -1]


def test_json_values(backend):
    s = kv(backend, key_serde=serde.BYTES, value_serde=serde.JSON)
    s.put(b"k", {"n": [1, 2]})
    assert s.get(b"k") == {"n": [1, 2]}


def test_key_serde_type_checked(backend):
    with pytest.raises(TypeError):
        kv(backend).put(b"bytes-not-str", 1)


def test_storespec_defaults_and_validation():
    spec = StoreSpec("x")
    assert (spec.key_serde, spec.value_serde, spec.kind) == (serde.BYTES, serde.JSON, "rocksdb")
    assert StoreSpec("m", kind="memory").kind == "memory"
    with pytest.raises(ConfigError, match="kind"):
        StoreSpec("x", kind="redis")
    for bad in ("", "a/b", ".hidden", "..", "."):
        with pytest.raises(ConfigError, match="store name"):
            StoreSpec(bad)


def test_storespec_rejects_names_that_cannot_be_topic_names():
    with pytest.raises(ConfigError, match="store name"):
        StoreSpec("word counts")


def _view(pairs, name="counts"):
    b = MemoryBackend(name)
    if pairs:
        b.write([(k.encode(), struct.pack(">q", v)) for k, v in pairs], 1)
    return KeyValueStore(StoreSpec(name, serde.STRING, serde.INT64), Overlay(b))


def test_readonly_store_get_over_several_stores():
    one, two = _view([("a", 1), ("zero", 0)]), _view([("b", 2)])
    two.put("c", 3)  # uncommitted writes are visible to queries too
    ro = ReadOnlyStore("counts", [one, two])
    assert ro.get("a") == 1
    assert ro.get("b") == 2
    assert ro.get("c") == 3
    assert ro.get("zero") == 0  # a falsy value is a value, not absence
    assert ro.get("nowhere") is None
    assert sorted(ro.all()) == [("a", 1), ("b", 2), ("c", 3), ("zero", 0)]
    assert ro.approximate_num_entries() == 3  # committed entries only
    assert ro.name == "counts"


def test_readonly_store_without_stores():
    ro = ReadOnlyStore("counts", [])
    assert ro.get("a") is None
    assert list(ro.all()) == []
    assert ro.approximate_num_entries() == 0
