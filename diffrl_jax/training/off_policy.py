"""The off-policy loop (SAC, DiffSAC, WPO, DiffWPO): one pure `train(key, config)` under one jit.

Structure (all lax.scan, static shapes):
  prefill:   ceil(learning_starts / num_envs) collection steps, no updates
  intervals: num_evals x [iters_per_eval x (one vectorised env step + updates_per_step
             gradient updates), then stochastic and deterministic evaluation]
Metrics are reduced (averaged) per interval inside the scan, never stacked per step.

Replay holds one `ChainTransition` per environment step (raw observations, the whole chain).
Each gradient update samples batch_size of them, normalises their observations and hands
them to the learner (`diffrl_jax.learners`: SAC's or WPO's, by the algorithm table), which
turns them into DA-MDP transitions and takes its step; the loop keeps the old learner state
where the new one or the update's metrics are not all finite.
"""

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from diffrl_jax.buffers import ReplayBuffer, replay_add, replay_init, replay_sample
from diffrl_jax.envs import RunningStats, init_stats, peaks_of, update_stats
from diffrl_jax.learners.sac import entropy_chain_count
from diffrl_jax.parallel.mesh import BatchSharding, constrain_batch
from diffrl_jax.policies import policy_kinds
from diffrl_jax.training.algorithms import algorithm_names, build, make_learner
from diffrl_jax.training.collection import StepCounters, interval_metrics, policy_obs, step_envs
from diffrl_jax.training.config import LoopConfig, is_plain_number, static
from diffrl_jax.training.guards import all_finite, keep_if_finite, masked_means, masked_sums
from diffrl_jax.training.program import LoopState, TrainProgram
from diffrl_jax.transforms import ChainTransition
from diffrl_jax.transforms.diffusion_loss import ESTIMATORS
from diffrl_jax.types import Array, PRNGKey
from diffrl_jax.validation import (
    ConfigError,
    require_bool,
    require_choice,
    require_in_range,
    require_int_at_least,
    require_layer_sizes,
)


@struct.dataclass
class OffPolicyConfig(LoopConfig):
    """The off-policy loop's and its learners' fields (the shared ones are `LoopConfig`'s).

    discount in "diffusion" mode: the authors use 0.999 with K = 8, i.e. about 0.992 per
    environment step. kl_bound, init_kl_coef, kl_coef_lr, policy_tau, num_action_samples and
    natural_gradient are WPO's (the SAC learner ignores them).

    entropy_chains n: how many of the batch's observations get a fresh chain for the
    temperature's H_hat where the actor's terms are not whole chains (the per-step DiffSAC,
    and WPO / DiffWPO; the Gaussian WPO, K = 1, thus uses the whole batch); None:
    ceil(batch_size / K), i.e. about batch_size step terms, as many as the actor sees, for
    the price of one policy evaluation of the batch instead of K. On a mesh it is rounded up
    to a multiple of the data shards (`entropy_chain_count`).
    """

    algo: str = static("diffsac")
    learning_starts: int = static(2_000)
    batch_size: int = static(256)
    updates_per_step: int = static(4)
    buffer_size: int = static(100_000)
    critic_hidden: tuple[int, ...] = static((256, 256))
    critic_layer_norm: bool = static(False)
    estimator: str = static("per_step")
    learn_alpha: bool = static(True)
    num_action_samples: int = static(4)
    entropy_chains: int | None = static(None)
    natural_gradient: bool = static(False)
    # traced hyperparameters
    alpha_lr: float = 3e-4
    tau: float = 0.005
    init_alpha: float = 1.0
    kl_bound: float = 0.02
    init_kl_coef: float = 1.0
    kl_coef_lr: float = 1e-3
    policy_tau: float = 0.005

    def validate(self) -> "OffPolicyConfig":
        """Checks the static fields and plain-number hyperparameters; raises ConfigError
        naming the field."""
        o = self.validate_shared(algorithm_names("off_policy"), policy_kinds())
        for name in ("batch_size", "updates_per_step", "buffer_size", "num_action_samples"):
            require_int_at_least(o, name, getattr(self, name), 1)
        require_int_at_least(o, "learning_starts", self.learning_starts, 0)
        if self.entropy_chains is not None:
            require_int_at_least(o, "entropy_chains", self.entropy_chains, 1)
            if self.entropy_chains > self.batch_size:
                raise ConfigError(f"{o}.entropy_chains ({self.entropy_chains}) must be <= "
                                  f"batch_size ({self.batch_size}) or None")
        require_layer_sizes(o, "critic_hidden", self.critic_hidden)
        require_choice(o, "estimator", self.estimator, ESTIMATORS)
        for name in ("learn_alpha", "natural_gradient", "critic_layer_norm"):
            require_bool(o, name, getattr(self, name))
        for name in ("tau", "policy_tau"):
            value = getattr(self, name)
            if is_plain_number(value):
                require_in_range(o, name, value, 0.0, 1.0, closed=True)
        self.require_positive_numbers("alpha_lr", "kl_bound", "init_kl_coef", "kl_coef_lr")
        if self.learn_alpha:
            self.require_positive_numbers("init_alpha")
        elif is_plain_number(self.init_alpha) and not (0 <= self.init_alpha < float("inf")):
            raise ConfigError(f"{o}.init_alpha must be a finite number >= 0, got {self.init_alpha!r}")
        if self.buffer_size < self.num_envs:
            raise ConfigError(f"{o}.buffer_size ({self.buffer_size}) must be >= num_envs ({self.num_envs})")
        schedule = schedule_of(self)
        if schedule["iters_per_eval"] < 1:
            raise ConfigError(
                f"{o}.total_env_steps ({self.total_env_steps}) leaves no training steps after "
                f"learning_starts ({self.learning_starts}) for num_evals={self.num_evals} "
                f"intervals of num_envs={self.num_envs}"
            )
        return self


def schedule_of(config: OffPolicyConfig) -> dict[str, int]:
    """Static loop lengths: prefill iterations, iterations per eval interval, env steps,
    gradient updates per interval."""
    prefill = math.ceil(config.learning_starts / config.num_envs)
    remaining = config.total_env_steps - prefill * config.num_envs
    iters_per_eval = remaining // (config.num_envs * config.num_evals)
    total = (prefill + iters_per_eval * config.num_evals) * config.num_envs
    return {"prefill_iters": prefill, "iters_per_eval": iters_per_eval, "total_env_steps": total,
            "updates_per_interval": iters_per_eval * config.updates_per_step}



class OffPolicyState(LoopState):
    """The off-policy carry: `LoopState`'s fields and the replay buffer."""

    buffer: ReplayBuffer


def make_program(
    config: OffPolicyConfig,
    on_interval: Callable[[dict[str, Array]], None] | None = None,
    batch_sharding: BatchSharding | None = None,
) -> TrainProgram:
    """The run as (init, interval): init(key) builds the state and runs the prefill,
    interval(state) one evaluation interval (see `diffrl_jax.training.train` for the
    arguments; batch_sharding also keeps each sampled minibatch split, the replay buffer is
    left to the partitioner)."""
    config.validate()
    env, policy, transform = build(config)
    sched = schedule_of(config)
    N, B, K = config.num_envs, config.batch_size, policy.num_steps
    data_shards = batch_sharding.mesh.shape[batch_sharding.axis] if batch_sharding else 1
    peaks = peaks_of(config.env)

    def shard(tree: Any) -> Any:  # the environment / sample axis over devices
        return constrain_batch(tree, batch_sharding)

    learner = make_learner(config, env, policy, transform, shard, data_shards,
                           sched["updates_per_interval"] * config.num_evals)

    def norm(stats: RunningStats, obs: Array) -> Array:
        return policy_obs(stats, obs, config.normalize_obs)

    # ---- initial state -----------------------------------------------------------------
    def init(key: PRNGKey) -> OffPolicyState:
        learner_key, env_key, key = jax.random.split(key, 3)
        example = ChainTransition(
            obs=jnp.zeros(env.obs_dim),
            latents=jnp.zeros((K + 1, env.action_dim)),
            log_ratios=jnp.zeros(K),
            log_probs=jnp.zeros(K),
            reward=jnp.zeros(()),
            terminated=jnp.zeros(()),
            truncated=jnp.zeros(()),
            next_obs=jnp.zeros(env.obs_dim),
            next_prior_latent=jnp.zeros(env.action_dim),
        )
        state = OffPolicyState(
            learner=learner.init(learner_key),
            buffer=replay_init(example, config.buffer_size),
            env_state=shard(env.reset(env_key, N)),
            obs_stats=init_stats(env.obs_dim),
            episode_return=shard(jnp.zeros(N)),
            key=key,
            env_steps=jnp.zeros((), jnp.int32),
            updates=jnp.zeros((), jnp.int32),
        )
        state, _ = jax.lax.scan(lambda ts, _: collect(ts), state, None, length=sched["prefill_iters"])
        return state

    # ---- one vectorised environment step ----------------------------------------------
    def collect(ts: OffPolicyState) -> tuple[OffPolicyState, StepCounters]:
        key, step_key = jax.random.split(ts.key)
        env_state, item, episode_return, counters = step_envs(
            env, transform, learner.acting_params(ts.learner), ts.env_state, ts.obs_stats,
            ts.episode_return, step_key, config.normalize_obs,
            truncation_prob=config.train_truncation_prob,
        )
        ts = ts.replace(
            buffer=replay_add(ts.buffer, item),
            env_state=shard(env_state),
            obs_stats=update_stats(ts.obs_stats, item.obs) if config.normalize_obs else ts.obs_stats,
            episode_return=shard(episode_return),
            key=key,
            env_steps=ts.env_steps + N,
        )
        return ts, counters

    # ---- one gradient update, guarded -------------------------------------------------
    def update(ts: OffPolicyState, key: PRNGKey) -> tuple[OffPolicyState, tuple[dict[str, Array], Array]]:
        sample_key, prepare_key, learn_key = jax.random.split(key, 3)
        items = shard(replay_sample(ts.buffer, sample_key, B))
        items = items.replace(obs=norm(ts.obs_stats, items.obs),
                              next_obs=norm(ts.obs_stats, items.next_obs))
        learner_state, batch, stats = learner.prepare(ts.learner, items, prepare_key)
        learner_state, metrics = learner.update(learner_state, batch, learn_key)
        metrics = dict(stats, **metrics)
        # a non-finite loss or gradient skips the whole update (counted in the metrics)
        ok = all_finite(metrics, learner_state)
        ts = ts.replace(learner=keep_if_finite(ok, learner_state, ts.learner),
                        updates=ts.updates + ok.astype(jnp.int32))
        return ts, (metrics, ok)

    def train_iteration(ts: OffPolicyState, _
                        ) -> tuple[OffPolicyState, tuple[StepCounters, dict[str, Array]]]:
        ts, counters = collect(ts)
        key, update_key = jax.random.split(ts.key)
        ts = ts.replace(key=key)
        ts, (update_metrics, ok) = jax.lax.scan(
            update, ts, jax.random.split(update_key, config.updates_per_step)
        )
        return ts, (counters, masked_sums(update_metrics, ok))

    def interval(ts: OffPolicyState) -> tuple[OffPolicyState, dict[str, Array]]:
        ts, (counters, update_sums) = jax.lax.scan(
            train_iteration, ts, None, length=sched["iters_per_eval"]
        )
        key, eval_key = jax.random.split(ts.key)
        ts = ts.replace(key=key)
        metrics = interval_metrics(
            env, transform, learner.acting_params(ts.learner), ts.obs_stats, eval_key,
            config.num_eval_envs, config.normalize_obs, peaks, ts.env_steps, counters,
        )
        metrics.update(masked_means(jax.tree.map(lambda x: jnp.sum(x, 0), update_sums)))
        if on_interval is not None:
            on_interval(metrics)
        return ts, metrics

    return TrainProgram(init=init, interval=interval, num_intervals=config.num_evals)


__all__ = ["OffPolicyConfig", "OffPolicyState", "entropy_chain_count", "make_program",
           "schedule_of"]
