"""``kafka_config``: librdkafka settings for every client hotstate creates (security, mostly), checked once.

Three things live here, without importing a Kafka client (config.py uses them while it validates):
- which settings are refused, and why (they would break hotstate's guarantees, or have their own config);
- the translation of the same settings to kafka-python's names for the group member
  (runtime/membership.py), which refuses a security setting it cannot carry;
- masking of secrets, for ``repr(config)`` and anything else that shows settings.
"""
from __future__ import annotations

import re
from typing import Any, Mapping

from .errors import ConfigError

# Settings hotstate sets itself on the clients that need them; a value from kafka_config would break a
# guarantee or the clients' roles. Each says why.
REFUSED: dict[str, str] = {
    "enable.auto.commit": "hotstate commits offsets itself, after the stores and the changelog (auto-commit "
                          "would commit records not yet processed: records lost on a crash)",
    "isolation.level": "hotstate picks it per client (read_committed where exactly-once and restores need it, "
                       "read_uncommitted for end offsets)",
    "group.id": "the group id is app_id (the changelog topics and the state directory are named after it)",
    "transactional.id": "hotstate derives the transactional id from app_id and the instance under "
                        "processing_guarantee='exactly_once_v2' (a shared id would fence instances)",
    "enable.idempotence": "hotstate's producer is always idempotent (and transactional under exactly-once); "
                          "turning it off allows duplicates and reordering on retries",
    "bootstrap.servers": "give the brokers with bootstrap_servers=... (e.g. bootstrap_servers="
                         "cfg.pop('bootstrap.servers'), kafka_config=cfg)",
}

# Secrets: keys whose values are never shown (repr, logs, errors, metrics).
_SECRET = re.compile(r"password|secret|token|credential|\.key\.pem$|^sasl\.oauthbearer\.config$|jaas")
MASK = "********"

# librdkafka name -> kafka-python name, for the group member.
_TO_KAFKA_PYTHON = {
    "security.protocol": "security_protocol",
    "sasl.mechanisms": "sasl_mechanism",
    "sasl.mechanism": "sasl_mechanism",
    "sasl.username": "sasl_plain_username",
    "sasl.password": "sasl_plain_password",
    "sasl.kerberos.service.name": "sasl_kerberos_service_name",
    "ssl.ca.location": "ssl_cafile",
    "ssl.certificate.location": "ssl_certfile",
    "ssl.key.location": "ssl_keyfile",
    "ssl.key.password": "ssl_password",
    "ssl.crl.location": "ssl_crlfile",
    "ssl.cipher.suites": "ssl_ciphers",
    "ssl.endpoint.identification.algorithm": "ssl_check_hostname",
}
_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
# kafka-python's SASL mechanisms that need no Python object (OAUTHBEARER needs a token provider).
_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "GSSAPI")
# Settings that concern the connection's security: the member must carry each, or refuse the config (a member
# that connected without them would fail, or connect less securely than the data clients).
_SECURITY_PREFIXES = ("security.", "sasl.", "ssl.", "ssl_")


def is_secret(key: str) -> bool:
    return bool(_SECRET.search(key.lower()))


def masked(settings: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``settings`` with secret values replaced by ``MASK``: for display only."""
    return {k: (MASK if isinstance(k, str) and is_secret(k) else v) for k, v in settings.items()}


def check(settings: Any, name: str = "kafka_config") -> None:
    """Raises ConfigError for a ``kafka_config`` that is not a dict of librdkafka settings, refuses a setting
    of ``REFUSED``, or holds a security setting the group member cannot carry."""
    if not isinstance(settings, dict):
        raise ConfigError(f"{name} must be a dict of librdkafka settings (e.g. {{'security.protocol': 'SASL_SSL'}}), "
                          f"not {type(settings).__name__}")
    for key in settings:
        if not isinstance(key, str) or not key:
            raise ConfigError(f"{name} has the key {key!r}: keys are librdkafka setting names (strings)")
        if key in REFUSED:
            raise ConfigError(f"{name} may not set {key!r}: {REFUSED[key]}")
    to_kafka_python(settings)


def to_kafka_python(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The group member's (kafka-python's) settings for ``settings`` (librdkafka names). Security settings it
    cannot carry raise ConfigError; other settings (librdkafka tuning, e.g. ``socket.keepalive.enable``) apply to
    the librdkafka clients only."""
    out: dict[str, Any] = {}
    for key, value in settings.items():
        target = _TO_KAFKA_PYTHON.get(key)
        if target is None:
            if key.startswith(_SECURITY_PREFIXES):
                raise ConfigError(
                    f"kafka_config[{key!r}] cannot be carried by the group member (kafka-python), which must connect "
                    f"as the other clients do; it carries {sorted(_TO_KAFKA_PYTHON)}. Use files instead of inline "
                    "PEM (ssl.ca.location, ssl.certificate.location, ssl.key.location), or ask for support of this "
                    "setting")
            continue
        if target == "security_protocol":
            value = str(value).upper()
            if value not in _PROTOCOLS:
                raise ConfigError(f"kafka_config['security.protocol']={value!r} is invalid: use one of {list(_PROTOCOLS)}")
        elif target == "sasl_mechanism":
            value = str(value).upper()
            if value not in _MECHANISMS:
                raise ConfigError(
                    f"kafka_config[{key!r}]={value!r} cannot be carried by the group member (kafka-python): it "
                    f"supports {list(_MECHANISMS)} here (OAUTHBEARER would need a token provider object)")
        elif target == "ssl_check_hostname":
            text = str(value).lower()
            if text not in ("https", "none", ""):
                raise ConfigError(f"kafka_config[{key!r}]={value!r} is invalid: use 'https' or 'none'")
            value = text == "https"
        out[target] = value
    return out
