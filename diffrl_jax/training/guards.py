"""Non-finite guards for gradient updates, inside the compiled program.

An update whose loss or gradients are not all finite is skipped: the learner's parameters,
optimiser states and temperatures keep their values from before it (`keep_if_finite`), and
it is counted. Metrics of skipped updates are left out of the interval's means
(`masked_sums` / `masked_means`), so one bad minibatch does not turn a whole interval's
losses into NaN. The driver (`diffrl_jax.experiment`) stops a run that keeps skipping.
"""

from typing import Any

import jax
import jax.numpy as jnp

from diffrl_jax.types import Array

COUNT_KEY = "_applied_updates"
NONFINITE_KEY = "nonfinite_updates"


def all_finite(*trees: Any) -> Array:
    """[] bool: every element of every floating-point leaf of the trees is finite."""
    leaves = [x for tree in trees for x in jax.tree.leaves(tree)
              if jnp.issubdtype(jnp.asarray(x).dtype, jnp.inexact)]
    if not leaves:
        return jnp.asarray(True)
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))


def keep_if_finite(ok: Array, new: Any, old: Any) -> Any:
    """new where ok else old, leaf by leaf (same tree structure)."""
    return jax.tree.map(lambda n, o: jnp.where(ok, n, o), new, old)


def masked_sums(metrics: dict[str, Array], ok: Array) -> dict[str, Array]:
    """Sums over the leading axes of `ok`'s shape of each metric where ok, plus the number
    of applied (COUNT_KEY) and skipped (NONFINITE_KEY) updates. Combine several with
    `jax.tree.map(jnp.sum, ...)`, finish with `masked_means`."""
    w = ok.astype(jnp.float32)

    def weighted(x: Array) -> Array:
        wx = w.reshape(w.shape + (1,) * (x.ndim - w.ndim))
        return jnp.sum(jnp.where(wx > 0, x, 0.0), axis=tuple(range(w.ndim)))

    out = {k: weighted(v) for k, v in metrics.items()}
    out[COUNT_KEY] = jnp.sum(w)
    out[NONFINITE_KEY] = jnp.sum(1.0 - w)
    return out


def masked_means(sums: dict[str, Array]) -> dict[str, Array]:
    """Means over applied updates from `masked_sums` (0 where none applied); keeps the
    count of skipped updates as NONFINITE_KEY."""
    sums = dict(sums)
    applied = sums.pop(COUNT_KEY)
    skipped = sums.pop(NONFINITE_KEY)
    out = {k: v / jnp.maximum(applied, 1.0) for k, v in sums.items()}
    out[NONFINITE_KEY] = skipped
    return out
