"""Training loops: each run is one pure function train(key, config) -> (state, metrics).

The algorithm table (`training.algorithms`) says which loop and learner an algorithm uses;
`trainer_for(algo)` gives the config class, schedule and train function of its loop, so
callers (the experiment command, sweeps) treat every algorithm alike.
"""

from diffrl_jax.training.algorithms import (
    ALGORITHMS,
    Algorithm,
    algorithm,
    algorithm_names,
    build,
    diffusion_algorithms,
    gaussian_pairs,
    is_diffusion,
    policy_kind_of,
    register_algorithm,
)
from diffrl_jax.training.config import LoopConfig
from diffrl_jax.training.mesh_programs import MeshProgram, mesh_program, mesh_train
from diffrl_jax.training.off_policy import OffPolicyConfig, OffPolicyState
from diffrl_jax.training.on_policy import OnPolicyConfig, OnPolicyState
from diffrl_jax.training.program import TrainProgram, run_intervals, run_program
from diffrl_jax.training.runs import (
    ALGOS,
    LOOP_TRAINERS,
    OFF_POLICY_ALGOS,
    ON_POLICY_ALGOS,
    Trainer,
    algos,
    make_program,
    schedule_of,
    train,
    trainer_for,
)

__all__ = [
    "ALGORITHMS",
    "ALGOS",
    "LOOP_TRAINERS",
    "OFF_POLICY_ALGOS",
    "ON_POLICY_ALGOS",
    "Algorithm",
    "LoopConfig",
    "MeshProgram",
    "OffPolicyConfig",
    "OffPolicyState",
    "OnPolicyConfig",
    "OnPolicyState",
    "TrainProgram",
    "Trainer",
    "algorithm",
    "algorithm_names",
    "algos",
    "build",
    "diffusion_algorithms",
    "gaussian_pairs",
    "is_diffusion",
    "make_program",
    "mesh_program",
    "mesh_train",
    "policy_kind_of",
    "register_algorithm",
    "run_intervals",
    "run_program",
    "schedule_of",
    "train",
    "trainer_for",
]
