"""Small robust statistics in numpy: Theil–Sen with a confidence interval, OLS with R²."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass
class Slope:
    slope: float  # units of y per unit of x
    intercept: float
    low: float  # confidence interval of the slope
    high: float
    n: int


def bucket_medians(x: np.ndarray, y: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Reduce (x, y) to at most ``n`` points: median y of equal-count runs (robust to spikes)."""
    if len(x) <= n:
        return x.astype(np.float64), y.astype(np.float64)
    k = len(x) // n
    m = k * n
    xs = x[:m].reshape(n, k)[:, k // 2].astype(np.float64)
    ys = np.median(y[:m].reshape(n, k), axis=1).astype(np.float64)
    return xs, ys


def theil_sen(x: np.ndarray, y: np.ndarray, confidence: float = 0.95, max_points: int = 600) -> Slope | None:
    """Median of pairwise slopes, with Sen's (1968) rank-based interval.

    Long series are first reduced to ``max_points`` bucket medians: O(n²) pairs
    stay cheap and a short spike cannot tilt a bucket. The interval treats the
    buckets as independent, which is optimistic for autocorrelated memory
    curves; it still separates "flat" from "clearly growing".
    """
    xs, ys = bucket_medians(np.asarray(x), np.asarray(y), max_points)
    n = len(xs)
    if n < 3:
        return None
    i, j = np.triu_indices(n, k=1)
    dx = xs[j] - xs[i]
    ok = dx != 0
    slopes = np.sort((ys[j] - ys[i])[ok] / dx[ok])
    if len(slopes) == 0:
        return None
    med = float(np.median(slopes))
    z = _z(confidence)
    c = z * math.sqrt(n * (n - 1) * (2 * n + 5) / 18.0)
    big_n = len(slopes)
    lo_i = int(max(0, math.floor((big_n - c) / 2.0) - 1))
    hi_i = int(min(big_n - 1, math.ceil((big_n + c) / 2.0)))
    intercept = float(np.median(ys - med * xs))
    return Slope(med, intercept, float(slopes[lo_i]), float(slopes[hi_i]), n)


def _z(confidence: float) -> float:
    # two-sided normal quantile; the few levels anyone asks for, else an approximation
    table = {0.9: 1.6449, 0.95: 1.96, 0.99: 2.5758}
    if confidence in table:
        return table[confidence]
    p = 1 - (1 - confidence) / 2
    t = math.sqrt(-2 * math.log(1 - p))
    return t - (2.515517 + 0.802853 * t + 0.010328 * t * t) / (1 + 1.432788 * t + 0.189269 * t * t + 0.001308 * t ** 3)


@dataclass
class Fit:
    slope: float
    intercept: float
    r2: float
    n: int


def linear_fit(x: np.ndarray, y: np.ndarray) -> Fit | None:
    """Least-squares line with its coefficient of determination."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if len(x) < 2 or np.ptp(x) == 0:
        return None
    slope, intercept = np.polyfit(x, y, 1)
    resid = y - (slope * x + intercept)
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    r2 = 1.0 - float(np.sum(resid ** 2)) / ss_tot if ss_tot > 0 else 1.0
    return Fit(float(slope), float(intercept), r2, len(x))
