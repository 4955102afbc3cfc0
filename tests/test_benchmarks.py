"""The diffusion-overhead benchmark compares like with like and reports what it measured."""

import dataclasses
import importlib.util
import json
import subprocess
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "diffusion_overhead.py"
_spec = importlib.util.spec_from_file_location("diffusion_overhead", _PATH)
overhead = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(overhead)


@pytest.mark.parametrize("pair", overhead.DEFAULT_PAIRS)
def test_paired_configs_differ_only_in_the_policy(pair):
    diff_algo, gaussian_algo = overhead.parse_pair(pair)
    diff, gauss = overhead.paired_configs(diff_algo, gaussian_algo, "brax/inverted_pendulum",
                                          total_env_steps=20_000, num_evals=2)
    different = {f.name for f in dataclasses.fields(diff)
                 if getattr(diff, f.name) != getattr(gauss, f.name)}
    assert different <= {"algo", "gaussian"}
    assert (diff.algo, gauss.algo) == (diff_algo, gaussian_algo)
    assert gauss.gaussian.hidden_sizes == diff.diffusion.hidden_sizes
    assert gauss.gaussian.activation == diff.diffusion.activation


def test_num_steps_overrides_k_in_each_pairs_own_diffusion_config():
    for pair in overhead.DEFAULT_PAIRS:
        diff_algo, gaussian_algo = overhead.parse_pair(pair)
        preset, _ = overhead.paired_configs(diff_algo, gaussian_algo, "toy/bandit")
        diff, gauss = overhead.paired_configs(diff_algo, gaussian_algo, "toy/bandit", num_steps=3)
        assert diff.diffusion == dataclasses.replace(preset.diffusion, num_steps=3)
        assert gauss.diffusion.num_steps == 3
        assert gauss.gaussian.hidden_sizes == preset.diffusion.hidden_sizes


@pytest.mark.parametrize("pair", ["sac:diffsac", "diffsac:ppo", "diffsac", "diffppo:ppo:x",
                                  "reppo:sac", "ppo:ppo", "reppo:diffppo", "diffx:x"])
def test_malformed_pairs_are_refused(pair):
    with pytest.raises(ValueError, match="diff<algo>:<algo>"):
        overhead.parse_pair(pair)


@pytest.mark.parametrize("pair", ["reppo:ppo", "diffreppo:diffppo", "wpo:sac"])
def test_an_algorithm_pair_runs_the_first_algorithms_config_with_only_algo_changed(pair):
    algo, baseline = overhead.parse_pair(pair)
    first, second = overhead.paired_configs(algo, baseline, "brax/inverted_pendulum")
    different = {f.name for f in dataclasses.fields(first)
                 if getattr(first, f.name) != getattr(second, f.name)}
    assert different == {"algo"} and (first.algo, second.algo) == (algo, baseline)


def test_quick_run_writes_the_table_it_prints(tmp_path, capsys):
    out = tmp_path / "overhead.json"
    result = overhead.main(["--env", "toy/bandit", "--pairs", "diffppo:ppo", "--quick",
                            "--num-steps", "4", "--out", str(out)])
    assert json.loads(out.read_text()) == result
    (row,) = result["rows"]
    assert (row["algo"], row["baseline"], row["num_steps_K"]) == ("diffppo", "ppo", 4)
    assert row["pair_kind"] == "diffusion" and row["env_steps_per_run"] == 2_048
    assert len(row["algo_run_seconds"]) == len(row["baseline_run_seconds"]) == 1
    ratio = row["algo_run_seconds"][0] / row["baseline_run_seconds"][0]
    assert row["overhead_median"] == pytest.approx(ratio)
    assert row["algo_env_steps_per_second"] > 0 and row["baseline_env_steps_per_second"] > 0
    assert "diffppo/ppo" in capsys.readouterr().out


def test_device_check_refuses_an_unknown_part(tmp_path):
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "device_check.sh"
    run = subprocess.run(["bash", str(script)], env={"PATH": "/usr/bin:/bin", "OUT": str(tmp_path),
                                                     "PART": "everything"},
                         capture_output=True, text=True, timeout=30)
    assert run.returncode == 2 and "PART must be throughput, scaling or all" in run.stderr
    run = subprocess.run(["bash", str(script)], env={"PATH": "/usr/bin:/bin"},
                         capture_output=True, text=True, timeout=30)
    assert run.returncode != 0 and "set OUT" in run.stderr
