"""Loading a run's checkpoint and evaluating its policies (`experiments/evaluate.py`).

`load_run(run_dir)` rebuilds the run's config from the checkpoint's meta and restores the
whole training state of every seed; `seed_policy(run, i)` gives seed i's policy, parameters
and observation statistics; `evaluate_run(run, episodes)` runs fresh evaluation episodes of
every seed with the stochastic and the deterministic policy in one compiled program.
"""

from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np

from diffrl_jax.checkpoints import CheckpointStore
from diffrl_jax.envs import peaks_of
from diffrl_jax.experiment import config_from_dict, experiment_mesh
from diffrl_jax.parallel import gather_to_host, global_seed_keys, seed_sharding
from diffrl_jax.policies.diffusion import DETERMINISTIC_SAMPLERS
from diffrl_jax.sweep import member_policy
from diffrl_jax.training import is_diffusion, mesh_program, trainer_for
from diffrl_jax.training.evaluation import evaluate_policy
from diffrl_jax.types import PRNGKey

__all__ = ["LoadedRun", "evaluate_run", "load_run", "seed_policy"]


class LoadedRun(NamedTuple):
    """config: the run's resolved config; state: the training state of all seeds (leading
    axis = seed); step: the checkpoint (env steps per seed); meta: the checkpoint's meta."""

    config: Any
    state: Any
    step: int
    meta: dict[str, Any]
    run_dir: Path


def load_run(run_dir: str | Path, step: int | None = None) -> LoadedRun:
    """The checkpoint `step` (default: the latest) of the run in run_dir, restored onto one
    device; CheckpointError naming the problem if it is missing or unreadable."""
    store = CheckpointStore(run_dir, read_only=True, step_flag="--step")  # evaluate.py's flag
    try:
        step, meta = store.read_meta(step)
        config = config_from_dict(meta["config"])
        mesh = experiment_mesh()
        keys = global_seed_keys(meta["seed"], meta["num_seeds"], seed_sharding(mesh))
        abstract = mesh_program(config, mesh).abstract_state(keys)
        state, _ = store.restore(step, abstract)
    finally:
        store.close()
    return LoadedRun(config, state, step, meta, Path(run_dir))


def seed_policy(run: LoadedRun, seed_index: int) -> tuple[Any, Any, Any]:
    """(policy, params, obs_stats) of seed `seed_index`: sample with
    `policy.sample_chain(params, policy_obs(obs_stats, obs, config.normalize_obs), key)`."""
    num_seeds = run.meta["num_seeds"]
    if not 0 <= seed_index < num_seeds:
        raise ValueError(f"seed_index {seed_index} out of range: the run has {num_seeds} seeds")
    return member_policy(run.config, run.state, seed_index)


def _deterministic_mode(config: Any) -> str:
    """What the deterministic evaluation of config's policy does, in words."""
    if is_diffusion(config):
        return DETERMINISTIC_SAMPLERS[config.diffusion.deterministic_sampler]
    return "the Gaussian's mean action, squashed"


def evaluate_run(run: LoadedRun, episodes: int, key: PRNGKey | None = None) -> dict[str, Any]:
    """One episode in each of `episodes` fresh environments per seed and mode (stochastic:
    sampled chains; deterministic: the noise-free chain, see `evaluate_policy`). Returns
    per-seed returns and their means, JSON-ready."""
    if not isinstance(episodes, int) or episodes < 1:
        raise ValueError(f"episodes must be a positive integer, got {episodes!r}")
    config = run.config
    env, _, transform = trainer_for(config.algo).build(config)
    peaks = peaks_of(config.env)
    num_seeds = run.meta["num_seeds"]
    key = jax.random.PRNGKey(0) if key is None else key

    def one(params, stats, seed_key):
        stochastic, deterministic = evaluate_policy(env, transform, params, stats, seed_key,
                                                    episodes, peaks, config.normalize_obs)
        return stochastic, deterministic

    run_all = jax.jit(jax.vmap(one))
    stochastic, deterministic = gather_to_host(run_all(
        run.state.policy_params, run.state.obs_stats, jax.random.split(key, num_seeds)))
    result: dict[str, Any] = {
        "run_dir": str(run.run_dir), "checkpoint_step": run.step, "algo": config.algo,
        "env": config.env, "num_seeds": num_seeds, "episodes_per_seed": episodes,
        "eval_mode": {"stochastic": "actions from sampled denoising chains (the policy)",
                      "deterministic": _deterministic_mode(config)},
    }
    for name, res in (("stochastic", stochastic), ("deterministic", deterministic)):
        returns = np.asarray(res.returns)
        result[name] = {
            "return_mean": float(returns.mean()),
            "return_mean_per_seed": [float(x) for x in returns.mean(1)],
            "return_std_per_seed": [float(x) for x in returns.std(1)],
            "returns": returns.tolist(),
            "episode_length_mean": float(np.asarray(res.lengths).mean()),
        }
        if peaks:
            counts = np.asarray(res.mode_counts)
            result[name]["mode_peaks"] = list(peaks)
            result[name]["mode_fractions"] = (counts / np.maximum(counts.sum(-1, keepdims=True), 1)).tolist()
    return result
