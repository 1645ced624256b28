"""`hotstate snapshots` lists the manifests of each store partition in a file:// store, and what a cold
restore would download and replay."""
from __future__ import annotations

from rocksdict import Options, Rdict

from hotstate.cli import main
from hotstate.snapshot import ObjectStore, PartitionPaths, SnapshotRequest, Snapshotter, take_checkpoint


def _publish(tmp_path, url):
    db = Rdict(str(tmp_path / "db"), Options(raw_mode=True))
    s = Snapshotter(ObjectStore.open(url), "shop")
    s.start()
    for i, offset in enumerate((100, 250)):
        for k in range(2000):
            db[b"k%d" % k] = b"v%d-%d" % (i, k)
        s.submit(SnapshotRequest("orders", "0_2", "shop-orders-changelog", 2, offset, 4,
                                 take_checkpoint(db, tmp_path / f"cp{i}").path))
        assert s.wait_idle(30)
    s.close()
    db.close()
    return [r for r in s.drain_results()]


def test_snapshots_lists_manifests_and_the_cold_restore(tmp_path, capsys):
    url = f"file://{tmp_path / 'store'}"
    results = _publish(tmp_path, url)
    assert [r.outcome.value for r in results] == ["PUBLISHED", "PUBLISHED"]
    ObjectStore.open(url).create(PartitionPaths("shop", "orders", 2).manifest_name(9, 1), b'{"format_version": 7}')
    assert main(["snapshots", "--app-id", "shop", "--snapshot-store", url]) == 0
    out = capsys.readouterr().out.splitlines()
    rows = [line.split() for line in out[1:] if line.startswith("orders")]
    assert [(r[1], r[2], r[3]) for r in rows] == [("2", "9", "1"), ("2", "4", "250"), ("2", "4", "100")]
    assert "unknown format" in " ".join(rows[0])
    newest = results[1]
    assert rows[1][4] == str(newest.uploaded_files + newest.reused_files)
    cold = [line for line in out if "cold restore" in line]
    assert len(cold) == 1
    assert "0000000004-00000000000000000250.json" in cold[0] and "shop-orders-changelog[2] from 250" in cold[0]


def test_snapshots_of_an_app_without_any(tmp_path, capsys):
    assert main(["snapshots", "--app-id", "none", "--snapshot-store", f"file://{tmp_path}"]) == 1
    assert "no snapshots" in capsys.readouterr().err


def test_snapshots_with_bad_options_says_what_is_wrong(tmp_path, capsys):
    assert main(["snapshots", "--app-id", "a", "--snapshot-store", "s3://bucket/p", "--option", "nope=1"]) == 1
    assert "['nope'] is unknown" in capsys.readouterr().err
    assert main(["snapshots", "--app-id", "a", "--snapshot-store", "gs://b/p"]) == 1
    assert "snapshot_store" in capsys.readouterr().err


def test_snapshots_of_a_missing_directory_creates_nothing(tmp_path, capsys):
    assert main(["snapshots", "--app-id", "a", "--snapshot-store", f"file://{tmp_path}/typo"]) == 1
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "typo").exists()
