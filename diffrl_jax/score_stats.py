"""Scores of many runs: interquartile mean, stratified-bootstrap confidence intervals, area
under learning curves on a common grid of environment steps, per-task score normalisation.

Pure numpy; everything random takes a seed or a `numpy.random.Generator` and is deterministic
given it. The interquartile mean and the stratified bootstrap follow Agarwal et al. (2021),
"Deep RL at the edge of the statistical precipice"; the derivations are in the docstrings.
One difference from their rliable library: for n runs not a multiple of 4, `iqm` gives the
runs straddling a quartile fractional weights (n = 5: 0, 0.3, 0.4, 0.3, 0; `iqm_weights`),
where rliable's scipy.stats.trim_mean(x, 0.25) cuts int(n / 4) whole runs per end (n = 5:
0, 1/3, 1/3, 1/3, 0). For n a multiple of 4 both are the 25 % trimmed mean.
"""

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

__all__ = [
    "ConfidenceInterval",
    "area_under_curve",
    "common_grid",
    "interpolate_curves",
    "iqm",
    "iqm_weights",
    "normalize_scores",
    "percentile_interval",
    "stratified_bootstrap_ci",
]


class ConfidenceInterval(NamedTuple):
    """A point estimate and its (low, high) interval; floats, or arrays of one shape."""

    estimate: Any
    low: Any
    high: Any


# ---- checks -----------------------------------------------------------------------------------

def _finite_array(values: Any, name: str, min_ndim: int = 1) -> np.ndarray:
    """values as a float64 array with >= min_ndim dimensions and no empty axis; ValueError
    naming `name` when it is empty, ragged or holds NaN/inf."""
    try:
        x = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as err:  # ragged nested lists, non-numbers
        raise ValueError(f"{name} must be a rectangular array of numbers ({err})") from err
    if x.ndim < min_ndim:
        raise ValueError(f"{name} must have at least {min_ndim} dimension(s), got shape {x.shape}")
    if x.size == 0:
        raise ValueError(f"{name} is empty (shape {x.shape})")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} holds non-finite values (NaN or inf): {int(np.sum(~np.isfinite(x)))} "
                         f"of {x.size}")
    return x


def _check_confidence(confidence: float) -> float:
    if isinstance(confidence, bool) or not isinstance(confidence, (int, float, np.floating)):
        raise ValueError(f"confidence must be a number in (0, 1), got {confidence!r}")
    confidence = float(confidence)
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie strictly between 0 and 1, got {confidence}")
    return confidence


def _check_positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _generator(rng: Any) -> np.random.Generator:
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None or isinstance(rng, bool) or not isinstance(rng, (int, np.integer)):
        raise ValueError(f"rng must be a numpy Generator or an integer seed, got {rng!r}")
    return np.random.default_rng(int(rng))


# ---- interquartile mean -----------------------------------------------------------------------

def iqm_weights(n: int) -> np.ndarray:
    """[n]: the weight of the i-th smallest of n runs in their interquartile mean.

    The n sorted runs are n equal masses 1/n; run i (1-based) holds the quantile levels
    [(i-1)/n, i/n]. The IQM is the mean of the quantile function over the middle half,
    2 * int_{1/4}^{3/4} Q(u) du = sum_i x_(i) * 2 |[(i-1)/n, i/n] & [1/4, 3/4]|. In units of
    1/(4n) run i spans [4(i-1), 4i] and the middle half [n, 3n], so the weight is
    overlap / (2n) with an integer overlap: exact, summing to 1. When n is a multiple of 4
    the boundary runs fall wholly in or out and this is the 25 % trimmed mean; otherwise the
    runs straddling a quartile count with the fraction of their mass inside (n = 5:
    0, 0.3, 0.4, 0.3, 0).
    """
    n = _check_positive_int(n, "n")
    i = np.arange(1, n + 1)
    overlap = np.clip(np.minimum(4 * i, 3 * n) - np.maximum(4 * (i - 1), n), 0, None)
    return overlap / (2.0 * n)


def iqm(scores: Any, axis: int | None = None) -> Any:
    """The interquartile mean (`iqm_weights`) of scores: of all of them pooled (axis None ->
    float), or along `axis` (-> an array without that axis). ValueError on empty or
    non-finite input."""
    x = _finite_array(scores, "scores", min_ndim=0 if axis is None else 1)
    if axis is None:
        x = np.sort(x.ravel())
        return float(x @ iqm_weights(x.size))
    x = np.sort(np.moveaxis(x, axis, -1), axis=-1)
    return x @ iqm_weights(x.shape[-1])


# ---- stratified bootstrap -----------------------------------------------------------------------

def percentile_interval(samples: Any, confidence: float = 0.95) -> tuple[Any, Any]:
    """(low, high): the (1 - confidence)/2 and (1 + confidence)/2 quantiles (linear
    interpolation) of bootstrap samples [B, ...] along the first axis."""
    confidence = _check_confidence(confidence)
    x = _finite_array(samples, "bootstrap samples")
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(x, [tail, 1.0 - tail], axis=0)
    return (float(low), float(high)) if low.ndim == 0 else (low, high)


def stratified_bootstrap_ci(scores_by_task: Sequence[Any] | Mapping[str, Any],
                            statistic: Callable[[list[np.ndarray]], Any], num_resamples: int,
                            confidence: float = 0.95, rng: Any = 0) -> ConfidenceInterval:
    """statistic's value on the runs and its percentile bootstrap interval, resampling runs
    with replacement within each task (stratum) independently.

    scores_by_task: per task, its runs [n_t] or [n_t, *event] (n_t may differ between tasks;
    the event shape, e.g. a curve's grid points, may not); a Mapping's values in order.
    statistic: maps per-task arrays [B, n_t, *event] (B resamples on the leading axis, in
    task order) to [B, *event], e.g. the pooled IQM `lambda s: iqm(np.concatenate(s, 1), 1)`.
    Resample b draws n_t runs of task t uniformly with replacement, so a task's runs never
    mix with another's and every resample keeps each task's run count. The estimate is
    statistic on the runs themselves (B = 1). rng: a Generator or an integer seed.
    """
    tasks = list(scores_by_task.values()) if isinstance(scores_by_task, Mapping) else list(scores_by_task)
    if not tasks:
        raise ValueError("scores_by_task is empty: the bootstrap needs at least one task")
    arrays = [_finite_array(t, f"scores of task {i}") for i, t in enumerate(tasks)]
    events = {a.shape[1:] for a in arrays}
    if len(events) > 1:
        raise ValueError(f"the tasks' runs have different shapes beyond the run axis "
                         f"(ragged): {sorted(a.shape for a in arrays)}")
    num_resamples = _check_positive_int(num_resamples, "num_resamples")
    confidence = _check_confidence(confidence)
    gen = _generator(rng)
    estimate = np.asarray(statistic([a[None] for a in arrays]), dtype=np.float64)
    resampled = [a[gen.integers(0, a.shape[0], size=(num_resamples, a.shape[0]))] for a in arrays]
    samples = np.asarray(statistic(resampled), dtype=np.float64)
    if estimate.shape[:1] != (1,) or samples.shape[:1] != (num_resamples,):
        raise ValueError(f"statistic must return one value per resample on the leading axis; "
                         f"got shapes {estimate.shape} (1 resample) and {samples.shape} "
                         f"({num_resamples} resamples)")
    low, high = percentile_interval(samples, confidence)
    point = estimate[0]
    return ConfidenceInterval(float(point) if point.ndim == 0 else point, low, high)


# ---- learning curves ------------------------------------------------------------------------

def _check_steps(steps: Any, name: str = "steps") -> np.ndarray:
    s = _finite_array(steps, name)
    if s.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {s.shape}")
    if np.any(np.diff(s) <= 0):
        raise ValueError(f"{name} must be strictly increasing, got {s.tolist()}")
    return s


def common_grid(step_arrays: Sequence[Any], num_points: int | None = None) -> np.ndarray:
    """[G]: env steps on which curves evaluated at different steps can be compared: the span
    all of them cover, [max of first steps, min of last steps], either as the sorted union of
    every curve's steps inside it (num_points None: linear interpolation onto it is exact at
    every curve's own evaluations) or as num_points equally spaced steps. ValueError when
    the spans do not overlap."""
    arrays = [_check_steps(s, f"steps of curve {i}") for i, s in enumerate(step_arrays)]
    if not arrays:
        raise ValueError("common_grid needs at least one curve's steps")
    low, high = max(a[0] for a in arrays), min(a[-1] for a in arrays)
    if low > high:
        raise ValueError(f"the curves' step ranges do not overlap: the latest start {low:g} is "
                         f"after the earliest end {high:g}")
    if num_points is None:
        union = np.unique(np.concatenate(arrays))
        return union[(union >= low) & (union <= high)]
    num_points = _check_positive_int(num_points, "num_points")
    if low == high or num_points == 1:
        return np.array([high])
    return np.linspace(low, high, num_points)


def interpolate_curves(steps: Any, returns: Any, grid: Any) -> np.ndarray:
    """returns [..., T] at steps [T] -> [..., G] at grid [G], linearly interpolated. The grid
    must lie inside [steps[0], steps[-1]] (no extrapolation)."""
    s = _check_steps(steps)
    r = _finite_array(returns, "returns")
    g = _check_steps(grid, "grid")
    if r.shape[-1] != s.size:
        raise ValueError(f"returns have {r.shape[-1]} points on their last axis but steps has "
                         f"{s.size} (shapes {r.shape} and {s.shape})")
    if g[0] < s[0] or g[-1] > s[-1]:
        raise ValueError(f"the grid [{g[0]:g}, {g[-1]:g}] leaves the curve's steps "
                         f"[{s[0]:g}, {s[-1]:g}]; no extrapolation")
    flat = r.reshape(-1, s.size)
    out = np.stack([np.interp(g, s, row) for row in flat])
    return out.reshape(r.shape[:-1] + (g.size,))


def area_under_curve(steps: Any, returns: Any) -> Any:
    """The mean return over training: the trapezoid integral of returns [..., T] over steps
    [T] divided by the span steps[-1] - steps[0] (-> [...], a float for one curve). A single
    point (no span) is its own mean. Interpolate curves of different algorithms onto one
    `common_grid` first, so their areas cover the same steps."""
    s = _check_steps(steps)
    r = _finite_array(returns, "returns")
    if r.shape[-1] != s.size:
        raise ValueError(f"returns have {r.shape[-1]} points on their last axis but steps has "
                         f"{s.size} (shapes {r.shape} and {s.shape})")
    if s.size == 1:
        area = r[..., 0]
    else:
        widths = np.diff(s)
        area = np.sum(0.5 * (r[..., 1:] + r[..., :-1]) * widths, axis=-1) / (s[-1] - s[0])
    return float(area) if np.ndim(area) == 0 else area


# ---- normalisation -------------------------------------------------------------------------

def normalize_scores(scores: Any, score_range: tuple[float, float]) -> np.ndarray:
    """(scores - low) / (high - low) for a task's score_range (low, high): 0 at low, 1 at
    high. Aggregate across tasks only on normalised scores."""
    x = _finite_array(scores, "scores", min_ndim=0)
    try:
        low, high = (float(v) for v in score_range)
    except (TypeError, ValueError) as err:
        raise ValueError(f"score_range must be a pair (low, high) of numbers, got {score_range!r}") from err
    if not (math.isfinite(low) and math.isfinite(high) and high > low):
        raise ValueError(f"score_range must be finite with high > low, got {score_range!r}")
    return (x - low) / (high - low)
