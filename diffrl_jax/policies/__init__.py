"""Policies behind one functional interface: the tanh-Gaussian and the diffusion chain."""

from diffrl_jax.policies.base import ChainSample, Policy, StepEval, scan_chain
from diffrl_jax.policies.diffusion import (
    DiffusionPolicyConfig,
    make_diffusion_policy,
    prior_entropy_per_dim,
)
from diffrl_jax.policies.factory import (
    POLICY_KINDS,
    build_policy,
    make_policy,
    policy_kinds,
    register_policy_kind,
)
from diffrl_jax.policies.gaussian import GaussianPolicyConfig, make_gaussian_policy
from diffrl_jax.policies.schedules import SCHEDULES, step_schedule

__all__ = [
    "POLICY_KINDS",
    "SCHEDULES",
    "ChainSample",
    "DiffusionPolicyConfig",
    "GaussianPolicyConfig",
    "Policy",
    "StepEval",
    "build_policy",
    "make_diffusion_policy",
    "make_gaussian_policy",
    "make_policy",
    "policy_kinds",
    "prior_entropy_per_dim",
    "register_policy_kind",
    "scan_chain",
    "step_schedule",
]
