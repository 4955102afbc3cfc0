"""Learners: each algorithm's update as a named tuple of pure functions over its own state
(`Learner`: init, prepare, update, acting_params), run by the training loops.

SAC (critic + actor + temperature), WPO (SAC's critic and temperature, the Wasserstein actor
step with its KL multiplier) PPO (GAE batch preparation, clipped minibatch steps) and REPPO (TD(lambda) soft Q
targets, HL-Gauss critic, KL-clipped pathwise actor).
"""

from diffrl_jax.learners.base import (
    Learner,
    LearnerSetup,
    clipped_adam,
    gradient_step,
    optimizer_step,
)
from diffrl_jax.learners.ppo import PPOState, make_ppo_learner, rollout_batch
from diffrl_jax.learners.reppo import REPPOBatch, REPPOState, make_reppo_learner
from diffrl_jax.learners.sac import SACState, entropy_chain_count, make_sac_learner
from diffrl_jax.learners.wpo import WPOState, make_wpo_learner

__all__ = [
    "Learner",
    "LearnerSetup",
    "PPOState",
    "REPPOBatch",
    "REPPOState",
    "SACState",
    "WPOState",
    "clipped_adam",
    "entropy_chain_count",
    "gradient_step",
    "make_ppo_learner",
    "make_reppo_learner",
    "make_sac_learner",
    "make_wpo_learner",
    "optimizer_step",
    "rollout_batch",
]
