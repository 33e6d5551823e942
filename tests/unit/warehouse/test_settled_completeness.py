"""Completeness counts a stream only up to its settled horizon (views.settled_facts)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from atmpnet.rules.integrity import EventFact, completeness
from atmpnet.warehouse.views import LATENESS_BOUND, settled_facts

T0 = datetime(2026, 3, 1, tzinfo=UTC)


def _fact(sequence: int, module: str = "a-m1") -> EventFact:
    at = T0 + timedelta(hours=sequence)
    return EventFact(f"{module}-{sequence}", "site-a", module, "p", sequence, at, at, at)


def test_sequences_still_in_flight_are_neither_expected_nor_missing() -> None:
    # a consumer catching up: 1..10 published, 6 and 9 not delivered yet; the partitions have
    # reached hour 7, so only what occurred by hour 7 - bound (5) is settled
    facts = [_fact(s) for s in range(1, 11) if s not in (6, 9)]
    watermark = T0 + timedelta(hours=5) + LATENESS_BOUND
    settled = settled_facts(facts, {"*": watermark}, T0 + timedelta(hours=10))
    assert [f.sequence for f in settled] == [1, 2, 3, 4, 5]
    site = completeness(settled)["site-a"]
    assert (site.expected, site.received) == (5, 5)
    # without the horizon the same moment looks like two lost events
    unsettled = completeness(facts)["site-a"]
    assert (unsettled.expected, unsettled.received) == (10, 8)


def test_a_settled_gap_is_still_missing_and_streams_use_their_own_watermark() -> None:
    facts = [_fact(s) for s in (1, 2, 4, 5)] + [_fact(s, "a-m2") for s in (1, 2, 3)]
    never = datetime.min.replace(tzinfo=UTC)
    watermarks = {"*": T0 + timedelta(hours=5) + LATENESS_BOUND, "module/a-m2": never}
    settled = settled_facts(facts, watermarks, T0 + timedelta(hours=10))
    # a-m1: 3 is lost for good (5 settled after it); a-m2 is held back entirely
    assert [(f.module_id, f.sequence) for f in settled] == [("a-m1", s) for s in (1, 2, 4, 5)]
    site = completeness(settled)["site-a"]
    assert (site.expected, site.received, site.missing) == (5, 4, 1)
