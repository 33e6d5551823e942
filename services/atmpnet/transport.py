"""Kafka client configuration and topic administration, for any Kafka-protocol broker.

Everything reaches the broker through ``bootstrap.servers`` (plus security settings), so the
same code runs on the embedded broker and on real Kafka.
"""

from __future__ import annotations

from typing import Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from atmpnet.contract.events import EVENT_TYPES
from atmpnet.errors import AtmpError
from atmpnet.settings import Settings

INPUT_TOPICS: tuple[str, ...] = tuple(t.TOPIC for t in EVENT_TYPES)
DEAD_LETTER_TOPIC = "atmp.dead-letter.v1"


class TransportError(AtmpError):
    """The broker refused a request or could not be reached."""


def client_config(settings: Settings, bootstrap_servers: str) -> dict[str, Any]:
    """Settings shared by every confluent-kafka client: address and security."""
    conf: dict[str, Any] = {
        "bootstrap.servers": bootstrap_servers,
        "security.protocol": settings.kafka_security_protocol,
    }
    if settings.kafka_sasl_mechanism:
        conf["sasl.mechanism"] = settings.kafka_sasl_mechanism
        conf["sasl.username"] = settings.kafka_sasl_username
        if settings.kafka_sasl_password is not None:
            conf["sasl.password"] = settings.kafka_sasl_password.get_secret_value()
    return conf


def producer_config(settings: Settings, bootstrap_servers: str) -> dict[str, Any]:
    """An idempotent, acks=all producer that batches (the embedded broker's reads slow with batch count)."""
    return client_config(settings, bootstrap_servers) | {
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        "compression.type": "lz4",
    }


def consumer_config(settings: Settings, bootstrap_servers: str, group_id: str) -> dict[str, Any]:
    """A consumer that commits only what the caller says is done."""
    return client_config(settings, bootstrap_servers) | {
        "group.id": group_id,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": settings.kafka_session_timeout_ms,
    }


def ensure_topics(
    settings: Settings,
    bootstrap_servers: str,
    topics: tuple[str, ...] | list[str],
    *,
    partitions: int | None = None,
    timeout_s: float = 10.0,
) -> None:
    """Create the topics that do not exist yet (partition counts are fixed at creation)."""
    admin = AdminClient(client_config(settings, bootstrap_servers))
    try:
        existing = set(admin.list_topics(timeout=timeout_s).topics)
    except KafkaException as exc:
        raise TransportError(f"cannot list topics on {bootstrap_servers}: {exc}") from exc
    wanted = [
        NewTopic(
            t,
            num_partitions=partitions or settings.topic_partitions,
            replication_factor=settings.topic_replication,
        )
        for t in topics
        if t not in existing
    ]
    if not wanted:
        return
    for topic, future in admin.create_topics(wanted, operation_timeout=timeout_s).items():
        try:
            future.result(timeout=timeout_s)
        except KafkaException as exc:
            if exc.args[0].name() != "TOPIC_ALREADY_EXISTS":
                raise TransportError(f"cannot create topic {topic}: {exc}") from exc
