"""Non-finite guards: a NaN loss or gradient skips the update, is counted, and leaves the
learner's parameters and optimiser states as they were."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffrl_jax.experiment import make_config
from diffrl_jax.training import make_program, run_intervals, schedule_of
from diffrl_jax.training.guards import (
    NONFINITE_KEY,
    all_finite,
    keep_if_finite,
    masked_means,
    masked_sums,
)


def test_all_finite_looks_at_every_floating_leaf_only():
    assert bool(all_finite({"a": jnp.ones(3)}, (jnp.zeros(2), jnp.array([1, 2]))))
    assert not bool(all_finite({"a": jnp.array([1.0, jnp.inf])}))
    assert not bool(all_finite(jnp.ones(2), {"b": jnp.array(jnp.nan)}))
    assert bool(all_finite(jnp.array([2**31 - 1]), ()))  # integers and empty trees pass


def test_keep_if_finite_selects_whole_trees():
    new, old = {"w": jnp.ones(2), "s": jnp.array(3)}, {"w": jnp.zeros(2), "s": jnp.array(1)}
    kept = keep_if_finite(jnp.asarray(False), new, old)
    np.testing.assert_array_equal(kept["w"], old["w"])
    assert int(kept["s"]) == 1
    assert int(keep_if_finite(jnp.asarray(True), new, old)["s"]) == 3


def test_masked_means_leave_skipped_updates_out_and_count_them():
    ok = jnp.array([[True, False], [True, True]])
    metrics = {"loss": jnp.array([[1.0, jnp.nan], [3.0, 5.0]]),
               "vec": jnp.array([[[1.0, 2.0], [jnp.nan, jnp.nan]], [[3.0, 4.0], [5.0, 6.0]]])}
    sums = masked_sums(metrics, ok)
    both = jax.tree.map(lambda a, b: a + b, sums, masked_sums(metrics, jnp.zeros_like(ok)))
    means = masked_means(both)
    np.testing.assert_allclose(means["loss"], 3.0)  # (1 + 3 + 5) / 3
    np.testing.assert_allclose(means["vec"], [3.0, 4.0])
    assert float(means[NONFINITE_KEY]) == 1 + 4


@pytest.mark.parametrize("algo, steps", [("sac", 1000), ("wpo", 1000), ("ppo", 2048)])
def test_a_nan_loss_skips_every_update_and_keeps_the_learner_state(algo, steps):
    # validation refuses a plain NaN; an array value reaches the program (as traced ones do)
    config = make_config(algo, "toy/bandit", total_steps=steps, num_evals=2,
                         reward_scale=np.float32("nan"))
    program = make_program(config)

    def run(key):
        state = program.init(key)
        final, metrics = run_intervals(program, state, 1)
        return state, final, metrics

    state, final, metrics = jax.jit(run)(jax.random.PRNGKey(0))
    updates_per_interval = schedule_of(config)["updates_per_interval"]
    assert float(metrics[NONFINITE_KEY][0]) == updates_per_interval > 0
    assert int(final.updates) == 0  # only applied updates count
    # every parameter, optimiser state and temperature of the learner
    before, after = state.learner, final.learner
    assert jax.tree.structure(before) == jax.tree.structure(after)
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(before), jax.tree.leaves(after)):
        np.testing.assert_array_equal(a, b, err_msg=jax.tree_util.keystr(path))
    assert all_finite(final.learner)
    assert np.isfinite(float(metrics["eval_return"][0]))  # the unchanged policy still acts
    assert int(final.env_steps) > int(state.env_steps)  # collection goes on
