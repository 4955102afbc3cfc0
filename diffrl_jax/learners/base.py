"""The learner interface: an algorithm's update as a small named tuple of pure functions over
its own explicit state pytree, in the style of optax's GradientTransformation.

A training loop (`diffrl_jax.training.off_policy`, `.on_policy`) owns the environments, the
replay buffer or rollout, observation statistics, evaluation and the non-finite guard; it
calls the learner for everything that is the algorithm:

    state = learner.init(key)
    state, batch, stats = learner.prepare(state, data, key)   # from collected data
    state, metrics = learner.update(state, batch, key)        # one gradient update
    params = learner.acting_params(state)                     # what the loop acts with

`data` is what the loop collected, with observations already normalised: a sampled replay
minibatch of `ChainTransition`s [B] (off-policy loop) or a rollout's `ChainTransition`s
[T, N] (on-policy loop). `batch` is a pytree; the on-policy loop shuffles and splits it
along its leading axis into minibatches, each passed to `update`. `stats` are the batch's
diagnostics (reported per interval, averaged). `update` must be a pure function of its
arguments; the loop keeps the old state where the new state or the metrics are not all
finite (`diffrl_jax.training.guards`), so an update need not check that itself.
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from diffrl_jax.transforms import AugmentedState
from diffrl_jax.types import Array, Params, PRNGKey

Metrics = dict[str, Array]


class Learner(NamedTuple):
    """init(key) -> state; prepare(state, data, key) -> (state, batch, stats);
    update(state, batch, key) -> (state, metrics); acting_params(state) -> policy params."""

    init: Callable[[PRNGKey], Any]
    prepare: Callable[[Any, Any, PRNGKey], tuple[Any, Any, Metrics]]
    update: Callable[[Any, Any, PRNGKey], tuple[Any, Metrics]]
    acting_params: Callable[[Any], Params]


def clipped_adam(learning_rate: Array | float, max_grad_norm: Array | float,
                 decay_steps: int | None = None) -> optax.GradientTransformation:
    """Adam after clipping the gradient's global norm to max_grad_norm; with decay_steps the
    learning rate decays linearly from learning_rate to 0 over that many updates (then stays
    at 0), as in PPO's MuJoCo and Atari settings."""
    rate: float | Array | optax.Schedule = learning_rate
    if decay_steps is not None:
        rate = optax.linear_schedule(learning_rate, 0.0, decay_steps)
    return optax.chain(optax.clip_by_global_norm(max_grad_norm), optax.adam(rate))


def optimizer_step(optimizer: optax.GradientTransformation, params: Params, opt_state: Any,
                   grads: Params) -> tuple[Params, Any]:
    """One optimiser step: (new params, new optimiser state)."""
    updates, opt_state = optimizer.update(grads, opt_state)
    return optax.apply_updates(params, updates), opt_state


def gradient_step(loss_fn: Callable[..., tuple[Array, Any]],
                  optimizer: optax.GradientTransformation, params: Params, opt_state: Any,
                  *args: Any) -> tuple[Params, Any, Array, Any]:
    """Gradient of loss_fn(params, *args) -> (loss, aux) in params, clipped and applied by
    the optimiser: (new params, new optimiser state, loss, aux)."""
    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, *args)
    params, opt_state = optimizer_step(optimizer, params, opt_state, grads)
    return params, opt_state, loss, aux


class LearnerSetup(NamedTuple):
    """What a loop hands a learner factory: the run's config (the loop's config class, which
    holds the algorithm's hyperparameters), the environment's dimensions, the policy and the
    DA-MDP transform built for it, and the batch sharding: shard(tree) constrains a tree whose
    leading axis is the batch to the mesh's data axis (identity without a mesh), data_shards
    is that axis' size (1 without a mesh); total_updates: how many times the run calls
    `update` (for learning-rate schedules)."""

    config: Any
    obs_dim: int
    action_dim: int
    policy: Any
    transform: Any
    shard: Callable[[Any], Any]
    data_shards: int
    total_updates: int

    def example_state(self) -> Any:
        """A batch of one all-zero augmented state: what network `init`s are traced with."""
        return AugmentedState(obs=jnp.zeros((1, self.obs_dim)),
                              latent=jnp.zeros((1, self.action_dim)),
                              step=jnp.zeros((1,), jnp.int32))

    def example_critic_input(self) -> Any:
        """The critic's input at `example_state` with an all-zero action."""
        return self.transform.critic_input(self.example_state(),
                                           jnp.zeros((1, self.action_dim)))


def log_of_initial(value: Array | float) -> Array:
    """log of a multiplier's initial value, finite even for 0 (a fixed multiplier of 0 is
    then read from the config, not from its log)."""
    return jnp.log(jnp.maximum(jnp.asarray(value, jnp.float32), 1e-30))


def trace_decay(step: Array, num_steps: int, gae_lambda: Array | float,
                discount_mode: str) -> Array:
    """The per-augmented-step lambda of a rollout's [T, N, K] steps (`step`: each one's k):
    in "env" mode lambda on last denoising steps only (1 inside a chain), in "diffusion" mode
    on every step; with K = 1 both are the textbook lambda."""
    if discount_mode == "env":
        is_last = (step == num_steps - 1).astype(jnp.float32)
        return is_last * gae_lambda + (1.0 - is_last)
    return jnp.broadcast_to(jnp.asarray(gae_lambda, jnp.float32), step.shape)


def time_major(x: Array) -> Array:
    """[T, N, K, ...] -> [T * K, N, ...]: each env's augmented steps in the order (t, k), for
    backward scans over a rollout."""
    x = jnp.swapaxes(x, 1, 2)
    return x.reshape((-1,) + x.shape[2:])
