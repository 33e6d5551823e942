"""The faust engine reaches every bootstrap server with the same security as the other clients."""

from __future__ import annotations

import ssl
from pathlib import Path

import faust
import pytest
from atmpnet.settings import Settings
from atmpnet.streams.app import ProcessorError, faust_broker_settings
from faust.types.auth import AuthProtocol, SASLMechanism
from pydantic import SecretStr


def _settings(tmp_path: Path, **kafka: object) -> Settings:
    return Settings(data_dir=tmp_path, kafka_bootstrap_servers="k1:9092", **kafka)  # type: ignore[arg-type]


def test_plaintext_lists_every_server(tmp_path: Path) -> None:
    out = faust_broker_settings(_settings(tmp_path), "k1:9092, k2:9093,k3:9094")
    assert out == {
        "broker": ["kafka://k1:9092", "kafka://k2:9093", "kafka://k3:9094"],
        "broker_credentials": None,
    }


def test_sasl_ssl_scram(tmp_path: Path) -> None:
    settings = _settings(
        tmp_path,
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username="processor",
        kafka_sasl_password=SecretStr("s3cret"),
    )
    out = faust_broker_settings(settings, "k1:9096,k2:9096")
    creds = out["broker_credentials"]
    assert isinstance(creds, faust.SASLCredentials)
    assert (creds.username, creds.password) == ("processor", "s3cret")
    assert creds.mechanism is SASLMechanism.SCRAM_SHA_512
    assert creds.protocol is AuthProtocol.SASL_SSL
    assert isinstance(creds.ssl_context, ssl.SSLContext)
    assert creds.ssl_context.verify_mode is ssl.CERT_REQUIRED
    assert out["broker"] == ["kafka://k1:9096", "kafka://k2:9096"]
    assert "s3cret" not in repr(creds)


def test_sasl_plaintext_has_no_tls(tmp_path: Path) -> None:
    settings = _settings(
        tmp_path,
        kafka_security_protocol="SASL_PLAINTEXT",
        kafka_sasl_mechanism="PLAIN",
        kafka_sasl_username="u",
        kafka_sasl_password=SecretStr("p"),
    )
    creds = faust_broker_settings(settings, "k1:9092")["broker_credentials"]
    assert isinstance(creds, faust.SASLCredentials)
    assert creds.protocol is AuthProtocol.SASL_PLAINTEXT
    assert creds.ssl_context is None


def test_ssl_only(tmp_path: Path) -> None:
    creds = faust_broker_settings(_settings(tmp_path, kafka_security_protocol="SSL"), "k1:9093")[
        "broker_credentials"
    ]
    assert isinstance(creds, faust.SSLCredentials)
    assert creds.protocol is AuthProtocol.SSL


def test_incomplete_or_unknown_security_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ProcessorError, match="SASL mechanism"):
        faust_broker_settings(_settings(tmp_path, kafka_security_protocol="SASL_SSL"), "k1:9092")
    with pytest.raises(ProcessorError, match="not supported"):
        faust_broker_settings(_settings(tmp_path, kafka_security_protocol="KERBEROS"), "k1:9092")
    with pytest.raises(ProcessorError, match="no bootstrap"):
        faust_broker_settings(_settings(tmp_path), " , ")
