"""Side by side with Kafka Streams 4.4: the same orders and customers through Kafka Streams' stream-table join +
group by + aggregate (tests/kstreams_joins, built with Maven on first use, ``topology.optimization=all`` so its
table keeps no changelog either) and hotstate's (app.table, select_key, join, group_by, aggregate): the final
revenue per country must be the same, and equal to the reference computed here. Customers move and are deleted
between two rounds of orders; each round is produced once both apps have the table as it should be, so the
result does not depend on how either app interleaves its inputs (docs/architecture.md, "Tables and joins").

Run alone: scripts/test tests/integration/test_joins_vs_kstreams.py (the first run builds the jar)."""
from __future__ import annotations

import random
from pathlib import Path

import pytest

import hotstate
from hotstate import serde
from hotstate.kafka.partitioner import partition_for as murmur2_partition
from kafka_helpers import REPO, wait_for
from kstreams_apps import JavaApp, maven_jar

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]  # the first Maven build may download a lot

KS_DIR = REPO / "tests" / "kstreams_joins"
JAR = KS_DIR / "target" / "kstreams-joins-check.jar"
COUNTRIES = ["fr", "de", "it", "es", "pt"]
CUSTOMER_PARTITIONS = 3


def kstreams_jar() -> Path:
    return maven_jar(KS_DIR, JAR)


class KStreamsApp(JavaApp):
    """The enrichment app (the jar's main class)."""

    def __init__(self, args: list[str], log: Path):
        super().__init__(["java", "-Xmx512m", "-jar", str(kstreams_jar()), *args], log)


def produce_murmur2(kafka, topic: str, records: list[tuple[str, str | None]], partitions: int) -> None:
    """As the Java producer's default partitioner places them (murmur2 of the key bytes)."""
    by_partition: dict[int, list] = {}
    for key, value in records:
        kb = key.encode()
        by_partition.setdefault(murmur2_partition(kb, partitions), []).append(
            (kb, None if value is None else value.encode()))
    for p, recs in by_partition.items():
        kafka.produce_to(topic, p, recs)


def committed_to_end(kafka, group: str, topic: str, partitions: int) -> bool:
    ends = kafka.ends(topic)
    got = kafka.committed(group, topic, partitions)
    return all(got.get(p, -1) >= end for p, end in ends.items())


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once_v2"])
def test_enrichment_totals_equal_kafka_streams(kafka, admin, tmp_path, guarantee):
    kstreams_jar()  # before any topic exists: a first build takes long
    customers_topic = kafka.create_topic(partitions=CUSTOMER_PARTITIONS, prefix="vs-ks-customers")
    orders_topic = kafka.create_topic(partitions=2, prefix="vs-ks-orders")
    out = {system: kafka.create_topic(partitions=CUSTOMER_PARTITIONS, prefix=f"vs-ks-{system}-revenue")
           for system in ("hs", "ks")}
    hs_id, ks_id = kafka.app_id("vs-ks-hs-enrich"), kafka.app_id("vs-ks-ks-enrich")
    rng = random.Random(21)
    customers = {f"cust-{i}": rng.choice(COUNTRIES) for i in range(80)}
    produce_murmur2(kafka, customers_topic, list(customers.items()), CUSTOMER_PARTITIONS)
    revenue: dict[str, int] = {}

    def orders(n: int, start: int) -> list[tuple[str, str]]:
        recs = []
        for i in range(start, start + n):
            cust = f"cust-{rng.randrange(90)}"  # 80..89 are unknown: the inner join drops them
            amount = rng.randrange(1, 500)
            if cust in customers:
                revenue[customers[cust]] = revenue.get(customers[cust], 0) + amount
            recs.append((f"order-{i}", f"{cust},{amount}"))
        return recs

    app = hotstate.App(app_id=hs_id, bootstrap_servers=kafka.bootstrap, state_dir=str(tmp_path / "hs"),
                       commit_interval_ms=100, processing_guarantee=guarantee)
    o = app.stream(orders_topic, key_serde=serde.STRING, value_serde=serde.STRING)
    c = app.table(customers_topic, key_serde=serde.STRING, value_serde=serde.STRING, store="customers")
    (o.select_key(lambda k, v: v.split(",")[0], key_serde=serde.STRING)
      .join(c, lambda order, country: f"{country},{order.split(',')[1]}")
      .group_by(lambda k, v: v.split(",")[0], key_serde=serde.STRING, value_serde=serde.STRING)
      .aggregate(lambda: 0, lambda k, v, total: total + int(v.split(",")[1]), store="revenue-by-country",
                 value_serde=serde.INT64)
      .to_stream().to(out["hs"], value_serde=serde.INT64))
    ks = KStreamsApp([kafka.bootstrap, ks_id, str(tmp_path / "ks"), guarantee, orders_topic, customers_topic,
                      out["ks"]], tmp_path / "kstreams.log")
    app.start()
    try:
        def tables_current() -> bool:
            ks.check_alive()
            return (committed_to_end(kafka, hs_id, customers_topic, CUSTOMER_PARTITIONS)
                    and committed_to_end(kafka, ks_id, customers_topic, CUSTOMER_PARTITIONS))

        def both_equal_reference() -> bool:
            ks.check_alive()
            return kafka.read_table(out["ks"]) == revenue and kafka.read_table(out["hs"]) == revenue

        def detail() -> object:
            return {"hotstate": kafka.read_table(out["hs"]), "kafka streams": kafka.read_table(out["ks"]),
                    "reference": revenue}

        wait_for(tables_current, "both apps to load the customers table", 120, 0.2)
        kafka.produce(orders_topic, orders(2000, 0), partitions=2)
        wait_for(both_equal_reference, "both apps' revenue per country equal to the reference", 120, 0.3, detail)
        for k in rng.sample(sorted(customers), 20):
            customers[k] = rng.choice(COUNTRIES)
        gone = rng.sample(sorted(customers), 8)
        for k in gone:
            del customers[k]
        produce_murmur2(kafka, customers_topic, list(customers.items()) + [(k, None) for k in gone],
                        CUSTOMER_PARTITIONS)
        wait_for(tables_current, "both apps to apply the customer updates", 120, 0.2)
        kafka.produce(orders_topic, orders(2000, 2000), partitions=2)
        wait_for(both_equal_reference, "both apps' revenue per country after the updates", 120, 0.3, detail)
        all_topics = set(admin.list_topics(timeout=10).topics)
        # neither keeps a changelog of the customers table: its source topic is its changelog
        assert not [t for t in all_topics if t.startswith((hs_id, ks_id)) and "customers" in t], sorted(all_topics)
        assert f"{hs_id}-revenue-by-country-changelog" in all_topics
        assert f"{ks_id}-revenue-by-country-changelog" in all_topics
        ks.stop()
    finally:
        ks.kill()
        assert app.close()
