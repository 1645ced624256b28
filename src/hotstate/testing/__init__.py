"""Helpers for testing hotstate apps in users' own tests (Kafka Streams' test-utils).

``TopologyTestDriver(app)`` runs an app's topology without a broker: pipe records in, read the output topics
and the stores, move the wall clock for punctuations.
"""
from .driver import TopologyTestDriver

__all__ = ["TopologyTestDriver"]
