"""The off-policy trainer: one compiled program, vmapped seeds, traced hyperparameters,
the experiment command's summary contract."""

import json
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffrl_jax import ConfigError
from diffrl_jax.experiment import make_config, run_experiment
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


@pytest.mark.parametrize("algo", ["sac", "diffsac"])
def test_vmapped_seed_equals_single_run(algo):
    config = tiny_config(algo)
    keys = jax.random.split(jax.random.PRNGKey(0), 2)
    run = jax.jit(lambda k: train(k, config))
    batched_state, batched_metrics = jax.jit(jax.vmap(lambda k: train(k, config)))(keys)
    for i in range(2):
        state, metrics = run(keys[i])
        for a, b in zip(jax.tree.leaves(metrics), jax.tree.leaves(batched_metrics)):
            np.testing.assert_allclose(b[i], a, rtol=1e-4, atol=1e-5)
        for a, b in zip(jax.tree.leaves(state.policy_params), jax.tree.leaves(batched_state.policy_params)):
            np.testing.assert_allclose(b[i], a, rtol=1e-4, atol=1e-5)
    # the two seeds really differ
    assert not np.allclose(batched_metrics["critic_loss"][0], batched_metrics["critic_loss"][1])


def test_hyperparameter_grid_times_seeds_compiles_once():
    traces = []

    def run(key, config):
        traces.append(1)
        return train(key, config)[1]["eval_return"]

    base = tiny_config("sac")
    lrs = jnp.array([1e-3, 1e-3, 3e-4, 3e-4])  # 2 values x 2 seeds
    taus = jnp.array([0.005, 0.005, 0.05, 0.05])
    configs = jax.tree.map(lambda x: jnp.broadcast_to(jnp.asarray(x), (4,)), base)
    configs = configs.replace(actor_lr=lrs, critic_lr=lrs, tau=taus)
    keys = jnp.stack([jax.random.PRNGKey(0), jax.random.PRNGKey(1)] * 2)
    sweep = jax.jit(jax.vmap(run))
    out = sweep(keys, configs)
    out2 = sweep(keys, configs.replace(discount=configs.discount * 0.5))  # new values, same shapes
    assert out.shape == (4, base.num_evals) and out2.shape == (4, base.num_evals)
    assert len(traces) == 1
    # member 0 equals a single run with its own values
    single = jax.jit(lambda k: train(k, base.replace(actor_lr=1e-3, critic_lr=1e-3, tau=0.005)))
    np.testing.assert_allclose(out[0], single(keys[0])[1]["eval_return"], rtol=1e-4, atol=1e-5)
    # the lr/tau values change the run
    assert not np.allclose(out[0], out[2]) or not np.allclose(out[1], out[3])


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


def test_run_experiment_writes_the_summary_contract(tmp_path, capsys):
    summary = run_experiment("diffsac", "toy/bandit", None, 2, 0, tmp_path, progress=True, **TINY)
    printed = capsys.readouterr().out
    progress_lines = [line for line in printed.splitlines() if "eval return" in line]
    assert len(progress_lines) == TINY["num_evals"], printed  # one per interval, all seeds in
    assert "ETA" in progress_lines[-1] and "steps/s" in progress_lines[-1]
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk == json.loads(json.dumps(summary))
    for field in ("algo", "env", "total_env_steps", "num_seeds", "final_eval_return", "eval_curve",
                  "env_steps_per_second", "compile_seconds", "wall_seconds", "jax_version",
                  "device", "config", "mode_fractions"):
        assert field in on_disk, field
    assert on_disk["algo"] == "diffsac" and on_disk["num_seeds"] == 2
    assert len(on_disk["final_eval_return"]) == 2
    assert len(on_disk["eval_curve"]) == TINY["num_evals"]
    assert on_disk["eval_curve"][-1]["return_per_seed"] == on_disk["final_eval_return"]
    assert on_disk["config"]["diffusion"]["num_steps"] == 3
    fractions = np.asarray(on_disk["mode_fractions"])
    assert fractions.shape == (2, 2)
    np.testing.assert_allclose(fractions.sum(-1), 1.0)
    assert on_disk["env_steps_per_second"] > 0 and on_disk["compile_seconds"] > 0


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
