"""snapshot_store, snapshot_store_options, snapshot_interval_ms, snapshot_retain: validation, the split of
obstore's store and client options, and credentials that never show in an error or a repr."""
from __future__ import annotations


import pytest
from obstore.store import S3Store

from hotstate.config import CLIENT_OPTIONS, S3_STORE_OPTIONS, Config, parse_snapshot_store, redact
from hotstate.errors import ConfigError

REQUIRED = dict(app_id="snap", bootstrap_servers="127.0.0.1:9092")
SECRET = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYEXAMPLEKEY"


def make(**kw):
    return Config.from_kwargs(**{**REQUIRED, **kw})


def test_defaults_are_off_every_five_minutes_keep_three():
    c = make()
    assert (c.snapshot_store, c.snapshot_store_options, c.snapshot_interval_ms, c.snapshot_retain) == (None, {}, 300_000, 3)


def test_file_and_s3_urls_parse():
    loc = parse_snapshot_store("file:///var/lib/snaps/")
    assert (loc.scheme, loc.path) == ("file", "/var/lib/snaps")
    loc = parse_snapshot_store("s3://my-bucket/some/prefix/", {"endpoint": "http://127.0.0.1:9000", "region": "eu-west-1",
                                                               "allow_http": True, "timeout": "30s"})
    assert (loc.scheme, loc.bucket, loc.path) == ("s3", "my-bucket", "some/prefix")
    assert loc.store_options == {"endpoint": "http://127.0.0.1:9000", "region": "eu-west-1"}
    assert loc.client_options == {"allow_http": "true", "timeout": "30s"}
    assert str(loc) == "s3://my-bucket/some/prefix"
    assert parse_snapshot_store("s3://bucket").path == ""


@pytest.mark.parametrize("url", ["gs://b/p", "http://h/p", "file://relative/dir", "file:///", "s3://", "s3://UPPER/x",
                                 "s3://b", "/abs/path", "", "s3://bucket/p?region=x", 42])
def test_invalid_urls_are_config_errors(url):
    with pytest.raises(ConfigError, match="snapshot_store"):
        make(snapshot_store=url)


def test_file_store_takes_no_options():
    with pytest.raises(ConfigError, match="takes no options"):
        make(snapshot_store="file:///tmp/x", snapshot_store_options={"region": "x"})


def test_options_without_a_store_are_refused():
    with pytest.raises(ConfigError, match="snapshot_store is None"):
        make(snapshot_store_options={"region": "x"})


def test_unknown_option_names_the_accepted_ones():
    with pytest.raises(ConfigError) as info:
        make(snapshot_store="s3://bucket/p", snapshot_store_options={"endpoint_url": "http://x"})
    assert "'endpoint_url'" in str(info.value) and "'endpoint'" in str(info.value) and "'allow_http'" in str(info.value)


def test_bad_option_value_is_a_config_error_from_obstore():
    with pytest.raises(ConfigError, match="boolean"):
        make(snapshot_store="s3://bucket/p", snapshot_store_options={"allow_http": "maybe"})
    with pytest.raises(ConfigError, match="integer or boolean"):
        make(snapshot_store="s3://bucket/p", snapshot_store_options={"region": ["x"]})


@pytest.mark.parametrize("name", ["snapshot_interval_ms", "snapshot_retain"])
@pytest.mark.parametrize("value", [0, -1, 1.5, True, "3"])
def test_interval_and_retain_must_be_positive_integers(name, value):
    with pytest.raises(ConfigError, match=name):
        make(**{name: value})


def test_every_listed_option_name_is_one_obstore_accepts():
    """The lists hotstate keeps (to split the flat dict and to name the accepted keys) must not drift from
    obstore's: each name is given to obstore in the argument hotstate puts it in."""
    values = {"checksum_algorithm": "sha256", "conditional_put": "etag", "copy_if_not_exists": "multipart",
              "request_payer": "true", "server_side_encryption": "AES256", "skip_signature": "true",
              "sse_bucket_key_enabled": "true", "unsigned_payload": "true", "virtual_hosted_style_request": "true",
              "disable_tagging": "true", "disable_bulk_delete": "true", "allow_http": "true",
              "allow_invalid_certificates": "true", "randomize_addresses": "true", "connect_timeout": "5s",
              "pool_idle_timeout": "5s", "read_timeout": "5s", "timeout": "5s", "pool_max_idle_per_host": "4",
              "proxy_url": "http://127.0.0.1:3128"}
    for name in sorted(S3_STORE_OPTIONS):
        S3Store("bucket", config={name: values.get(name, "x")})
    for name in sorted(CLIENT_OPTIONS):
        S3Store("bucket", client_options={name: values.get(name, "x")})
    with pytest.raises(Exception):
        S3Store("bucket", config={"not_an_option": "x"})


@pytest.mark.parametrize("key", ["secret_access_key", "aws_secret_access_key", "session_token", "access_key_id"])
def test_credentials_in_options_are_refused_without_printing_them(key):
    with pytest.raises(ConfigError) as info:
        make(snapshot_store="s3://bucket/p", snapshot_store_options={key: SECRET})
    assert SECRET not in str(info.value)
    assert "environment" in str(info.value)


def test_credentials_in_the_url_are_refused_without_printing_them():
    with pytest.raises(ConfigError) as info:
        make(snapshot_store=f"s3://AKIAEXAMPLE:{SECRET}@bucket/p")
    assert SECRET not in str(info.value)


def test_options_never_show_in_repr_nor_in_errors(caplog):
    c = make(snapshot_store="s3://bucket/p", snapshot_store_options={"endpoint": f"http://user:{SECRET}@127.0.0.1:1"})
    assert SECRET not in repr(c) and SECRET not in str(c)
    loc = parse_snapshot_store(c.snapshot_store, c.snapshot_store_options)
    assert SECRET not in repr(loc) and SECRET not in str(loc)
    with pytest.raises(ConfigError) as info:
        make(snapshot_store="s3://bucket/p", snapshot_store_options={"endpoint": f"http://user:{SECRET}@127.0.0.1:1",
                                                                    "allow_http": "maybe"})
    assert SECRET not in str(info.value)


def test_redact_hides_environment_credentials_and_url_passwords(monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    text = redact(f"failed with key {SECRET} at http://me:{SECRET}@host:1/b")
    assert SECRET not in text and "***" in text and "host:1/b" in text
