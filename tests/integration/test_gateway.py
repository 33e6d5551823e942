"""The HTTP ingest gateway against the session broker: keys, site checks, validation, outbox, Kafka."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import uvicorn
from atmpnet import telemetry
from atmpnet.contract.chain import payload_hash
from atmpnet.contract.codec import AvroCodec
from atmpnet.contract.events import (
    BatchStep,
    Deviation,
    Event,
    ModuleConfiguration,
    SensorSummary,
    ValidatedBaseline,
)
from atmpnet.contract.examples import example_events
from atmpnet.contract.jsonl import event_to_json
from atmpnet.sample import read_back
from atmpnet.settings import Settings
from atmpnet.site.gateway import create_gateway, outbox_publishers
from atmpnet.site.site_keys import KeyRole, SiteKeyStore
from fastapi import FastAPI
from fastapi.testclient import TestClient
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

pytestmark = pytest.mark.integration

SITE = "site-boston"  # the examples' site
OTHER_SITE = "site-lyon"


@dataclass
class Keys:
    store: SiteKeyStore
    site: str
    other_site: str
    network: str


@pytest.fixture
def keys(settings: Settings) -> Keys:
    store = SiteKeyStore.from_settings(settings)
    return Keys(
        store,
        site=store.add(site_id=SITE),
        other_site=store.add(site_id=OTHER_SITE),
        network=store.add(site_id=None, role=KeyRole.NETWORK),
    )


def make_app(
    settings: Settings,
    keys: Keys,
    codec: AvroCodec,
    topics: dict[type[Event], str],
    *,
    bootstrap: str | None = None,
    max_pending: int = 1_000_000,
    close_timeout_s: float = 5.0,
) -> FastAPI:
    factory = outbox_publishers(
        settings,
        bootstrap_servers=bootstrap or str(settings.kafka_bootstrap_servers),
        codec=codec,
        max_pending=max_pending,
        topic_of=topics.__getitem__,
    )
    return create_gateway(
        settings, keys=keys.store, publisher_for_site=factory, close_timeout_s=close_timeout_s
    )


@pytest.fixture
def client(
    settings: Settings, keys: Keys, codec: AvroCodec, topics: dict[type[Event], str]
) -> Iterator[TestClient]:
    with TestClient(make_app(settings, keys, codec, topics)) as c:
        yield c


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def fresh(event: Event, **envelope: Any) -> Event:
    """The event with a new id (and envelope changes), not re-validated: tests break rules on purpose."""
    return event.with_envelope(event_id=uuid.uuid4(), **envelope)


def examples() -> dict[type[Event], Event]:
    return {type(e): fresh(e) for e in example_events()}


def as_json(event: Event, *, omit: tuple[str, ...] = ()) -> dict[str, Any]:
    obj = event_to_json(event)
    for name in omit:
        del obj["event"]["envelope"][name]
    return obj


def test_an_accepted_event_arrives_in_its_topic_with_its_key_and_a_stamped_sequence(
    client: TestClient,
    keys: Keys,
    settings: Settings,
    kafka_bootstrap: str,
    codec: AvroCodec,
    topics: dict[type[Event], str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    step = examples()[BatchStep]
    caplog.set_level(logging.INFO)
    # the client may omit what the outbox stamps; a sequence it sends is replaced
    first = client.post(
        "/v1/events", json=as_json(step, omit=("sequence", "published_at")), headers=bearer(keys.site)
    )
    assert first.status_code == 202, first.text
    second_event = fresh(step)
    second = client.post("/v1/events", json=as_json(second_event), headers={"X-Api-Key": keys.site})
    assert second.status_code == 202, second.text
    assert first.json() == {
        "accepted": [
            {"index": 0, "event_id": str(step.envelope.event_id), "type": "atmp.BatchStep", "sequence": 1}
        ]
    }
    assert second.json()["accepted"][0]["sequence"] == 2  # the module's sequence, not the client's 1041

    got = read_back(settings, kafka_bootstrap, codec, [topics[BatchStep]], 2, timeout_s=20)
    by_id = {d.event.envelope.event_id: d for d in got}
    assert by_id[step.envelope.event_id].key == step.envelope.batch_id
    assert by_id[step.envelope.event_id].event.envelope.sequence == 1
    stored = by_id[second_event.envelope.event_id].event
    # chained to the module's first event (payload_hash of its canonical bytes); the rest as sent
    first_stored = by_id[step.envelope.event_id].event
    assert first_stored.envelope.previous_hash is None
    assert stored.envelope.previous_hash == payload_hash(codec.encode(first_stored))
    assert stored == second_event.with_envelope(sequence=2, previous_hash=stored.envelope.previous_hash)
    assert stored.envelope.producer == step.envelope.producer  # the producer stays the site's own
    accepted = [r.getMessage() for r in caplog.records if "via http-gateway" in r.getMessage()]
    assert accepted and SITE in accepted[0] and keys.site.split("_")[1] in accepted[0]
    secret = keys.site.split("_", 2)[2]
    assert all(secret not in r.getMessage() for r in caplog.records)  # keys are never logged


def test_a_spoofed_site_is_refused_with_both_sites_named_and_nothing_stored(
    client: TestClient, keys: Keys
) -> None:
    spoofed = fresh(examples()[SensorSummary], site_id=OTHER_SITE)
    r = client.post("/v1/events", json=as_json(spoofed), headers=bearer(keys.site))
    assert r.status_code == 403
    assert r.headers["content-type"] == "application/problem+json"
    body = r.json()
    assert body["code"] == "site_mismatch"
    assert SITE in body["detail"] and OTHER_SITE in body["detail"]
    assert body["errors"][0]["path"] == "event.envelope.site_id"
    # the refused event took no sequence number: the next accepted one of the module is 1
    ok = client.post("/v1/events", json=as_json(fresh(spoofed, site_id=SITE)), headers=bearer(keys.site))
    assert ok.status_code == 202 and ok.json()["accepted"][0]["sequence"] == 1


@pytest.mark.parametrize("event_type", [BatchStep, SensorSummary, Deviation, ModuleConfiguration])
def test_every_site_event_type_is_refused_from_another_sites_key(
    client: TestClient, keys: Keys, event_type: type[Event]
) -> None:
    event = examples()[event_type]
    r = client.post("/v1/events", json=as_json(event), headers=bearer(keys.other_site))
    assert r.status_code == 403, r.text
    assert r.json()["code"] == "site_mismatch"
    # nor is it accepted with the site left out
    siteless = as_json(event)
    siteless["event"]["envelope"]["site_id"] = None
    r = client.post("/v1/events", json=siteless, headers=bearer(keys.site))
    assert r.status_code in (403, 422), r.text


def test_baselines_need_a_network_key_and_network_keys_publish_only_baselines(
    client: TestClient, keys: Keys
) -> None:
    events = examples()
    baseline = as_json(events[ValidatedBaseline])
    r = client.post("/v1/events", json=baseline, headers=bearer(keys.site))
    assert r.status_code == 403 and "network-quality" in r.json()["detail"]
    r = client.post("/v1/events", json=as_json(events[Deviation]), headers=bearer(keys.network))
    assert r.status_code == 403 and SITE in r.json()["detail"]
    r = client.post("/v1/events", json=baseline, headers=bearer(keys.network))
    assert r.status_code == 202, r.text


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({}, "missing_key"),
        ({"Authorization": "Bearer "}, "missing_key"),
        ({"Authorization": "Bearer atmp_000000000000_" + "x" * 43}, "invalid_key"),
        ({"X-Api-Key": "hunter2"}, "invalid_key"),
        ({"Authorization": "Basic dXNlcjpwYXNz"}, "missing_key"),
    ],
)
def test_a_missing_or_bad_key_is_refused_with_401(
    client: TestClient, headers: dict[str, str], code: str
) -> None:
    r = client.post("/v1/events", json=as_json(examples()[BatchStep]), headers=headers)
    assert r.status_code == 401
    assert r.json()["code"] == code
    assert r.headers["www-authenticate"] == "Bearer"


def test_a_revoked_key_is_refused_at_once(client: TestClient, keys: Keys) -> None:
    body = as_json(examples()[BatchStep])
    assert keys.store.revoke(keys.site.split("_")[1])
    r = client.post("/v1/events", json=body, headers=bearer(keys.site))
    assert r.status_code == 401 and r.json()["code"] == "invalid_key"


def test_an_invalid_event_gets_422_naming_every_failing_field(client: TestClient, keys: Keys) -> None:
    obj = as_json(examples()[BatchStep])
    del obj["event"]["envelope"]["lane"]
    obj["event"]["transition"] = "FAILED"  # without a failure_reason
    obj["event"]["results"]["viability_percent"] = 140
    obj["event"]["envelope"]["occurred_at"] = "yesterday"
    r = client.post("/v1/events", json=obj, headers=bearer(keys.site))
    assert r.status_code == 422
    body = r.json()
    assert body["code"] == "invalid_event" and "none was accepted" in body["detail"]
    errors = {e["path"]: e["reason"] for e in body["errors"]}
    assert set(errors) >= {"event.envelope.occurred_at", "event.results.viability_percent"}
    assert "less than or equal to 100" in errors["event.results.viability_percent"]
    # the rules across fields run once the fields parse
    del obj["event"]["results"]
    obj["event"]["envelope"]["occurred_at"] = "2026-11-02T09:30:00Z"
    errors = {
        e["path"]: e["reason"]
        for e in client.post("/v1/events", json=obj, headers=bearer(keys.site)).json()["errors"]
    }
    assert errors == {"event.envelope.lane": "required for BatchStep events"}
    obj["event"]["envelope"]["lane"] = 2
    errors = {
        e["path"]: e["reason"]
        for e in client.post("/v1/events", json=obj, headers=bearer(keys.site)).json()["errors"]
    }
    assert errors == {"event.failure_reason": "required when the step is FAILED"}


@pytest.mark.parametrize(
    ("body", "path", "reason"),
    [
        (b"{not json", "", "not JSON"),
        (b'{"type": "atmp.Nope", "event": {}}', "type", "unknown event type"),
        (b'{"type": "atmp.BatchStep"}', "event", "required"),
        (b"[]", "", "JSON object"),
    ],
)
def test_malformed_bodies_get_422_with_a_path(
    client: TestClient, keys: Keys, body: bytes, path: str, reason: str
) -> None:
    r = client.post(
        "/v1/events", content=body, headers=bearer(keys.site) | {"Content-Type": "application/json"}
    )
    assert r.status_code == 422
    error = r.json()["errors"][0]
    assert error["path"] == path and reason in error["reason"]


def test_an_oversized_body_gets_413_before_it_is_parsed(
    settings: Settings, keys: Keys, codec: AvroCodec, topics: dict[type[Event], str]
) -> None:
    small = settings.model_copy(update={"gateway_max_body_bytes": 2048})
    with TestClient(make_app(small, keys, codec, topics)) as c:
        r = c.post("/v1/events", content=b"{" + b" " * 4096 + b"}", headers=bearer(keys.site))
        assert r.status_code == 413 and r.json()["code"] == "body_too_large"
        assert "2048" in r.json()["detail"]
        # the key is checked first: an unauthenticated client cannot make the gateway read anything
        assert c.post("/v1/events", content=b" " * 4096).status_code == 401


def test_a_batch_is_all_or_nothing_and_names_the_failing_items(
    client: TestClient,
    keys: Keys,
    settings: Settings,
    kafka_bootstrap: str,
    codec: AvroCodec,
    topics: dict[type[Event], str],
) -> None:
    events = examples()
    good = [events[BatchStep], events[SensorSummary], events[Deviation]]
    bad = [as_json(e) for e in good]
    del bad[1]["event"]["unit"]
    r = client.post("/v1/events:batch", json={"events": bad}, headers=bearer(keys.site))
    assert r.status_code == 422
    assert r.json()["errors"] == [{"index": 1, "path": "events.1.event.unit", "reason": "required"}]
    assert r.json()["detail"].startswith("1 of 3 events failed")

    spoofed = [as_json(e) for e in good[:2]] + [as_json(fresh(good[2], site_id=OTHER_SITE))]
    r = client.post("/v1/events:batch", json={"events": spoofed}, headers=bearer(keys.site))
    assert r.status_code == 403
    assert [(e["index"], e["path"]) for e in r.json()["errors"]] == [(2, "events.2.event.envelope.site_id")]

    twice = [as_json(good[0]), as_json(good[0])]
    r = client.post("/v1/events:batch", json={"events": twice}, headers=bearer(keys.site))
    assert r.status_code == 422 and r.json()["errors"][0]["reason"] == "same event_id as the event at index 0"

    r = client.post(
        "/v1/events:batch", json={"events": [as_json(e) for e in good]}, headers=bearer(keys.site)
    )
    assert r.status_code == 202, r.text
    accepted = r.json()["accepted"]
    assert [a["event_id"] for a in accepted] == [str(e.envelope.event_id) for e in good]
    assert [a["sequence"] for a in accepted] == [1, 2, 3]  # one module: the refused batches took none
    got = read_back(settings, kafka_bootstrap, codec, [topics[type(e)] for e in good], 3, timeout_s=20)
    assert {d.event.envelope.event_id for d in got} == {e.envelope.event_id for e in good}


@pytest.mark.parametrize(
    "body",
    [{"events": []}, {"events": "x"}, [], {"events": [{}], "extra": 1}],
    ids=["empty", "str", "list", "extra"],
)
def test_a_malformed_batch_gets_422(client: TestClient, keys: Keys, body: Any) -> None:
    r = client.post("/v1/events:batch", json=body, headers=bearer(keys.site))
    assert r.status_code == 422 and r.json()["code"] == "invalid_batch"


def test_a_batch_over_the_event_limit_gets_413(
    settings: Settings, keys: Keys, codec: AvroCodec, topics: dict[type[Event], str]
) -> None:
    limited = settings.model_copy(update={"gateway_max_batch_events": 2})
    step = examples()[BatchStep]
    with TestClient(make_app(limited, keys, codec, topics)) as c:
        events = [as_json(fresh(step)) for _ in range(3)]
        r = c.post("/v1/events:batch", json={"events": events}, headers=bearer(keys.site))
        assert r.status_code == 413 and r.json()["code"] == "too_many_events"


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_a_non_finite_number_is_refused_with_its_path(client: TestClient, keys: Keys, number: str) -> None:
    # Python's json reads these; Avro and ClickHouse would store them, and no reading is NaN
    obj = as_json(examples()[SensorSummary])
    obj["event"]["mean"] = "@"
    body = json.dumps(obj).replace('"@"', number)
    headers = bearer(keys.site) | {"Content-Type": "application/json"}
    r = client.post("/v1/events", content=body, headers=headers)
    assert r.status_code == 422, r.text
    assert [e["path"] for e in r.json()["errors"]] == ["event.mean"]


def test_a_full_outbox_answers_503_with_retry_after(
    settings: Settings, keys: Keys, codec: AvroCodec, topics: dict[type[Event], str]
) -> None:
    # nothing listens on port 1: nothing is delivered, so the outbox of two fills up
    app = make_app(settings, keys, codec, topics, bootstrap="127.0.0.1:1", max_pending=2, close_timeout_s=0.2)
    step = examples()[BatchStep]
    with TestClient(app) as c:
        for _ in range(2):
            assert (
                c.post("/v1/events", json=as_json(fresh(step)), headers=bearer(keys.site)).status_code == 202
            )
        r = c.post("/v1/events", json=as_json(fresh(step)), headers=bearer(keys.site))
        assert r.status_code == 503
        assert r.headers["retry-after"] == str(settings.gateway_retry_after_s)
        assert r.json()["code"] == "outbox_full"
        assert str(settings.data_dir) not in r.text  # no server paths for the client
        # other sites have outboxes of their own
        other = fresh(step, site_id=OTHER_SITE)
        assert c.post("/v1/events", json=as_json(other), headers=bearer(keys.other_site)).status_code == 202


def test_a_second_gateway_on_the_same_outboxes_answers_503_and_stores_nothing(
    settings: Settings, keys: Keys, codec: AvroCodec, topics: dict[type[Event], str]
) -> None:
    step = examples()[BatchStep]
    with TestClient(make_app(settings, keys, codec, topics)) as first:
        assert first.post("/v1/events", json=as_json(step), headers=bearer(keys.site)).status_code == 202
        with TestClient(make_app(settings, keys, codec, topics)) as second:
            r = second.post("/v1/events", json=as_json(fresh(step)), headers=bearer(keys.site))
            assert r.status_code == 503 and r.json()["code"] == "outbox_unavailable", r.text
            assert str(settings.data_dir) not in r.text
        # the first gateway's sequences went on undisturbed
        r = first.post("/v1/events", json=as_json(fresh(step)), headers=bearer(keys.site))
        assert r.json()["accepted"][0]["sequence"] == 2


def test_openapi_documents_both_endpoints_with_examples_that_are_accepted(
    client: TestClient, keys: Keys
) -> None:
    spec = client.get("/openapi.json").json()
    single = spec["paths"]["/v1/events"]["post"]
    batch = spec["paths"]["/v1/events:batch"]["post"]
    for op in (single, batch):
        assert {"202", "401", "403", "413", "422", "503"} <= set(op["responses"])
        assert op["security"]  # bearer or X-Api-Key
    schemes = spec["components"]["securitySchemes"]
    assert {s["type"] for s in schemes.values()} == {"http", "apiKey"}
    envelope = spec["components"]["schemas"]["Envelope"]
    assert "sequence" not in envelope["required"] and "event_id" in envelope["required"]
    examples_ = single["requestBody"]["content"]["application/json"]["examples"]
    assert set(examples_) == {
        "BatchStep",
        "SensorSummary",
        "Deviation",
        "ModuleConfiguration",
        "ValidatedBaseline",
    }
    for name, example in examples_.items():
        key = keys.network if name == "ValidatedBaseline" else keys.site
        r = client.post("/v1/events", json=example["value"], headers=bearer(key))
        assert r.status_code == 202, (name, r.text)
    batch_example = next(iter(batch["requestBody"]["content"]["application/json"]["examples"].values()))
    # the single examples took these event ids already; a batch repeating them is still valid input
    r = client.post("/v1/events:batch", json=batch_example["value"], headers=bearer(keys.site))
    assert r.status_code == 202, r.text


# -- a real server --------------------------------------------------------------------


@pytest.fixture
def served(settings: Settings, keys: Keys, codec: AvroCodec, topics: dict[type[Event], str]) -> Iterator[str]:
    """The gateway under uvicorn on a free port, with a 4 KiB body limit."""
    app = make_app(settings.model_copy(update={"gateway_max_body_bytes": 4096}), keys, codec, topics)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)


def test_a_real_server_refuses_chunked_oversized_bodies_and_accepts_events(served: str, keys: Keys) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(100):
            yield b" " * 1024

    with httpx.Client(base_url=served, timeout=10) as http:
        r = http.post("/v1/events", content=chunks(), headers=bearer(keys.site))  # no Content-Length
        assert r.status_code == 413 and r.json()["code"] == "body_too_large"
        r = http.post("/v1/events", json=as_json(examples()[BatchStep]), headers=bearer(keys.site))
        assert r.status_code == 202, r.text
        assert http.get("/openapi.json").status_code == 200


def test_framework_errors_use_the_same_problem_format(client: TestClient) -> None:
    r = client.get("/v1/events")
    assert r.status_code == 405 and r.headers["content-type"] == "application/problem+json"
    assert r.json()["code"] == "method_not_allowed"
    assert client.get("/v2/nothing").json()["code"] == "not_found"


def test_the_trace_records_the_gateway_and_continues_into_the_outbox_write(
    client: TestClient, keys: Keys
) -> None:
    telemetry.configure("atmpnet-tests")
    provider = trace.get_tracer_provider()
    assert isinstance(provider, TracerProvider)
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    try:
        r = client.post("/v1/events", json=as_json(examples()[BatchStep]), headers=bearer(keys.site))
        assert r.status_code == 202
        finished = {s.name: s for s in exporter.get_finished_spans()}
    finally:
        exporter.shutdown()
    ingest = finished["gateway.ingest"]
    assert ingest.attributes is not None
    assert ingest.attributes["atmp.ingest.via"] == "http-gateway"
    assert ingest.attributes["atmp.gateway.key_id"] == keys.site.split("_")[1]
    assert ingest.attributes["atmp.site_id"] == SITE
    publish = finished["atmpnet.publish"]  # the publisher's span, on the site's outbox thread
    assert publish.parent is not None and publish.parent.span_id == ingest.context.span_id
