"""Per-algorithm, per-environment default settings: what `experiments/train.py` uses when a
flag is not given. Each entry overrides fields of the algorithm's config dataclass."""

import dataclasses
from typing import Any

from diffrl_jax.policies import DiffusionPolicyConfig, GaussianPolicyConfig

# A smaller control network than the paper's 4 x 256, and a shorter chain time (dt0 0.06
# instead of 0.125): the last denoising step's noise std sqrt(2 eta_{K-1}) is then ~0.36
# instead of ~0.52 in latent units, which the narrow toy peaks and the pendulum need.
SMALL_DIFFUSION = DiffusionPolicyConfig(hidden_sizes=(128, 128, 128), time_hidden=32, dt0=0.06)

# DiffSAC's critic has to pass values through K bootstrapped augmented steps per environment
# step, so it gets more updates per step and a faster target (tau 0.05); a layer-normalised
# critic and gradient clipping at 0.5 (the authors' value) keep it from diverging when the
# latents' scale drifts (without them, runs on MJX inverted_pendulum diverged after ~25k steps).
_DIFFSAC_STABLE = dict(tau=0.05, max_grad_norm=0.5, critic_layer_norm=True,
                       target_entropy_multiplier=4.0, diffusion=SMALL_DIFFUSION)

# WPO: the natural-gradient rescaling, a KL target that follows the policy with rate 0.05
# (with 0.005 the KL bound of 0.02 held the policy back) and SAC's learned temperature; the
# paper's alpha = 0 (learn_alpha=False, init_alpha=0) failed on inverted_pendulum with our
# tanh-squashed Gaussian (docs/DESIGN.md says how). DiffWPO: the learned temperature of
# DiffSAC and no preconditioner (spec section 5).
_WPO = dict(init_alpha=0.01, natural_gradient=True, policy_tau=0.05)
# DiffWPO's target entropy multiplier is the authors' 8 (spec section 7): with DiffSAC's 4
# its stochastic policy on inverted_pendulum fell back to returns < 100 after reaching 1000
# (the deterministic one stayed at 1000): H_hat is only a lower bound of the entropy.
_DIFFWPO = dict(_DIFFSAC_STABLE, natural_gradient=False, policy_tau=0.05, num_action_samples=1,
                target_entropy_multiplier=8.0)

# DiffPPO learns from its own rollouts only; a small control network (2 x 64) suffices on the
# CPU-scale tasks and keeps the K-fold larger update batches cheap.
PPO_DIFFUSION = DiffusionPolicyConfig(hidden_sizes=(64, 64), time_hidden=16, dt0=0.06)

# On toy/bandit the entropy coefficient has to be large (c = 0.1) for the soft reward to hold
# both modes against the rich-get-richer dynamics of on-policy learning (c <= 0.07 collapsed in
# every seed tried). At that c the Boltzmann target exp(r / c) must be a proper density, so
# the entropy is measured in action space (squash log-det; in pre-squash x space spreading mass
# towards |x| -> infinity, where tanh saturates, gains entropy for free) and the prior std is 1
# (with 3 most prior mass starts saturated at a = +-1).
PPO_BANDIT_DIFFUSION = DiffusionPolicyConfig(hidden_sizes=(64, 64), time_hidden=16, dt0=0.06,
                                             prior_std=1.0, squash_log_det=True)

_PPO_PENDULUM = dict(
    total_env_steps=100_000, num_envs=32, unroll_length=16, num_epochs=4, num_minibatches=4,
    num_evals=8, actor_lr=1e-3, critic_lr=1e-3, value_hidden=(64, 64), anneal_lr=True,
)
_PPO_BANDIT = dict(
    total_env_steps=98_304, num_envs=256, unroll_length=1, num_epochs=4, num_minibatches=4,
    num_evals=4, num_eval_envs=256, discount=0.0, normalize_obs=False, critic_lr=1e-3,
    entropy_coef=0.1, value_hidden=(64, 64),
)

# (algo, env) -> overrides; (algo, "*") is the algorithm's default for any environment.
PRESETS: dict[tuple[str, str], dict[str, Any]] = {
    ("sac", "*"): dict(total_env_steps=100_000),
    ("diffsac", "*"): dict(total_env_steps=100_000, **_DIFFSAC_STABLE),
    ("sac", "brax/inverted_pendulum"): dict(
        total_env_steps=30_000, num_envs=16, learning_starts=2_000, batch_size=256,
        updates_per_step=8, num_evals=6, actor_lr=1e-3, critic_lr=1e-3, alpha_lr=1e-3,
        gaussian=GaussianPolicyConfig(hidden_sizes=(64, 64)), critic_hidden=(128, 128),
    ),
    ("diffsac", "brax/inverted_pendulum"): dict(
        total_env_steps=40_000, num_envs=16, learning_starts=2_000, batch_size=256,
        updates_per_step=16, num_evals=6, actor_lr=1e-3, critic_lr=1e-3, alpha_lr=1e-3,
        critic_hidden=(128, 128), **_DIFFSAC_STABLE,
    ),
    ("sac", "toy/bandit"): dict(
        total_env_steps=6_000, num_envs=16, learning_starts=500, batch_size=256,
        updates_per_step=4, num_evals=4, num_eval_envs=256, discount=0.0, normalize_obs=False,
        actor_lr=1e-3, critic_lr=1e-3, alpha_lr=1e-3, init_alpha=0.05,
        gaussian=GaussianPolicyConfig(hidden_sizes=(64, 64)), critic_hidden=(128, 128),
    ),
    ("diffsac", "toy/bandit"): dict(
        total_env_steps=24_000, num_envs=16, learning_starts=500, batch_size=256,
        updates_per_step=8, num_evals=4, num_eval_envs=256, discount=0.0, normalize_obs=False,
        actor_lr=1e-3, critic_lr=1e-3, alpha_lr=1e-3, init_alpha=0.05,
        critic_hidden=(128, 128), **_DIFFSAC_STABLE,
    ),
    ("wpo", "*"): dict(total_env_steps=100_000, **_WPO),
    ("diffwpo", "*"): dict(total_env_steps=100_000, **_DIFFWPO),
    ("wpo", "brax/inverted_pendulum"): dict(
        total_env_steps=32_000, num_envs=16, learning_starts=2_000, batch_size=256,
        updates_per_step=8, num_evals=8, actor_lr=1e-3, critic_lr=1e-3,
        gaussian=GaussianPolicyConfig(hidden_sizes=(64, 64)), critic_hidden=(128, 128), **_WPO,
    ),
    ("diffwpo", "brax/inverted_pendulum"): dict(
        total_env_steps=28_000, num_envs=16, learning_starts=2_000, batch_size=256,
        updates_per_step=8, num_evals=7, actor_lr=1e-3, critic_lr=1e-3, alpha_lr=1e-3,
        critic_hidden=(128, 128), **_DIFFWPO,
    ),
    ("wpo", "toy/bandit"): dict(
        total_env_steps=8_000, num_envs=16, learning_starts=500, batch_size=256,
        updates_per_step=4, num_evals=4, num_eval_envs=256, discount=0.0, normalize_obs=False,
        actor_lr=3e-3, critic_lr=1e-3, gaussian=GaussianPolicyConfig(hidden_sizes=(64, 64)),
        critic_hidden=(128, 128), **_WPO,
    ),
    # Prefilling 2,000 random-policy steps lets the critic see both peaks before the actor
    # moves: with 500, 1 of 6 seeds lost a mode (7 % of actions); with 2,000 the smallest mode
    # held 39 % in 6 of 6. Multipliers 5-8 (less entropy) let modes drift apart (to 5-21 %).
    ("diffwpo", "toy/bandit"): dict(
        total_env_steps=12_000, num_envs=16, learning_starts=2_000, batch_size=256,
        updates_per_step=8, num_evals=4, num_eval_envs=256, discount=0.0, normalize_obs=False,
        actor_lr=1e-3, critic_lr=1e-3, alpha_lr=1e-3, init_alpha=0.05,
        critic_hidden=(128, 128), **dict(_DIFFWPO, target_entropy_multiplier=4.0),
    ),
    ("ppo", "*"): dict(total_env_steps=1_000_000, entropy_coef=0.0),
    ("diffppo", "*"): dict(total_env_steps=1_000_000, diffusion=PPO_DIFFUSION),
    ("ppo", "brax/inverted_pendulum"): dict(
        entropy_coef=0.0, gaussian=GaussianPolicyConfig(hidden_sizes=(64, 64)), **_PPO_PENDULUM,
    ),
    ("diffppo", "brax/inverted_pendulum"): dict(
        entropy_coef=2e-4, diffusion=PPO_DIFFUSION, **_PPO_PENDULUM,
    ),
    # The Gaussian cannot hold two modes: with c = 0.05 and lr 1e-3 it settled on one peak in
    # all 6 seeds tried; at DiffPPO's c = 0.1, or with lr 3e-4, some seeds instead keep one wide
    # mode straddling both peaks (return ~0.3, deterministic action ~0), which per-peak action
    # counts cannot tell from two modes.
    ("ppo", "toy/bandit"): dict(
        actor_lr=1e-3, gaussian=GaussianPolicyConfig(hidden_sizes=(64, 64)),
        **dict(_PPO_BANDIT, entropy_coef=0.05),
    ),
    ("diffppo", "toy/bandit"): dict(
        actor_lr=3e-3, diffusion=PPO_BANDIT_DIFFUSION, **_PPO_BANDIT,
    ),
}


def preset_overrides(algo: str, env: str) -> dict[str, Any]:
    """The overrides for (algo, env), falling back to the algorithm's default."""
    if (algo, env) in PRESETS:
        return dict(PRESETS[(algo, env)])
    return dict(PRESETS.get((algo, "*"), {}))


def apply_overrides(config: Any, overrides: dict[str, Any]) -> Any:
    """config.replace(**overrides) with a clear error for unknown fields."""
    names = {f.name for f in dataclasses.fields(config)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise ValueError(f"unknown config fields {unknown}; allowed: {sorted(names)}")
    return config.replace(**overrides)
