"""Extension points through the public API only (issue 17.3-17.4): a policy kind registered
beside the built-in ones and chosen by config, and an algorithm added as one learner + one
row of the algorithm table + a preset."""

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import struct

from diffrl_jax.experiment import make_config
from diffrl_jax.learners import Learner, LearnerSetup, make_sac_learner
from diffrl_jax.policies import (
    GaussianPolicyConfig,
    Policy,
    make_gaussian_policy,
    register_policy_kind,
)
from diffrl_jax.presets import register_preset
from diffrl_jax.training import Algorithm, OffPolicyConfig, algorithm, register_algorithm, train
from diffrl_jax.validation import ConfigError

TINY = dict(env="toy/bandit", total_env_steps=192, num_envs=8, learning_starts=32,
            batch_size=16, updates_per_step=1, num_evals=2, num_eval_envs=4, buffer_size=256,
            critic_hidden=(8,), gaussian=GaussianPolicyConfig(hidden_sizes=(8,)))


def narrow_gaussian(obs_dim: int, action_dim: int, config: Any) -> Policy:
    """A user policy kind: a tanh-Gaussian with one hidden layer of 5 units, whatever the
    config's gaussian field says."""
    return make_gaussian_policy(obs_dim, action_dim, GaussianPolicyConfig(hidden_sizes=(5,)))


register_policy_kind("test_narrow_gaussian", narrow_gaussian, replace=True)


def layer_widths(params: Any) -> set[int]:
    return {int(x.shape[-1]) for x in jax.tree.leaves(params) if x.ndim == 2}


def test_a_registered_policy_kind_is_chosen_by_config_not_by_algorithm_name():
    config = OffPolicyConfig(algo="sac", policy_kind="test_narrow_gaussian", **TINY)
    state, metrics = jax.jit(lambda key: train(key, config))(jax.random.PRNGKey(0))
    assert 5 in layer_widths(state.policy_params)  # the factory's network, not (8,)
    assert 8 not in layer_widths(state.policy_params)
    assert np.all(np.isfinite(metrics["critic_loss"]))
    # the algorithm's own kind when the config does not choose one
    default, _ = jax.jit(lambda key: train(key, OffPolicyConfig(algo="sac", **TINY)))(
        jax.random.PRNGKey(0))
    assert 8 in layer_widths(default.policy_params)


def test_policy_kind_registration_and_choice_errors_name_the_problem():
    with pytest.raises(ValueError, match="built in"):
        register_policy_kind("diffusion", narrow_gaussian)
    with pytest.raises(ValueError, match="already registered"):
        register_policy_kind("test_narrow_gaussian", narrow_gaussian)
    with pytest.raises(ValueError, match="must be callable"):
        register_policy_kind("test_not_callable", 3)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="policy_kind must be one of"):
        OffPolicyConfig(algo="sac", policy_kind="flow_matching", **TINY).validate()
    register_policy_kind("test_returns_junk", lambda o, a, c: "not a policy", replace=True)
    with pytest.raises(ValueError, match="returned str, not a diffrl_jax.policies.Policy"):
        train(jax.random.PRNGKey(0), OffPolicyConfig(algo="sac", policy_kind="test_returns_junk",
                                                     **TINY))


@struct.dataclass
class CountingState:
    """A user learner's own state: SAC's state and how many updates it took."""

    sac: Any
    count: jnp.ndarray

    @property
    def policy_params(self) -> Any:  # what drivers (plots, evaluation) read
        return self.sac.policy_params


def make_counting_learner(setup: LearnerSetup) -> Learner:
    """SAC that also counts its updates and reports the count as a metric."""
    sac = make_sac_learner(setup)

    def prepare(state: CountingState, data: Any, key: Any):
        sac_state, batch, stats = sac.prepare(state.sac, data, key)
        return state.replace(sac=sac_state), batch, stats

    def update(state: CountingState, batch: Any, key: Any):
        sac_state, metrics = sac.update(state.sac, batch, key)
        count = state.count + 1
        return CountingState(sac=sac_state, count=count), dict(metrics, update_count=count * 1.0)

    return Learner(init=lambda key: CountingState(sac=sac.init(key), count=jnp.zeros((), jnp.int32)),
                   prepare=prepare, update=update, acting_params=lambda s: s.sac.policy_params)


def test_an_algorithm_is_one_learner_one_row_and_a_preset():
    register_algorithm("test_counting_sac",
                       Algorithm("off_policy", make_counting_learner, "gaussian", "sac"),
                       replace=True)
    register_preset("test_counting_sac", "*", dict(TINY, updates_per_step=2))
    config = make_config("test_counting_sac", "toy/bandit")
    assert config.updates_per_step == 2 and config.batch_size == 16  # the registered preset
    state, metrics = jax.jit(lambda key: train(key, config))(jax.random.PRNGKey(0))
    updates = int(state.updates)
    assert updates > 0 and int(state.learner.count) == updates
    # the interval means of the running count: (1 + ... + n1) / n1 then (n1+1 + ... + n) / n2
    half = updates // 2
    np.testing.assert_allclose(metrics["update_count"], [(1 + half) / 2, (half + 1 + updates) / 2])


def test_algorithm_registration_errors_name_the_problem():
    row = Algorithm("off_policy", make_sac_learner, "gaussian", "sac")
    with pytest.raises(ValueError, match="built in"):
        register_algorithm("sac", row)
    with pytest.raises(ValueError, match="unknown loop 'offline'"):
        register_algorithm("test_bad_loop", row._replace(loop="offline"))
    with pytest.raises(ValueError, match="unknown policy kind 'flow'"):
        register_algorithm("test_bad_kind", row._replace(policy_kind="flow"))
    with pytest.raises(ValueError, match="Gaussian counterpart 'a2c'"):
        register_algorithm("test_bad_pair", row._replace(gaussian="a2c"))
    with pytest.raises(ValueError, match="unknown algorithm 'a2c'"):
        algorithm("a2c")
    with pytest.raises(ValueError, match="cannot be replaced"):
        register_preset("sac", "*", {})


def test_the_readme_example_of_a_policy_kind_and_an_algorithm_runs(tmp_path):
    """README's 'Your own policy or algorithm' code block, run as a script."""
    import re
    import subprocess
    import sys
    from pathlib import Path

    text = (Path(__file__).parents[1] / "README.md").read_text()
    block = re.search(r"<!-- user-algorithm-example -->\s*```python\n(.*?)```", text, re.S)
    assert block, "README.md lacks the marked 'Your own policy or algorithm' example"
    script = tmp_path / "example.py"
    script.write_text(block.group(1) + "\nassert metrics['eval_return'].shape == (2,)\n"
                      "assert 16 in {x.shape[-1] for x in jax.tree.leaves(state.policy_params)"
                      " if x.ndim == 2}\nprint('example ok')\n")
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                            cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "example ok" in result.stdout
