"""The broker restarts (``scripts/kafka restart``: a clean stop, then a start on the same data) while
word-count apps process, restore and keep standbys current, under both guarantees. Nothing may be lost
(and under exactly_once_v2 nothing doubled), no store wiped, and every app recovers by itself: the test never
restarts an app. See broker_faults.py for the deployments and how they are judged.

The module runs its own broker on HOTSTATE_RESTART_KAFKA_PORT (default 19402, controller 19403) and resets it
at the end; the shared broker is never touched."""
from __future__ import annotations

import os
import time

import pytest

from broker_faults import (BrokerCtl, Feeder, Processing, Restoring, Standby, WipeWatch, log, report,
                           wait_recovered)
from kafka_helpers import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.chaos, pytest.mark.timeout(300)]

PORT = os.environ.get("HOTSTATE_RESTART_KAFKA_PORT", "19402")


@pytest.fixture(scope="module")
def broker():
    ctl = BrokerCtl(PORT)
    ctl.reset()
    bootstrap = ctl.start()
    try:
        yield ctl, bootstrap
    finally:
        ctl.reset()


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once_v2"])
def test_broker_restart_during_processing_restore_and_standby_update(broker, tmp_path, guarantee):
    ctl, bootstrap = broker
    kafka = ctl.kafka(bootstrap)
    processing = Processing(kafka, tmp_path, guarantee)
    standby = Standby(kafka, tmp_path, guarantee)
    restoring = Restoring(kafka, tmp_path, guarantee)
    deployments = [processing, standby, restoring]
    feeder = Feeder(kafka, [d.source for d in deployments], seed=11 if guarantee == "at_least_once" else 12)
    prefilled = restoring.prefill()
    with WipeWatch() as wipes:
        try:
            processing.start()
            standby.start()
            feeder.start()
            wait_for(processing.ready, "processing: RUNNING and committing", 60, 0.2)
            wait_for(standby.ready, "standby: two tasks each, standbys tailing", 90, 0.2)
            restoring.start()
            wait_for(restoring.ready, "restoring: the restore of every partition under way", 60, 0.1,
                     detail=lambda: restoring.listener.events[:10])

            proc = ctl.restart_async()
            for line in proc.stderr:  # "broker stopped", then "... running"
                if "stopped" in line:
                    break
            assert proc.poll() is None or proc.returncode == 0, proc.stderr.read()
            log.warning("the broker stopped")
            restore_state = restoring.under_way()
            restoring.listener.release()
            out, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, f"scripts/kafka restart failed: {out}\n{err}"
            t_back = time.monotonic()
            log.warning("the broker is back (scripts/kafka restart returned)")
            for d in deployments:
                d.mark_fault()

            wait_recovered(deployments, t_back)
            time.sleep(1.0)  # the input keeps flowing a little after the last recovery
            truth = feeder.stop()
            for d in deployments:
                d.wait_all_committed()
            standby.wait_standbys_current()
            restoring.check_restore(prefilled)

            figures = [d.judge(truth[d.source]) for d in deployments]
            restoring_fig = figures[2]
            restoring_fig.notes.update(restored=prefilled, remaining_at_fault=restore_state["remaining"])
            report([f.line("broker-restart", len(wipes.messages)) for f in figures])
            for d in deployments:
                d.check_alive()
            assert not wipes.messages, f"stores wiped: {wipes.messages}"
            for f in figures:
                assert f.lost == 0, f"{f.scenario}: {f.lost} words lost updates"
                if guarantee == "exactly_once_v2":
                    assert f.doubled == 0, f"{f.scenario}: {f.doubled} words counted twice"
        finally:
            feeder.halt()
            restoring.listener.release()
            for d in deployments:
                d.close()
            kafka.close_producer()
