"""Comparative performance: per site (and step), each metric against the network median.

Metrics: step cycle time p50 and p90 (hours), batch success rate with a 95% Wilson interval,
deviations per batch, sensor control (share of samples within alert limits) and throughput
(batches completed per available lane-day). The network median of a metric is the median of
the sites' values (sites without a value left out).

Cycle times at or below zero (completed before started: a clock fault, a data-integrity matter
for ``rules.integrity``) are not observations and stay out of the percentiles
(``StepSpan.cycle_time``).
Deviations per batch count the deviations raised on a batch, DUPLICATE ones left out (the same
problem raised again while the first is open); per step, a deviation counts for its ``step``
when it names one, else for the batch's step in progress on its lane when it was raised.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from atmpnet.contract.events import DeviationClass, ProcessStep
from atmpnet.rules.capacity import HOUR, Batch, BatchOutcome, LaneDay
from atmpnet.rules.stats import median, percentile, wilson_interval
from atmpnet.rules.triage import TriagedDeviation


class Metric(StrEnum):
    """Metrics of the performance view."""

    CYCLE_TIME_P50_HOURS = "cycle_time_p50_hours"
    CYCLE_TIME_P90_HOURS = "cycle_time_p90_hours"
    SUCCESS_RATE = "success_rate"
    DEVIATIONS_PER_BATCH = "deviations_per_batch"
    SENSOR_CONTROL = "sensor_control"
    THROUGHPUT_PER_LANE_DAY = "throughput_per_lane_day"


@dataclass(frozen=True, slots=True)
class SensorCounts:
    """Samples of a site's sensor summaries, and those outside the alert limits."""

    samples: int
    outside_alert: int


@dataclass(frozen=True, slots=True)
class PerformanceRow:
    """One metric of one site (``step`` None: the site as a whole)."""

    site_id: str
    step: ProcessStep | None
    metric: Metric
    value: float
    n: int  # observations behind the value
    ci_low: float | None
    ci_high: float | None
    network_median: float


def step_of(deviation: TriagedDeviation, batch: Batch | None) -> ProcessStep | None:
    """The step a deviation counts for: its own ``step``, else the batch's step in progress then.

    In progress = the batch's latest step attempt started by ``raised_at`` that had not ended
    before it; a deviation raised between two steps counts for no step (only for the batch).
    """
    if deviation.step is not None:
        return deviation.step
    if batch is None:
        return None
    return _running(batch, deviation.raised_at)


def _running(batch: Batch, at: datetime) -> ProcessStep | None:
    cur = batch.current(at)
    if cur is None or (cur.ended_at is not None and cur.ended_at < at):
        return None
    return cur.step


def _site_metrics(  # noqa: PLR0912
    all_batches: Iterable[Batch],
    triaged: Iterable[TriagedDeviation],
    sensors: Mapping[str, SensorCounts],
    lane_days: Iterable[LaneDay],
) -> list[tuple[str, ProcessStep | None, Metric, float, int, tuple[float, float] | None]]:
    cycle: dict[tuple[str, ProcessStep], list[float]] = defaultdict(list)
    reached: dict[tuple[str, ProcessStep], set[str]] = defaultdict(set)
    started: dict[str, int] = defaultdict(int)
    done: dict[str, list[int]] = defaultdict(lambda: [0, 0])  # completed, failed
    by_id = {b.batch_id: b for b in all_batches}
    for b in by_id.values():
        if b.started_at is not None:
            started[b.site_id] += 1
        if b.outcome is BatchOutcome.COMPLETED:
            done[b.site_id][0] += 1
        elif b.outcome is BatchOutcome.FAILED:
            done[b.site_id][1] += 1
        for s in b.spans.values():
            if s.started_at is not None:
                reached[(b.site_id, s.step)].add(b.batch_id)
            if s.cycle_time is not None:
                cycle[(b.site_id, s.step)].append(s.cycle_time.total_seconds() / HOUR)
    devs_site: dict[str, int] = defaultdict(int)
    devs_step: dict[tuple[str, ProcessStep], int] = defaultdict(int)
    for t in triaged:
        if t.batch_id is None or t.deviation_class is DeviationClass.DUPLICATE:
            continue
        devs_site[t.site_id] += 1
        step = step_of(t, by_id.get(t.batch_id))
        if step is not None:
            devs_step[(t.site_id, step)] += 1
    available: dict[str, float] = defaultdict(float)
    for ld in lane_days:
        available[ld.lane.site_id] += ld.busy_hours + ld.idle_hours

    out: list[tuple[str, ProcessStep | None, Metric, float, int, tuple[float, float] | None]] = []
    for (site, step), hours in sorted(cycle.items()):
        p50, p90 = percentile(hours, 50), percentile(hours, 90)
        assert p50 is not None
        assert p90 is not None
        out.append((site, step, Metric.CYCLE_TIME_P50_HOURS, p50, len(hours), None))
        out.append((site, step, Metric.CYCLE_TIME_P90_HOURS, p90, len(hours), None))
    for (site, step), ids in sorted(reached.items()):
        per_batch = devs_step[(site, step)] / len(ids)
        out.append((site, step, Metric.DEVIATIONS_PER_BATCH, per_batch, len(ids), None))
    for site, (completed, failed) in sorted(done.items()):
        ci = wilson_interval(completed, completed + failed)
        if ci is not None:
            rate = completed / (completed + failed)
            out.append((site, None, Metric.SUCCESS_RATE, rate, completed + failed, ci))
    for site, n in sorted(started.items()):
        out.append((site, None, Metric.DEVIATIONS_PER_BATCH, devs_site[site] / n, n, None))
    for site, counts in sorted(sensors.items()):
        if counts.samples > 0:
            share = (counts.samples - counts.outside_alert) / counts.samples
            out.append((site, None, Metric.SENSOR_CONTROL, share, counts.samples, None))
    for site, lane_hours in sorted(available.items()):
        if lane_hours > 0:
            lane_day_count = lane_hours / 24
            completed = done[site][0] if site in done else 0
            rate = completed / lane_day_count
            out.append((site, None, Metric.THROUGHPUT_PER_LANE_DAY, rate, completed, None))
    return out


def performance(
    all_batches: Iterable[Batch],
    triaged: Iterable[TriagedDeviation],
    sensors: Mapping[str, SensorCounts],
    lane_days: Iterable[LaneDay],
) -> list[PerformanceRow]:
    """Every metric per site (and step), with the network median of the same metric and step."""
    rows = _site_metrics(all_batches, triaged, sensors, lane_days)
    by_key: dict[tuple[ProcessStep | None, Metric], list[float]] = defaultdict(list)
    for _, step, metric, value, _, _ in rows:
        by_key[(step, metric)].append(value)
    out = []
    for site, step, metric, value, n, ci in rows:
        net = median(by_key[(step, metric)])
        assert net is not None
        out.append(
            PerformanceRow(site, step, metric, value, n, ci[0] if ci else None, ci[1] if ci else None, net)
        )
    return out
