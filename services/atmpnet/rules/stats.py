"""Statistics the views report: percentiles, medians and Wilson score intervals."""

from __future__ import annotations

import math
from collections.abc import Sequence

# two-sided 95%: the standard normal quantile 0.975
Z_95 = 1.959963984540054


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (0..100) with linear interpolation between closest ranks.

    Position ``(n - 1) * q / 100`` in the sorted values, interpolated: numpy's default
    ("linear") definition. None for no values.
    """
    if not values:
        return None
    if not 0 <= q <= 100:
        raise ValueError(f"percentile {q} outside 0..100")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    low = math.floor(pos)
    high = min(low + 1, len(ordered) - 1)
    frac = pos - low
    return ordered[low] + (ordered[high] - ordered[low]) * frac


def median(values: Sequence[float]) -> float | None:
    """The 50th percentile (mean of the two middle values for an even count)."""
    return percentile(values, 50)


def wilson_interval(successes: int, trials: int, z: float = Z_95) -> tuple[float, float] | None:
    """Wilson score interval for a binomial proportion; None when there are no trials.

    Unlike the normal approximation it stays inside [0, 1] and behaves at 0 and n successes,
    which matters for small sites.
    """
    if trials <= 0:
        return None
    if not 0 <= successes <= trials:
        raise ValueError(f"{successes} successes out of {trials} trials")
    p = successes / trials
    z2 = z * z
    denom = 1 + z2 / trials
    centre = (p + z2 / (2 * trials)) / denom
    half = z * math.sqrt(p * (1 - p) / trials + z2 / (4 * trials * trials)) / denom
    # at 0 or n successes the bound is exactly 0 or 1; rounding would leave 1e-17 off
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == trials else min(1.0, centre + half)
    return low, high
