"""The multimodality benchmark: its math against hand-computed values, and one --quick run."""

import importlib.util
import json
import math
from pathlib import Path
from types import SimpleNamespace

import jax
import numpy as np
import pytest

from diffrl_jax.checkpoint_eval import load_run, seed_policy
from diffrl_jax.envs.toy import BUMP_WIDTH, bandit_reward, double_well_reward
from diffrl_jax.experiment import make_config
from diffrl_jax.plots import sample_policy_actions, toy_probe_states

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "multimodality.py"
_spec = importlib.util.spec_from_file_location("multimodality", _PATH)
mm = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(mm)


def np_bandit(a):
    a = np.asarray(a, dtype=np.float64)
    return (np.exp(-0.5 * ((a + 0.5) / BUMP_WIDTH) ** 2)
            + np.exp(-0.5 * ((a - 0.5) / BUMP_WIDTH) ** 2))


# ---- the math ---------------------------------------------------------------------------

def test_histogram_probabilities():
    actions = np.array([-1.0, -0.6, -0.4, 0.1, 0.5, 1.0, 1.5, np.nan])
    p, edges = mm.histogram_probabilities(actions, bins=4)
    np.testing.assert_allclose(edges, [-1.0, -0.5, 0.0, 0.5, 1.0])
    # 1.5 and NaN are dropped; 1.0 (the upper edge) is in the last bin; 0.5 in the last bin
    np.testing.assert_allclose(p, [2 / 6, 1 / 6, 1 / 6, 2 / 6])
    p2, _ = mm.histogram_probabilities(actions[:, None], bins=4)  # [n, A] uses dimension 0
    np.testing.assert_allclose(p2, p)
    with pytest.raises(ValueError, match="no finite action"):
        mm.histogram_probabilities([np.nan, 3.0], bins=4)
    with pytest.raises(ValueError, match="bins"):
        mm.histogram_probabilities([0.0], bins=0)


def test_kl_uniform_against_uniform_is_zero():
    bins = 50
    p = np.full(bins, 1 / bins)
    assert mm.kl_divergence(p, p) == pytest.approx(0.0, abs=1e-12)
    assert mm.kl_divergence(3 * p, p) == pytest.approx(0.0, abs=1e-12)  # normalised first


@pytest.mark.parametrize("bins", [2, 10, 50])
def test_kl_of_one_bin_against_uniform_is_log_bins(bins):
    p = np.zeros(bins)
    p[3 % bins] = 1.0
    # the epsilon keeps a uniform target uniform: (1/B + eps) / (1 + B eps) = 1/B
    assert mm.kl_divergence(p, np.ones(bins)) == pytest.approx(math.log(bins), rel=1e-12)


def test_kl_hand_values_and_epsilon():
    # 0.75 log(0.75 / 0.5) + 0.25 log(0.25 / 0.5)
    assert mm.kl_divergence([0.75, 0.25], [0.5, 0.5]) == pytest.approx(
        0.75 * math.log(1.5) + 0.25 * math.log(0.5), rel=1e-12)
    # an empty target bin under histogram mass: q~ = eps / (1 + 2 eps), a finite KL
    eps = mm.KL_EPSILON
    expected = (0.5 * math.log(0.5 / ((1 + eps) / (1 + 2 * eps)))
                + 0.5 * math.log(0.5 / (eps / (1 + 2 * eps))))
    got = mm.kl_divergence([0.5, 0.5], [1.0, 0.0])
    assert got == pytest.approx(expected, rel=1e-9) and math.isfinite(got)
    assert got == pytest.approx(0.5 * math.log(0.5 / 1e-6) + 0.5 * math.log(0.5), rel=1e-5)
    # an empty histogram bin contributes nothing (0 log 0 = 0); the epsilon moves eps of the
    # target's mass into the empty bin: log((1 + 2 eps) / (1 + eps)) ~ eps
    assert mm.kl_divergence([1.0, 0.0], [1.0, 0.0]) == pytest.approx(
        math.log((1 + 2 * eps) / (1 + eps)), rel=1e-9)
    with pytest.raises(ValueError):
        mm.kl_divergence([1.0, 0.0], [1.0, 0.0, 0.0])
    rng = np.random.default_rng(0)
    for _ in range(20):  # Gibbs: never negative
        assert mm.kl_divergence(rng.random(7), rng.random(7)) >= 0.0


def test_boltzmann_target_of_a_constant_reward_is_proportional_to_width():
    q = mm.boltzmann_bin_probabilities(lambda a: np.zeros_like(a), 0.3, np.linspace(-1, 1, 11))
    np.testing.assert_allclose(q, np.full(10, 0.1), rtol=1e-12)
    q = mm.boltzmann_bin_probabilities(lambda a: np.ones_like(a), 0.3, [-1.0, 0.0, 0.5, 1.0])
    np.testing.assert_allclose(q, [0.5, 0.25, 0.25], rtol=1e-12)


def test_boltzmann_target_of_a_linear_reward_matches_the_integral():
    # exp(a / alpha) over [lo, hi] integrates to alpha (exp(hi / alpha) - exp(lo / alpha))
    alpha, edges = 0.5, np.linspace(-1, 1, 5)
    q = mm.boltzmann_bin_probabilities(lambda a: a, alpha, edges)
    exact = np.exp(edges[1:] / alpha) - np.exp(edges[:-1] / alpha)
    np.testing.assert_allclose(q, exact / exact.sum(), rtol=1e-4)
    # reward_scale s acts as alpha / s
    np.testing.assert_allclose(mm.boltzmann_bin_probabilities(lambda a: a, 1.0, edges, 2.0), q,
                               rtol=1e-12)
    for bad in (0.0, -1.0, math.inf, math.nan):
        with pytest.raises(ValueError, match="alpha > 0"):
            mm.boltzmann_bin_probabilities(lambda a: a, bad, edges)


def test_bandit_target_has_two_symmetric_bumps_at_the_peaks():
    edges = np.linspace(-1, 1, 51)
    centres = 0.5 * (edges[:-1] + edges[1:])
    for alpha in (0.05, 0.1, 0.5):
        q = mm.boltzmann_bin_probabilities(np_bandit, alpha, edges)
        assert q.sum() == pytest.approx(1.0)
        np.testing.assert_allclose(q, q[::-1], rtol=1e-9, atol=1e-15)  # symmetric
        left, right = q[centres < 0].sum(), q[centres > 0].sum()
        assert left == pytest.approx(0.5, abs=1e-9) and right == pytest.approx(0.5, abs=1e-9)
        # the two largest bins are the ones centred on -0.5 and +0.5
        top = sorted(np.argsort(q)[-2:])
        np.testing.assert_allclose(centres[top], [-0.5, 0.5], atol=1e-9)
        assert q[np.argmin(np.abs(centres))] < q[top[0]]
        np.testing.assert_allclose(mm.target_mode_fractions(q, edges, (-0.5, 0.5)), [0.5, 0.5],
                                   atol=1e-9)
    # a tiny temperature neither overflows nor loses the peaks
    q = mm.boltzmann_bin_probabilities(np_bandit, 1e-4, edges)
    assert np.all(np.isfinite(q))
    assert q[np.argmin(np.abs(centres + 0.5))] == pytest.approx(0.5, abs=1e-6)
    # the script's reward (the library's jax function) gives the same target
    np.testing.assert_allclose(
        mm.boltzmann_bin_probabilities(lambda a: np.asarray(bandit_reward(a)), 0.1, edges),
        mm.boltzmann_bin_probabilities(np_bandit, 0.1, edges), rtol=1e-4, atol=1e-12)


def test_double_well_target_is_symmetric_with_peaks_at_half():
    edges = np.linspace(-1, 1, 51)
    centres = 0.5 * (edges[:-1] + edges[1:])
    q = mm.boltzmann_bin_probabilities(lambda a: np.asarray(double_well_reward(a)), 0.1, edges)
    np.testing.assert_allclose(q, q[::-1], rtol=1e-5)
    np.testing.assert_allclose(sorted(centres[np.argsort(q)[-2:]]), [-0.5, 0.5], atol=1e-9)


def test_histogram_entropy():
    p, edges = np.full(4, 0.25), np.linspace(-1, 1, 5)
    assert mm.histogram_entropy(p, edges) == pytest.approx(math.log(2.0))  # uniform on [-1, 1]
    one = np.array([0.0, 1.0, 0.0, 0.0])
    assert mm.histogram_entropy(one, edges) == pytest.approx(math.log(0.5))  # width 0.5


def test_mode_fractions_and_verdict():
    actions = np.array([-0.9, -0.5, -0.1, 0.0, 0.2, 0.7, 0.9, np.nan])
    # 0.0 is equidistant: the first peak; NaN is dropped
    np.testing.assert_allclose(mm.mode_fractions(actions, (-0.5, 0.5)), [4 / 7, 3 / 7])
    f = mm.mode_fractions(np.random.default_rng(0).uniform(-1, 1, 100), (-0.5, 0.5))
    assert f.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(mm.mode_fractions([np.nan], (-0.5, 0.5)), [0.0, 0.0])
    assert mm.MODE_THRESHOLD == 0.2 and mm.DIP_SHARE == 0.75
    assert mm.verdict([0.2], [True]) == "both modes"
    assert mm.verdict([0.2], [False]) == "no dip"
    assert mm.verdict([0.19], [True]) == "collapsed"
    assert mm.verdict([0.5, 0.0], [True, True]) == "both modes"  # mean 0.25 >= 0.2
    assert mm.verdict([0.3, 0.0], [True, True]) == "collapsed"  # mean 0.15
    assert mm.verdict([0.4] * 4, [True, True, True, False]) == "both modes"  # 3 of 4 dips
    assert mm.verdict([0.4] * 4, [True, True, False, False]) == "no dip"
    with pytest.raises(ValueError):
        mm.verdict([], [])
    with pytest.raises(ValueError, match="one dip flag per cell"):
        mm.verdict([0.4, 0.4], [True])


def test_dip_tells_two_modes_from_one_wide_hump():
    rng = np.random.default_rng(0)
    peaks = (-0.5, 0.5)
    two = np.concatenate([rng.normal(-0.5, 0.05, 5000), rng.normal(0.5, 0.05, 5000)])
    hump = np.clip(rng.normal(0.0, 0.4, 10000), -1, 1)
    uniform = np.linspace(-1, 1, 20001)
    # all three split about 50/50 by nearest peak ...
    for actions in (two, hump, uniform):
        assert min(mm.mode_fractions(actions, peaks)) > 0.45
    # ... only the two separate modes put fewer actions around a = 0 than near the peaks
    np.testing.assert_allclose(mm.valley_fractions(uniform, peaks), [0.1], atol=1e-3)
    verdicts = {}
    for name, actions in (("two", two), ("hump", hump), ("uniform", uniform)):
        near, valley = mm.near_peak_fractions(actions, peaks), mm.valley_fractions(actions, peaks)
        verdicts[name] = mm.has_dip(near, valley)
    assert verdicts == {"two": True, "hump": False, "uniform": False}
    # the valley is the midpoint of adjacent sorted peaks; a collapsed policy has no dip
    np.testing.assert_allclose(mm.valley_fractions([0.0, 0.95, 1.05, 2.0], (2.0, 0.0)), [2 / 4])
    assert not mm.has_dip([0.0, 0.9], [0.0])
    assert mm.has_dip([0.2, 0.3], [0.1]) and not mm.has_dip([0.2, 0.3], [0.11])
    with pytest.raises(ValueError, match="two peaks"):
        mm.valley_fractions([0.0], (0.5,))
    # three unsorted peaks: the valleys are the midpoints of the sorted neighbours, 0 and 0.75
    np.testing.assert_allclose(
        mm.valley_fractions([0.0, 0.02, 0.75, 0.8, 0.5, -0.5], (1.0, -0.5, 0.5)), [2 / 6, 2 / 6])
    # every valley must be low: one deep and one filled valley is no dip
    assert mm.has_dip([0.3, 0.3, 0.3], [0.0, 0.1]) and not mm.has_dip([0.3, 0.3, 0.3], [0.0, 0.2])


def _cell(smallest: float, near: list[float], valley: float) -> dict:
    return {"min_mode_fraction": smallest, "max_mode_fraction": 1.0 - smallest,
            "near_peak_fractions": near, "valley_fractions": [valley],
            "dip": mm.has_dip(near, [valley]), "kl_to_target": 0.5, "histogram_entropy": 0.1}


def test_summarise_counts_dips_per_cell_and_seed():
    two = _cell(0.45, [0.3, 0.35], 0.01)
    hump = _cell(0.45, [0.08, 0.09], 0.12)
    collapsed = _cell(0.0, [0.0, 0.6], 0.0)
    per_seed = [{"alpha": 0.1, "target_histogram_entropy": 0.2, "states": [two, two]},
                {"alpha": 0.1, "target_histogram_entropy": 0.2, "states": [two, hump]},
                {"alpha": 0.1, "target_histogram_entropy": 0.2, "states": [hump, hump]}]
    row = mm.summarise(per_seed, [1.0, 2.0, 3.0], [None, -1.0, -2.0])
    assert row["dip_share"] == pytest.approx(3 / 6)
    assert row["valley_mean"] == pytest.approx((3 * 0.01 + 3 * 0.12) / 6)
    assert row["near_peak_min_mean"] == pytest.approx((3 * 0.3 + 3 * 0.08) / 6)
    assert row["verdict"] == "no dip"  # balanced (0.45), but only half the cells dip
    assert row["seeds_both_modes"] == 1  # seed 1 has a dip in 1 of 2 cells: < 0.75
    assert row["return_mean"] == pytest.approx(2.0) and row["entropy_hat_mean"] == pytest.approx(-1.5)
    per_seed = [{"alpha": 0.1, "target_histogram_entropy": 0.2, "states": [two, two, two, two]},
                {"alpha": 0.1, "target_histogram_entropy": 0.2, "states": [two, two, two, collapsed]}]
    row = mm.summarise(per_seed, [1.0, 1.0], [0.0, 0.0])
    assert row["verdict"] == "both modes" and row["seeds_both_modes"] == 2  # 7 of 8 cells dip
    row = mm.summarise([{"alpha": 0.1, "target_histogram_entropy": 0.2,
                         "states": [collapsed, collapsed, two]}], [1.0], [0.0])
    assert row["verdict"] == "collapsed"  # mean smallest fraction 0.15


def test_near_peak_fractions():
    actions = np.array([-0.65, -0.55, -0.5, -0.41, 0.0, 0.45, 0.6, 0.95, np.nan])
    # within 0.1 of -0.5: -0.55, -0.5, -0.41; of +0.5: 0.45, 0.6; of the 8 finite actions
    np.testing.assert_allclose(mm.near_peak_fractions(actions, (-0.5, 0.5)), [3 / 8, 2 / 8])
    # a uniform spread splits 50/50 by nearest peak but puts only ~10 % near each
    uniform = np.linspace(-1, 1, 20001)
    np.testing.assert_allclose(mm.mode_fractions(uniform, (-0.5, 0.5)), [0.5, 0.5], atol=1e-4)
    np.testing.assert_allclose(mm.near_peak_fractions(uniform, (-0.5, 0.5)), [0.1, 0.1], atol=1e-3)


def test_final_temperature_learned_or_fixed():
    off = SimpleNamespace(algo="diffsac", learn_alpha=True, init_alpha=0.05)
    state = SimpleNamespace(learner=SimpleNamespace(log_alpha=np.log([0.1, 0.2])))
    np.testing.assert_allclose(mm.final_temperature(off, state, 2), [0.1, 0.2])
    np.testing.assert_allclose(
        mm.final_temperature(SimpleNamespace(algo="sac", learn_alpha=False, init_alpha=0.05), state, 2),
        [0.05, 0.05])
    on = SimpleNamespace(algo="diffppo", learn_entropy_coef=True, entropy_coef=0.1)
    coef = SimpleNamespace(learner=SimpleNamespace(log_entropy_coef=np.log([0.3, 0.4, 0.5])))
    np.testing.assert_allclose(
        mm.final_temperature(on, coef, 3),
        [0.3, 0.4, 0.5])
    np.testing.assert_allclose(
        mm.final_temperature(SimpleNamespace(algo="ppo", learn_entropy_coef=False, entropy_coef=0.1),
                             None, 2),
        [0.1, 0.1])


def test_final_metric_is_the_last_interval_per_seed(tmp_path):
    path = tmp_path / "metrics.jsonl"
    rows = [{"interval": 0, "env_steps": 10, "seed": 0, "entropy": 1.0},
            {"interval": 0, "env_steps": 10, "seed": 1, "entropy": 2.0},
            {"interval": 1, "env_steps": 20, "seed": 1, "entropy": 3.0},
            {"interval": 1, "env_steps": 20, "seed": 0, "entropy": float("nan")}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert mm.final_metric_per_seed(path, "entropy", 3) == [None, 3.0, None]


def test_every_full_setting_resolves():
    for env in mm.DEFAULT_ENVS:
        for algo in mm.DEFAULT_ALGOS:
            config = make_config(algo, env, **mm.benchmark_overrides(algo, env))
            if env == "toy/bandit":
                assert config == make_config(algo, env)  # the presets
            else:
                assert config.discount == 0.9 and config.num_evals == 4
                assert not config.normalize_obs
            quick = make_config(algo, env, **mm.run_overrides(algo, env, quick=True))
            assert quick.num_evals == 2 and quick.total_env_steps < config.total_env_steps
    # on the double well each Diff algorithm has its Gaussian partner's env-step budget
    for gaussian in ("sac", "wpo", "ppo"):
        budgets = {make_config(a, "toy/double_well", **mm.benchmark_overrides(a, "toy/double_well"))
                   .total_env_steps for a in (gaussian, "diff" + gaussian)}
        assert len(budgets) == 1, (gaussian, budgets)


# ---- one quick run ----------------------------------------------------------------------

def test_quick_run_writes_json_table_and_histograms(tmp_path, capsys):
    out = tmp_path / "mm.json"
    runs = tmp_path / "runs"
    result = mm.main(["--quick", "--out-dir", str(runs), "--out", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    assert result["benchmark"] == "multimodality" and result["quick"] is True
    assert result["envs"] == ["toy/bandit"] and result["algos"] == ["ppo", "diffppo"]
    assert {"command", "date", "jax_version", "device", "definitions"} <= set(result)
    assert result["command"].startswith("python benchmarks/multimodality.py --quick")
    assert [r["algo"] for r in result["rows"]] == ["ppo", "diffppo"]
    for row in result["rows"]:
        assert row["status"] == "completed" and row["num_seeds"] == 2
        assert row["verdict"] in mm.VERDICTS
        cells = [s for seed in row["per_seed"] for s in seed["states"]]
        assert row["verdict"] == mm.verdict([c["min_mode_fraction"] for c in cells],
                                            [c["dip"] for c in cells])
        assert row["dip_share"] == pytest.approx(np.mean([c["dip"] for c in cells]))
        for c in cells:
            assert c["dip"] == mm.has_dip(c["near_peak_fractions"], c["valley_fractions"])
        assert 0.0 <= row["mode_fraction_min_mean"] <= 0.5 <= row["mode_fraction_max_mean"] <= 1.0
        assert row["kl_mean"] >= 0.0 and row["alpha_mean"] > 0
        assert len(row["per_seed"]) == 2 and len(row["final_eval_return"]) == 2
        for seed in row["per_seed"]:
            assert seed["entropy_hat"] is not None and math.isfinite(seed["entropy_hat"])
            assert sum(seed["target"]) == pytest.approx(1.0)
            (state,) = seed["states"]  # the bandit has one state
            assert sum(state["mode_fractions"]) == pytest.approx(1.0)
            assert all(0.0 <= f <= m + 1e-12 for f, m in zip(state["near_peak_fractions"],
                                                            state["mode_fractions"]))
            assert sum(state["histogram"]) == pytest.approx(1.0)
            assert len(state["histogram"]) == mm.DEFAULT_BINS
            assert state["kl_to_target"] >= 0.0
        assert Path(row["histogram_png"]).stat().st_size > 0
        assert (Path(row["run_dir"]) / "action_histogram.png").exists()
    ppo = result["rows"][0]
    assert ppo["alpha_mean"] == pytest.approx(0.05)  # the bandit preset's fixed coefficient
    printed = capsys.readouterr().out
    assert "verdict" in printed and f"wrote {out}" in printed
    assert any(line.startswith("toy/bandit       diffppo") for line in printed.splitlines())

    # the vmapped sampler computes what plots.sample_policy_actions does for each seed
    run = load_run(runs / "toy/bandit/ppo")
    _, obs = toy_probe_states("toy/bandit", 1)
    key = jax.random.PRNGKey(7)
    vmapped = mm.sample_seed_actions(run.config, run.state, obs, 64, key)
    _, params, stats = seed_policy(run, 1)
    single = sample_policy_actions(run.config, params, stats, obs, 64, jax.random.split(key, 2)[1])
    np.testing.assert_allclose(vmapped[1], single, atol=1e-5)

    # a second run into the same directory is refused before any training
    with pytest.raises(SystemExit):
        mm.main(["--quick", "--out-dir", str(runs), "--out", str(tmp_path / "again.json")])
    assert "already holds runs" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["--envs", "toy/bandit", "brax/ant"], "unknown env(s) 'brax/ant'"),
    (["--algos", "ppo", "dqn"], "unknown algo(s) 'dqn'"),
    (["--algos", "ppo", "ppo"], "lists a value twice"),
    (["--seeds", "0"], "--seeds must be >= 1"),
    (["--bins", "0"], "--bins must be >= 1"),
])
def test_invalid_input_is_refused(argv, message, capsys, tmp_path):
    with pytest.raises(SystemExit):
        mm.main(argv + ["--out-dir", str(tmp_path / "runs"), "--out", str(tmp_path / "x.json")])
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()


# ---- the noise-limited optimum (toy/three_peaks) ------------------------------------------

def np_three_peaks(a):
    a = np.asarray(a, dtype=np.float64)
    return sum(np.exp(-0.5 * ((a - c) / BUMP_WIDTH) ** 2) for c in (-0.7, 0.0, 0.7))


def _gaussian_expectation(f, mean, std):
    from scipy import integrate, stats
    return integrate.quad(lambda x: f(x) * stats.norm.pdf(x, mean, std), mean - 10 * std,
                          mean + 10 * std, points=[mean], limit=200)[0]


@pytest.mark.parametrize("mean, std", [(0.0, 0.36), (0.9, 0.36), (0.55, 0.2), (-1.3, 0.52)])
def test_aimed_reward_against_closed_form_and_quadrature(mean, std):
    # identity squash, one bump of width w at c:
    # E = w / sqrt(w^2 + s^2) exp(-(m - c)^2 / (2 (w^2 + s^2)))
    var = BUMP_WIDTH**2 + std**2
    bump = lambda a: np.exp(-0.5 * ((np.asarray(a) - 0.5) / BUMP_WIDTH) ** 2)
    closed = BUMP_WIDTH / math.sqrt(var) * math.exp(-0.5 * (mean - 0.5) ** 2 / var)
    assert mm.aimed_reward(bump, mean, std, squash=lambda x: x) == pytest.approx(closed, abs=1e-6)
    quad = _gaussian_expectation(lambda x: np_three_peaks(np.tanh(x)), mean, std)
    assert mm.aimed_reward(np_three_peaks, mean, std) == pytest.approx(quad, abs=1e-6)


def test_noise_limited_objective_against_gaussian_entropy_and_quadrature():
    x = np.linspace(-3.2, 3.2, 321)
    weights = (np.abs(x - 0.9) < 1e-9).astype(float)  # every mean at x = 0.9
    std, alpha = 0.3, 0.1
    reward = _gaussian_expectation(lambda v: np_three_peaks(np.tanh(v)), 0.9, std)
    h_x = 0.5 * math.log(2 * math.pi * math.e * std**2)
    log_det = _gaussian_expectation(lambda v: np.log1p(-np.tanh(v) ** 2), 0.9, std)
    got_x = mm.noise_limited_objective(weights, np_three_peaks, std, alpha, False)
    got_a = mm.noise_limited_objective(weights, np_three_peaks, std, alpha, True)
    assert got_x == pytest.approx(reward + alpha * h_x, abs=2e-3)
    assert got_a == pytest.approx(reward + alpha * (h_x + log_det), abs=2e-3)


def _boltzmann_shares(action_space, alpha, x_max=3.2):
    """Shares of exp(R(tanh x)/alpha) (times the tanh Jacobian when action_space) nearest
    each of -0.7, 0, 0.7 (boundaries at a = +-0.35), by quadrature."""
    from scipy import integrate
    jac = (lambda x: 1 - np.tanh(x) ** 2) if action_space else (lambda x: 1.0)
    f = lambda x: math.exp((np_three_peaks(np.tanh(x)) - 1) / alpha) * jac(x)
    b = math.atanh(0.35)
    mid = integrate.quad(f, -b, b, points=[0.0], limit=200)[0]
    out = integrate.quad(f, b, x_max, points=[math.atanh(0.7)], limit=200)[0]
    return np.array([out, mid, out]) / (mid + 2 * out)


@pytest.mark.parametrize("action_space", [True, False])
def test_noise_limited_optimum_tends_to_the_boltzmann_target_for_small_noise(action_space):
    # with noise std 0.03 (under the bumps' x-widths) the optimum is ~ exp(R / alpha) / Z:
    # equal thirds in action space; in x space the outer peaks' ~1.96x wider x-regions win
    fractions, weights = mm.noise_limited_optimum(np_three_peaks, (-0.7, 0.0, 0.7), 0.03, 0.1,
                                                  action_space, grid=641)
    expected = _boltzmann_shares(action_space, 0.1)
    np.testing.assert_allclose(fractions, expected, atol=0.01)
    assert weights.shape == (641,) and weights.sum() == pytest.approx(1.0)


def test_noise_limited_optimum_is_optimal_and_starves_the_middle_peak():
    std, alpha = 0.3625, 0.1  # the bandit presets' last-step noise, DiffPPO's coefficient
    fractions, weights = mm.noise_limited_optimum(np_three_peaks, (-0.7, 0.0, 0.7), std, alpha)
    best = mm.noise_limited_objective(weights, np_three_peaks, std, alpha)
    rng = np.random.default_rng(0)
    for i in rng.integers(0, 321, 20):  # no mixing-in of a point mass improves it
        moved = 0.9 * weights + 0.1 * np.eye(321)[i]
        assert mm.noise_limited_objective(moved, np_three_peaks, std, alpha) <= best + 1e-9
    # aiming at the middle bump (0.1 wide in x) loses reward to the noise, the outer ones
    # (~0.2 wide in x) lose less: the middle share is what the outer modes' noise leaks there
    assert fractions[1] < 0.1 and fractions[0] == pytest.approx(fractions[2], abs=1e-6)
    # two peaks are symmetric, and without the tanh (equal widths in x) the three stay level
    two, _ = mm.noise_limited_optimum(np_bandit, (-0.5, 0.5), std, alpha)
    np.testing.assert_allclose(two, [0.5, 0.5], atol=0.01)  # the grid point x = 0: first peak
    flat, _ = mm.noise_limited_optimum(np_three_peaks, (-0.7, 0.0, 0.7), 0.18, alpha, False,
                                       x_max=1.2, grid=241, squash=lambda x: x)
    assert flat.min() > 0.3


def test_final_step_noise_std_from_parameters():
    from diffrl_jax.policies.diffusion import inverse_softplus
    config = make_config("diffppo", "toy/bandit")  # dt0 0.06, linear schedule m 0.17, K 8
    dt_last = 0.06 * (7 / 8 * 0.17 + 1 / 8)  # schedule(K - 1) = (1 - 1/K) m + 1/K
    raw = np.full((2, 8), inverse_softplus(0.01))
    raw[:, -1] = [inverse_softplus(dt_last), inverse_softplus(2 * dt_last)]
    state = SimpleNamespace(policy_params={"dt": raw})
    np.testing.assert_allclose(mm.final_step_noise_std(config, state),
                               [math.sqrt(2 * dt_last / 0.25), math.sqrt(4 * dt_last / 0.25)],
                               rtol=1e-6)
    friction = np.full(2, inverse_softplus(0.5))
    learned = SimpleNamespace(policy_params={"dt": raw, "friction": friction})
    np.testing.assert_allclose(mm.final_step_noise_std(config, learned)[0],
                               math.sqrt(2 * dt_last / 0.5), rtol=1e-6)
    assert mm.final_step_noise_std(config, SimpleNamespace(policy_params={"mean": 0})) is None


def test_three_peaks_uses_the_bandit_presets():
    assert "toy/three_peaks" in mm.ENVS and "toy/three_peaks" not in mm.DEFAULT_ENVS
    assert mm.reward_of_action("toy/three_peaks") is not None
    for algo in mm.DEFAULT_ALGOS:
        assert mm.benchmark_overrides(algo, "toy/three_peaks") == {}
        three = make_config(algo, "toy/three_peaks")
        assert three.replace(env="toy/bandit") == make_config(algo, "toy/bandit")
