"""The `hotstate state` command reads stored changelog offsets from disk (no broker needed without --bootstrap)."""
from __future__ import annotations

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
