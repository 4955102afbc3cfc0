"""The README's tour (train, stop, resume, evaluate, sweep, plot), command by command."""

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def tour_commands() -> list[list[str]]:
    text = (ROOT / "README.md").read_text()
    block = text.split("<!-- tour -->\n```bash\n", 1)[1].split("```", 1)[0]
    return [shlex.split(line) for line in block.splitlines() if line and not line.startswith("#")]


def test_readme_tour_runs_as_written(tmp_path):
    commands = tour_commands()
    assert [c[1] for c in commands] == ["experiments/train.py", "experiments/train.py",
                                        "experiments/evaluate.py", "experiments/sweep.py",
                                        "experiments/plot.py"]
    env = dict(os.environ, JAX_PLATFORMS="cpu", DIFFRL_JAX_CACHE=str(tmp_path / "xla"),
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    outputs = []
    for command in commands:
        assert command[0] == "python"
        args = [a.replace("runs/", f"{tmp_path}/runs/") for a in command[1:]]
        result = subprocess.run([sys.executable, str(ROOT / args[0]), *args[1:]], cwd=tmp_path,
                                env=env, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, (command, result.stderr[-3000:])
        outputs.append(result.stdout)
    runs = tmp_path / "runs"
    summary = json.loads((runs / "tour" / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["resumed_from"] == 8192
    assert summary["total_env_steps"] == 16384 and len(summary["eval_curve"]) == 4
    evaluation = json.loads((runs / "tour" / "evaluation_16384.json").read_text())
    assert len(evaluation["stochastic"]["return_mean_per_seed"]) == 2
    sweep = json.loads((runs / "tour_sweep" / "sweep.json").read_text())
    assert len(sweep["members"]) == 4
    assert (runs / "tour_compare.png").read_bytes()[:4] == b"\x89PNG"
    assert "stopped after 8,192" not in outputs[1] and "final eval return" in outputs[1]
