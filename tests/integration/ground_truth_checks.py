"""Comparisons of the views with the simulator's ground truth, shared by the end-to-end tests."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from typing import Any

import pytest
from atmpnet.site.simulator import GroundTruth

HOURS = 1e-6  # busy hours compared to well below one microsecond of lane time


def assert_views_match_truth(
    views: dict[str, list[tuple[Any, ...]]], truth: GroundTruth, window_minutes: int
) -> None:
    """Every view (read_views) against the simulator's ground truth, per site.

    Counts equal exactly; lane busy hours to well below a microsecond of lane time.
    """
    (as_of,) = {r[8] for r in views["capacity_lanes"]}
    tail_hours = (truth.end - as_of).total_seconds() / 3600
    assert timedelta(0) <= truth.end - as_of < timedelta(minutes=window_minutes)
    for site, st in truth.sites.items():
        days = [r for r in views["capacity_site_days"] if r[0] == site]
        assert (sum(r[2] for r in days), sum(r[3] for r in days), sum(r[4] for r in days)) == (
            st.batches_started,
            st.batches_completed,
            st.batches_failed,
        ), site
        batches = Counter(r[5] for r in views["batch_status"] if r[0] == site)
        assert batches["IN_PROGRESS"] == st.batches_in_progress
        triaged = [r for r in views["deviation_triage"] if r[2] == site]
        assert dict(Counter(r[12] for r in triaged)) == {
            k: v for k, v in st.deviations_by_class.items() if v
        }, site
        assert dict(Counter(r[13] for r in triaged)) == {
            k: v for k, v in st.deviations_by_severity.items() if v
        }
        intervals: dict[str, list[tuple[Any, Any]]] = {}
        for r in views["drift_intervals"]:
            if r[0] == site:
                intervals.setdefault(r[1], []).append((r[3], r[4]))
        expected = {m: [(i.opened_at, i.closed_at) for i in v] for m, v in st.drift_intervals.items() if v}
        assert {m: sorted(v) for m, v in intervals.items()} == expected, site
        # the events end at as_of (the last event); the truth clips at the simulation end, which no
        # event carries: the lanes still busy at as_of account for the tail exactly
        by_lane: dict[str, float] = {}
        for r in views["capacity_lane_days"]:
            if r[0] == site:
                by_lane[f"{r[1]}/{r[2]}"] = by_lane.get(f"{r[1]}/{r[2]}", 0.0) + r[4]
        busy_now = {f"{r[1]}/{r[2]}" for r in views["capacity_lanes"] if r[0] == site and r[5] is not None}
        for lane, hours in st.lane_busy_hours_by_lane.items():
            tail = tail_hours if lane in busy_now else 0.0
            assert by_lane.get(lane, 0.0) + tail == pytest.approx(hours, abs=HOURS), (site, lane)
        assert sum(by_lane.values()) + tail_hours * len(busy_now) == pytest.approx(
            st.lane_busy_hours, abs=HOURS
        )
