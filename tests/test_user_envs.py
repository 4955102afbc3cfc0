"""A user's own environment through the public API only (`diffrl_jax.envs.register_env` with
an `EnvCore`): registration checks, training with DiffSAC and SAC through `run_experiment`
and `experiments/train.py --import`, an environment without peaks or probe states, resume,
and the README's example."""

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffrl_jax.envs import (
    EnvCore,
    check_env_name,
    import_env_modules,
    list_envs,
    make_env,
    peaks_of,
    probe_states_of,
    register_env,
    unregister_env,
)
from diffrl_jax.experiment import RUN_CONFIG_FILE, RunOptions, make_config, run_experiment
from diffrl_jax.plots import toy_probe_states
from diffrl_jax.validation import ConfigError

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ROOT / "experiments" / "train.py"
PNG = b"\x89PNG\r\n\x1a\n"

# The user's module: a three-peak bandit (equal bumps of width 0.1 at a = -0.7, 0, 0.7; obs
# [1.0]; every step ends the episode) and the same bandit declaring nothing else.
ENV_MODULE = '''
import jax.numpy as jnp

from diffrl_jax.envs import EnvCore, register_env

PEAKS = (-0.7, 0.0, 0.7)


def reward(a):
    return sum(jnp.exp(-0.5 * ((a - c) / 0.1) ** 2) for c in PEAKS)


def make_core(episode_length):
    def reset(key):
        return jnp.zeros((), jnp.int32), jnp.ones(1, jnp.float32)

    def step(t, action):
        return t + 1, jnp.ones(1, jnp.float32), reward(action[0]), jnp.asarray(True)

    return EnvCore(obs_dim=1, action_dim=1, reset=reset, step=step,
                   physics_finite=lambda t: jnp.asarray(True))


register_env("{prefix}/three_peaks", make_core, episode_length=1, peaks=PEAKS,
             probe_states=[[1.0]], probe_labels=["the state"], reward_of_action=reward)
register_env("{prefix}/plain_bandit", make_core, episode_length=1)
'''

# tiny budgets: 2 intervals of 80 env steps, small networks
TINY_SETTINGS = [
    "total_env_steps=160", "num_envs=4", "learning_starts=32", "batch_size=16",
    "updates_per_step=2", "num_evals=2", "num_eval_envs=8", "buffer_size=256",
    "critic_hidden=16", "diffusion.num_steps=3", "diffusion.hidden_sizes=16",
    "diffusion.time_hidden=8", "gaussian.hidden_sizes=16",
]
QUIET = RunOptions(progress="none", metrics_formats=("csv", "jsonl"))


def write_module(directory: Path, prefix: str, name: str = "my_envs") -> Path:
    path = directory / f"{name}.py"
    path.write_text(ENV_MODULE.replace("{prefix}", prefix))
    return path


@pytest.fixture(scope="module")
def user_module(tmp_path_factory) -> Path:
    """The user's module written to a file and imported in this process by path."""
    path = write_module(tmp_path_factory.mktemp("user_module"), "user", "user_envs_inproc")
    assert import_env_modules([str(path)]) == [str(path.resolve())]
    return path


def one_step_core(obs_dim=1, action_dim=1, obs_len=None):
    """An EnvCore whose reset and step return observations of obs_len features (default:
    obs_dim, i.e. consistent)."""
    obs_len = obs_dim if obs_len is None else obs_len

    def reset(key):
        return jnp.zeros(()), jnp.zeros(obs_len)

    def step(s, a):
        return s, jnp.zeros(obs_len), jnp.sum(a), jnp.asarray(True)

    return EnvCore(obs_dim, action_dim, reset, step, lambda s: jnp.isfinite(s))


@pytest.fixture
def scratch_names():
    """Names registered by a test, removed after it."""
    names = []
    yield names
    for name in names:
        try:
            unregister_env(name)
        except KeyError:
            pass


# ---- registration ---------------------------------------------------------------------------

def test_registered_env_is_an_environment_like_the_builtins(user_module):
    name = "user/three_peaks"
    assert name in list_envs() and "user/plain_bandit" in list_envs()
    check_env_name(name)
    assert peaks_of(name) == (-0.7, 0.0, 0.7) and peaks_of("user/plain_bandit") == ()
    labels, obs = probe_states_of(name, 4)
    assert labels == ["the state"] and obs.tolist() == [[1.0]] and obs.dtype == np.float32
    assert probe_states_of("user/plain_bandit", 4) is None
    assert toy_probe_states(name, 4)[0] == ["the state"]
    with pytest.raises(ValueError, match="no probe states defined"):
        toy_probe_states("user/plain_bandit", 4)

    env = make_env(name)
    assert (env.name, env.obs_dim, env.action_dim, env.episode_length) == (name, 1, 1, 1)
    assert make_env(name, episode_length=5).episode_length == 5
    state = env.reset(jax.random.PRNGKey(0), 5)
    actions = jnp.array([[-0.7], [0.0], [0.7], [0.35], [1.0]])
    _, out = env.step(state, actions)
    # by hand: each peak has height 1 (+ the other bumps' tails, < 1e-10); at a = 0.35 two
    # bumps 3.5 widths away: 2 exp(-6.125); at a = 1: one bump 3 widths away: exp(-4.5)
    expected = [1.0, 1.0, 1.0, 2 * math.exp(-6.125), math.exp(-4.5)]
    np.testing.assert_allclose(out.reward, expected, rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(out.terminated, 1.0)

    config = make_config("diffsac", name, settings=TINY_SETTINGS)
    assert config.env == name


@pytest.mark.parametrize("bad", ["three_peaks", "user/a/b", "user/", "/x", "us er/x", "", 3])
def test_register_refuses_a_name_not_suite_slash_name(bad):
    with pytest.raises(ValueError, match="suite/name"):
        register_env(bad, lambda length: one_step_core())


@pytest.mark.parametrize("reserved", ["brax/mine", "toy/mine", "playground/Mine"])
def test_register_refuses_the_library_suites(reserved):
    with pytest.raises(ValueError, match="reserved"):
        register_env(reserved, lambda length: one_step_core())


def test_duplicate_name_needs_replace(scratch_names):
    scratch_names.append("scratch/dup")
    register_env("scratch/dup", lambda length: one_step_core(), episode_length=3)
    with pytest.raises(ValueError, match=r"already registered.*replace=True"):
        register_env("scratch/dup", lambda length: one_step_core(obs_dim=2))
    assert make_env("scratch/dup").obs_dim == 1  # the first registration stands
    register_env("scratch/dup", lambda length: one_step_core(obs_dim=2), replace=True)
    assert make_env("scratch/dup").obs_dim == 2


@pytest.mark.parametrize("factory,message", [
    (lambda length: "not an env", "must return a diffrl_jax.envs.EnvCore"),
    (lambda length: one_step_core(obs_dim=0), "obs_dim 0"),
    (lambda length: one_step_core(action_dim=1.5), "action_dim 1.5"),
    (lambda length: one_step_core(obs_dim=3, obs_len=2), "trial reset and step"),
])
def test_a_factory_that_returns_the_wrong_thing_is_named(factory, message, scratch_names):
    scratch_names.append("scratch/wrong")
    register_env("scratch/wrong", factory)
    with pytest.raises(ValueError, match=re.escape(message)):
        make_env("scratch/wrong")
    # make_config reports it as a config error, before anything compiles
    with pytest.raises(ConfigError, match="scratch/wrong"):
        make_config("sac", "scratch/wrong")


def test_an_environment_factory_returning_an_environment_must_match(scratch_names):
    scratch_names.extend(["scratch/ready", "scratch/misnamed"])
    register_env("scratch/ready", lambda length: make_env("toy/bandit", episode_length=length)
                 ._replace(name="scratch/ready"))
    assert make_env("scratch/ready", episode_length=4).episode_length == 4
    register_env("scratch/misnamed", lambda length: make_env("toy/bandit"))
    with pytest.raises(ValueError, match="must be named 'scratch/misnamed'"):
        make_env("scratch/misnamed")


def test_bad_metadata_is_refused_at_registration(scratch_names):
    scratch_names.append("scratch/meta")
    make = lambda length: one_step_core()
    for kwargs, message in [(dict(peaks=(0.0, 1.5)), "in \\[-1, 1\\]"),
                            (dict(peaks=()), "one or more"),
                            (dict(peaks=(0.2, 0.2)), "must differ"),
                            (dict(probe_states=[1.0, 2.0]), "probe_states must be a finite array"),
                            (dict(probe_states=[[1.0]], probe_labels=["a", "b"]), "2 probe_labels"),
                            (dict(episode_length=0), "episode_length"),
                            (dict(reward_of_action=3), "reward_of_action")]:
        with pytest.raises((ValueError, TypeError), match=message):
            register_env("scratch/meta", make, **kwargs)
    with pytest.raises(TypeError, match="factory must be callable"):
        register_env("scratch/meta", one_step_core())
    assert "scratch/meta" not in list_envs()
    # probe states of another width than the observations: found when the env is checked
    register_env("scratch/meta", make, probe_states=[[1.0, 2.0]])
    with pytest.raises(ValueError, match=r"probe states have 2 features.*obs_dim is 1"):
        check_env_name("scratch/meta")


def test_unknown_user_name_says_how_to_register():
    with pytest.raises(ValueError, match="--import"):
        check_env_name("mine/nothing_here")
    with pytest.raises(ValueError, match="--import"):
        make_env("mine/nothing_here")


def test_import_errors_name_the_module(tmp_path):
    with pytest.raises(ImportError, match="--import no_such_module_xyz: cannot import"):
        import_env_modules(["no_such_module_xyz"])
    with pytest.raises(ImportError, match="no such file"):
        import_env_modules([str(tmp_path / "missing.py")])
    broken = tmp_path / "broken_envs.py"
    broken.write_text("raise RuntimeError('boom')\n")
    with pytest.raises(ImportError, match="RuntimeError: boom"):
        import_env_modules([str(broken)])


# ---- training -------------------------------------------------------------------------------

def assert_run_written(out: Path, algo: str, env: str, seeds: int, histogram: bool = True):
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["algo"] == algo
    assert summary["env"] == env and len(summary["final_eval_return"]) == seeds
    assert all(math.isfinite(x) for x in summary["final_eval_return"])
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2 * seeds and {"eval_return", "seed", "env_steps"} <= set(rows[0])
    assert (out / "metrics.csv").read_text().count("\n") == 1 + 2 * seeds
    assert (out / "learning_curve.png").read_bytes()[:8] == PNG
    assert (out / "action_histogram.png").exists() == histogram
    if histogram:
        assert (out / "action_histogram.png").read_bytes()[:8] == PNG
    return summary


@pytest.mark.parametrize("algo", ["diffsac", "sac"])
def test_run_experiment_on_a_user_env(algo, user_module, tmp_path):
    out = tmp_path / algo
    summary = run_experiment(algo, "user/three_peaks", None, 2, 0, out, settings=TINY_SETTINGS,
                             options=QUIET, imports=[str(user_module)])
    on_disk = assert_run_written(out, algo, "user/three_peaks", 2)
    assert on_disk == json.loads(json.dumps(summary))
    assert summary["mode_peaks"] == [-0.7, 0.0, 0.7] and "notes" not in summary
    fractions = np.asarray(summary["mode_fractions"])
    assert fractions.shape == (2, 3)
    np.testing.assert_allclose(fractions.sum(-1), 1.0)
    record = json.loads((out / RUN_CONFIG_FILE).read_text())
    assert record["imports"] == [str(user_module.resolve())]
    assert record["env_source"] == "user_envs_inproc"


def test_env_without_peaks_or_probe_states_completes_with_notes(user_module, tmp_path, capfd):
    out = tmp_path / "plain"
    summary = run_experiment("sac", "user/plain_bandit", None, 1, 0, out,
                             settings=TINY_SETTINGS, options=QUIET)
    assert_run_written(out, "sac", "user/plain_bandit", 1, histogram=False)
    assert "mode_fractions" not in summary and "mode_peaks" not in summary
    assert len(summary["notes"]) == 2
    assert "no reward peaks" in summary["notes"][0] and "no probe states" in summary["notes"][1]
    err = capfd.readouterr().err
    assert "note: user/plain_bandit declares no probe states" in err
    assert "note: user/plain_bandit declares no reward peaks" in err


def test_a_failing_histogram_is_a_note_after_the_summary(tmp_path, capfd, scratch_names):
    """Probe states that break the policy's sampling (a callable whose states are checked at
    registration only by width): summary.json and learning_curve.png are still written."""
    scratch_names.append("scratch/bad_probes")
    calls = []

    def probes(num_states):
        calls.append(num_states)
        if len(calls) > 1:  # fine when the env is checked, broken when plotted
            return ["s"], np.full((1, 1), np.nan)
        return ["s"], np.ones((1, 1))

    register_env("scratch/bad_probes", lambda length: one_step_core(), episode_length=1,
                 peaks=(0.0,), probe_states=probes)
    out = tmp_path / "bad"
    run_experiment("sac", "scratch/bad_probes", None, 1, 0, out, settings=TINY_SETTINGS,
                   options=QUIET)
    assert json.loads((out / "summary.json").read_text())["status"] == "completed"
    assert (out / "learning_curve.png").exists() and not (out / "action_histogram.png").exists()
    assert "note: no action_histogram.png" in capfd.readouterr().err


def run_cli(args, cwd, env_extra=None, timeout=300):
    env = dict(os.environ, **(env_extra or {}))
    return subprocess.run([sys.executable, str(TRAIN), *args], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=timeout)


def tiny_flags():
    return [flag for s in TINY_SETTINGS for flag in ("--set", s)]


def test_train_cli_imports_the_user_module_by_path(tmp_path):
    """DiffSAC through `train.py --import FILE.py` (SAC through `--import MODULE`: the resume
    test below)."""
    module = write_module(tmp_path, "cli")
    out = tmp_path / "run"
    result = run_cli(["--import", str(module), "--algo", "diffsac", "--env", "cli/three_peaks",
                      "--num-seeds", "2", "--quiet", "--out", str(out), *tiny_flags()],
                     cwd=ROOT)
    assert result.returncode == 0, result.stderr
    summary = assert_run_written(out, "diffsac", "cli/three_peaks", 2)
    assert np.asarray(summary["mode_fractions"]).shape == (2, 3)
    assert "final eval return per seed" in result.stdout
    assert json.loads((out / RUN_CONFIG_FILE).read_text())["imports"] == [str(module.resolve())]


def test_train_cli_without_the_import_names_the_flag(tmp_path):
    result = run_cli(["--algo", "sac", "--env", "cli/three_peaks", "--out", str(tmp_path / "x")],
                     cwd=tmp_path)
    assert result.returncode == 2
    assert "unknown environment 'cli/three_peaks'" in result.stderr and "--import" in result.stderr
    result = run_cli(["--import", "nowhere_module", "--algo", "sac", "--env", "cli/three_peaks",
                      "--out", str(tmp_path / "x")], cwd=tmp_path)
    assert result.returncode == 2 and "--import nowhere_module: cannot import" in result.stderr


def test_resume_of_a_user_env_run_imports_the_recorded_module(tmp_path):
    """SAC through `train.py --import MODULE` (a module name, importable from the working
    directory), stopped after its first interval; resumed by another process with no
    --import: the recorded module registers the env again and the run completes."""
    module = write_module(tmp_path, "resumed")
    out = tmp_path / "run"
    first = run_cli(["--import", "my_envs", "--algo", "sac", "--env", "resumed/three_peaks",
                     "--quiet", "--out", str(out), "--stop-after-steps", "80", *tiny_flags()],
                    cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert json.loads((out / RUN_CONFIG_FILE).read_text())["imports"] == ["my_envs"]
    stopped = json.loads((out / "summary.json").read_text())
    assert stopped["status"] == "stopped" and stopped["intervals_done"] == 1
    second = run_cli(["--resume", str(out), "--quiet"], cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    summary = assert_run_written(out, "sac", "resumed/three_peaks", 1)
    assert summary["resumed_from"] == stopped["checkpoints"]["last"] > 0
    assert summary["intervals_done"] == 2
    # evaluate.py imports the recorded module too
    evaluated = subprocess.run([sys.executable, str(ROOT / "experiments" / "evaluate.py"),
                                "--checkpoint", str(out), "--episodes", "2"],
                               capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert evaluated.returncode == 0, evaluated.stderr
    result = json.loads(next(out.glob("evaluation_*.json")).read_text())
    assert result["env"] == "resumed/three_peaks"
    assert np.asarray(result["stochastic"]["mode_fractions"]).shape == (1, 3)

    # the module gone: the resume names the environment, the module and the flag
    module.unlink()
    (out / "summary.json").unlink()
    third = run_cli(["--resume", str(out), "--quiet"], cwd=tmp_path)
    assert third.returncode == 2
    assert "'resumed/three_peaks'" in third.stderr and "--import" in third.stderr
    assert "my_envs" in third.stderr


# ---- the README's example -------------------------------------------------------------------

def test_readme_example_runs(tmp_path):
    text = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- user-env-example -->\s*```python\n(.*?)```", text, re.S)
    assert block, "README.md lacks the marked 'Your own environment' example"
    script = tmp_path / "example.py"
    script.write_text(block.group(1))
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                            cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "runs" / "my_three_peaks" / "summary.json").read_text())
    assert summary["env"] == "user/three_peaks" and summary["status"] == "completed"
    assert len(summary["mode_peaks"]) == 3
    assert (tmp_path / "runs" / "my_three_peaks" / "action_histogram.png").exists()


def test_brax_and_playground_runs_get_no_notes_about_peaks_or_probe_states():
    """Only registered environments (toys, users') can declare peaks or probe states; a
    locomotion task's summary says nothing about them."""
    from diffrl_jax.experiment import _env_notes

    assert _env_notes("brax/inverted_pendulum") == []
    assert _env_notes("playground/CartpoleSwingup") == []
    assert _env_notes("toy/bandit") == []  # declares both
