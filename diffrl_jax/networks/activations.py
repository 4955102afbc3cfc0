"""Activation functions selectable by name in configs."""

from collections.abc import Callable

import jax

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "gelu": jax.nn.gelu,
    "relu": jax.nn.relu,
    "silu": jax.nn.silu,
    "tanh": jax.nn.tanh,
    "elu": jax.nn.elu,
}


def get_activation(name: str) -> Callable[[jax.Array], jax.Array]:
    """Returns the activation called `name`; raises ValueError naming the allowed ones."""
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ValueError(
            f"unknown activation {name!r}; allowed: {sorted(ACTIVATIONS)}"
        ) from None
