"""hotstate.windows: validation, the windows a timestamp falls in (against a brute-force reference), and the
time-windowed key serde's bytes (Kafka Streams' TimeWindowedSerializer)."""
from __future__ import annotations

import re
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import hotstate
from hotstate import serde, windows
from hotstate.errors import ConfigError


@pytest.mark.parametrize("build, message", [
    (lambda: windows.tumbling(0, 0), "size_ms=0"),
    (lambda: windows.tumbling(-5, 0), "size_ms=-5"),
    (lambda: windows.tumbling(10, -1), "grace_ms=-1"),
    (lambda: windows.tumbling(10.5, 0), "size_ms=10.5"),
    (lambda: windows.tumbling(True, 0), "size_ms=True"),
    (lambda: windows.tumbling(10, 5, retention_ms=14), "at least size_ms + grace_ms = 15"),
    (lambda: windows.hopping(10, 0, 0), "advance_ms=0"),
    (lambda: windows.hopping(10, 11, 0), "must not exceed size_ms=10"),
    (lambda: windows.hopping(10, 5, 2, retention_ms=11), "at least size_ms + grace_ms = 12"),
])
def test_bad_windows_are_refused_with_a_clear_error(build, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        build()
    assert issubclass(ConfigError, ValueError)


def test_retention_defaults_to_size_plus_grace_and_can_be_longer():
    assert windows.tumbling(60_000, 5_000).retention_ms == 65_000
    assert windows.hopping(60_000, 10_000, 0).retention_ms == 60_000
    assert windows.tumbling(60_000, 5_000, retention_ms=3_600_000).retention_ms == 3_600_000
    w = windows.tumbling(size_ms=60_000, grace_ms=5_000)
    assert (w.size_ms, w.advance_ms, w.grace_ms, w.tumbling) == (60_000, 60_000, 5_000, True)
    assert not windows.hopping(size_ms=60_000, advance_ms=20_000, grace_ms=0).tumbling


def reference_starts(size: int, advance: int, ts: int) -> list[int]:
    """Every multiple of advance, from 0, whose window [start, start + size) holds ts."""
    return [s for s in range(0, ts + 1, advance) if s <= ts < s + size]


@settings(max_examples=300, deadline=None)
@given(size=st.integers(1, 200), ratio=st.integers(1, 200), ts=st.integers(0, 5_000))
def test_window_starts_match_the_brute_force_reference(size, ratio, ts):
    advance = max(1, size * ratio // 200)
    w = windows.hopping(size, advance, 0)
    assert list(w.window_starts(ts)) == reference_starts(size, advance, ts)
    t = windows.tumbling(size, 0)
    assert list(t.window_starts(ts)) == [ts // size * size]


def test_windowed_key_serde_writes_key_bytes_then_the_start_big_endian():
    ks = serde.time_windowed(serde.STRING, 60_000)
    raw = ks.serialize(hotstate.Windowed("user-1", 120_000, 180_000))
    assert raw == b"user-1" + struct.pack(">q", 120_000)
    assert ks.deserialize(raw) == hotstate.Windowed("user-1", 120_000, 180_000)
    assert ks.deserialize(b"" + struct.pack(">q", 0)) == hotstate.Windowed("", 0, 60_000)
    with pytest.raises(TypeError, match="hotstate.Windowed"):
        ks.serialize("user-1")
    with pytest.raises(ValueError, match="at least 8 bytes"):
        ks.deserialize(b"abc")
    with pytest.raises(ValueError, match="window_size_ms"):
        serde.time_windowed(serde.STRING, 0)
