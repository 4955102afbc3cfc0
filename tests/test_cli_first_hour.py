"""A user's first hour with the command-line scripts (issue 20): unusable output paths, resume
flags, runs stopped before their first checkpoint, --stop-after-steps' granularity, the CPU
warning for accelerator-scale presets and the small things. One tiny run (Gaussian PPO on
toy/bandit, 2 seeds, 4 intervals of 256 env steps) is trained once for the module and copied
where a test changes it; it is resumed once. Everything else stops before compiling."""

import contextlib
import importlib.util
import io
import json
import shutil
import warnings
from pathlib import Path

import pytest

from diffrl_jax import experiment
from diffrl_jax.checkpoints import CheckpointStore
from diffrl_jax.cli import filter_known_warnings

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--algo", "ppo", "--env", "toy/bandit", "--num-seeds", "2", "--set", "total_env_steps=1024",
        "--no-compile-cache", "--progress", "lines"]


def _load(name):
    spec = importlib.util.spec_from_file_location(f"cli_{name}", ROOT / "experiments" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


train, evaluate, sweep, plot, reproduce = (_load(n) for n in ("train", "evaluate", "sweep",
                                                               "plot", "reproduce"))


def _main(module, argv):
    """(exit status, stdout, stderr) of module.main(argv), argparse's exits included."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = module.main(argv)
        except SystemExit as exit_:
            code = exit_.code
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def stopped(tmp_path_factory):
    """The tiny run, stopped by --stop-after-steps 300: (run dir, stdout, stderr)."""
    run = tmp_path_factory.mktemp("first_hour") / "run"
    code, out, err = _main(train, [*TINY, "--stop-after-steps", "300", "--out", str(run)])
    assert code == 0, err
    return run, out, err


def _copy(stopped, tmp_path):
    target = tmp_path / "run"
    shutil.copytree(stopped[0], target)
    return target


# ---- 1: unusable output paths --------------------------------------------------------------

def _a_file(tmp_path):
    a_file = tmp_path / "a_file"
    a_file.write_text("not a directory")
    return a_file


@pytest.mark.parametrize("script", ["train", "sweep", "reproduce"])
def test_an_unusable_out_directory_is_one_line_and_exit_2(script, tmp_path):
    argv = {"train": [*TINY], "sweep": ["--algo", "ppo", "--env", "toy/bandit", "--grid",
                                        "actor_lr=1e-3,3e-3", "--no-compile-cache"],
            "reproduce": ["--tasks", "brax/inverted_pendulum", "--no-compile-cache"]}[script]
    a_file = _a_file(tmp_path)
    for path, reason in {"/proc/diffrl_run": "no directory can be created in '/proc'",
                         str(a_file / "run"): f"{str(a_file)!r} is a file, so no directory",
                         str(a_file): f"{str(a_file)!r} is not a directory"}.items():
        code, out, err = _main(globals()[script], [*argv, "--out", path])
        assert code == 2, (script, path, err)
        assert err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err
        assert repr(path) in err and reason in err, err
        assert not Path(path).is_dir()


@pytest.mark.parametrize("script", ["evaluate", "plot"])
def test_an_unusable_out_file_is_one_line_and_exit_2(script, stopped, tmp_path):
    first = {"evaluate": ["--checkpoint", str(stopped[0])], "plot": ["--runs", str(stopped[0])]}
    a_file = _a_file(tmp_path)
    for path, reason in {"/proc/diffrl_run.json": "'/proc' is not writable",
                         str(a_file / "out.png"): f"{str(a_file)!r} is not a directory",
                         str(tmp_path): "it is a directory, not a file"}.items():
        code, out, err = _main(globals()[script], [*first[script], "--out", path])
        assert code == 2 and err.count("\n") == 1 and repr(path) in err and reason in err, err


# ---- 2: resume flags -------------------------------------------------------------------------

def test_resume_compares_only_the_flags_given_and_shows_the_one_conflict(stopped):
    run = stopped[0]
    code, _, err = _main(train, ["--resume", str(run), "--algo", "ppo", "--set", "actor_lr=0.5",
                                 "--no-compile-cache"])
    assert code == 2
    # the run's env (toy/bandit, not the default env) and its total_env_steps were not given
    assert "(saved vs given): actor_lr: 0.001 vs 0.5; resume without" in err, err
    code, _, err = _main(train, ["--resume", str(run), "--algo", "sac", "--no-compile-cache"])
    assert code == 2 and "(saved vs given): algo: 'ppo' vs 'sac'; resume without" in err, err
    # a preset given sets its fields: (ppo, toy/bandit)'s own budget is not this run's
    code, _, err = _main(train, ["--resume", str(run), "--algo", "ppo", "--preset", "default",
                                 "--no-compile-cache"])
    assert code == 2 and "(saved vs given): total_env_steps: 1024 vs 98304; resume" in err, err


def test_resume_with_the_runs_own_flags_continues_then_says_complete(stopped, tmp_path):
    run = _copy(stopped, tmp_path)
    code, out, err = _main(train, ["--resume", str(run), "--algo", "ppo", "--set",
                                   "total_env_steps=1024", "--no-compile-cache", "--progress", "lines"])
    assert code == 0, err
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["resumed_from"] == 512
    assert "final eval return per seed: " in out
    # a completed run: said so, exit 0, nothing compiled, the summary left as it was
    code, out, err = _main(train, ["--resume", str(run), "--no-compile-cache"])
    assert code == 0
    assert "the run is already complete (1,024 env steps); nothing to do" in err
    assert "compiled in" not in out + err and "resuming" not in out + err
    assert json.loads((run / "summary.json").read_text()) == summary


# ---- 3: a run stopped before its first checkpoint --------------------------------------------

class _Compiling(Exception):
    """Stands in for a kill while compiling."""


def _killed_while_compiling(tmp_path, monkeypatch, *extra):
    """A run directory as a run killed while compiling leaves it (config saved, metric files
    and the checkpoints folder created, nothing recorded)."""
    run = tmp_path / "killed"

    def compiling(*args, **kwargs):
        raise _Compiling
    with monkeypatch.context() as patch:
        patch.setattr(experiment, "mesh_program", compiling)
        with pytest.raises(_Compiling):
            _main(train, [*TINY, *extra, "--out", str(run)])
    assert (run / "checkpoints").is_dir() and (run / "run_config.json").is_file()
    assert (run / "metrics.jsonl").read_text() == ""
    return run


def _stub_train(monkeypatch):
    calls = []

    def fake_train(config, num_seeds, seed, out, *args, restarted=False):
        calls.append(dict(config=config, num_seeds=num_seeds, seed=seed, restarted=restarted))
        return {"status": "completed", "final_eval_return": [0.0] * num_seeds, "eval_curve": []}
    monkeypatch.setattr(experiment, "_train", fake_train)
    return calls


def test_a_run_killed_while_compiling_is_resumed_as_a_fresh_start(tmp_path, monkeypatch):
    run = _killed_while_compiling(tmp_path, monkeypatch, "--seed", "3")
    saved = json.loads((run / "run_config.json").read_text())
    # before: "no complete checkpoint"; now the saved config is started afresh
    calls = _stub_train(monkeypatch)
    code, _, err = _main(train, ["--resume", str(run), "--no-compile-cache"])
    assert code == 0, err
    assert "holds no complete checkpoint" in err and "starting that run afresh from its saved config" in err
    assert len(calls) == 1 and calls[0]["restarted"]
    assert experiment.config_to_dict(calls[0]["config"]) == saved["config"]
    assert (calls[0]["num_seeds"], calls[0]["seed"]) == (2, 3)
    # flags given with it are checked against the saved config as against a checkpoint's
    code, _, err = _main(train, ["--resume", str(run), "--algo", "ppo", "--set", "tau=1"])
    assert code == 2 and "unknown config field 'tau'" in err
    code, _, err = _main(train, ["--resume", str(run), "--algo", "ppo", "--set", "clip_eps=0.3"])
    assert code == 2 and "clip_eps: 0.2 vs 0.3" in err and "run_config.json" in err


def test_a_run_killed_while_compiling_can_be_reused_by_a_fresh_run(tmp_path, monkeypatch):
    run = _killed_while_compiling(tmp_path, monkeypatch)
    calls = _stub_train(monkeypatch)
    code, _, err = _main(train, [*TINY, "--set", "actor_lr=0.002", "--out", str(run)])
    assert code == 0, err
    assert f"reusing {run}: the run started there stopped before recording anything" in err
    assert len(calls) == 1 and calls[0]["restarted"] and calls[0]["config"].actor_lr == 0.002
    assert json.loads((run / "run_config.json").read_text())["config"]["actor_lr"] == 0.002


def test_without_a_saved_config_there_is_nothing_to_resume(tmp_path):
    (tmp_path / "empty" / "checkpoints").mkdir(parents=True)
    code, _, err = _main(train, ["--resume", str(tmp_path / "empty"), "--no-compile-cache"])
    assert code == 2 and "no complete checkpoint" in err and "no saved config" in err


def test_a_directory_with_results_is_still_refused(stopped):
    code, _, err = _main(train, [*TINY, "--out", str(stopped[0])])
    assert code == 2 and "already holds a run (summary.json, metrics.csv, metrics.jsonl, checkpoints)" in err


# ---- 6: --stop-after-steps granularity, the CPU warning ----------------------------------------

def test_stop_after_steps_stops_at_the_first_interval_boundary_at_or_after_it(stopped):
    run, out, err = stopped
    # intervals of 256 env steps: 300 -> 512, said before compiling
    assert ("stop_after_steps 300 stops at 512, the first interval boundary at or after it (one "
            "interval is 256 env steps per seed)") in err
    assert err.index("stops at 512") < err.index("stopped after 512")
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "stopped" and summary["intervals_done"] == 2
    assert CheckpointStore(run, read_only=True).steps() == [256, 512]
    assert "warning: no accelerator" not in err  # the toy preset is CPU-sized


def test_stop_boundary_by_hand():
    # 500 prefill steps, then intervals of 1000: boundaries 1500, 2500, 3500, 4500
    assert experiment._stop_boundary(1600, 500, 1000, 0, 4) == 2  # -> 2500
    assert experiment._stop_boundary(1500, 500, 1000, 0, 4) == 1  # exactly on a boundary
    assert experiment._stop_boundary(100, 500, 1000, 0, 4) == 1  # at least one interval
    assert experiment._stop_boundary(100, 500, 1000, 2, 4) == 3  # resumed at 2500
    assert experiment._stop_boundary(10_000, 500, 1000, 0, 4) == 4  # the run completes


def test_the_authors_preset_on_a_cpu_warns_before_compiling(tmp_path, monkeypatch):
    calls = _stub_train(monkeypatch)
    code, _, err = _main(train, ["--algo", "ppo", "--env", "toy/bandit", "--preset", "authors",
                                 "--no-compile-cache", "--out", str(tmp_path / "big")])
    assert code == 0 and len(calls) == 1  # the stub stands where compilation starts
    lines = [ln for ln in err.splitlines() if ln.startswith("warning: no accelerator")]
    assert len(lines) == 1 and "50,000,000 env steps x 2,048 envs" in lines[0]
    assert lines[0].endswith("use --preset cpu")
    config = calls[0]["config"]
    assert experiment.accelerator_scale_warning(config) is not None
    small = config.replace(num_envs=16, total_env_steps=100_000)
    assert experiment.accelerator_scale_warning(small) is None
    monkeypatch.setattr(experiment.jax, "default_backend", lambda: "gpu")
    assert experiment.accelerator_scale_warning(config) is None


def test_help_documents_the_stop_granularity():
    text = " ".join(train.parser().format_help().split())
    assert "first evaluation interval boundary at or after this many env steps per seed" in text


# ---- 7: the small things -----------------------------------------------------------------------

def test_a_stopped_run_does_not_call_its_returns_final(stopped):
    out = stopped[1]
    assert "final eval return" not in out
    assert "eval return per seed at step 512 (stopped): [" in out


def test_evaluate_names_its_own_flag_for_a_corrupt_checkpoint(stopped, tmp_path):
    run = _copy(stopped, tmp_path)
    for path in (run / "checkpoints" / "512" / "state").rglob("*"):
        if path.is_file() and path.stat().st_size > 0 and "metadata" not in path.name:
            path.write_bytes(b"\0" * path.stat().st_size)
    code, _, err = _main(evaluate, ["--checkpoint", str(run), "--no-compile-cache"])
    assert code == 2 and "512 cannot be read" in err
    assert "(choose one with --step)" in err and "--resume-step" not in err


def test_a_wrong_case_env_name_gets_a_did_you_mean(tmp_path):
    code, _, err = _main(train, ["--algo", "sac", "--env", "brax/Inverted_Pendulum",
                                 "--out", str(tmp_path / "x")])
    assert code == 2 and "did you mean 'brax/inverted_pendulum'?" in err


@pytest.mark.parametrize("script, continued", [("train", "--num-seeds 2 \\"),
                                                ("sweep", "--env toy/bandit \\")])
def test_help_keeps_the_backslash_continuations(script, continued):
    code, out, _ = _main(globals()[script], ["--help"])
    assert code == 0
    assert any(line.rstrip().endswith(continued) for line in out.splitlines()), out[:600]


def test_the_cli_scripts_silence_brax_unmaintained_warning_and_only_it():
    from diffrl_jax.envs import make_env
    for silenced in (False, True):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if silenced:
                filter_known_warnings()
            make_env("brax/inverted_pendulum")
            warnings.warn("another warning", UserWarning)
        texts = [str(w.message) for w in caught]
        assert any("not actively being maintained" in t for t in texts) != silenced
        assert "another warning" in texts
    for module in (train, evaluate, sweep, plot, reproduce):
        assert "filter_known_warnings()" in Path(module.__file__).read_text()
