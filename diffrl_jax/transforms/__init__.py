"""The shared diffusion-loss transform and the DA-MDP bookkeeping it owns."""

from diffrl_jax.transforms.damdp import (
    DISCOUNT_MODES,
    AugmentedState,
    AugmentedTransition,
    ChainTransition,
    augment,
    expand,
)
from diffrl_jax.transforms.diffusion_loss import (
    ESTIMATORS,
    DiffusionLoss,
    PolicyTerms,
    evaluated_loss,
    make_diffusion_loss,
    sampled_loss,
)

__all__ = [
    "DISCOUNT_MODES",
    "ESTIMATORS",
    "AugmentedState",
    "AugmentedTransition",
    "ChainTransition",
    "DiffusionLoss",
    "PolicyTerms",
    "augment",
    "evaluated_loss",
    "expand",
    "make_diffusion_loss",
    "sampled_loss",
]
