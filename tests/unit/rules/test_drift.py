import random
from dataclasses import replace

from atmpnet.contract.events import ComponentKind, ComponentStatus, ModuleConfiguration, ValidatedBaseline
from atmpnet.contract.examples import example_events
from atmpnet.rules.drift import DriftState, compare, drift_intervals, states_at, version_skew
from atmpnet.rules.facts import BaselineFact, ConfigFact
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.unit.rules.builders import at, baseline, comp, config

FW = comp("pump-firmware", "2.0.7", ComponentKind.FIRMWARE)


def test_compare_classifies_each_component() -> None:
    running = [comp("controller", "4.3.0"), FW, comp("extra", "1")]
    valid = [comp("controller", "4.2.1"), FW, comp("recipe", "R12", ComponentKind.RECIPE)]
    got = {c.name: c.status for c in compare(running, valid)}
    assert got == {
        "controller": ComponentStatus.DRIFTED,
        "pump-firmware": ComponentStatus.IN_BASELINE,
        "extra": ComponentStatus.UNKNOWN,
        "recipe": ComponentStatus.MISSING,
    }
    same_version_other_hash = comp("controller", "4.2.1")
    object.__setattr__(same_version_other_hash, "content_hash", "0" * 64)
    assert (
        compare([same_version_other_hash], [comp("controller", "4.2.1")])[0].status is ComponentStatus.DRIFTED
    )


def test_interval_opens_on_an_unvalidated_upgrade_and_closes_when_the_baseline_follows() -> None:
    configs = [config(0, comp("controller", "4.2.1"), FW), config(10, comp("controller", "4.3.0"), FW)]
    baselines = [baseline(0, comp("controller", "4.2.1"), FW), baseline(25, comp("controller", "4.3.0"), FW)]
    (interval,) = drift_intervals(configs, baselines, at(30))
    assert (interval.opened_at, interval.closed_at) == (at(10), at(25))
    assert [c.name for c in interval.components] == ["controller"]


def test_rollback_closes_and_open_interval_stays_open() -> None:
    configs = [
        config(0, comp("controller", "4.2.1")),
        config(5, comp("controller", "4.3.0")),
        config(8, comp("controller", "4.2.1")),
        config(12, comp("controller", "5.0.0")),
    ]
    got = [
        (i.opened_at, i.closed_at)
        for i in drift_intervals(configs, [baseline(0, comp("controller", "4.2.1"))], at(20))
    ]
    assert got == [(at(5), at(8)), (at(12), None)]


def test_no_baseline_is_unknown_not_drift() -> None:
    configs = [config(0, comp("controller", "4.3.0"))]
    assert drift_intervals(configs, [], at(5)) == []
    assert states_at(configs, [], at(1))["site-a-m01"].state is DriftState.UNKNOWN
    # a baseline becoming effective later opens drift at its effective_from
    (interval,) = drift_intervals(configs, [baseline(3, comp("controller", "4.2.1"))], at(5))
    assert interval.opened_at == at(3)


def _approved_early(b: BaselineFact, hours: float) -> BaselineFact:
    """The baseline, approved and published at ``hours`` (before it takes effect)."""
    return replace(b, approved_at=at(hours), occurred_at=at(hours))


def test_a_baseline_effective_after_as_of_opens_no_interval_yet() -> None:
    # approved at hour 15, effective at hour 50: at as_of = hour 20 nothing has changed yet
    configs = [config(0, comp("controller", "4.2.1"))]
    later = _approved_early(baseline(50, comp("controller", "4.3.0"), baseline_id="VB2"), 15)
    baselines = [baseline(0, comp("controller", "4.2.1")), later]
    assert drift_intervals(configs, baselines, at(20)) == []
    assert states_at(configs, baselines, at(20))["site-a-m01"].state is DriftState.IN_BASELINE
    # once as_of reaches effective_from, the interval opens then
    (interval,) = drift_intervals(configs, baselines, at(50))
    assert (interval.opened_at, interval.closed_at) == (at(50), None)


def test_an_interval_is_not_closed_by_a_baseline_effective_after_as_of() -> None:
    configs = [config(0, comp("controller", "4.2.1")), config(10, comp("controller", "4.3.0"))]
    later = _approved_early(baseline(50, comp("controller", "4.3.0"), baseline_id="VB2"), 15)
    baselines = [baseline(0, comp("controller", "4.2.1")), later]
    (interval,) = drift_intervals(configs, baselines, at(20))
    assert (interval.opened_at, interval.closed_at) == (at(10), None)
    # a configuration after as_of is not seen either
    assert drift_intervals([*configs, config(30, comp("controller", "4.2.1"))], baselines, at(20)) == [
        interval
    ]
    (closed,) = drift_intervals(configs, baselines, at(60))
    assert (closed.opened_at, closed.closed_at) == (at(10), at(50))


def test_version_skew_across_sites() -> None:
    configs = [
        config(0, comp("controller", "4.2.1")),
        config(0, comp("controller", "4.2.1"), module="site-b-m01", site="site-b"),
        config(0, comp("controller", "4.3.0"), module="site-c-m01", site="site-c"),
    ]
    skew = {
        (s.version, s.sites, s.versions_of_component) for s in version_skew(states_at(configs, [], at(1)))
    }
    assert skew == {("4.2.1", 2, 2), ("4.3.0", 1, 2)}


def test_facts_from_contract_events() -> None:
    events = example_events()
    cfg = ConfigFact.from_event(next(e for e in events if isinstance(e, ModuleConfiguration)))
    base = BaselineFact.from_event(next(e for e in events if isinstance(e, ValidatedBaseline)))
    assert states_at([cfg], [base], cfg.occurred_at)[cfg.module_id].state is DriftState.IN_BASELINE


_CONFIGS = [
    config(h, comp("controller", v), FW, module=m)
    for h, v, m in [
        (0, "1", "m1"),
        (3, "2", "m1"),
        (6, "1", "m1"),
        (1, "2", "m2"),
        (9, "3", "m2"),
        (2, "1", "m3"),
    ]
]
_BASELINES = [
    baseline(0, comp("controller", "1"), FW),
    baseline(7, comp("controller", "2"), FW, baseline_id="VB2"),
]


@settings(max_examples=60, deadline=None)
@given(st.randoms(use_true_random=False), st.lists(st.integers(0, 7), max_size=8))
def test_drift_is_invariant_to_order_and_duplicates(rng: random.Random, repeats: list[int]) -> None:
    expected = drift_intervals(_CONFIGS, _BASELINES, at(12))
    assert len(expected) >= 3
    items: list[object] = [*_CONFIGS, *_BASELINES]
    items += [items[i % len(items)] for i in repeats]
    rng.shuffle(items)
    configs = [i for i in items if isinstance(i, ConfigFact)]
    baselines = [i for i in items if isinstance(i, BaselineFact)]
    assert drift_intervals(configs, baselines, at(12)) == expected
