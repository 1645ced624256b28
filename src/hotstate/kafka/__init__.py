"""Kafka clients (confluent-kafka) and topic administration."""
