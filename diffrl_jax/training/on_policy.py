"""The on-policy trainer (PPO and DiffPPO): one pure `train(key, config)` under one jit.

Structure (all lax.scan, static shapes):
  intervals: num_evals x [iters_per_eval x (rollout of N envs x T env steps, GAE over the
             T*K augmented steps, epochs x minibatches of PPO updates), then stochastic
             and deterministic evaluation]
Metrics are reduced per interval inside the scan.

A rollout stores one `ChainTransition` per environment step (the whole chain); the shared
transform expands it into K augmented steps (reward and episode ends on the last one).
Observations are normalised with statistics frozen for the rollout and its update (so the
ratio is exactly the one of the acting policy) and merged into the statistics afterwards.
PPO is this trainer with the Gaussian policy (K = 1).
"""

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct

from diffrl_jax.algorithms.ppo import (
    ADVANTAGE_NORMALIZATIONS,
    PPOBatch,
    gae,
    ppo_loss,
)
from diffrl_jax.envs import (
    Environment,
    EnvState,
    RunningStats,
    init_stats,
    make_env,
    peaks_of,
    update_stats,
)
from diffrl_jax.networks.critic import EnsembleCritic
from diffrl_jax.parallel.mesh import BatchSharding, constrain_batch
from diffrl_jax.policies import DiffusionPolicyConfig, GaussianPolicyConfig, make_policy
from diffrl_jax.training.collection import StepCounters, interval_metrics, policy_obs, step_envs
from diffrl_jax.training.guards import all_finite, keep_if_finite, masked_means, masked_sums
from diffrl_jax.training.program import TrainProgram, run_program
from diffrl_jax.transforms import AugmentedState, ChainTransition, make_diffusion_loss
from diffrl_jax.transforms.damdp import DISCOUNT_MODES
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

ON_POLICY_ALGOS = ("ppo", "diffppo")

static = lambda default: struct.field(pytree_node=False, default=default)  # noqa: E731


@struct.dataclass
class OnPolicyConfig:
    """Static fields fix shapes and code paths; numeric hyperparameters are pytree leaves
    (traceable, vmappable: a grid of values x seeds is one compile).

    entropy_coef is c of the soft reward r - c * l_k (the initial value when
    learn_entropy_coef); c = 0 is DPPO, and PPO with the Gaussian. discount is gamma per
    environment step in discount_mode "env", the per-augmented-step factor in "diffusion".
    gae_lambda follows the discount mode: in "env" mode lambda is applied once per
    environment step (between the last denoising step and the next state), in "diffusion"
    mode on every augmented step, so with K = 1 both are textbook GAE. anneal_lr decays both
    learning rates linearly to 0 over the run (as in PPO's Atari and MuJoCo settings).
    """

    algo: str = static("diffppo")
    env: str = static("brax/inverted_pendulum")
    backend: str = static("mjx")
    total_env_steps: int = static(200_000)
    num_envs: int = static(32)
    unroll_length: int = static(16)
    num_epochs: int = static(4)
    num_minibatches: int = static(4)
    num_evals: int = static(10)
    num_eval_envs: int = static(8)
    episode_length: int | None = static(None)
    normalize_obs: bool = static(True)
    value_hidden: tuple[int, ...] = static((256, 256))
    value_layer_norm: bool = static(False)
    diffusion: DiffusionPolicyConfig = static(DiffusionPolicyConfig())
    gaussian: GaussianPolicyConfig = static(GaussianPolicyConfig())
    discount_mode: str = static("env")
    advantage_normalization: str = static("center")
    learn_entropy_coef: bool = static(False)
    anneal_lr: bool = static(False)
    # traced hyperparameters
    actor_lr: float = 3e-4
    critic_lr: float = 3e-4
    entropy_coef_lr: float = 3e-4
    entropy_coef: float = 2e-4
    target_entropy_multiplier: float = 1.0
    discount: float = 0.99
    gae_lambda: float = 0.95
    clip_eps: float = 0.2
    value_coef: float = 0.5
    reward_scale: float = 1.0
    max_grad_norm: float = 0.5

    def validate(self) -> "OnPolicyConfig":
        """Checks the static fields and plain-number hyperparameters; raises ConfigError
        naming the field."""
        o = "OnPolicyConfig"
        require_choice(o, "algo", self.algo, ON_POLICY_ALGOS)
        for name in ("total_env_steps", "num_envs", "unroll_length", "num_epochs",
                     "num_minibatches", "num_evals", "num_eval_envs"):
            require_int_at_least(o, name, getattr(self, name), 1)
        require_layer_sizes(o, "value_hidden", self.value_hidden)
        require_choice(o, "discount_mode", self.discount_mode, DISCOUNT_MODES)
        require_choice(o, "advantage_normalization", self.advantage_normalization,
                       ADVANTAGE_NORMALIZATIONS)
        for name in ("normalize_obs", "value_layer_norm", "learn_entropy_coef", "anneal_lr"):
            require_bool(o, name, getattr(self, name))
        for name in ("discount", "gae_lambda"):
            value = getattr(self, name)
            if _is_plain_number(value):  # traced or batched values are checked by the caller
                require_in_range(o, name, value, 0.0, 1.0, closed=True)
        if _is_plain_number(self.reward_scale) and not math.isfinite(self.reward_scale):
            raise ConfigError(f"{o}.reward_scale must be a finite number, got {self.reward_scale!r}")
        for name in ("actor_lr", "critic_lr", "entropy_coef_lr", "clip_eps", "max_grad_norm"):
            value = getattr(self, name)
            if _is_plain_number(value):
                require_positive(o, name, value)
        for name in ("entropy_coef", "value_coef"):
            value = getattr(self, name)
            if _is_plain_number(value) and not (value >= 0 and math.isfinite(value)):
                raise ConfigError(f"{o}.{name} must be a finite number >= 0, got {value!r}")
        if self.learn_entropy_coef and _is_plain_number(self.entropy_coef):
            require_positive(o, "entropy_coef (the initial value when learn_entropy_coef)",
                             self.entropy_coef)
        num_steps = self.diffusion.num_steps if self.algo == "diffppo" else 1
        batch = self.num_envs * self.unroll_length * num_steps
        if batch % self.num_minibatches:
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


def _is_plain_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def schedule_of(config: OnPolicyConfig) -> dict[str, int]:
    """Static loop lengths: rollouts per eval interval, the env steps actually run, minibatch
    updates per interval."""
    per_rollout = config.num_envs * config.unroll_length
    iters_per_eval = config.total_env_steps // (per_rollout * config.num_evals)
    total = iters_per_eval * config.num_evals * per_rollout
    return {"iters_per_eval": iters_per_eval, "env_steps_per_rollout": per_rollout,
            "total_env_steps": total,
            "updates_per_interval": iters_per_eval * config.num_epochs * config.num_minibatches}


@struct.dataclass
class OnPolicyState:
    """The whole training carry."""

    policy_params: Params
    value_params: Params
    log_entropy_coef: Array
    policy_opt_state: Any
    value_opt_state: Any
    entropy_coef_opt_state: Any
    env_state: EnvState
    obs_stats: RunningStats
    episode_return: Array  # [N] running return of the current training episodes
    key: PRNGKey
    env_steps: Array
    updates: Array


def build(config: OnPolicyConfig):
    """The static pieces of a run: environment, policy, transform, value network."""
    env = make_env(config.env, backend=config.backend, episode_length=config.episode_length)
    kind = "diffusion" if config.algo == "diffppo" else "gaussian"
    policy = make_policy(kind, env.obs_dim, env.action_dim, config.diffusion, config.gaussian)
    transform = make_diffusion_loss(policy, config.discount_mode)
    value_net = EnsembleCritic(
        hidden_sizes=config.value_hidden, num_critics=1, layer_norm=config.value_layer_norm
    )
    return env, policy, transform, value_net


def _optimizer(lr: Array, max_grad_norm: Array, decay_steps: int | None) -> optax.GradientTransformation:
    """Adam after global-norm clipping; lr decays linearly to 0 over decay_steps if given."""
    if decay_steps is not None:
        base = lr
        lr = lambda count: base * (1.0 - jnp.minimum(count, decay_steps) / decay_steps)  # noqa: E731
    return optax.chain(optax.clip_by_global_norm(max_grad_norm), optax.adam(lr))


def rollout_batch(
    transitions: ChainTransition,
    value_params: Params,
    value_apply: Callable[[Params, Array], Array],
    transform: DiffusionLoss,
    entropy_coef: Array,
    config: OnPolicyConfig,
) -> tuple[PPOBatch, dict[str, Array]]:
    """A rollout's env-level transitions [T, N] (obs already normalised) -> PPOBatch of its
    T * N * K augmented transitions, flattened, with GAE of the soft reward.

    The augmented sequence of env n is time-major (t, k): (0, 0), ..., (0, K-1), (1, 0), ...
    Within a chain, the next state of step k < K - 1 is the state of step k + 1, so the
    values are computed once per augmented state plus once for each chain's next state.
    """
    K = transform.policy.num_steps
    aug = transform.expand(transitions, config.discount)  # [T, N, K]
    values = value_apply(value_params, transform.state_input(aug.state))
    last_next = jax.tree.map(lambda x: x[:, :, K - 1], aug.next_state)
    bootstrap = value_apply(value_params, transform.state_input(last_next))
    next_values = jnp.concatenate([values[..., 1:], bootstrap[..., None]], axis=-1)
    soft_reward = config.reward_scale * aug.reward - entropy_coef * aug.log_ratio
    is_last = (aug.state.step == K - 1).astype(jnp.float32)
    if config.discount_mode == "env":
        trace_decay = is_last * config.gae_lambda + (1.0 - is_last)
    else:
        trace_decay = jnp.broadcast_to(jnp.asarray(config.gae_lambda, jnp.float32), values.shape)

    def time_major(x: Array) -> Array:  # [T, N, K, ...] -> [T * K, N, ...]
        x = jnp.swapaxes(x, 1, 2)
        return x.reshape((-1,) + x.shape[2:])

    advantage, value_target = gae(
        *(time_major(x) for x in (soft_reward, values, next_values, aug.discount, trace_decay,
                                  aug.terminated, aug.truncated))
    )
    batch = PPOBatch(
        state=jax.tree.map(time_major, aug.state),
        action=time_major(aug.action),
        log_prob=time_major(aug.log_prob),
        log_ratio=time_major(aug.log_ratio),
        advantage=advantage,
        value_target=value_target,
    )
    batch = jax.tree.map(lambda x: x.reshape((-1,) + x.shape[2:]), batch)
    stats = {
        "value_mean": jnp.mean(values),
        "advantage_mean": jnp.mean(advantage),
        "advantage_std": jnp.std(advantage),
        "soft_reward_mean": jnp.mean(soft_reward) * K,
    }
    return batch, stats


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
) -> tuple[EnvState, Array, ChainTransition, StepCounters]:
    """num_steps (T) vectorised environment steps of the N envs with the acting policy.

    Returns (env_state, episode_return [N], transitions [T, N] with raw obs, counters [T]).
    Each step's chains start from the x'_0 stored with the step before, so within the rollout
    the next state of a last denoising step, (next_obs, x'_0, 0), is the next chain's real
    first state (where the episode goes on) and the GAE sum telescopes exactly; the first
    chains start from a fresh prior draw, and the last step's x'_0 (only bootstrapped, the
    next rollout starts afresh) is an independent draw, unbiased since the next chain's x_0
    would be one too.
    shard: the sharding constraint of the env axis (identity without a mesh).
    """
    def env_step(carry, step_key):
        env_state, episode_return, prior_latent = carry
        env_state, transition, episode_return, counters = step_envs(
            env, transform, params, env_state, obs_stats, episode_return, step_key,
            normalize_obs, prior_latent,
        )
        carry = (env_state, episode_return, transition.next_prior_latent)
        return shard(carry), (shard(transition), counters)

    n = episode_return.shape[0]
    first = shard(transform.policy.sample_prior(jax.random.fold_in(key, num_steps), (n,)))
    (env_state, episode_return, _), (transitions, counters) = jax.lax.scan(
        env_step, (env_state, episode_return, first), jax.random.split(key, num_steps)
    )
    return env_state, episode_return, transitions, counters


def train(
    key: PRNGKey,
    config: OnPolicyConfig,
    on_interval: Callable[[dict[str, Array]], None] | None = None,
    batch_sharding: BatchSharding | None = None,
) -> tuple[OnPolicyState, dict[str, Array]]:
    """Trains for config.total_env_steps; returns the final state and per-interval metrics
    (each leaf [num_evals, ...]). Pure: jit it, vmap it over keys and configs.

    on_interval: called while tracing, inside the interval scan, with that interval's
    metrics (use `jax.debug.callback` in it to report progress from the running program).
    batch_sharding: keeps the N environments, the rollout and each minibatch split over a
    mesh axis (see `diffrl_jax.parallel.mesh_train`); None: no sharding constraints.
    """
    return run_program(make_program(config, on_interval, batch_sharding), key)


def make_program(
    config: OnPolicyConfig,
    on_interval: Callable[[dict[str, Array]], None] | None = None,
    batch_sharding: BatchSharding | None = None,
) -> TrainProgram:
    """The run as (init, interval): init(key) builds the state, interval(state) runs one
    evaluation interval (see `train` for the arguments)."""
    config.validate()
    env, policy, transform, value_net = build(config)
    sched = schedule_of(config)
    N, T, K = config.num_envs, config.unroll_length, policy.num_steps
    num_transitions = N * T * K
    minibatch = num_transitions // config.num_minibatches
    peaks = peaks_of(config.env)

    def shard(tree: Any, dim: int = 0) -> Any:  # the environment / sample axis over devices
        return constrain_batch(tree, batch_sharding, dim)

    def value_apply(params: Params, features: Array) -> Array:
        return value_net.apply(params, features)[..., 0]

    total_updates = sched["iters_per_eval"] * config.num_evals * config.num_epochs * config.num_minibatches
    decay_steps = total_updates if config.anneal_lr else None
    policy_opt = _optimizer(config.actor_lr, config.max_grad_norm, decay_steps)
    value_opt = _optimizer(config.critic_lr, config.max_grad_norm, decay_steps)
    entropy_coef_opt = optax.adam(config.entropy_coef_lr)
    target_entropy = transform.target_entropy(config.target_entropy_multiplier)

    # ---- initial state -----------------------------------------------------------------
    def init(key: PRNGKey) -> OnPolicyState:
        key, pkey, vkey, ekey, rkey = jax.random.split(key, 5)
        policy_params = policy.init(pkey)
        value_params = value_net.init(vkey, transform.state_input(AugmentedState(
            obs=jnp.zeros((1, env.obs_dim)),
            latent=jnp.zeros((1, env.action_dim)),
            step=jnp.zeros((1,), jnp.int32),
        )))
        # finite even for c = 0 (then unused: a fixed coefficient is read from the config)
        log_entropy_coef = jnp.log(jnp.maximum(jnp.asarray(config.entropy_coef, jnp.float32), 1e-30))
        state = OnPolicyState(
            policy_params=policy_params,
            value_params=value_params,
            log_entropy_coef=log_entropy_coef,
            policy_opt_state=policy_opt.init(policy_params),
            value_opt_state=value_opt.init(value_params),
            entropy_coef_opt_state=entropy_coef_opt.init(log_entropy_coef),
            env_state=shard(env.reset(ekey, N)),
            obs_stats=init_stats(env.obs_dim),
            episode_return=shard(jnp.zeros(N)),
            key=rkey,
            env_steps=jnp.zeros((), jnp.int32),
            updates=jnp.zeros((), jnp.int32),
        )
        return state

    def entropy_coef_of(ts: OnPolicyState) -> Array:
        if config.learn_entropy_coef:
            return jnp.exp(ts.log_entropy_coef)
        return jnp.asarray(config.entropy_coef, jnp.float32)

    # ---- rollout -----------------------------------------------------------------------
    def rollout(ts: OnPolicyState):
        key, rollout_key = jax.random.split(ts.key)
        env_state, episode_return, transitions, counters = collect_rollout(
            env, transform, ts.policy_params, ts.env_state, ts.obs_stats, ts.episode_return,
            rollout_key, T, config.normalize_obs, shard,
        )
        ts = ts.replace(env_state=env_state, episode_return=episode_return, key=key,
                        env_steps=ts.env_steps + N * T)
        return ts, shard(transitions, 1), counters

    # ---- one PPO minibatch step --------------------------------------------------------
    loss_grad = jax.value_and_grad(ppo_loss, argnums=(0, 1), has_aux=True)

    def minibatch_step(carry, batch: PPOBatch):
        policy_params, value_params, policy_opt_state, value_opt_state, coef = carry
        (loss, metrics), (policy_grads, value_grads) = loss_grad(
            policy_params, value_params, batch, coef, config.clip_eps, config.value_coef,
            transform, value_apply, config.advantage_normalization,
        )
        updates, new_policy_opt_state = policy_opt.update(policy_grads, policy_opt_state)
        new_policy_params = optax.apply_updates(policy_params, updates)
        updates, new_value_opt_state = value_opt.update(value_grads, value_opt_state)
        new_value_params = optax.apply_updates(value_params, updates)
        # a non-finite loss or gradient skips the minibatch (counted in the metrics)
        ok = all_finite(loss, metrics, policy_grads, value_grads)
        learner = keep_if_finite(
            ok, (new_policy_params, new_value_params, new_policy_opt_state, new_value_opt_state),
            (policy_params, value_params, policy_opt_state, value_opt_state),
        )
        return (*learner, coef), (metrics, ok)

    def update(ts: OnPolicyState, transitions: ChainTransition):
        coef = entropy_coef_of(ts)
        raw_obs = transitions.obs
        normalized = transitions.replace(
            obs=policy_obs(ts.obs_stats, transitions.obs, config.normalize_obs),
            next_obs=policy_obs(ts.obs_stats, transitions.next_obs, config.normalize_obs),
        )
        batch, rollout_stats = rollout_batch(
            normalized, ts.value_params, value_apply, transform, coef, config
        )
        key, epochs_key = jax.random.split(ts.key)

        def epoch(carry, epoch_key):
            order = jax.random.permutation(epoch_key, num_transitions)
            shuffled = jax.tree.map(
                lambda x: x[order].reshape((config.num_minibatches, minibatch) + x.shape[1:]),
                batch,
            )
            shuffled = shard(shuffled, 1)  # each minibatch split over devices
            return jax.lax.scan(minibatch_step, carry, shuffled)

        carry = (ts.policy_params, ts.value_params, ts.policy_opt_state, ts.value_opt_state, coef)
        carry, (metrics, ok) = jax.lax.scan(
            epoch, carry, jax.random.split(epochs_key, config.num_epochs)
        )
        policy_params, value_params, policy_opt_state, value_opt_state, _ = carry

        # H_hat of the rollout's chains: the bound holds along the acting policy's own chains
        entropy = transform.chain_entropy(transitions.log_ratios)
        log_entropy_coef, entropy_coef_opt_state = ts.log_entropy_coef, ts.entropy_coef_opt_state
        if config.learn_entropy_coef:
            grad = jax.grad(transform.temperature_loss)(ts.log_entropy_coef, entropy, target_entropy)
            updates, new_opt_state = entropy_coef_opt.update(grad, entropy_coef_opt_state)
            log_entropy_coef, entropy_coef_opt_state = keep_if_finite(
                all_finite(grad), (optax.apply_updates(ts.log_entropy_coef, updates), new_opt_state),
                (log_entropy_coef, entropy_coef_opt_state),
            )

        ts = ts.replace(
            policy_params=policy_params,
            value_params=value_params,
            log_entropy_coef=log_entropy_coef,
            policy_opt_state=policy_opt_state,
            value_opt_state=value_opt_state,
            entropy_coef_opt_state=entropy_coef_opt_state,
            obs_stats=(update_stats(ts.obs_stats, raw_obs) if config.normalize_obs
                       else ts.obs_stats),
            key=key,
            updates=ts.updates + jnp.sum(ok).astype(jnp.int32),
        )
        first_deviation = metrics.pop("ratio_deviation")[0, 0]
        per_rollout = dict(rollout_stats, entropy=entropy, entropy_coef=coef,
                           first_minibatch_ratio_deviation=first_deviation)
        return ts, (masked_sums(metrics, ok), per_rollout)

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
            env, transform, ts.policy_params, ts.obs_stats, eval_key, config.num_eval_envs,
            config.normalize_obs, peaks, ts.env_steps, counters,
        )
        metrics.update(masked_means(jax.tree.map(lambda x: jnp.sum(x, 0), update_sums)))
        deviation = per_rollout.pop("first_minibatch_ratio_deviation")
        metrics.update(jax.tree.map(jnp.mean, per_rollout))
        metrics["first_minibatch_ratio_deviation"] = jnp.max(deviation)
        if on_interval is not None:
            on_interval(metrics)
        return ts, metrics

    return TrainProgram(init=init, interval=interval, num_intervals=config.num_evals)
