"""Serdes: round trips, the INT64 wire format (Kafka's LongSerializer), type checks, None handling."""
from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hotstate import serde

INT64_MIN, INT64_MAX = -(2 ** 63), 2 ** 63 - 1

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(INT64_MIN, INT64_MAX)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(), children, max_size=5),
    max_leaves=20,
)


@given(st.text())
def test_string_round_trip_is_utf8(s):
    data = serde.STRING.serialize(s)
    assert data == s.encode("utf-8")
    assert serde.STRING.deserialize(data) == s


@given(st.binary())
def test_bytes_round_trip(b):
    assert serde.BYTES.serialize(b) == b
    assert serde.BYTES.deserialize(serde.BYTES.serialize(b)) == b


def test_bytes_accepts_bytearray_and_memoryview_and_returns_bytes():
    assert serde.BYTES.serialize(bytearray(b"ab")) == b"ab"
    out = serde.BYTES.serialize(memoryview(b"cd"))
    assert out == b"cd" and type(out) is bytes


@given(st.integers(INT64_MIN, INT64_MAX))
def test_int64_is_8_byte_big_endian_signed(n):
    data = serde.INT64.serialize(n)
    assert data == struct.pack(">q", n)
    assert len(data) == 8
    assert serde.INT64.deserialize(data) == n


@pytest.mark.parametrize("n, raw", [
    (0, b"\x00" * 8),
    (1, b"\x00\x00\x00\x00\x00\x00\x00\x01"),
    (-1, b"\xff" * 8),
    (256, b"\x00\x00\x00\x00\x00\x00\x01\x00"),
    (INT64_MAX, b"\x7f" + b"\xff" * 7),
    (INT64_MIN, b"\x80" + b"\x00" * 7),
])
def test_int64_known_encodings(n, raw):
    assert serde.INT64.serialize(n) == raw
    assert serde.INT64.deserialize(raw) == n


@pytest.mark.parametrize("length", [0, 1, 4, 7, 9, 16])
def test_int64_rejects_wrong_lengths(length):
    with pytest.raises(ValueError, match="8 bytes"):
        serde.INT64.deserialize(b"\x01" * length)


@pytest.mark.parametrize("n", [INT64_MAX + 1, INT64_MIN - 1])
def test_int64_rejects_out_of_range(n):
    with pytest.raises(struct.error):
        serde.INT64.serialize(n)


@given(json_values)
def test_json_round_trip(v):
    assert serde.JSON.deserialize(serde.JSON.serialize(v)) == v


def test_json_serializes_to_compact_utf8_json():
    assert serde.JSON.serialize({"a": [1, "é"]}) == '{"a":[1,"é"]}'.encode("utf-8")


@pytest.mark.parametrize("bad", [b"x", b"\x00\x01", 5, None, 1.5])
def test_string_rejects_non_str(bad):
    with pytest.raises(TypeError, match="STRING serde expects str"):
        serde.STRING.serialize(bad)


@pytest.mark.parametrize("bad", ["text", 5, None])
def test_bytes_rejects_non_bytes(bad):
    with pytest.raises(TypeError, match="BYTES serde expects bytes"):
        serde.BYTES.serialize(bad)


def test_string_rejects_invalid_utf8():
    with pytest.raises(UnicodeDecodeError):
        serde.STRING.deserialize(b"\xff\xfe")


def test_custom_serde_via_of():
    calls = []

    def ser(v):
        calls.append(("ser", v))
        return str(v * 2).encode()

    def de(b):
        calls.append(("de", b))
        return int(b) // 2

    s = serde.of(ser, de, name="doubled")
    assert s.serialize(21) == b"42"
    assert s.deserialize(b"42") == 21
    assert calls == [("ser", 21), ("de", b"42")]
    assert s.name == "doubled"
    assert repr(s) == "serde.doubled"
    assert isinstance(s, serde.Serde)


def test_custom_serde_default_name():
    assert serde.of(bytes, bytes).name == "custom"


def test_subclassed_serde_is_used_by_dumps_and_loads():
    class Upper(serde.Serde):
        name = "UPPER"

        def serialize(self, value):
            return value.upper().encode()

        def deserialize(self, data):
            return data.decode().lower()

    assert serde.dumps(Upper(), "abc") == b"ABC"
    assert serde.loads(Upper(), b"ABC") == "abc"


def test_base_serde_is_abstract():
    with pytest.raises(NotImplementedError):
        serde.Serde().serialize(1)
    with pytest.raises(NotImplementedError):
        serde.Serde().deserialize(b"1")


@pytest.mark.parametrize("s", [serde.STRING, serde.BYTES, serde.INT64, serde.JSON,
                               serde.of(lambda v: 1 / 0, lambda b: 1 / 0)])
def test_dumps_and_loads_keep_none_without_calling_the_serde(s):
    assert serde.dumps(s, None) is None
    assert serde.loads(s, None) is None


def test_dumps_and_loads_delegate_for_values():
    assert serde.dumps(serde.INT64, 7) == struct.pack(">q", 7)
    assert serde.loads(serde.INT64, struct.pack(">q", -7)) == -7
    # JSON null is b"null", not a tombstone: only Python None maps to None
    assert serde.loads(serde.JSON, b"null") is None
    assert serde.dumps(serde.JSON, 0) == b"0"
    assert serde.dumps(serde.STRING, "") == b""


def test_builtin_reprs():
    assert [repr(s) for s in (serde.STRING, serde.BYTES, serde.INT64, serde.JSON)] == [
        "serde.STRING", "serde.BYTES", "serde.INT64", "serde.JSON"]
