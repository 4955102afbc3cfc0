"""Behaviour pins: each of the six algorithms' metrics on toy/bandit over 2 intervals, and a
digest of its final acting parameters, against values recorded before the learner redesign
(issue 17: the algorithm bodies moved out of the trainers must compute the same numbers, with
the same PRNG split order).

On the machine that recorded them the values match bit for bit (`DIFFRL_PINS_EXACT=1` checks
that); elsewhere XLA's CPU code generation may round differently, so the default tolerance is
a relative 1e-4 over a few dozen updates, far below what a changed formula, a different split
order or a swapped update order gives (those move the metrics at the first or second digit).

Re-record (only for an intended change of numbers, said in the commit):
    python tests/test_pins.py --record
"""

import json
import os
import sys
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffrl_jax.policies import DiffusionPolicyConfig, GaussianPolicyConfig
from diffrl_jax.training import OffPolicyConfig, OnPolicyConfig, train

PINS = Path(__file__).parent / "pins" / "bandit_two_intervals.json"
ALGOS = ("sac", "diffsac", "wpo", "diffwpo", "ppo", "diffppo")

_DIFFUSION = DiffusionPolicyConfig(num_steps=3, hidden_sizes=(16, 16), time_hidden=8)
_GAUSSIAN = GaussianPolicyConfig(hidden_sizes=(16, 16))
_OFF = dict(env="toy/bandit", total_env_steps=384, num_envs=8, learning_starts=64,
            batch_size=32, updates_per_step=2, num_evals=2, num_eval_envs=8, buffer_size=512,
            critic_hidden=(16, 16), diffusion=_DIFFUSION, gaussian=_GAUSSIAN)
_ON = dict(env="toy/bandit", total_env_steps=128, num_envs=8, unroll_length=4, num_epochs=2,
           num_minibatches=2, num_evals=2, num_eval_envs=8, value_hidden=(16, 16),
           diffusion=_DIFFUSION, gaussian=_GAUSSIAN)
# each algorithm's non-default code paths are part of its pin: WPO's natural gradient,
# DiffWPO's learned step sizes (the free-energy gradient of issue 19.1), PPO's annealed
# learning rates, DiffPPO's learned entropy coefficient
CONFIGS: dict[str, Any] = {
    "sac": lambda: OffPolicyConfig(algo="sac", **_OFF),
    "diffsac": lambda: OffPolicyConfig(algo="diffsac", **_OFF),
    "wpo": lambda: OffPolicyConfig(algo="wpo", natural_gradient=True, init_alpha=0.01, **_OFF),
    "diffwpo": lambda: OffPolicyConfig(algo="diffwpo", num_action_samples=2, **_OFF),
    "ppo": lambda: OnPolicyConfig(algo="ppo", anneal_lr=True, **_ON),
    "diffppo": lambda: OnPolicyConfig(algo="diffppo", learn_entropy_coef=True,
                                      entropy_coef=0.05, **_ON),
}


def acting_params(state: Any) -> Any:
    """The policy parameters the run acts with."""
    return state.policy_params


def run_pins(algo: str) -> dict[str, Any]:
    """{"metrics": {name: nested list [2, ...]}, "params": [sum, sum of squares, leaves]}."""
    state, metrics = jax.jit(lambda key: train(key, CONFIGS[algo]()))(jax.random.PRNGKey(7))
    leaves = jax.tree.leaves(acting_params(state))
    digest = [float(sum(jnp.sum(x) for x in leaves)), float(sum(jnp.sum(x * x) for x in leaves)),
              len(leaves)]
    return {"metrics": {name: np.asarray(value).tolist() for name, value in sorted(metrics.items())},
            "params": digest}


@pytest.mark.parametrize("algo", ALGOS)
def test_bandit_pin(algo: str) -> None:
    pins = json.loads(PINS.read_text())[algo]
    got = run_pins(algo)
    exact = os.environ.get("DIFFRL_PINS_EXACT") == "1"
    rtol, atol = (0.0, 0.0) if exact else (1e-4, 1e-6)
    assert sorted(got["metrics"]) == sorted(pins["metrics"]), "the set of metrics changed"
    for name, value in pins["metrics"].items():
        np.testing.assert_allclose(got["metrics"][name], value, rtol=rtol, atol=atol,
                                   err_msg=f"{algo}: metric {name}")
    assert got["params"][2] == pins["params"][2], "the number of policy parameter arrays changed"
    np.testing.assert_allclose(got["params"][:2], pins["params"][:2], rtol=rtol, atol=atol,
                               err_msg=f"{algo}: final policy parameters")


if __name__ == "__main__" and sys.argv[1:] == ["--record"]:
    PINS.parent.mkdir(exist_ok=True)
    PINS.write_text(json.dumps({algo: run_pins(algo) for algo in ALGOS}, indent=1) + "\n")
    print(f"wrote {PINS}")
