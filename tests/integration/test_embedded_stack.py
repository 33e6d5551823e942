"""The embedded broker and ClickHouse engine, and the Stack that chooses between them."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from atmpnet.embedded import EmbeddedBroker, Stack, free_port
from atmpnet.errors import EmbeddedStackError
from atmpnet.settings import Settings
from atmpnet.warehouse.connection import connect
from clickhouse_connect.driver.client import Client
from confluent_kafka.admin import AdminClient


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_broker_starts_ready_logs_and_stops(tmp_path: Path) -> None:
    log = tmp_path / "logs" / "broker.log"
    broker = EmbeddedBroker(log)
    bootstrap = broker.start()
    try:
        assert broker.running
        assert bootstrap == f"127.0.0.1:{broker.port}"
        metadata = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=5)
        assert metadata.brokers  # it answered a real metadata request
        assert broker.start() == bootstrap  # starting twice is a no-op
        assert log.is_file()
    finally:
        broker.stop()
    assert not broker.running
    assert not port_open(broker.port)
    broker.stop()  # stopping twice is safe


def test_a_broker_that_cannot_start_reports_its_log(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        broker = EmbeddedBroker(tmp_path / "broker.log", port=port, start_timeout_s=3)
        with pytest.raises(EmbeddedStackError, match="embedded broker did not start"):
            broker.start()
    assert not broker.running


def test_stack_uses_an_external_broker_when_configured(tmp_path: Path, kafka_bootstrap: str) -> None:
    settings = Settings(data_dir=tmp_path, kafka_bootstrap_servers=kafka_bootstrap)
    with Stack(settings) as stack:
        assert stack.broker is None
        assert stack.bootstrap_servers == kafka_bootstrap


def test_stack_reports_an_unreachable_external_broker(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path, kafka_bootstrap_servers=f"127.0.0.1:{free_port()}", broker_start_timeout_s=1.5
    )
    with pytest.raises(EmbeddedStackError, match=r"not ready after 1\.5s"):
        Stack(settings).start()


def test_embedded_stack_starts_both_and_stops_the_broker(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    with Stack(settings) as stack:
        assert stack.broker is not None and stack.broker.running
        port = stack.broker.port
        assert stack.clickhouse().query("SELECT 1 + 1").result_rows == [(2,)]
        assert (tmp_path / "clickhouse").is_dir()
        assert (tmp_path / "logs" / "broker.log").is_file()
    assert not port_open(port)


def test_clickhouse_database_per_test_is_isolated_and_usable(clickhouse: Client) -> None:
    client = clickhouse
    database = client.query("SELECT currentDatabase()").result_rows[0][0]
    assert database.startswith("test_")
    client.command("CREATE TABLE t (id UUID, at DateTime64(6, 'UTC')) ENGINE = MergeTree ORDER BY id")
    client.command("INSERT INTO t VALUES (generateUUIDv4(), now64(6))")
    assert client.query("SELECT count() FROM t").result_rows == [(1,)]


def test_embedded_clickhouse_persists_across_reopen(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, clickhouse_database="persist")
    first = connect(settings)
    first.command("CREATE TABLE kept (n UInt32) ENGINE = MergeTree ORDER BY n")
    first.command("INSERT INTO kept VALUES (7)")
    first.close()
    again = connect(settings)
    assert again.query("SELECT n FROM kept").result_rows == [(7,)]
    again.close()


def test_a_second_broker_on_a_taken_port_fails_fast_instead_of_borrowing_the_first(tmp_path: Path) -> None:
    with EmbeddedBroker(tmp_path / "first.log") as first:
        second = EmbeddedBroker(tmp_path / "second.log", port=first.port, start_timeout_s=10)
        with pytest.raises(EmbeddedStackError, match="did not start"):
            second.start()
        assert not second.running
        assert first.running
