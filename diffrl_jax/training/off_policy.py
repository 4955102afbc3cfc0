"""The off-policy trainer (SAC, DiffSAC, WPO, DiffWPO): one pure `train(key, config)` under one jit.

Structure (all lax.scan, static shapes):
  prefill:   ceil(learning_starts / num_envs) collection steps, no updates
  intervals: num_evals x [iters_per_eval x (one vectorised env step + updates_per_step
             gradient updates), then stochastic and deterministic evaluation]
Metrics are reduced (averaged) per interval inside the scan, never stacked per step.

Replay holds one `ChainTransition` per environment step (raw observations, the whole chain);
each gradient update samples batch_size of them, picks k ~ U{0..K-1} per sample and turns
them into DA-MDP transitions with the shared transform. SAC is this trainer with the
Gaussian policy (K = 1). WPO and DiffWPO share the critic, replay and temperature and replace
the actor loss by the Wasserstein policy update (algorithms/wpo.py).
"""

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct

from diffrl_jax.algorithms.sac import sac_actor_objective, sac_critic_loss
from diffrl_jax.algorithms.wpo import kl_coef_loss, wpo_actor_loss
from diffrl_jax.buffers import ReplayBuffer, replay_add, replay_init, replay_sample
from diffrl_jax.envs import EnvState, RunningStats, init_stats, make_env, update_stats
from diffrl_jax.envs import peaks_of
from diffrl_jax.networks.critic import EnsembleCritic
from diffrl_jax.parallel.mesh import BatchSharding, constrain_batch
from diffrl_jax.policies import DiffusionPolicyConfig, GaussianPolicyConfig, make_policy
from diffrl_jax.training.collection import StepCounters, interval_metrics, policy_obs, step_envs
from diffrl_jax.training.guards import all_finite, keep_if_finite, masked_means, masked_sums
from diffrl_jax.training.program import TrainProgram, run_program
from diffrl_jax.transforms import AugmentedState, ChainTransition, make_diffusion_loss, sampled_loss
from diffrl_jax.transforms.damdp import DISCOUNT_MODES
from diffrl_jax.transforms.diffusion_loss import ESTIMATORS
from diffrl_jax.types import Array, Params, PRNGKey
from diffrl_jax.validation import (
    ConfigError,
    require_bool,
    require_choice,
    require_int_at_least,
    require_in_range,
    require_layer_sizes,
    require_positive,
)

OFF_POLICY_ALGOS = ("sac", "diffsac", "wpo", "diffwpo")
DIFFUSION_ALGOS = ("diffsac", "diffwpo")
WPO_ALGOS = ("wpo", "diffwpo")

static = lambda default: struct.field(pytree_node=False, default=default)  # noqa: E731


@struct.dataclass
class OffPolicyConfig:
    """Static fields fix shapes and code paths; numeric hyperparameters are pytree leaves, so
    they may be traced and vmapped (a grid of values x seeds is one compile).

    discount is gamma per environment step in discount_mode "env" and the factor per
    augmented (denoising) step in "diffusion" mode (the authors use 0.999 with K = 8, i.e.
    about 0.992 per environment step). target_entropy_multiplier m gives the target
    H(prior) - m * A (spec section 5; -m * A for the Gaussian).

    entropy_chains n: how many of the batch's observations get a fresh chain for the
    temperature's H_hat where the actor's terms are not whole chains (the per-step DiffSAC,
    and WPO / DiffWPO; the Gaussian WPO, K = 1, thus uses the whole batch); None:
    ceil(batch_size / K), i.e. about batch_size step terms, as many as the actor sees, for
    the price of one policy evaluation of the batch instead of K. On a mesh it is rounded up
    to a multiple of the data shards (`entropy_chain_count`).
    """

    algo: str = static("diffsac")
    env: str = static("brax/inverted_pendulum")
    backend: str = static("mjx")
    total_env_steps: int = static(50_000)
    num_envs: int = static(16)
    num_evals: int = static(10)
    learning_starts: int = static(2_000)
    batch_size: int = static(256)
    updates_per_step: int = static(4)
    buffer_size: int = static(100_000)
    num_eval_envs: int = static(8)
    episode_length: int | None = static(None)
    normalize_obs: bool = static(True)
    critic_hidden: tuple[int, ...] = static((256, 256))
    critic_layer_norm: bool = static(False)
    diffusion: DiffusionPolicyConfig = static(DiffusionPolicyConfig())
    gaussian: GaussianPolicyConfig = static(GaussianPolicyConfig())
    estimator: str = static("per_step")
    discount_mode: str = static("env")
    learn_alpha: bool = static(True)
    num_action_samples: int = static(4)
    entropy_chains: int | None = static(None)
    natural_gradient: bool = static(False)
    # traced hyperparameters
    actor_lr: float = 3e-4
    critic_lr: float = 3e-4
    alpha_lr: float = 3e-4
    tau: float = 0.005
    discount: float = 0.99
    target_entropy_multiplier: float = 1.0
    init_alpha: float = 1.0
    reward_scale: float = 1.0
    max_grad_norm: float = 1e6
    kl_bound: float = 0.02
    init_kl_coef: float = 1.0
    kl_coef_lr: float = 1e-3
    policy_tau: float = 0.005

    def validate(self) -> "OffPolicyConfig":
        """Checks the static fields; raises ConfigError naming the field."""
        o = "OffPolicyConfig"
        require_choice(o, "algo", self.algo, OFF_POLICY_ALGOS)
        for name in ("total_env_steps", "num_envs", "num_evals", "batch_size",
                     "updates_per_step", "buffer_size", "num_eval_envs", "num_action_samples"):
            require_int_at_least(o, name, getattr(self, name), 1)
        require_int_at_least(o, "learning_starts", self.learning_starts, 0)
        if self.entropy_chains is not None:
            require_int_at_least(o, "entropy_chains", self.entropy_chains, 1)
            if self.entropy_chains > self.batch_size:
                raise ConfigError(f"{o}.entropy_chains ({self.entropy_chains}) must be <= "
                                  f"batch_size ({self.batch_size}) or None")
        require_layer_sizes(o, "critic_hidden", self.critic_hidden)
        require_choice(o, "estimator", self.estimator, ESTIMATORS)
        require_choice(o, "discount_mode", self.discount_mode, DISCOUNT_MODES)
        for name in ("learn_alpha", "natural_gradient", "critic_layer_norm", "normalize_obs"):
            require_bool(o, name, getattr(self, name))
        for name, low, high in (("discount", 0.0, 1.0), ("tau", 0.0, 1.0), ("policy_tau", 0.0, 1.0)):
            value = getattr(self, name)
            if isinstance(value, (int, float)):  # traced or batched values are checked by the caller
                require_in_range(o, name, value, low, high, closed=True)
        if _is_plain_number(self.reward_scale) and not math.isfinite(self.reward_scale):
            raise ConfigError(f"{o}.reward_scale must be a finite number, got {self.reward_scale!r}")
        positive = ["actor_lr", "critic_lr", "alpha_lr", "max_grad_norm", "kl_bound",
                    "init_kl_coef", "kl_coef_lr"]
        if self.learn_alpha:
            positive.append("init_alpha")
        elif _is_plain_number(self.init_alpha) and not (0 <= self.init_alpha < float("inf")):
            raise ConfigError(f"{o}.init_alpha must be a finite number >= 0, got {self.init_alpha!r}")
        for name in positive:
            value = getattr(self, name)
            if _is_plain_number(value):
                require_positive(o, name, value)
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


def _is_plain_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def schedule_of(config: OffPolicyConfig) -> dict[str, int]:
    """Static loop lengths: prefill iterations, iterations per eval interval, env steps,
    gradient updates per interval."""
    prefill = math.ceil(config.learning_starts / config.num_envs)
    remaining = config.total_env_steps - prefill * config.num_envs
    iters_per_eval = remaining // (config.num_envs * config.num_evals)
    total = (prefill + iters_per_eval * config.num_evals) * config.num_envs
    return {"prefill_iters": prefill, "iters_per_eval": iters_per_eval, "total_env_steps": total,
            "updates_per_interval": iters_per_eval * config.updates_per_step}


def entropy_chain_count(config: OffPolicyConfig, num_steps: int, data_shards: int = 1) -> int:
    """How many fresh chains the temperature's H_hat takes when the actor's terms are not
    whole chains: config.entropy_chains or ceil(batch_size / K), rounded up to a multiple of the
    mesh's data shards (so the chains split over the devices like the batch; an uneven
    count would be replicated on every device), at most batch_size."""
    wanted = config.entropy_chains or -(-config.batch_size // num_steps)
    return min(config.batch_size, -(-wanted // data_shards) * data_shards)


@struct.dataclass
class OffPolicyState:
    """The whole training carry."""

    policy_params: Params
    critic_params: Params
    target_critic_params: Params
    log_alpha: Array
    policy_opt_state: Any
    critic_opt_state: Any
    alpha_opt_state: Any
    # WPO / DiffWPO only (None otherwise): the KL target policy and the KL multiplier
    target_policy_params: Params | None
    log_kl_coef: Array | None
    kl_coef_opt_state: Any
    buffer: ReplayBuffer
    env_state: EnvState
    obs_stats: RunningStats
    episode_return: Array  # [N] running return of the current training episodes
    key: PRNGKey
    env_steps: Array
    updates: Array


def build(config: OffPolicyConfig):
    """The static pieces of a run: environment, policy, transform, critic, optimisers."""
    env = make_env(config.env, backend=config.backend, episode_length=config.episode_length)
    kind = "diffusion" if config.algo in DIFFUSION_ALGOS else "gaussian"
    policy = make_policy(kind, env.obs_dim, env.action_dim, config.diffusion, config.gaussian)
    transform = make_diffusion_loss(policy, config.discount_mode, config.estimator)
    critic = EnsembleCritic(
        hidden_sizes=config.critic_hidden, num_critics=2, layer_norm=config.critic_layer_norm
    )
    return env, policy, transform, critic


def _optimizer(lr: Array, max_grad_norm: Array) -> optax.GradientTransformation:
    return optax.chain(optax.clip_by_global_norm(max_grad_norm), optax.adam(lr))


def train(
    key: PRNGKey,
    config: OffPolicyConfig,
    on_interval: Callable[[dict[str, Array]], None] | None = None,
    batch_sharding: BatchSharding | None = None,
) -> tuple[OffPolicyState, dict[str, Array]]:
    """Trains for config.total_env_steps; returns the final state and per-interval metrics
    (each leaf [num_evals, ...]). Pure: jit it, vmap it over keys and configs.

    on_interval: called while tracing, inside the interval scan, with that interval's
    metrics; use `jax.debug.callback` in it to report progress from the running program.
    batch_sharding: keeps the N environments and each sampled minibatch split over a mesh
    axis (see `diffrl_jax.parallel.mesh_train`; the replay buffer is left to the
    partitioner); None: no sharding constraints.
    """
    return run_program(make_program(config, on_interval, batch_sharding), key)


def make_program(
    config: OffPolicyConfig,
    on_interval: Callable[[dict[str, Array]], None] | None = None,
    batch_sharding: BatchSharding | None = None,
) -> TrainProgram:
    """The run as (init, interval): init(key) builds the state and runs the prefill,
    interval(state) one evaluation interval (see `train` for the arguments)."""
    config.validate()
    env, policy, transform, critic = build(config)
    sched = schedule_of(config)
    N, B, K = config.num_envs, config.batch_size, policy.num_steps
    data_shards = batch_sharding.mesh.shape[batch_sharding.axis] if batch_sharding else 1
    entropy_chains = entropy_chain_count(config, K, data_shards)
    peaks = peaks_of(config.env)

    def shard(tree: Any) -> Any:  # the environment / sample axis over devices
        return constrain_batch(tree, batch_sharding)

    policy_opt = _optimizer(config.actor_lr, config.max_grad_norm)
    critic_opt = _optimizer(config.critic_lr, config.max_grad_norm)
    alpha_opt = optax.adam(config.alpha_lr)
    kl_coef_opt = optax.adam(config.kl_coef_lr)
    is_wpo = config.algo in WPO_ALGOS
    target_entropy = transform.target_entropy(config.target_entropy_multiplier)

    def norm(stats: RunningStats, obs: Array) -> Array:
        return policy_obs(stats, obs, config.normalize_obs)

    # ---- initial state -----------------------------------------------------------------
    def init(key: PRNGKey) -> OffPolicyState:
        key, pkey, ckey, ekey, rkey = jax.random.split(key, 5)
        policy_params = policy.init(pkey)
        critic_input = transform.critic_input(
            AugmentedState(
                obs=jnp.zeros((1, env.obs_dim)),
                latent=jnp.zeros((1, env.action_dim)),
                step=jnp.zeros((1,), jnp.int32),
            ),
            jnp.zeros((1, env.action_dim)),
        )
        critic_params = critic.init(ckey, critic_input)
        # finite even for a fixed alpha of 0 (then unused: alpha is read from the config)
        log_alpha = jnp.log(jnp.maximum(jnp.asarray(config.init_alpha, jnp.float32), 1e-30))
        log_kl_coef = jnp.log(jnp.asarray(config.init_kl_coef, jnp.float32)) if is_wpo else None
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
            policy_params=policy_params,
            critic_params=critic_params,
            target_critic_params=critic_params,
            log_alpha=log_alpha,
            policy_opt_state=policy_opt.init(policy_params),
            critic_opt_state=critic_opt.init(critic_params),
            alpha_opt_state=alpha_opt.init(log_alpha),
            target_policy_params=policy_params if is_wpo else None,
            log_kl_coef=log_kl_coef,
            kl_coef_opt_state=kl_coef_opt.init(log_kl_coef) if is_wpo else None,
            buffer=replay_init(example, config.buffer_size),
            env_state=shard(env.reset(ekey, N)),
            obs_stats=init_stats(env.obs_dim),
            episode_return=shard(jnp.zeros(N)),
            key=rkey,
            env_steps=jnp.zeros((), jnp.int32),
            updates=jnp.zeros((), jnp.int32),
        )
        state, _ = jax.lax.scan(lambda ts, _: collect(ts), state, None, length=sched["prefill_iters"])
        return state

    # ---- one vectorised environment step ----------------------------------------------
    def collect(ts: OffPolicyState) -> tuple[OffPolicyState, StepCounters]:
        key, step_key = jax.random.split(ts.key)
        env_state, item, episode_return, counters = step_envs(
            env, transform, ts.policy_params, ts.env_state, ts.obs_stats, ts.episode_return,
            step_key, config.normalize_obs,
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

    # ---- one gradient update ------------------------------------------------------------
    actor_loss_fn = sampled_loss(transform, sac_actor_objective)

    def update(ts: OffPolicyState, key: PRNGKey) -> tuple[OffPolicyState, dict[str, Array]]:
        sample_key, step_key, critic_key, actor_key, entropy_key = jax.random.split(key, 5)
        items = shard(replay_sample(ts.buffer, sample_key, B))
        step = jax.random.randint(step_key, (B,), 0, K, dtype=jnp.int32)
        batch = transform.augment(items, step, config.discount)
        batch = batch.replace(
            state=batch.state.replace(obs=norm(ts.obs_stats, batch.state.obs)),
            next_state=batch.next_state.replace(obs=norm(ts.obs_stats, batch.next_state.obs)),
            reward=batch.reward * config.reward_scale,
        )
        alpha = jnp.exp(ts.log_alpha) if config.learn_alpha else jnp.asarray(config.init_alpha, jnp.float32)

        (_, critic_metrics), critic_grads = jax.value_and_grad(sac_critic_loss, has_aux=True)(
            ts.critic_params, ts.target_critic_params, ts.policy_params, batch, alpha,
            critic_key, transform, critic.apply,
        )
        updates, critic_opt_state = critic_opt.update(critic_grads, ts.critic_opt_state)
        critic_params = optax.apply_updates(ts.critic_params, updates)

        extra, actor_terms = {}, None
        if is_wpo:
            kl_coef = jnp.exp(ts.log_kl_coef)
            (_, actor_metrics), actor_grads = jax.value_and_grad(wpo_actor_loss, has_aux=True)(
                ts.policy_params, ts.target_policy_params, batch.state, actor_key, alpha, kl_coef,
                critic_params, critic.apply, transform, config.num_action_samples,
                config.natural_gradient,
            )
            kl_grad = jax.grad(kl_coef_loss)(ts.log_kl_coef, actor_metrics["kl"], config.kl_bound)
            updates, kl_coef_opt_state = kl_coef_opt.update(kl_grad, ts.kl_coef_opt_state)
            extra = dict(log_kl_coef=optax.apply_updates(ts.log_kl_coef, updates),
                         kl_coef_opt_state=kl_coef_opt_state)
            actor_metrics = dict(actor_metrics, kl_coef=kl_coef)
        else:
            (actor_loss, actor_terms), actor_grads = jax.value_and_grad(actor_loss_fn, has_aux=True)(
                ts.policy_params, batch.state, actor_key, alpha, critic_params, critic.apply
            )
            actor_metrics = {"actor_loss": actor_loss,
                             "step_log_ratio": jnp.mean(actor_terms.log_ratio)}
        updates, policy_opt_state = policy_opt.update(actor_grads, ts.policy_opt_state)
        policy_params = optax.apply_updates(ts.policy_params, updates)
        if is_wpo:
            extra["target_policy_params"] = optax.incremental_update(
                policy_params, ts.target_policy_params, config.policy_tau
            )

        # H_hat bounds the entropy of the *current* policy only along its own chains, so the
        # temperature sees whole fresh chains at the batch's observations, not the replayed
        # (older) latents the actor trained on. Where the actor's terms already are such
        # chains (K = 1, i.e. the Gaussian, where H_hat = -mean log pi; or the full-chain
        # estimator) they are reused, drawn before this update as in textbook SAC, which
        # saves the chain's K policy evaluations; otherwise fresh chains of the updated policy
        # at the first entropy_chains observations of the (uniformly drawn) batch.
        if actor_terms is not None and actor_terms.num_steps == K:
            chains = jax.lax.stop_gradient(actor_terms)
        else:
            chains = jax.lax.stop_gradient(transform.sample_chains(
                policy_params, shard(batch.state.obs[:entropy_chains]), entropy_key
            ))
        entropy = transform.entropy(chains)
        alpha_loss, alpha_grad = jax.value_and_grad(transform.temperature_loss)(
            ts.log_alpha, entropy, target_entropy
        )
        if config.learn_alpha:
            updates, alpha_opt_state = alpha_opt.update(alpha_grad, ts.alpha_opt_state)
            log_alpha = optax.apply_updates(ts.log_alpha, updates)
        else:
            alpha_opt_state, log_alpha = ts.alpha_opt_state, ts.log_alpha

        target_critic_params = optax.incremental_update(
            critic_params, ts.target_critic_params, config.tau
        )
        metrics = dict(critic_metrics, **actor_metrics, alpha=alpha, entropy=entropy,
                       alpha_loss=alpha_loss)
        # a non-finite loss or gradient skips the whole update (counted in the metrics)
        ok = all_finite(metrics, critic_grads, actor_grads,
                        alpha_grad if config.learn_alpha else (), extra)
        learner = dict(
            policy_params=policy_params,
            critic_params=critic_params,
            target_critic_params=target_critic_params,
            log_alpha=log_alpha,
            policy_opt_state=policy_opt_state,
            critic_opt_state=critic_opt_state,
            alpha_opt_state=alpha_opt_state,
            **extra,
        )
        learner = keep_if_finite(ok, learner, {k: getattr(ts, k) for k in learner})
        ts = ts.replace(updates=ts.updates + ok.astype(jnp.int32), **learner)
        return ts, (metrics, ok)

    def train_iteration(ts: OffPolicyState, _) -> tuple[OffPolicyState, dict[str, Array]]:
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
            env, transform, ts.policy_params, ts.obs_stats, eval_key, config.num_eval_envs,
            config.normalize_obs, peaks, ts.env_steps, counters,
        )
        metrics.update(masked_means(jax.tree.map(lambda x: jnp.sum(x, 0), update_sums)))
        if on_interval is not None:
            on_interval(metrics)
        return ts, metrics

    return TrainProgram(init=init, interval=interval, num_intervals=config.num_evals)
