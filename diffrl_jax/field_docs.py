"""One line per config field, for `--list-fields` (`config_overrides.describe_fields`).

Kept in one module beside the four config dataclasses (OffPolicyConfig, OnPolicyConfig,
DiffusionPolicyConfig, GaussianPolicyConfig), whose docstrings say more where a field needs
it; tests/test_config_overrides.py checks that every field of each has a line and that no
line names a field that does not exist. Fields that two configs share (algo, env, actor_lr,
...) are described once in _COMMON.
"""

from typing import Any

__all__ = ["field_doc", "field_docs"]

_COMMON = {
    "algo": "the algorithm (chooses the preset; give it as --algo)",
    "env": "the environment (chooses the preset; give it as --env)",
    "backend": "brax's physics pipeline (brax/ envs only; give it as --backend)",
    "policy_kind": "the policy class: 'diffusion', 'gaussian' or a registered kind (None: "
                   "the algorithm's own)",
    "total_env_steps": "environment steps per seed over the whole run",
    "num_envs": "parallel environments per seed",
    "num_evals": "evaluation intervals: the run is split into this many, evaluated and "
                 "checkpointed after each",
    "num_eval_envs": "episodes per evaluation (one per environment)",
    "episode_length": "the time limit in env steps (None: the environment's own)",
    "normalize_obs": "normalise observations with running mean / std statistics",
    "diffusion": "the diffusion policy's settings (diff* algorithms)",
    "gaussian": "the tanh-Gaussian policy's settings (sac, wpo, ppo)",
    "discount_mode": "'env': discount per environment step; 'diffusion': per augmented "
                     "(denoising) step",
    "actor_lr": "Adam learning rate of the policy",
    "critic_lr": "Adam learning rate of the critic (value function)",
    "target_entropy_multiplier": "m of the target entropy H(prior) - m * A (spec section 5)",
    "discount": "gamma: per env step ('env' mode) or per augmented step ('diffusion' mode)",
    "reward_scale": "multiplies every reward before learning",
    "max_grad_norm": "global gradient-norm clip of every update",
    "train_truncation_prob": "per training step, truncate an episode with this probability "
                             "(bootstrapped; 0: only the time limit)",
}

_OFF_POLICY = dict(
    _COMMON,
    learning_starts="random-policy env steps that fill the replay buffer before learning",
    batch_size="transitions per gradient update",
    updates_per_step="gradient updates per vectorised environment step",
    buffer_size="replay buffer capacity in transitions (per seed)",
    critic_hidden="hidden layer widths of the Q-networks",
    critic_layer_norm="layer normalisation in the Q-networks",
    estimator="the policy loss: 'per_step' terms of single denoising steps or 'full_chain' "
              "terms of whole chains",
    learn_alpha="learn the entropy temperature alpha towards the target entropy",
    num_action_samples="actions sampled per state for the WPO surrogate",
    entropy_chains="fresh chains per batch for the temperature's entropy estimate (None: "
                   "ceil(batch_size / K))",
    natural_gradient="WPO: rescale the surrogate's gradient by the Fisher information",
    alpha_lr="Adam learning rate of the temperature alpha",
    tau="Polyak rate of the target Q-networks",
    init_alpha="the initial temperature alpha",
    kl_bound="WPO: bound on the per-step KL to the target policy",
    init_kl_coef="WPO: initial Lagrange multiplier of the KL bound",
    kl_coef_lr="WPO: Adam learning rate of the KL multiplier",
    policy_tau="WPO: Polyak rate of the target policy",
)

_ON_POLICY = dict(
    _COMMON,
    unroll_length="env steps per environment in one rollout",
    num_epochs="passes over each rollout",
    num_minibatches="minibatches per epoch",
    value_hidden="hidden layer widths of the value network",
    value_layer_norm="layer normalisation in the value network",
    advantage_normalization="'center' (A - mean), 'standardize' ((A - mean) / std) or 'none'",
    learn_entropy_coef="learn the soft-reward coefficient c towards the target entropy",
    anneal_lr="decay the learning rates linearly to 0 over the run",
    entropy_coef_lr="Adam learning rate of c (with learn_entropy_coef)",
    entropy_coef="c of the soft reward r - c * l_k (the initial value when learned)",
    gae_lambda="GAE lambda (per env step or per augmented step, as the discount)",
    clip_eps="PPO's ratio clip epsilon",
    value_coef="weight of the value loss",
    critic_loss="REPPO: 'hl_gauss' (categorical critic, cross-entropy) or 'mse' (scalar critic)",
    num_bins="REPPO: bins of the HL-Gauss critic",
    learn_alpha="REPPO: learn the temperature alpha towards the target entropy",
    vmin="REPPO: lower end of the HL-Gauss critic's value range",
    vmax="REPPO: upper end of the HL-Gauss critic's value range",
    hl_gauss_sigma_ratio="REPPO: std of the HL-Gauss target histogram, in bin widths",
    init_alpha="REPPO: the temperature alpha (initial value when learned)",
    alpha_lr="REPPO: Adam learning rate of log alpha",
    kl_bound="REPPO: bound eps on K * the step kernels' KL to the rollout's policy",
    init_kl_coef="REPPO: initial Lagrange multiplier of the KL switch",
    kl_coef_lr="REPPO: Adam learning rate of the KL multiplier",
    aux_predictions="REPPO: auxiliary critic heads predicting the next embedding and reward",
    aux_loss_mult="REPPO: weight of the auxiliary prediction losses (with aux_predictions)",
)

_DIFFUSION = {
    "num_steps": "K: denoising steps per action",
    "prior_std": "sigma_p: std of the Gaussian prior of the chain's start x_0",
    "dt0": "the first denoising step's initial size (the schedule scales the later ones)",
    "schedule": "how the initial step sizes fall from dt0 towards schedule_min * dt0",
    "schedule_min": "m: the fraction of dt0 the schedule falls towards over the K steps",
    "dt_per_dimension": "one learned step size per action dimension (else one per step)",
    "friction": "the friction that divides the step sizes (initial value when learned)",
    "learn_friction": "learn the friction",
    "learn_step_sizes": "learn the step sizes (else fixed at their initial schedule)",
    "hidden_sizes": "hidden layer widths of the control network f_theta",
    "activation": "activation of the control network",
    "time_frequencies": "Fourier features of the step index fed to the control network",
    "time_hidden": "width of the control network's step-index embedding",
    "control_init_scale": "std of the control network's initial output layer (~0: the "
                          "chain starts as the prior's Langevin dynamics)",
    "control_clip": "the control output is clipped to +-control_clip",
    "learn_noising_drift": "learn the noising kernel's drift b_phi (else fixed)",
    "squash_clip": "tanh-squashed actions are clipped to +-(1 - squash_clip)",
    "squash_log_det": "measure entropy in action space (add the tanh log-determinant)",
    "deterministic_sampler": "the noise-free chain of deterministic evaluation: 'ode' or 'mean'",
}

_GAUSSIAN = {
    "hidden_sizes": "hidden layer widths of the policy network",
    "activation": "activation of the policy network",
    "min_std": "smallest standard deviation (added to softplus of the network's output)",
    "squash_clip": "tanh-squashed actions are clipped to +-(1 - squash_clip)",
}


def _classes() -> dict[str, type]:
    from diffrl_jax.policies import DiffusionPolicyConfig, GaussianPolicyConfig
    from diffrl_jax.training.off_policy import OffPolicyConfig
    from diffrl_jax.training.on_policy import OnPolicyConfig
    return {"off_policy": OffPolicyConfig, "on_policy": OnPolicyConfig,
            "diffusion": DiffusionPolicyConfig, "gaussian": GaussianPolicyConfig}


_DOCS = {"off_policy": _OFF_POLICY, "on_policy": _ON_POLICY, "diffusion": _DIFFUSION,
         "gaussian": _GAUSSIAN}


def field_docs() -> dict[type, dict[str, str]]:
    """config class -> {field name: one line} (the classes are imported on call)."""
    classes = _classes()
    return {classes[key]: dict(docs) for key, docs in _DOCS.items()}


def field_doc(config_class: Any, name: str) -> str:
    """The line of field `name` of a config class (or instance); "" if it has none."""
    cls = config_class if isinstance(config_class, type) else type(config_class)
    return field_docs().get(cls, {}).get(name, "")
