"""The snapshot manifest and object names (docs/formats.md): names sort by (epoch, offset), a manifest
round-trips through JSON, and one that is malformed, of another version, or not the one its name says is
refused."""
from __future__ import annotations

import datetime as dt

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from hotstate.snapshot.manifest import (FORMAT_VERSION, FileEntry, Manifest, ManifestError, PartitionPaths,
                                        UnknownManifestVersion, Writer, parse_manifest)

PATHS = PartitionPaths("app", "counts", 3)
SHA = "ab" * 32


def entry(name: str, sha: str = SHA, size: int = 10) -> FileEntry:
    return FileEntry(name, PATHS.file_object(name, sha), size, sha)


def manifest(**kw) -> Manifest:
    base = dict(app_id="app", store="counts", task_id="0_3", changelog_topic="app-counts-changelog",
                changelog_partition=3, changelog_offset=1234,
                files=(entry("000012.sst", size=4096), entry("CURRENT", "cd" * 32, 16)),
                created_at=dt.datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=dt.timezone.utc),
                writer=Writer("pod-1", 42, "host-a", 7))
    return Manifest(**{**base, **kw})


@given(st.tuples(st.integers(0, 2**31 - 1), st.integers(0, 2**63 - 1)),
       st.tuples(st.integers(0, 2**31 - 1), st.integers(0, 2**63 - 1)))
def test_manifest_names_sort_by_epoch_then_offset(a, b):
    na, nb = PATHS.manifest_name(*a), PATHS.manifest_name(*b)
    assert (na < nb) == (a < b) and (na == nb) == (a == b)
    assert PATHS.parse_manifest_name(na) == a


def test_names_outside_the_layout_are_not_manifests():
    assert PATHS.parse_manifest_name("app/counts/3/manifests/7-12.json") is None
    assert PATHS.parse_manifest_name("app/counts/4/manifests/" + PATHS.manifest_name(1, 1).rsplit("/", 1)[1]) is None
    assert PATHS.parse_manifest_name(PATHS.files + "x") is None


def test_round_trip_through_json():
    m = manifest()
    back = parse_manifest(m.name, m.to_json(), PATHS)
    assert back == m
    assert m.name == "app/counts/3/manifests/0000000007-00000000000000001234.json"
    assert m.num_bytes == 4096 + 16
    doc = orjson.loads(m.to_json())
    assert doc["format_version"] == FORMAT_VERSION == 1
    assert doc["created_at"] == "2026-01-02T03:04:05.678+00:00"
    assert set(doc) == {"format_version", "app_id", "store", "task_id", "changelog_topic", "changelog_partition",
                        "changelog_offset", "created_at", "writer", "files"}


@pytest.mark.parametrize("files, message", [
    ((), "at least one file"),
    ((entry("000012.sst"),), "CURRENT"),
    ((entry("CURRENT"), entry("CURRENT")), "twice"),
    ((entry("CURRENT"), entry("../../etc/passwd")), "plain file name"),
    ((entry("CURRENT"), entry("sub/000001.sst")), "plain file name"),
    ((entry("CURRENT"), entry(".hidden")), "plain file name"),
    ((entry("CURRENT"), FileEntry("1.sst", PATHS.file_object("1.sst", "zz" * 32), 1, "zz" * 32)), "sha256"),
    ((entry("CURRENT"), FileEntry("1.sst", "app/counts/4/files/x", 1, SHA)), "not its partition's"),
    ((entry("CURRENT"), entry("1.sst", size=-1)), "size"),
])
def test_invalid_manifests_are_refused_before_publishing(files, message):
    with pytest.raises(ManifestError, match=message):
        manifest(files=files).to_json()


def test_negative_offset_is_refused():
    with pytest.raises(ManifestError, match="changelog_offset"):
        manifest(changelog_offset=-1).check()


def test_unknown_version_is_its_own_error():
    doc = orjson.loads(manifest().to_json())
    doc["format_version"] = 2
    with pytest.raises(UnknownManifestVersion, match="format_version 2"):
        parse_manifest(manifest().name, orjson.dumps(doc), PATHS)


@pytest.mark.parametrize("mutate", [
    lambda d: d.pop("files"),
    lambda d: d.update(changelog_offset="12"),
    lambda d: d.update(created_at="yesterday"),
    lambda d: d["writer"].pop("epoch"),
    lambda d: d.update(changelog_offset=1235),  # the name says 1234
    lambda d: d["writer"].update(epoch=8),  # the name says 7
    lambda d: d.update(changelog_partition=4),
])
def test_malformed_or_misnamed_manifests_are_refused(mutate):
    m = manifest()
    doc = orjson.loads(m.to_json())
    mutate(doc)
    with pytest.raises(ManifestError):
        parse_manifest(m.name, orjson.dumps(doc), PATHS)


def test_garbage_bytes_are_refused():
    with pytest.raises(ManifestError, match="not JSON"):
        parse_manifest(manifest().name, b"\x00{trunc", PATHS)
    with pytest.raises(ManifestError, match="not a JSON object"):
        parse_manifest(manifest().name, b"[1]", PATHS)


@pytest.mark.parametrize("app, store", [("a/b", "s"), ("..", "s"), ("a", ""), ("a", "s p")])
def test_partition_paths_refuse_names_that_break_the_layout(app, store):
    with pytest.raises(ValueError):
        PartitionPaths(app, store, 0)
