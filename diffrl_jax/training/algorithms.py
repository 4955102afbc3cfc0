"""The algorithm table: every algorithm is one row (name -> loop, learner, policy kind,
Gaussian counterpart), read by everything that used to check algorithm names.

Adding an algorithm = a learner module (`diffrl_jax.learners`), one `register_algorithm`
call (or a row here) and its presets. A Diff algorithm is its Gaussian counterpart's learner
run with the diffusion policy on the DA-MDP: the learner never asks which policy it trains.
"""

from collections.abc import Callable
from typing import Any, NamedTuple

from diffrl_jax.envs import Environment, make_env
from diffrl_jax.learners import (
    Learner,
    LearnerSetup,
    make_ppo_learner,
    make_reppo_learner,
    make_sac_learner,
    make_wpo_learner,
)
from diffrl_jax.policies import Policy, build_policy, policy_kinds
from diffrl_jax.transforms import make_diffusion_loss
from diffrl_jax.transforms.diffusion_loss import DiffusionLoss

LOOPS = ("off_policy", "on_policy")


class Algorithm(NamedTuple):
    """loop: "off_policy" (replay, one environment step then updates_per_step updates) or
    "on_policy" (rollouts, epochs x minibatches); make_learner(setup) -> Learner;
    policy_kind: the policy a run uses unless its config sets policy_kind; gaussian: the
    algorithm with the same learner and the Gaussian policy (itself for a Gaussian one), the
    pair a reproduction compares."""

    loop: str
    make_learner: Callable[[LearnerSetup], Learner]
    policy_kind: str
    gaussian: str


ALGORITHMS: dict[str, Algorithm] = {
    "sac": Algorithm("off_policy", make_sac_learner, "gaussian", "sac"),
    "diffsac": Algorithm("off_policy", make_sac_learner, "diffusion", "sac"),
    "wpo": Algorithm("off_policy", make_wpo_learner, "gaussian", "wpo"),
    "diffwpo": Algorithm("off_policy", make_wpo_learner, "diffusion", "wpo"),
    "ppo": Algorithm("on_policy", make_ppo_learner, "gaussian", "ppo"),
    "diffppo": Algorithm("on_policy", make_ppo_learner, "diffusion", "ppo"),
    "reppo": Algorithm("on_policy", make_reppo_learner, "gaussian", "reppo"),
    "diffreppo": Algorithm("on_policy", make_reppo_learner, "diffusion", "reppo"),
}
BUILTIN_ALGORITHMS = tuple(ALGORITHMS)


def algorithm_names(loop: str | None = None) -> tuple[str, ...]:
    """Every algorithm's name (of one loop if given), built-in and registered."""
    return tuple(name for name, row in ALGORITHMS.items() if loop is None or row.loop == loop)


def algorithm(name: str) -> Algorithm:
    """The row of `name`; ValueError naming the known algorithms otherwise."""
    if name not in ALGORITHMS:
        raise ValueError(f"unknown algorithm {name!r}; allowed: {list(ALGORITHMS)}")
    return ALGORITHMS[name]


def register_algorithm(name: str, row: Algorithm, *, replace: bool = False) -> None:
    """Adds an algorithm row. ValueError for a built-in or taken name (unless replace), an
    unknown loop or policy kind, or a Gaussian counterpart that is not in the table."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"an algorithm's name must be a non-empty string, got {name!r}")
    if name in BUILTIN_ALGORITHMS:
        raise ValueError(f"algorithm {name!r} is built in and cannot be replaced")
    if name in ALGORITHMS and not replace:
        raise ValueError(f"algorithm {name!r} is already registered; pass replace=True")
    if row.loop not in LOOPS:
        raise ValueError(f"algorithm {name!r}: unknown loop {row.loop!r}; allowed: {list(LOOPS)}")
    if row.policy_kind not in policy_kinds():
        raise ValueError(f"algorithm {name!r}: unknown policy kind {row.policy_kind!r}; "
                         f"allowed: {list(policy_kinds())}")
    if row.gaussian != name and row.gaussian not in ALGORITHMS:
        raise ValueError(f"algorithm {name!r}: its Gaussian counterpart {row.gaussian!r} is "
                         "not in the algorithm table")
    if not callable(row.make_learner):
        raise ValueError(f"algorithm {name!r}: make_learner must be callable")
    ALGORITHMS[name] = row


def policy_kind_of(config: Any) -> str:
    """The policy kind a run builds: config.policy_kind, else its algorithm's."""
    return config.policy_kind or algorithm(config.algo).policy_kind


def is_diffusion(config: Any) -> bool:
    """Whether the run's policy is the diffusion chain."""
    return policy_kind_of(config) == "diffusion"


def diffusion_algorithms() -> tuple[str, ...]:
    """The algorithms whose own policy kind is the diffusion chain."""
    return tuple(name for name, row in ALGORITHMS.items() if row.policy_kind == "diffusion")


def gaussian_pairs() -> tuple[tuple[str, str], ...]:
    """(diffusion algorithm, its Gaussian counterpart) for every row that has one."""
    return tuple((name, row.gaussian) for name, row in ALGORITHMS.items()
                 if row.policy_kind == "diffusion" and row.gaussian != name)


def build(config: Any) -> tuple[Environment, Policy, DiffusionLoss]:
    """The static pieces of a run: its environment, its policy (`policy_kind_of(config)`)
    and the DA-MDP transform of that policy (config's discount mode and, where it has one,
    estimator)."""
    env = make_env(config.env, backend=config.backend, episode_length=config.episode_length)
    policy = build_policy(policy_kind_of(config), env.obs_dim, env.action_dim, config)
    transform = make_diffusion_loss(policy, config.discount_mode,
                                    getattr(config, "estimator", "per_step"))
    return env, policy, transform


def make_learner(config: Any, env: Environment, policy: Policy, transform: DiffusionLoss,
                 shard: Callable[[Any], Any], data_shards: int, total_updates: int) -> Learner:
    """The learner of config.algo for a loop (see `LearnerSetup` for the arguments)."""
    return algorithm(config.algo).make_learner(LearnerSetup(
        config=config, obs_dim=env.obs_dim, action_dim=env.action_dim, policy=policy,
        transform=transform, shard=shard, data_shards=data_shards, total_updates=total_updates,
    ))
