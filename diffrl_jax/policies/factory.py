"""Choosing a policy by kind: what trainers build from their config."""

from diffrl_jax.policies.base import Policy
from diffrl_jax.policies.diffusion import DiffusionPolicyConfig, make_diffusion_policy
from diffrl_jax.policies.gaussian import GaussianPolicyConfig, make_gaussian_policy

POLICY_KINDS = ("diffusion", "gaussian")


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
