import math

import pytest
from atmpnet.rules.stats import median, percentile, wilson_interval
from hypothesis import given
from hypothesis import strategies as st


def test_percentile_interpolates_between_ranks() -> None:
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert percentile([10.0], 90) == 10.0
    assert percentile([1.0, 2.0, 3.0, 4.0, 5.0], 90) == pytest.approx(4.6)
    assert percentile([], 50) is None
    assert median([3.0, 1.0, 2.0]) == 2.0
    with pytest.raises(ValueError, match="outside"):
        percentile([1.0], 101)


def test_wilson_interval_known_values() -> None:
    # 19 of 21: the textbook Wilson 95% interval is about (0.711, 0.973)
    low, high = wilson_interval(19, 21) or (0, 0)
    assert low == pytest.approx(0.7109, abs=1e-3)
    assert high == pytest.approx(0.9735, abs=1e-3)
    assert wilson_interval(0, 0) is None
    low, high = wilson_interval(0, 10) or (1, 1)
    assert low == 0.0
    assert 0 < high < 0.35
    with pytest.raises(ValueError, match="successes"):
        wilson_interval(3, 2)


@given(st.integers(1, 500).flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n))))
def test_wilson_interval_contains_the_estimate(pair: tuple[int, int]) -> None:
    k, n = pair
    low, high = wilson_interval(k, n) or (math.nan, math.nan)
    assert 0.0 <= low <= k / n <= high <= 1.0


@given(st.lists(st.floats(-1e6, 1e6), min_size=1, max_size=50), st.floats(0, 100))
def test_percentile_lies_within_the_values(values: list[float], q: float) -> None:
    p = percentile(values, q)
    assert p is not None
    assert min(values) - 1e-6 <= p <= max(values) + 1e-6
    assert percentile(list(reversed(values)), q) == p
