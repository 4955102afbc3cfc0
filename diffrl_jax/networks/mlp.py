"""A plain multi-layer perceptron."""

from collections.abc import Sequence

import flax.linen as nn
import jax

from diffrl_jax.networks.activations import get_activation


class MLP(nn.Module):
    """Dense layers with an activation between them (none after the last); with layer_norm,
    each hidden layer is Dense -> LayerNorm -> activation.

    Maps [..., D_in] -> [..., layer_sizes[-1]].
    """

    layer_sizes: Sequence[int]
    activation: str = "relu"
    final_kernel_init: nn.initializers.Initializer | None = None
    layer_norm: bool = False

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        act = get_activation(self.activation)
        n = len(self.layer_sizes)
        for i, size in enumerate(self.layer_sizes):
            last = i == n - 1
            if last and self.final_kernel_init is not None:
                x = nn.Dense(size, kernel_init=self.final_kernel_init, name=f"dense_{i}")(x)
            else:
                x = nn.Dense(size, name=f"dense_{i}")(x)
            if not last:
                if self.layer_norm:
                    x = nn.LayerNorm(name=f"layer_norm_{i}")(x)
                x = act(x)
        return x
