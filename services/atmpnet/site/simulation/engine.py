"""The simulation: plan the network's month up front, then emit its events in publication order.

Everything but the sensor summaries (steps, deviations, configurations, baselines: thousands)
is built into one sorted list; the sensor summaries (millions at one-minute windows) are made
window by window and merged in. Events are assembled without pydantic validation: they are
valid by construction, and the tests validate every event of short runs to prove it.

At emission each event gets its stream's next sequence and, with ``NetworkConfig.chain``, its
``previous_hash``: the chain hash (``contract.chain``) of the stream's previous event, i.e.
SHA-256 of its Avro body under the latest schema, exactly the bytes the publisher will
encode (the compiled writer of ``site/record_writer.py``; for sensor summaries the same bytes
from reused fragments, ``sensor_bodies.py``). Integrity faults
(``faults.py``) are applied before the hash, so a chain over faulty events is still intact: the
faults are in what was produced, not tampering after it.
"""

from __future__ import annotations

import hashlib
import heapq
import random
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, SafeUUID

from atmpnet.contract.catalog import SchemaCatalog
from atmpnet.contract.codec import HEADER, AvroCodec
from atmpnet.contract.events import (
    EVENT_TYPES,
    BatchStep,
    Component,
    ComponentKind,
    Deviation,
    DeviationTransition,
    Envelope,
    Event,
    ModuleConfiguration,
    ProcessStep,
    Producer,
    ProducerKind,
    SensorSummary,
    StepResults,
    StepTransition,
    ValidatedBaseline,
)
from atmpnet.errors import SimulationError
from atmpnet.site.simulation.batches import (
    US_PER_HOUR,
    US_PER_MINUTE,
    PlannedBatch,
    plan_module_downtimes,
    plan_site_batches,
)
from atmpnet.site.simulation.deviations import PlannedDeviation, plan_site_deviations
from atmpnet.site.simulation.faults import FaultPlan, fault_records, plan_site_faults
from atmpnet.site.simulation.network import Module, NetworkConfig, SiteProfile, site_modules
from atmpnet.site.simulation.rollouts import (
    PlannedBaseline,
    PlannedConfiguration,
    drift_intervals,
    plan_rollouts,
)
from atmpnet.site.simulation.sensor_bodies import SensorBodies
from atmpnet.site.simulation.sensors import (
    SAMPLE_SECONDS,
    EffectKind,
    ParameterSpec,
    SensorEffect,
    effect_window,
    normal_window,
    parameters_for,
)
from atmpnet.site.simulation.truth import (
    DEVIATION_CLASSES,
    SEVERITIES,
    DriftInterval,
    GroundTruth,
    SiteTruth,
    classify,
)

NETWORK_QUALITY = "network-quality"
_new = object.__new__
_set = object.__setattr__

# (published_us, group, index, stream, event type, envelope fields, event fields)
Pending = tuple[int, int, int, str, type[Event], dict[str, Any], dict[str, Any]]


_VERSION_4_CLEAR = ~((0xC000 << 48) | (0xF000 << 64))
_VERSION_4_SET = (0x8000 << 48) | (4 << 76)


def _uuid4(bits: int) -> UUID:
    """``UUID(int=bits, version=4)`` without its argument checks (twice as fast)."""
    value = _new(UUID)
    _set(value, "int", (bits & _VERSION_4_CLEAR) | _VERSION_4_SET)
    _set(value, "is_safe", SafeUUID.unknown)
    return value


def _assemble(cls: type[Any], fields: dict[str, Any]) -> Any:
    """A model from fields that are valid by construction (what model_construct does, 10x faster)."""
    obj = _new(cls)
    _set(obj, "__dict__", fields)
    _set(obj, "__pydantic_fields_set__", set(fields))
    _set(obj, "__pydantic_extra__", None)
    _set(obj, "__pydantic_private__", None)
    return obj


def _envelope(
    site_id: str | None,
    module_id: str | None,
    lane: int | None,
    batch_id: str | None,
    occurred_at: datetime,
    published_at: datetime,
    producer: Producer | None,
    schema_version: int,
) -> dict[str, Any]:
    # event_id and sequence are given at emission, in publication order
    return {
        "event_id": None,
        "site_id": site_id,
        "module_id": module_id,
        "lane": lane,
        "batch_id": batch_id,
        "occurred_at": occurred_at,
        "published_at": published_at,
        "sequence": 0,
        "previous_hash": None,
        "producer": producer,
        "schema_version": schema_version,
    }


@dataclass
class SitePlan:
    """Everything planned for one site."""

    profile: SiteProfile
    modules: list[Module]
    batches: list[PlannedBatch]
    deviations: list[PlannedDeviation]
    effects: dict[tuple[str, int], list[SensorEffect]]
    downtimes: dict[str, list[tuple[int, int]]]


@dataclass
class _LaneTrack:
    """Walks one lane's busy segments and sensor effects window by window."""

    site_id: str
    module_id: str
    lane: int
    # (start, end, batch_id, parameters, busy start, busy end): one per step, from its start to the
    # next step's start
    segments: list[tuple[int, int, str, tuple[ParameterSpec, ...], int, int]]
    effects: list[SensorEffect]
    segment: int = 0
    effect: int = 0
    active: list[SensorEffect] = field(default_factory=list)


def body_writers(catalog: SchemaCatalog) -> dict[type[Event], Callable[[Event], bytes]]:
    """Per event type, a function giving the event's Avro body (its wire format minus the header).

    The compiled writers of the publisher with an empty header; the codec where a schema has no
    compiled writer. ``sha256`` of the result is ``contract.chain.payload_hash`` of the payload.
    """
    from atmpnet.site.record_writer import Unsupported, compile_writer

    out: dict[type[Event], Callable[[Event], bytes]] = {}
    for event_type in EVENT_TYPES:
        try:
            out[event_type] = compile_writer(catalog.latest(event_type.subject()).schema, b"")
        except Unsupported:  # pragma: no cover - every committed schema compiles today
            codec = AvroCodec(catalog)
            out[event_type] = lambda event, codec=codec: codec.encode(event)[HEADER.size :]  # type: ignore[misc]
    return out


class Simulation:
    """A deterministic simulated network: same config and seed, same events and truth."""

    def __init__(self, config: NetworkConfig, catalog: SchemaCatalog | None = None) -> None:
        """Plan the run; ``catalog`` (default: the settings' schema directory) encodes for the chain."""
        self.config = config
        self._catalog = catalog
        self.faults: FaultPlan | None = FaultPlan() if config.integrity_faults is not None else None
        self.start = config.start.astimezone(UTC)
        self.end_us = int(config.days * 24 * US_PER_HOUR)
        self.end = self.start + timedelta(microseconds=self.end_us)
        self.window_us = config.sensor_window_minutes * US_PER_MINUTE
        self.sites: list[SitePlan] = []
        self._truth: GroundTruth | None = None
        self._plan()

    # --- planning -------------------------------------------------------------------------

    def _plan(self) -> None:
        seed = self.config.seed
        modules_all: list[Module] = []
        for profile in self.config.site_profiles():
            rng = random.Random(f"{seed}/{profile.site_id}/plan")
            modules = site_modules(profile)
            rate = profile.deviation_rates.module_downtimes_per_module_day
            downtimes = {m.module_id: plan_module_downtimes(m, rate, self.end_us, rng) for m in modules}
            batches = plan_site_batches(profile, modules, downtimes, self.end_us, rng)
            deviations, effects = plan_site_deviations(profile, modules, batches, downtimes, self.end_us, rng)
            if self.faults is not None and self.config.integrity_faults is not None:
                # their own random stream: the clean plan is the same with faults on
                plan_site_faults(
                    profile.site_id,
                    modules,
                    batches,
                    self.end_us,
                    self.config.integrity_faults,
                    random.Random(f"{seed}/{profile.site_id}/faults"),
                    self.faults,
                )
            self.sites.append(SitePlan(profile, modules, batches, deviations, effects, downtimes))
            modules_all.extend(modules)
        self.modules = modules_all
        self.configurations, self.baselines = plan_rollouts(
            modules_all, self.end_us, random.Random(f"{seed}/rollouts")
        )

    # --- emission -------------------------------------------------------------------------

    def _at(self, us: int) -> datetime:
        return self.start + timedelta(microseconds=us)

    def events(self) -> Iterator[Event]:
        """Every event in publication order (published_at, then a stable tiebreak)."""
        ids = random.Random(f"{self.config.seed}/event-ids")
        getrandbits = ids.getrandbits
        sequences: dict[str, int] = {}
        producers = {
            m.module_id: Producer(
                kind=ProducerKind.MODULE_CONTROLLER,
                id=f"ctl-{m.serial_number}",
                software_version=m.module_type.components[0].version,
            )
            for m in self.modules
        }
        counts: Counter[type[Event]] = Counter()
        chain_hash = self._chain_hasher() if self.config.chain else None
        heads: dict[str, str] = {}  # stream -> chain hash of its last event
        faults = self.faults
        drops = faults.drops if faults else {}
        skews = faults.skews if faults else {}
        watched = faults.watched_batches() if faults else set()
        for published_us, _, _, stream, cls, env, body in heapq.merge(
            self._fact_events(), self._sensor_events()
        ):
            sequence = sequences.get(stream, 0) + 1
            sequences[stream] = sequence
            env["event_id"] = _uuid4(getrandbits(128))
            env["sequence"] = sequence
            if cls is ModuleConfiguration:
                producers[stream] = env["producer"]  # the controller now runs this version
            elif env["producer"] is None:
                env["producer"] = producers[stream]
            skew = skews.get(stream) if skews else None
            if skew is not None and skew.start_us <= published_us < skew.end_us:
                env["published_at"] = self._at(published_us + skew.offset_us)  # the clock is off
            else:
                skew = None
            if chain_hash is not None:
                env["previous_hash"] = heads.get(stream)
            body["envelope"] = _assemble(Envelope, env)
            event = _assemble(cls, body)
            if chain_hash is not None:
                heads[stream] = chain_hash(cls, env, body, event)
            if faults is not None:
                drop = drops.get(stream) if drops else None
                if drop is not None and drop.takes(published_us, cls is SensorSummary):
                    drop.dropped.append((sequence, str(env["event_id"])))
                    continue  # produced and chained, then lost in transit: never emitted
                if skew is not None:
                    skew.affected.append((sequence, str(env["event_id"])))
                if cls is BatchStep and env["batch_id"] in watched:
                    faults.seen.setdefault(env["batch_id"], []).append(
                        (body["step"], body["transition"], env["lane"], sequence, str(env["event_id"]))
                    )
            counts[cls] += 1
            yield event
        self._truth = self._ground_truth(counts)

    def _schemas(self) -> SchemaCatalog:
        if self._catalog is None:
            from atmpnet.settings import get_settings

            self._catalog = SchemaCatalog.load(get_settings().schema_dir)
        return self._catalog

    def _chain_hasher(self) -> Callable[[type[Event], dict[str, Any], dict[str, Any], Event], str]:
        """The chain hash of an event: SHA-256 of its Avro body (sensor summaries the fast way)."""
        writers = body_writers(self._schemas())
        sensor_body = SensorBodies(
            self._schemas().latest(SensorSummary.subject()).schema, writers[SensorSummary]
        ).body
        sha256 = hashlib.sha256

        def chain_hash(cls: type[Event], env: dict[str, Any], body: dict[str, Any], event: Event) -> str:
            if cls is SensorSummary:
                return sha256(sensor_body(env, body, event)).hexdigest()
            return sha256(writers[cls](event)).hexdigest()

        return chain_hash

    @property
    def ground_truth(self) -> GroundTruth:
        """The truth of the run; available once ``events()`` has been exhausted."""
        if self._truth is None:
            raise SimulationError("the ground truth is known once every event has been emitted")
        return self._truth

    def _fact_events(self) -> Iterator[Pending]:
        """Steps, deviations, configurations and baselines, sorted by publication time."""
        delays = random.Random(f"{self.config.seed}/delays")
        low, high = (int(x * 1_000_000) for x in self.config.publish_delay_seconds)
        items: list[Pending] = []

        def add(
            occurred: int, stream: str, cls: type[Event], env: dict[str, Any], body: dict[str, Any]
        ) -> None:
            published = occurred + delays.randint(low, high)
            env["published_at"] = self._at(published)
            items.append((published, 0, len(items), stream, cls, env, body))

        for baseline in self.baselines:
            self._baseline_event(baseline, add)
        for config in self.configurations:
            self._configuration_event(config, add)
        for site in self.sites:
            for batch in site.batches:
                self._step_events(batch, add)
            for deviation in site.deviations:
                self._deviation_events(deviation, add)
        for injected in self.faults.starts if self.faults else ():
            self._step_events(injected.batch, add)
        items.sort()
        return iter(items)

    def _step_events(self, batch: PlannedBatch, add: Any) -> None:
        module = batch.module
        lims = Producer(kind=ProducerKind.SITE_MES, id=f"lims-{module.site_id}")
        swaps = self.faults.swaps if self.faults else None
        for step in batch.steps:
            producer = lims if step.step is ProcessStep.QC_RELEASE else None
            lane = batch.lane
            if swaps and self.faults is not None:
                lane = self.faults.swapped_lane(batch.batch_id, step.step) or lane
            for transition, at in ((StepTransition.STARTED, step.started), (step.outcome, step.ended)):
                if at >= self.end_us:
                    return
                occurred = self._at(at)
                env = _envelope(
                    module.site_id,
                    module.module_id,
                    lane,
                    batch.batch_id,
                    occurred,
                    occurred,
                    producer,
                    BatchStep.SCHEMA_VERSION,
                )
                done = transition is StepTransition.COMPLETED
                body = {
                    "envelope": None,
                    "transition": transition,
                    "step": step.step,
                    "product_code": batch.product_code,
                    "attempt": 1,
                    "expected_duration_minutes": step.expected_minutes
                    if transition is StepTransition.STARTED
                    else None,
                    "results": StepResults(**step.results) if done and step.results else None,
                    "failure_reason": None if transition is StepTransition.STARTED else step.failure_reason,
                    "performed_by": batch.operator,
                }
                add(at, module.module_id, BatchStep, env, body)

    def _deviation_events(self, dev: PlannedDeviation, add: Any) -> None:
        producer: Producer | None = None
        if dev.alarm_code.startswith("ENV-"):
            producer = Producer(kind=ProducerKind.OTHER, id=f"ems-{dev.site_id}")
        elif dev.alarm_code.startswith("DAT-"):
            producer = Producer(kind=ProducerKind.HISTORIAN, id=f"historian-{dev.site_id}")
        lifecycle = [(DeviationTransition.RAISED, dev.raised_at)]
        if dev.updated_at is not None and dev.updated_at < dev.closed_at:
            lifecycle.append((DeviationTransition.UPDATED, dev.updated_at))
        lifecycle.append((DeviationTransition.CLOSED, dev.closed_at))
        for transition, at in lifecycle:
            if at >= self.end_us:
                return
            occurred = self._at(at)
            env = _envelope(
                dev.site_id,
                dev.module_id,
                dev.lane,
                dev.batch_id,
                occurred,
                occurred,
                producer,
                Deviation.SCHEMA_VERSION,
            )
            body = {
                "envelope": None,
                "deviation_id": dev.deviation_id,
                "transition": transition,
                "step": dev.step,
                "parameter": dev.parameter,
                "observed_value": dev.observed_value,
                "unit": dev.unit,
                "limit_low": dev.limit_low,
                "limit_high": dev.limit_high,
                "duration_seconds": dev.duration_seconds,
                "detection_source": dev.detection_source,
                "raised_by": dev.raised_by,
                "alarm_code": dev.alarm_code,
                "description": dev.description,
                "resolution": dev.resolution if transition is DeviationTransition.CLOSED else None,
            }
            add(at, dev.module_id, Deviation, env, body)

    @staticmethod
    def _components(module_type: str, specs: Any) -> list[Component]:
        return [
            Component(kind=c.kind, name=c.name, version=c.version, content_hash=c.content_hash(module_type))
            for c in specs
        ]

    def _configuration_event(self, config: PlannedConfiguration, add: Any) -> None:
        m = config.module
        controller = next(c for c in config.components if c.kind is ComponentKind.CONTROL_SOFTWARE)
        producer = Producer(
            kind=ProducerKind.MODULE_CONTROLLER,
            id=f"ctl-{m.serial_number}",
            software_version=controller.version,
        )
        occurred = self._at(config.at)
        env = _envelope(
            m.site_id,
            m.module_id,
            None,
            None,
            occurred,
            occurred,
            producer,
            ModuleConfiguration.SCHEMA_VERSION,
        )
        body = {
            "envelope": None,
            "module_type": m.module_type.name,
            "serial_number": m.serial_number,
            "lanes": m.lanes,
            "components": self._components(m.module_type.name, config.components),
            "change_reason": config.change_reason,
        }
        add(config.at, m.module_id, ModuleConfiguration, env, body)

    def _baseline_event(self, baseline: PlannedBaseline, add: Any) -> None:
        occurred = self._at(baseline.at)
        producer = Producer(kind=ProducerKind.NETWORK_QUALITY, id=NETWORK_QUALITY)
        env = _envelope(
            None, None, None, None, occurred, occurred, producer, ValidatedBaseline.SCHEMA_VERSION
        )
        body = {
            "envelope": None,
            "baseline_id": baseline.baseline_id,
            "module_type": baseline.module_type.name,
            "components": self._components(baseline.module_type.name, baseline.components),
            "approved_by": "qa-network-lead",
            "approved_at": occurred,
            "effective_from": self._at(baseline.effective),
            "change_reference": baseline.change_reference,
        }
        add(baseline.at, NETWORK_QUALITY, ValidatedBaseline, env, body)

    def _lane_tracks(self) -> list[_LaneTrack]:
        tracks: dict[tuple[str, int], _LaneTrack] = {}
        for site in self.sites:
            for m in site.modules:
                for lane in range(1, m.lanes + 1):
                    effects = site.effects.get((m.module_id, lane), [])
                    tracks[(m.module_id, lane)] = _LaneTrack(m.site_id, m.module_id, lane, [], effects)
            for batch in site.batches:
                segments = tracks[(batch.module.module_id, batch.lane)].segments
                steps = batch.on_module_steps()
                for i, step in enumerate(steps):
                    stop = steps[i + 1].started if i + 1 < len(steps) else batch.busy_end
                    segments.append(
                        (
                            step.started,
                            stop,
                            batch.batch_id,
                            parameters_for(step.step),
                            steps[0].started,
                            batch.busy_end,
                        )
                    )
        for track in tracks.values():
            track.segments.sort(key=lambda s: s[0])
        return list(tracks.values())

    def _sensor_events(self) -> Iterator[Pending]:
        """Sensor summaries window by window: each busy lane, each parameter of its step."""
        rng = random.Random(f"{self.config.seed}/sensors")
        random_ = rng.random
        low, high = (int(x * 1_000_000) for x in self.config.publish_delay_seconds)
        span = high - low
        window = self.window_us
        count = self.config.sensor_window_minutes * 60 // SAMPLE_SECONDS
        tracks = self._lane_tracks()
        at = self._at
        index = 0
        ws = 0
        while ws + window < self.end_us:
            we = ws + window
            window_start, window_end = at(ws), at(we)
            out: list[Pending] = []
            for track in tracks:
                segments = track.segments
                i = track.segment
                while i < len(segments) and segments[i][1] <= ws:
                    i += 1
                track.segment = i
                if i == len(segments) or segments[i][0] >= we:
                    continue
                _, _, batch_id, parameters, busy_start, busy_end = segments[i]
                samples = count
                if busy_start > ws or busy_end < we:  # the batch's first or last window: partly busy
                    samples = max(1, count * (min(we, busy_end) - max(ws, busy_start)) // window)
                active = self._active_effects(track, ws, we)
                if active and any(e.kind is EffectKind.GAP for e in active):
                    continue
                for spec in parameters:
                    effect = next((e for e in active if e.parameter == spec.name), None) if active else None
                    if effect is None:
                        stats = normal_window(spec, samples, rng)
                    else:
                        stats = effect_window(spec, samples, effect, ws, we, rng)
                    published = we + low + int(span * random_())
                    env = _envelope(
                        track.site_id,
                        track.module_id,
                        track.lane,
                        batch_id,
                        window_end,
                        at(published),
                        None,
                        SensorSummary.SCHEMA_VERSION,
                    )
                    body = {
                        "envelope": None,
                        "window_start": window_start,
                        "window_end": window_end,
                        "parameter": spec.name,
                        "unit": spec.unit,
                        "count": stats[0],
                        "min": stats[1],
                        "max": stats[2],
                        "mean": stats[3],
                        "stddev": stats[4],
                        "last": stats[5],
                        "alert_low": spec.alert[0],
                        "alert_high": spec.alert[1],
                        "action_low": spec.action[0],
                        "action_high": spec.action[1],
                        "samples_outside_alert": stats[6],
                        "samples_outside_action": stats[7],
                    }
                    out.append((published, 1, index, track.module_id, SensorSummary, env, body))
                    index += 1
            out.sort()
            yield from out
            ws = we

    @staticmethod
    def _active_effects(track: _LaneTrack, ws: int, we: int) -> list[SensorEffect]:
        """The lane's effects that overlap [ws, we); windows come in increasing order."""
        effects, active = track.effects, track.active
        j = track.effect
        while j < len(effects) and effects[j].start < we:
            active.append(effects[j])
            j += 1
        track.effect = j
        if active:
            active[:] = [e for e in active if e.end > ws]
        return active

    # --- ground truth ---------------------------------------------------------------------

    def _ground_truth(self, counts: Counter[type[Event]]) -> GroundTruth:
        end = self.end_us
        sites = {}
        for site in self.sites:
            started = completed = failed = 0
            busy_by_lane = {
                f"{m.module_id}/{lane}": 0 for m in site.modules for lane in range(1, m.lanes + 1)
            }
            for batch in site.batches:
                if batch.busy_start >= end:
                    continue
                started += 1
                last = batch.steps[-1]
                if last.ended < end:
                    if last.outcome is StepTransition.COMPLETED:
                        completed += 1
                    else:
                        failed += 1
                busy_by_lane[f"{batch.module.module_id}/{batch.lane}"] += (
                    min(batch.busy_end, end) - batch.busy_start
                )
            by_class = dict.fromkeys(DEVIATION_CLASSES, 0)
            by_severity = dict.fromkeys(SEVERITIES, 0)
            for klass, sev in classify(site.deviations, end).values():
                by_class[klass] += 1
                by_severity[sev] += 1
            drift = {
                m.module_id: [
                    DriftInterval(opened_at=self._at(o), closed_at=None if c is None else self._at(c))
                    for o, c in drift_intervals(m, self.configurations, self.baselines, end)
                ]
                for m in site.modules
            }
            hours = {k: v / US_PER_HOUR for k, v in busy_by_lane.items()}
            sites[site.profile.site_id] = SiteTruth(
                site_id=site.profile.site_id,
                modules=[m.module_id for m in site.modules],
                lanes=sum(m.lanes for m in site.modules),
                batches_started=started,
                batches_completed=completed,
                batches_failed=failed,
                batches_in_progress=started - completed - failed,
                deviations_by_class=by_class,
                deviations_by_severity=by_severity,
                drift_intervals=drift,
                lane_busy_hours=sum(busy_by_lane.values()) / US_PER_HOUR,
                lane_busy_hours_by_lane=hours,
            )
        return GroundTruth(
            seed=self.config.seed,
            start=self.start,
            end=self.end,
            sensor_window_minutes=self.config.sensor_window_minutes,
            sites=sites,
            event_counts={t.__name__: counts[t] for t in EVENT_TYPES},
            total_events=sum(counts.values()),
            integrity=fault_records(self.faults, list(sites))
            if self.faults is not None
            else {site: [] for site in sites},
        )
