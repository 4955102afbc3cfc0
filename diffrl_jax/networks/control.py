"""The control network f_theta(x_k, s, k) of the diffusion policy (spec section 2)."""

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from diffrl_jax.networks.mlp import MLP
from diffrl_jax.networks.time_embedding import FourierTimeEmbedding


class ControlNetwork(nn.Module):
    """f(x, s, k): MLP over [x, s, time embedding of k]; last layer initialised near zero.

    latent: [..., A], obs: [..., S], step: [...] int. Returns [..., A], clipped to +-output_clip.
    With output_init_scale ~ 0 the initial control is ~0, so the chain starts as the
    prior-preserving Langevin chain.
    """

    action_dim: int
    num_steps: int
    hidden_sizes: Sequence[int] = (256, 256, 256, 256)
    activation: str = "gelu"
    time_frequencies: int = 4
    time_hidden: int = 64
    output_init_scale: float = 1e-8
    output_clip: float = 1e4

    @nn.compact
    def __call__(self, latent: jax.Array, obs: jax.Array, step: jax.Array) -> jax.Array:
        temb = FourierTimeEmbedding(
            num_steps=self.num_steps,
            num_frequencies=self.time_frequencies,
            hidden=self.time_hidden,
            activation=self.activation,
        )(step)
        batch = jnp.broadcast_shapes(latent.shape[:-1], obs.shape[:-1], temb.shape[:-1])
        inputs = jnp.concatenate(
            [
                jnp.broadcast_to(latent, batch + latent.shape[-1:]),
                jnp.broadcast_to(obs, batch + obs.shape[-1:]),
                jnp.broadcast_to(temb, batch + temb.shape[-1:]),
            ],
            axis=-1,
        )
        out = MLP(
            tuple(self.hidden_sizes) + (self.action_dim,),
            activation=self.activation,
            final_kernel_init=nn.initializers.normal(stddev=self.output_init_scale),
        )(inputs)
        return jnp.clip(out, -self.output_clip, self.output_clip)
