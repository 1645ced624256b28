"""Snapshots published by a running app, on the real broker, to a file:// directory and to an S3 server
(moto_server): taken mid-stream while input flows, each holds exactly the state a replay of the changelog
(read_committed) up to its offset gives, under at-least-once and exactly_once_v2; they show in app.metrics(),
on the Prometheus endpoint and in ``hotstate snapshots``. An object store that is down when the app starts
does not stop it: it processes, retries, says so once per interval, and publishes once the store is up."""
from __future__ import annotations

import logging
import time
import urllib.request
import uuid
from collections import defaultdict

import pytest

import hotstate
from hotstate.cli import main as cli
from hotstate.snapshot import ObjectStore, Restorer
from kafka_helpers import WordCount, wait_for, wait_processed
from snapshot_store_helpers import MotoServer, check_manifests_whole, free_port, listings, open_snapshot

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]
PARTITIONS = 4
STORE = "word-counts"


def _changelog(kafka, topic: str) -> dict[int, list]:
    """partition -> [(offset, key, value)] of the changelog, read_committed, in offset order."""
    out: dict[int, list] = defaultdict(list)
    for msg in kafka.read_all(topic):
        out[msg.partition()].append((msg.offset(), msg.key(), msg.value()))
    return out


def _replay(records: list, upto: int) -> dict[bytes, bytes]:
    state: dict[bytes, bytes] = {}
    for offset, key, value in records:
        if offset >= upto:
            break
        if value is None:
            state.pop(key, None)
        else:
            state[key] = value
    return state


def _published_by_all(objects, app_id: str, minimum: int = 1) -> bool:
    return all(len(listing.manifests) >= minimum for listing in listings(objects, app_id, STORE, PARTITIONS).values())


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once_v2"])
def test_snapshots_taken_while_input_flows_hold_the_committed_changelog_state(kafka, tmp_path, store_url, guarantee,
                                                                             capsys):
    url, options = store_url
    wc = WordCount(kafka, tmp_path / "state", seed=11, vocabulary=1500, partitions=PARTITIONS)
    app = wc.app(processing_guarantee=guarantee, snapshot_store=url, snapshot_store_options=options,
                 snapshot_interval_ms=300, metrics_port=0)
    objects = ObjectStore.open(url, options)
    fetched = {}
    app.start()
    try:
        app.wait_until_running(timeout_s=60)
        wc.produce(2000)
        wait_for(lambda: _published_by_all(objects, wc.app_id), "a snapshot of every partition", 60, 0.2)
        # Mid-stream: input keeps coming while the newest snapshots are downloaded.
        for round_ in range(4):
            wc.produce(500)
            time.sleep(0.35)
            if round_ == 2:
                for p in range(PARTITIONS):
                    got = Restorer(objects, wc.app_id).fetch(STORE, p, None, tmp_path / "fetched" / str(p))
                    assert got is not None, f"no snapshot of partition {p} could be downloaded"
                    fetched[p] = (got.offset, *open_snapshot(got.path))
        wait_processed(app, wc.produced)
        wait_for(lambda: _published_by_all(objects, wc.app_id, 2), "more snapshots of every partition", 30, 0.2)

        # What the app says it published: app.metrics(), the Prometheus endpoint, the CLI.
        # Metrics first: a manifest is created before its metric moves, so a listing taken after them holds it
        # (taken before, it missed a snapshot published in between: seen under load as 579 > 483).
        m = app.metrics()
        newest = {p: listing.manifests[0] for p, listing in listings(objects, wc.app_id, STORE, PARTITIONS).items()}
        for p in range(PARTITIONS):
            part = m["snapshots"][f"0_{p}/{STORE}"]
            assert part["snapshot_last_offset"] is not None and part["snapshots_total"] >= 2, part
            assert part["snapshot_last_offset"] <= newest[p].offset  # the listing may be one newer
            assert 0 <= part["snapshot_age_seconds"] < 30
        assert m["snapshot_checkpoints_total"] >= 2 * PARTITIONS
        text = urllib.request.urlopen(f"http://127.0.0.1:{app._metrics_server.port}/metrics", timeout=5).read().decode()
        assert f'hotstate_store_snapshot_last_offset{{app_id="{wc.app_id}",changelog="{wc.changelog}",store="{STORE}",task="0_0"}}' in text
        assert "hotstate_snapshot_checkpoint_seconds_max" in text
        capsys.readouterr()
        args = ["snapshots", "--app-id", wc.app_id, "--snapshot-store", url, "--bootstrap", kafka.bootstrap]
        for k, v in options.items():
            args += ["--option", f"{k}={v}"]
        assert cli(args) == 0
        out = capsys.readouterr().out
        for p in range(PARTITIONS):
            rows = [line.split() for line in out.splitlines() if line.startswith(STORE) and line.split()[1] == str(p)]
            assert rows and all(int(r[3]) > 0 for r in rows), out
            assert f"{wc.changelog}[{p}] from " in out
    finally:
        assert app.close(timeout_s=30)
    assert not any((tmp_path / "state" / wc.app_id / ".snapshot-checkpoints").iterdir()), "checkpoints left behind"

    check_manifests_whole(objects, wc.app_id, STORE, PARTITIONS)
    changelog = _changelog(kafka, wc.changelog)
    for p, (offset, stored_offset, data) in fetched.items():
        records = changelog[p]
        assert stored_offset == offset, f"partition {p}: the files hold offset {stored_offset}, the manifest {offset}"
        # A committed offset: right after a record read_committed returns (its transaction committed), and
        # below the changelog's end (taken mid-stream).
        assert any(o == offset - 1 for o, _, _ in records), f"partition {p}: offset {offset} follows no committed record"
        assert offset < records[-1][0] + 1, f"partition {p}: the snapshot is not mid-stream ({offset})"
        want = _replay(records, offset)
        assert data == want, (f"partition {p} at offset {offset}: {len(data)} keys in the snapshot, {len(want)} in "
                               f"the replay; differing: {sorted(set(data.items()) ^ set(want.items()))[:5]}")


def test_a_snapshot_store_down_at_start_leaves_the_app_processing_and_snapshots_follow_once_it_is_up(
        kafka, tmp_path, moto, caplog):
    """``moto`` only sets the test credentials; this test's server starts late, on a port of its own."""
    port = free_port()
    options = {"endpoint": f"http://127.0.0.1:{port}", "region": "us-east-1", "allow_http": True}
    url = f"s3://hotstate-late/{uuid.uuid4().hex}"
    wc = WordCount(kafka, tmp_path / "state", seed=12, vocabulary=300, partitions=PARTITIONS)
    app = wc.app(snapshot_store=url, snapshot_store_options=options, snapshot_interval_ms=500)
    server = None
    with caplog.at_level(logging.INFO, "hotstate"):
        started = time.monotonic()
        app.start()
        try:
            app.wait_until_running(timeout_s=60)
            wc.produce(1000)
            wait_processed(app, 1000)
            wc.check_store(app)
            wait_for(lambda: sum(p["snapshot_failures_total"] for p in app.metrics()["snapshots"].values()) >= 3,
                     "snapshots to be tried (and fail)", 30, 0.1)
            assert app.state is hotstate.AppState.RUNNING and app.metrics()["snapshots_total"] == 0
            down_s = time.monotonic() - started
            warnings = [r.getMessage() for r in caplog.records
                        if r.name.startswith("hotstate.snapshot") and r.levelno == logging.WARNING]
            assert warnings and all(f"127.0.0.1:{port}" in w and "retrying" in w for w in warnings), warnings
            assert len(warnings) <= down_s / 0.5 + 1, f"{len(warnings)} warnings in {down_s:.1f} s: not once per interval"

            server = MotoServer(port)
            server.start()
            server.create_bucket("hotstate-late")
            wc.produce(500)
            wait_processed(app, 1500)
            wait_for(lambda: all(p["snapshot_last_offset"] is not None for p in app.metrics()["snapshots"].values())
                     and len(app.metrics()["snapshots"]) == PARTITIONS, "a snapshot of every partition", 60, 0.2)
            assert any("works again" in r.getMessage() for r in caplog.records)
        finally:
            assert app.close(timeout_s=30)
            if server is not None:
                check_manifests_whole(ObjectStore.open(url, options), wc.app_id, STORE, PARTITIONS)
                server.stop()
