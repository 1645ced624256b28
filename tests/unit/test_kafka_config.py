"""kafka_config: refused settings, the translation for the kafka-python group member, secrets masked, and every
client factory getting the settings (per-client dicts winning). No broker needed."""
from __future__ import annotations

import json
import logging

import pytest
from kafka import KafkaConsumer

import hotstate
from hotstate import kafka_settings
from hotstate.cli import load_command_config, main, parse_properties
from hotstate.config import Config
from hotstate.errors import ConfigError
from hotstate.kafka import admin as admin_module
from hotstate.kafka import clients
from hotstate.runtime import membership

SASL = {
    "security.protocol": "SASL_SSL",
    "sasl.mechanisms": "SCRAM-SHA-512",
    "sasl.username": "alice",
    "sasl.password": "pa55-word-1",
    "ssl.ca.location": "/etc/ca.pem",
}


def config(**kw):
    return Config(app_id="app", bootstrap_servers="127.0.0.1:1", **kw)


@pytest.mark.parametrize("key", ["enable.auto.commit", "isolation.level", "group.id", "transactional.id",
                                 "enable.idempotence"])
def test_settings_hotstate_owns_are_refused_with_the_reason(key):
    with pytest.raises(ConfigError) as err:
        config(kafka_config={key: "x"})
    assert key in str(err.value) and kafka_settings.REFUSED[key] in str(err.value)


def test_bootstrap_servers_inside_kafka_config_points_to_bootstrap_servers():
    with pytest.raises(ConfigError, match=r"bootstrap_servers="):
        config(kafka_config={"bootstrap.servers": "127.0.0.1:9093", **SASL})


def test_kafka_config_must_be_a_dict_of_names():
    with pytest.raises(ConfigError, match="dict"):
        config(kafka_config=[("security.protocol", "SSL")])
    with pytest.raises(ConfigError, match="keys"):
        config(kafka_config={1: "x"})


def test_the_group_member_gets_the_security_settings_in_kafka_pythons_names():
    got = kafka_settings.to_kafka_python({
        **SASL, "ssl.certificate.location": "/c.pem", "ssl.key.location": "/k.pem", "ssl.key.password": "kp",
        "ssl.endpoint.identification.algorithm": "none", "ssl.crl.location": "/crl.pem",
        "socket.keepalive.enable": True,  # librdkafka tuning: not the member's
    })
    assert got == {
        "security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512", "sasl_plain_username": "alice",
        "sasl_plain_password": "pa55-word-1", "ssl_cafile": "/etc/ca.pem", "ssl_certfile": "/c.pem",
        "ssl_keyfile": "/k.pem", "ssl_password": "kp", "ssl_check_hostname": False, "ssl_crlfile": "/crl.pem",
    }
    assert kafka_settings.to_kafka_python({"ssl.endpoint.identification.algorithm": "https"}) == {
        "ssl_check_hostname": True}
    # kafka-python knows every name the translation can produce.
    every = kafka_settings.to_kafka_python({k: "PLAIN" if "mechanism" in k else "SSL" if "protocol" in k
                                            else "https" if "identification" in k else "v"
                                            for k in kafka_settings._TO_KAFKA_PYTHON})
    assert set(every) <= set(KafkaConsumer.DEFAULT_CONFIG)


@pytest.mark.parametrize("settings", [
    {"ssl.key.pem": "-----BEGIN PRIVATE KEY-----"},
    {"sasl.oauthbearer.method": "oidc"},
    {"sasl.mechanisms": "OAUTHBEARER"},
    {"ssl.keystore.location": "/ks.p12"},
])
def test_a_security_setting_the_member_cannot_carry_is_refused(settings):
    with pytest.raises(ConfigError, match="group member"):
        config(kafka_config=settings)


def test_a_bad_security_protocol_is_refused():
    with pytest.raises(ConfigError, match="security.protocol"):
        config(kafka_config={"security.protocol": "SASL_TLS"})


def test_the_member_is_built_with_the_translated_settings(monkeypatch):
    seen = {}
    monkeypatch.setattr(membership, "KafkaConsumer", lambda **kw: seen.update(kw))
    membership._kafka_member(config(kafka_config=SASL), plugin=object())
    assert seen["security_protocol"] == "SASL_SSL" and seen["sasl_plain_password"] == "pa55-word-1"
    assert seen["bootstrap_servers"] == ["127.0.0.1:1"] and seen["ssl_cafile"] == "/etc/ca.pem"


SECRETS = {"sasl.password": "s-1", "ssl.key.password": "s-2", "sasl.oauthbearer.client.secret": "s-3",
           "ssl.keystore.password": "s-4"}


def test_secrets_are_masked_in_the_reprs_of_config_and_app():
    cfg = config(kafka_config={"security.protocol": "SASL_SSL"}, consumer_config={"sasl.password": "s-1"},
                 producer_config={"ssl.key.password": "s-2"},
                 restore_consumer_config={"sasl.oauthbearer.client.secret": "s-3", "ssl.keystore.password": "s-4"})
    text = repr(cfg)
    assert "SASL_SSL" in text and kafka_settings.MASK in text
    assert not [s for s in SECRETS.values() if s in text]
    app = hotstate.App(app_id="app", bootstrap_servers="127.0.0.1:1", kafka_config={"sasl.password": "s-1"})
    assert "s-1" not in repr(app) and "s-1" not in repr(app.config)
    assert kafka_settings.masked(SECRETS) == {k: kafka_settings.MASK for k in SECRETS}
    assert kafka_settings.masked({"sasl.username": "alice"}) == {"sasl.username": "alice"}


def test_librdkafka_debug_lines_never_carry_the_password():
    records = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(record.getMessage())

    log = logging.getLogger("test.librdkafka.secrets")
    log.setLevel(logging.DEBUG)
    log.addHandler(Keep())
    settings = {k: v for k, v in SASL.items() if k != "ssl.ca.location"}  # no such file here
    p = clients.Producer({"bootstrap.servers": "127.0.0.1:1", **settings, "debug": "conf,security,broker,generic",
                          "logger": log})
    p.poll(0.5)
    p.flush(0)
    # librdkafka dumps its configuration at start with debug=conf: the password's line is there, redacted.
    assert any("sasl.password" in r for r in records), records[:5]
    assert not [r for r in records if SASL["sasl.password"] in r]


def capture_clients(monkeypatch):
    made = []
    monkeypatch.setattr(clients, "Consumer", lambda conf: made.append(("consumer", conf)))
    monkeypatch.setattr(clients, "Producer", lambda conf: made.append(("producer", conf)))
    return made


def test_every_client_gets_kafka_config_and_the_per_client_dicts_win(monkeypatch):
    made = capture_clients(monkeypatch)
    cfg = config(kafka_config={**SASL, "reconnect.backoff.max.ms": 2000},
                 consumer_config={"sasl.username": "main"}, restore_consumer_config={"sasl.username": "restore"},
                 producer_config={"sasl.username": "producer"}, processing_guarantee="exactly_once_v2",
                 commit_interval_ms=100)
    clients.main_consumer(cfg)
    for factory in (clients.restore_consumer, clients.group_offsets_consumer, clients.global_consumer,
                    clients.tail_consumer, clients.end_offsets_consumer):
        factory(cfg)
    clients.producer(cfg, transactional_id="app-1")
    assert len(made) == 7
    for _, conf in made:
        assert conf["security.protocol"] == "SASL_SSL" and conf["sasl.password"] == "pa55-word-1"
        assert conf["reconnect.backoff.max.ms"] == 2000  # kafka_config over hotstate's defaults
    assert [conf["sasl.username"] for _, conf in made] == ["main"] + ["restore"] * 5 + ["producer"]
    assert made[-1][1]["transactional.id"] == "app-1" and made[-1][1]["enable.idempotence"] is True
    assert clients.admin_settings(cfg)["sasl.password"] == "pa55-word-1"


def test_the_admin_gets_kafka_config(monkeypatch):
    seen = {}
    monkeypatch.setattr(admin_module, "AdminClient", lambda conf: seen.update(conf))
    admin_module.Admin(config(kafka_config=SASL))
    assert {k: seen[k] for k in SASL} == SASL and callable(seen["error_cb"])


# --- hotstate --command-config ---------------------------------------------------------------------------

def test_properties_files_are_read_as_kafkas_tools_read_them():
    text = ("# a comment\n! another\nsecurity.protocol=SASL_SSL\nsasl.mechanisms : SCRAM-SHA-512\n"
            "sasl.username alice\nsasl.password=a\\=b\\\n    c\nssl.ca.location=/etc/ca.pem\n\n")
    assert parse_properties(text) == {"security.protocol": "SASL_SSL", "sasl.mechanisms": "SCRAM-SHA-512",
                                      "sasl.username": "alice", "sasl.password": "a=bc",
                                      "ssl.ca.location": "/etc/ca.pem"}


def test_command_config_takes_json_or_properties(tmp_path):
    j = tmp_path / "client.json"
    j.write_text(json.dumps(SASL))
    p = tmp_path / "client.properties"
    p.write_text("".join(f"{k}={v}\n" for k, v in SASL.items()))
    assert load_command_config(str(j)) == SASL == load_command_config(str(p))
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_command_config(str(bad))


def test_the_command_refuses_what_kafka_config_refuses(tmp_path, capsys):
    (tmp_path / "app").mkdir()
    f = tmp_path / "c.properties"
    f.write_text("bootstrap.servers=127.0.0.1:1\nenable.auto.commit=true\nsasl.password=pa55-word-1\n")
    assert main(["state", "--app-id", "app", "--state-dir", str(tmp_path), "--command-config", str(f)]) == 1
    err = capsys.readouterr().err
    assert "enable.auto.commit" in err and "pa55-word-1" not in err


def test_the_command_passes_the_settings_to_its_consumer(tmp_path, monkeypatch, capsys):
    import confluent_kafka

    seen = {}

    class FakeConsumer:
        def __init__(self, conf):
            seen.update(conf)

        def get_watermark_offsets(self, tp, timeout, cached):
            return 0, 10

        def close(self):
            pass

    monkeypatch.setattr(confluent_kafka, "Consumer", FakeConsumer)
    from hotstate.state.rocksdb_store import RocksDBBackend
    b = RocksDBBackend("counts", str(tmp_path / "app" / "0_0" / "counts"))
    b.write([(b"k", b"v")], 4)
    b.close()
    f = tmp_path / "c.json"
    f.write_text(json.dumps({"bootstrap.servers": "127.0.0.1:9", **SASL}))
    assert main(["state", "--app-id", "app", "--state-dir", str(tmp_path), "--command-config", str(f)]) == 0
    assert seen["bootstrap.servers"] == "127.0.0.1:9" and seen["sasl.password"] == "pa55-word-1"
    row = capsys.readouterr().out.splitlines()[1].split()
    assert row[2:5] == ["4", "10", "6"]
