"""The on-policy loop (PPO, REPPO and their Diff versions): one pure `train(key, config)`
under one jit.

Structure (all lax.scan, static shapes):
  intervals: num_evals x [iters_per_eval x (rollout of N envs x T env steps, the learner's
             batch preparation, epochs x minibatches of learner updates), then stochastic
             and deterministic evaluation]
Metrics are reduced per interval inside the scan.

A rollout stores one `ChainTransition` per environment step (the whole chain); the learner
(`diffrl_jax.learners`, PPO's by the algorithm table) turns it into a batch of augmented
steps (PPO: GAE of the soft reward), which the loop shuffles and splits into minibatches.
Observations are normalised with statistics frozen for the rollout and its update (so the
ratio is exactly the one of the acting policy) and merged into the statistics afterwards.
The loop keeps the old learner state where a new one or an update's metrics are not all
finite.
"""

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from diffrl_jax.algorithms.ppo import ADVANTAGE_NORMALIZATIONS
from diffrl_jax.algorithms.reppo import CRITIC_LOSSES
from diffrl_jax.envs import (
    Environment,
    EnvState,
    RunningStats,
    init_stats,
    peaks_of,
    update_stats,
)
from diffrl_jax.parallel.mesh import BatchSharding, constrain_batch
from diffrl_jax.policies import policy_kinds
from diffrl_jax.training.algorithms import algorithm_names, build, make_learner, policy_kind_of
from diffrl_jax.training.collection import StepCounters, interval_metrics, policy_obs, step_envs
from diffrl_jax.training.config import LoopConfig, is_plain_number, static
from diffrl_jax.training.guards import all_finite, keep_if_finite, masked_means, masked_sums
from diffrl_jax.training.program import LoopState, TrainProgram
from diffrl_jax.transforms import ChainTransition
from diffrl_jax.transforms.diffusion_loss import DiffusionLoss
from diffrl_jax.types import Array, Params, PRNGKey
from diffrl_jax.validation import (
    ConfigError,
    require_bool,
    require_choice,
    require_in_range,
    require_int_at_least,
    require_layer_sizes,
    require_positive,
)


@struct.dataclass
class OnPolicyConfig(LoopConfig):
    """The on-policy loop's and its learners' fields (the shared ones are `LoopConfig`'s).

    entropy_coef is c of the soft reward r - c * l_k (the initial value when
    learn_entropy_coef); c = 0 is DPPO, and PPO with the Gaussian. gae_lambda follows the
    discount mode: in "env" mode lambda is applied once per environment step (between the
    last denoising step and the next state), in "diffusion" mode on every augmented step, so
    with K = 1 both are textbook GAE. anneal_lr decays both learning rates linearly to 0 over
    the run (as in PPO's Atari and MuJoCo settings).

    REPPO / DiffREPPO (spec section 5) read discount, gae_lambda (the TD(lambda) lambda, per
    discount mode as GAE's), value_hidden (the Q critic's hidden layers, LayerNorm on each),
    critic_loss ("hl_gauss": num_bins bins on [vmin, vmax], Gaussian histogram std
    hl_gauss_sigma_ratio bin widths; "mse"), the temperature (init_alpha, learned with
    alpha_lr towards target_entropy_multiplier's target when learn_alpha) and the KL switch
    (kl_bound on K * the step kernels' KL, multiplier init_kl_coef learned with kl_coef_lr);
    with aux_predictions, the critic's auxiliary losses (the next augmented state's embedding
    and the reward predicted from its last hidden layer) weighted by aux_loss_mult.
    """

    algo: str = static("diffppo")
    total_env_steps: int = static(200_000)
    num_envs: int = static(32)
    unroll_length: int = static(16)
    num_epochs: int = static(4)
    num_minibatches: int = static(4)
    value_hidden: tuple[int, ...] = static((256, 256))
    value_layer_norm: bool = static(False)
    advantage_normalization: str = static("center")
    learn_entropy_coef: bool = static(False)
    anneal_lr: bool = static(False)
    critic_loss: str = static("hl_gauss")
    num_bins: int = static(151)
    learn_alpha: bool = static(True)
    aux_predictions: bool = static(False)
    # traced hyperparameters
    entropy_coef_lr: float = 3e-4
    entropy_coef: float = 2e-4
    gae_lambda: float = 0.95
    clip_eps: float = 0.2
    value_coef: float = 0.5
    max_grad_norm: float = 0.5
    vmin: float = -100.0
    vmax: float = 200.0
    hl_gauss_sigma_ratio: float = 0.75
    init_alpha: float = 0.01
    alpha_lr: float = 3e-4
    kl_bound: float = 0.04
    init_kl_coef: float = 1.0
    kl_coef_lr: float = 1e-3
    aux_loss_mult: float = 1.0

    def validate(self) -> "OnPolicyConfig":
        """Checks the static fields and plain-number hyperparameters; raises ConfigError
        naming the field."""
        o = self.validate_shared(algorithm_names("on_policy"), policy_kinds())
        for name in ("unroll_length", "num_epochs", "num_minibatches"):
            require_int_at_least(o, name, getattr(self, name), 1)
        require_layer_sizes(o, "value_hidden", self.value_hidden)
        require_choice(o, "advantage_normalization", self.advantage_normalization,
                       ADVANTAGE_NORMALIZATIONS)
        for name in ("value_layer_norm", "learn_entropy_coef", "anneal_lr", "learn_alpha",
                     "aux_predictions"):
            require_bool(o, name, getattr(self, name))
        require_choice(o, "critic_loss", self.critic_loss, CRITIC_LOSSES)
        require_int_at_least(o, "num_bins", self.num_bins, 2)
        self.require_positive_numbers("hl_gauss_sigma_ratio", "alpha_lr", "kl_bound",
                                      "init_kl_coef", "kl_coef_lr")
        if is_plain_number(self.aux_loss_mult) and not (0 <= self.aux_loss_mult < float("inf")):
            raise ConfigError(f"{o}.aux_loss_mult must be a finite number >= 0, "
                              f"got {self.aux_loss_mult!r}")
        if self.learn_alpha:
            self.require_positive_numbers("init_alpha")
        elif is_plain_number(self.init_alpha) and not (0 <= self.init_alpha < float("inf")):
            raise ConfigError(f"{o}.init_alpha must be a finite number >= 0, got {self.init_alpha!r}")
        if is_plain_number(self.vmin) and is_plain_number(self.vmax) and not (
                math.isfinite(self.vmin) and math.isfinite(self.vmax) and self.vmin < self.vmax):
            raise ConfigError(f"{o}.vmin ({self.vmin!r}) and vmax ({self.vmax!r}) must be finite "
                              "numbers with vmin < vmax")
        if is_plain_number(self.gae_lambda):
            require_in_range(o, "gae_lambda", self.gae_lambda, 0.0, 1.0, closed=True)
        self.require_positive_numbers("entropy_coef_lr", "clip_eps")
        for name in ("entropy_coef", "value_coef"):
            value = getattr(self, name)
            if is_plain_number(value) and not (value >= 0 and math.isfinite(value)):
                raise ConfigError(f"{o}.{name} must be a finite number >= 0, got {value!r}")
        if self.learn_entropy_coef and is_plain_number(self.entropy_coef):
            require_positive(o, "entropy_coef (the initial value when learn_entropy_coef)",
                             self.entropy_coef)
        kind = policy_kind_of(self)
        num_steps = {"diffusion": self.diffusion.num_steps, "gaussian": 1}.get(kind)
        batch = self.num_envs * self.unroll_length * (num_steps or 1)
        if num_steps is not None and batch % self.num_minibatches:
            raise ConfigError(
                f"{o}.num_minibatches ({self.num_minibatches}) must divide the rollout's "
                f"augmented transitions num_envs * unroll_length * K = {self.num_envs} * "
                f"{self.unroll_length} * {num_steps} = {batch}"
            )
        if schedule_of(self)["iters_per_eval"] < 1:
            raise ConfigError(
                f"{o}.total_env_steps ({self.total_env_steps}) is less than num_evals="
                f"{self.num_evals} rollouts of num_envs * unroll_length = "
                f"{self.num_envs * self.unroll_length} env steps"
            )
        return self


def schedule_of(config: OnPolicyConfig) -> dict[str, int]:
    """Static loop lengths: rollouts per eval interval, the env steps actually run, minibatch
    updates per interval."""
    per_rollout = config.num_envs * config.unroll_length
    iters_per_eval = config.total_env_steps // (per_rollout * config.num_evals)
    total = iters_per_eval * config.num_evals * per_rollout
    return {"iters_per_eval": iters_per_eval, "env_steps_per_rollout": per_rollout,
            "total_env_steps": total,
            "updates_per_interval": iters_per_eval * config.num_epochs * config.num_minibatches}


class OnPolicyState(LoopState):
    """The on-policy carry: `LoopState`'s fields (the rollout lives within an iteration)."""


def collect_rollout(
    env: Environment,
    transform: DiffusionLoss,
    params: Params,
    env_state: EnvState,
    obs_stats: RunningStats,
    episode_return: Array,
    key: PRNGKey,
    num_steps: int,
    normalize_obs: bool,
    shard: Callable[[Any], Any] = lambda tree: tree,
    truncation_prob: Array | float = 0.0,
) -> tuple[EnvState, Array, ChainTransition, StepCounters]:
    """num_steps (T) vectorised environment steps of the N envs with the acting policy.

    Returns (env_state, episode_return [N], transitions [T, N] with raw obs, counters [T]).
    Each step's chains start from the x'_0 stored with the step before, so within the rollout
    the next state of a last denoising step, (next_obs, x'_0, 0), is the next chain's real
    first state (where the episode goes on) and the GAE sum telescopes exactly; the first
    chains start from a fresh prior draw, and the last step's x'_0 (only bootstrapped, the
    next rollout starts afresh) is an independent draw, unbiased since the next chain's x_0
    would be one too.
    shard: the sharding constraint of the env axis (identity without a mesh);
    truncation_prob: `step_envs`' random training truncation.
    """
    def env_step(carry, step_key):
        env_state, episode_return, prior_latent = carry
        env_state, transition, episode_return, counters = step_envs(
            env, transform, params, env_state, obs_stats, episode_return, step_key,
            normalize_obs, prior_latent, truncation_prob,
        )
        carry = (env_state, episode_return, transition.next_prior_latent)
        return shard(carry), (shard(transition), counters)

    n = episode_return.shape[0]
    first = shard(transform.policy.sample_prior(jax.random.fold_in(key, num_steps), (n,)))
    (env_state, episode_return, _), (transitions, counters) = jax.lax.scan(
        env_step, (env_state, episode_return, first), jax.random.split(key, num_steps)
    )
    return env_state, episode_return, transitions, counters


FIRST_MINIBATCH_PREFIX = "first_minibatch_"
"""Update metrics named so are reported from each rollout's first minibatch (their maximum
over the interval's rollouts), not averaged: e.g. PPO's ratio deviation, which must be 0
there (the acting policy's own ratio)."""


def make_program(
    config: OnPolicyConfig,
    on_interval: Callable[[dict[str, Array]], None] | None = None,
    batch_sharding: BatchSharding | None = None,
) -> TrainProgram:
    """The run as (init, interval): init(key) builds the state, interval(state) runs one
    evaluation interval (see `diffrl_jax.training.train` for the arguments; batch_sharding
    also keeps the rollout and each minibatch split)."""
    config.validate()
    env, policy, transform = build(config)
    sched = schedule_of(config)
    N, T, K = config.num_envs, config.unroll_length, policy.num_steps
    num_transitions = N * T * K
    minibatch = num_transitions // config.num_minibatches
    peaks = peaks_of(config.env)
    data_shards = batch_sharding.mesh.shape[batch_sharding.axis] if batch_sharding else 1

    def shard(tree: Any, dim: int = 0) -> Any:  # the environment / sample axis over devices
        return constrain_batch(tree, batch_sharding, dim)

    learner = make_learner(config, env, policy, transform, shard, data_shards,
                           sched["updates_per_interval"] * config.num_evals)

    # ---- initial state -----------------------------------------------------------------
    def init(key: PRNGKey) -> OnPolicyState:
        learner_key, env_key, key = jax.random.split(key, 3)
        return OnPolicyState(
            learner=learner.init(learner_key),
            env_state=shard(env.reset(env_key, N)),
            obs_stats=init_stats(env.obs_dim),
            episode_return=shard(jnp.zeros(N)),
            key=key,
            env_steps=jnp.zeros((), jnp.int32),
            updates=jnp.zeros((), jnp.int32),
        )

    # ---- rollout -----------------------------------------------------------------------
    def rollout(ts: OnPolicyState):
        key, rollout_key = jax.random.split(ts.key)
        env_state, episode_return, transitions, counters = collect_rollout(
            env, transform, learner.acting_params(ts.learner), ts.env_state, ts.obs_stats,
            ts.episode_return, rollout_key, T, config.normalize_obs, shard,
            config.train_truncation_prob,
        )
        ts = ts.replace(env_state=env_state, episode_return=episode_return, key=key,
                        env_steps=ts.env_steps + N * T)
        return ts, shard(transitions, 1), counters

    # ---- one guarded learner update per minibatch ------------------------------------------
    def minibatch_step(learner_state: Any, inputs: tuple[Any, PRNGKey]):
        batch, key = inputs
        new_state, metrics = learner.update(learner_state, batch, key)
        # a non-finite loss or gradient skips the minibatch (counted in the metrics)
        ok = all_finite(metrics, new_state)
        return keep_if_finite(ok, new_state, learner_state), (metrics, ok)

    def update(ts: OnPolicyState, transitions: ChainTransition):
        raw_obs = transitions.obs
        normalized = dataclasses.replace(
            transitions,
            obs=policy_obs(ts.obs_stats, transitions.obs, config.normalize_obs),
            next_obs=policy_obs(ts.obs_stats, transitions.next_obs, config.normalize_obs),
        )
        key, prepare_key, epochs_key = jax.random.split(ts.key, 3)
        prepared, batch, rollout_stats = learner.prepare(ts.learner, normalized, prepare_key)
        learner_state = keep_if_finite(all_finite(prepared), prepared, ts.learner)

        def epoch(learner_state, epoch_key):
            order_key, update_key = jax.random.split(epoch_key)
            order = jax.random.permutation(order_key, num_transitions)
            shuffled = jax.tree.map(
                lambda x: x[order].reshape((config.num_minibatches, minibatch) + x.shape[1:]),
                batch,
            )
            shuffled = shard(shuffled, 1)  # each minibatch split over devices
            keys = jax.random.split(update_key, config.num_minibatches)
            return jax.lax.scan(minibatch_step, learner_state, (shuffled, keys))

        learner_state, (metrics, ok) = jax.lax.scan(
            epoch, learner_state, jax.random.split(epochs_key, config.num_epochs)
        )
        ts = ts.replace(
            learner=learner_state,
            obs_stats=(update_stats(ts.obs_stats, raw_obs) if config.normalize_obs
                       else ts.obs_stats),
            key=key,
            updates=ts.updates + jnp.sum(ok).astype(jnp.int32),
        )
        first = {name: metrics.pop(name)[0, 0] for name in list(metrics)
                 if name.startswith(FIRST_MINIBATCH_PREFIX)}
        return ts, (masked_sums(metrics, ok), dict(rollout_stats, **first))

    def iteration(ts: OnPolicyState, _):
        ts, transitions, counters = rollout(ts)
        ts, update_sums = update(ts, transitions)
        return ts, (counters, update_sums)

    def interval(ts: OnPolicyState) -> tuple[OnPolicyState, dict[str, Array]]:
        ts, (counters, (update_sums, per_rollout)) = jax.lax.scan(
            iteration, ts, None, length=sched["iters_per_eval"]
        )
        key, eval_key = jax.random.split(ts.key)
        ts = ts.replace(key=key)
        metrics = interval_metrics(
            env, transform, learner.acting_params(ts.learner), ts.obs_stats, eval_key,
            config.num_eval_envs, config.normalize_obs, peaks, ts.env_steps, counters,
        )
        metrics.update(masked_means(jax.tree.map(lambda x: jnp.sum(x, 0), update_sums)))
        for name, value in per_rollout.items():
            reduce = jnp.max if name.startswith(FIRST_MINIBATCH_PREFIX) else jnp.mean
            metrics[name] = reduce(value)
        if on_interval is not None:
            on_interval(metrics)
        return ts, metrics

    return TrainProgram(init=init, interval=interval, num_intervals=config.num_evals)


__all__ = ["OnPolicyConfig", "OnPolicyState", "collect_rollout", "make_program", "schedule_of"]
