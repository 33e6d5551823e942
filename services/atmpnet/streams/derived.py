"""Derived streams: triaged deviations, drift changes and integrity deviations, after each refresh.

What is published is a pure function of the event store, like the views: each deviation's
first triage and each change of its status (``atmp.deviation-triage.v1``), and each drift
interval's opening and closing (``atmp.config-drift.v1``). Every derived event has a
deterministic id (uuid5 of what it says: deviation, status, class, severity, priority and
duplicate_of; module, opening and change), so a replay, a rebuild or a crash between publishing
and recording publishes the same ids again, never new ones, while a change of what a triage
says (a late RAISED makes a deviation a duplicate, or no longer one) is a new event;
subscribers dedupe by ``envelope.event_id``. Ids already acknowledged by the broker are recorded
in ``derived_published`` and not produced again.

Publication is never in the way of ingest: a failure (broker down, topic missing) is logged,
counted (``atmpnet.derived.publish_failures``) and retried later from the views, which imply
the same events again; ``derived_published`` keeps what was sent from being sent twice.

Each data-integrity finding of the views (``integrity_findings``) is raised as a ``Deviation``
on the deviations topic (producer kind PROCESSOR, ``deviation_id`` = the finding id, alarm code
``DAT-...``), so it is ingested, stored and triaged like any other deviation. The integrity rules
leave the platform's own deviations out, so raising one never causes another.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any
from uuid import UUID, uuid5

from clickhouse_connect.driver.client import Client
from confluent_kafka import KafkaError, KafkaException, Message, Producer

from atmpnet import telemetry
from atmpnet.contract.codec import AvroCodec
from atmpnet.contract.events import (
    DERIVED_EVENT_TYPES,
    ConfigDrift,
    DetectionSource,
    Deviation,
    DeviationClass,
    DeviationStatus,
    DeviationTransition,
    DeviationTriage,
    DriftChange,
    DriftedComponent,
    Envelope,
    Event,
    ProducerKind,
    Severity,
)
from atmpnet.contract.events import Producer as EventProducer
from atmpnet.errors import AtmpError
from atmpnet.rules import drift, integrity, triage
from atmpnet.settings import Settings
from atmpnet.streams.ingest import WrittenBatch
from atmpnet.transport import ensure_topics, producer_config
from atmpnet.warehouse.chain_heads import PLATFORM_PRODUCER_KIND
from atmpnet.warehouse.views import RefreshResult, ViewSet, refresh_views

log = logging.getLogger(__name__)
_published = telemetry.meter("atmpnet.streams.derived").create_counter(
    "atmpnet.derived.published", description="Derived events (triage, drift) acknowledged by the broker."
)
_publish_failures = telemetry.meter("atmpnet.streams.derived").create_counter(
    "atmpnet.derived.publish_failures",
    description="Failed publications of derived events (retried later from the views; ingest goes on).",
)

DERIVED_NAMESPACE = UUID("0b5a9d0e-3f57-4c61-9d0c-5be0a1f4e7c2")
PUBLISHED_TABLE = "derived_published"
PRODUCER = EventProducer(kind=ProducerKind.PROCESSOR, id="atmpnet-views")
INTEGRITY_PRODUCER = EventProducer(kind=ProducerKind(PLATFORM_PRODUCER_KIND), id="atmpnet-integrity")
INTEGRITY_RAISED_BY = "processor/integrity"
MAX_EVIDENCE_IN_DESCRIPTION = 12
RECORDED_LOOKUP_CHUNK = 5000  # candidate ids per derived_published lookup
_STATUS_SEQUENCE = {DeviationStatus.OPEN: 1, DeviationStatus.INVESTIGATING: 2, DeviationStatus.CLOSED: 3}


class DerivedPublishError(AtmpError):
    """The broker did not acknowledge a derived event."""


def triage_event_id(
    deviation_id: str,
    status: DeviationStatus,
    deviation_class: DeviationClass,
    severity: Severity,
    priority: int,
    duplicate_of: str | None,
) -> UUID:
    """The id of a deviation's triage in one status with one content: the same on every replay.

    Everything a subscriber acts on is in it, so a re-triage (a late RAISED makes the deviation
    a duplicate of another, or no longer one, which changes its severity and priority) is a new
    event, while recomputing an unchanged triage gives the same id.
    """
    key = f"{deviation_id}/{status}/{deviation_class}/{severity}/{priority}/{duplicate_of or ''}"
    return uuid5(DERIVED_NAMESPACE, f"deviation-triage/{key}")


def drift_event_id(module_id: str, opened_at: datetime, change: DriftChange) -> UUID:
    """The id of a drift interval's opening or closing: the same on every replay."""
    return uuid5(DERIVED_NAMESPACE, f"config-drift/{module_id}/{opened_at.isoformat()}/{change}")


def integrity_event_id(finding_id: str) -> UUID:
    """The id of the deviation event that raises an integrity finding: the same on every replay."""
    return uuid5(DERIVED_NAMESPACE, f"integrity-deviation/{finding_id}/RAISED")


def _envelope(
    event_id: UUID,
    at: datetime,
    sequence: int,
    producer: EventProducer,
    schema_version: int,
    **where: Any,
) -> Envelope:
    return Envelope(
        event_id=event_id,
        occurred_at=at,
        published_at=datetime.now(UTC),
        sequence=sequence,
        producer=producer,
        schema_version=schema_version,
        **where,
    )


def integrity_description(f: integrity.Finding) -> str:
    """What the deviation says: the finding's message (module, sequences) and its evidence ids."""
    ids = list(f.evidence)
    shown = ", ".join(ids[:MAX_EVIDENCE_IN_DESCRIPTION])
    more = len(ids) - MAX_EVIDENCE_IN_DESCRIPTION
    evidence = (
        f"{shown} and {more} more (GET /api/v1/attribution?view=integrity_findings)" if more > 0 else shown
    )
    seqs = f" Sequences: {'-'.join(str(n) for n in f.sequences)}." if f.sequences else ""
    return f"{f.message}.{seqs} Evidence (event ids): {evidence}."[:4000]


def integrity_deviations(findings: Sequence[integrity.Finding]) -> list[Deviation]:
    """A RAISED data-integrity deviation per finding, at the time of its latest evidence.

    A finding on a producer's stream (no module) names the producer as the module; a finding
    with no site (the network's baseline stream) has no site to raise it at and is left to the
    integrity view.
    """
    out = []
    for f in sorted(findings, key=lambda f: f.finding_id):
        at = f.last_at or f.first_at
        if not f.site_id or at is None:
            continue
        module = f.module_id or f.stream.split("/", 1)[-1]
        out.append(
            Deviation(
                envelope=_envelope(
                    integrity_event_id(f.finding_id),
                    at,
                    1,
                    INTEGRITY_PRODUCER,
                    Deviation.SCHEMA_VERSION,
                    site_id=f.site_id,
                    module_id=module,
                    lane=f.lane,
                    batch_id=f.batch_id,
                ),
                deviation_id=f.finding_id,
                transition=DeviationTransition.RAISED,
                detection_source=DetectionSource.SYSTEM,
                raised_by=INTEGRITY_RAISED_BY,
                alarm_code=f.alarm_code,
                description=integrity_description(f),
            )
        )
    return out


def triage_events(changes: Sequence[triage.TriageChange]) -> list[DeviationTriage]:
    """The triage stream's events for these changes."""
    out = []
    for c in changes:
        t = c.triaged
        out.append(
            DeviationTriage(
                envelope=_envelope(
                    triage_event_id(
                        c.deviation_id, c.status, t.deviation_class, t.severity, t.priority, t.duplicate_of
                    ),
                    c.changed_at,
                    _STATUS_SEQUENCE[c.status],
                    PRODUCER,
                    DeviationTriage.SCHEMA_VERSION,
                    site_id=t.site_id,
                    module_id=t.module_id,
                    lane=t.lane,
                    batch_id=t.batch_id,
                ),
                deviation_id=t.deviation_id,
                status=c.status,
                deviation_class=t.deviation_class,
                severity=t.severity,
                priority=t.priority,
                raised_at=t.raised_at,
                due_at=t.due_at,
                closed_at=c.changed_at if c.status is DeviationStatus.CLOSED else None,
                step=t.step,
                parameter=t.parameter,
                alarm_code=t.alarm_code,
                duplicate_of=t.duplicate_of,
                software_versions=t.software_versions,
                module_cluster=t.module_cluster,
                module_cluster_size=t.module_cluster_size,
                version_cluster=t.version_cluster,
                version_cluster_sites=t.version_cluster_sites,
            )
        )
    return out


def drift_events(intervals: Sequence[drift.DriftInterval]) -> list[ConfigDrift]:
    """The drift stream's events: each interval's OPENED and, once closed, its CLOSED."""
    out = []
    index: dict[str, int] = {}
    for i in sorted(intervals, key=lambda i: (i.module_id, i.opened_at)):
        k = index[i.module_id] = index.get(i.module_id, -1) + 1
        components = [
            DriftedComponent(
                name=c.name,
                kind=c.kind,
                running_version=c.running_version,
                baseline_version=c.baseline_version,
                status=c.status,
            )
            for c in i.components
        ]
        changes = [(DriftChange.OPENED, i.opened_at)]
        if i.closed_at is not None:
            changes.append((DriftChange.CLOSED, i.closed_at))
        for n, (change, at) in enumerate(changes):
            out.append(
                ConfigDrift(
                    envelope=_envelope(
                        drift_event_id(i.module_id, i.opened_at, change),
                        at,
                        2 * k + n + 1,
                        PRODUCER,
                        ConfigDrift.SCHEMA_VERSION,
                        site_id=i.site_id,
                        module_id=i.module_id,
                    ),
                    change=change,
                    module_type=i.module_type,
                    opened_at=i.opened_at,
                    closed_at=i.closed_at if change is DriftChange.CLOSED else None,
                    components=components,
                )
            )
    return out


def derived_events(views: ViewSet) -> list[Event]:
    """Every derived event the views imply: triage, drift, then integrity deviations."""
    facts = views.facts
    if facts.as_of is None:
        return []
    changes = triage.triage_changes(facts.deviations, facts.configs, facts.as_of)
    return [
        *triage_events(changes),
        *drift_events(views.drift_intervals),
        *integrity_deviations([f for f in views.findings if f.finding_id in views.settled]),
    ]


@dataclass
class _Attempt:
    """One publication's delivery reports (served by poll/flush on the publishing thread)."""

    acked: list[Event] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    open: bool = True


@dataclass
class DerivedPublisher:
    """Publishes the derived events not yet acknowledged, and records them once acknowledged."""

    producer_config: dict[str, Any]
    codec: AvroCodec
    topics: dict[type[Event], str] | None = None
    timeout_s: float = 30.0

    def __post_init__(self) -> None:
        self._producer = Producer(self.producer_config)
        # ids of current candidates known to be in derived_published: a refresh asks the table
        # only about candidates not seen before (a handful), never reads the whole table
        self._recorded: set[UUID] = set()
        # acknowledged after the attempt that produced them gave up: recorded at the next one
        self._late: dict[UUID, Event] = {}
        self.failures = 0  # failed publications since start
        self.failing = 0  # failed publications since the last one that succeeded

    def topic(self, event_type: type[Event]) -> str:
        """Where events of this type go."""
        return (self.topics or {}).get(event_type, event_type.TOPIC)

    def publish(self, client: Client, views: ViewSet) -> int:
        """Publish the views' derived events that were not published before; return how many.

        Raises ``DerivedPublishError`` when the broker did not acknowledge them all; those it
        did acknowledge are recorded all the same, so a retry sends only the rest.
        """
        events = derived_events(views)
        self._producer.poll(0)  # late delivery reports of an earlier attempt
        self._record_late(client)
        todo = self._unrecorded(client, events)
        if not todo:
            return 0
        attempt = _Attempt()
        refused: Exception | None = None
        for e in todo:
            try:
                self._producer.produce(
                    self.topic(type(e)),
                    self.codec.encode(e),
                    key=e.partition_key().encode(),
                    on_delivery=partial(self._delivered, attempt, e),
                )
            except (KafkaException, BufferError) as exc:  # queue full, topic refused: the rest later
                refused = exc
                break
            self._producer.poll(0)
        left = self._producer.flush(self.timeout_s)
        attempt.open = False
        failed = len(attempt.failures)  # before the purge adds its own reports
        if left:
            # never sent: drop them, the retry produces them again (in flight: reported late)
            self._producer.purge(in_queue=True, in_flight=False)
            self._producer.poll(0)
        self._record(client, attempt.acked)
        if left or failed or refused is not None:
            raise DerivedPublishError(
                f"{len(todo) - len(attempt.acked)} of {len(todo)} derived events not acknowledged "
                f"({left} unsent after {self.timeout_s:g}s, {failed} failed"
                f"{f', produce refused: {refused}' if refused is not None else ''}): {attempt.failures[:3]}"
            )
        log.debug("published %d derived events", len(todo))
        return len(todo)

    def try_publish(self, client: Client, views: ViewSet) -> bool:
        """``publish``, but a failure is logged and counted, not raised: False means retry later.

        The views imply the same events again, so a later attempt (from these or newer views)
        sends what this one could not, and ``derived_published`` keeps the rest from repeating.
        """
        try:
            self.publish(client, views)
        except Exception as exc:  # any failure: publication is recomputable, ingest must go on
            self.failures += 1
            self.failing += 1
            _publish_failures.add(1)
            log.error(
                "publishing derived events failed (%d in a row); ingest goes on, they are sent "
                "from the views at the next attempt: %s",
                self.failing,
                exc,
            )
            return False
        if self.failing:
            log.warning("derived events published again after %d failed attempts", self.failing)
            self.failing = 0
        return True

    def _delivered(self, attempt: _Attempt, event: Event, err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            attempt.failures.append(str(err))
        elif attempt.open:
            attempt.acked.append(event)
        else:
            self._late[event.envelope.event_id] = event

    def _record_late(self, client: Client) -> None:
        if self._late:
            late = list(self._late.values())
            self._late.clear()
            self._record(client, late)

    def _unrecorded(self, client: Client, events: Sequence[Event]) -> list[Event]:
        """The events whose ids are not in ``derived_published``, asking it only about new ids."""
        candidates = {e.envelope.event_id for e in events}
        self._recorded &= candidates  # ids no view implies any more need no memory
        unknown = [i for i in candidates if i not in self._recorded]
        for n in range(0, len(unknown), RECORDED_LOOKUP_CHUNK):
            chunk = unknown[n : n + RECORDED_LOOKUP_CHUNK]
            rows = client.query(
                f"SELECT event_id FROM {PUBLISHED_TABLE} FINAL WHERE event_id IN %(ids)s",  # noqa: S608
                parameters={"ids": chunk},
                settings={"max_query_size": 64 * len(chunk) + 65536},  # ~40 bytes of SQL per id
            ).result_rows
            self._recorded.update(r[0] for r in rows)
        return [e for e in events if e.envelope.event_id not in self._recorded]

    def _record(self, client: Client, events: Sequence[Event]) -> None:
        if not events:
            return
        now = datetime.now(UTC)
        client.insert(
            PUBLISHED_TABLE,
            [[e.envelope.event_id, self.topic(type(e)), e.envelope.occurred_at, now] for e in events],
            column_names=["event_id", "topic", "occurred_at", "published_at"],
        )
        for e in events:
            self._recorded.add(e.envelope.event_id)
            _published.add(1, {"topic": self.topic(type(e))})


def projector_for(
    settings: Settings,
    bootstrap_servers: str | None,
    codec: AvroCodec | None = None,
    *,
    background_client: Client | None = None,
) -> ViewProjector | BackgroundProjector:
    """The hook for ``atmpnet process``: refresh the views; publish derived streams given a broker.

    With ``background_client`` (a client of its own) the views refresh on a thread, started here.
    """
    publisher = None
    if bootstrap_servers is not None:
        if codec is None:
            raise ValueError("publishing the derived streams needs a codec")
        ensure_topics(settings, bootstrap_servers, [t.TOPIC for t in DERIVED_EVENT_TYPES])
        publisher = DerivedPublisher(producer_config(settings, bootstrap_servers), codec)
    if background_client is not None:
        return BackgroundProjector(background_client, publisher).start()
    return ViewProjector(publisher)


class ViewProjector:
    """The ingest's post-write hook: refresh the views, then publish the derived streams.

    A failed refresh fails the batch (it is written and refreshed again). A failed publication
    does not: it is logged and counted, and the derived events of the newest views are sent at
    a later write, ``retry_s`` after the failure (doubling up to ``max_retry_s``, so a broker
    that is down costs the write path at most one publish timeout per retry), or by
    ``publish_pending``. The background projector retries on its own, without waiting for writes.
    """

    def __init__(
        self, publisher: DerivedPublisher | None = None, *, retry_s: float = 2.0, max_retry_s: float = 60.0
    ) -> None:
        self.publisher = publisher
        self.retry_s = retry_s
        self.max_retry_s = max_retry_s
        self.last: RefreshResult | None = None
        self._unpublished: ViewSet | None = None  # views whose derived events are not all sent
        self._retry_at = 0.0
        self._backoff = retry_s

    @property
    def pending(self) -> bool:
        """Derived events of the newest views wait for a publication that failed to be retried."""
        return self._unpublished is not None and self.publisher is not None

    def __call__(self, client: Client, written: WrittenBatch) -> None:
        """Refresh after a write that stored events (a batch of only dead letters changes nothing)."""
        touched = [t for t, stored in written.stored.items() if stored]
        result = refresh_views(client, touched)
        if result is not None:
            self.last = result
            self._unpublished = result.views
        self.publish_pending(client)

    def publish_pending(self, client: Client, *, now: bool = False) -> bool:
        """Publish the newest views' derived events once the retry is due (``now``: at once).

        True when nothing is left to publish; never raises for a publication failure.
        """
        if self._unpublished is None or self.publisher is None:
            return True
        if not now and time.monotonic() < self._retry_at:
            return False
        if self.publisher.try_publish(client, self._unpublished):
            self._unpublished = None
            self._backoff = self.retry_s
            self._retry_at = 0.0
            return True
        self._retry_at = time.monotonic() + self._backoff
        self._backoff = min(self.max_retry_s, 2 * self._backoff)
        return False


class BackgroundProjector:
    """A post-write hook that only marks the views stale; a thread of its own refreshes them.

    The ingest's write path then never waits for a refresh: after a write the views follow
    within one refresh (plus ``min_interval_s``), and successive writes coalesce into one
    refresh. The thread uses its own client (clickhouse-connect refuses concurrent queries on
    one session). The mark is set after the write it follows, so once input stops the last
    refresh sees every stored event: at rest live == rebuild still holds. A failed refresh is
    logged and retried; the event store, not the hook, is the record, so no batch is held back.
    A failed publication keeps the refreshed views and is retried from them every ``retry_s``
    (from newer views once a write marks them stale); idle means refreshed and published.
    """

    def __init__(
        self,
        client: Client,
        publisher: DerivedPublisher | None = None,
        *,
        min_interval_s: float = 0.2,
        retry_s: float = 2.0,
    ) -> None:
        self.client = client
        self.publisher = publisher
        self.min_interval_s = min_interval_s
        self.retry_s = retry_s
        self.last: RefreshResult | None = None
        self.failures = 0  # failed refreshes
        self._unpublished: ViewSet | None = None  # views whose derived events are not all sent
        self._lock = threading.Lock()  # makes "stale" and "idle" change together
        self._stale = threading.Event()
        self._idle = threading.Event()
        self._idle.set()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="atmpnet-views", daemon=True)

    @property
    def pending(self) -> bool:
        """Derived events of the newest views wait for a publication that failed to be retried."""
        return self._unpublished is not None and self.publisher is not None

    def __call__(self, _client: Client, written: WrittenBatch) -> None:
        """Mark the views stale after a write that stored events."""
        if any(written.stored.values()):
            with self._lock:
                self._idle.clear()
                self._stale.set()

    def start(self) -> BackgroundProjector:
        """Start the refresh thread (one refresh at start covers what is stored already)."""
        self._idle.clear()
        self._stale.set()
        self._thread.start()
        return self

    def wait_idle(self, timeout_s: float) -> bool:
        """Wait until no refresh or publication is due or running; False on timeout."""
        return self._idle.wait(timeout_s)

    def stop(self, timeout_s: float = 30.0) -> None:
        """Finish the refresh in progress and stop the thread."""
        self._stopping.set()
        self._stale.set()
        self._thread.join(timeout_s)

    def _publish(self) -> bool:
        """Publish the derived events of the views not yet published; True when none are left."""
        publisher, views = self.publisher, self._unpublished
        if publisher is None or views is None or publisher.try_publish(self.client, views):
            self._unpublished = None
            return True
        return False

    def _run(self) -> None:
        while not self._stopping.is_set():
            if self._unpublished is not None and not self._stale.is_set():
                # publication failed and no write came since: retry from the same views
                if not self._publish():
                    self._stopping.wait(self.retry_s)
                    continue
            elif not self._stale.wait(0.5):
                continue
            if self._stopping.is_set():
                break
            if self._stale.is_set():
                self._stale.clear()
                try:
                    result = refresh_views(self.client)
                    assert result is not None
                    self.last = result
                except Exception:  # the next mark (or the retry) refreshes from the store again
                    self.failures += 1
                    log.exception("view refresh failed; retrying in %.1fs", self.retry_s)
                    self._stale.set()
                    self._stopping.wait(self.retry_s)
                    continue
                self._unpublished = result.views
                if not self._publish():  # the refresh stands; the loop retries the publication
                    self._stopping.wait(self.retry_s)
                    continue
            with self._lock:
                if not self._stale.is_set():
                    self._idle.set()
            self._stopping.wait(self.min_interval_s)
