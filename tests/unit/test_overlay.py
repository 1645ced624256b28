"""The uncommitted overlay over both backends: read-your-writes, tombstones, merged ranges."""
from __future__ import annotations

import tempfile

from hypothesis import given, settings
from hypothesis import strategies as st

from hotstate.state.memory_store import MemoryBackend
from hotstate.state.overlay import Overlay
from hotstate.state.rocksdb_store import RocksDBBackend


def test_read_your_writes(backend):
    backend.write([(b"a", b"old"), (b"b", b"keep")], 1)
    o = Overlay(backend)
    o.put(b"a", b"new")
    o.put(b"c", b"added")
    assert o.get(b"a") == b"new"
    assert o.get(b"b") == b"keep"
    assert o.get(b"c") == b"added"
    assert o.get(b"zzz") is None
    # the backend itself is untouched until commit
    assert backend.get(b"a") == b"old"
    assert backend.get(b"c") is None


def test_tombstone_hides_backend_key(backend):
    backend.write([(b"a", b"1"), (b"b", b"2")], 1)
    o = Overlay(backend)
    o.put(b"a", None)
    assert o.get(b"a") is None
    assert list(o.range(None, None)) == [(b"b", b"2")]
    assert backend.get(b"a") == b"1"


def test_tombstone_then_put_resurrects(backend):
    backend.write([(b"a", b"1")], 1)
    o = Overlay(backend)
    o.put(b"a", None)
    o.put(b"a", b"2")
    assert o.get(b"a") == b"2"
    assert o.entries() == [(b"a", b"2")]


def test_range_merges_in_byte_order_overlay_wins(backend):
    backend.write([(b"b", b"B"), (b"d", b"D"), (b"f", b"F")], 1)
    o = Overlay(backend)
    o.put(b"a", b"a1")     # before all backend keys
    o.put(b"d", b"d1")     # overrides
    o.put(b"e", b"e1")     # between
    o.put(b"f", None)      # deletes
    o.put(b"g", b"g1")     # after all
    o.put(b"h", None)      # delete of a key nowhere
    assert list(o.range(None, None)) == [(b"a", b"a1"), (b"b", b"B"), (b"d", b"d1"), (b"e", b"e1"), (b"g", b"g1")]
    assert list(o.range(b"b", b"e")) == [(b"b", b"B"), (b"d", b"d1"), (b"e", b"e1")]
    assert list(o.range(b"c", None)) == [(b"d", b"d1"), (b"e", b"e1"), (b"g", b"g1")]
    assert list(o.range(None, b"c")) == [(b"a", b"a1"), (b"b", b"B")]
    assert list(o.range(b"x", None)) == []


def test_range_uses_unsigned_byte_order(backend):
    backend.write([(b"\x80", b"hi"), (b"\x01", b"lo")], 1)
    o = Overlay(backend)
    o.put(b"\xff", b"top")
    o.put(b"\x7f", b"mid")
    assert [k for k, _ in o.range(None, None)] == [b"\x01", b"\x7f", b"\x80", b"\xff"]


def test_entries_first_write_order_and_clear(backend):
    backend.write([(b"x", b"1")], 1)
    o = Overlay(backend)
    o.put(b"b", b"1")
    o.put(b"a", b"1")
    o.put(b"b", b"2")  # rewrite keeps b's first position, last value
    o.put(b"x", None)
    assert o.entries() == [(b"b", b"2"), (b"a", b"1"), (b"x", None)]
    assert len(o) == 3
    entries = o.entries()
    o.clear()
    assert len(o) == 0
    assert o.entries() == []
    assert entries == [(b"b", b"2"), (b"a", b"1"), (b"x", None)]  # a snapshot, not a live view
    # after clear, reads fall through to the backend again
    assert o.get(b"x") == b"1"
    assert o.get(b"a") is None


def test_entries_after_commit_visible_via_backend(backend):
    o = Overlay(backend)
    o.put(b"k", b"v")
    backend.write(o.entries(), 5)
    o.clear()
    assert o.get(b"k") == b"v"
    assert list(o.range(None, None)) == [(b"k", b"v")]


keys = st.binary(max_size=4)
ops = st.lists(st.tuples(keys, st.none() | st.binary(min_size=1, max_size=3)), max_size=30)
bounds = st.none() | keys


def _check_range_model(backend, base, dirty, lo, hi):
    model = dict(base)
    if base:
        backend.write(list(base.items()), 1)
    o = Overlay(backend)
    for k, v in dirty:
        o.put(k, v)
        if v is None:
            model.pop(k, None)
        else:
            model[k] = v
    expected = sorted((k, v) for k, v in model.items()
                      if (lo is None or k >= lo) and (hi is None or k <= hi))
    assert list(o.range(lo, hi)) == expected
    for k in set(base) | {k for k, _ in dirty}:
        assert o.get(k) == model.get(k)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(keys, st.binary(min_size=1, max_size=3), max_size=20), ops, bounds, bounds)
def test_range_matches_dict_model_memory(base, dirty, lo, hi):
    _check_range_model(MemoryBackend("s"), base, dirty, lo, hi)


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(keys, st.binary(min_size=1, max_size=3), max_size=20), ops, bounds, bounds)
def test_range_matches_dict_model_rocksdb(base, dirty, lo, hi):
    with tempfile.TemporaryDirectory() as d:
        b = RocksDBBackend("s", d)
        try:
            _check_range_model(b, base, dirty, lo, hi)
        finally:
            b.close()


keys_ = st.binary(min_size=0, max_size=3).map(lambda b: b + bytes(8))  # windowed keys: a window start of 0 last
ops = st.lists(st.tuples(st.sampled_from(["put", "delete", "commit", "drop", "range"]), keys_, keys_),
               max_size=60)


@settings(max_examples=200, deadline=None)
@given(ops=ops)
def test_an_ordered_overlay_reads_ranges_as_a_plain_one(ops):
    """Windowed and session stores keep their dirty keys sorted (ordered=True) so a range costs only its keys:
    every range reads the same as the plain overlay's (and as a dict), through writes, commits and drops."""
    from hotstate.state.window_memory import WindowMemoryBackend
    plain, ordered = Overlay(MemoryBackend("p")), Overlay(WindowMemoryBackend("o", 10**12), ordered=True)
    model: dict[bytes, bytes] = {}
    committed: dict[bytes, bytes] = {}
    offset = 0
    for op, a, b in ops:
        if op in ("put", "delete"):
            value = None if op == "delete" else b"\x00" * 8 + b  # a windowed value: an 8-byte time first
            for o in (plain, ordered):
                o.put(a, value)
            if value is None:
                model.pop(a, None)
            else:
                model[a] = value
        elif op == "commit":
            offset += 1
            for o in (plain, ordered):
                o.backend.write(o.entries(), offset)
                o.clear()
            committed = dict(model)
        elif op == "drop":
            for o in (plain, ordered):
                o.clear()
            model = dict(committed)
        lo, hi = min(a, b), max(a, b)
        want = sorted((k, v) for k, v in model.items() if lo <= k <= hi)
        assert list(plain.range(lo, hi)) == want
        assert list(ordered.range(lo, hi)) == want
        assert list(ordered.range(None, hi)) == sorted((k, v) for k, v in model.items() if k <= hi)
        assert list(ordered.range(lo, None)) == sorted((k, v) for k, v in model.items() if k >= lo)
