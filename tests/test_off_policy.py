"""The off-policy trainer: counters, validation, the experiment command's summary contract and
command line (vmapped seeds and traced hyperparameters of every trainer: test_trainers.py)."""

import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from diffrl_jax import ConfigError
from diffrl_jax.experiment import make_config
from diffrl_jax.policies import DiffusionPolicyConfig, GaussianPolicyConfig
from diffrl_jax.training import OffPolicyConfig, schedule_of, train

ROOT = Path(__file__).resolve().parents[1]

TINY = dict(
    total_env_steps=160, num_envs=4, learning_starts=32, batch_size=16, updates_per_step=2,
    num_evals=2, num_eval_envs=8, buffer_size=256, critic_hidden=(16,),
    diffusion=DiffusionPolicyConfig(num_steps=3, hidden_sizes=(16,), time_hidden=8),
    gaussian=GaussianPolicyConfig(hidden_sizes=(16,)),
)


def tiny_config(algo="diffsac", env="toy/bandit", **overrides):
    return OffPolicyConfig(algo=algo, env=env, **dict(TINY, **overrides)).validate()


def test_metrics_are_per_interval_and_counters_add_up():
    config = tiny_config()
    sched = schedule_of(config)
    state, metrics = jax.jit(lambda k: train(k, config))(jax.random.PRNGKey(0))
    assert metrics["eval_return"].shape == (config.num_evals,)
    assert metrics["eval_mode_counts"].shape == (config.num_evals, 2)
    assert int(state.env_steps) == sched["total_env_steps"]
    assert int(metrics["env_steps"][-1]) == sched["total_env_steps"]
    iters = sched["iters_per_eval"] * config.num_evals
    assert int(state.updates) == iters * config.updates_per_step
    assert int(state.buffer.size) == min(sched["total_env_steps"], config.buffer_size)
    # one bandit step per episode: every eval env acts exactly once
    np.testing.assert_allclose(metrics["eval_mode_counts"].sum(-1), config.num_eval_envs)
    np.testing.assert_allclose(metrics["eval_length"], 1.0)


@pytest.mark.parametrize("algo,estimator,reuses", [
    ("sac", "per_step", True), ("diffsac", "full_chain", True), ("diffsac", "per_step", False),
])
def test_the_temperature_reuses_the_actors_chains_when_they_are_whole(algo, estimator, reuses):
    """Where the actor's terms are whole chains (K = 1, or the full-chain estimator), H_hat is
    computed from them: then every update's entropy is prior_entropy - K * mean l of the
    actor's samples, and so are the interval means. Per-step actors see single replayed
    steps, so their temperature draws fresh chains and the two differ."""
    from diffrl_jax.training import build

    config = tiny_config(algo=algo, estimator=estimator)
    _, metrics = jax.jit(lambda k: train(k, config))(jax.random.PRNGKey(1))
    _, policy, transform = build(config)
    per_term = 1 if estimator == "full_chain" else policy.num_steps
    from_actor = policy.prior_entropy - per_term * np.asarray(metrics["step_log_ratio"])
    if reuses:
        np.testing.assert_allclose(metrics["entropy"], from_actor, rtol=1e-5, atol=1e-5)
    else:
        assert np.all(np.abs(np.asarray(metrics["entropy"]) - from_actor) > 1e-3)


@pytest.mark.parametrize("algo", ["diffsac", "diffwpo"])
def test_per_step_temperature_samples_entropy_chains_chains(algo):
    """Per-step DiffSAC and DiffWPO draw fresh chains for H_hat at the first entropy_chains
    observations of the batch (default ceil(B / K)): with a fixed temperature the learning is
    the same for any n (only the H_hat estimate changes), and fewer chains compile to less
    work."""
    base = tiny_config(algo=algo, learn_alpha=False, init_alpha=0.1)
    key = jax.random.PRNGKey(2)
    compiled, runs = {}, {}
    for n in (None, base.batch_size):
        config = base.replace(entropy_chains=n).validate()
        compiled[n] = jax.jit(lambda k, c=config: train(k, c)).lower(key).compile()
        runs[n] = compiled[n](key)[1]
    for name in ("critic_loss", "actor_loss", "eval_return", "q_mean"):
        np.testing.assert_allclose(runs[None][name], runs[base.batch_size][name], rtol=1e-5)
    assert np.all(np.isfinite(runs[None]["entropy"]))
    assert not np.allclose(runs[None]["entropy"], runs[base.batch_size]["entropy"])
    flops = {n: c.cost_analysis()["flops"] for n, c in compiled.items()}
    assert flops[None] < flops[base.batch_size]


def test_entropy_chain_count_defaults_rounds_to_data_shards_and_is_validated():
    from diffrl_jax.learners import entropy_chain_count

    config = tiny_config(batch_size=256)
    assert entropy_chain_count(config, 8) == 32  # ceil(256 / 8)
    assert entropy_chain_count(config, 3) == 86  # ceil(256 / 3)
    assert entropy_chain_count(config, 3, data_shards=4) == 88  # whole shards
    assert entropy_chain_count(config.replace(entropy_chains=250), 8, data_shards=4) == 252
    assert entropy_chain_count(config.replace(entropy_chains=255), 8, data_shards=4) == 256
    assert entropy_chain_count(config, 1) == 256  # K = 1: the whole batch
    with pytest.raises(ConfigError, match="OffPolicyConfig.entropy_chains"):
        tiny_config(entropy_chains=0)
    with pytest.raises(ConfigError, match=r"entropy_chains \(17\) must be <= batch_size \(16\)"):
        tiny_config(entropy_chains=17)


def test_config_validation_names_the_field():
    with pytest.raises(ConfigError, match="OffPolicyConfig.algo must be one of"):
        tiny_config(algo="td3")
    with pytest.raises(ConfigError, match="OffPolicyConfig.batch_size"):
        tiny_config(batch_size=0)
    with pytest.raises(ConfigError, match=r"OffPolicyConfig.discount must lie in \[0.0, 1.0\]"):
        tiny_config(discount=1.5)
    with pytest.raises(ConfigError, match="OffPolicyConfig.actor_lr must be a finite number > 0"):
        tiny_config(actor_lr=-1e-3)
    with pytest.raises(ConfigError, match="leaves no training steps"):
        tiny_config(total_env_steps=36)
    with pytest.raises(ValueError, match="unknown environment 'brax/pendulum_xyz'"):
        make_config("sac", "brax/pendulum_xyz")
    with pytest.raises(ValueError, match=r"unknown config fields \['learning_rate'\]"):
        make_config("sac", "toy/bandit", learning_rate=1e-3)


def test_command_line_rejects_unknown_names_clearly(tmp_path):
    cmd = [sys.executable, str(ROOT / "experiments" / "train.py"), "--algo", "diffsac",
           "--env", "brax/nonexistent", "--out", str(tmp_path)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "unknown environment 'brax/nonexistent'" in result.stderr
    cmd[cmd.index("diffsac")] = "a2c"
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "invalid choice: 'a2c'" in result.stderr


def test_readme_sweep_example_runs():
    text = (ROOT / "README.md").read_text()
    code = text.split("<!-- example: sweep -->\n```python\n", 1)[1].split("```", 1)[0]
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    assert namespace["metrics"]["eval_return"].shape[0] == 4
    grid = namespace["grid_metrics"]["eval_return"]
    assert grid.shape[0] == 8
    # members 0..3 of the grid use lr 1e-3, the preset's value: they repeat the seed sweep.
    # The two programs fuse differently, so float rounding makes long runs drift apart
    # (seen on JAX 0.10.2): exact at the first interval, close afterwards.
    assert namespace["config"].actor_lr == namespace["config"].critic_lr == 1e-3
    plain = namespace["metrics"]["eval_return"]
    np.testing.assert_allclose(grid[:4, 0], plain[:, 0], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(grid[:4], plain, atol=0.05)


def test_wpo_state_keeps_a_target_policy_and_a_kl_multiplier():
    config = tiny_config("diffwpo", num_action_samples=2, kl_bound=1e-4, init_kl_coef=0.5,
                         kl_coef_lr=0.05)
    state, metrics = jax.jit(lambda k: train(k, config))(jax.random.PRNGKey(0))
    for name in ("kl", "kl_coef", "action_grad_q_norm", "actor_loss", "entropy", "alpha"):
        assert metrics[name].shape == (config.num_evals,) and np.all(np.isfinite(metrics[name]))
    # a bound far below the KL the updates produce drives the multiplier up
    assert float(np.exp(state.learner.log_kl_coef)) > 0.5
    assert np.max(metrics["kl"]) > 1e-4
    # the target follows the policy but lags it
    lag = [np.abs(np.asarray(a) - np.asarray(b)).max() for a, b in
           zip(jax.tree.leaves(state.policy_params), jax.tree.leaves(state.learner.target_policy_params))]
    assert 0 < max(lag)
    sac_state, _ = jax.jit(lambda k: train(k, tiny_config("sac")))(jax.random.PRNGKey(0))
    # each learner owns its state: SAC's has no fields of WPO's
    assert not hasattr(sac_state.learner, "target_policy_params")
    assert not hasattr(sac_state.learner, "log_kl_coef")


def test_fixed_temperature_stays_put_and_may_be_zero():
    config = tiny_config("wpo", learn_alpha=False, init_alpha=0.0, natural_gradient=True)
    state, metrics = jax.jit(lambda k: train(k, config))(jax.random.PRNGKey(0))
    np.testing.assert_array_equal(metrics["alpha"], 0.0)
    learned = tiny_config("sac", init_alpha=0.5, alpha_lr=0.01)
    _, metrics = jax.jit(lambda k: train(k, learned))(jax.random.PRNGKey(0))
    assert not np.allclose(metrics["alpha"], 0.5)
    with pytest.raises(ConfigError, match="OffPolicyConfig.init_alpha must be a finite number > 0"):
        tiny_config("sac", init_alpha=0.0)
    with pytest.raises(ConfigError, match="OffPolicyConfig.init_alpha must be a finite number >= 0"):
        tiny_config("wpo", learn_alpha=False, init_alpha=-1.0)
    with pytest.raises(ConfigError, match="OffPolicyConfig.num_action_samples"):
        tiny_config("wpo", num_action_samples=0)
    with pytest.raises(ConfigError, match="OffPolicyConfig.natural_gradient must be a bool"):
        tiny_config("wpo", natural_gradient=1)
