import random

from atmpnet.contract.events import (
    DeviationClass,
    DeviationStatus,
    DeviationTransition,
    ProcessStep,
    Severity,
)
from atmpnet.contract.examples import example_events
from atmpnet.rules.facts import DeviationFact
from atmpnet.rules.triage import base_class, severity, triage, triage_changes
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.unit.rules.builders import at, comp, config, deviation

R, U, C = DeviationTransition.RAISED, DeviationTransition.UPDATED, DeviationTransition.CLOSED


def test_class_from_alarm_prefix_then_parameter() -> None:
    assert base_class("PRC-DO-LOW", None) is DeviationClass.PROCESS_EXCURSION
    assert base_class("EQP-PUMP", "temperature") is DeviationClass.EQUIPMENT
    assert base_class("ENV-ROOM", None) is DeviationClass.ENVIRONMENTAL
    assert base_class("DAT-GAP", None) is DeviationClass.DATA_INTEGRITY
    assert base_class("SNS-NOISE", "ph") is DeviationClass.SENSOR_FAULT
    assert base_class("XYZ-1", "ph") is DeviationClass.PROCESS_EXCURSION
    assert base_class(None, None) is DeviationClass.EQUIPMENT


def test_severity_table() -> None:
    pe = DeviationClass.PROCESS_EXCURSION
    assert severity(pe, duration_seconds=1800, step=ProcessStep.EXPANSION, batch_id="B") is Severity.CRITICAL
    assert severity(pe, duration_seconds=1800, step=ProcessStep.HARVEST, batch_id="B") is Severity.MAJOR
    assert severity(pe, duration_seconds=1799.9, step=ProcessStep.EXPANSION, batch_id="B") is Severity.MINOR
    assert severity(pe, duration_seconds=None, step=ProcessStep.EXPANSION, batch_id="B") is Severity.MINOR
    eq = DeviationClass.EQUIPMENT
    assert severity(eq, duration_seconds=None, step=None, batch_id="B") is Severity.MAJOR
    assert severity(eq, duration_seconds=None, step=None, batch_id=None) is Severity.MINOR
    for cls in (DeviationClass.ENVIRONMENTAL, DeviationClass.DATA_INTEGRITY):
        assert severity(cls, duration_seconds=None, step=None, batch_id=None) is Severity.MAJOR
    for cls in (DeviationClass.SENSOR_FAULT, DeviationClass.DUPLICATE):
        assert (
            severity(cls, duration_seconds=9999, step=ProcessStep.EXPANSION, batch_id="B") is Severity.MINOR
        )


def test_duplicate_while_the_first_is_open_and_not_after_it_closed() -> None:
    facts = [
        deviation("D1", R, 0, duration=3600),
        deviation("D2", R, 1, duration=3600),  # D1 still open: duplicate
        deviation("D1", C, 2),
        deviation("D3", R, 2, duration=3600),  # D1 closed at this very instant: not a duplicate of D1
        deviation("D4", R, 3, lane=2, duration=3600),  # other lane
    ]
    by_id = {t.deviation_id: t for t in triage(facts, [], at(10))}
    assert by_id["D1"].deviation_class is DeviationClass.PROCESS_EXCURSION
    assert by_id["D1"].severity is Severity.CRITICAL
    assert by_id["D2"].deviation_class is DeviationClass.DUPLICATE
    assert by_id["D2"].duplicate_of == "D1"
    assert by_id["D2"].severity is Severity.MINOR
    # D2 is still open at D3's raise: D3 duplicates D2
    assert by_id["D3"].duplicate_of == "D2"
    assert by_id["D4"].deviation_class is DeviationClass.PROCESS_EXCURSION


def test_status_priority_due_and_age() -> None:
    facts = [
        deviation("D1", R, 0, duration=3600),
        deviation("D1", U, 5),
        deviation("D2", R, 1, alarm="ENV-ROOM", parameter=None, batch=None),
        deviation("D3", R, 2, alarm="SNS-NOISE"),
        deviation("D3", C, 4),
        deviation("D9", U, 1),  # its RAISED has not arrived: not triaged yet
    ]
    by_id = {t.deviation_id: t for t in triage(facts, [], at(48))}
    assert set(by_id) == {"D1", "D2", "D3"}
    d1, d2, d3 = by_id["D1"], by_id["D2"], by_id["D3"]
    assert (d1.status, d1.priority, d1.due_at, d1.overdue) == (DeviationStatus.INVESTIGATING, 1, at(24), True)
    assert d1.age_hours == 48
    assert (d2.status, d2.severity, d2.priority, d2.due_at) == (
        DeviationStatus.OPEN,
        Severity.MAJOR,
        2,
        at(1 + 168),
    )
    assert not d2.overdue
    assert (d3.status, d3.closed_at, d3.age_hours, d3.overdue) == (DeviationStatus.CLOSED, at(4), 2, False)


def test_repeat_clusters_on_a_module_and_across_sites_by_software_version() -> None:
    configs = [
        config(-1, comp("controller", "4.2.1")),
        config(-1, comp("controller", "4.2.1"), module="site-b-m01", site="site-b"),
        config(-1, comp("controller", "4.3.0"), module="site-c-m01", site="site-c"),
    ]
    facts = [
        deviation("A1", R, 0, alarm="PRC-1"),
        deviation("A2", R, 24 * 6, alarm="PRC-2"),  # within 7 days of A1
        deviation("A3", R, 24 * 14, alarm="PRC-3"),  # more than 7 days after A2: new cluster
        deviation("B1", R, 5, alarm="PRC-4", site="site-b", module="site-b-m01"),
        deviation("C1", R, 5, alarm="PRC-5", site="site-c", module="site-c-m01"),
    ]
    by_id = {t.deviation_id: t for t in triage(facts, configs, at(24 * 20))}
    assert by_id["A1"].module_cluster == by_id["A2"].module_cluster == "site-a-m01/temperature/A1"
    assert by_id["A1"].module_cluster_size == 2
    assert by_id["A3"].module_cluster_size == 1
    assert by_id["A1"].software_versions == "controller=4.2.1"
    assert by_id["B1"].version_cluster == "temperature@controller=4.2.1"
    assert by_id["B1"].version_cluster_sites == 2
    assert by_id["B1"].version_cluster_size == 4
    assert by_id["C1"].version_cluster_sites == 1


def test_changes_first_triage_then_each_status() -> None:
    facts = [deviation("D1", R, 0), deviation("D1", U, 1), deviation("D1", U, 2), deviation("D1", C, 3)]
    changes = triage_changes(facts, [], at(10))
    assert [(c.status, c.changed_at) for c in changes] == [
        (DeviationStatus.OPEN, at(0)),
        (DeviationStatus.INVESTIGATING, at(1)),
        (DeviationStatus.CLOSED, at(3)),
    ]


def test_facts_from_contract_events() -> None:
    from atmpnet.contract.events import Deviation

    event = next(e for e in example_events() if isinstance(e, Deviation))
    fact = DeviationFact.from_event(event)
    assert fact.deviation_id == event.deviation_id
    assert fact.event_id == str(event.envelope.event_id)
    assert triage([fact], [], fact.occurred_at)[0].status is DeviationStatus.OPEN


_POOL = [
    deviation(
        f"D{i % 7}",
        tr,
        i * 0.7,
        lane=1 + i % 2,
        alarm=("PRC-1", "SNS-2", None)[i % 3],
        duration=900.0 * (i % 4),
    )
    for i, tr in enumerate([R, R, R, U, C, R, R, C, U, R, C, R, R, C, C, U, R, C])
]


@settings(max_examples=60, deadline=None)
@given(st.randoms(use_true_random=False), st.lists(st.integers(0, len(_POOL) - 1), max_size=10))
def test_triage_is_invariant_to_order_and_duplicates(rng: random.Random, repeats: list[int]) -> None:
    expected = triage(_POOL, [], at(30))
    expected_changes = triage_changes(_POOL, [], at(30))
    shuffled = [*_POOL, *(_POOL[i] for i in repeats)]
    rng.shuffle(shuffled)
    assert triage(shuffled, [], at(30)) == expected
    assert triage_changes(shuffled, [], at(30)) == expected_changes


def test_segregation_findings_are_critical_other_data_integrity_major() -> None:
    di = DeviationClass.DATA_INTEGRITY
    for code in ("DAT-SEG-BATCH-TWO-LANES", "DAT-SEG-LANE-OVERLAP", "DAT-SEG-STEP-ORDER"):
        assert (
            severity(di, duration_seconds=None, step=None, batch_id="B", alarm_code=code) is Severity.CRITICAL
        )
    for other in ("DAT-SEQUENCE-GAP", "DAT-CHAIN-BREAK", "DAT-GAP-01", None):
        assert (
            severity(di, duration_seconds=None, step=None, batch_id="B", alarm_code=other) is Severity.MAJOR
        )
    # through the view rule: a segregation deviation is triaged CRITICAL, unless it is a duplicate
    seg = [
        deviation("S1", DeviationTransition.RAISED, 1, parameter=None, alarm="DAT-SEG-LANE-OVERLAP"),
        deviation("S2", DeviationTransition.RAISED, 2, parameter=None, alarm="DAT-SEG-LANE-OVERLAP"),
    ]
    rows = {t.deviation_id: t for t in triage(seg, [], at(3))}
    assert (rows["S1"].deviation_class, rows["S1"].severity) == (di, Severity.CRITICAL)
    assert (rows["S2"].deviation_class, rows["S2"].severity) == (DeviationClass.DUPLICATE, Severity.MINOR)
