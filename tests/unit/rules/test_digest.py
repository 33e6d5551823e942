"""The batch review digest lists every exception of a batch, nothing of others, whatever the input order."""

from __future__ import annotations

import dataclasses
import re
import uuid
from datetime import UTC, datetime, timedelta

from atmpnet.contract.events import (
    BatchStep,
    DetectionSource,
    Deviation,
    DeviationTransition,
    Envelope,
    ProcessStep,
    Producer,
    ProducerKind,
    StepTransition,
)
from atmpnet.rules.digest import build_digest
from atmpnet.rules.digest_html import render_digest_html
from atmpnet.rules.integrity import EventFact, FindingKind, all_findings
from hypothesis import given, settings
from hypothesis import strategies as st

T0 = datetime(2026, 11, 2, 8, 0, tzinfo=UTC)
CONTROLLER = Producer(kind=ProducerKind.MODULE_CONTROLLER, id="ctl-SN4471")


class Batches:
    """Events of one module, sequenced in the order they are made (time order here)."""

    def __init__(self, module: str = "bos-m01") -> None:
        self.module = module
        self.sequence = 0
        self.events: list[BatchStep | Deviation] = []

    def envelope(self, at: datetime, lane: int | None, batch_id: str | None) -> Envelope:
        self.sequence += 1
        return Envelope(
            event_id=uuid.uuid5(uuid.NAMESPACE_URL, f"{self.module}/{self.sequence}"),
            site_id="site-boston",
            module_id=self.module,
            lane=lane,
            batch_id=batch_id,
            occurred_at=at,
            published_at=at + timedelta(seconds=1),
            sequence=self.sequence,
            producer=CONTROLLER,
            schema_version=1,
        )

    def step(
        self, batch_id: str, lane: int, step: ProcessStep, transition: StepTransition, at: datetime
    ) -> BatchStep:
        event = BatchStep(
            envelope=self.envelope(at, lane, batch_id),
            transition=transition,
            step=step,
            product_code="CART-CD19",
            failure_reason="viability below 70 %" if transition is StepTransition.FAILED else None,
            performed_by="op-jsmith" if step is ProcessStep.APHERESIS_RECEIPT else None,
        )
        self.events.append(event)
        return event

    def batch(self, batch_id: str, lane: int, start: datetime, fail_at: ProcessStep | None = None) -> None:
        t = start
        for step in ProcessStep:
            self.step(batch_id, lane, step, StepTransition.STARTED, t)
            t += timedelta(hours=2)
            ends = StepTransition.FAILED if step is fail_at else StepTransition.COMPLETED
            self.step(batch_id, lane, step, ends, t)
            if step is fail_at:
                return

    def deviation(
        self, deviation_id: str, batch_id: str, lane: int, at: datetime, transition: DeviationTransition
    ) -> Deviation:
        event = Deviation(
            envelope=self.envelope(at, lane, batch_id),
            deviation_id=deviation_id,
            transition=transition,
            step=ProcessStep.EXPANSION,
            parameter="dissolved_oxygen",
            duration_seconds=2400.0,
            detection_source=DetectionSource.SYSTEM,
            raised_by="controller/alarm-engine",
            alarm_code="PRC-DO-LOW",
            description="Dissolved oxygen <35 % & falling",
            resolution="Sparger replaced" if transition is DeviationTransition.CLOSED else None,
        )
        self.events.append(event)
        return event

    def steps(self) -> list[BatchStep]:
        return [e for e in self.events if isinstance(e, BatchStep)]

    def deviations(self) -> list[Deviation]:
        return [e for e in self.events if isinstance(e, Deviation)]

    def facts(self) -> list[EventFact]:
        return [
            EventFact.from_event(e, ingested_at=e.envelope.occurred_at + timedelta(seconds=2))
            for e in self.events
        ]


def test_a_clean_batch_has_no_exceptions() -> None:
    site = Batches()
    site.batch("B-1", 1, T0)
    site.batch("B-2", 2, T0)
    digest = build_digest("B-1", site.steps(), site.deviations(), {}, [], all_findings(site.facts()))
    assert digest.verdict == "no exceptions" and digest.exceptions == ()
    assert digest.status == "completed"
    assert (digest.module_id, digest.lane, digest.site_id, digest.product_code) == (
        "bos-m01",
        1,
        "site-boston",
        "CART-CD19",
    )
    assert [s.step for s in digest.steps] == list(ProcessStep)
    assert all(
        s.duration == timedelta(hours=2) and s.outcome is StepTransition.COMPLETED for s in digest.steps
    )
    assert digest.steps[0].performed_by == ("op-jsmith",)
    assert digest.started_at == T0 and digest.ended_at == T0 + timedelta(hours=18)
    page = render_digest_html(digest)
    assert "Verdict: no exceptions" in page and "No exceptions." in page


def exceptional_site() -> tuple[Batches, list[EventFact]]:
    """B-1 has a deviation, drift during EXPANSION, a lane mix-up and a lost event on its module."""
    site = Batches()
    site.batch("B-1", 1, T0)
    site.batch("B-2", 2, T0 + timedelta(hours=1), fail_at=ProcessStep.TRANSDUCTION)
    site.deviation("DEV-1", "B-1", 1, T0 + timedelta(hours=9), DeviationTransition.RAISED)
    site.deviation("DEV-1", "B-1", 1, T0 + timedelta(hours=12), DeviationTransition.CLOSED)
    site.deviation("DEV-2", "B-2", 2, T0 + timedelta(hours=3), DeviationTransition.RAISED)
    facts = site.facts()
    harvest = next(
        e for e in site.steps() if e.envelope.batch_id == "B-1" and e.step is ProcessStep.HARVEST
    )  # reported on lane 3: the mix-up
    lost = next(f for f in facts if f.batch_id == "B-2" and f.step is ProcessStep.SELECTION)
    faulty = [
        dataclasses.replace(f, lane=3) if f.event_id == str(harvest.envelope.event_id) else f
        for f in facts
        if f is not lost
    ]
    return site, faulty


DRIFT = [
    ("bos-m01", T0 + timedelta(hours=7), T0 + timedelta(hours=9)),  # during TRANSDUCTION and EXPANSION
    ("bos-m01", T0 + timedelta(hours=17), None),  # during QC_RELEASE only: off the module
    ("bos-m09", T0, None),  # another module
]
TRIAGE = {"DEV-1": {"severity": "CRITICAL", "class": "PROCESS_EXCURSION", "status": "closed"}}


def test_the_digest_of_a_batch_with_exceptions_lists_every_one() -> None:
    site, faulty = exceptional_site()
    findings = all_findings(faulty)
    assert {f.kind for f in findings} == {FindingKind.BATCH_ON_TWO_LANES, FindingKind.SEQUENCE_GAP}
    digest = build_digest("B-1", site.steps(), site.deviations(), TRIAGE, DRIFT, findings)
    assert digest.verdict == "4 exceptions to review"
    assert sorted(x.kind for x in digest.exceptions) == ["DEVIATION", "DRIFT", "INTEGRITY", "INTEGRITY"]
    (deviation,) = digest.deviations
    assert (deviation.deviation_id, deviation.severity, deviation.status, deviation.resolution) == (
        "DEV-1",
        "CRITICAL",
        "closed",
        "Sparger replaced",
    )
    (drift,) = digest.drift
    assert drift.steps == ((ProcessStep.TRANSDUCTION, 1), (ProcessStep.EXPANSION, 1))
    assert {f.kind for f in digest.findings} == {FindingKind.BATCH_ON_TWO_LANES, FindingKind.SEQUENCE_GAP}
    # exceptions are in time order and cite their events
    times = [x.at for x in digest.exceptions]
    assert times == sorted(t for t in times if t is not None)
    assert all(x.event_ids for x in digest.exceptions if x.kind != "DRIFT")

    other = build_digest("B-2", site.steps(), site.deviations(), TRIAGE, DRIFT, findings)
    assert other.status == "failed" and other.ended_at == T0 + timedelta(hours=9)
    kinds = sorted(x.kind for x in other.exceptions)
    # its failed step, its untriaged deviation, the lost event (its own SELECTION), the drift
    # that opened during TRANSDUCTION (until the failure freed the lane)
    assert kinds == ["DEVIATION", "DRIFT", "INTEGRITY", "STEP"]
    assert other.deviations[0].severity == "UNTRIAGED" and other.deviations[0].status == "open"
    assert other.verdict == "4 exceptions to review"


def test_the_printable_page_escapes_everything_and_loads_nothing() -> None:
    site, faulty = exceptional_site()
    digest = build_digest("B-1", site.steps(), site.deviations(), TRIAGE, DRIFT, all_findings(faulty))
    page = render_digest_html(digest, generated_at=T0 + timedelta(days=2))
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert "Verdict: 4 exceptions to review" in page
    assert "Dissolved oxygen &lt;35 % &amp; falling" in page and "<35 %" not in page
    assert not re.search(r"<(script|link|img|iframe)\b|\bsrc=|\bhref=|url\(|@import", page)
    for x in digest.exceptions:
        for event_id in x.event_ids:
            assert event_id in page
    assert page.count("<tr>") == 1 + 4 + 1 + 9 + 1 + 1 + 1 + 1 + 1 + 2  # header + rows per table

    evil = dataclasses.replace(digest, batch_id='B-"><script>alert(1)</script>')
    assert "<script>" not in render_digest_html(evil)


@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_the_digest_does_not_depend_on_input_order_or_duplicates(data: st.DataObject) -> None:
    site, faulty = exceptional_site()
    findings = all_findings(faulty)
    expected = build_digest("B-1", site.steps(), site.deviations(), TRIAGE, DRIFT, findings)

    def noisy(items: list[object]) -> list[object]:
        shuffled = data.draw(st.permutations(items))
        return [*shuffled, *data.draw(st.lists(st.sampled_from(items), max_size=4))] if items else []

    again = build_digest(
        "B-1",
        noisy(site.steps()),  # type: ignore[arg-type]
        noisy(site.deviations()),  # type: ignore[arg-type]
        TRIAGE,
        noisy(DRIFT),  # type: ignore[arg-type]
        noisy(findings),  # type: ignore[arg-type]
    )
    assert again == expected
    assert render_digest_html(again) == render_digest_html(expected)


def test_a_drift_that_opened_before_the_batch_is_dated_from_the_batch_start() -> None:
    site, _ = exceptional_site()
    early = [("bos-m01", T0 - timedelta(days=2), T0 + timedelta(hours=5))]  # before B-1 started
    digest = build_digest("B-1", site.steps(), drift=early)
    (drift,) = digest.drift
    assert drift.opened_at == T0 - timedelta(days=2)  # the interval itself is kept as it was
    (exception,) = [x for x in digest.exceptions if x.kind == "DRIFT"]
    assert digest.started_at is not None and exception.at == digest.started_at
    assert exception.at > drift.opened_at
    assert "from 2026-10-31 08:00 UTC" in exception.summary  # the text still names the true start
    # a drift that opened during the batch keeps its own time
    later = build_digest("B-1", site.steps(), drift=DRIFT[:1])
    (x,) = [x for x in later.exceptions if x.kind == "DRIFT"]
    assert x.at == DRIFT[0][1]
