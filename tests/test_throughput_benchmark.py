"""The Brax throughput benchmark holds the two sides' settings equal, keeps Brax running on
newer JAX, and reports what it measured."""

import importlib.util
import json
import math
import os
import subprocess
import sys
import types
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffrl_jax.experiment import make_config

_ROOT = Path(__file__).resolve().parents[1]
_PATH = _ROOT / "benchmarks" / "throughput.py"
_spec = importlib.util.spec_from_file_location("throughput", _PATH)
tp = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tp)

CASES = [(algo, scale) for scale in tp.SCALES for algo in tp.ALGOS]


def _pair(algo, scale, **overrides):
    return tp.paired_settings(algo, tp.DEFAULT_ENV[scale], "mjx",
                              tp.scale_for(algo, scale, **overrides))


# ---- the settings mapping ----------------------------------------------------------------

@pytest.mark.parametrize("algo,scale", CASES)
def test_both_sides_hold_the_same_settings_field_by_field(algo, scale):
    config, brax = _pair(algo, scale)
    ours, theirs = tp.matched_fields(algo, config, brax)
    assert ours.keys() == theirs.keys()
    assert {k: ours[k] for k in ours} == {k: theirs[k] for k in ours}
    assert config.algo == algo and config.normalize_obs and brax["normalize_observations"]
    assert brax["num_evals"] == config.num_evals + 1  # Brax's extra one is at step 0
    assert brax["max_devices_per_host"] == 1


def test_the_fields_that_must_match_include_the_schedule_and_networks():
    for algo in tp.ALGOS:
        config, brax = _pair(algo, "cpu")
        ours, _ = tp.matched_fields(algo, config, brax)
        for name in ("num_envs", "env_steps_per_iteration", "training_intervals",
                     "iterations_per_interval", "total_env_steps", "policy_hidden",
                     "normalize_observations", "num_eval_envs", "episode_length"):
            assert name in ours, (algo, name)
    ppo, _ = tp.matched_fields("ppo", *_pair("ppo", "cpu"))
    assert {"minibatch_transitions", "num_minibatches", "epochs", "value_hidden",
            "sequential_env_steps_per_iteration"} <= ppo.keys()
    sac, _ = tp.matched_fields("sac", *_pair("sac", "cpu"))
    assert {"batch_size", "updates_per_step", "replay_size", "prefill_env_steps",
            "q_hidden"} <= sac.keys()


@pytest.mark.parametrize("algo,field,value", [
    ("ppo", "batch_size", 32), ("ppo", "unroll_length", 8), ("ppo", "num_minibatches", 8),
    ("ppo", "num_updates_per_batch", 2), ("ppo", "policy_hidden_layer_sizes", [64, 64]),
    ("ppo", "value_hidden_layer_sizes", [256] * 4), ("ppo", "num_evals", 4),
    ("ppo", "num_eval_envs", 16), ("ppo", "episode_length", 500), ("ppo", "num_timesteps", 10**6),
    ("sac", "grad_updates_per_step", 8), ("sac", "batch_size", 128),
    ("sac", "min_replay_size", 2048), ("sac", "max_replay_size", 10**6),
    ("sac", "hidden_layer_sizes", [128, 128]), ("sac", "num_envs", 32),
    ("sac", "normalize_observations", False), ("sac", "learning_rate", 1e-3),
])
def test_a_broken_mapping_is_caught(algo, field, value):
    config, brax = _pair(algo, "cpu")
    ours, theirs = tp.matched_fields(algo, config, dict(brax, **{field: value}))
    assert ours != theirs


def test_one_rollout_of_ours_is_one_brax_unroll_by_default():
    config, brax = _pair("ppo", "cpu")
    assert brax["batch_size"] == config.num_envs // config.num_minibatches
    assert brax["unroll_length"] == config.unroll_length
    assert (brax["num_envs"], brax["num_minibatches"], brax["num_updates_per_batch"]) == (
        config.num_envs, config.num_minibatches, config.num_epochs)


def test_gpu_scale_is_the_reference_shape():
    config, brax = _pair("ppo", "gpu")
    assert tp.DEFAULT_ENV["gpu"] == "brax/ant" and brax["env_name"] == "ant"
    assert (brax["num_envs"], brax["batch_size"], brax["unroll_length"],
            brax["num_minibatches"], brax["num_updates_per_batch"]) == (4096, 2048, 5, 32, 4)
    # Brax collects 2048 * 32 / 4096 = 16 unrolls of 5 steps per iteration: our one rollout is 80
    assert (config.num_envs, config.unroll_length, config.num_minibatches,
            config.num_epochs) == (4096, 80, 32, 4)
    config, brax = _pair("sac", "gpu")
    assert (config.num_envs, config.batch_size, config.updates_per_step) == (128, 512, 8)
    assert (brax["num_envs"], brax["batch_size"], brax["grad_updates_per_step"]) == (128, 512, 8)


def test_brax_kwargs_build_the_networks_of_the_settings():
    for algo in tp.ALGOS:
        _, brax = _pair(algo, "quick")
        kwargs = tp.brax_train_kwargs(algo, brax)
        factory = kwargs.pop("network_factory")
        assert not {"env_name", "backend", "activation"} & kwargs.keys()
        if algo == "ppo":
            assert factory.keywords["policy_hidden_layer_sizes"] == tuple(brax["policy_hidden_layer_sizes"])
            assert factory.keywords["value_hidden_layer_sizes"] == tuple(brax["value_hidden_layer_sizes"])
        else:
            assert factory.keywords["hidden_layer_sizes"] == tuple(brax["hidden_layer_sizes"])
        assert factory.keywords["activation"] is jax.nn.relu


@pytest.mark.parametrize("env", ["toy/bandit", "ant", "brax/no_such_env"])
def test_environments_other_than_brax_are_refused(env):
    with pytest.raises(ValueError, match="allowed"):
        tp.paired_settings("ppo", env, "mjx", tp.scale_for("ppo", "quick"))


def test_bad_arguments_are_refused_with_the_allowed_values(capsys):
    with pytest.raises(ValueError, match="allowed"):
        tp.scale_for("wpo")
    with pytest.raises(ValueError, match="allowed"):
        tp.paired_settings("wpo", "brax/ant", "mjx", tp.scale_for("sac", "quick"))
    with pytest.raises(ValueError, match="allowed"):
        tp.paired_settings("sac", "brax/ant", "warp", tp.scale_for("sac", "quick"))
    for argv, words in ((["--algos", "wpo"], "invalid choice"),
                        (["--env", "toy/bandit"], "allowed"),
                        (["--backend", "warp"], "invalid choice"),
                        (["--repeats", "0"], "--repeats"),
                        (["--gpu-scale", "--quick"], "not allowed"),
                        (["--num-evals", "2"], "num_evals"),
                        (["--ppo-minibatches", "3"], "num_minibatches")):
        with pytest.raises(SystemExit):
            tp.main(argv + ["--no-compile-cache"])
        assert words in capsys.readouterr().err, argv


# ---- JAX compatibility for Brax ----------------------------------------------------------

def _original_device_put_replicated():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return jax.device_put_replicated


def test_shim_matches_jax_device_put_replicated():
    tree = {"int": 3, "float": 1.5, "array": jnp.arange(6.0).reshape(2, 3),
            "numpy": np.arange(4, dtype=np.int32), "bool": jnp.array([True, False])}
    devices = jax.local_devices()
    expected = _original_device_put_replicated()(tree, devices)
    got = tp.device_put_replicated(tree, devices)
    assert jax.tree.structure(got) == jax.tree.structure(expected)
    for g, e in zip(jax.tree.leaves(got), jax.tree.leaves(expected)):
        assert g.shape == e.shape and g.shape[0] == len(devices)
        assert g.dtype == e.dtype and g.weak_type == e.weak_type
        np.testing.assert_array_equal(np.asarray(g), np.asarray(e))
        assert g.sharding == e.sharding
    with pytest.raises(ValueError, match="non-empty"):
        tp.device_put_replicated(tree, [])


def test_shim_matches_on_two_devices():
    code = f"""
import importlib.util, warnings
import jax, jax.numpy as jnp, numpy as np
spec = importlib.util.spec_from_file_location("throughput", {str(_PATH)!r})
tp = importlib.util.module_from_spec(spec); spec.loader.exec_module(tp)
devices = jax.local_devices()
assert len(devices) == 2, devices
tree = {{"a": jnp.arange(3.0), "b": 7, "c": (np.ones((2, 2)), 0.5)}}
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    expected = jax.device_put_replicated(tree, devices)
got = tp.device_put_replicated(tree, devices)
for g, e in zip(jax.tree.leaves(got), jax.tree.leaves(expected)):
    assert g.shape == e.shape and g.shape[0] == 2 and g.dtype == e.dtype, (g, e)
    np.testing.assert_array_equal(np.asarray(g), np.asarray(e))
    assert g.sharding == e.sharding, (g.sharding, e.sharding)
    assert [s.device for s in g.addressable_shards] == devices
    assert all(np.array_equal(s.data, e.addressable_shards[0].data) for s in g.addressable_shards)
print("ok")
"""
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2",
               JAX_PLATFORMS="cpu", PYTHONPATH=str(_ROOT))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().endswith("ok")


def test_compat_installs_only_what_is_missing(monkeypatch):
    original = _original_device_put_replicated()
    assert tp.install_jax_compat() == []  # JAX 0.9 still has it
    assert _original_device_put_replicated() is original
    bare = types.ModuleType("jax")  # a JAX without device_put_replicated
    monkeypatch.setattr(tp, "jax", bare)
    assert tp.install_jax_compat() == ["jax.device_put_replicated"]
    assert bare.device_put_replicated is tp.device_put_replicated


# ---- what each side measures -------------------------------------------------------------

def test_brax_progress_gives_epoch_eval_and_compile_seconds():
    # the evaluation at step 0, then 4 epochs of 1,000 steps (the first after a prefill of
    # 200, as SAC's step counter has it); epochs 1-2 and evaluations 0-1 compile
    records = [(10.0, 0, math.nan, 9.0), (25.0, 1200, 1000 / 12.0, 3.0),
               (32.0, 2200, 1000 / 6.0, 1.0), (34.5, 3200, 500.0, 0.5), (37.0, 4200, 400.0, 0.5)]
    out = tp.parse_brax_progress(records, t0=0.0, wall=40.0, intervals=4, epoch_env_steps=1000,
                                 cache_saved=5.0)
    np.testing.assert_allclose(out["epoch_seconds"], [12.0, 6.0, 2.0, 2.5])
    assert out["train_seconds"] == pytest.approx(4.5)
    assert out["env_steps"] == 2000
    assert out["env_steps_per_second"] == pytest.approx(2000 / 4.5)
    assert out["window_seconds_with_eval"] == pytest.approx(37.0 - 32.0)
    # wall - 4 steady epochs (median 2.25) - 5 steady evals (median 0.5) + cache savings
    assert out["compile_seconds"] == pytest.approx(40.0 - 4 * 2.25 - 5 * 0.5 + 5.0)
    with pytest.raises(RuntimeError, match="step 0"):
        tp.parse_brax_progress(records[1:], 0.0, 40.0, 4, 1000)
    with pytest.raises(RuntimeError, match="epochs of 900"):
        tp.parse_brax_progress(records, 0.0, 40.0, 4, 900)


@pytest.mark.parametrize("algo", ["ppo", "sac"])
def test_our_runner_times_the_intervals_after_warmup(algo):
    # the toy bandit's episodes are one step long: evaluation is short next to an interval
    sizes = (dict(num_envs=16, unroll_length=4, num_minibatches=2, num_epochs=2,
                  total_env_steps=4 * 8 * 64) if algo == "ppo" else
             dict(num_envs=8, batch_size=32, updates_per_step=2, learning_starts=16,
                  total_env_steps=16 + 4 * 20 * 8))
    config = make_config(algo, "toy/bandit", num_evals=4, num_eval_envs=4, **sizes)
    runner = tp.OursRunner(algo, config)
    assert runner.compile_seconds > 0
    out = runner.run(jax.random.PRNGKey(3))
    marks = out["interval_end_seconds"]
    assert len(marks) == 4 and marks == sorted(marks) and marks[-1] <= out["run_seconds"]
    assert out["env_steps"] == 2 * tp.steps_per_interval(algo, config)
    assert out["window_seconds_with_eval"] == pytest.approx(marks[3] - marks[1])
    assert out["train_seconds"] == pytest.approx(out["window_seconds_with_eval"]
                                                 - 2 * out["eval_seconds"])
    assert out["env_steps_per_second"] == pytest.approx(out["env_steps"] / out["train_seconds"])


class _FakeOurs:
    """OursRunner without compiling: 2 s per measured window."""

    def __init__(self, algo, config):
        self.algo, self.config, self.compile_seconds = algo, config, 12.0

    def run(self, key):
        steps = (self.config.num_evals - tp.WARMUP_INTERVALS) * tp.steps_per_interval(
            self.algo, self.config)
        return {"run_seconds": 5.0, "interval_end_seconds": [1.0, 2.0, 3.0],
                "eval_seconds": 0.25, "window_seconds_with_eval": 2.5, "train_seconds": 2.0,
                "env_steps": steps, "env_steps_per_second": steps / 2.0}


def _fake_brax(algo, brax, seed):
    intervals = brax["num_evals"] - 1
    config, _ = _pair(algo, "quick")
    per_epoch = tp.steps_per_interval(algo, config)
    records = [(1.0, 0, math.nan, 3.0)] + [
        (2.0 + i, per_epoch * (i + 1), per_epoch / (3.0 + seed % 7), 0.1) for i in range(intervals)]
    return tp.parse_brax_progress(records, 0.0, 30.0, intervals, per_epoch)


def test_main_writes_the_table_it_prints(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(tp, "OursRunner", _FakeOurs)
    monkeypatch.setattr(tp, "run_brax", _fake_brax)
    out = tmp_path / "throughput.json"
    result = tp.main(["--quick", "--repeats", "2", "--no-compile-cache", "--out", str(out)])
    assert json.loads(out.read_text()) == result
    assert (result["scale"], result["repeats"], result["env"]) == ("quick", 2, "brax/inverted_pendulum")
    assert result["jax_version"] == jax.__version__ and result["brax_version"]
    assert [row["algo"] for row in result["rows"]] == ["ppo", "sac"]
    for row in result["rows"]:
        assert len(row["ours_runs"]) == len(row["brax_runs"]) == len(row["ratios"]) == 2
        for ratio, ours, brax in zip(row["ratios"], row["ours_runs"], row["brax_runs"]):
            assert ratio == pytest.approx(brax["train_seconds"] / ours["train_seconds"])
        assert row["ratio_min"] <= row["ratio_median"] <= row["ratio_max"]
        assert row["ours_compile_seconds"] == 12.0
        assert row["ours_settings"]["algo"] == row["algo"] and row["brax_settings"]["num_envs"]
    printed = capsys.readouterr().out
    assert "ppo" in printed and "sac" in printed and "ours/Brax" in printed
