"""Fourier features of the denoising step index, followed by a small MLP."""

import flax.linen as nn
import jax
import jax.numpy as jnp

from diffrl_jax.networks.mlp import MLP


def fourier_features(step: jax.Array, num_steps: int, num_frequencies: int) -> jax.Array:
    """Sin/cos features of t = step / num_steps at frequencies pi * 2**j, j < num_frequencies.

    step: [...] integer or float. Returns [..., 2 * num_frequencies].
    """
    t = jnp.asarray(step, jnp.float32) / num_steps
    freqs = jnp.pi * 2.0 ** jnp.arange(num_frequencies, dtype=jnp.float32)
    angles = t[..., None] * freqs
    return jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)


class FourierTimeEmbedding(nn.Module):
    """Fourier features of the step index, then an MLP. [...] -> [..., hidden]."""

    num_steps: int
    num_frequencies: int = 4
    hidden: int = 64
    activation: str = "gelu"

    @nn.compact
    def __call__(self, step: jax.Array) -> jax.Array:
        feats = fourier_features(step, self.num_steps, self.num_frequencies)
        return MLP((self.hidden, self.hidden), activation=self.activation)(feats)
