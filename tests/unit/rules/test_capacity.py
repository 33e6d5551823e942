import random
from datetime import date

import pytest
from atmpnet.contract.events import DeviationTransition, ProcessStep, StepTransition
from atmpnet.rules.capacity import BatchOutcome, LaneState, batches, capacity, expected_step_hours
from atmpnet.rules.triage import triage
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.unit.rules.builders import at, batch_run, config, deviation, step

S = ProcessStep


def test_completed_failed_and_in_progress_batches() -> None:
    steps = [
        *batch_run("B1", 0, 2.0),
        *batch_run("B2", 1, 2.0, fail_at=S.EXPANSION, lane=2),
        *batch_run("B3", 20, 2.0, until=S.ACTIVATION, lane=3),
    ]
    got = batches(steps)
    assert got["B1"].outcome is BatchOutcome.COMPLETED
    assert got["B1"].completed_at == at(18)
    assert (got["B2"].outcome, got["B2"].failed_step) == (BatchOutcome.FAILED, S.EXPANSION)
    assert got["B3"].outcome is BatchOutcome.IN_PROGRESS
    # busy until CRYOPRESERVATION ends (QC_RELEASE is off the module), or until the failure
    assert got["B1"].occupancy() == (at(0), at(16))
    assert got["B2"].occupancy() == (at(1), at(11))
    assert got["B3"].occupancy() == (at(20), None)


def test_lane_hours_by_day_states_now_and_daily_counts() -> None:
    steps = [*batch_run("B1", 12, 2.0), *batch_run("B2", 30, 2.0, until=S.EXPANSION, lane=2)]
    # the whole module is down from hour 40 to 44 (EQUIPMENT, no batch, no lane)
    devs = [
        deviation(
            "DN", DeviationTransition.RAISED, 40, lane=None, batch=None, parameter=None, alarm="EQP-PWR"
        ),
        deviation(
            "DN", DeviationTransition.CLOSED, 44, lane=None, batch=None, parameter=None, alarm="EQP-PWR"
        ),
    ]
    result = capacity(steps, devs, [config(0, lanes=2)], at(48), at(0))
    days = {(d.lane.lane, d.day): d for d in result.lane_days}
    d1 = days[(1, date(2026, 3, 2))]
    assert (d1.busy_hours, d1.down_hours, d1.idle_hours) == (12.0, 0.0, 12.0)
    assert d1.utilization == 0.5
    # lane 2 on day 2: idle 24-30, busy from 30; down 40-44 while busy counts as busy
    d2 = days[(2, date(2026, 3, 3))]
    assert d2.busy_hours == 18.0
    assert d2.down_hours == 0.0
    # lane 1 on day 2: busy 24-28 (B1 ends cryo at 12+16=28), down 40-44, idle the rest
    d3 = days[(1, date(2026, 3, 3))]
    assert (d3.busy_hours, d3.down_hours, d3.idle_hours) == (4.0, 4.0, 16.0)
    assert d3.utilization == pytest.approx(4 / 20)
    states = {ln.lane.lane: ln for ln in result.lanes_now}
    assert states[1].state is LaneState.IDLE
    assert (states[2].state, states[2].batch_id, states[2].step) == (LaneState.BUSY, "B2", S.EXPANSION)
    counts = {(s.day, s.started, s.completed, s.failed) for s in result.site_days}
    assert counts == {(date(2026, 3, 2), 1, 0, 0), (date(2026, 3, 3), 1, 1, 0)}
    assert result.in_progress_by_step == {("site-a", S.EXPANSION): 1}


def test_forecast_from_expected_step_durations() -> None:
    # B1 completed every step in 10 h: the network expectation for each step is 10 h
    steps = [*batch_run("B1", 0, 10.0), *batch_run("B2", 100, 10.0, until=S.SELECTION, lane=2)]
    result = capacity(steps, [], [config(0, lanes=3)], at(112), at(0))
    lane2 = next(ln for ln in result.lanes_now if ln.lane.lane == 2)
    assert (lane2.state, lane2.step) == (LaneState.BUSY, S.SELECTION)
    # remaining: 8 h of SELECTION + 6 steps x 10 h (ACTIVATION .. CRYOPRESERVATION)
    assert lane2.expected_free_at == at(112 + 8 + 60)
    free = [(f.days_ahead, f.lanes_free, f.lanes_total) for f in result.forecast]
    assert free[:3] == [(1, 2, 3), (2, 2, 3), (3, 3, 3)]
    assert result.expected_step_hours[S.EXPANSION] == 10.0


def test_announced_duration_is_used_for_the_running_step() -> None:
    steps = [step("B1", S.APHERESIS_RECEIPT, StepTransition.STARTED, 0, expected_minutes=600)]
    result = capacity(steps, [], [], at(4), at(0))
    (lane,) = result.lanes_now
    # no step was ever completed: 6 h left of the announced 10 h, later steps unknown (0)
    assert lane.expected_free_at == at(10)


def test_non_positive_cycle_times_stay_out_of_the_forecast() -> None:
    # B1 completed EXPANSION in 10 h; B2 and B3 "completed" it before / as it started (clock skew):
    # data-integrity findings, not observations, so the median stays 10 h (not 0 h or -2.5 h)
    skewed = [
        step("B2", S.EXPANSION, StepTransition.STARTED, 50, lane=2),
        step("B2", S.EXPANSION, StepTransition.COMPLETED, 45, lane=2),
        step("B3", S.EXPANSION, StepTransition.STARTED, 60, lane=3),
        step("B3", S.EXPANSION, StepTransition.COMPLETED, 60, lane=3),
    ]
    found = batches([*batch_run("B1", 0, 10.0), *skewed])
    assert found["B2"].spans[(S.EXPANSION, 1)].cycle_time is None
    assert found["B3"].spans[(S.EXPANSION, 1)].cycle_time is None
    assert expected_step_hours(found.values())[S.EXPANSION] == 10.0
    # only skewed observations of a step: fall back to the announced durations
    only_skewed = [
        step("B4", S.HARVEST, StepTransition.STARTED, 10, expected_minutes=120),
        step("B4", S.HARVEST, StepTransition.COMPLETED, 9),
    ]
    assert expected_step_hours(batches(only_skewed).values())[S.HARVEST] == 2.0


def test_an_announced_duration_is_used_whatever_its_value() -> None:
    # the schema requires >= 1 minute; a 0 must still count as announced, not as absent
    steps = [
        *batch_run("B1", 0, 10.0),
        step("B2", S.APHERESIS_RECEIPT, StepTransition.STARTED, 200, lane=2, expected_minutes=0),
    ]
    result = capacity(steps, [], [config(0, lanes=2)], at(202), at(0))
    lane2 = next(ln for ln in result.lanes_now if ln.lane.lane == 2)
    # nothing left of APHERESIS_RECEIPT (announced 0) + 7 later on-module steps x 10 h
    assert lane2.expected_free_at == at(202 + 70)


def test_utilization_of_a_module_starts_when_it_was_configured() -> None:
    # m02 is commissioned on day 3 (hour 48): days 1 and 2 are not idle time of its lanes
    configs = [config(0, lanes=1), config(48, lanes=1, module="site-a-m02")]
    steps = batch_run("B1", 50, 1.0, module="site-a-m02")
    result = capacity(steps, [], configs, at(72), at(0))
    m02 = [d for d in result.lane_days if d.lane.module_id == "site-a-m02"]
    assert [d.day for d in m02] == [date(2026, 3, 4)]
    (day,) = m02
    assert (day.busy_hours, day.idle_hours) == (8.0, 16.0)
    assert day.utilization == pytest.approx(8 / 24)
    m01 = [d for d in result.lane_days if d.lane.module_id == "site-a-m01"]
    assert sum(d.idle_hours for d in m01) == 72.0
    # a module without a configuration is observed from its first event
    bare = capacity(batch_run("B9", 30, 1.0, module="site-a-m09"), [], configs, at(72), at(0))
    m09 = [d for d in bare.lane_days if d.lane.module_id == "site-a-m09"]
    assert sum(d.busy_hours + d.idle_hours for d in m09) == 42.0


_STEPS = [
    *batch_run("B1", 0, 3.0),
    *batch_run("B2", 5, 2.5, fail_at=S.TRANSDUCTION, lane=2),
    *batch_run("B3", 30, 1.5, until=S.HARVEST, lane=2, module="site-a-m02"),
]


@settings(max_examples=40, deadline=None)
@given(st.randoms(use_true_random=False), st.lists(st.integers(0, len(_STEPS) - 1), max_size=10))
def test_capacity_is_invariant_to_order_and_duplicates(rng: random.Random, repeats: list[int]) -> None:
    expected = capacity(_STEPS, [], [config(0)], at(40), at(0))
    shuffled = [*_STEPS, *(_STEPS[i] for i in repeats)]
    rng.shuffle(shuffled)
    got = capacity(shuffled, [], [config(0)], at(40), at(0))
    assert got.lanes_now == expected.lanes_now
    assert got.lane_days == expected.lane_days
    assert got.site_days == expected.site_days
    assert got.forecast == expected.forecast


def test_a_deviation_closed_before_it_was_raised_has_no_downtime_and_no_negative_age() -> None:
    # clock skew: CLOSED at hour 10, RAISED at hour 12 (a data-integrity matter, not downtime)
    where = {"lane": None, "batch": None, "parameter": None, "alarm": "EQP-PWR"}
    devs = [
        deviation("DN", DeviationTransition.RAISED, 12, **where),  # type: ignore[arg-type]
        deviation("DN", DeviationTransition.CLOSED, 10, **where),  # type: ignore[arg-type]
    ]
    result = capacity([], devs, [config(0, lanes=1)], at(20), at(0))
    assert sum(d.down_hours for d in result.lane_days) == 0.0
    assert [ln.state for ln in result.lanes_now] == [LaneState.IDLE]
    (t,) = triage(devs, [config(0, lanes=1)], at(20))
    assert t.age_hours == 0.0
