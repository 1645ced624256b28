"""A three-node cluster as production runs it (``scripts/kafka start --brokers 3``: replication factor 3,
min ISR 2, the offsets and transaction-state topics too). One node is killed with ``kill -9`` while an
exactly_once_v2 word count processes and another restores; both go on without it, nothing lost or doubled,
the restore finishes, nothing wiped. The node is started again before the end and the apps keep going.
Changelogs created by hotstate (replication_factor=-1) get the cluster's replication factor 3.

The module runs its own cluster on HOTSTATE_CLUSTER_KAFKA_PORT (default 19412: brokers 19412, 19414, 19416,
controllers one above each) and resets it at the end; the shared broker is never touched."""
from __future__ import annotations

import os
import time

import pytest
from confluent_kafka.admin import ConfigResource, ResourceType

from broker_faults import (PARTITIONS, BrokerCtl, Feeder, Processing, Restoring, WipeWatch, log, report,
                           wait_recovered)
from kafka_helpers import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.chaos, pytest.mark.timeout(300)]

PORT = os.environ.get("HOTSTATE_CLUSTER_KAFKA_PORT", "19412")
NODES = 3


@pytest.fixture(scope="module")
def cluster():
    ctl = BrokerCtl(PORT, brokers=NODES)
    ctl.reset()
    bootstrap = ctl.start()
    assert bootstrap.count(",") == NODES - 1, bootstrap
    try:
        yield ctl, bootstrap
    finally:
        ctl.reset()


def replicas(kafka, topic: str) -> dict[int, tuple[int, list[int], list[int]]]:
    """partition -> (leader, replicas, in-sync replicas)."""
    md = kafka.admin.list_topics(topic=topic, timeout=10).topics[topic]
    return {p: (m.leader, list(m.replicas), list(m.isrs)) for p, m in md.partitions.items()}


def fully_replicated(kafka, topics: list[str]) -> bool:
    try:
        return all(len(isr) == NODES for t in topics for _, _, isr in replicas(kafka, t).values())
    except Exception:  # metadata while a node rejoins
        return False


def test_changelogs_get_the_clusters_replication_factor(cluster, tmp_path):
    ctl, bootstrap = cluster
    kafka = ctl.kafka(bootstrap)
    d = Processing(kafka, tmp_path, "exactly_once_v2")
    try:
        d.start()
        d.app.wait_until_running(timeout_s=60)
        parts = replicas(kafka, d.changelog)
        assert len(parts) == PARTITIONS
        assert all(len(r) == NODES and len(isr) == NODES for _, r, isr in parts.values()), parts
        res = ConfigResource(ResourceType.TOPIC, d.changelog)
        entries = kafka.admin.describe_configs([res])[res].result(timeout=30)
        assert entries["min.insync.replicas"].value == "2"
        assert entries["cleanup.policy"].value == "compact"
    finally:
        d.close()
        kafka.close_producer()


def test_node_killed_during_processing_and_restore_exactly_once(cluster, tmp_path):
    ctl, bootstrap = cluster
    kafka = ctl.kafka(bootstrap)
    guarantee = "exactly_once_v2"
    processing = Processing(kafka, tmp_path, guarantee)
    restoring = Restoring(kafka, tmp_path, guarantee)
    deployments = [processing, restoring]
    feeder = Feeder(kafka, [d.source for d in deployments], seed=21)
    prefilled = restoring.prefill()
    killed = None
    with WipeWatch() as wipes:
        try:
            processing.start()
            feeder.start()
            wait_for(processing.ready, "processing: RUNNING and committing", 60, 0.2)
            restoring.start()
            wait_for(restoring.ready, "restoring: the restore of every partition under way", 60, 0.1,
                     detail=lambda: restoring.listener.events[:10])

            # The node that coordinates the processing app's group (its offset commits and rebalances).
            group = kafka.admin.describe_consumer_groups([processing.app_id])[processing.app_id].result(timeout=30)
            killed = group.coordinator.id
            led = {t: sorted(p for p, (leader, _, _) in replicas(kafka, t).items() if leader == killed)
                   for t in (processing.source, processing.changelog, restoring.changelog)}
            log.warning("killing node %d, the group coordinator; it leads %s", killed, led)
            ctl.run("kill", str(killed))
            t_fault = time.monotonic()
            restore_state = restoring.under_way()
            restoring.listener.release()
            for d in deployments:
                d.mark_fault()

            wait_recovered(deployments, t_fault)
            ctl.run("start-node", str(killed))
            t_back = time.monotonic()
            topics = [processing.source, processing.sink, processing.changelog, restoring.source,
                      restoring.sink, restoring.changelog]
            wait_for(lambda: fully_replicated(kafka, topics), "the node to rejoin every ISR", 120, 0.5)
            rejoin_s = time.monotonic() - t_back
            time.sleep(1.0)  # the input keeps flowing with the node back
            truth = feeder.stop()
            for d in deployments:
                d.wait_all_committed()
            restoring.check_restore(prefilled)

            figures = [d.judge(truth[d.source]) for d in deployments]
            for f in figures:
                f.notes.update(killed_node=killed, isr_rejoin_s=round(rejoin_s, 1))
            figures[0].notes.update(killed_led_source=len(led[processing.source]),
                                    killed_led_changelog=len(led[processing.changelog]))
            figures[1].notes.update(restored=prefilled, remaining_at_fault=restore_state["remaining"],
                                    killed_led_changelog=len(led[restoring.changelog]))
            report([f.line("cluster-node-kill", len(wipes.messages)) for f in figures])
            for d in deployments:
                d.check_alive()
            assert not wipes.messages, f"stores wiped: {wipes.messages}"
            for f in figures:
                assert f.lost == 0, f"{f.scenario}: {f.lost} words lost updates"
                assert f.doubled == 0, f"{f.scenario}: {f.doubled} words counted twice"
        finally:
            feeder.halt()
            restoring.listener.release()
            for d in deployments:
                d.close()
            kafka.close_producer()
            if killed is not None:
                ctl.run("start-node", str(killed))  # a no-op when it runs
