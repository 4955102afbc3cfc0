"""Learning checks on CPU with the presets (marked slow: minutes each, few, real).

They run the experiment command's code path (`run_experiment`), so they check the presets
that `experiments/train.py` uses.
"""

import numpy as np
import pytest

from diffrl_jax.experiment import RunOptions, run_experiment
from diffrl_jax.score_stats import iqm

pytestmark = pytest.mark.slow

# one checkpoint at the end, no metric files or plots: the learning is what is checked here
LEAN = RunOptions(checkpoint_every=0, metrics_formats=(), plots=False)


# The diffusion algorithms and the on-policy pair on a real control task (the Gaussian SAC and
# WPO baselines are checked on the bandit below; on inverted_pendulum they took 3-4 CPU
# minutes each). (seeds, env steps or None for the preset's): one seed for the off-policy
# runs, whose cost on CPU is the sequence of updates, not the seed batch; their budgets stop
# after the first evaluations at 1000 (seed 0 reached 1000 by 21k and 19k steps).
PENDULUM = {"diffsac": (1, 30_000), "diffwpo": (1, 22_000), "ppo": (2, None)}


@pytest.mark.parametrize("algo", list(PENDULUM))
def test_inverted_pendulum_reaches_800(algo, tmp_path):
    seeds, steps = PENDULUM[algo]
    summary = run_experiment(algo, "brax/inverted_pendulum", steps, seeds, 0, tmp_path,
                             progress=False, options=LEAN)
    final = np.asarray(summary["final_eval_return"])
    assert final.mean() >= 800, summary["eval_curve"]
    assert summary["nonfinite_env_steps"] == [0] * seeds
    assert summary["nonfinite_updates"] == [0] * seeds


def test_diffppo_holds_inverted_pendulum_on_5_seeds(tmp_path):
    """Issue 19.9: at its preset (98k env steps; random training truncation 1/250), every
    seed ends at >= 800 and their IQM at >= 950 (measured: all five at 1000 from 74k steps
    on; before the truncation seeds fell to 73 and 275 after solving)."""
    summary = run_experiment("diffppo", "brax/inverted_pendulum", None, 5, 0, tmp_path,
                             progress=False, options=LEAN)
    final = np.asarray(summary["final_eval_return"])
    assert iqm(final) >= 950 and final.min() >= 800, summary["eval_curve"]
    assert summary["nonfinite_updates"] == [0] * 5


@pytest.mark.parametrize("algo", ["diffsac", "diffwpo", "diffppo"])
def test_diffusion_policy_keeps_both_bandit_modes(algo, tmp_path):
    summary = run_experiment(algo, "toy/bandit", None, 3, 0, tmp_path, progress=False,
                             options=LEAN)
    fractions = np.asarray(summary["mode_fractions"])
    assert fractions.shape == (3, 2)
    assert fractions.min() >= 0.25, fractions
    # The actions sit on the peaks: uniform actions on [-1, 1] would return about 0.25.
    assert np.mean(summary["final_eval_return"]) > 0.4


@pytest.mark.parametrize("algo", ["sac", "wpo", "ppo"])
def test_gaussian_policy_collapses_to_one_bandit_mode(algo, tmp_path):
    summary = run_experiment(algo, "toy/bandit", None, 3, 0, tmp_path, progress=False,
                             options=LEAN)
    fractions = np.asarray(summary["mode_fractions"])
    assert np.all(fractions.max(-1) >= 0.9), fractions
    assert np.mean(summary["final_eval_return"]) > 0.8
