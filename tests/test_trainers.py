"""Every trainer alike: seed i of a short vmapped run equals a single run to float rounding
(rtol 1e-4; batched kernels round differently, and long runs drift apart), a grid of traced
hyperparameters x seeds compiles once, `training.train` dispatches on config.algo."""

import json
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffrl_jax.experiment import run_experiment
from diffrl_jax.policies import DiffusionPolicyConfig, GaussianPolicyConfig
from diffrl_jax.training import ALGOS, OffPolicyConfig, OnPolicyConfig, train, trainer_for

ROOT = Path(__file__).resolve().parents[1]

POLICIES = dict(
    diffusion=DiffusionPolicyConfig(num_steps=3, hidden_sizes=(16,), time_hidden=8),
    gaussian=GaussianPolicyConfig(hidden_sizes=(16,)),
)
TINY = {
    OffPolicyConfig: dict(
        total_env_steps=160, num_envs=4, learning_starts=32, batch_size=16, updates_per_step=2,
        num_evals=2, num_eval_envs=8, buffer_size=256, critic_hidden=(16,), **POLICIES,
    ),
    OnPolicyConfig: dict(
        total_env_steps=128, num_envs=4, unroll_length=4, num_epochs=2, num_minibatches=2,
        num_evals=2, num_eval_envs=8, value_hidden=(16,), entropy_coef=0.05, **POLICIES,
    ),
}
# traced hyperparameters each trainer's grid test varies (2 values each)
SWEPT = {
    OffPolicyConfig: dict(actor_lr=(1e-3, 3e-4), critic_lr=(1e-3, 3e-4), tau=(0.005, 0.05)),
    OnPolicyConfig: dict(actor_lr=(1e-3, 3e-4), critic_lr=(1e-3, 3e-4), clip_eps=(0.2, 0.1)),
}


def tiny_config(algo, env="toy/bandit", **overrides):
    cls = trainer_for(algo).config_class
    return cls(algo=algo, env=env, **dict(TINY[cls], **overrides)).validate()


def test_every_algorithm_has_a_trainer():
    assert set(ALGOS) == {"sac", "diffsac", "wpo", "diffwpo", "ppo", "diffppo", "reppo", "diffreppo"}
    for algo in ALGOS:
        assert tiny_config(algo).algo == algo
    with pytest.raises(ValueError, match=r"unknown algorithm 'a2c'; allowed: \['sac'"):
        trainer_for("a2c")


@pytest.mark.parametrize("algo", ALGOS)
def test_vmapped_seed_equals_single_run(algo):
    config = tiny_config(algo)
    keys = jax.random.split(jax.random.PRNGKey(0), 2)
    run = jax.jit(lambda k: train(k, config))
    batched_state, batched_metrics = jax.jit(jax.vmap(lambda k: train(k, config)))(keys)
    for i in range(2):
        state, metrics = run(keys[i])
        for a, b in zip(jax.tree.leaves(metrics), jax.tree.leaves(batched_metrics)):
            np.testing.assert_allclose(b[i], a, rtol=1e-4, atol=1e-5)
        for a, b in zip(jax.tree.leaves(state.policy_params),
                        jax.tree.leaves(batched_state.policy_params)):
            np.testing.assert_allclose(b[i], a, rtol=1e-4, atol=1e-5)
    # the two seeds really differ
    loss = "critic_loss" if "critic_loss" in batched_metrics else "value_loss"
    assert not np.allclose(batched_metrics[loss][0], batched_metrics[loss][1])


@pytest.mark.parametrize("algo", ["sac", "diffppo"])
def test_hyperparameter_grid_times_seeds_compiles_once(algo):
    traces = []

    def run(key, config):
        traces.append(1)
        return train(key, config)[1]["eval_return"]

    base = tiny_config(algo)
    swept = SWEPT[type(base)]
    members = 4  # 2 values x 2 seeds
    configs = jax.tree.map(lambda x: jnp.broadcast_to(jnp.asarray(x), (members,)), base)
    configs = configs.replace(**{name: jnp.array([v[0], v[0], v[1], v[1]], jnp.float32)
                                 for name, v in swept.items()})
    keys = jnp.stack([jax.random.PRNGKey(0), jax.random.PRNGKey(1)] * 2)
    sweep = jax.jit(jax.vmap(run))
    out = sweep(keys, configs)
    out2 = sweep(keys, configs.replace(reward_scale=configs.reward_scale * 0.5))  # new values
    assert out.shape == (members, base.num_evals) and out2.shape == (members, base.num_evals)
    assert len(traces) == 1
    # member 0 equals a single run with its own values
    first = {name: v[0] for name, v in swept.items()}
    single = jax.jit(lambda k: train(k, base.replace(**first)))
    np.testing.assert_allclose(out[0], single(keys[0])[1]["eval_return"], rtol=1e-4, atol=1e-5)
    # the swept values change the run
    assert not np.allclose(out[0], out[2]) or not np.allclose(out[1], out[3])


@pytest.mark.parametrize("algo", ["diffsac", "diffppo"])
def test_run_experiment_writes_the_summary_contract(algo, tmp_path, capsys):
    tiny = TINY[trainer_for(algo).config_class]
    summary = run_experiment(algo, "toy/bandit", None, 2, 0, tmp_path, progress=True, **tiny)
    printed = capsys.readouterr().out
    progress_lines = [line for line in printed.splitlines() if "eval return" in line]
    assert len(progress_lines) == tiny["num_evals"], printed  # one per interval, all seeds in
    assert "ETA" in progress_lines[-1] and "steps/s" in progress_lines[-1]
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk == json.loads(json.dumps(summary))
    for field in ("algo", "env", "total_env_steps", "num_seeds", "final_eval_return", "eval_curve",
                  "env_steps_per_second", "compile_seconds", "wall_seconds", "jax_version",
                  "device", "config", "mode_fractions"):
        assert field in on_disk, field
    assert on_disk["algo"] == algo and on_disk["num_seeds"] == 2
    assert len(on_disk["final_eval_return"]) == 2
    assert len(on_disk["eval_curve"]) == tiny["num_evals"]
    assert on_disk["eval_curve"][-1]["return_per_seed"] == on_disk["final_eval_return"]
    assert on_disk["config"]["diffusion"]["num_steps"] == 3
    fractions = np.asarray(on_disk["mode_fractions"])
    assert fractions.shape == (2, 2)
    np.testing.assert_allclose(fractions.sum(-1), 1.0)
    assert on_disk["env_steps_per_second"] > 0 and on_disk["compile_seconds"] > 0
    assert on_disk["status"] == "completed" and on_disk["nonfinite_updates"] == [0, 0]
    # the product around the numbers: compile time apart, logs, plots, checkpoints
    assert "compiled in" in printed
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2 * tiny["num_evals"] and {"eval_return", "seed", "env_steps"} <= set(rows[0])
    assert (tmp_path / "metrics.csv").read_text().count("\n") == 1 + 2 * tiny["num_evals"]
    for png in ("learning_curve.png", "action_histogram.png"):  # a toy env: the histogram too
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert on_disk["checkpoints"]["last"] == on_disk["eval_curve"][-1]["env_steps"]


def test_command_line_trains_an_on_policy_algorithm(tmp_path):
    cmd = [sys.executable, str(ROOT / "experiments" / "train.py"), "--algo", "diffppo",
           "--env", "toy/bandit", "--total-steps", "4096", "--num-seeds", "2", "--quiet",
           "--out", str(tmp_path)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["algo"] == "diffppo" and summary["total_env_steps"] == 4096
    assert summary["config"]["entropy_coef"] == 0.1  # the toy/bandit preset
    assert "final eval return per seed" in result.stdout
