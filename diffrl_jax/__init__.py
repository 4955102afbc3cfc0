"""diffrl_jax: diffusion-policy maximum-entropy RL in JAX.

The public surface of the foundation: policies behind one functional interface and the one
shared diffusion-loss transform that every Diff algorithm composes.
"""

from diffrl_jax.policies import (
    ChainSample,
    DiffusionPolicyConfig,
    GaussianPolicyConfig,
    Policy,
    StepEval,
    make_diffusion_policy,
    make_gaussian_policy,
)
from diffrl_jax.transforms import (
    AugmentedState,
    AugmentedTransition,
    ChainTransition,
    DiffusionLoss,
    PolicyTerms,
    evaluated_loss,
    make_diffusion_loss,
    sampled_loss,
)
from diffrl_jax.validation import ConfigError

__version__ = "0.1.0"

__all__ = [
    "AugmentedState",
    "AugmentedTransition",
    "ChainSample",
    "ChainTransition",
    "ConfigError",
    "DiffusionLoss",
    "DiffusionPolicyConfig",
    "GaussianPolicyConfig",
    "Policy",
    "PolicyTerms",
    "StepEval",
    "evaluated_loss",
    "make_diffusion_loss",
    "make_diffusion_policy",
    "make_gaussian_policy",
    "sampled_loss",
]
