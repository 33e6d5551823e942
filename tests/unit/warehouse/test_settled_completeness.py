"""Completeness does not count sequences still in flight as missing (views.in_flight_missing)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from atmpnet.rules.integrity import EventFact, completeness
from atmpnet.warehouse.views import LATENESS_BOUND, in_flight_missing

T0 = datetime(2026, 3, 1, tzinfo=UTC)
NOW = T0 + timedelta(hours=10)


def _fact(sequence: int, module: str = "a-m1") -> EventFact:
    at = T0 + timedelta(hours=sequence)
    return EventFact(f"{module}-{sequence}", "site-a", module, "p", sequence, at, at, at)


def test_sequences_still_in_flight_are_neither_expected_nor_missing() -> None:
    # a consumer catching up: 1..10 published, 3, 6 and 9 not delivered yet; the partitions
    # have reached hour 5 + bound, so 1..5 are settled: 3 is lost, 6 and 9 may still arrive
    facts = [_fact(s) for s in range(1, 11) if s not in (3, 6, 9)]
    watermark = T0 + timedelta(hours=5) + LATENESS_BOUND
    assert in_flight_missing(facts, {"*": watermark}, NOW) == {"site-a": 2}
    raw = completeness(facts)["site-a"]
    assert (raw.expected, raw.received) == (10, 7)  # without the horizon: three look lost


def test_a_stream_held_back_counts_no_gap_and_an_empty_store_nothing() -> None:
    facts = [_fact(s) for s in (1, 2, 4, 5)] + [_fact(s, "a-m2") for s in (1, 3)]
    never = datetime.min.replace(tzinfo=UTC)
    watermarks = {"*": T0 + timedelta(hours=5) + LATENESS_BOUND, "module/a-m2": never}
    # a-m1: 3 is lost for good (5 settled after it); a-m2 is held back: its gap is in flight
    assert in_flight_missing(facts, watermarks, NOW) == {"site-a": 1}
    assert in_flight_missing(facts, watermarks, None) == {}
    assert in_flight_missing([], watermarks, NOW) == {}
