"""The fields both training loops share, and their validation (one copy for both loops).

Static fields fix shapes and code paths; numeric hyperparameters are pytree leaves, so they
may be traced and vmapped (a grid of values x seeds is one compile). Each loop's config
(`OffPolicyConfig`, `OnPolicyConfig`) adds its own fields and checks.
"""

import math
from typing import Any

from flax import struct

from diffrl_jax.policies import DiffusionPolicyConfig, GaussianPolicyConfig
from diffrl_jax.transforms.damdp import DISCOUNT_MODES
from diffrl_jax.validation import (
    ConfigError,
    require_bool,
    require_choice,
    require_in_range,
    require_int_at_least,
    require_positive,
)

static = lambda default: struct.field(pytree_node=False, default=default)


def is_plain_number(value: Any) -> bool:
    """A Python int or float (not a bool, not a traced or batched array: those are checked
    by whoever builds them)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@struct.dataclass
class LoopConfig:
    """algo: a name of the algorithm table (`diffrl_jax.training.algorithm_names()`);
    policy_kind: the policy class ("diffusion", "gaussian" or a registered kind); None: the
    algorithm's own (diffusion for the Diff algorithms). discount is gamma per environment
    step in discount_mode "env", the per-augmented-step factor in "diffusion".
    target_entropy_multiplier m gives the target H(prior) - m * A (spec section 5; -m * A for
    the Gaussian). train_truncation_prob p: during training (not evaluation) each episode is
    also truncated with probability p per step, bootstrapped like the time limit (see
    `training.collection.step_envs`); 0: only the time limit."""

    algo: str = static("diffsac")
    env: str = static("brax/inverted_pendulum")
    backend: str = static("mjx")
    policy_kind: str | None = static(None)
    total_env_steps: int = static(50_000)
    num_envs: int = static(16)
    num_evals: int = static(10)
    num_eval_envs: int = static(8)
    episode_length: int | None = static(None)
    normalize_obs: bool = static(True)
    diffusion: DiffusionPolicyConfig = static(DiffusionPolicyConfig())
    gaussian: GaussianPolicyConfig = static(GaussianPolicyConfig())
    discount_mode: str = static("env")
    # traced hyperparameters
    actor_lr: float = 3e-4
    critic_lr: float = 3e-4
    discount: float = 0.99
    target_entropy_multiplier: float = 1.0
    reward_scale: float = 1.0
    max_grad_norm: float = 1e6
    train_truncation_prob: float = 0.0

    def validate_shared(self, algos: tuple[str, ...], policy_kinds: tuple[str, ...]) -> str:
        """Checks the shared fields (algo among `algos`, policy_kind among `policy_kinds`);
        raises ConfigError naming the field. Returns the owner name used in messages."""
        o = type(self).__name__
        require_choice(o, "algo", self.algo, algos)
        if self.policy_kind is not None:
            require_choice(o, "policy_kind", self.policy_kind, policy_kinds)
        for name in ("total_env_steps", "num_envs", "num_evals", "num_eval_envs"):
            require_int_at_least(o, name, getattr(self, name), 1)
        require_choice(o, "discount_mode", self.discount_mode, DISCOUNT_MODES)
        require_bool(o, "normalize_obs", self.normalize_obs)
        if is_plain_number(self.discount):
            require_in_range(o, "discount", self.discount, 0.0, 1.0, closed=True)
        p = self.train_truncation_prob
        if is_plain_number(p) and not 0.0 <= p < 1.0:
            raise ConfigError(f"{o}.train_truncation_prob must lie in [0, 1), got {p!r}")
        if is_plain_number(self.reward_scale) and not math.isfinite(self.reward_scale):
            raise ConfigError(f"{o}.reward_scale must be a finite number, got {self.reward_scale!r}")
        self.require_positive_numbers("actor_lr", "critic_lr", "max_grad_norm")
        return o

    def require_positive_numbers(self, *names: str) -> None:
        """ConfigError unless each named field is a positive number (traced values pass)."""
        for name in names:
            value = getattr(self, name)
            if is_plain_number(value):
                require_positive(type(self).__name__, name, value)
