import random

import pytest
from atmpnet.contract.events import DeviationClass, DeviationTransition, ProcessStep, StepTransition
from atmpnet.rules.capacity import capacity
from atmpnet.rules.facts import DeviationFact, StepFact
from atmpnet.rules.performance import Metric, PerformanceRow, SensorCounts, performance
from atmpnet.rules.stats import wilson_interval
from atmpnet.rules.triage import triage
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.unit.rules.builders import at, batch_run, config, deviation, step


def test_metrics_per_site_and_step_against_the_network_median() -> None:
    b = "site-b"
    steps = [
        *batch_run("A1", 0, 2.0),
        *batch_run("A2", 0, 4.0, lane=2),
        *batch_run("B1", 0, 3.0, site=b, module="site-b-m01"),
        *batch_run("B2", 0, 3.0, site=b, module="site-b-m01", lane=2, fail_at=ProcessStep.SELECTION),
    ]
    devs = [deviation("D1", DeviationTransition.RAISED, 1, batch="A1", step_=ProcessStep.APHERESIS_RECEIPT)]
    configs = [config(0), config(0, site=b, module="site-b-m01")]
    cap = capacity(steps, devs, configs, at(48), at(0))
    rows = performance(
        cap.batches.values(),
        triage(devs, configs, at(48)),
        {"site-a": SensorCounts(1000, 50), b: SensorCounts(1000, 150)},
        cap.lane_days,
    )
    got = {(r.site_id, r.step, r.metric): r for r in rows}
    p50 = got[("site-a", ProcessStep.EXPANSION, Metric.CYCLE_TIME_P50_HOURS)]
    assert (p50.value, p50.n) == (3.0, 2)
    assert got[("site-a", ProcessStep.EXPANSION, Metric.CYCLE_TIME_P90_HOURS)].value == pytest.approx(3.8)
    assert p50.network_median == 3.0  # median of site-a 3.0 and site-b 3.0
    ok = got[(b, None, Metric.SUCCESS_RATE)]
    assert (ok.value, ok.n) == (0.5, 2)
    assert (ok.ci_low, ok.ci_high) == wilson_interval(1, 2)
    assert ok.network_median == 0.75
    assert got[("site-a", None, Metric.DEVIATIONS_PER_BATCH)].value == 0.5
    assert got[("site-a", ProcessStep.APHERESIS_RECEIPT, Metric.DEVIATIONS_PER_BATCH)].value == 0.5
    assert got[(b, None, Metric.SENSOR_CONTROL)].value == 0.85
    assert got[(b, None, Metric.SENSOR_CONTROL)].network_median == pytest.approx(0.9)
    # site-a: 2 completed over 2 lanes x 2 days of available (busy + idle) time
    assert got[("site-a", None, Metric.THROUGHPUT_PER_LANE_DAY)].value == pytest.approx(2 / 4)


def _per_batch(devs: list[DeviationFact], steps: list[StepFact]) -> dict[ProcessStep | None, float]:
    configs = [config(0)]
    cap = capacity(steps, devs, configs, at(48), at(0))
    rows = performance(cap.batches.values(), triage(devs, configs, at(48)), {}, cap.lane_days)
    return {r.step: r.value for r in rows if r.metric is Metric.DEVIATIONS_PER_BATCH}


def test_a_deviation_counts_for_its_step_else_the_step_running_when_it_was_raised() -> None:
    # A1: 2 h per step from hour 0, so ACTIVATION runs 4..6 and EXPANSION 8..10
    steps = [*batch_run("A1", 0, 2.0), *batch_run("A2", 0, 2.0, lane=2)]
    raised = DeviationTransition.RAISED
    devs = [
        # no step given: raised at hour 5, during A1's ACTIVATION
        deviation("D1", raised, 5, batch="A1", step_=None, parameter="ph", alarm="PRC-PH"),
        # its step given: counted there, whenever it was raised (a late record of an EXPANSION event)
        deviation("D2", raised, 30, batch="A1", step_=ProcessStep.EXPANSION, parameter="do", alarm="PRC-DO"),
    ]
    got = _per_batch(devs, steps)
    assert got[ProcessStep.ACTIVATION] == 0.5  # 1 deviation / 2 batches that ran ACTIVATION
    assert got[ProcessStep.EXPANSION] == 0.5
    assert got[ProcessStep.SELECTION] == 0.0
    assert got[None] == 1.0  # 2 deviations / 2 batches started


def test_duplicates_are_not_counted_per_batch() -> None:
    steps = batch_run("A1", 0, 2.0)
    raised = DeviationTransition.RAISED
    same = {"batch": "A1", "step_": ProcessStep.EXPANSION, "parameter": "temperature", "alarm": "PRC-TEMP-HI"}
    # D2 is the same alarm raised again while D1 is still open: one problem, counted once
    devs = [deviation("D1", raised, 8, **same), deviation("D2", raised, 9, **same)]  # type: ignore[arg-type]
    assert {t.deviation_class for t in triage(devs, [config(0)], at(48))} >= {DeviationClass.DUPLICATE}
    got = _per_batch(devs, steps)
    assert got[None] == 1.0
    assert got[ProcessStep.EXPANSION] == 1.0


def test_non_positive_cycle_times_stay_out_of_the_percentiles() -> None:
    skew = [
        step("A9", ProcessStep.EXPANSION, StepTransition.STARTED, 30, lane=2),
        step("A9", ProcessStep.EXPANSION, StepTransition.COMPLETED, 29, lane=2),
    ]
    cap = capacity([*batch_run("A1", 0, 2.0), *skew], [], [config(0)], at(48), at(0))
    rows = performance(cap.batches.values(), [], {}, cap.lane_days)
    got = {(r.step, r.metric): r for r in rows}
    p50 = got[(ProcessStep.EXPANSION, Metric.CYCLE_TIME_P50_HOURS)]
    assert (p50.value, p50.n) == (2.0, 1)


_STEPS = [*batch_run("A1", 0, 2.0), *batch_run("A2", 1, 3.0, lane=2, fail_at=ProcessStep.EXPANSION)]
_DEVS = [
    deviation("D1", DeviationTransition.RAISED, 5, batch="A1", step_=None, parameter="ph", alarm="PRC-PH"),
    deviation("D2", DeviationTransition.RAISED, 6, batch="A1", step_=None, parameter="ph", alarm="PRC-PH"),
    deviation("D3", DeviationTransition.RAISED, 7, batch="A2", lane=2, step_=None),
    deviation("D1", DeviationTransition.CLOSED, 9, batch="A1", step_=None, parameter="ph", alarm="PRC-PH"),
]


@settings(max_examples=30, deadline=None)
@given(st.randoms(use_true_random=False), st.lists(st.integers(0, len(_STEPS) + len(_DEVS) - 1), max_size=8))
def test_performance_is_invariant_to_order_and_duplicates(rng: random.Random, repeats: list[int]) -> None:
    def rows(steps: list[StepFact], devs: list[DeviationFact]) -> list[PerformanceRow]:
        cap = capacity(steps, devs, [config(0)], at(48), at(0))
        return performance(cap.batches.values(), triage(devs, [config(0)], at(48)), {}, cap.lane_days)

    expected = rows(_STEPS, _DEVS)
    items: list[StepFact | DeviationFact] = [*_STEPS, *_DEVS]
    items += [items[i] for i in repeats]
    rng.shuffle(items)
    got = rows(
        [i for i in items if isinstance(i, StepFact)], [i for i in items if isinstance(i, DeviationFact)]
    )
    assert got == expected
