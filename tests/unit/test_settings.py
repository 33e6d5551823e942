"""Typed settings: environment names, validation, secrets kept secret."""

from __future__ import annotations

from pathlib import Path

import pytest
from atmpnet.errors import ConfigurationError
from atmpnet.settings import Settings, get_settings


def test_defaults_choose_the_embedded_stack(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("ATMPNET_KAFKA_BOOTSTRAP_SERVERS", "ATMPNET_CLICKHOUSE_URL"):
        monkeypatch.delenv(name, raising=False)
    s = Settings()
    assert s.embedded_kafka and s.embedded_clickhouse
    assert (s.schema_dir / "catalog.json").is_file()


def test_environment_selects_external_services(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ATMPNET_KAFKA_BOOTSTRAP_SERVERS", "kafka-1:9092,kafka-2:9092")
    monkeypatch.setenv("ATMPNET_CLICKHOUSE_URL", "https://ch.example:8443")
    monkeypatch.setenv("ATMPNET_CLICKHOUSE_PASSWORD", "s3cret-value")
    monkeypatch.setenv("ATMPNET_DATA_DIR", str(tmp_path))
    s = Settings()
    assert not s.embedded_kafka and not s.embedded_clickhouse
    assert s.kafka_bootstrap_servers == "kafka-1:9092,kafka-2:9092"
    assert s.data_dir == tmp_path
    assert "s3cret-value" not in repr(s) and "s3cret-value" not in str(s.model_dump())
    assert s.clickhouse_password is not None and s.clickhouse_password.get_secret_value() == "s3cret-value"


def test_invalid_settings_raise_a_configuration_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ATMPNET_CLICKHOUSE_URL", "chdb:///tmp/x")
    get_settings.cache_clear()
    try:
        with pytest.raises(ConfigurationError, match="http:// or https://"):
            get_settings()
    finally:
        get_settings.cache_clear()


def test_session_timeout_floor_protects_against_slow_joins() -> None:
    with pytest.raises(ValueError, match="greater than or equal to 6000"):
        Settings(kafka_session_timeout_ms=1000)
