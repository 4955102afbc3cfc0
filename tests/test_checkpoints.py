"""Full-state checkpoints, resume, interruption and non-finite stops of `run_experiment`.

One small SAC run on toy/bandit (4 intervals, 2 seeds) is trained straight through and, in a
second directory, stopped after 2 intervals and resumed: the two must be the same run.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffrl_jax.checkpoint_eval import evaluate_run, load_run, seed_policy
from diffrl_jax.checkpoints import CheckpointError, CheckpointStore
from diffrl_jax.experiment import DivergenceMonitor, RunOptions, run_experiment

from conftest import computed_once

ROOT = Path(__file__).resolve().parents[1]
ALGO, ENV, STEPS, SEEDS = "sac", "toy/bandit", 2000, 2
QUIET = RunOptions(plots=False, metrics_formats=("jsonl",))


def _run(out, **kw):
    options = kw.pop("options", QUIET)
    return run_experiment(ALGO, ENV, STEPS, SEEDS, 0, out, progress=False, options=options, **kw)


def _three_runs(base: Path):
    full = _run(base / "full")
    stopped = _run(base / "resumed", options=RunOptions(plots=False, metrics_formats=("jsonl",),
                                                        stop_after_steps=1200))
    resumed = run_experiment(None, ENV, None, None, None, base / "resumed", progress=False,
                             options=QUIET, resume=True)
    return full, stopped, resumed


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """(directory, full run, stopped run, resumed run); the directory is read-only."""
    (full, stopped, resumed), base = computed_once(tmp_path_factory, "test_checkpoints_runs",
                                                   _three_runs)
    return base, full, stopped, resumed


def test_a_stopped_and_resumed_run_is_the_uninterrupted_run(runs):
    base, full, stopped, resumed = runs
    assert full["status"] == "completed" and full["intervals_done"] == 4
    assert full["nonfinite_updates"] == [0] * SEEDS  # the guards skip nothing in a healthy run
    assert stopped["status"] == "stopped" and stopped["intervals_done"] == 2
    assert stopped["checkpoints"]["last"] == 1248
    assert resumed["status"] == "completed" and resumed["resumed_from"] == 1248
    # identical numbers, not merely close: the same compiled interval from the same state
    assert resumed["final_eval_return"] == full["final_eval_return"]
    assert resumed["final_eval_return_deterministic"] == full["final_eval_return_deterministic"]
    assert resumed["eval_curve"] == full["eval_curve"]  # the restored history + the new intervals
    state_full = load_run(base / "full").state
    state_resumed = load_run(base / "resumed").state
    for a, b in zip(jax.tree.leaves(state_full), jax.tree.leaves(state_resumed)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # the metric log continues without duplicates
    lines = [json.loads(x) for x in (base / "resumed" / "metrics.jsonl").read_text().splitlines()]
    assert [(r["env_steps"], r["seed"]) for r in lines] == [
        (s, i) for s in (880, 1248, 1616, 1984) for i in range(SEEDS)]


def test_checkpoints_hold_config_versions_and_keep_the_last_two(runs):
    base = runs[0]
    store = CheckpointStore(base / "full", read_only=True)
    assert store.steps() == [1616, 1984]  # max_to_keep=2 of 4 interval checkpoints
    step, meta = store.read_meta()
    assert step == 1984 and meta["intervals_done"] == 4 and meta["num_seeds"] == SEEDS
    assert meta["config"]["algo"] == ALGO and meta["config"]["total_env_steps"] == STEPS
    assert {"jax", "flax", "optax", "orbax-checkpoint", "diffrl_jax"} <= set(meta["versions"])
    run = load_run(base / "full", 1616)
    assert run.step == 1616 and int(run.state.env_steps[0]) == 1616
    assert run.state.buffer.data.obs.shape[0] == SEEDS  # the replay buffer is in the checkpoint


def test_resume_refuses_a_different_config_and_fresh_runs_refuse_to_overwrite(runs, tmp_path):
    base = runs[0]
    target = tmp_path / "copy"
    shutil.copytree(base / "full", target)
    with pytest.raises(CheckpointError, match=r"another config.*actor_lr"):
        run_experiment(ALGO, ENV, STEPS, SEEDS, 0, target, progress=False, options=QUIET,
                       resume=True, actor_lr=1e-2)
    with pytest.raises(CheckpointError, match=r"already holds a run \(summary.json, metrics.jsonl, checkpoints\)"):
        _run(target)
    with pytest.raises(CheckpointError, match="used seed 0, 3 given"):
        run_experiment(None, ENV, None, None, 3, target, progress=False, options=QUIET, resume=True)
    with pytest.raises(CheckpointError, match="holds 2 seeds, 3 given"):
        run_experiment(None, ENV, None, 3, None, target, progress=False, options=QUIET, resume=True)
    assert CheckpointStore(target, read_only=True).steps() == [1616, 1984]  # nothing lost


def test_corrupt_and_partial_checkpoints_fail_clearly_and_keep_earlier_ones(runs, tmp_path):
    target = tmp_path / "copy"
    shutil.copytree(runs[0] / "full", target)
    ckpt = target / "checkpoints"
    (ckpt / "2400.orbax-checkpoint-tmp").mkdir()  # a save that never completed
    assert CheckpointStore(target, read_only=True).steps() == [1616, 1984]
    for path in (ckpt / "1984" / "state").rglob("*"):
        if path.is_file() and path.stat().st_size > 0 and "metadata" not in path.name:
            path.write_bytes(b"\0" * 7)  # truncate every data file of the latest checkpoint
    # load_run is evaluate.py's: its hint names evaluate.py's flag, --step
    with pytest.raises(CheckpointError, match=r"1984 cannot be read.*\[1616\].*with --step\)"):
        load_run(target)
    run = load_run(target, 1616)  # the earlier one still loads
    assert int(run.state.env_steps[0]) == 1616
    (ckpt / "1616" / "meta" / "metadata").write_text("{not json")
    with pytest.raises(CheckpointError, match="1616 cannot be read"):
        load_run(target, 1616)
    with pytest.raises(CheckpointError, match=r"no checkpoint 5 .*available: \[1616, 1984\]"):
        load_run(target, 5)
    with pytest.raises(CheckpointError, match="no checkpoints in"):
        load_run(tmp_path / "nothing")


def test_a_nonfinite_state_is_never_saved(tmp_path):
    store = CheckpointStore(tmp_path)
    state = {"w": jnp.array([1.0, jnp.nan]), "key": jnp.zeros(2, jnp.uint32)}
    with pytest.raises(CheckpointError, match=r"non-finite values in \[\"\['w'\]\"\]"):
        store.save(1, state, {}, {})
    store.wait()
    assert store.steps() == []


def test_evaluate_command_reports_both_modes(runs, tmp_path):
    base = runs[0]
    out = tmp_path / "eval.json"
    result = subprocess.run([sys.executable, str(ROOT / "experiments" / "evaluate.py"),
                             "--checkpoint", str(base / "full"), "--episodes", "32",
                             "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    assert report["checkpoint_step"] == 1984 and report["episodes_per_seed"] == 32
    for mode in ("stochastic", "deterministic"):
        assert np.asarray(report[mode]["returns"]).shape == (SEEDS, 32)
        assert set(report["eval_mode"]) == {"stochastic", "deterministic"}
    # the bandit policy learned to hit a peak: deterministic actions score near 1
    assert min(report["deterministic"]["return_mean_per_seed"]) > 0.8
    assert "deterministic" in result.stdout and "stochastic" in result.stdout
    bad = subprocess.run([sys.executable, str(ROOT / "experiments" / "evaluate.py"),
                          "--checkpoint", str(tmp_path / "none")], capture_output=True, text=True,
                         timeout=120)
    assert bad.returncode == 2 and "no checkpoints in" in bad.stderr


def test_seed_policy_and_in_process_evaluation(runs):
    run = load_run(runs[0] / "full")
    policy, params, stats = seed_policy(run, 1)
    assert jax.tree.leaves(params)[0].shape == jax.tree.leaves(
        jax.tree.map(lambda x: x[1], run.state.policy_params))[0].shape
    result = evaluate_run(run, 8)
    assert len(result["stochastic"]["return_mean_per_seed"]) == SEEDS
    assert result["stochastic"]["mode_fractions"][0] != []
    with pytest.raises(ValueError, match="out of range"):
        seed_policy(run, 2)


def test_resuming_from_an_older_checkpoint_moves_later_ones_aside_and_continues(runs, tmp_path):
    target = tmp_path / "copy"
    shutil.copytree(runs[0] / "full", target)
    summary = run_experiment(None, ENV, None, None, None, target, progress=False, options=QUIET,
                             resume=True, resume_step=1616)
    assert summary["status"] == "completed" and summary["resumed_from"] == 1616
    assert summary["final_eval_return"] == runs[1]["final_eval_return"]  # the same run again
    assert CheckpointStore(target, read_only=True).steps() == [1616, 1984]
    assert (target / "superseded_checkpoints" / "1984").is_dir()  # the old 1984, kept aside
    # resuming a finished run trains nothing and reports it complete
    again = run_experiment(None, ENV, None, None, None, target, progress=False, options=QUIET,
                           resume=True)
    assert again["status"] == "completed" and again["intervals_done"] == 4
    assert again["env_steps_per_second"] is None and again["eval_curve"] == summary["eval_curve"]


def test_empty_metrics_are_left_out_of_checkpoints_and_recreated(tmp_path):
    from diffrl_jax.experiment import _append_history
    store = CheckpointStore(tmp_path)
    history = {"eval_return": np.ones((2, 3)), "eval_mode_counts": np.zeros((2, 3, 0))}
    # Brax states can hold empty arrays (no actuator activations), as metrics can
    state = {"w": jnp.arange(2.0), "act": jnp.zeros((2, 0)), "k": jnp.ones(3, jnp.uint32)}
    store.save(5, state, history, {"note": "x"})
    store.wait()
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), state)
    back, restored = store.restore(5, abstract)
    assert back["act"].shape == (2, 0) and back["k"].dtype == jnp.uint32
    np.testing.assert_array_equal(back["w"], [0.0, 1.0])
    assert set(restored) == {"eval_return"}
    other = dict(abstract, w=jax.ShapeDtypeStruct((3,), jnp.float32))
    with pytest.raises(CheckpointError, match=r"another layout.*\['w'\] \(2,\) float32 vs \['w'\] \(3,\) float32"):
        store.restore(5, other)
    extended = _append_history(restored, {"eval_return": np.ones((2, 1)),
                                          "eval_mode_counts": np.zeros((2, 1, 0))})
    assert extended["eval_return"].shape == (2, 4) and extended["eval_mode_counts"].shape == (2, 4, 0)
    with pytest.raises(CheckpointError, match="lacks 'q_mean'"):
        _append_history(restored, {"eval_return": np.ones((2, 1)), "q_mean": np.ones((2, 1))})


def test_divergence_monitor_counts_consecutive_bad_intervals():
    monitor = DivergenceMonitor(num_seeds=2, updates_per_interval=10, patience=2)
    assert not monitor.update(np.array([[6.0, 0.0], [0.0, 0.0]]))  # seed 0: bad then good
    assert not monitor.update(np.array([[6.0], [5.0]]))  # 5 of 10 is not more than half
    assert monitor.update(np.array([[10.0], [0.0]]))  # seed 0: two in a row
    assert "seed 0" in monitor.describe() and "2 consecutive" in monitor.describe()
    late = DivergenceMonitor(num_seeds=1, updates_per_interval=10, patience=2)
    assert late.update(np.array([[9.0, 9.0, 0.0]]))  # a streak inside one report counts
    assert late.healthy()


def test_a_run_that_keeps_producing_nans_stops_without_saving_a_bad_state(tmp_path):
    # validation refuses a plain NaN reward scale; an array value (as in a traced sweep)
    # is not checked there, so it reaches the compiled program and makes every loss NaN
    summary = run_experiment(ALGO, ENV, STEPS, SEEDS, 0, tmp_path, progress=False,
                             options=QUIET, reward_scale=np.float32("nan"))
    assert summary["status"] == "diverged" and summary["intervals_done"] == 2
    assert "non-finite" in summary["message"] and "Last checkpoint from before: none" in summary["message"]
    per_interval = summary["config"]["updates_per_step"] * 23  # 23 iterations per interval
    assert summary["nonfinite_updates"] == [2 * per_interval] * SEEDS
    assert CheckpointStore(tmp_path, read_only=True).steps() == []


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_ctrl_c_writes_a_checkpoint_and_resume_finishes_the_run(runs, tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, str(ROOT / "experiments" / "train.py"), "--algo", ALGO, "--env", ENV,
           "--total-steps", str(STEPS), "--num-seeds", str(SEEDS), "--out", str(out),
           "--progress", "lines", "--no-plots", "--no-compile-cache", "--metrics", "jsonl"]
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    for line in proc.stdout:  # wait for the first interval, then interrupt the running chunk
        if "eval return" in line:
            proc.send_signal(signal.SIGINT)
            break
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 130, stderr
    assert "interrupted" in stderr and "--resume" in stderr
    summary = json.loads((out / "summary.json").read_text())
    # the signal stops the run after the chunk (one interval) in progress, with a checkpoint
    assert summary["status"] == "interrupted" and 1 <= summary["intervals_done"] <= 2
    last = summary["checkpoints"]["last"]
    assert last == summary["eval_curve"][-1]["env_steps"]
    assert CheckpointStore(out, read_only=True).steps()[-1] == last
    result = subprocess.run([sys.executable, str(ROOT / "experiments" / "train.py"), "--resume",
                             str(out), "--quiet", "--no-plots", "--no-compile-cache"],
                            capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    final = json.loads((out / "summary.json").read_text())
    assert final["status"] == "completed" and final["resumed_from"] == last
    assert final["final_eval_return"] == runs[1]["final_eval_return"]  # the uninterrupted run


def test_a_save_survives_the_next_interval_donating_the_state(tmp_path):
    """The driver donates the state to the next interval right after an async save starts.
    Orbax copies the arrays to the host before `save` returns (on a CPU as NumPy views, which
    make XLA copy instead of donating), so the checkpoint holds the saved values."""
    store = CheckpointStore(tmp_path)
    state = {"big": jnp.arange(4_000_000, dtype=jnp.float32), "small": jnp.ones(3)}
    # compiled first, so the donating call follows the save at once, as in the driver
    overwrite = jax.jit(lambda s: jax.tree.map(lambda x: x * 0.0 - 7.0, s),
                        donate_argnums=0).lower(state).compile()
    store.save(1, state, {"eval_return": np.zeros(2)}, {"note": "donation"})
    after = overwrite(state)
    store.wait()
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), after)
    restored, _ = store.restore(1, abstract)
    np.testing.assert_array_equal(restored["big"], np.arange(4_000_000, dtype=np.float32))
    np.testing.assert_array_equal(restored["small"], np.ones(3))
    assert float(after["big"][0]) == -7.0
