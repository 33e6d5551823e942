import pytest
from atmpnet.contract.events import DeviationTransition, ProcessStep
from atmpnet.rules.capacity import capacity
from atmpnet.rules.performance import Metric, SensorCounts, performance
from atmpnet.rules.stats import wilson_interval
from atmpnet.rules.triage import triage

from tests.unit.rules.builders import at, batch_run, config, deviation


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
