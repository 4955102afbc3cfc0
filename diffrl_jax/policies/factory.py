"""Choosing a policy by kind: what the training loops build from their config.

A policy kind is a factory (obs_dim, action_dim, config) -> Policy, where config is the run's
config (the built-in kinds read its `diffusion` or `gaussian` field). `register_policy_kind`
adds one beside the built-in "diffusion" and "gaussian"; a run picks it with
`policy_kind=<name>` in its config. The algorithms never ask which kind they train.
"""

from collections.abc import Callable
from typing import Any

from diffrl_jax.policies.base import Policy
from diffrl_jax.policies.diffusion import DiffusionPolicyConfig, make_diffusion_policy
from diffrl_jax.policies.gaussian import GaussianPolicyConfig, make_gaussian_policy

PolicyFactory = Callable[[int, int, Any], Policy]
"""factory(obs_dim, action_dim, run config) -> Policy."""

_FACTORIES: dict[str, PolicyFactory] = {
    "diffusion": lambda obs_dim, action_dim, config: make_diffusion_policy(
        obs_dim, action_dim, config.diffusion),
    "gaussian": lambda obs_dim, action_dim, config: make_gaussian_policy(
        obs_dim, action_dim, config.gaussian),
}
BUILTIN_POLICY_KINDS = ("diffusion", "gaussian")
POLICY_KINDS = BUILTIN_POLICY_KINDS  # the built-in kinds; `policy_kinds()` lists all


def policy_kinds() -> tuple[str, ...]:
    """The names of every policy kind, built-in and registered."""
    return tuple(_FACTORIES)


def register_policy_kind(name: str, factory: PolicyFactory, *, replace: bool = False) -> None:
    """Makes `policy_kind=name` build factory(obs_dim, action_dim, config). ValueError for an
    empty or built-in name, or a name already registered unless replace."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"a policy kind's name must be a non-empty string, got {name!r}")
    if name in BUILTIN_POLICY_KINDS:
        raise ValueError(f"policy kind {name!r} is built in and cannot be replaced")
    if name in _FACTORIES and not replace:
        raise ValueError(f"policy kind {name!r} is already registered; pass replace=True")
    if not callable(factory):
        raise ValueError(f"the factory of policy kind {name!r} must be callable, got {factory!r}")
    _FACTORIES[name] = factory


def build_policy(kind: str, obs_dim: int, action_dim: int, config: Any) -> Policy:
    """The policy of kind `kind` for a run's config; ValueError naming the known kinds."""
    if kind not in _FACTORIES:
        raise ValueError(f"unknown policy kind {kind!r}; allowed: {list(_FACTORIES)}")
    policy = _FACTORIES[kind](obs_dim, action_dim, config)
    if not isinstance(policy, Policy):
        raise ValueError(f"policy kind {kind!r}'s factory returned {type(policy).__name__}, "
                         "not a diffrl_jax.policies.Policy")
    return policy


def make_policy(
    kind: str,
    obs_dim: int,
    action_dim: int,
    diffusion: DiffusionPolicyConfig = DiffusionPolicyConfig(),
    gaussian: GaussianPolicyConfig = GaussianPolicyConfig(),
) -> Policy:
    """The diffusion chain (kind "diffusion") or the tanh-Gaussian ("gaussian")."""
    if kind == "diffusion":
        return make_diffusion_policy(obs_dim, action_dim, diffusion)
    if kind == "gaussian":
        return make_gaussian_policy(obs_dim, action_dim, gaussian)
    raise ValueError(f"unknown policy kind {kind!r}; allowed: {list(POLICY_KINDS)}")
