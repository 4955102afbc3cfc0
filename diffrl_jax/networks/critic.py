"""Critic networks over the features the policy gives for (augmented) states and actions."""

from collections.abc import Sequence
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from diffrl_jax.networks.activations import get_activation
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


class CriticPredictions(NamedTuple):
    """The categorical critic's outputs with its auxiliary heads, batch dims [...]: logits
    [..., num_bins]; embedding [..., H] (the last hidden layer's activations, H =
    hidden_sizes[-1]); next_embedding [..., H] (the predicted embedding of the next state and
    action); reward [...] (the predicted reward)."""

    logits: jax.Array
    embedding: jax.Array
    next_embedding: jax.Array
    reward: jax.Array


class _TrunkAndHead(nn.Module):
    """`MLP(hidden_sizes + (out,))` (same layers, names and initial values) that also returns
    its last hidden layer's activations: [..., F] -> ([..., out], [..., hidden_sizes[-1]])."""

    hidden_sizes: Sequence[int]
    out: int
    activation: str
    layer_norm: bool

    @nn.compact
    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        act = get_activation(self.activation)
        for i, size in enumerate(self.hidden_sizes):
            x = nn.Dense(size, name=f"dense_{i}")(x)
            if self.layer_norm:
                x = nn.LayerNorm(name=f"layer_norm_{i}")(x)
            x = act(x)
        return nn.Dense(self.out, name=f"dense_{len(self.hidden_sizes)}")(x), x


class CategoricalCritic(nn.Module):
    """One MLP with LayerNorm on every hidden layer (by default) giving num_bins logits of a
    categorical (HL-Gauss) value distribution: [..., F] -> [..., num_bins]; num_bins = 1 is a
    scalar (MSE) critic.

    With aux_predictions, two linear heads on the last hidden layer (REPPO's auxiliary
    losses) predict the next state's embedding and the reward; `with_aux=True` returns
    `CriticPredictions` (initialise with it, so the heads get parameters). Without them the
    parameters are those of `MLP(hidden_sizes + (num_bins,))` under the name "critic"."""

    hidden_sizes: Sequence[int] = (256, 256)
    num_bins: int = 151
    activation: str = "relu"
    layer_norm: bool = True
    aux_predictions: bool = False

    @nn.compact
    def __call__(self, features: jax.Array, with_aux: bool = False
                 ) -> jax.Array | CriticPredictions:
        if with_aux and not self.aux_predictions:
            raise ValueError("with_aux=True needs a CategoricalCritic with aux_predictions")
        logits, embedding = _TrunkAndHead(tuple(self.hidden_sizes), self.num_bins,
                                          self.activation, self.layer_norm,
                                          name="critic")(features)
        if not with_aux:
            return logits
        next_embedding = nn.Dense(embedding.shape[-1], name="next_embedding")(embedding)
        reward = nn.Dense(1, name="reward")(embedding)[..., 0]
        return CriticPredictions(logits, embedding, next_embedding, reward)
