"""Figures of a run: learning curves from summary.json, and histograms of a policy's actions
at fixed states of the toy environments (do both reward modes survive training?).

Figures are drawn on `matplotlib.figure.Figure` with an explicit Agg canvas, never through
pyplot, so importing or using this module leaves a user's chosen matplotlib backend alone and
needs no display. The `*_figure` functions return the Figure (for inspection or further
drawing); the `plot_*` functions write PNGs and return their paths.
"""

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from diffrl_jax.envs import RunningStats, peaks_of, probe_states_of, registered_envs
from diffrl_jax.training import trainer_for
from diffrl_jax.training.collection import policy_obs
from diffrl_jax.types import Params, PRNGKey

__all__ = [
    "ACTION_RANGE",
    "action_histogram_counts",
    "action_histogram_figure",
    "action_histogram_title",
    "learning_curve_figure",
    "plot_action_histograms",
    "plot_learning_curves",
    "plot_run",
    "sample_policy_actions",
    "toy_probe_states",
]

ACTION_RANGE = (-1.0, 1.0)
LEARNING_CURVE_FILE = "learning_curve.png"
ACTION_HISTOGRAM_FILE = "action_histogram.png"


# ---- writing --------------------------------------------------------------------------------

def _new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)  # attaches itself as fig.canvas; no pyplot, no global backend
    return fig


def _save(fig: Figure, path: str | Path, dpi: int) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=dpi)
    return path


# ---- learning curves ------------------------------------------------------------------------

def _curve_arrays(summary: Any, index: int) -> dict[str, Any]:
    """One summary's eval curve as arrays: steps [T], per_seed [T, n], deterministic [T, n] or
    None (summaries without deterministic returns). ValueError naming what is missing."""
    where = f"summary {index}"
    if not isinstance(summary, Mapping):
        raise ValueError(f"{where} must be a dict (a summary.json), got {type(summary).__name__}")
    if "eval_curve" not in summary:
        raise ValueError(f"{where} has no 'eval_curve' key; keys: {sorted(summary)}")
    curve = summary["eval_curve"]
    if not isinstance(curve, Sequence) or isinstance(curve, str) or len(curve) == 0:
        raise ValueError(f"{where}: 'eval_curve' must be a non-empty list of evaluation points")
    for i, point in enumerate(curve):
        if not isinstance(point, Mapping):
            raise ValueError(f"{where}: eval_curve[{i}] must be a dict, got {type(point).__name__}")
        for key in ("env_steps", "return_per_seed"):
            if key not in point:
                raise ValueError(f"{where}: eval_curve[{i}] has no {key!r} key")
    steps = np.asarray([p["env_steps"] for p in curve], dtype=np.float64)

    def per_seed(key: str) -> np.ndarray:
        rows = [np.atleast_1d(np.asarray(p[key], dtype=np.float64)) for p in curve]
        sizes = {row.shape for row in rows}
        if len(sizes) != 1 or rows[0].ndim != 1 or rows[0].size == 0:
            raise ValueError(f"{where}: every eval_curve[i][{key!r}] must list the same number "
                             f"(>= 1) of seeds, got shapes {sorted(sizes)}")
        return np.stack(rows)

    returns = per_seed("return_per_seed")
    deterministic = None
    if all("return_deterministic_per_seed" in p for p in curve):
        deterministic = per_seed("return_deterministic_per_seed")
    return {"steps": steps, "returns": returns, "deterministic": deterministic}


def _series_labels(summaries: Sequence[Mapping[str, Any]]) -> list[str]:
    """The algo names; env and then position added where that is needed to tell them apart."""
    names = [str(s.get("algo", f"run {i}")) for i, s in enumerate(summaries)]
    if len(set(names)) < len(names):
        names = [f"{n} ({s['env']})" if "env" in s else n for n, s in zip(names, summaries, strict=True)]
    if len(set(names)) < len(names):
        names = [f"{n} #{i}" for i, n in enumerate(names)]
    return names


def _standard_error(x: np.ndarray) -> np.ndarray:
    """[T, n] -> [T]: the standard error of the mean over seeds (0 for a single seed)."""
    n = x.shape[1]
    return np.std(x, axis=1, ddof=1) / math.sqrt(n) if n > 1 else np.zeros(x.shape[0])


def learning_curve_figure(summaries: Sequence[Mapping[str, Any]] | Mapping[str, Any],
                          title: str | None = None, labels: Sequence[str] | None = None) -> Figure:
    """The eval return against env steps of one or several summaries on one axes.

    Per summary (one colour each): every seed's stochastic return (thin lines, with >= 2
    seeds), the mean over seeds (thick; with one seed, that seed's curve, labelled so), a band
    of mean +- one standard error over seeds (with >= 2 seeds), and the mean of the
    deterministic returns (dashed) when the summary has them. labels: one legend
    name per summary (default: the algo names). ValueError on malformed input.
    """
    if isinstance(summaries, Mapping):
        summaries = [summaries]
    summaries = list(summaries)
    if not summaries:
        raise ValueError("learning curves need at least one summary")
    curves = [_curve_arrays(s, i) for i, s in enumerate(summaries)]
    if labels is None:
        labels = _series_labels(summaries)
    elif len(labels) != len(summaries):
        raise ValueError(f"got {len(labels)} labels for {len(summaries)} summaries")

    fig = _new_figure(7.0, 4.5)
    ax = fig.add_subplot()
    colors = [f"C{i % 10}" for i in range(len(summaries))]
    for curve, label, color in zip(curves, labels, colors, strict=True):
        steps, returns, det = curve["steps"], curve["returns"], curve["deterministic"]
        n = returns.shape[1]
        mean = returns.mean(axis=1)
        for seed in range(n if n > 1 else 0):  # one seed: its curve is the mean
            ax.plot(steps, returns[:, seed], color=color, lw=0.7, alpha=0.35,
                    label=f"{label}: each seed (n={n})" if seed == 0 else None)
        ax.plot(steps, mean, color=color, lw=2.4,
                label=f"{label}: mean over {n} seeds" if n > 1 else f"{label}: one seed")
        if n > 1:
            se = _standard_error(returns)
            ax.fill_between(steps, mean - se, mean + se, color=color, alpha=0.2, lw=0,
                            label=f"{label}: mean ± 1 standard error")
        if det is not None:
            ax.plot(steps, det.mean(axis=1), color=color, lw=1.6, ls="--",
                    label=f"{label}: deterministic" + (" mean" if n > 1 else ""))
    ax.set_xlabel("environment steps")
    ax.set_ylabel("evaluation return (stochastic unless dashed)")
    ax.grid(True, alpha=0.3)
    if title is None:
        envs = sorted({str(s["env"]) for s in summaries if "env" in s})
        title = f"{', '.join(envs)}: evaluation return" if envs else "evaluation return"
    ax.set_title(title)
    ax.legend(fontsize="small", loc="best")
    return fig


def plot_learning_curves(summaries: Sequence[Mapping[str, Any]] | Mapping[str, Any],
                         path: str | Path, title: str | None = None,
                         labels: Sequence[str] | None = None, dpi: int = 120) -> Path:
    """Writes `learning_curve_figure(summaries, title, labels)` to path as a PNG; returns it."""
    return _save(learning_curve_figure(summaries, title, labels), path, dpi)


# ---- policy actions at probe states ---------------------------------------------------------

def toy_probe_states(env_name: str, num_states: int) -> tuple[list[str], np.ndarray]:
    """The states at which to histogram a policy's actions: (labels, raw obs [S, obs_dim]),
    as environment `env_name` declares them (`envs.probe_states_of`; `register_env`'s
    probe_states).

    toy/bandit, toy/three_peaks: the one state (S = 1 whatever num_states is), obs [1.0].
    toy/double_well: num_states headings h = -pi + 2 pi i / num_states (spread over
    [-pi, pi)) at t = 0, obs (cos h, sin h, 0), labelled like "h=-90°".
    ValueError for an environment that declares none, or a num_states that is not a
    positive integer.
    """
    probes = probe_states_of(env_name, num_states)
    if probes is None:
        declared = sorted(n for n, s in registered_envs().items() if s.probe_states is not None)
        raise ValueError(f"no probe states defined for environment {env_name!r} (register_env's "
                         f"probe_states); environments with probe states: {declared}")
    return probes


def sample_policy_actions(config: Any, policy_params: Params, obs_stats: RunningStats,
                          obs: Any, num_samples: int, key: PRNGKey) -> np.ndarray:
    """num_samples actions of the policy of config (built by its trainer's `build`) at each of
    the raw observations obs [S, obs_dim], normalised with obs_stats as in training when
    config.normalize_obs: -> [S, num_samples, action_dim], in [-1, 1]. One jitted call.

    policy_params, obs_stats: one seed's (e.g. `state.policy_params`, `state.obs_stats` of
    `train`; index the seed axis of a vmapped run's state first).
    """
    build = trainer_for(config.algo).build  # ValueError for an unknown algorithm
    if isinstance(num_samples, bool) or not isinstance(num_samples, (int, np.integer)) or num_samples < 1:
        raise ValueError(f"num_samples must be a positive integer, got {num_samples!r}")
    _, policy, transform = build(config)
    obs = jnp.asarray(obs, jnp.float32)
    if obs.ndim != 2 or obs.shape[1] != policy.obs_dim:
        raise ValueError(f"obs must have shape [num_states, obs_dim={policy.obs_dim}], "
                         f"got {tuple(obs.shape)}")
    num_states, n = obs.shape[0], int(num_samples)

    @jax.jit
    def sample(params, stats, raw_obs, rng):
        seen = policy_obs(stats, raw_obs, config.normalize_obs)  # [S, obs_dim]
        flat = jnp.repeat(seen, n, axis=0)  # [S * n, obs_dim], state-major
        actions = transform.act(params, flat, rng, deterministic=False).action
        return actions.reshape(num_states, n, policy.action_dim)

    return np.asarray(sample(policy_params, obs_stats, obs, key))


def action_histogram_counts(actions: Any, bins: int = 40) -> tuple[np.ndarray, np.ndarray]:
    """actions [S, n, action_dim] (the first dimension is used) -> (counts [S, bins] int,
    edges [bins + 1]) over ACTION_RANGE; actions outside it or non-finite are not counted."""
    actions = np.asarray(actions)
    if actions.ndim != 3 or actions.shape[2] < 1:
        raise ValueError(f"actions must have shape [num_states, num_samples, action_dim], "
                         f"got {actions.shape}")
    if isinstance(bins, bool) or not isinstance(bins, (int, np.integer)) or bins < 1:
        raise ValueError(f"bins must be a positive integer, got {bins!r}")
    edges = np.linspace(*ACTION_RANGE, bins + 1)
    counts = np.stack([np.histogram(a[:, 0], bins=edges)[0] for a in actions])
    return counts, edges


def _peak_fractions(first_actions: np.ndarray, peaks: Sequence[float]) -> np.ndarray:
    """[n] -> [P]: the share of the finite actions nearest each peak."""
    finite = first_actions[np.isfinite(first_actions)]
    if finite.size == 0:
        return np.zeros(len(peaks))
    nearest = np.argmin(np.abs(finite[:, None] - np.asarray(peaks)[None, :]), axis=1)
    return np.bincount(nearest, minlength=len(peaks)) / finite.size


def action_histogram_figure(actions: Any, labels: Sequence[str], peaks: Sequence[float],
                            title: str | None = None, bins: int = 40,
                            max_columns: int = 4) -> Figure:
    """One histogram panel per state of the first action dimension of actions
    [S, n, action_dim] over [-1, 1] (bars = `action_histogram_counts`), dashed vertical
    lines at the reward peaks, and each panel's share of actions nearest each peak."""
    counts, edges = action_histogram_counts(actions, bins)
    first = np.asarray(actions)[:, :, 0]
    num_states = counts.shape[0]
    labels = list(labels)
    if len(labels) != num_states:
        raise ValueError(f"got {len(labels)} labels for {num_states} states")
    peaks = [float(p) for p in peaks]
    columns = max(1, min(num_states, max_columns))
    rows = math.ceil(num_states / columns)
    fig = _new_figure(3.0 * columns + 0.4, 2.4 * rows + 0.6)
    axes = fig.subplots(rows, columns, squeeze=False)
    for s, ax in enumerate(axes.flat):
        if s >= num_states:
            ax.set_visible(False)
            continue
        ax.bar(edges[:-1], counts[s], width=np.diff(edges), align="edge", color="C0",
               alpha=0.8, label="actions")
        for j, peak in enumerate(peaks):
            ax.axvline(peak, color="k", ls="--", lw=1.0, label="reward peak" if j == 0 else None)
        panel = labels[s]
        if peaks:
            shares = _peak_fractions(first[s], peaks)
            panel = panel + "\nshare nearest " + ", ".join(
                f"{p:g}: {f:.2f}" for p, f in zip(peaks, shares, strict=True))
        ax.set_title(panel, fontsize="small")
        ax.set_xlim(*ACTION_RANGE)
        if s % columns == 0:
            ax.set_ylabel("samples")
        ax.set_xlabel("action (dim 0)")
    if peaks:
        axes.flat[0].legend(fontsize="x-small", loc="upper center")
    if title is not None:
        fig.suptitle(title)
    return fig


def plot_action_histograms(actions: Any, labels: Sequence[str], peaks: Sequence[float],
                           path: str | Path, title: str | None = None, bins: int = 40,
                           dpi: int = 120) -> Path:
    """Writes `action_histogram_figure(actions, labels, peaks, title, bins)` to path as a
    PNG; returns it."""
    return _save(action_histogram_figure(actions, labels, peaks, title, bins), path, dpi)


# ---- a run's figures ------------------------------------------------------------------------

def action_histogram_title(name: str, num_seeds: int, seed_index: int, num_samples: int) -> str:
    """The action histogram's title: which policy and which samples it shows (one seed's
    final policy, stochastic samples at the probe states; not the evaluation episodes that
    summary.json's mode_fractions count)."""
    seed = f"seed {seed_index} of {num_seeds}" if num_seeds > 1 else "its one seed"
    return (f"{name + ': ' if name else ''}actions of the final policy, {seed}\n"
            f"{num_samples} stochastic samples per state (not the evaluation episodes)")


def plot_run(out_dir: str | Path, summary: Mapping[str, Any], actions: Any = None,
             labels: Sequence[str] | None = None, seed_index: int = 0,
             curves: bool = True) -> list[Path]:
    """Writes out_dir/learning_curve.png (unless curves is False), and
    out_dir/action_histogram.png when actions [S, n, action_dim] are given: seed
    `seed_index`'s final policy sampled n times per probe state, which its title says
    (`action_histogram_title`; labels default to "state i"; peaks are the summary's
    "mode_peaks", else the environment's, else none drawn). Returns the paths written."""
    out_dir = Path(out_dir)
    name = " ".join(str(summary[k]) for k in ("algo", "env") if isinstance(summary, Mapping) and k in summary)
    paths = []
    if curves:
        paths.append(plot_learning_curves(summary, out_dir / LEARNING_CURVE_FILE,
                                          title=f"{name}: evaluation return" if name else None))
    if actions is not None:
        num_states = np.shape(actions)[0]
        if labels is None:
            labels = [f"state {i}" for i in range(num_states)]
        peaks = summary.get("mode_peaks") or peaks_of(str(summary.get("env", "")))
        title = action_histogram_title(name, int(summary.get("num_seeds", 1)), seed_index,
                                       int(np.shape(actions)[1]))
        paths.append(plot_action_histograms(actions, labels, peaks, out_dir / ACTION_HISTOGRAM_FILE,
                                            title=title))
    return paths
