"""experiments/train.py's configuration flags: --set, --preset, --list-fields, and the
errors that stop a run before anything compiles (exit status 2, the field named)."""

import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load(name):
    spec = importlib.util.spec_from_file_location(f"cli_{name}", ROOT / "experiments" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


train = _load("train")


def _shows(listing: str, line: str) -> bool:
    """`line` ("name: type = value") in --list-fields output, whose columns are aligned."""
    name, rest = line.split(": ", 1)
    return re.search(rf"^{re.escape(name)}:\s+{re.escape(rest)}(\s|$)", listing, re.M) is not None


def test_list_fields_shows_the_resolved_config_with_overrides(capsys):
    code = train.main(["--algo", "diffsac", "--env", "toy/bandit", "--list-fields",
                       "--set", "actor_lr=0.002", "--set", "diffusion.num_steps=5"])
    out = capsys.readouterr().out
    assert code == 0
    assert _shows(out, "actor_lr: float = 0.002")
    assert _shows(out, "diffusion.num_steps: int = 5")
    assert _shows(out, "total_env_steps: int = 24000")  # the (diffsac, toy/bandit) preset


def test_authors_preset_resolves_to_section_7(capsys):
    assert train.main(["--algo", "diffppo", "--preset", "authors", "--list-fields"]) == 0
    out = capsys.readouterr().out
    for line in ("num_envs: int = 2048", "num_epochs: int = 12", "num_minibatches: int = 64",
                 "diffusion.num_steps: int = 8", "diffusion.prior_std: float = 3.0",
                 "gae_lambda: float = 0.98", "discount: float = 0.999"):
        assert _shows(out, line), line


@pytest.mark.parametrize("argv, message", [
    (["--set", "learning_rate=1e-3"], "unknown config field 'learning_rate'"),
    (["--set", "num_envs=many"], "'num_envs' expects int"),
    (["--set", "discount=1.5"], "discount must lie in [0.0, 1.0]"),
    (["--set", "estimator=magic"], "estimator must be one of"),
    (["--set", "actor_lr"], "FIELD=VALUE"),
    (["--preset", "nobody"], "invalid choice: 'nobody'"),
    (["--metrics", "csv,xml"], "unknown ['xml']"),
    (["--checkpoint-every", "-1"], "checkpoint_every must be an integer >= 0"),
    (["--num-seeds", "0"], "num_seeds must be a positive integer"),
    (["--set", "env=brax/ant"], "algo, env and backend choose the preset"),
    (["--backend", "warp9"], "config.backend must be one of"),
    (["--set", "reward_scale=nan"], "reward_scale must be a finite number"),
    (["--stop-after-steps", "100", "--no-checkpoints"], "stop_after_steps needs checkpoints"),
])
def test_bad_configuration_exits_2_naming_the_problem(argv, message, tmp_path, capsys):
    try:
        code = train.main(["--algo", "sac", "--env", "toy/bandit", "--out", str(tmp_path / "run"),
                           "--no-compile-cache", *argv])
    except SystemExit as exit_:  # argparse's own errors
        code = exit_.code
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_resume_flags_are_checked(tmp_path, capsys):
    assert train.main(["--resume", str(tmp_path / "run"), "--out", str(tmp_path / "x")]) == 2
    assert "leave out --out" in capsys.readouterr().err
    assert train.main(["--resume", str(tmp_path / "run"), "--set", "tau=0.1"]) == 2
    assert "need --algo too" in capsys.readouterr().err
    assert train.main(["--resume", str(tmp_path / "nothing"), "--no-compile-cache"]) == 2
    assert "no complete checkpoint" in capsys.readouterr().err
    assert train.main(["--env", "toy/bandit", "--out", str(tmp_path)]) == 2
    assert "--algo is required" in capsys.readouterr().err
    assert train.main(["--algo", "sac", "--out", str(tmp_path), "--resume-step", "5"]) == 2
    assert "--resume-step needs --resume" in capsys.readouterr().err
