"""Trainers: each run is one pure function train(key, config) -> (state, metrics)."""

from diffrl_jax.training.off_policy import (
    OFF_POLICY_ALGOS,
    OffPolicyConfig,
    OffPolicyState,
    schedule_of,
    train,
)

__all__ = ["OFF_POLICY_ALGOS", "OffPolicyConfig", "OffPolicyState", "schedule_of", "train"]
