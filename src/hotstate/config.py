"""Typed, validated configuration. Names follow Kafka Streams' configs, spelled the Python way
(``commit.interval.ms`` -> ``commit_interval_ms``). Every limit carries its unit in its name."""
from __future__ import annotations

import dataclasses
import inspect
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import kafka_settings
from .errors import ConfigError

AT_LEAST_ONCE = "at_least_once"
EXACTLY_ONCE_V2 = "exactly_once_v2"
LOG_AND_FAIL = "log_and_fail"
LOG_AND_CONTINUE = "log_and_continue"

_CLIENT_DICTS = ("kafka_config", "consumer_config", "restore_consumer_config", "producer_config")
_APP_ID = re.compile(r"[A-Za-z0-9._-]{1,200}")
_TOPIC = re.compile(r"[A-Za-z0-9._-]{1,249}")


def default_state_dir() -> str:
    """A per-user directory: $XDG_STATE_HOME/hotstate, else ~/.local/state/hotstate."""
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(Path.home(), ".local", "state")
    return os.path.join(base, "hotstate")


@dataclass(frozen=True)
class Config:
    app_id: str
    bootstrap_servers: str
    state_dir: str = field(default_factory=default_state_dir)
    processing_guarantee: str = AT_LEAST_ONCE
    # Kafka Streams' defaults: 30000 under at_least_once, 100 under exactly_once_v2 (from_kwargs picks).
    commit_interval_ms: int = 30_000
    deserialization_exception_handler: str = LOG_AND_FAIL
    # User code raised while processing a record (Kafka Streams' processing.exception.handler, KIP-1033):
    # "log_and_fail", "log_and_continue", or a callable (context, record, exception) ->
    # hotstate.ProcessingHandlerResponse.CONTINUE / FAIL (see hotstate/handlers.py).
    processing_exception_handler: Any = LOG_AND_FAIL
    # Kafka Streams' errors.dead.letter.queue.topic.name (KIP-1034): records a handler gives up on (fail or
    # continue) are produced here with their original key, value and headers plus __streams.errors.* headers.
    # Created at start() if missing. None: no dead-letter records.
    dead_letter_topic: str | None = None
    # Internal topics (changelogs): -1 takes the broker's default.replication.factor.
    replication_factor: int = -1
    # How long start-up waits for the broker (metadata, topic checks) before it gives up with a clear error.
    broker_timeout_ms: int = 15_000
    # Restore: records per bulk write batch, and the most records one consume call hands the restore thread.
    restore_batch_records_max: int = 20_000
    restore_consume_records_max: int = 50_000
    # Restore: bytes of changelog records the restore consumer prefetches and holds (librdkafka's
    # queued.max.messages.kbytes; one fetch may overshoot it). At least 1 MiB.
    restore_fetch_buffer_bytes_max: int = 64 * 1024 * 1024
    # Main consumer: the most records one poll returns, and how long a poll waits.
    poll_records_max: int = 1_000
    poll_ms: int = 100
    session_timeout_ms: int = 45_000
    # Bytes of uncommitted store writes (over all tasks, keys + values) that trigger an early commit:
    # the overlay never grows past this (Kafka Streams' statestore.uncommitted.max.bytes, KIP-892).
    statestore_uncommitted_max_bytes: int = 64 * 1024 * 1024
    # Static membership (Kafka Streams' group.instance.id): a stable id per instance, e.g. the pod name. An
    # instance that restarts within session_timeout_ms gets its tasks back without a rebalance.
    group_instance_id: str | None = None
    # Local state of a task that moved away stays on disk this long (and is reused if the task comes back);
    # the cleaner runs at this interval too (Kafka Streams' state.cleanup.delay.ms).
    state_cleanup_delay_ms: int = 600_000
    # High availability (Kafka Streams' names). Standby replicas per task, kept current on other instances.
    num_standby_replicas: int = 0
    # A task may move to an instance whose local state is within this many changelog records of the end.
    acceptable_recovery_lag: int = 10_000
    # Warm-up replicas (extra standbys on the instance a task should move to) placed at once, over the group.
    max_warmup_replicas: int = 2
    # While warm-ups exist, a rebalance probes for caught-up ones at least this often (an instance whose
    # warm-ups caught up asks for one at once).
    probing_rebalance_interval_ms: int = 600_000
    # The group member: the most time between two polls of the processing loop before it is thrown out.
    max_poll_interval_ms: int = 300_000
    # Exactly-once: after an aborted transaction, how long to keep asking for the committed offsets to redo
    # the work from (the group coordinator may be moving or loading, e.g. during a broker restart).
    rewind_timeout_ms: int = 120_000
    # Exactly-once: how long the broker waits before aborting a transaction whose producer went silent; it
    # must exceed commit_interval_ms (a transaction stays open for a commit interval).
    transaction_timeout_ms: int = 10_000
    # Serve metrics for Prometheus on this port (all interfaces) while the app runs; None: no endpoint.
    metrics_port: int | None = None
    # librdkafka settings for every client hotstate creates (consumers, producer, admin, the `hotstate` command),
    # e.g. a secured cluster's security.protocol, sasl.*, ssl.*; translated for the group member (kafka-python).
    # The per-client dicts below override it. Refused: settings hotstate owns (kafka_settings.REFUSED). Secret
    # values are masked in repr. See README "Connecting to a secured cluster".
    kafka_config: dict[str, Any] = field(default_factory=dict)
    # Extra librdkafka settings, like Kafka Streams' main.consumer. / restore.consumer. / producer. prefixes.
    consumer_config: dict[str, Any] = field(default_factory=dict)
    restore_consumer_config: dict[str, Any] = field(default_factory=dict)
    producer_config: dict[str, Any] = field(default_factory=dict)
    # Store snapshots in object storage (issue #9): None (off), "file:///absolute/dir" (a directory, e.g. a
    # shared volume) or "s3://bucket/prefix". Credentials come from the environment (AWS_* variables), never
    # from here; see docs/formats.md for what is written where.
    snapshot_store: str | None = None
    # The object-store client's own option names, flat (for S3: endpoint, region, allow_http, timeout, ...);
    # hotstate splits the HTTP client's options from the store's. Never shown in repr (an endpoint may
    # carry a password).
    snapshot_store_options: dict[str, Any] = field(default_factory=dict, repr=False)
    # How often each active task's stores are snapshotted, and how many manifests are kept per store partition.
    snapshot_interval_ms: int = 300_000
    snapshot_retain: int = 3
    # Windowed stores' changelogs keep records this long past the store's retention (their retention.ms is the
    # sum), so clock drift between hotstate and the broker does not delete records still live (Kafka Streams'
    # windowstore.changelog.additional.retention.ms).
    windowstore_changelog_additional_retention_ms: int = 86_400_000
    # Repartition topics: records below the committed offsets are deleted (AdminClient.delete_records) at most
    # this often (Kafka Streams' repartition.purge.interval.ms).
    repartition_purge_interval_ms: int = 30_000

    def __post_init__(self) -> None:
        if not isinstance(self.app_id, str) or not _APP_ID.fullmatch(self.app_id) or self.app_id.startswith("."):
            raise ConfigError(
                f"app_id={self.app_id!r} is invalid: use 1-200 characters of letters, digits, '.', '_' or '-', "
                "not starting with '.' "
                "(it names the consumer group, the changelog topics and the state directory)"
            )
        if not isinstance(self.bootstrap_servers, str) or not self.bootstrap_servers.strip():
            raise ConfigError("bootstrap_servers is empty: give host:port of at least one broker, e.g. '127.0.0.1:9092'")
        if self.processing_guarantee not in (AT_LEAST_ONCE, EXACTLY_ONCE_V2):
            raise ConfigError(
                f"processing_guarantee={self.processing_guarantee!r} is invalid: use 'at_least_once' or 'exactly_once_v2'"
            )
        if self.deserialization_exception_handler not in (LOG_AND_FAIL, LOG_AND_CONTINUE):
            raise ConfigError(
                f"deserialization_exception_handler={self.deserialization_exception_handler!r} is invalid: "
                "use 'log_and_fail' or 'log_and_continue'"
            )
        self._check_processing_handler()
        if self.dead_letter_topic is not None and (
                not isinstance(self.dead_letter_topic, str) or not _TOPIC.fullmatch(self.dead_letter_topic)
                or self.dead_letter_topic in (".", "..")):
            raise ConfigError(f"dead_letter_topic={self.dead_letter_topic!r} is invalid: give a topic name (1-249 "
                              "letters, digits, '.', '_' or '-') or None for no dead-letter records")
        for name in ("commit_interval_ms", "broker_timeout_ms", "restore_batch_records_max",
                     "restore_consume_records_max", "restore_fetch_buffer_bytes_max", "poll_records_max", "poll_ms", "session_timeout_ms",
                     "statestore_uncommitted_max_bytes", "transaction_timeout_ms", "rewind_timeout_ms", "state_cleanup_delay_ms",
                     "max_warmup_replicas", "probing_rebalance_interval_ms", "max_poll_interval_ms",
                     "snapshot_interval_ms", "snapshot_retain", "repartition_purge_interval_ms"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"{name}={value!r} is invalid: it must be a positive integer")
        for name in ("num_standby_replicas", "acceptable_recovery_lag",
                     "windowstore_changelog_additional_retention_ms"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ConfigError(f"{name}={value!r} is invalid: it must be an integer >= 0")
        if self.metrics_port is not None and (not isinstance(self.metrics_port, int) or isinstance(self.metrics_port, bool)
                                              or not 0 <= self.metrics_port <= 65535):
            raise ConfigError(f"metrics_port={self.metrics_port!r} is invalid: give a TCP port (0-65535) or None")
        if not isinstance(self.replication_factor, int) or isinstance(self.replication_factor, bool) or (self.replication_factor < 1 and self.replication_factor != -1):
            raise ConfigError(f"replication_factor={self.replication_factor!r} is invalid: use -1 (broker default) or >= 1")
        if self.group_instance_id is not None and (not isinstance(self.group_instance_id, str)
                                                   or not _APP_ID.fullmatch(self.group_instance_id)):
            raise ConfigError(f"group_instance_id={self.group_instance_id!r} is invalid: use 1-200 letters, digits, "
                              "'.', '_' or '-', one value per instance that stays the same across its restarts")
        if self.processing_guarantee == EXACTLY_ONCE_V2 and self.commit_interval_ms >= self.transaction_timeout_ms:
            raise ConfigError(
                f"commit_interval_ms={self.commit_interval_ms} is invalid under exactly_once_v2 with "
                f"transaction_timeout_ms={self.transaction_timeout_ms}: a transaction stays open for a commit interval "
                "and the broker aborts one older than transaction_timeout_ms; lower commit_interval_ms or raise "
                "transaction_timeout_ms")
        if not isinstance(self.state_dir, (str, os.PathLike)) or not str(self.state_dir):
            raise ConfigError(f"state_dir={self.state_dir!r} is invalid: give a directory path")
        check_snapshot_store(self.snapshot_store, self.snapshot_store_options)
        kafka_settings.check(self.kafka_config)
        for name in ("consumer_config", "restore_consumer_config", "producer_config"):
            if not isinstance(getattr(self, name), dict):
                raise ConfigError(f"{name} must be a dict of librdkafka settings")

    def __repr__(self) -> str:
        """Every setting, with secret values of the librdkafka dicts masked; snapshot_store_options left out."""
        parts = []
        for f in dataclasses.fields(self):
            if not f.repr:
                continue
            value = getattr(self, f.name)
            if f.name in _CLIENT_DICTS:
                value = kafka_settings.masked(value)
            parts.append(f"{f.name}={value!r}")
        return f"Config({', '.join(parts)})"

    def _check_processing_handler(self) -> None:
        handler = self.processing_exception_handler
        if isinstance(handler, str) and handler in (LOG_AND_FAIL, LOG_AND_CONTINUE):
            return
        if isinstance(handler, str) or not callable(handler):
            raise ConfigError(
                f"processing_exception_handler={handler!r} is invalid: use 'log_and_fail', 'log_and_continue' or "
                "a callable (context, record, exception) returning hotstate.ProcessingHandlerResponse.CONTINUE or FAIL")
        try:
            signature = inspect.signature(handler)
        except (TypeError, ValueError):
            return  # no signature to check (some builtins)
        try:
            signature.bind(None, None, None)
        except TypeError:
            raise ConfigError(
                f"processing_exception_handler={handler!r} is invalid: it is called with three arguments "
                f"(context, record, exception) but its signature is {signature}") from None

    @classmethod
    def from_kwargs(cls, **kwargs: Any) -> "Config":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(kwargs) - known)
        if unknown:
            raise ConfigError(f"unknown config {unknown}; known configs: {sorted(known)}")
        missing = [n for n in ("app_id", "bootstrap_servers") if n not in kwargs]
        if missing:
            raise ConfigError(f"missing required config {missing}")
        if "commit_interval_ms" not in kwargs and kwargs.get("processing_guarantee") == EXACTLY_ONCE_V2:
            kwargs["commit_interval_ms"] = 100
        if "state_dir" in kwargs:
            if not isinstance(kwargs["state_dir"], (str, os.PathLike)):
                raise ConfigError(f"state_dir={kwargs['state_dir']!r} is invalid: give a directory path")
            kwargs["state_dir"] = os.fspath(kwargs["state_dir"])
        return cls(**kwargs)

    @property
    def exactly_once(self) -> bool:
        return self.processing_guarantee == EXACTLY_ONCE_V2

    @property
    def group_id(self) -> str:
        return self.app_id

    def changelog_topic(self, store_name: str) -> str:
        return f"{self.app_id}-{store_name}-changelog"


# --- snapshot_store ----------------------------------------------------------------------------------------
# obstore's S3 store options (its S3Config) and HTTP client options (its ClientConfig), by their canonical
# names. obstore takes them as two arguments; hotstate takes one flat dict and splits it. Credentials are
# left out on purpose: they come from the environment. tests/unit/test_snapshot_config.py checks that
# obstore accepts every name listed here.
S3_STORE_OPTIONS = frozenset({
    "checksum_algorithm", "conditional_put", "copy_if_not_exists", "default_region", "disable_tagging",
    "endpoint", "metadata_endpoint", "region", "request_payer", "role_arn", "role_session_name",
    "server_side_encryption", "skip_signature", "sse_bucket_key_enabled", "sse_kms_key_id",
    "unsigned_payload", "virtual_hosted_style_request", "web_identity_token_file",
    "container_credentials_relative_uri", "container_credentials_full_uri",
    "container_authorization_token_file", "disable_bulk_delete",
})
CLIENT_OPTIONS = frozenset({
    "allow_http", "allow_invalid_certificates", "connect_timeout", "default_content_type", "pool_idle_timeout",
    "pool_max_idle_per_host", "proxy_url", "proxy_ca_certificate", "proxy_excludes", "randomize_addresses",
    "read_timeout", "timeout", "user_agent",
})
# Option names (and obstore's aliases) that carry credentials: refused, with a pointer to the environment.
_CREDENTIAL_OPTIONS = frozenset({
    "access_key_id", "secret_access_key", "session_token", "token", "aws_access_key_id",
    "aws_secret_access_key", "aws_session_token", "aws_token", "bucket",
})
_S3_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_USERINFO = re.compile(r"(?<=://)[^/@\s]*@")
# Environment variables whose values must never be printed (errors, logs, reprs).
SECRET_ENV = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ACCESS_KEY_ID", "AWS_CONTAINER_AUTHORIZATION_TOKEN")


def redact(text: str) -> str:
    """``text`` without the values of the AWS credential variables and without the user:password part of
    any URL in it: every message hotstate builds from an object-store error goes through this."""
    text = _USERINFO.sub("***@", text)
    for name in SECRET_ENV:
        value = os.environ.get(name)
        if value and len(value) >= 4:
            text = text.replace(value, "***")
    return text


@dataclass(frozen=True)
class SnapshotStoreLocation:
    """A parsed ``snapshot_store``: ``scheme`` "file" (``path`` is the directory) or "s3" (``bucket``,
    ``path`` the key prefix without slashes at either end, maybe empty); ``store_options`` and
    ``client_options`` are ``snapshot_store_options`` split the way obstore takes them, values as strings."""

    scheme: str
    bucket: str
    path: str
    store_options: dict[str, str] = field(repr=False)
    client_options: dict[str, str] = field(repr=False)

    def __str__(self) -> str:
        return f"file://{self.path}" if self.scheme == "file" else f"s3://{self.bucket}/{self.path}".rstrip("/")


def _bad_store(url: object, why: str) -> ConfigError:
    shown = redact(url) if isinstance(url, str) else type(url).__name__
    return ConfigError(f"snapshot_store={shown!r} is invalid: {why}")


def parse_snapshot_store(url: str, options: dict[str, Any] | None = None) -> SnapshotStoreLocation:
    """Checks ``snapshot_store`` and its options (names only; obstore checks the values when the store is
    opened). ConfigError names what is wrong and never prints a credential."""
    if not isinstance(url, str):
        raise _bad_store(url, "give None, 'file:///absolute/dir' or 's3://bucket/prefix'")
    if options is None:
        options = {}
    if not isinstance(options, dict):
        raise ConfigError(f"snapshot_store_options is invalid: give a flat dict of option names to values, not "
                          f"a {type(options).__name__}")
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in ("file", "s3"):
        raise _bad_store(url, "use None (no snapshots), 'file:///absolute/dir' or 's3://bucket/prefix'")
    if "?" in rest or "#" in rest:
        raise _bad_store(url, "it has a query or fragment; give options in snapshot_store_options")
    if scheme == "file":
        if not rest.startswith("/") or rest.rstrip("/") == "":
            raise _bad_store(url, "a file:// store needs an absolute directory other than /, as in "
                                  "'file:///var/lib/snapshots' (three slashes)")
        if options:
            raise ConfigError(f"snapshot_store_options {sorted(map(str, options))} are invalid for a file:// "
                              "store: it takes no options")
        return SnapshotStoreLocation("file", "", os.path.normpath(rest), {}, {})
    host, _, prefix = rest.partition("/")
    if "@" in host:
        raise _bad_store(url, "it carries credentials; they come from the environment (AWS_ACCESS_KEY_ID, "
                              "AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN)")
    if not _S3_BUCKET.fullmatch(host):
        raise _bad_store(url, "give an S3 bucket name (3-63 lower-case letters, digits, '.' or '-') as in "
                              "'s3://bucket/prefix'")
    store, client = _split_options(options)
    return SnapshotStoreLocation("s3", host, prefix.strip("/"), store, client)


def _split_options(options: dict[str, Any]) -> tuple[dict[str, str], dict[str, str]]:
    store: dict[str, str] = {}
    client: dict[str, str] = {}
    for key, value in options.items():
        if not isinstance(key, str):
            raise ConfigError(f"snapshot_store_options has a key of type {type(key).__name__}: use option names")
        name = key.lower()
        if name in _CREDENTIAL_OPTIONS:
            raise ConfigError(
                f"snapshot_store_options[{key!r}] is refused: "
                + ("the bucket is part of snapshot_store" if name == "bucket" else
                   "credentials come from the environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, "
                   "AWS_SESSION_TOKEN, or a role: AWS_ROLE_ARN / AWS_WEB_IDENTITY_TOKEN_FILE), never from "
                   "the configuration"))
        if name not in S3_STORE_OPTIONS and name not in CLIENT_OPTIONS:
            raise ConfigError(f"snapshot_store_options[{key!r}] is unknown for an s3:// store; accepted: "
                              f"{sorted(S3_STORE_OPTIONS | CLIENT_OPTIONS)}")
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, (str, int)):
            text = str(value)
        else:
            raise ConfigError(f"snapshot_store_options[{key!r}] is invalid: give a string, integer or boolean, "
                              f"not a {type(value).__name__}")
        (client if name in CLIENT_OPTIONS else store)[name] = text
    return store, client


def check_snapshot_store(url: str | None, options: dict[str, Any]) -> None:
    if url is None:
        if options:
            raise ConfigError("snapshot_store_options is set but snapshot_store is None: set snapshot_store "
                              "too, or drop the options")
        return
    location = parse_snapshot_store(url, options)
    if location.scheme == "s3":
        _check_values_with_obstore(location)


def _check_values_with_obstore(location: SnapshotStoreLocation) -> None:
    """obstore parses values when a store is built (offline: no request is sent); its complaint becomes a
    ConfigError, redacted."""
    from obstore.store import S3Store

    try:
        S3Store(location.bucket, config=location.store_options, client_options=location.client_options)
    except Exception as exc:  # obstore raises its GenericError, ValueError or TypeError
        first = redact(str(exc).split("\n", 1)[0])
        raise ConfigError(f"snapshot_store_options are invalid for {location}: {first}") from None
