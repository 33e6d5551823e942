import random
from datetime import date

import pytest
from atmpnet.contract.events import DeviationTransition, ProcessStep, StepTransition
from atmpnet.rules.capacity import BatchOutcome, LaneState, batches, capacity
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
