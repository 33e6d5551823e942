"""Events as JSON: the format of ``atmpnet publish``, the ingest gateway and the simulator's files.

One event is one JSON object ``{"type": "<record or model name>", "event": {...}}``, where
``event`` holds the model's fields (datetimes as ISO 8601 with an offset, UUIDs as strings,
enums as their symbols). Reading validates the event and names every bad field.
"""

from __future__ import annotations

import json
from typing import Any

from atmpnet.contract.events import EVENT_TYPE_BY_RECORD, EVENT_TYPES, Event, parse_event
from atmpnet.errors import EventValidationError, FieldError

# accepted type names: the Avro record ("atmp.BatchStep") and the model name ("BatchStep")
EVENT_TYPE_BY_NAME: dict[str, type[Event]] = EVENT_TYPE_BY_RECORD | {t.__name__: t for t in EVENT_TYPES}


def event_to_json(event: Event) -> dict[str, Any]:
    """The JSON object of one event (``type`` is its Avro record name)."""
    return {"type": event.RECORD, "event": event.model_dump(mode="json")}


def event_to_line(event: Event) -> str:
    """One event as a line of JSON (no newline)."""
    return json.dumps(event_to_json(event), separators=(",", ":"))


def event_from_json(obj: Any) -> Event:
    """Validate one JSON object as an event; EventValidationError names each bad field."""
    if not isinstance(obj, dict):
        raise EventValidationError("event", [FieldError("", "must be a JSON object with type and event")])
    name = obj.get("type")
    event_type = EVENT_TYPE_BY_NAME.get(name) if isinstance(name, str) else None
    if event_type is None:
        known = ", ".join(sorted(EVENT_TYPE_BY_RECORD))
        raise EventValidationError(
            "event", [FieldError("type", f"unknown event type {name!r}; one of {known}")]
        )
    extra = sorted(set(obj) - {"type", "event"})
    if extra:
        raise EventValidationError(event_type.__name__, [FieldError(extra[0], "extra field not permitted")])
    if "event" not in obj:
        raise EventValidationError(event_type.__name__, [FieldError("event", "required")])
    return parse_event(event_type, obj["event"])


def event_from_line(line: str) -> Event:
    """Parse and validate one line of JSON as an event."""
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        raise EventValidationError(
            "event", [FieldError("", f"not JSON: {exc.msg} at column {exc.colno}")]
        ) from exc
    return event_from_json(obj)
