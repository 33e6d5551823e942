"""Event models: valid examples, and invalid events rejected with the field and the reason."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from atmpnet.contract.events import (
    BatchStep,
    Deviation,
    Event,
    ModuleConfiguration,
    SensorSummary,
    parse_event,
)
from atmpnet.contract.examples import example_events
from atmpnet.errors import EventValidationError


def _example(event_type: type[Event]) -> dict[str, Any]:
    event = next(e for e in example_events() if isinstance(e, event_type))
    return event.model_dump()


def _errors(event_type: type[Event], data: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(EventValidationError) as info:
        parse_event(event_type, data)
    assert info.value.event_type == event_type.__name__
    return {e.path: e.reason for e in info.value.errors}


def test_examples_cover_every_event_type_and_are_valid() -> None:
    events = example_events()
    assert {type(e).__name__ for e in events} == {
        "BatchStep",
        "SensorSummary",
        "Deviation",
        "ModuleConfiguration",
        "ValidatedBaseline",
    }
    for e in events:
        assert parse_event(type(e), e.model_dump()) == e


def test_missing_and_mistyped_fields_are_named() -> None:
    data = _example(BatchStep)
    del data["product_code"]
    data["envelope"]["lane"] = 0
    data["step"] = "MIXING"
    errors = _errors(BatchStep, data)
    assert errors["product_code"] == "required"
    assert "greater than or equal to 1" in errors["envelope.lane"]
    assert "APHERESIS_RECEIPT" in errors["step"]


def test_naive_timestamps_are_refused_and_aware_ones_normalised_to_utc() -> None:
    data = _example(SensorSummary)
    data["envelope"]["occurred_at"] = data["envelope"]["occurred_at"].replace(tzinfo=None)
    assert "timezone" in _errors(SensorSummary, data)["envelope.occurred_at"]

    data = _example(SensorSummary)
    from datetime import timezone

    plus_two = timezone(timedelta(hours=2))
    data["envelope"]["published_at"] = data["envelope"]["published_at"].astimezone(plus_two)
    event = parse_event(SensorSummary, data)
    assert event.envelope.published_at.utcoffset() == timedelta(0)


@pytest.mark.parametrize(
    ("event_type", "change", "path", "reason"),
    [
        (BatchStep, {"envelope.batch_id": None}, "envelope.batch_id", "required for BatchStep events"),
        (BatchStep, {"transition": "FAILED"}, "failure_reason", "required when the step is FAILED"),
        (BatchStep, {"failure_reason": "why"}, "failure_reason", "only FAILED or ABORTED steps have one"),
        (SensorSummary, {"envelope.lane": None}, "envelope.lane", "required for SensorSummary events"),
        (SensorSummary, {"mean": 99.0}, "mean", "lies outside"),
        (SensorSummary, {"count": 0}, "min", "absent when count is 0"),
        (SensorSummary, {"action_low": 40.0}, "action_high", "is below action_low"),
        (
            SensorSummary,
            {"samples_outside_action": 5},
            "samples_outside_action",
            "exceeds samples_outside_alert",
        ),
        (Deviation, {"transition": "CLOSED"}, "resolution", "required when the deviation is CLOSED"),
        (Deviation, {"envelope.module_id": None}, "envelope.module_id", "required for Deviation events"),
        (ModuleConfiguration, {"components.1.name": "controller"}, "components.1.name", "appears twice"),
        (ModuleConfiguration, {"components.0.content_hash": "abc"}, "components.0.content_hash", "pattern"),
    ],
)
def test_rules_name_the_field_and_the_reason(
    event_type: type[Event], change: dict[str, Any], path: str, reason: str
) -> None:
    data = _example(event_type)
    for dotted, value in change.items():
        *parents, leaf = dotted.split(".")
        node: Any = data
        for p in parents:
            node = node[int(p)] if p.isdigit() else node[p]
        node[leaf] = value
    errors = _errors(event_type, data)
    assert path in errors, errors
    assert reason in errors[path]


def test_unknown_fields_are_refused() -> None:
    data = _example(Deviation)
    data["severity"] = "critical"
    assert "Extra inputs" in _errors(Deviation, data)["severity"]


def test_events_are_immutable() -> None:
    event = example_events()[0]
    with pytest.raises(ValueError, match="frozen"):
        event.envelope.sequence = 7


def test_partition_keys_follow_the_topic_table() -> None:
    keys = {type(e).__name__: e.partition_key() for e in example_events()}
    assert keys == {
        "BatchStep": "B-2026-00417",
        "SensorSummary": "bos-m01/2",
        "Deviation": "B-2026-00417",
        "ModuleConfiguration": "bos-m01",
        "ValidatedBaseline": "closed-expansion-a",
    }
    deviation = next(e for e in example_events() if isinstance(e, Deviation))
    no_batch = deviation.with_envelope(batch_id=None)
    assert no_batch.partition_key() == "bos-m01"
