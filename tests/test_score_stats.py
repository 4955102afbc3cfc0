"""diffrl_jax.score_stats against hand-computed values, scipy where they coincide, and the
bootstrap's coverage on a distribution whose IQM is known."""

import math

import numpy as np
import pytest
from scipy import stats

from diffrl_jax.score_stats import (
    area_under_curve,
    common_grid,
    interpolate_curves,
    iqm,
    iqm_weights,
    normalize_scores,
    percentile_interval,
    stratified_bootstrap_ci,
)


# ---- interquartile mean ---------------------------------------------------------------------

@pytest.mark.parametrize("n, expected", [
    (1, [1.0]),
    (2, [0.5, 0.5]),
    (3, [1 / 6, 2 / 3, 1 / 6]),            # 2 * overlap of [0,1/3],[1/3,2/3],[2/3,1] with [1/4,3/4]
    (4, [0.0, 0.5, 0.5, 0.0]),
    (5, [0.0, 0.3, 0.4, 0.3, 0.0]),        # 2 * (0.15, 0.2, 0.15)
    (6, [0.0, 1 / 6, 1 / 3, 1 / 3, 1 / 6, 0.0]),
    (7, [0.0, 1 / 14, 4 / 14, 4 / 14, 4 / 14, 1 / 14, 0.0]),
    (8, [0, 0, 0.25, 0.25, 0.25, 0.25, 0, 0]),
])
def test_iqm_weights_by_hand(n, expected):
    w = iqm_weights(n)
    np.testing.assert_allclose(w, expected, rtol=0, atol=1e-15)
    assert w.sum() == pytest.approx(1.0, abs=1e-15)


def test_iqm_hand_values():
    assert iqm([1, 2, 3, 4, 100]) == pytest.approx(0.3 * 2 + 0.4 * 3 + 0.3 * 4)  # 3.0
    assert iqm([100, 4, 3, 2, 1]) == pytest.approx(3.0)  # order does not matter
    assert iqm([0, 0, 1, 2, 10, 50]) == pytest.approx((1 * 2 + 2 * 2 + 10 * 1) / 6)  # 16/6
    assert iqm([9, 0, 3]) == pytest.approx(0 / 6 + 3 * 2 / 3 + 9 / 6)  # 3.5
    assert iqm([7.0]) == 7.0
    assert iqm([1.0, 5.0]) == 3.0
    assert iqm([[1, 2], [3, 4]]) == pytest.approx(2.5)  # axis None pools everything


@pytest.mark.parametrize("n", [4, 8, 12, 40])
def test_iqm_is_the_25_percent_trimmed_mean_when_n_is_a_multiple_of_4(n):
    x = np.random.default_rng(n).standard_exponential(n)
    assert iqm(x) == pytest.approx(stats.trim_mean(x, 0.25), rel=1e-12)


@pytest.mark.parametrize("n", [5, 6, 7, 9, 10])
def test_iqm_differs_from_scipy_when_a_run_straddles_a_quartile(n):
    # scipy cuts int(n / 4) whole runs per end; here the straddling runs keep their inside share
    x = np.arange(n, dtype=float) ** 2
    w = iqm_weights(n)
    assert iqm(x) == pytest.approx(float(np.sort(x) @ w))
    assert iqm(x) != pytest.approx(stats.trim_mean(x, 0.25))
    cut = n // 4  # rliable's weights: 1 / (n - 2 cut) on the runs scipy keeps
    assert stats.trim_mean(x, 0.25) == pytest.approx(float(np.sort(x)[cut:n - cut].mean()))


def test_iqm_equals_twice_the_quantile_integral():
    # the definition: 2 * int_{1/4}^{3/4} Q(u) du of the empirical quantile function
    x = np.sort(np.random.default_rng(1).normal(size=11))
    u = (np.arange(200_000) + 0.5) / 200_000
    quantile = x[np.minimum((u * x.size).astype(int), x.size - 1)]
    inside = (u >= 0.25) & (u <= 0.75)
    assert iqm(x) == pytest.approx(quantile[inside].mean(), abs=1e-4)


def test_iqm_along_an_axis_and_equivariance():
    x = np.random.default_rng(2).normal(size=(3, 7, 5))
    along = iqm(x, axis=1)
    assert along.shape == (3, 5)
    assert along[1, 2] == pytest.approx(iqm(x[1, :, 2]))
    assert iqm(3 * x[0, :, 0] + 2) == pytest.approx(3 * iqm(x[0, :, 0]) + 2)
    assert np.percentile(x[0, :, 0], 25) <= iqm(x[0, :, 0]) <= np.percentile(x[0, :, 0], 75)


@pytest.mark.parametrize("bad, message", [
    ([], "empty"), ([1.0, np.nan], "non-finite"), ([1.0, np.inf], "non-finite"),
    ([[1, 2], [3]], "rectangular"),
])
def test_iqm_bad_input(bad, message):
    with pytest.raises(ValueError, match=message):
        iqm(bad)


def test_iqm_weights_bad_n():
    for n in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="positive integer"):
            iqm_weights(n)


# ---- bootstrap ------------------------------------------------------------------------------

def pooled_iqm(samples):
    return iqm(np.concatenate(samples, axis=1), axis=1)


def test_percentile_interval_by_hand():
    samples = np.arange(101, dtype=float)  # quantile q of 0..100 is 100 q
    assert percentile_interval(samples, 0.9) == pytest.approx((5.0, 95.0))
    low, high = percentile_interval(np.stack([samples, 2 * samples], axis=1), 0.5)
    np.testing.assert_allclose(low, [25, 50])
    np.testing.assert_allclose(high, [75, 150])


def test_bootstrap_is_deterministic_given_a_seed():
    scores = {"a": [1.0, 2.0, 5.0, 3.0], "b": [10.0, 20.0, 15.0]}
    one = stratified_bootstrap_ci(scores, pooled_iqm, 500, rng=7)
    two = stratified_bootstrap_ci(scores, pooled_iqm, 500, rng=np.random.default_rng(7))
    assert one == two
    assert one.estimate == pytest.approx(iqm([1, 2, 5, 3, 10, 20, 15]))
    assert one.low <= one.estimate <= one.high
    assert stratified_bootstrap_ci(scores, pooled_iqm, 500, rng=8) != one


def test_stratification_never_mixes_tasks():
    a, b = np.arange(5.0), 100 + np.arange(3.0)
    seen = []

    def record(samples):
        seen.append([s.copy() for s in samples])
        return np.concatenate(samples, axis=1).sum(axis=1)

    stratified_bootstrap_ci([a, b], record, 1000, rng=0)
    (point_a, point_b), (boot_a, boot_b) = seen
    np.testing.assert_array_equal(point_a[0], a)
    np.testing.assert_array_equal(point_b[0], b)
    assert boot_a.shape == (1000, 5) and boot_b.shape == (1000, 3)  # run counts kept per task
    assert np.isin(boot_a, a).all() and np.isin(boot_b, b).all()   # never the other task's runs
    assert set(np.unique(boot_a)) == set(a)                          # all runs get drawn


def test_a_task_with_one_run_is_in_every_resample_exactly_once():
    ci = stratified_bootstrap_ci([[0.0, 1.0, 2.0, 3.0], [1000.0]],
                                 lambda s: np.concatenate(s, axis=1).max(axis=1), 300, rng=3)
    assert ci == (1000.0, 1000.0, 1000.0)
    ci = stratified_bootstrap_ci([[0.0, 1.0, 2.0, 3.0], [1000.0]],
                                 lambda s: (np.concatenate(s, axis=1) == 1000.0).sum(axis=1), 300, rng=3)
    assert ci == (1.0, 1.0, 1.0)


def test_bootstrap_of_curves_gives_pointwise_intervals():
    curves = np.random.default_rng(4).normal(size=(6, 9))  # 6 runs x 9 grid points
    ci = stratified_bootstrap_ci([curves], lambda s: iqm(s[0], axis=1), 400, rng=0)
    assert ci.estimate.shape == ci.low.shape == ci.high.shape == (9,)
    np.testing.assert_allclose(ci.estimate, iqm(curves, axis=0))
    assert np.all(ci.low <= ci.high)


def test_bootstrap_difference_of_two_groups():
    # two algorithms as two strata: the difference of their IQMs
    better, worse = np.array([10.0, 11, 12, 13, 14]), np.array([0.0, 1, 2, 3, 4])
    ci = stratified_bootstrap_ci([better, worse], lambda s: iqm(s[0], 1) - iqm(s[1], 1), 1000, rng=0)
    assert ci.estimate == pytest.approx(10.0)
    assert 6.0 <= ci.low <= 10.0 <= ci.high  # better's resampled IQM is >= 10, worse's <= 4


EXPONENTIAL_IQM = 2 * (0.5 - 0.75 * math.log(0.75) + 0.25 * math.log(0.25))  # 0.73838


def test_exponential_iqm_constant():
    x = np.random.default_rng(0).standard_exponential(400_000)
    assert iqm(x) == pytest.approx(EXPONENTIAL_IQM, abs=3e-3)


def test_bootstrap_interval_covers_the_true_iqm_at_about_the_nominal_rate():
    # 2 tasks x 30 runs of Exp(1), pooled IQM; 400 repetitions of a 95 % interval
    gen = np.random.default_rng(12345)
    repetitions, covered = 400, 0
    for _ in range(repetitions):
        tasks = [gen.standard_exponential(30), gen.standard_exponential(30)]
        ci = stratified_bootstrap_ci(tasks, pooled_iqm, 400, 0.95, rng=gen)
        covered += ci.low <= EXPONENTIAL_IQM <= ci.high
    rate = covered / repetitions
    assert 0.89 <= rate <= 0.99, rate  # the binomial sd at 0.95 is ~0.011


@pytest.mark.parametrize("kwargs, message", [
    (dict(scores_by_task=[]), "empty"),
    (dict(scores_by_task=[[]]), "empty"),
    (dict(scores_by_task=[[1.0, np.nan]]), "non-finite"),
    (dict(scores_by_task=[np.zeros((3, 2)), np.zeros((3, 4))]), "ragged"),
    (dict(confidence=1.0), "strictly between 0 and 1"),
    (dict(confidence=0.0), "strictly between 0 and 1"),
    (dict(confidence=-0.5), "strictly between 0 and 1"),
    (dict(num_resamples=0), "positive integer"),
    (dict(rng="seed"), "Generator or an integer seed"),
    (dict(statistic=lambda s: np.zeros(3)), "one value per resample"),
])
def test_bootstrap_bad_input(kwargs, message):
    args = dict(scores_by_task=[[1.0, 2.0, 3.0]], statistic=pooled_iqm, num_resamples=10)
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        stratified_bootstrap_ci(**args)


# ---- curves ---------------------------------------------------------------------------------

def test_common_grid_union_and_linspace():
    a, b = [1000, 2000, 3000, 4000], [1500, 2500, 3500]
    np.testing.assert_array_equal(common_grid([a, b]), [1500, 2000, 2500, 3000, 3500])
    np.testing.assert_allclose(common_grid([a, b], num_points=3), [1500, 2500, 3500])
    np.testing.assert_array_equal(common_grid([a]), a)
    np.testing.assert_array_equal(common_grid([[5, 10], [10, 20]]), [10])
    with pytest.raises(ValueError, match="do not overlap"):
        common_grid([[1, 2], [3, 4]])
    with pytest.raises(ValueError, match="strictly increasing"):
        common_grid([[1, 1, 2]])
    with pytest.raises(ValueError, match="at least one"):
        common_grid([])


def test_interpolate_curves_by_hand():
    steps = [0, 10, 20]
    returns = np.array([[0.0, 10.0, 30.0], [1.0, 1.0, 1.0]])
    out = interpolate_curves(steps, returns, [5, 10, 15, 20])
    np.testing.assert_allclose(out, [[5, 10, 20, 30], [1, 1, 1, 1]])
    with pytest.raises(ValueError, match="no extrapolation"):
        interpolate_curves(steps, returns, [5, 25])
    with pytest.raises(ValueError, match="last axis"):
        interpolate_curves(steps, returns[:, :2], [5])
    with pytest.raises(ValueError, match="non-finite"):
        interpolate_curves(steps, [0.0, np.nan, 1.0], [5])


def test_area_under_curve_by_hand():
    # trapezoid: (0 + 10) / 2 * 10 + (10 + 30) / 2 * 10 = 250 over a span of 20 -> 12.5
    assert area_under_curve([0, 10, 20], [0, 10, 30]) == pytest.approx(12.5)
    # uneven steps: (2 + 4) / 2 * 1 + (4 + 4) / 2 * 3 = 15 over 4 -> 3.75
    assert area_under_curve([1, 2, 5], [2, 4, 4]) == pytest.approx(3.75)
    assert area_under_curve([7], [3.0]) == 3.0  # one point: its value
    np.testing.assert_allclose(area_under_curve([0, 10, 20], [[0, 10, 30], [2, 2, 2]]), [12.5, 2.0])
    with pytest.raises(ValueError, match="last axis"):
        area_under_curve([0, 1], [1, 2, 3])


def test_area_is_exact_on_the_union_grid():
    # the interpolant is linear between a curve's own points, which the union grid contains
    sa, ra = np.array([100.0, 300, 700]), np.array([1.0, 5.0, 2.0])
    sb = np.array([100.0, 200, 500, 700])
    grid = common_grid([sa, sb])
    on_grid = interpolate_curves(sa, ra, grid)
    assert area_under_curve(grid, on_grid) == pytest.approx(area_under_curve(sa, ra))


def test_normalize_scores():
    np.testing.assert_allclose(normalize_scores([0, 500, 1000], (0, 1000)), [0, 0.5, 1])
    np.testing.assert_allclose(normalize_scores([-50.0], (-100, 0)), [0.5])
    for bad in [(1, 1), (2, 1), (0, np.inf), (0,), "ab"]:
        with pytest.raises(ValueError, match="score_range"):
            normalize_scores([1.0], bad)
    with pytest.raises(ValueError, match="non-finite"):
        normalize_scores([np.nan], (0, 1))
