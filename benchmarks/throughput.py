"""Training throughput against Brax: our Gaussian PPO against `brax.training.agents.ppo`,
our Gaussian SAC against `brax.training.agents.sac`, on the same environment and backend
with the same batch shapes, network sizes and evaluation schedule.

    python benchmarks/throughput.py [--algos ppo sac] [--env brax/inverted_pendulum]
        [--backend mjx] [--num-envs N] [--total-steps S] [--repeats 3]
        [--gpu-scale | --quick] [--out benchmarks/results/throughput.json]

Parameter mapping (`paired_settings` builds both sides, `matched_fields` derives the
quantities that must agree from each side's own parameters, with that side's semantics):

  PPO   benchmark scale        ours (OnPolicyConfig)        Brax ppo.train
        num_envs N             num_envs = N                 num_envs = N
        unroll T, batch B      unroll_length = R * T        unroll_length = T, batch_size = B
        minibatches M          num_minibatches = M          num_minibatches = M
        epochs E               num_epochs = E               num_updates_per_batch = E
    where R = B * M / N is the number of unrolls Brax collects per training step (it collects
    B * M trajectories of T steps from its N envs); B defaults to N / M, i.e. R = 1, one
    rollout of our N envs x T steps split into M minibatches. Per iteration both sides then
    take N * R * T env steps (R * T of them sequential) and E * M gradient steps on minibatches
    of B * T transitions. With R > 1 (the GPU scale: N 4096, B 2048, T 5, M 32, so R = 16 and
    our unroll is 80) Brax bootstraps GAE every T steps and shuffles T-step segments, we run
    GAE over the R * T steps and shuffle single transitions: same work, other estimator.
        policy / value hidden  gaussian.hidden_sizes,       policy_hidden_layer_sizes,
                               value_hidden (relu)          value_hidden_layer_sizes (relu)
        lr, discount, lambda, clip eps, max grad norm, advantage standardisation, value
        coefficient 0.5, no entropy bonus, no lr annealing, no value clipping: equal.
  SAC   num_envs N             num_envs = N                 num_envs = N
        batch B                batch_size = B               batch_size = B
        updates per step U     updates_per_step = U         grad_updates_per_step = U
        replay size            buffer_size                  max_replay_size
        learning starts L      learning_starts = L          min_replay_size = L
        hidden H               gaussian.hidden_sizes = H,   hidden_layer_sizes = H (Brax uses
                               critic_hidden = H (relu)     one size list for both; relu)
        lr for actor and critic, alpha lr 3e-4 (fixed in Brax), tau, discount, initial alpha 1,
        target entropy -A / 2 (Brax's; our target_entropy_multiplier = 0.5): equal.
  Both  observation normalisation on; K training intervals of I iterations, each followed
        by an evaluation of num_eval_envs envs for one episode of episode_length steps (ours:
        num_evals = K; Brax: num_evals = K + 1, its extra one is the evaluation at step 0);
        total env steps = K * I * (steps per iteration), plus SAC's prefill of
        ceil(L / N) * N steps on both sides; one device (Brax: max_devices_per_host = 1).
        The env is `diffrl_jax.envs.make_env(name, backend, episode_length)` for us and
        `brax.envs.get_environment(name, backend)` wrapped by Brax's own trainer for Brax.

What is measured (training only, compile and evaluation excluded on both sides):
  The first WARMUP_INTERVALS = 2 intervals of every run are not measured, on both sides;
  the measured window is intervals 3..K, (K - 2) * I iterations.
  Brax: each training epoch (one interval) is timed by Brax itself (`training/sps` in the
    metrics given to progress_fn: the epoch's env steps over its wall time, blocked until
    ready, evaluation outside it); the window's seconds are the sum of steps / sps over
    epochs 3..K. Its first two epochs are skipped because they compile: Brax's trainers jit
    closures, so every train() call compiles afresh, and PPO's second epoch compiles again
    (its inputs' shardings change after the first call; observed on JAX 0.9.2).
  Ours: the whole `train(key, config)` is compiled once ahead of time (`jax.jit(...).lower(
    key).compile()`, its compile seconds reported apart) and run with a fresh key per repeat;
    an `on_interval` callback records the host time at the end of every interval, after its
    evaluation (the callback takes the evaluation's result). The window's seconds are the time
    between the ends of intervals 2 and K minus (K - 2) evaluations, one evaluation being
    timed by running our evaluation function (the one the trainer calls: stochastic and
    deterministic episodes, one batched env step) compiled on its own on the run's final
    parameters and statistics (median of EVAL_TIMINGS = 3 calls after each run).
  Ratio = ours / Brax env steps per second of the window, one per repeat; the runs alternate
  (ours, Brax, then Brax, ours, ...) with fresh seeds; median, min and max are reported.
  Also recorded: each side's window seconds *with* its evaluations (from the callback and
  progress_fn timestamps), though the evaluations differ (we run num_eval_envs stochastic
  plus num_eval_envs deterministic episodes, Brax num_eval_envs stochastic ones).
Compile seconds: ours, the lower + compile time of the whole run (which holds rollouts,
  updates, prefill and evaluation). Brax compiles inside train(), so its figure is derived:
  the wall time of train() minus K steady epochs (median of epochs 3..K) and K + 1 steady
  evaluations (median of evaluations 2..K, numbering the one at step 0 as 0: Brax's second
  evaluation compiles again too). It thus also holds the
  host-side setup, and for SAC the replay prefill's run time (Brax times that together
  with its compile). Every train() call compiles afresh (the table gives the median).
  By default the run gives JAX a fresh persistent compilation cache (a temporary directory,
  removed at exit) so that Brax's repeated compilations (every later call's, and its second
  epoch's) load from it instead of taking minutes on a CPU. The cache changes no
  executable, and the compile seconds stay cold-equivalent: the compile time JAX reports
  each cache hit saved (its event /jax/compilation_cache/compile_time_saved_sec: the
  entry's recorded compile time minus its load time) is added back, on both sides (ours is
  compiled once, before any Brax call, so it never hits). `--no-compile-cache` turns it off.

Brax 0.14.2 calls `jax.device_put_replicated`, which JAX removed in 0.10; when it is missing
`install_jax_compat` puts back a function with its semantics (see `device_put_replicated`).
Prints a table and writes JSON (default: benchmarks/results/throughput.json). `--quick` is a
smoke-sized CPU run (toy sizes, 1 repeat); most of its minutes are Brax's compilation.
"""

import argparse
import atexit
import dataclasses
import datetime
import functools
import importlib
import importlib.metadata
import json
import math
import shutil
import statistics
import sys
import tempfile
import time
import types
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from diffrl_jax.envs import BRAX_BACKENDS, brax_env_names, init_stats, peaks_of
from diffrl_jax.experiment import config_to_dict, make_config
from diffrl_jax.policies import GaussianPolicyConfig
from diffrl_jax.training import build, schedule_of, train
from diffrl_jax.training.evaluation import evaluate_policy

ALGOS = ("ppo", "sac")
SCALES = ("cpu", "gpu", "quick")
WARMUP_INTERVALS = 2
EVAL_TIMINGS = 3  # our evaluation is timed this many times per run (median)
BRAX_SAC_ALPHA_LR = 3e-4  # fixed inside brax.training.agents.sac.train
BRAX_SAC_TARGET_ENTROPY_PER_ACTION = -0.5  # brax.training.agents.sac.losses
ACTIVATION = "relu"  # our value and Q networks are relu; Brax's PPO default (swish) is overridden


# ---- scales ------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class PPOScale:
    """One PPO comparison's shape. batch_size is Brax's (trajectories of unroll_length per
    minibatch); None: num_envs // num_minibatches (one unroll per iteration)."""

    num_envs: int
    unroll_length: int
    num_minibatches: int
    num_epochs: int
    total_steps: int
    batch_size: int | None = None
    num_evals: int = 4
    num_eval_envs: int = 8
    episode_length: int = 1000
    policy_hidden: tuple[int, ...] = (32,) * 4
    value_hidden: tuple[int, ...] = (256,) * 5
    learning_rate: float = 3e-4


@dataclasses.dataclass(frozen=True)
class SACScale:
    """One SAC comparison's shape. buffer_size None: the run's total env steps (Brax's
    default; its queue never fills, so it never rolls)."""

    num_envs: int
    batch_size: int
    updates_per_step: int
    learning_starts: int
    total_steps: int
    buffer_size: int | None = None
    num_evals: int = 4
    num_eval_envs: int = 8
    episode_length: int = 1000
    hidden: tuple[int, ...] = (256, 256)
    learning_rate: float = 3e-4


SCALE_PRESETS: dict[str, dict[str, Any]] = {
    # 2 CPU cores: measured windows of 3-6 s per side (SAC's 300 iterations: 2 s windows of
    # 100 gave spreads of 0.76-1.07x); Brax's compilation (1.5 min cold per train() call
    # with MJX, about 30 s from the cache) dominates the 9-10 minutes.
    "cpu": {
        "ppo": PPOScale(num_envs=64, unroll_length=16, num_minibatches=4, num_epochs=4,
                        total_steps=4 * 12 * 1024, num_eval_envs=4),
        "sac": SACScale(num_envs=16, batch_size=256, updates_per_step=4, learning_starts=1024,
                        total_steps=1024 + 4 * 150 * 16, num_eval_envs=4),
    },
    # The GPU reference: Brax's own ant PPO shape (4096 envs, batch 2048, unroll 5, 32
    # minibatches, 4 epochs) and SAC with 128 envs, batch 512, 8 updates per env step.
    "gpu": {
        "ppo": PPOScale(num_envs=4096, unroll_length=5, num_minibatches=32, num_epochs=4,
                        batch_size=2048, total_steps=4 * 4 * 327_680, num_eval_envs=128),
        "sac": SACScale(num_envs=128, batch_size=512, updates_per_step=8,
                        learning_starts=8192, total_steps=8192 + 4 * 400 * 128,
                        num_eval_envs=128),
    },
    "quick": {
        # (short evaluations: our evaluation's time is subtracted from a short window)
        "ppo": PPOScale(num_envs=16, unroll_length=8, num_minibatches=2, num_epochs=2,
                        total_steps=3 * 32 * 128, num_evals=3, num_eval_envs=2,
                        episode_length=50, policy_hidden=(32, 32), value_hidden=(32, 32)),
        "sac": SACScale(num_envs=8, batch_size=64, updates_per_step=2, learning_starts=64,
                        total_steps=64 + 3 * 100 * 8, num_evals=3, num_eval_envs=2,
                        episode_length=50, hidden=(32, 32)),
    },
}
DEFAULT_ENV = {"cpu": "brax/inverted_pendulum", "gpu": "brax/ant", "quick": "brax/inverted_pendulum"}


def scale_for(algo: str, scale: str = "cpu", **overrides: Any) -> PPOScale | SACScale:
    """The preset shape of `algo` at `scale`, with the non-None overrides applied."""
    if algo not in ALGOS:
        raise ValueError(f"unknown algorithm {algo!r}; allowed: {list(ALGOS)}")
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}; allowed: {list(SCALES)}")
    base = SCALE_PRESETS[scale][algo]
    names = {f.name for f in dataclasses.fields(base)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise ValueError(f"unknown {algo} scale fields {unknown}; allowed: {sorted(names)}")
    return dataclasses.replace(base, **{k: v for k, v in overrides.items() if v is not None})


# ---- the two sides' settings -------------------------------------------------------------

def brax_env_name(env: str) -> str:
    """"brax/ant" -> "ant"; ValueError naming the allowed environments otherwise."""
    names = brax_env_names()
    if not env.startswith("brax/") or env[len("brax/"):] not in names:
        raise ValueError(f"the comparison needs a brax environment, got {env!r}; allowed: "
                         f"{['brax/' + n for n in names]}")
    return env[len("brax/"):]


def paired_settings(algo: str, env: str, backend: str, scale: PPOScale | SACScale
                    ) -> tuple[Any, dict[str, Any]]:
    """(our config, Brax's train() settings as plain JSON-able values) for one comparison.
    `brax_train_kwargs` turns the latter into the keyword arguments of Brax's train()."""
    name = brax_env_name(env)
    if backend not in BRAX_BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; allowed: {list(BRAX_BACKENDS)}")
    if algo == "ppo":
        return _ppo_settings(env, name, backend, scale)
    if algo == "sac":
        return _sac_settings(env, name, backend, scale)
    raise ValueError(f"unknown algorithm {algo!r}; allowed: {list(ALGOS)}")


def _ppo_settings(env: str, name: str, backend: str, s: PPOScale) -> tuple[Any, dict[str, Any]]:
    if s.num_envs % s.num_minibatches and s.batch_size is None:
        raise ValueError(f"num_minibatches ({s.num_minibatches}) must divide num_envs "
                         f"({s.num_envs}) when batch_size is not given")
    batch = s.batch_size if s.batch_size is not None else s.num_envs // s.num_minibatches
    if (batch * s.num_minibatches) % s.num_envs:
        raise ValueError(f"batch_size * num_minibatches ({batch} * {s.num_minibatches}) must be "
                         f"a multiple of num_envs ({s.num_envs}) (Brax collects that many "
                         "trajectories per training step)")
    unrolls = batch * s.num_minibatches // s.num_envs
    per_iteration = s.num_envs * unrolls * s.unroll_length
    if s.total_steps < s.num_evals * per_iteration:
        raise ValueError(f"total_steps ({s.total_steps}) is less than num_evals ({s.num_evals}) "
                         f"iterations of {per_iteration} env steps")
    if s.num_evals <= WARMUP_INTERVALS:
        raise ValueError(f"num_evals must be > {WARMUP_INTERVALS} (the first "
                         f"{WARMUP_INTERVALS} intervals are not measured), got {s.num_evals}")
    config = make_config(
        "ppo", env, backend, s.total_steps,
        num_envs=s.num_envs, unroll_length=unrolls * s.unroll_length,
        num_minibatches=s.num_minibatches, num_epochs=s.num_epochs, num_evals=s.num_evals,
        num_eval_envs=s.num_eval_envs, episode_length=s.episode_length, normalize_obs=True,
        gaussian=GaussianPolicyConfig(hidden_sizes=tuple(s.policy_hidden), activation=ACTIVATION),
        value_hidden=tuple(s.value_hidden), value_layer_norm=False,
        actor_lr=s.learning_rate, critic_lr=s.learning_rate, entropy_coef=0.0,
        learn_entropy_coef=False, anneal_lr=False, discount_mode="env", discount=0.99,
        gae_lambda=0.95, clip_eps=0.2, value_coef=0.5, reward_scale=1.0, max_grad_norm=1.0,
        advantage_normalization="standardize",
    )
    brax = {
        "env_name": name, "backend": backend,
        "num_timesteps": schedule_of(config)["total_env_steps"],
        "num_envs": s.num_envs, "batch_size": batch, "num_minibatches": s.num_minibatches,
        "unroll_length": s.unroll_length, "num_updates_per_batch": s.num_epochs,
        "action_repeat": 1, "episode_length": s.episode_length,
        "num_evals": s.num_evals + 1, "num_eval_envs": s.num_eval_envs,
        "deterministic_eval": False, "normalize_observations": True,
        "policy_hidden_layer_sizes": list(s.policy_hidden),
        "value_hidden_layer_sizes": list(s.value_hidden), "activation": ACTIVATION,
        "learning_rate": s.learning_rate, "entropy_cost": 0.0, "discounting": 0.99,
        "gae_lambda": 0.95, "clipping_epsilon": 0.2, "vf_loss_coefficient": 0.5,
        "reward_scaling": 1.0, "max_grad_norm": 1.0, "normalize_advantage": True,
        "max_devices_per_host": 1,
    }
    return config, brax


def _sac_settings(env: str, name: str, backend: str, s: SACScale) -> tuple[Any, dict[str, Any]]:
    if s.num_evals <= WARMUP_INTERVALS:
        raise ValueError(f"num_evals must be > {WARMUP_INTERVALS} (the first "
                         f"{WARMUP_INTERVALS} intervals are not measured), got {s.num_evals}")
    prefill = math.ceil(s.learning_starts / s.num_envs) * s.num_envs
    iters = (s.total_steps - prefill) // (s.num_envs * s.num_evals)
    if iters < 1:
        raise ValueError(f"total_steps ({s.total_steps}) leaves no training after the prefill "
                         f"of {prefill} steps for num_evals={s.num_evals} intervals of "
                         f"num_envs={s.num_envs}")
    total = prefill + s.num_evals * iters * s.num_envs
    buffer_size = total if s.buffer_size is None else s.buffer_size
    config = make_config(
        "sac", env, backend, total,
        num_envs=s.num_envs, batch_size=s.batch_size, updates_per_step=s.updates_per_step,
        learning_starts=s.learning_starts, buffer_size=buffer_size, num_evals=s.num_evals,
        num_eval_envs=s.num_eval_envs, episode_length=s.episode_length, normalize_obs=True,
        gaussian=GaussianPolicyConfig(hidden_sizes=tuple(s.hidden), activation=ACTIVATION),
        critic_hidden=tuple(s.hidden), critic_layer_norm=False,
        actor_lr=s.learning_rate, critic_lr=s.learning_rate, alpha_lr=BRAX_SAC_ALPHA_LR,
        learn_alpha=True, init_alpha=1.0, tau=0.005, discount=0.99, discount_mode="env",
        target_entropy_multiplier=-BRAX_SAC_TARGET_ENTROPY_PER_ACTION, reward_scale=1.0,
        max_grad_norm=1e6,  # our default; Brax's SAC does not clip
    )
    brax = {
        "env_name": name, "backend": backend, "num_timesteps": schedule_of(config)["total_env_steps"],
        "num_envs": s.num_envs, "batch_size": s.batch_size,
        "grad_updates_per_step": s.updates_per_step, "min_replay_size": s.learning_starts,
        "max_replay_size": buffer_size, "action_repeat": 1, "episode_length": s.episode_length,
        "num_evals": s.num_evals + 1, "num_eval_envs": s.num_eval_envs,
        "deterministic_eval": False, "normalize_observations": True,
        "hidden_layer_sizes": list(s.hidden), "activation": ACTIVATION,
        "learning_rate": s.learning_rate, "discounting": 0.99, "tau": 0.005,
        "reward_scaling": 1.0, "max_devices_per_host": 1,
    }
    return config, brax


def matched_fields(algo: str, config: Any, brax: dict[str, Any]) -> tuple[dict, dict]:
    """(ours, Brax's): the quantities the comparison holds equal, each derived from that
    side's own parameters with its own semantics."""
    return our_fields(algo, config), brax_fields(algo, brax)


def our_fields(algo: str, config: Any) -> dict[str, Any]:
    """What our config means, in the terms `matched_fields` compares."""
    c, sched = config, schedule_of(config)
    common = {
        "env": c.env[len("brax/"):], "backend": c.backend, "num_envs": c.num_envs,
        "training_intervals": c.num_evals, "iterations_per_interval": sched["iters_per_eval"],
        "total_env_steps": sched["total_env_steps"],
        "policy_hidden": tuple(c.gaussian.hidden_sizes), "policy_activation": c.gaussian.activation,
        "normalize_observations": c.normalize_obs, "num_eval_envs": c.num_eval_envs,
        "episode_length": c.episode_length, "policy_lr": c.actor_lr,
        "discount": c.discount, "reward_scale": c.reward_scale,
    }
    if algo == "ppo":
        return dict(
            common,
            env_steps_per_iteration=c.num_envs * c.unroll_length,
            sequential_env_steps_per_iteration=c.unroll_length,
            num_minibatches=c.num_minibatches,
            minibatch_transitions=c.num_envs * c.unroll_length // c.num_minibatches,
            epochs=c.num_epochs, gradient_steps_per_iteration=c.num_epochs * c.num_minibatches,
            value_hidden=tuple(c.value_hidden), value_activation=ACTIVATION,
            value_lr=c.critic_lr, gae_lambda=c.gae_lambda, clip_eps=c.clip_eps,
            value_coef=c.value_coef, max_grad_norm=c.max_grad_norm,
            standardize_advantages=c.advantage_normalization == "standardize",
        )
    if algo == "sac":
        return dict(
            common,
            env_steps_per_iteration=c.num_envs, batch_size=c.batch_size,
            updates_per_step=c.updates_per_step,
            samples_per_iteration=c.batch_size * c.updates_per_step,
            replay_size=c.buffer_size, prefill_env_steps=sched["prefill_iters"] * c.num_envs,
            q_hidden=tuple(c.critic_hidden), q_activation=ACTIVATION, q_lr=c.critic_lr,
            alpha_lr=c.alpha_lr, tau=c.tau, init_alpha=c.init_alpha,
            target_entropy_per_action_dim=-c.target_entropy_multiplier,
        )
    raise ValueError(f"unknown algorithm {algo!r}; allowed: {list(ALGOS)}")


def brax_fields(algo: str, brax: dict[str, Any]) -> dict[str, Any]:
    """What Brax's train() makes of the settings (its own formulas, as in its train()), in
    the terms `matched_fields` compares."""
    b = brax
    intervals = max(b["num_evals"] - 1, 1)  # training epochs; num_evals counts step 0's
    common = {
        "env": b["env_name"], "backend": b["backend"], "num_envs": b["num_envs"],
        "training_intervals": intervals, "policy_activation": b["activation"],
        "normalize_observations": b["normalize_observations"],
        "num_eval_envs": b["num_eval_envs"], "episode_length": b["episode_length"],
        "policy_lr": b["learning_rate"], "discount": b["discounting"],
        "reward_scale": b["reward_scaling"],
    }
    if algo == "ppo":
        per_step = b["batch_size"] * b["unroll_length"] * b["num_minibatches"] * b["action_repeat"]
        unrolls = b["batch_size"] * b["num_minibatches"] // b["num_envs"]
        iters = math.ceil(b["num_timesteps"] / (intervals * per_step))
        return dict(
            common,
            iterations_per_interval=iters, total_env_steps=intervals * iters * per_step,
            policy_hidden=tuple(b["policy_hidden_layer_sizes"]),
            env_steps_per_iteration=per_step,
            sequential_env_steps_per_iteration=unrolls * b["unroll_length"],
            num_minibatches=b["num_minibatches"],
            minibatch_transitions=b["batch_size"] * b["unroll_length"],
            epochs=b["num_updates_per_batch"],
            gradient_steps_per_iteration=b["num_updates_per_batch"] * b["num_minibatches"],
            value_hidden=tuple(b["value_hidden_layer_sizes"]), value_activation=b["activation"],
            value_lr=b["learning_rate"], gae_lambda=b["gae_lambda"],
            clip_eps=b["clipping_epsilon"], value_coef=b["vf_loss_coefficient"],
            max_grad_norm=b["max_grad_norm"], standardize_advantages=b["normalize_advantage"],
        )
    if algo == "sac":
        per_step = b["num_envs"] * b["action_repeat"]
        prefill = -(-b["min_replay_size"] // b["num_envs"]) * per_step
        iters = -(-(b["num_timesteps"] - prefill) // (intervals * per_step))
        return dict(
            common,
            iterations_per_interval=iters, total_env_steps=prefill + intervals * iters * per_step,
            policy_hidden=tuple(b["hidden_layer_sizes"]),
            env_steps_per_iteration=per_step, batch_size=b["batch_size"],
            updates_per_step=b["grad_updates_per_step"],
            samples_per_iteration=b["batch_size"] * b["grad_updates_per_step"],
            replay_size=b["max_replay_size"], prefill_env_steps=prefill,
            q_hidden=tuple(b["hidden_layer_sizes"]), q_activation=b["activation"],
            q_lr=b["learning_rate"], alpha_lr=BRAX_SAC_ALPHA_LR, tau=b["tau"],
            init_alpha=1.0,  # Brax starts log alpha at 0
            target_entropy_per_action_dim=BRAX_SAC_TARGET_ENTROPY_PER_ACTION,
        )
    raise ValueError(f"unknown algorithm {algo!r}; allowed: {list(ALGOS)}")


def steps_per_interval(algo: str, config: Any) -> int:
    """Training env steps in one of our intervals (= one Brax epoch)."""
    sched = schedule_of(config)
    per_iteration = config.num_envs * (config.unroll_length if algo == "ppo" else 1)
    return sched["iters_per_eval"] * per_iteration


# ---- JAX compatibility for Brax ----------------------------------------------------------

_REPLICATED_AXIS = "_device_put_replicated"  # the axis name JAX's own version used


def device_put_replicated(x: Any, devices: Sequence[Any]) -> Any:
    """`jax.device_put_replicated` as JAX 0.8-0.9 defined it (with pmap merged into
    shard_map, their default): every leaf stacked len(devices) times along a new leading
    axis, that axis split over a one-axis Mesh of `devices`, one slice per device."""
    if not isinstance(devices, Sequence) or not devices:
        raise ValueError("`devices` argument to `device_put_replicated must be a non-empty "
                         "sequence.")
    mesh = jax.sharding.Mesh(np.array(devices), (_REPLICATED_AXIS,))
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(_REPLICATED_AXIS))

    def put(leaf: Any) -> jax.Array:
        leaf = jnp.asarray(leaf)
        return jax.device_put(jnp.broadcast_to(leaf[None], (len(devices),) + leaf.shape),
                              sharding)

    return jax.tree.map(put, x)


def _has_attr(obj: Any, name: str) -> bool:
    with warnings.catch_warnings():  # deprecated-but-present names warn on access
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            getattr(obj, name)
        except AttributeError:
            return False
    return True


def install_jax_compat() -> list[str]:
    """Puts back what Brax 0.14.2's PPO and SAC training code uses from JAX but newer JAX
    removed, only where it is missing; returns the names installed (none on JAX 0.9)."""
    installed = []
    if not _has_attr(jax, "device_put_replicated"):
        jax.device_put_replicated = device_put_replicated
        installed.append("jax.device_put_replicated")
    try:  # brax.training.replay_buffers imports it (its pjit wrapper is not on this path)
        importlib.import_module("jax.experimental.pjit")
    except ImportError:
        module = types.ModuleType("jax.experimental.pjit")
        module.pjit = jax.jit
        sys.modules["jax.experimental.pjit"] = module
        jax.experimental.pjit = module
        installed.append("jax.experimental.pjit")
    return installed


# ---- running each side -------------------------------------------------------------------

class _CacheSavings:
    """Sums the compile seconds JAX's persistent cache saved (a JAX monitoring listener)."""

    EVENT = "/jax/compilation_cache/compile_time_saved_sec"

    def __init__(self) -> None:
        self.seconds = 0.0

    def __call__(self, event: str, duration_secs: float, **_: Any) -> None:
        if event == self.EVENT:
            self.seconds += duration_secs


_SAVED: _CacheSavings | None = None


def cache_savings() -> _CacheSavings:
    """The process's one listener (registered on first use)."""
    global _SAVED
    if _SAVED is None:
        _SAVED = _CacheSavings()
        jax.monitoring.register_event_duration_secs_listener(_SAVED)
    return _SAVED


class _Marks:
    """Host times at which the running program reached the end of each interval."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def mark(self, *_: Any) -> None:
        self.times.append(time.perf_counter())


class OursRunner:
    """Our whole training run compiled once; `run(key)` times one execution of it."""

    def __init__(self, algo: str, config: Any):
        self.algo, self.config = algo, config
        self.marks = _Marks()

        def run(key):
            def report(metrics):  # takes the evaluation's result: runs after the evaluation
                jax.debug.callback(self.marks.mark, metrics["env_steps"], metrics["eval_return"],
                                   metrics["eval_return_deterministic"])

            state, metrics = train(key, config, on_interval=report)
            return state.policy_params, state.obs_stats, metrics["env_steps"]

        saved = cache_savings().seconds
        t0 = time.perf_counter()
        self.compiled = jax.jit(run).lower(jax.random.PRNGKey(0)).compile()
        self.compile_seconds = time.perf_counter() - t0 + cache_savings().seconds - saved

        env, policy, transform = build(config)
        peaks = peaks_of(config.env)

        def evaluate(key, params, stats):
            stochastic, deterministic = evaluate_policy(
                env, transform, params, stats, key, config.num_eval_envs, peaks,
                config.normalize_obs)
            return stochastic.returns, deterministic.returns

        self.evaluate = jax.jit(evaluate)
        jax.block_until_ready(self.evaluate(jax.random.PRNGKey(0), policy.init(jax.random.PRNGKey(0)),
                                            init_stats(env.obs_dim)))  # compile it

    def run(self, key: Any) -> dict[str, Any]:
        K = self.config.num_evals
        self.marks.times = []
        t0 = time.perf_counter()
        params, stats, env_steps = jax.block_until_ready(self.compiled(key))
        run_seconds = time.perf_counter() - t0
        marks = [t - t0 for t in self.marks.times]
        if len(marks) != K:
            raise RuntimeError(f"expected {K} interval callbacks, got {len(marks)}")
        eval_times = []
        for i in range(EVAL_TIMINGS):
            t1 = time.perf_counter()
            jax.block_until_ready(self.evaluate(jax.random.fold_in(key, i), params, stats))
            eval_times.append(time.perf_counter() - t1)
        eval_seconds = statistics.median(eval_times)
        steps = (K - WARMUP_INTERVALS) * steps_per_interval(self.algo, self.config)
        assert int(env_steps[-1] - env_steps[WARMUP_INTERVALS - 1]) == steps
        window = marks[K - 1] - marks[WARMUP_INTERVALS - 1]
        train_seconds = window - (K - WARMUP_INTERVALS) * eval_seconds
        if train_seconds <= 0:
            raise RuntimeError(
                f"our evaluation ({eval_seconds:.3f} s) times {K - WARMUP_INTERVALS} exceeds the "
                f"measured window ({window:.3f} s); run more steps per interval")
        return {"run_seconds": run_seconds, "interval_end_seconds": marks,
                "eval_seconds": eval_seconds, "window_seconds_with_eval": window,
                "train_seconds": train_seconds, "env_steps": steps,
                "env_steps_per_second": steps / train_seconds}


def brax_train_kwargs(algo: str, brax: dict[str, Any]) -> dict[str, Any]:
    """Brax's train() keyword arguments (without environment, seed and progress_fn) from
    the plain settings of `paired_settings`."""
    from flax import linen

    activation = {"relu": linen.relu}[brax["activation"]]
    kwargs = {k: v for k, v in brax.items() if k not in (
        "env_name", "backend", "activation", "policy_hidden_layer_sizes",
        "value_hidden_layer_sizes", "hidden_layer_sizes")}
    if algo == "ppo":
        from brax.training.agents.ppo import networks
        kwargs["network_factory"] = functools.partial(
            networks.make_ppo_networks,
            policy_hidden_layer_sizes=tuple(brax["policy_hidden_layer_sizes"]),
            value_hidden_layer_sizes=tuple(brax["value_hidden_layer_sizes"]),
            activation=activation)
    else:
        from brax.training.agents.sac import networks
        kwargs["network_factory"] = functools.partial(
            networks.make_sac_networks, hidden_layer_sizes=tuple(brax["hidden_layer_sizes"]),
            activation=activation)
    return kwargs


def run_brax(algo: str, brax: dict[str, Any], seed: int) -> dict[str, Any]:
    """One Brax train() call (it compiles inside); seconds parsed from its progress_fn."""
    install_jax_compat()
    from brax import envs

    if algo == "ppo":
        from brax.training.agents.ppo.train import train as brax_train
    else:
        from brax.training.agents.sac.train import train as brax_train
    environment = envs.get_environment(brax["env_name"], backend=brax["backend"])
    records: list[tuple[float, int, float, float]] = []

    def progress(step: int, metrics: dict[str, Any]) -> None:
        records.append((time.perf_counter(), int(step),
                        float(metrics.get("training/sps", math.nan)),
                        float(metrics.get("eval/epoch_eval_time", math.nan))))

    saved = cache_savings().seconds
    t0 = time.perf_counter()
    brax_train(environment=environment, seed=seed, progress_fn=progress,
               **brax_train_kwargs(algo, brax))
    wall = time.perf_counter() - t0
    fields = brax_fields(algo, brax)
    return parse_brax_progress(records, t0, wall, fields["training_intervals"],
                               fields["iterations_per_interval"] * fields["env_steps_per_iteration"],
                               cache_savings().seconds - saved)


def parse_brax_progress(records: Sequence[tuple[float, int, float, float]], t0: float,
                        wall: float, intervals: int, epoch_env_steps: int,
                        cache_saved: float = 0.0) -> dict[str, Any]:
    """records: (host time, env steps, training/sps, eval/epoch_eval_time) per progress_fn
    call: the evaluation at step 0, then one per training epoch of epoch_env_steps training
    steps (the first also holds SAC's prefill, which Brax times apart). cache_saved: the
    compile seconds the persistent cache saved during the call (added back)."""
    steps = [b[1] - a[1] for a, b in zip(records, records[1:])]
    if (len(records) != intervals + 1 or records[0][1] != 0 or steps[0] < epoch_env_steps
            or any(n != epoch_env_steps for n in steps[1:])):
        raise RuntimeError(f"expected Brax to report an evaluation at step 0 and {intervals} "
                           f"epochs of {epoch_env_steps} env steps, got steps "
                           f"{[r[1] for r in records]}")
    epoch_seconds = [epoch_env_steps / r[2] for r in records[1:]]  # Brax's sps: epoch steps / s
    eval_seconds = [r[3] for r in records]
    W = WARMUP_INTERVALS
    train_seconds = sum(epoch_seconds[W:])
    window_steps = (intervals - W) * epoch_env_steps
    steady = (intervals * statistics.median(epoch_seconds[W:])
              + (intervals + 1) * statistics.median(eval_seconds[W:]))
    return {"wall_seconds": wall, "progress_seconds": [r[0] - t0 for r in records],
            "progress_env_steps": [r[1] for r in records], "epoch_env_steps": epoch_env_steps,
            "epoch_seconds": epoch_seconds, "eval_seconds": eval_seconds,
            "window_seconds_with_eval": records[intervals][0] - records[W][0],
            "train_seconds": train_seconds, "env_steps": window_steps,
            "env_steps_per_second": window_steps / train_seconds,
            "compile_seconds": wall - steady + cache_saved,
            "compile_seconds_saved_by_cache": cache_saved}


# ---- the comparison ----------------------------------------------------------------------

def measure(algo: str, env: str, backend: str, scale: PPOScale | SACScale, repeats: int,
            log: Callable[[str], None] = print) -> dict[str, Any]:
    """One row: both sides' settings, per-repeat seconds, steps/s and ratios."""
    config, brax = paired_settings(algo, env, backend, scale)
    ours_view, brax_view = matched_fields(algo, config, brax)
    different = sorted(k for k in ours_view if ours_view[k] != brax_view[k])
    if different:
        raise AssertionError(f"{algo}: the two sides' settings differ in {different}")
    install_jax_compat()
    log(f"[{algo}] compiling ours ...")
    ours = OursRunner(algo, config)
    log(f"[{algo}] ours compiled in {ours.compile_seconds:.1f} s")
    ours_runs, brax_runs = [], []
    for r in range(repeats):
        for side in (("ours", "brax") if r % 2 == 0 else ("brax", "ours")):
            if side == "ours":
                ours_runs.append(ours.run(jax.random.PRNGKey(1000 * r + 1)))
            else:
                brax_runs.append(run_brax(algo, brax, seed=1000 * r + 2))
            last = (ours_runs if side == "ours" else brax_runs)[-1]
            log(f"[{algo}] repeat {r + 1}/{repeats} {side}: "
                f"{last['env_steps_per_second']:,.0f} env steps/s over {last['env_steps']:,d} "
                f"steps ({last['train_seconds']:.2f} s)")
    ratios = [o["env_steps_per_second"] / b["env_steps_per_second"]
              for o, b in zip(ours_runs, brax_runs)]
    steps = ours_runs[0]["env_steps"]
    assert all(run["env_steps"] == steps for run in ours_runs + brax_runs)
    return {
        "algo": algo, "env": env, "backend": backend, "num_envs": config.num_envs,
        "scale": {k: list(v) if isinstance(v, tuple) else v
                  for k, v in dataclasses.asdict(scale).items()},
        "env_steps_per_run": schedule_of(config)["total_env_steps"],
        "env_steps_measured_per_run": steps,
        "ours_compile_seconds": ours.compile_seconds,
        "brax_compile_seconds": statistics.median(b["compile_seconds"] for b in brax_runs),
        "ours_env_steps_per_second": steps / statistics.median(o["train_seconds"] for o in ours_runs),
        "brax_env_steps_per_second": steps / statistics.median(b["train_seconds"] for b in brax_runs),
        "ratio_median": statistics.median(ratios), "ratio_min": min(ratios),
        "ratio_max": max(ratios), "ratios": ratios,
        "ours_runs": ours_runs, "brax_runs": brax_runs,
        "matched": {k: list(v) if isinstance(v, tuple) else v for k, v in ours_view.items()},
        "ours_settings": config_to_dict(config), "brax_settings": brax,
    }


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--algos", nargs="+", choices=ALGOS, default=list(ALGOS))
    parser.add_argument("--env", default=None,
                        help="a brax/* environment (default: brax/inverted_pendulum; "
                             "brax/ant with --gpu-scale)")
    parser.add_argument("--backend", default="mjx", choices=BRAX_BACKENDS)
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--gpu-scale", action="store_true",
                      help="PPO 4096 envs, batch 2048, unroll 5, 32 minibatches, 4 epochs; SAC "
                           "128 envs, batch 512, 8 updates per step (default env brax/ant)")
    size.add_argument("--quick", action="store_true",
                      help="smoke-sized CPU run: toy sizes, 1 repeat")
    parser.add_argument("--num-envs", type=int, default=None, help="both algorithms")
    parser.add_argument("--total-steps", type=int, default=None, help="both algorithms")
    parser.add_argument("--repeats", type=int, default=None, help="default 3 (1 with --quick)")
    parser.add_argument("--num-evals", type=int, default=None,
                        help=f"training intervals K > {WARMUP_INTERVALS}, each followed by an "
                             "evaluation")
    parser.add_argument("--num-eval-envs", type=int, default=None)
    parser.add_argument("--episode-length", type=int, default=None)
    parser.add_argument("--ppo-unroll", type=int, default=None)
    parser.add_argument("--ppo-minibatches", type=int, default=None)
    parser.add_argument("--ppo-batch-size", type=int, default=None,
                        help="Brax's batch_size (trajectories per minibatch); default "
                             "num_envs / minibatches")
    parser.add_argument("--ppo-epochs", type=int, default=None)
    parser.add_argument("--sac-batch-size", type=int, default=None)
    parser.add_argument("--sac-updates-per-step", type=int, default=None)
    parser.add_argument("--sac-learning-starts", type=int, default=None)
    parser.add_argument("--no-compile-cache", dest="compile_cache", action="store_false",
                        help="do not give JAX a fresh persistent compilation cache (it lets "
                             "Brax's repeated train() calls load what its first call compiled)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "throughput.json"))
    args = parser.parse_args(argv)
    if args.compile_cache:  # before anything compiles: JAX sets its cache up once per process
        cache_dir = tempfile.mkdtemp(prefix="throughput_jax_cache_")
        atexit.register(shutil.rmtree, cache_dir, True)
        jax.config.update("jax_compilation_cache_dir", cache_dir)

    scale_name = "gpu" if args.gpu_scale else "quick" if args.quick else "cpu"
    repeats = args.repeats if args.repeats is not None else (1 if args.quick else 3)
    if repeats < 1:
        parser.error(f"--repeats must be >= 1, got {repeats}")
    env = args.env or DEFAULT_ENV[scale_name]
    try:
        brax_env_name(env)
    except ValueError as e:
        parser.error(str(e))
    for name in ("num_envs", "total_steps", "num_evals", "num_eval_envs", "episode_length",
                 "ppo_unroll", "ppo_minibatches", "ppo_batch_size", "ppo_epochs",
                 "sac_batch_size", "sac_updates_per_step"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    if args.sac_learning_starts is not None and args.sac_learning_starts < 0:
        parser.error(f"--sac-learning-starts must be >= 0, got {args.sac_learning_starts}")
    common = dict(num_envs=args.num_envs, total_steps=args.total_steps, num_evals=args.num_evals,
                  num_eval_envs=args.num_eval_envs, episode_length=args.episode_length)
    specific = {
        "ppo": dict(unroll_length=args.ppo_unroll, num_minibatches=args.ppo_minibatches,
                    batch_size=args.ppo_batch_size, num_epochs=args.ppo_epochs),
        "sac": dict(batch_size=args.sac_batch_size, updates_per_step=args.sac_updates_per_step,
                    learning_starts=args.sac_learning_starts),
    }
    scales = {}
    for algo in args.algos:
        scales[algo] = scale_for(algo, scale_name, **common, **specific[algo])
        try:
            paired_settings(algo, env, args.backend, scales[algo])
        except ValueError as e:
            parser.error(f"{algo}: {e}")

    shims = install_jax_compat()
    rows = [measure(algo, env, args.backend, scales[algo], repeats) for algo in args.algos]

    device = jax.devices()[0].device_kind
    brax_version = importlib.metadata.version("brax")
    print(f"{env} ({args.backend}), {scale_name} scale, {repeats} repeat(s), {device}, "
          f"jax {jax.__version__}, brax {brax_version}; training env steps/s of intervals "
          f"{WARMUP_INTERVALS + 1}..K, compile and evaluation excluded")
    print(f"{'algo':<5} {'env':<24} {'envs':>5} {'ours steps/s':>13} {'Brax steps/s':>13} "
          f"{'ours/Brax':>9} {'[min, max]':>14} {'compile s ours/Brax':>20}")
    for row in rows:
        print(f"{row['algo']:<5} {row['env']:<24} {row['num_envs']:>5} "
              f"{row['ours_env_steps_per_second']:>13,.0f} "
              f"{row['brax_env_steps_per_second']:>13,.0f} {row['ratio_median']:>8.2f}x "
              f"{'[%.2f, %.2f]' % (row['ratio_min'], row['ratio_max']):>14} "
              f"{row['ours_compile_seconds']:>10.0f}/{row['brax_compile_seconds']:<9.0f}")
    result = {"env": env, "backend": args.backend, "scale": scale_name, "repeats": repeats,
              "warmup_intervals": WARMUP_INTERVALS, "device": device,
              "jax_version": jax.__version__, "brax_version": brax_version,
              "jax_compat_shims": shims, "compile_cache": args.compile_cache,
              "date": datetime.date.today().isoformat(),
              "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
