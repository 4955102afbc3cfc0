"""Critic networks over the features the policy gives for (augmented) states and actions."""

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from diffrl_jax.networks.mlp import MLP


class EnsembleCritic(nn.Module):
    """num_critics independent MLPs on the same input: [..., F] -> [..., num_critics].
    layer_norm normalises each hidden layer, which keeps the critic stable when the
    augmented inputs (latents x_k) drift in scale."""

    hidden_sizes: Sequence[int] = (256, 256)
    num_critics: int = 2
    activation: str = "relu"
    layer_norm: bool = False

    @nn.compact
    def __call__(self, features: jax.Array) -> jax.Array:
        outs = [
            MLP(tuple(self.hidden_sizes) + (1,), activation=self.activation,
                layer_norm=self.layer_norm, name=f"critic_{i}")(
                features
            )[..., 0]
            for i in range(self.num_critics)
        ]
        return jnp.stack(outs, axis=-1)


class CategoricalCritic(nn.Module):
    """One MLP with LayerNorm on every hidden layer (by default) giving num_bins logits of a
    categorical (HL-Gauss) value distribution: [..., F] -> [..., num_bins]; num_bins = 1 is a
    scalar (MSE) critic."""

    hidden_sizes: Sequence[int] = (256, 256)
    num_bins: int = 151
    activation: str = "relu"
    layer_norm: bool = True

    @nn.compact
    def __call__(self, features: jax.Array) -> jax.Array:
        return MLP(tuple(self.hidden_sizes) + (self.num_bins,), activation=self.activation,
                   layer_norm=self.layer_norm, name="critic")(features)
