"""Shared fixtures.

Kafka and ClickHouse for integration tests come from, in order: services named by
ATMPNET_TEST_KAFKA_BOOTSTRAP / ATMPNET_TEST_CLICKHOUSE_URL; testcontainers when a Docker
engine answers; else the embedded broker and chDB. One broker per test session; a unique
topic set and database per test.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from atmpnet.contract.catalog import SchemaCatalog
from atmpnet.contract.codec import AvroCodec
from atmpnet.contract.events import EVENT_TYPES, Event
from atmpnet.settings import REPO_ROOT, Settings
from atmpnet.transport import ensure_topics
from clickhouse_connect.driver.client import Client
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

SCHEMA_DIR = REPO_ROOT / "schemas"


class TestEnvironment(BaseSettings):
    """External services for the tests, when a developer or CI provides them."""

    model_config = SettingsConfigDict(env_prefix="ATMPNET_TEST_")

    kafka_bootstrap: str | None = None
    clickhouse_url: str | None = None
    use_testcontainers: bool = True


def docker_engine_answers() -> bool:
    """True when a Docker engine is reachable (the docker CLI alone is not enough)."""
    try:
        import docker

        client = docker.from_env(timeout=2)
        client.ping()
        return True
    except Exception:
        return False


_METRICS = InMemoryMetricReader()


@pytest.fixture(scope="session", autouse=True)
def _telemetry() -> None:
    """OpenTelemetry is process-global: configure it once, first, with a metric reader tests can read."""
    from atmpnet import telemetry

    telemetry.configure("atmpnet-tests", metric_readers=[_METRICS])


@pytest.fixture(scope="session")
def metric_reader() -> InMemoryMetricReader:
    """The session's metric reader (every atmpnet instrument reports to it)."""
    return _METRICS


@pytest.fixture(scope="session")
def test_env() -> TestEnvironment:
    return TestEnvironment()


@pytest.fixture(scope="session")
def catalog() -> SchemaCatalog:
    return SchemaCatalog.load(SCHEMA_DIR)


@pytest.fixture(scope="session")
def codec(catalog: SchemaCatalog) -> AvroCodec:
    return AvroCodec(catalog)


@pytest.fixture(scope="session")
def kafka_bootstrap(test_env: TestEnvironment, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """bootstrap.servers of the session's one broker."""
    if test_env.kafka_bootstrap:
        yield test_env.kafka_bootstrap
        return
    if test_env.use_testcontainers and docker_engine_answers():
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer().with_kraft() as kafka:
            yield kafka.get_bootstrap_server()
        return
    from atmpnet.embedded import EmbeddedBroker

    with EmbeddedBroker(tmp_path_factory.mktemp("broker") / "broker.log") as broker:
        yield broker.bootstrap_servers


@pytest.fixture(scope="session")
def clickhouse_settings(
    test_env: TestEnvironment, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Settings]:
    """Settings that reach the session's ClickHouse (server or embedded chDB)."""
    data_dir = tmp_path_factory.mktemp("atmpnet-data")
    if test_env.clickhouse_url:
        yield Settings(data_dir=data_dir, clickhouse_url=test_env.clickhouse_url)
        return
    if test_env.use_testcontainers and docker_engine_answers():
        from testcontainers.clickhouse import ClickHouseContainer

        with ClickHouseContainer() as ch:
            url = f"http://{ch.get_container_host_ip()}:{ch.get_exposed_port(8123)}"
            yield Settings(
                data_dir=data_dir,
                clickhouse_url=url,
                clickhouse_user=ch.username,
                clickhouse_password=SecretStr(ch.password),
            )
        return
    yield Settings(data_dir=data_dir)


@pytest.fixture
def clickhouse(clickhouse_settings: Settings) -> Iterator[Client]:
    """A client on a database of this test's own, dropped afterwards."""
    from atmpnet.warehouse.connection import connect

    database = f"test_{uuid.uuid4().hex[:12]}"
    client = connect(clickhouse_settings, database)
    yield client
    with contextlib.suppress(Exception):
        client.command(f"DROP DATABASE IF EXISTS `{database}`")
    client.close()


@pytest.fixture
def settings(tmp_path: Path, kafka_bootstrap: str) -> Settings:
    """Settings for this test: the session broker, a data directory of its own."""
    return Settings(data_dir=tmp_path / "data", kafka_bootstrap_servers=kafka_bootstrap)


@pytest.fixture
def topics(settings: Settings, kafka_bootstrap: str) -> dict[type[Event], str]:
    """This test's own topic for every event type (created, 3 partitions)."""
    suffix = uuid.uuid4().hex[:8]
    mapping = {t: f"{t.TOPIC}.test-{suffix}" for t in EVENT_TYPES}
    ensure_topics(settings, kafka_bootstrap, list(mapping.values()))
    return mapping
