"""The `hotstate state` command reads stored changelog offsets from disk (no broker needed without --bootstrap)."""
from __future__ import annotations

import os
import subprocess
import sys

from hotstate.cli import main
from hotstate.state.rocksdb_store import RocksDBBackend


def test_state_lists_stores_with_their_stored_offsets(tmp_path, capsys):
    for task, offset in (("0_0", 42), ("0_1", 7)):
        b = RocksDBBackend("counts", str(tmp_path / "app" / task / "counts"))
        b.write([(b"k", b"v")], offset)
        b.close()
    (tmp_path / "app" / "0_2" / "broken").mkdir(parents=True)
    (tmp_path / "app" / "0_2" / "broken" / "CURRENT").write_text("garbage")
    assert main(["state", "--app-id", "app", "--state-dir", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = {tuple(line.split()[:2]): line.split() for line in lines[1:]}
    assert rows[("0_0", "counts")][2] == "42"
    assert rows[("0_1", "counts")][2] == "7"
    assert "corrupted" in " ".join(rows[("0_2", "broken")])


def test_state_of_an_unknown_app_fails(tmp_path, capsys):
    assert main(["state", "--app-id", "nope", "--state-dir", str(tmp_path)]) == 1
    assert "no state" in capsys.readouterr().err


def _rows(out: str) -> dict:
    return {tuple(line.split()[:2]): line.split() for line in out.splitlines()[1:]}


def test_state_reads_stores_a_running_app_holds_open_without_disturbing_it(tmp_path, capsys):
    """`hotstate state` beside a running app: it opens stores read-only (no RocksDB lock), so a store the app
    holds open is listed with its offset, and the app's store goes on working (the CLI took no lock and left
    no file behind)."""
    held = RocksDBBackend("counts", str(tmp_path / "app" / "0_0" / "counts"))
    try:
        held.write([(b"k", b"v")], 42)
        closed = RocksDBBackend("counts", str(tmp_path / "app" / "0_1" / "counts"))
        closed.write([(b"k", b"v")], 7)
        closed.close()
        (tmp_path / "app" / "0_2" / "empty").mkdir(parents=True)  # a store directory without a database
        files = sorted(os.listdir(held.path))
        assert main(["state", "--app-id", "app", "--state-dir", str(tmp_path)]) == 0
        rows = _rows(capsys.readouterr().out)
        assert rows[("0_0", "counts")][2] == "42", "the store the app holds open is read too"
        assert rows[("0_1", "counts")][2] == "7"
        assert rows[("0_2", "empty")][2] == "-" and os.listdir(tmp_path / "app" / "0_2" / "empty") == []
        assert sorted(os.listdir(held.path)) == files
        held.write([(b"k2", b"v2")], 50)  # the app's store is undisturbed
        assert held.get(b"k2") == b"v2"
    finally:
        held.close()
    again = RocksDBBackend("counts", str(tmp_path / "app" / "0_0" / "counts"))
    try:
        assert again.changelog_offset() == 50 and again.get(b"k") == b"v"
    finally:
        again.close()


def test_a_store_the_cli_cannot_read_gets_a_note_and_the_others_still_print(tmp_path, capsys):
    ok = RocksDBBackend("counts", str(tmp_path / "app" / "0_1" / "counts"))
    ok.write([(b"k", b"v")], 9)
    ok.close()
    bad = RocksDBBackend("counts", str(tmp_path / "app" / "0_0" / "counts"))
    bad.write([(b"k", b"v")], 3)
    bad.close()
    for name in os.listdir(bad.path):
        if name.startswith("MANIFEST-"):
            with open(os.path.join(bad.path, name), "wb") as f:
                f.write(b"not a manifest")
    assert main(["state", "--app-id", "app", "--state-dir", str(tmp_path)]) == 0
    rows = _rows(capsys.readouterr().out)
    assert rows[("0_0", "counts")][2] == "-" and "corrupted" in " ".join(rows[("0_0", "counts")])
    assert rows[("0_1", "counts")][2] == "9"


def test_state_in_another_process_beside_the_app_that_holds_the_store(tmp_path):
    """As an operator runs it: its own process, while the app's process has the store open (RocksDB's lock
    is a file lock across processes)."""
    held = RocksDBBackend("counts", str(tmp_path / "app" / "0_0" / "counts"))
    try:
        held.write([(b"k", b"v")], 42)
        done = subprocess.run([sys.executable, "-m", "hotstate.cli", "state", "--app-id", "app",
                               "--state-dir", str(tmp_path)], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert _rows(done.stdout)[("0_0", "counts")][2] == "42"
        held.write([(b"k2", b"v2")], 43)
        assert held.changelog_offset() == 43
    finally:
        held.close()
