"""Flax modules: plain MLPs, the Fourier time embedding and the diffusion control network."""

from diffrl_jax.networks.activations import ACTIVATIONS, get_activation
from diffrl_jax.networks.control import ControlNetwork
from diffrl_jax.networks.critic import CategoricalCritic, EnsembleCritic
from diffrl_jax.networks.mlp import MLP
from diffrl_jax.networks.time_embedding import FourierTimeEmbedding, fourier_features

__all__ = [
    "ACTIVATIONS",
    "MLP",
    "CategoricalCritic",
    "ControlNetwork",
    "EnsembleCritic",
    "FourierTimeEmbedding",
    "fourier_features",
    "get_activation",
]
