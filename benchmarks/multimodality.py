"""Multimodality: do the policies keep both reward modes of the toy environments, and how far
is each learned action distribution from the Boltzmann target exp(R / alpha) / Z?

    python benchmarks/multimodality.py [--envs toy/bandit toy/double_well [toy/three_peaks]]
        [--import MODULE_OR_FILE.py (environments registered with peaks, probe states, R(a))]
        [--algos sac diffsac wpo diffwpo ppo diffppo] [--seeds 4] [--seed 0]
        [--samples 4096] [--bins 50] [--probe-states 4] [--set FIELD=VALUE ...]
        [--out-dir DIR] [--out multimodality.json] [--quick]

For every environment and algorithm, `--seeds` seeds are trained as one run with
`diffrl_jax.experiment.run_experiment` into OUT_DIR/<env>/<algo> (no progress display,
metrics.jsonl, its own plots, one checkpoint at the end). The final checkpoint is loaded
(`checkpoint_eval.load_run`) and every seed's policy draws `--samples` actions at each probe
state of the environment (`plots.toy_probe_states`: the bandit's one state; for the double
well `--probe-states` headings spread over [-pi, pi) at t = 0), one vmapped sampling program
per (env, algo) that computes what `plots.sample_policy_actions` computes for each seed.

Settings. toy/bandit: the project's (algo, env) presets (`diffrl_jax.presets`).
toy/double_well has no presets (the algorithm defaults are sized for MuJoCo tasks), so this
benchmark gives it its own explicit small settings, `DOUBLE_WELL_SETTINGS` below, derived
from the bandit presets (same networks and learning rates) with discount 0.9
(the episodes last 10 steps), on-policy rollouts of whole 10-step episodes and equal
env-step budgets within each pair (24k SAC / DiffSAC, 16k WPO / DiffWPO, 192k PPO /
DiffPPO). The Gaussian ones are untuned. The diffusion ones were adjusted in two rounds
(the comment above DOUBLE_WELL_SETTINGS gives every variant's numbers): smaller denoising
steps (dt0 0.02, DiffPPO 0.03, instead of 0.06: the last step's noise was as wide as the
gap between the peaks), and per algorithm the temperature target or coefficient; DiffSAC
uses the full-chain estimator (`estimator="full_chain"`), because with the per-step one no
variant tried formed two separate modes. `--set FIELD=VALUE` adds overrides to every run
(e.g. `--set total_env_steps=50000`).

toy/three_peaks (`--envs toy/three_peaks`; not in the default list): the bandit with three
equal bumps of width 0.1 at a = -0.7, 0, +0.7, run with the toy/bandit presets. The diffusion
policies keep the outer peaks and drop the middle one (issue 19.7). What was found:
- tanh compression and the last step's noise (`aimed_reward`, `noise_limited_optimum`). Every
  action is tanh(mean + s z): a last denoising mean plus noise of std s = sqrt(2 eta_{K-1})
  in pre-squash x (0.36 at the presets' dt0 0.06 before training). A bump 0.1 wide in a is
  0.1 wide in x at a = 0 but 0.1 / (1 - 0.7^2) ~ 0.2 wide at a = +-0.7, so a last step aimed
  at the middle peak expects less reward: best aim middle / outer 0.49 / 0.75 at s = 0.18,
  0.42 / 0.62 at 0.26, 0.44 / 0.52 at 0.36 (there the middle aim also reaches the outer
  bumps), 0.78 / 0.93 at 0.08; -> 1 / 1 as s -> 0. The two-peak bandit's peaks are mirror
  images: no asymmetry. The best MaxEnt policy under that noise (E[R] + alpha H maximised
  over the distribution of last-step means) gives the middle peak, at alpha = 0.1 with H in
  action space (DiffPPO's squash_log_det) / in x: 0.30 / 0.18 at s = 0.05, 0.19 at 0.08,
  0.11 at 0.115, 0.065 / 0.033 at 0.18, 0.053 at 0.26, 0.088 / 0.065 at 0.36 (there only
  the outer modes' noise leaking below |a| = 0.35: no mean is aimed at the middle); at
  alpha = 0.02 at most 0.07 for s <= 0.36. With two peaks: 0.497-0.5 everywhere; without
  the tanh (three bumps equally wide in x) 0.32 at s = 0.18: the asymmetry is the squash's.
- x-space entropy (no squash_log_det, DiffSAC and DiffWPO): even noise-free, exp(R / alpha)
  in x weighs each peak by its x-width: middle share -> 0.20 (1 / (1 + 2 x 1.96)) instead of
  1/3. Lowers the middle share, but cannot by itself take it to a few per cent.
- small temperatures: the middle share goes roughly as exp(-(reward gap) / alpha), so small
  alphas (DiffSAC's learned ~0.07, DiffWPO's ~0.02 on the bandit) amplify the gap.
- what the noise-limited optimum does not explain: with the learned step sizes s shrinks
  during training, and where it ends the optimum keeps the middle peak, yet the policies
  do not. DiffPPO with the preset (3 seeds, 98k steps): middle share 0.004-0.009 (0.05-0.08 in
  the evaluations after 24k steps, from 0.29 under the prior), outer 0.48-0.51, return
  0.87, final s 0.074-0.084, where the optimum gives the middle 0.18-0.21. Starting with
  the small noise (dt0 0.003: s = 0.081 at the start, 0.063-0.070 at the end) did not help:
  0.001-0.006 (already 0-0.016 after 24k steps), optimum 0.22-0.25. The middle mode is worth
  little to the objective: the best policy with no mean aimed at |a| < 0.35 scores only 0.021
  (s = 0.08) or 0.028 (s = 0.065) below the three-mode optimum at alpha = 0.1 (nothing at
  s = 0.36), a third of what dropping one of the two-peak bandit's modes costs (alpha log 2 =
  0.069).
- the entropy estimate (the likely cause): what holds a third, lower-reward mode at the
  optimum is the mixing entropy H(w) of the mode shares, and H_hat (spec section 3's lower
  bound, which the soft reward uses) hardly sees it. At the preset's end (k-NN entropy of
  8192 fresh actions per seed, a one-off measurement outside this script; shares w, H = sum_i
  w_i H_i + H(w) for separated modes):
  true H -0.70 / -0.82 / -0.72 = within-mode -1.42 / -1.53 / -1.47 + H(w) 0.73 / 0.72 /
  0.74, while H_hat was -1.28 / -1.37 / -1.32: it saw 0.06-0.15 of the 0.72 nats (dt0 0.003:
  0.07-0.11 of 0.72). Without H(w) the objective is linear in the shares, and per unit of
  mass the middle mode scores E + alpha (H_i + E[log(1 - tanh^2)]) = 0.78 + 0.1 (-1.11 - 0.01)
  = 0.67 against the outer ones' 0.93 + 0.1 (-1.11 - 0.69) = 0.75 (s = 0.08, each aimed at
  its best mean): its optimal share is 0. The two-peak bandit's modes tie, so there the
  split costs nothing either way and stays near 50/50.
- the temperature: DiffPPO with c = 0.2 (else the preset): middle 0.08-0.11 nearest-peak but
  only 0.02-0.03 within 0.1 of a = 0 (as much as in the valleys: no middle mode, mass spread
  between the outer ones), still falling at the end (0.15-0.20 after 24k steps), return 0.71;
  the optimum at its s (0.09-0.10) would give 0.27-0.29. A higher coefficient slows the loss
  but does not make a middle mode.
The table's "NL min" column is the noise-limited optimum's smaller share at each run's final s
and temperature (the optimum with the exact entropy, so an upper reference, not a prediction).

Metrics, per seed and probe state, over the first action dimension (the toys have one):
  mode fractions     the share of sampled actions nearest each reward peak (-0.5, +0.5;
                     a tie at 0 counts for the first peak), as `envs.toy.mode_fractions`.
  near-peak shares   the share of all sampled actions within NEAR_PEAK_RADIUS = 0.1 (the
                     bandit's bump width) of each peak. Mode fractions alone cannot tell
                     two modes from one wide or near-uniform spread (each splits about
                     50/50 by nearest peak); these shares, the KL and the return can.
  valley shares      the share within NEAR_PEAK_RADIUS of each midpoint between adjacent
                     peaks (a = 0 for the toys), and "dip" per state: valley share <=
                     DIP_RATIO x the smaller near-peak share (see the verdict).
  histogram          p_j = counts / samples over BINS equal bins of [-1, 1] (`histogram_
                     probabilities`; actions outside [-1, 1] or non-finite are dropped; the
                     policies' actions are tanh-squashed, so none are).
  Boltzmann target   q_j = int_{bin j} exp(s R(a) / alpha) da / Z on the same bins
                     (`boltzmann_bin_probabilities`: the integral by the midpoint rule on 64
                     points per bin, in log space, so small alpha cannot overflow), where
                     s = config.reward_scale (1 here) and alpha is the run's final
                     temperature (`final_temperature`): off-policy, exp(log_alpha) of the
                     final state when alpha is learned, else the config's init_alpha;
                     on-policy, the entropy coefficient c of the soft reward r - c l
                     (exp(log_entropy_coef) when learned, else config.entropy_coef).
                     R is the reward as a function of the action: for toy/bandit the
                     two-bump reward, where every step is a whole episode (discount 0), so
                     the target is exactly the MaxEnt-optimal policy. For toy/double_well it
                     is the myopic (one-step) Boltzmann target of the quartic well reward. It
                     is a reference: the discounted soft Q is R(a) plus the soft value of the
                     next heading; that value does not depend on the heading in the exact
                     solution (reward and dynamics are rotation-invariant), but a learned
                     critic's estimate of it does, so a trained policy need not match it.
                     Two more caveats for both toys: the Diff variants without the
                     squash_log_det option (DiffSAC and DiffWPO; DiffPPO's settings here
                     use it) measure entropy before the tanh squash, so their own MaxEnt optimum differs from this
                     action-space target by the squash's Jacobian; and the diffusion entropy
                     estimate H_hat is a lower bound, so the learned temperature is not the
                     temperature of an exact MaxEnt solution.
  KL                 KL(p || q) = sum_{j: p_j > 0} p_j log(p_j / q~_j) in nats, with
                     q~_j = (q_j + EPS) / (1 + BINS EPS), EPS = KL_EPSILON = 1e-6: empty
                     histogram bins contribute 0 (0 log 0 = 0), and target bins whose
                     mass underflows (q_j ~ 0, small alpha, far from the peaks) get EPS so a
                     stray sample there costs p_j log(p_j / EPS) instead of infinity. With
                     N samples the plug-in estimate is biased upwards by about
                     (occupied bins - 1) / (2 N) nats (~0.006 for 50 bins and 4096 samples).
  histogram entropy  -sum_j p_j log(p_j / width_j): the differential entropy (nats) of the
                     piecewise-constant density of the histogram, in action space (the same
                     for the target: "target_histogram_entropy").
Per seed: the final entropy estimate "entropy_hat" (the run's own H_hat, the "entropy"
metric of the last interval in OUT_DIR/<env>/<algo>/metrics.jsonl: the mean over that
interval's updates; for the Diff variants the lower bound of spec section 3, in pre-squash
space unless squash_log_det), and the final stochastic evaluation return ("final_eval_return"
of the run's summary: the mean over its num_eval_envs evaluation episodes).

Verdict per (env, algo), one of "both modes", "no dip", "collapsed": for each seed
and probe state (a cell) take the smallest mode fraction (the share of the less used peak);
average it over the cells; "collapsed" if that average is < MODE_THRESHOLD = 0.2 (taking
the minimum per state first means a policy that picks the left peak at one heading and the
right peak at another still counts as collapsed; the spec's multimodality test, section 6,
asks for 25 % per mode). A balanced policy is "both modes" only if its actions also dip
between the peaks: a cell has a dip when its valley share (within NEAR_PEAK_RADIUS of the
midpoint a = 0) is <= DIP_RATIO = 0.5 times its smaller near-peak share (same window width,
so a density comparison), and at least DIP_SHARE = 0.75 of the cells need one; otherwise
"no dip" (more than a quarter of the cells lack a dip): one hump over both peaks, or a
near-uniform spread (each splits 50/50 by nearest peak but has valley share >= near-peak
share), or a mix of seeds with two modes and seeds collapsed onto one peak (a collapsed
cell has no dip).

Output: a printed table (mode fractions min / max: the means over seeds and states of the
smaller and larger share; near min and valley: the same means of the smaller near-peak and
of the valley share; dips: the share of cells with a dip; KL, entropies and return: means
over seeds and states), JSON at
--out with every per-seed, per-state number, the settings, the command line, JAX version,
device and date, and per (env, algo) a PNG of the action histograms of every seed and state
with the Boltzmann target's expected counts drawn over them
(OUT_DIR/<env>/<algo>/multimodality_histograms.png; each run directory also holds the run's
own learning_curve.png and action_histogram.png of seed 0).

`--quick` is a smoke-sized run of the benchmark itself (it learns nothing): unless given,
toy/bandit, ppo and diffppo, 2 seeds, 512 samples; every run shrunk by `quick_overrides`
(2 intervals, a few hundred env steps, tiny networks, 2-step diffusion chains). On a CPU it
takes about a minute, nearly all compilation. The full default run compiles and trains 12
runs of 4 seeds: expect tens of minutes on a CPU.
"""

import argparse
import dataclasses
import datetime
import json
import math
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from diffrl_jax.checkpoint_eval import load_run
from diffrl_jax.envs import EnvSpec, env_spec, import_env_modules, peaks_of, registered_envs
from diffrl_jax.experiment import RunOptions, make_config, run_experiment
from diffrl_jax.plots import ACTION_RANGE, action_histogram_figure, toy_probe_states
from diffrl_jax.policies import GaussianPolicyConfig
from diffrl_jax.presets import PPO_BANDIT_DIFFUSION, SMALL_DIFFUSION
from diffrl_jax.training import ALGOS, OffPolicyConfig, trainer_for
from diffrl_jax.training.collection import policy_obs

# ---- definitions ------------------------------------------------------------------------

def benchmarkable(spec: EnvSpec | None) -> bool:
    """Whether the benchmark can analyse an environment: it declares reward peaks, probe
    states and its reward as a function of the action (`register_env`)."""
    return (spec is not None and bool(spec.peaks) and spec.probe_states is not None
            and spec.reward_of_action is not None)


def benchmark_envs() -> tuple[str, ...]:
    """What --envs accepts: every registered environment that is `benchmarkable` now."""
    return tuple(name for name, spec in registered_envs().items() if benchmarkable(spec))


DEFAULT_ENVS = ("toy/bandit", "toy/double_well")
ENVS = benchmark_envs()  # the built-in ones (--import adds the user's)
DEFAULT_ALGOS = ("sac", "diffsac", "wpo", "diffwpo", "ppo", "diffppo")
DEFAULT_SEEDS = 4
DEFAULT_SAMPLES = 4096
DEFAULT_BINS = 50
DEFAULT_PROBE_STATES = 4
QUICK_ENVS = ("toy/bandit",)
QUICK_ALGOS = ("ppo", "diffppo")
QUICK_SEEDS = 2
QUICK_SAMPLES = 512
MODE_THRESHOLD = 0.2  # balanced: mean over seeds and states of the smaller share >= this
NEAR_PEAK_RADIUS = 0.1  # "near a peak" / "in the valley": |a - centre| <= this
DIP_RATIO = 0.5  # a dip: valley share <= this times the smaller near-peak share
DIP_SHARE = 0.75  # "both modes" needs a dip in at least this share of (seed, state) cells
KL_EPSILON = 1e-6  # probability added to every target bin (then renormalised) in the KL
TARGET_SUBDIVISIONS = 64  # midpoint-rule points per bin for the target's bin integrals
HISTOGRAM_FILE = "multimodality_histograms.png"



def reward_of_action(env: str) -> Callable[[Any], Any]:
    """R(a) of env as a function of the (first) action, as registered (`register_env`'s
    reward_of_action; for the double well the reward of one step, which does not depend on
    the heading). ValueError for an environment that declares none."""
    spec = env_spec(env)
    if spec is None or spec.reward_of_action is None:
        raise ValueError(f"{env!r} declares no reward_of_action (register_env): the "
                         f"multimodality benchmark needs it for the Boltzmann target")
    return spec.reward_of_action


# ---- the math (pure numpy) ----------------------------------------------------------------

def histogram_probabilities(actions: Any, bins: int = DEFAULT_BINS,
                            value_range: tuple[float, float] = ACTION_RANGE
                            ) -> tuple[np.ndarray, np.ndarray]:
    """actions [n] (or [n, A]: the first dimension) -> (p [bins], edges [bins + 1]): the share
    of the finite actions inside value_range in each of `bins` equal bins (the last bin
    includes the upper edge). ValueError when no action is counted."""
    a = np.asarray(actions, dtype=np.float64)
    if a.ndim == 2:
        a = a[:, 0]
    if a.ndim != 1:
        raise ValueError(f"actions must have shape [n] or [n, action_dim], got {np.shape(actions)}")
    if isinstance(bins, bool) or not isinstance(bins, (int, np.integer)) or bins < 1:
        raise ValueError(f"bins must be a positive integer, got {bins!r}")
    edges = np.linspace(value_range[0], value_range[1], bins + 1)
    counts = np.histogram(a[np.isfinite(a)], bins=edges)[0].astype(np.float64)
    total = counts.sum()
    if total == 0:
        raise ValueError("no finite action inside the histogram's range")
    return counts / total, edges


def boltzmann_bin_probabilities(reward_fn: Callable[[Any], Any], alpha: float, edges: Any,
                                reward_scale: float = 1.0,
                                subdivisions: int = TARGET_SUBDIVISIONS) -> np.ndarray:
    """q [bins]: the mass of the density p*(a) = exp(reward_scale * R(a) / alpha) / Z on
    [edges[0], edges[-1]] in each bin: int_{bin j} exp(reward_scale R(a) / alpha) da, by the
    midpoint rule on `subdivisions` equal sub-intervals per bin, normalised over the bins.
    Computed as log-masses with the maximum subtracted (no overflow for small alpha).
    reward_fn maps an array of actions to rewards. ValueError unless alpha > 0 is finite."""
    alpha = float(alpha)
    if not (math.isfinite(alpha) and alpha > 0):
        raise ValueError(f"the Boltzmann target needs a finite temperature alpha > 0, got {alpha}")
    edges = np.asarray(edges, dtype=np.float64)
    if edges.ndim != 1 or edges.size < 2 or np.any(np.diff(edges) <= 0):
        raise ValueError("edges must be an increasing 1-D array of at least 2 values")
    widths = np.diff(edges)
    offsets = (np.arange(subdivisions) + 0.5) / subdivisions  # midpoints in [0, 1]
    points = edges[:-1, None] + widths[:, None] * offsets[None, :]  # [bins, subdivisions]
    rewards = np.asarray(reward_fn(points), dtype=np.float64).reshape(points.shape)
    log_density = float(reward_scale) * rewards / alpha
    top = np.max(log_density)
    # log of the bin integral: log(width / subdivisions * sum exp(log_density))
    with np.errstate(divide="ignore"):  # a bin whose mass underflows: log 0 = -inf, mass 0
        log_mass = np.log(np.sum(np.exp(log_density - top), axis=1)) + np.log(widths / subdivisions)
    mass = np.exp(log_mass - np.max(log_mass))
    return mass / mass.sum()


def kl_divergence(p: Any, q: Any, eps: float = KL_EPSILON) -> float:
    """KL(p || q) in nats over bins: sum over bins with p_j > 0 of p_j log(p_j / q~_j), where
    p and q are first normalised to sum 1 and q~_j = (q_j + eps) / (1 + bins * eps) (so an
    empty or underflowed target bin under histogram mass gives a large finite term, not
    infinity). Empty histogram bins contribute 0. >= 0; 0 iff p = q~."""
    p = np.asarray(p, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    if p.shape != q.shape or p.ndim != 1:
        raise ValueError(f"p and q must be 1-D of the same length, got {p.shape} and {q.shape}")
    if np.any(p < 0) or np.any(q < 0) or p.sum() <= 0 or q.sum() <= 0:
        raise ValueError("p and q must be non-negative with positive sums")
    p = p / p.sum()
    q = (q / q.sum() + eps) / (1.0 + p.size * eps)
    mask = p > 0
    return float(max(np.sum(p[mask] * np.log(p[mask] / q[mask])), 0.0))


def histogram_entropy(p: Any, edges: Any) -> float:
    """-sum_j p_j log(p_j / width_j) (nats): the differential entropy of the density that is
    p_j / width_j on bin j (0 log 0 = 0)."""
    p = np.asarray(p, dtype=np.float64)
    widths = np.diff(np.asarray(edges, dtype=np.float64))
    mask = p > 0
    return float(-np.sum(p[mask] * np.log(p[mask] / widths[mask])))


def mode_fractions(actions: Any, peaks: Sequence[float]) -> np.ndarray:
    """actions [n] (or [n, A]: the first dimension) -> [P]: the share of the finite actions
    nearest each peak (ties go to the earlier peak; zeros when no action is finite)."""
    a = np.asarray(actions, dtype=np.float64)
    if a.ndim == 2:
        a = a[:, 0]
    a = a[np.isfinite(a)]
    if len(peaks) == 0:
        raise ValueError("mode fractions need at least one peak")
    if a.size == 0:
        return np.zeros(len(peaks))
    nearest = np.argmin(np.abs(a[:, None] - np.asarray(peaks, dtype=np.float64)[None, :]), axis=1)
    return np.bincount(nearest, minlength=len(peaks)) / a.size


def near_peak_fractions(actions: Any, peaks: Sequence[float],
                        radius: float = NEAR_PEAK_RADIUS) -> np.ndarray:
    """actions [n] (or [n, A]: the first dimension) -> [P]: the share of the finite actions
    within `radius` of each peak (|a - peak| <= radius; zeros when no action is finite)."""
    a = np.asarray(actions, dtype=np.float64)
    if a.ndim == 2:
        a = a[:, 0]
    a = a[np.isfinite(a)]
    if a.size == 0:
        return np.zeros(len(peaks))
    near = np.abs(a[:, None] - np.asarray(peaks, dtype=np.float64)[None, :]) <= radius
    return near.mean(axis=0)


def valley_fractions(actions: Any, peaks: Sequence[float],
                     radius: float = NEAR_PEAK_RADIUS) -> np.ndarray:
    """actions [n] (or [n, A]: the first dimension) -> [P - 1]: the share of the finite
    actions within `radius` of each midpoint between adjacent (sorted) peaks, the valleys
    (for the toys' peaks -0.5 and +0.5 the one valley is a = 0; zeros when no action is
    finite)."""
    ordered = np.sort(np.asarray(peaks, dtype=np.float64))
    if ordered.size < 2:
        raise ValueError(f"valleys need at least two peaks, got {tuple(peaks)}")
    return near_peak_fractions(actions, 0.5 * (ordered[:-1] + ordered[1:]), radius)


def has_dip(near_peak: Sequence[float], valleys: Sequence[float],
            ratio: float = DIP_RATIO) -> bool:
    """True when the action density falls between the peaks: the smaller near-peak share is
    positive and every valley share is <= ratio times it (the windows have the same width, so
    this compares densities). One wide hump over both peaks, or a uniform spread (near-peak
    and valley shares equal), has no dip; two separated modes do."""
    smallest = float(np.min(near_peak))
    return smallest > 0 and float(np.max(valleys)) <= ratio * smallest


def target_mode_fractions(q: Any, edges: Any, peaks: Sequence[float]) -> np.ndarray:
    """[P]: the target's bin masses q assigned to the peak nearest each bin's centre."""
    centres = 0.5 * (np.asarray(edges[:-1]) + np.asarray(edges[1:]))
    nearest = np.argmin(np.abs(centres[:, None] - np.asarray(peaks)[None, :]), axis=1)
    return np.bincount(nearest, weights=np.asarray(q, dtype=np.float64), minlength=len(peaks))


VERDICTS = ("both modes", "no dip", "collapsed")


def verdict(smallest_fractions: Any, dips: Any, threshold: float = MODE_THRESHOLD,
            dip_share: float = DIP_SHARE) -> str:
    """One of VERDICTS from the (seed, state) cells' smallest mode fractions and whether each
    cell's histogram has a dip (`has_dip`): "collapsed" if the mean smallest fraction is
    < threshold; else "both modes" if at least dip_share of the cells have a dip, "no dip"
    if not (balanced between the peaks on average, but not two separate modes)."""
    values = np.asarray(smallest_fractions, dtype=np.float64).ravel()
    dip_flags = np.asarray(dips, dtype=bool).ravel()
    if values.size == 0:
        raise ValueError("a verdict needs at least one smallest mode fraction")
    if dip_flags.size != values.size:
        raise ValueError(f"one dip flag per cell: {values.size} fractions, {dip_flags.size} flags")
    if float(np.mean(values)) < threshold:
        return "collapsed"
    return "both modes" if float(np.mean(dip_flags)) >= dip_share else "no dip"


# ---- the noise-limited optimum (why the three-peak toy's middle mode starves) ---------------

def aimed_reward(reward_fn: Callable[[Any], Any], mean_x: float, noise_std: float,
                 squash: Callable[[Any], Any] = np.tanh, nodes: int = 201) -> float:
    """E[R(squash(mean_x + noise_std z))], z ~ N(0, 1): the expected reward of a last
    denoising step aimed at pre-squash mean_x (Gauss-Hermite quadrature with `nodes` nodes)."""
    z, w = np.polynomial.hermite_e.hermegauss(nodes)
    return float(np.sum(w / w.sum() * np.asarray(reward_fn(squash(mean_x + noise_std * z)))))


def _noise_limited_setup(reward_fn: Callable[[Any], Any], noise_std: float,
                         action_space_entropy: bool, x_max: float, grid: int,
                         squash: Callable[[Any], Any]) -> tuple[np.ndarray, float, np.ndarray,
                                                                np.ndarray, np.ndarray]:
    """(x [grid], dx, kernel [grid, grid]: column i the N(x_i, noise_std^2) masses on the grid,
    rewards R(squash(x)) [grid], log-det [grid]: log(1 - tanh^2 x), or 0 in x space)."""
    x = np.linspace(-x_max, x_max, grid)
    kernel = np.exp(-0.5 * ((x[:, None] - x[None, :]) / noise_std) ** 2)  # [out j, mean i]
    kernel /= kernel.sum(axis=0, keepdims=True)
    rewards = np.asarray(reward_fn(squash(x)), dtype=np.float64)
    log_det = np.log1p(-np.tanh(x) ** 2) if action_space_entropy else np.zeros_like(x)
    return x, x[1] - x[0], kernel, rewards, log_det


def noise_limited_objective(weights: Any, reward_fn: Callable[[Any], Any], noise_std: float,
                            alpha: float, action_space_entropy: bool = True, x_max: float = 3.2,
                            grid: int = 321, squash: Callable[[Any], Any] = np.tanh) -> float:
    """E_pi[R(squash(x))] + alpha H(pi) for the pre-squash density pi = sum_i weights_i
    N(x_i, noise_std^2) (x_i: `grid` points on [-x_max, x_max]; each Gaussian discretised on
    the grid, pi as grid masses): a policy whose last denoising step adds noise of std
    noise_std to a mean drawn with probabilities `weights`. H: the entropy in action space
    (H in x plus E[log(1 - tanh^2 x)], as with squash_log_det) when action_space_entropy,
    else in pre-squash x (on the bounded grid)."""
    _, dx, kernel, rewards, log_det = _noise_limited_setup(
        reward_fn, noise_std, action_space_entropy, x_max, grid, squash)
    pi = kernel @ (np.asarray(weights, dtype=np.float64) / np.sum(weights))
    mask = pi > 0
    entropy = -np.sum(pi[mask] * np.log(pi[mask] / dx)) + pi @ log_det
    return float(pi @ rewards + alpha * entropy)


def noise_limited_optimum(reward_fn: Callable[[Any], Any], peaks: Sequence[float],
                          noise_std: float, alpha: float, action_space_entropy: bool = True,
                          x_max: float = 3.2, grid: int = 321, iters: int = 2000,
                          squash: Callable[[Any], Any] = np.tanh) -> tuple[np.ndarray, np.ndarray]:
    """The best MaxEnt policy whose last step adds N(0, noise_std^2) noise in pre-squash x:
    the weights maximising `noise_limited_objective` (a concave problem; Blahut-Arimoto-style
    multiplicative updates w_i <- w_i exp(dF/dw_i / alpha), normalised, from uniform).
    -> (mode fractions [P]: the optimum's probability mass nearest each peak in action space,
    weights [grid])."""
    x, dx, kernel, rewards, log_det = _noise_limited_setup(
        reward_fn, noise_std, action_space_entropy, x_max, grid, squash)
    log_w = np.full(grid, -math.log(grid))
    for _ in range(iters):
        pi = kernel @ np.exp(log_w)
        grad = kernel.T @ (rewards / alpha - np.log(np.maximum(pi, 1e-300) / dx) + log_det)
        log_w = log_w + grad
        log_w -= np.max(log_w)
        log_w -= np.log(np.sum(np.exp(log_w)))
    weights = np.exp(log_w)
    pi = kernel @ weights
    nearest = np.argmin(np.abs(squash(x)[:, None] - np.asarray(peaks)[None, :]), axis=1)
    return np.bincount(nearest, weights=pi, minlength=len(peaks)), weights


def final_step_noise_std(config: Any, state: Any) -> np.ndarray | None:
    """[seeds]: sqrt(2 eta_{K-1}), the std of the last denoising step's noise in pre-squash x
    (first action dimension) at the end of training, eta = softplus(dt) / friction from the
    seeds' parameters (step sizes and friction may be learned); None without a diffusion
    policy."""
    params = state.policy_params
    if not isinstance(params, dict) or "dt" not in params:
        return None
    dt = np.logaddexp(0.0, np.asarray(params["dt"], dtype=np.float64))[:, -1]  # softplus
    dt = dt.reshape(dt.shape[0], -1)[:, 0]
    if "friction" in params:
        friction = np.logaddexp(0.0, np.asarray(params["friction"], dtype=np.float64)).ravel()
    else:
        friction = np.float64(config.diffusion.friction)
    return np.sqrt(2.0 * dt / friction)


# ---- run settings ---------------------------------------------------------------------------

_DW_GAUSSIAN = GaussianPolicyConfig(hidden_sizes=(64, 64))
# The diffusion chains' last denoising step adds Gaussian noise of std sqrt(2 eta_{K-1}) in
# pre-squash space, eta_{K-1} = dt0 * 0.27 / friction 0.25 at initialisation: 0.36 with
# SMALL_DIFFUSION's (and PPO_BANDIT_DIFFUSION's) dt0 0.06, about the distance from a peak
# (x = atanh(0.5) = 0.55) to the valley, so no density can dip much between the peaks. The
# double well uses dt0 0.02 (std 0.21) off-policy and 0.03 (0.26) for DiffPPO.
_DW_DIFFUSION = dataclasses.replace(SMALL_DIFFUSION, dt0=0.02)
_DW_PPO_DIFFUSION = dataclasses.replace(PPO_BANDIT_DIFFUSION, dt0=0.03)
_DW_OFF_POLICY = dict(
    total_env_steps=16_000, num_envs=16, learning_starts=1_000, batch_size=256,
    updates_per_step=4, num_evals=4, num_eval_envs=64, discount=0.9, normalize_obs=False,
    actor_lr=1e-3, critic_lr=1e-3, alpha_lr=1e-3, init_alpha=0.05, critic_hidden=(128, 128),
)
_DW_DIFF_OFF_POLICY = dict(
    _DW_OFF_POLICY, updates_per_step=8, diffusion=_DW_DIFFUSION, learning_starts=2_000,
    tau=0.05, max_grad_norm=0.5, critic_layer_norm=True, target_entropy_multiplier=8.0,
)
_DW_ON_POLICY = dict(
    total_env_steps=192_000, num_envs=64, unroll_length=10, num_epochs=4, num_minibatches=4,
    num_evals=4, num_eval_envs=64, discount=0.9, normalize_obs=False, critic_lr=1e-3,
    value_hidden=(64, 64),
)
# Explicit settings for toy/double_well (see the module docstring). The Gaussian ones are
# untuned; the diffusion ones were adjusted in two rounds, each variant one run of 4 seeds on
# CPU ("min": mean smaller mode fraction; "near" / "valley": mean smaller near-peak / valley
# share; "dips": share of (seed, heading) cells with a dip; alpha: final temperature;
# return: stochastic, of 10; budgets in round 1: 16k env steps off-policy (DiffSAC 24k),
# 64k on-policy).
# Round 1, nearest-peak verdict only. Shared settings (dt0 0.06, multiplier 4): DiffWPO min
# 0.32, DiffPPO 0.25 passed; DiffSAC's alpha ran to 0.004-0.011 and it drifted to one peak
# (min 0.16). For DiffSAC: learning_starts 2,000 alone 0.19; multiplier 3.5 0.42; fixed alpha
# 0.02 0.43; multiplier 3 0.44 (alpha settles at 0.05). But every passing variant was one
# wide hump over [-0.8, 0.8] (near 0.05-0.09, what a uniform spread gives: 0.1).
# Round 2, with the dip criterion. DiffPPO (c = entropy coefficient): round-1 settings no dip
# (near 0.05, valley 0.12, dips 0, return 5.1); dt0 0.03: no dip (0.09, 0.07, 0.25, 6.5);
# dt0 0.015: collapsed (min 0.12: 2 seeds on one peak); dt0 0.03 and 192k steps: two seeds
# with two narrow modes, two collapsed (min 0.25, dips 0.5); dt0 0.015, c 0.2, 192k: both
# modes (min 0.48, near 0.29, valley 0.02, dips 1.0, return 8.0); dt0 0.03, c 0.15, 192k:
# both modes (0.48, 0.31, 0.013, 1.0, return 8.3): kept. PPO at the same 192k, c 0.05 and
# 0.15: collapsed in 4 of 4 (returns 9.7, 9.1). DiffWPO: dt0 0.02 with multiplier 4: two
# wide humps reaching the squash limits, alpha rose to 0.39 (H_hat falls with the smaller
# steps, so its target had to come down), return 0.5; dt0 0.02 with multiplier 8 (the
# MuJoCo preset's): both modes (min 0.33, near 0.18, valley 0.011, dips 0.94, alpha 0.021,
# return 7.7): kept. DiffSAC with the paper's per-step estimator: round-1 settings (dt0
# 0.06, multiplier 3) no dip (near 0.09, dips 0); dt0 0.02: no dip, a near-uniform spread
# over [-0.7, 0.7] (near 0.10, valley 0.18, alpha 0.04, return 4.1); dt0 0.02 with
# multiplier 8: collapsed (min 0.007, alpha fell to 0.001); multiplier 5: collapsed (min
# 0.06, alpha 0.004); a fixed alpha of 0.05 or 0.2: no dip (near 0.10, valley 0.18 / 0.15,
# return 4.1 / 3.2). Its actor sees the reward only through the critics of the
# intermediate denoising steps, each bootstrapped from the next.
# With the full-chain estimator (spec section 4: the actor loss alpha sum_k l_k - Q(s, x_K)
# backpropagated through all K steps, so the last step's critic drives every step), dt0 0.02
# and multiplier 3: both modes (min 0.49, near 0.25, valley 0.028, dips 1.0, alpha 0.22,
# return 7.4, KL to its Boltzmann target 0.21 nats): kept, so DiffSAC here is the full-chain
# variant (it trained in 1,034 s against 496 s for the per-step runs beside it on this CPU).
DOUBLE_WELL_SETTINGS: dict[str, dict[str, Any]] = {
    "sac": dict(_DW_OFF_POLICY, total_env_steps=24_000, gaussian=_DW_GAUSSIAN),
    "diffsac": dict(_DW_DIFF_OFF_POLICY, total_env_steps=24_000, estimator="full_chain",
                    target_entropy_multiplier=3.0),
    "wpo": dict(_DW_OFF_POLICY, gaussian=_DW_GAUSSIAN, actor_lr=3e-3, init_alpha=0.01,
                natural_gradient=True, policy_tau=0.05),
    "diffwpo": dict(_DW_DIFF_OFF_POLICY, natural_gradient=False, policy_tau=0.05,
                    num_action_samples=1),
    "ppo": dict(_DW_ON_POLICY, gaussian=_DW_GAUSSIAN, actor_lr=1e-3, entropy_coef=0.05),
    "diffppo": dict(_DW_ON_POLICY, diffusion=_DW_PPO_DIFFUSION, actor_lr=3e-3,
                    entropy_coef=0.15),
}


# the benchmark's own settings of an environment (on top of its presets); none elsewhere
BENCHMARK_SETTINGS: dict[str, dict[str, dict[str, Any]]] = {
    "toy/double_well": DOUBLE_WELL_SETTINGS,
}


def benchmark_overrides(algo: str, env: str) -> dict[str, Any]:
    """The keyword overrides of the benchmark's run of algo on env (on top of the (algo, env)
    preset): its BENCHMARK_SETTINGS (toy/double_well: DOUBLE_WELL_SETTINGS), none for any
    other `benchmarkable` environment (toy/bandit and toy/three_peaks: their presets)."""
    if not benchmarkable(env_spec(env)):
        raise ValueError(f"the multimodality benchmark covers {list(benchmark_envs())} "
                         f"(environments declaring peaks, probe states and reward_of_action), "
                         f"got {env!r}")
    return dict(BENCHMARK_SETTINGS.get(env, {}).get(algo, {}))


def _is_off_policy(config: Any) -> bool:
    return trainer_for(config.algo).config_class is OffPolicyConfig


def quick_overrides(config: Any) -> dict[str, Any]:
    """Overrides that shrink a resolved config to a smoke run: 2 intervals of a few hundred
    env steps (on-policy: 2 rollouts of 64 envs per interval), tiny networks and 2-step
    diffusion chains (the other diffusion settings, e.g. prior_std, are kept)."""
    small = dict(
        num_evals=2, num_eval_envs=64,
        diffusion=dataclasses.replace(config.diffusion, num_steps=2, hidden_sizes=(16,),
                                      time_hidden=8),
        gaussian=dataclasses.replace(config.gaussian, hidden_sizes=(16,)),
    )
    if _is_off_policy(config):
        return dict(small, total_env_steps=256 + 2 * 16 * 16, num_envs=16, learning_starts=256,
                    batch_size=64, updates_per_step=1, buffer_size=4096, critic_hidden=(32,))
    return dict(small, total_env_steps=2 * 2 * 64 * config.unroll_length, num_envs=64,
                num_epochs=1, num_minibatches=2, value_hidden=(32,))


def run_overrides(algo: str, env: str, quick: bool, settings: Sequence[str] = ()) -> dict[str, Any]:
    """All keyword overrides of one run: `benchmark_overrides`, then `quick_overrides` of the
    config they give (with `settings` applied) when quick."""
    overrides = benchmark_overrides(algo, env)
    if quick:
        base = make_config(algo, env, settings=settings, **overrides)
        overrides.update(quick_overrides(base))
    return overrides


# ---- evaluating a trained run -----------------------------------------------------------

def final_temperature(config: Any, state: Any, num_seeds: int) -> np.ndarray:
    """[seeds]: the temperature at the end of training. Off-policy (SAC, WPO and Diff):
    exp(state.learner.log_alpha) when config.learn_alpha, else config.init_alpha; on-policy
    (PPO, DiffPPO): the entropy coefficient, exp(state.learner.log_entropy_coef) when
    config.learn_entropy_coef, else config.entropy_coef."""
    if _is_off_policy(config):
        learned, log_value, fixed = config.learn_alpha, "log_alpha", config.init_alpha
    else:
        learned, log_value, fixed = (config.learn_entropy_coef, "log_entropy_coef",
                                     config.entropy_coef)
    if learned:
        values = np.exp(np.asarray(getattr(state.learner, log_value), dtype=np.float64))
        return np.broadcast_to(values, (num_seeds,)).copy()
    return np.full(num_seeds, float(fixed))


def final_metric_per_seed(metrics_jsonl: str | Path, name: str, num_seeds: int) -> list[float | None]:
    """[seeds]: metric `name` of the last interval in a run's metrics.jsonl (None where a seed
    has no row or no finite value)."""
    last: dict[int, tuple[int, Any]] = {}
    with open(metrics_jsonl, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            row = json.loads(line)
            seed, interval = int(row["seed"]), int(row["interval"])
            if seed not in last or interval >= last[seed][0]:
                last[seed] = (interval, row.get(name))
    return [_finite_or_none(last[s][1]) if s in last else None for s in range(num_seeds)]


def sample_seed_actions(config: Any, state: Any, obs: Any, num_samples: int,
                        key: jax.Array) -> np.ndarray:
    """[seeds, S, num_samples, action_dim]: every seed's stochastic actions at the raw
    observations obs [S, obs_dim] (normalised with the seed's statistics when
    config.normalize_obs), seed i with key jax.random.split(key, seeds)[i]; per seed the
    computation of `plots.sample_policy_actions`, vmapped over the state's seed axis."""
    _, policy, transform = trainer_for(config.algo).build(config)
    obs = jnp.asarray(obs, jnp.float32)
    num_states, n = obs.shape[0], int(num_samples)
    num_seeds = jax.tree.leaves(state.policy_params)[0].shape[0]

    def one(params, stats, rng):
        seen = policy_obs(stats, obs, config.normalize_obs)
        flat = jnp.repeat(seen, n, axis=0)  # state-major, as sample_policy_actions
        actions = transform.act(params, flat, rng, deterministic=False).action
        return actions.reshape(num_states, n, policy.action_dim)

    sample = jax.jit(jax.vmap(one))
    return np.asarray(sample(state.policy_params, state.obs_stats, jax.random.split(key, num_seeds)))


def _finite_or_none(x: Any) -> float | None:
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def _mean_or_none(values: Sequence[float | None]) -> float | None:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(finite)) if finite else None


def analyse_actions(actions: np.ndarray, alphas: np.ndarray, env: str, labels: Sequence[str],
                    bins: int, reward_scale: float = 1.0) -> list[dict[str, Any]]:
    """Per seed: per probe state the mode fractions, histogram, target, KL and entropies.
    actions [seeds, S, n, A]; alphas [seeds]."""
    peaks = peaks_of(env)
    reward_fn = reward_of_action(env)
    edges = np.linspace(*ACTION_RANGE, bins + 1)
    per_seed = []
    for i, seed_actions in enumerate(actions):
        alpha = float(alphas[i])
        target = None  # no target without a positive temperature (e.g. PPO with c = 0)
        if math.isfinite(alpha) and alpha > 0:
            target = boltzmann_bin_probabilities(lambda a: np.asarray(reward_fn(a)), alpha, edges,
                                                 reward_scale)
        states = []
        for label, state_actions in zip(labels, seed_actions):
            p, _ = histogram_probabilities(state_actions, bins)
            fractions = mode_fractions(state_actions, peaks)
            near = near_peak_fractions(state_actions, peaks)
            valleys = valley_fractions(state_actions, peaks)
            states.append({
                "state": label,
                "mode_fractions": [float(f) for f in fractions],
                "min_mode_fraction": float(fractions.min()),
                "max_mode_fraction": float(fractions.max()),
                "near_peak_fractions": [float(f) for f in near],
                "valley_fractions": [float(f) for f in valleys],
                "dip": has_dip(near, valleys),
                "kl_to_target": None if target is None else kl_divergence(p, target),
                "histogram_entropy": histogram_entropy(p, edges),
                "histogram": [float(x) for x in p],
            })
        per_seed.append({
            "seed_index": i, "alpha": alpha, "states": states,
            "target": None if target is None else [float(x) for x in target],
            "target_mode_fractions": (None if target is None else
                                      [float(x) for x in target_mode_fractions(target, edges, peaks)]),
            "target_histogram_entropy": None if target is None else histogram_entropy(target, edges),
        })
    return per_seed


def summarise(per_seed: list[dict[str, Any]], returns: Sequence[float],
              entropies: Sequence[float | None]) -> dict[str, Any]:
    """The row's aggregates: means over seeds and states, the worst seed, the verdict."""
    cells = [s for seed in per_seed for s in seed["states"]]
    smallest = [c["min_mode_fraction"] for c in cells]
    dips = [c["dip"] for c in cells]
    return {
        "mode_fraction_min_mean": float(np.mean(smallest)),
        "mode_fraction_max_mean": float(np.mean([c["max_mode_fraction"] for c in cells])),
        "mode_fraction_min_worst": float(np.min(smallest)),
        "near_peak_min_mean": float(np.mean([min(c["near_peak_fractions"]) for c in cells])),
        "valley_mean": float(np.mean([max(c["valley_fractions"]) for c in cells])),
        "dip_share": float(np.mean(dips)),
        "kl_mean": _mean_or_none([c["kl_to_target"] for c in cells]),
        "histogram_entropy_mean": float(np.mean([c["histogram_entropy"] for c in cells])),
        "target_histogram_entropy_mean": _mean_or_none([s["target_histogram_entropy"] for s in per_seed]),
        "entropy_hat_mean": _mean_or_none(list(entropies)),
        "alpha_mean": _mean_or_none([s["alpha"] for s in per_seed]),
        "return_mean": _mean_or_none([_finite_or_none(r) for r in returns]),
        "seeds_both_modes": int(sum(verdict([c["min_mode_fraction"] for c in s["states"]],
                                            [c["dip"] for c in s["states"]])
                                    == "both modes" for s in per_seed)),
        "verdict": verdict(smallest, dips),
    }


def add_noise_limited_optimum(per_seed: list[dict[str, Any]], config: Any, state: Any,
                              alphas: np.ndarray, env: str) -> None:
    """Adds to each seed of a diffusion run its final "final_step_noise_std" and the mode
    fractions of `noise_limited_optimum` at that noise, its final temperature and its entropy
    space (action space with squash_log_det, else pre-squash x):
    "noise_limited_mode_fractions" (None without a positive temperature)."""
    noise = final_step_noise_std(config, state)
    if noise is None:
        return
    reward_fn = reward_of_action(env)
    for seed, std, alpha in zip(per_seed, noise, alphas):
        seed["final_step_noise_std"] = float(std)
        fractions = None
        if math.isfinite(float(alpha)) and alpha > 0:
            fractions, _ = noise_limited_optimum(lambda a: np.asarray(reward_fn(a)), peaks_of(env),
                                                 float(std), float(alpha),
                                                 bool(config.diffusion.squash_log_det))
        seed["noise_limited_mode_fractions"] = (None if fractions is None
                                                else [float(f) for f in fractions])


def plot_histograms(actions: np.ndarray, per_seed: list[dict[str, Any]], labels: Sequence[str],
                    env: str, algo: str, bins: int, path: Path) -> Path:
    """One panel per (seed, state): the sampled actions' histogram (`plots.
    action_histogram_figure`) with the Boltzmann target's expected counts drawn over it."""
    num_seeds, num_states, n = actions.shape[:3]
    flat = actions.reshape((num_seeds * num_states,) + actions.shape[2:])
    panel_labels = [f"seed {i}: {label}" for i in range(num_seeds) for label in labels]
    fig = action_histogram_figure(
        flat, panel_labels, peaks_of(env), bins=bins,
        title=f"{algo}, {env}: {n} actions per panel")
    edges = np.linspace(*ACTION_RANGE, bins + 1)
    axes = [ax for ax in fig.axes if ax.get_visible()]
    for k, ax in enumerate(axes[: num_seeds * num_states]):
        seed = per_seed[k // num_states]
        if seed["target"] is not None:
            ax.stairs(np.asarray(seed["target"]) * n, edges, color="C3", lw=1.2,
                      label="Boltzmann target")
            ax.text(0.02, 0.97, f"alpha={seed['alpha']:.3g}", transform=ax.transAxes,
                    fontsize="x-small", va="top")
            if k == 0:
                ax.legend(fontsize="x-small", loc="upper center")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=100)
    return path


def benchmark_one(env: str, algo: str, args: argparse.Namespace, run_dir: Path) -> dict[str, Any]:
    """Trains, loads, samples and analyses one (env, algo); the row of the result."""
    overrides = run_overrides(algo, env, args.quick, args.set)
    t0 = time.perf_counter()
    summary = run_experiment(
        algo, env, None, args.seeds, args.seed, run_dir, progress=False, settings=args.set,
        options=RunOptions(checkpoint_every=0, max_to_keep=1, metrics_formats=("jsonl",),
                           progress="none", plots=True),
        **overrides)
    train_wall = time.perf_counter() - t0
    row: dict[str, Any] = {
        "env": env, "algo": algo, "num_seeds": args.seeds, "run_dir": str(run_dir),
        "status": summary["status"], "message": summary.get("message"),
        "total_env_steps": summary["total_env_steps"],
        "overrides": {k: (dataclasses.asdict(v) if dataclasses.is_dataclass(v) else v)
                      for k, v in overrides.items()},
        "config": summary["config"],
        "compile_seconds": summary["compile_seconds"], "train_seconds": summary["train_seconds"],
        "run_wall_seconds": train_wall,
        "final_eval_return": summary["final_eval_return"],
        "final_eval_return_deterministic": summary["final_eval_return_deterministic"],
        "training_eval_mode_fractions": summary.get("mode_fractions"),
    }
    if summary["checkpoints"]["last"] is None:
        row.update(verdict=None, error=f"no checkpoint to evaluate (status {summary['status']})")
        return row
    run = load_run(run_dir)
    row["checkpoint_step"] = run.step
    labels, obs = toy_probe_states(env, args.probe_states)
    t0 = time.perf_counter()
    actions = sample_seed_actions(run.config, run.state, obs, args.samples,
                                  jax.random.PRNGKey(args.sample_seed))
    alphas = final_temperature(run.config, run.state, args.seeds)
    per_seed = analyse_actions(actions, alphas, env, labels, args.bins,
                               float(run.config.reward_scale))
    entropies = final_metric_per_seed(run_dir / "metrics.jsonl", "entropy", args.seeds)
    for seed, ret, ent in zip(per_seed, summary["final_eval_return"], entropies):
        seed["final_eval_return"] = _finite_or_none(ret)
        seed["entropy_hat"] = ent
    add_noise_limited_optimum(per_seed, run.config, run.state, alphas, env)
    row["per_seed"] = per_seed
    row.update(summarise(per_seed, summary["final_eval_return"], entropies))
    row["noise_limited_min_mean"] = _mean_or_none(
        [min(s["noise_limited_mode_fractions"]) if s.get("noise_limited_mode_fractions")
         else None for s in per_seed])
    row["histogram_png"] = str(plot_histograms(actions, per_seed, labels, env, algo, args.bins,
                                               run_dir / HISTOGRAM_FILE))
    row["analysis_seconds"] = time.perf_counter() - t0
    return row


# ---- output -------------------------------------------------------------------------------

def _fmt(x: float | None, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def print_table(result: dict[str, Any]) -> None:
    print(f"multimodality: {result['num_seeds']} seed(s), {result['samples']} actions per seed "
          f"and state, {result['bins']} bins, {result['device']}, jax {result['jax_version']}")
    print(f"{'env':<16} {'algo':<8} {'seeds':>5} {'mode min':>8} {'mode max':>8} "
          f"{'near min':>8} {'valley':>6} {'dips':>5} {'KL':>7} "
          f"{'H_hat':>7} {'H_hist':>7} {'alpha':>8} {'return':>8} {'NL min':>6}  verdict")
    for row in result["rows"]:
        print(f"{row['env']:<16} {row['algo']:<8} {row['num_seeds']:>5} "
              f"{_fmt(row.get('mode_fraction_min_mean'), '.3f'):>8} "
              f"{_fmt(row.get('mode_fraction_max_mean'), '.3f'):>8} "
              f"{_fmt(row.get('near_peak_min_mean'), '.3f'):>8} "
              f"{_fmt(row.get('valley_mean'), '.3f'):>6} "
              f"{_fmt(row.get('dip_share'), '.2f'):>5} "
              f"{_fmt(row.get('kl_mean'), '.3f'):>7} "
              f"{_fmt(row.get('entropy_hat_mean'), '.3f'):>7} "
              f"{_fmt(row.get('histogram_entropy_mean'), '.3f'):>7} "
              f"{_fmt(row.get('alpha_mean'), '.3g'):>8} "
              f"{_fmt(row.get('return_mean'), '.3f'):>8} "
              f"{_fmt(row.get('noise_limited_min_mean'), '.3f'):>6}  "
              f"{row.get('verdict') or row.get('error')}")
    print(f"mode min / max: mean over seeds and probe states of the smaller / larger share of "
          f"actions nearest a peak. near min: the same mean of the smaller share within "
          f"{NEAR_PEAK_RADIUS} of a peak; valley: of the share within {NEAR_PEAK_RADIUS} of the "
          f"midpoint between the peaks; dips: the share of (seed, state) cells whose valley "
          f"share is <= {DIP_RATIO} x their smaller near-peak share. verdict: 'collapsed' if mode "
          f"min < {MODE_THRESHOLD}, else 'both modes' if dips >= {DIP_SHARE}, else 'no dip'. KL: "
          f"KL(action histogram || Boltzmann target exp(R/alpha)/Z on the bins) in nats. "
          f"H_hat: the run's final entropy estimate; H_hist: the histogram's differential "
          f"entropy in action space. return: final stochastic evaluation return. NL min: "
          f"the smaller mode fraction of the noise-limited optimum (the best MaxEnt policy "
          f"whose last denoising step has the run's final noise std; Diff variants only).")


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--envs", nargs="+", default=None,
                        help=f"any of {' '.join(ENVS)}, or an environment of --import "
                             f"(default: {' '.join(DEFAULT_ENVS)})")
    parser.add_argument("--import", dest="imports", action="append", default=[],
                        metavar="MODULE_OR_FILE",
                        help="import a module (or .py file) that registers environments with "
                             "diffrl_jax.envs.register_env (with peaks, probe_states and "
                             "reward_of_action) before --envs is checked (repeatable)")
    parser.add_argument("--algos", nargs="+", default=None,
                        help=f"any of {' '.join(ALGOS)} (default: {' '.join(DEFAULT_ALGOS)})")
    parser.add_argument("--seeds", type=int, default=None,
                        help=f"seeds per run (default {DEFAULT_SEEDS}; --quick {QUICK_SEEDS})")
    parser.add_argument("--seed", type=int, default=0, help="the runs' base seed (default 0)")
    parser.add_argument("--samples", type=int, default=None,
                        help=f"actions per seed and probe state (default {DEFAULT_SAMPLES}; "
                             f"--quick {QUICK_SAMPLES})")
    parser.add_argument("--sample-seed", type=int, default=0, help="key of the action sampling")
    parser.add_argument("--bins", type=int, default=DEFAULT_BINS,
                        help=f"histogram bins over [-1, 1] (default {DEFAULT_BINS})")
    parser.add_argument("--probe-states", type=int, default=DEFAULT_PROBE_STATES,
                        help=f"double-well headings (default {DEFAULT_PROBE_STATES}; the bandit "
                             f"has one state)")
    parser.add_argument("--set", nargs="+", default=[], metavar="FIELD=VALUE",
                        help="config overrides for every run (as train.py's --set)")
    parser.add_argument("--out-dir", default=None,
                        help="where the runs and histograms go (OUT_DIR/<env>/<algo>); must not "
                             "hold them already (default: runs/multimodality/<date-time>, git-ignored)")
    parser.add_argument("--out", default="multimodality.json", help="the JSON result")
    parser.add_argument("--quick", action="store_true",
                        help=f"smoke run: {' '.join(QUICK_ENVS)}, {' '.join(QUICK_ALGOS)}, "
                             f"{QUICK_SEEDS} seeds, tiny runs (unless given otherwise)")
    args = parser.parse_args(argv)

    quick = args.quick
    try:
        import_env_modules(args.imports)
    except ImportError as err:
        parser.error(str(err))
    if args.envs is None:
        args.envs = list(QUICK_ENVS if quick else DEFAULT_ENVS)
    if args.algos is None:
        args.algos = list(QUICK_ALGOS if quick else DEFAULT_ALGOS)
    if args.seeds is None:
        args.seeds = QUICK_SEEDS if quick else DEFAULT_SEEDS
    if args.samples is None:
        args.samples = QUICK_SAMPLES if quick else DEFAULT_SAMPLES
    for name, choices in (("envs", benchmark_envs()), ("algos", ALGOS)):
        values = getattr(args, name)
        unknown = [v for v in values if v not in choices]
        if unknown:
            parser.error(f"unknown {name[:-1]}(s) {', '.join(map(repr, unknown))} in --{name}; "
                         f"allowed: {', '.join(choices)}")
        if len(set(values)) != len(values):
            parser.error(f"--{name} lists a value twice: {' '.join(values)}")
    for name in ("seeds", "samples", "bins", "probe_states"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.out_dir is None:
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        args.out_dir = str(Path("runs") / "multimodality" / stamp)
    out_dir = Path(args.out_dir)
    taken = [str(out_dir / env / algo) for env in args.envs for algo in args.algos
             if (out_dir / env / algo).exists() and any((out_dir / env / algo).iterdir())]
    if taken:
        parser.error(f"--out-dir already holds runs in {', '.join(taken)}; give a fresh --out-dir")
    # every config is resolved (and so validated) before anything is trained
    for env in args.envs:
        for algo in args.algos:
            make_config(algo, env, settings=args.set,
                        **run_overrides(algo, env, args.quick, args.set))
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parse(argv)
    out_dir = Path(args.out_dir)
    t_start = time.perf_counter()
    rows = []
    for env in args.envs:
        for algo in args.algos:
            row = benchmark_one(env, algo, args, out_dir / env / algo)
            rows.append(row)
            print(f"[{env} {algo}] {row['status']}, {row['total_env_steps']:,d} env steps/seed, "
                  f"compile {row['compile_seconds']:.1f}s, train {row['train_seconds']:.1f}s: "
                  f"{row.get('verdict') or row.get('error')}", flush=True)
    device = jax.devices()[0]
    result = {
        "benchmark": "multimodality",
        "command": shlex.join(["python", "benchmarks/multimodality.py", *argv]),
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "jax_version": jax.__version__,
        "device": device.device_kind, "platform": device.platform,
        "quick": args.quick, "envs": args.envs, "algos": args.algos,
        "num_seeds": args.seeds, "base_seed": args.seed, "samples": args.samples,
        "sample_seed": args.sample_seed, "bins": args.bins, "probe_states": args.probe_states,
        "settings": args.set, "out_dir": str(out_dir),
        "definitions": {
            "mode_threshold": MODE_THRESHOLD, "near_peak_radius": NEAR_PEAK_RADIUS,
            "dip_ratio": DIP_RATIO, "dip_share": DIP_SHARE,
            "verdict": f"'collapsed' if the mean over seeds and probe states of the smallest "
                       f"mode fraction is < {MODE_THRESHOLD}; else 'both modes' if at least "
                       f"{DIP_SHARE} of the (seed, state) cells have a dip, else 'no dip'",
            "dip": f"a (seed, state) cell has a dip when its valley fraction is <= {DIP_RATIO} "
                   f"times its smaller near-peak fraction (and that is > 0)",
            "valley_fractions": f"share of sampled actions within {NEAR_PEAK_RADIUS} of each "
                                f"midpoint between adjacent peaks",
            "mode_fractions": "share of sampled actions nearest each peak (ties: first peak)",
            "near_peak_fractions": f"share of sampled actions within {NEAR_PEAK_RADIUS} of "
                                   f"each peak",
            "target": "q_j = int_bin exp(reward_scale * R(a) / alpha) da / Z (midpoint rule, "
                      f"{TARGET_SUBDIVISIONS} points per bin); alpha: final temperature "
                      "(off-policy exp(log_alpha) or init_alpha; on-policy entropy coefficient)",
            "target_double_well": "myopic (one-step) Boltzmann target of the reward as a "
                                  "function of the action: a reference, not the learned "
                                  "critic's soft-optimal policy",
            "kl": f"KL(p || q~) = sum_(p_j > 0) p_j log(p_j / q~_j), q~ = (q + eps) / "
                  f"(1 + bins eps), eps = {KL_EPSILON}; nats",
            "histogram_entropy": "-sum_j p_j log(p_j / bin width), nats, action space",
            "entropy_hat": "the run's 'entropy' metric (H_hat) of its last interval",
            "noise_limited_mode_fractions": "mode fractions of the best MaxEnt policy (E[R] + "
                                            "alpha H at the run's final temperature, H in the "
                                            "run's entropy space) whose last denoising step "
                                            "adds the run's final noise std in pre-squash x "
                                            "(noise_limited_optimum; Diff variants only)",
            "return": "final stochastic evaluation return (summary final_eval_return)",
            "double_well_settings": "DOUBLE_WELL_SETTINGS of the script: Gaussian ones "
                                    "untuned; diffusion ones adjusted (dt0 0.02, DiffPPO "
                                    "0.03; DiffSAC full_chain estimator; see the script)",
        },
        "wall_seconds": None,
        "rows": rows,
    }
    result["wall_seconds"] = time.perf_counter() - t_start
    print_table(result)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
