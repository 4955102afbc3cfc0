"""Figures: learning curves from summaries, probe states, sampled actions and their histograms."""

import math

import jax
import matplotlib
import numpy as np
import pytest

from diffrl_jax.envs import init_stats, make_double_well_core
from diffrl_jax.experiment import make_config
from diffrl_jax.policies import DiffusionPolicyConfig, GaussianPolicyConfig
from diffrl_jax.plots import (
    action_histogram_counts,
    action_histogram_figure,
    learning_curve_figure,
    plot_action_histograms,
    plot_learning_curves,
    plot_run,
    sample_policy_actions,
    toy_probe_states,
)
from diffrl_jax.training import build

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def fake_summary(algo="sac", env="toy/bandit", num_seeds=3, num_evals=5, offset=0.0):
    rng = np.random.default_rng(len(algo))
    curve = []
    for i in range(num_evals):
        per_seed = offset + i + rng.normal(size=num_seeds)
        curve.append({
            "env_steps": 100 * (i + 1),
            "return_mean": float(per_seed.mean()),
            "return_per_seed": [float(x) for x in per_seed],
            "return_deterministic_per_seed": [float(x) + 0.5 for x in per_seed],
        })
    return {"algo": algo, "env": env, "num_seeds": num_seeds, "eval_curve": curve,
            "mode_peaks": [-0.5, 0.5]}


def assert_png(path):
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    assert len(data) > 5_000


def test_learning_curves_write_png_for_one_and_several_summaries(tmp_path):
    one = plot_learning_curves(fake_summary(), tmp_path / "one.png")
    assert one == tmp_path / "one.png"
    assert_png(one)
    two = plot_learning_curves([fake_summary("sac"), fake_summary("diffsac", offset=2.0)],
                               tmp_path / "sub" / "two.png", title="Gaussian vs diffusion")
    assert_png(two)


def test_learning_curve_figure_draws_seeds_mean_band_and_deterministic():
    summaries = [fake_summary("sac", num_seeds=3), fake_summary("diffsac", num_seeds=2)]
    ax = learning_curve_figure(summaries).axes[0]
    # per summary: n seed lines + mean + deterministic mean
    assert len(ax.lines) == (3 + 2) + 2 * 2
    assert len(ax.collections) == 2  # one band each
    texts = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any(t.startswith("sac: mean over 3 seeds") for t in texts)
    assert any(t.startswith("diffsac: deterministic mean") for t in texts)
    assert any("standard error" in t for t in texts)
    mean_line = next(line for line in ax.lines if line.get_label() == "sac: mean over 3 seeds")
    returns = np.array([p["return_per_seed"] for p in summaries[0]["eval_curve"]])
    np.testing.assert_allclose(mean_line.get_ydata(), returns.mean(1))
    np.testing.assert_allclose(mean_line.get_xdata(), [100, 200, 300, 400, 500])
    # one seed: no band, no separate seed line (its curve and its deterministic curve only),
    # and the legend does not call one seed a mean over seeds
    ax = learning_curve_figure(fake_summary(num_seeds=1)).axes[0]
    assert not ax.collections and len(ax.lines) == 2
    assert [line.get_label() for line in ax.lines] == ["sac: one seed", "sac: deterministic"]


def test_learning_curves_do_not_touch_the_pyplot_backend(tmp_path):
    # the raw rcParams entry (reading it this way resolves nothing): matplotlib.use or
    # importing pyplot with a chosen backend would change it
    before = dict.__getitem__(matplotlib.rcParams, "backend")
    plot_learning_curves(fake_summary(), tmp_path / "c.png")
    plot_action_histograms(np.zeros((1, 4, 1)), ["s"], [0.5], tmp_path / "h.png")
    assert dict.__getitem__(matplotlib.rcParams, "backend") == before


def test_learning_curves_validate_input(tmp_path):
    with pytest.raises(ValueError, match="eval_curve"):
        plot_learning_curves({"algo": "sac"}, tmp_path / "x.png")
    with pytest.raises(ValueError, match="eval_curve"):
        plot_learning_curves([fake_summary(), {"algo": "ppo"}], tmp_path / "x.png")
    with pytest.raises(ValueError, match="eval_curve"):
        plot_learning_curves({"eval_curve": []}, tmp_path / "x.png")
    with pytest.raises(ValueError, match="return_per_seed"):
        plot_learning_curves({"eval_curve": [{"env_steps": 1}]}, tmp_path / "x.png")
    with pytest.raises(ValueError, match="at least one"):
        plot_learning_curves([], tmp_path / "x.png")
    ragged = fake_summary()
    ragged["eval_curve"][1]["return_per_seed"] = [1.0]
    with pytest.raises(ValueError, match="same number"):
        plot_learning_curves(ragged, tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_probe_states_of_the_toys():
    labels, obs = toy_probe_states("toy/bandit", 8)
    assert len(labels) == 1 and obs.shape == (1, 1)
    np.testing.assert_array_equal(obs, [[1.0]])

    labels, obs = toy_probe_states("toy/double_well", 4)
    assert labels == ["h=-180°", "h=-90°", "h=0°", "h=90°"]
    assert obs.shape == (4, 3) and obs.dtype == np.float32
    headings = np.array([-math.pi, -math.pi / 2, 0.0, math.pi / 2])
    np.testing.assert_allclose(obs[:, 0], np.cos(headings), atol=1e-6)
    np.testing.assert_allclose(obs[:, 1], np.sin(headings), atol=1e-6)
    np.testing.assert_array_equal(obs[:, 2], 0.0)
    # the environment's own reset observations have the same layout (t = 0)
    _, reset_obs = make_double_well_core(10).reset(jax.random.PRNGKey(0))
    assert reset_obs.shape == (3,) and float(reset_obs[2]) == 0.0
    assert abs(float(reset_obs[0]) ** 2 + float(reset_obs[1]) ** 2 - 1.0) < 1e-5

    labels, obs = toy_probe_states("toy/double_well", 6)
    assert obs.shape == (6, 3) and len(set(labels)) == 6


@pytest.mark.parametrize("env,num", [("brax/inverted_pendulum", 2), ("nope", 2),
                                     ("toy/double_well", 0), ("toy/bandit", -1)])
def test_probe_states_reject_bad_input(env, num):
    with pytest.raises(ValueError):
        toy_probe_states(env, num)


def tiny_config(algo, env="toy/bandit"):
    return make_config(algo, env, diffusion=DiffusionPolicyConfig(num_steps=2, hidden_sizes=(8,),
                                                                  time_hidden=8),
                       gaussian=GaussianPolicyConfig(hidden_sizes=(8,)))


@pytest.mark.parametrize("algo", ["diffsac", "ppo"])
def test_sample_policy_actions_shape_and_range(algo):
    config = tiny_config(algo)
    _, policy, _ = build(config)
    params = policy.init(jax.random.PRNGKey(0))
    labels, obs = toy_probe_states("toy/bandit", 1)
    actions = sample_policy_actions(config, params, init_stats(policy.obs_dim), obs, 64,
                                    jax.random.PRNGKey(1))
    assert isinstance(actions, np.ndarray)
    assert actions.shape == (1, 64, 1)
    assert np.all(np.isfinite(actions)) and np.all(np.abs(actions) <= 1.0)
    assert np.std(actions) > 0  # stochastic samples, not one repeated action


def test_sample_policy_actions_normalises_and_keeps_states_apart():
    config = tiny_config("diffsac", "toy/double_well")
    _, policy, _ = build(config)
    params = policy.init(jax.random.PRNGKey(0))
    _, obs = toy_probe_states("toy/double_well", 3)
    key = jax.random.PRNGKey(2)
    stats = init_stats(policy.obs_dim)
    actions = sample_policy_actions(config, params, stats, obs, 16, key)
    assert actions.shape == (3, 16, 1) and np.all(np.abs(actions) <= 1.0)
    # identity statistics = no normalisation
    raw = sample_policy_actions(config.replace(normalize_obs=False), params, stats, obs, 16, key)
    np.testing.assert_allclose(actions, raw, atol=1e-6)
    with pytest.raises(ValueError, match="obs must have shape"):
        sample_policy_actions(config, params, stats, obs[:, :2], 16, key)
    with pytest.raises(ValueError, match="num_samples"):
        sample_policy_actions(config, params, stats, obs, 0, key)


def test_action_histogram_counts():
    actions = np.array([[[-1.0], [-0.55], [-0.45], [0.5], [1.0], [1.5], [np.nan]],
                        [[0.1], [0.2], [0.3], [0.4], [0.6], [0.7], [0.8]]])
    counts, edges = action_histogram_counts(actions, bins=4)
    np.testing.assert_allclose(edges, [-1.0, -0.5, 0.0, 0.5, 1.0])
    # outside [-1, 1] and non-finite values are dropped; 1.0 falls in the last bin
    np.testing.assert_array_equal(counts, [[2, 1, 0, 2], [0, 0, 4, 3]])
    # only the first action dimension counts
    two_dim = np.concatenate([actions, np.full_like(actions, 0.9)], axis=-1)
    np.testing.assert_array_equal(action_histogram_counts(two_dim, bins=4)[0], counts)
    with pytest.raises(ValueError, match="shape"):
        action_histogram_counts(actions[:, :, 0])


def test_action_histogram_figure_draws_the_counts_and_peaks(tmp_path):
    rng = np.random.default_rng(0)
    actions = np.clip(rng.normal(0.5, 0.1, size=(3, 200, 1)), -1, 1)
    actions[1, :100, 0] = -0.5
    labels = ["a", "b", "c"]
    fig = action_histogram_figure(actions, labels, [-0.5, 0.5], bins=20, max_columns=2)
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert len(visible) == 3
    counts, edges = action_histogram_counts(actions, bins=20)
    for s, ax in enumerate(visible):
        heights = [patch.get_height() for patch in ax.patches]
        np.testing.assert_array_equal(heights, counts[s])
        peaks = sorted(line.get_xdata()[0] for line in ax.lines)
        assert peaks == [-0.5, 0.5]
        assert ax.get_title().startswith(labels[s])
    assert "-0.5: 0.50, 0.5: 0.50" in visible[1].get_title()  # half the actions at each peak
    path = plot_action_histograms(actions, labels, [-0.5, 0.5], tmp_path / "h.png", title="t")
    assert_png(path)
    with pytest.raises(ValueError, match="labels"):
        action_histogram_figure(actions, ["a"], [])


def test_the_action_histogram_says_which_samples_it_shows(tmp_path, monkeypatch):
    from diffrl_jax import plots
    titles = []
    real = plots.plot_action_histograms
    monkeypatch.setattr(plots, "plot_action_histograms",
                        lambda *a, title=None, **k: titles.append(title) or real(*a, title=title, **k))
    actions = np.random.default_rng(1).uniform(-1, 1, size=(1, 64, 1))
    plot_run(tmp_path / "two", fake_summary("diffsac", num_seeds=2), actions, ["s"], seed_index=1)
    plot_run(tmp_path / "one", fake_summary("diffsac", num_seeds=1), actions, ["s"])
    assert titles[0] == ("diffsac toy/bandit: actions of the final policy, seed 1 of 2\n"
                         "64 stochastic samples per state (not the evaluation episodes)")
    assert "its one seed" in titles[1] and "64 stochastic samples" in titles[1]


def test_plot_run_writes_the_figures(tmp_path):
    summary = fake_summary("diffsac", "toy/double_well")
    assert plot_run(tmp_path, summary) == [tmp_path / "learning_curve.png"]
    actions = np.random.default_rng(1).uniform(-1, 1, size=(4, 50, 1))
    labels, _ = toy_probe_states("toy/double_well", 4)
    paths = plot_run(tmp_path / "run", summary, actions, labels)
    assert paths == [tmp_path / "run" / "learning_curve.png", tmp_path / "run" / "action_histogram.png"]
    for path in paths:
        assert_png(path)
