"""The sweep-scaling benchmark times the vmapped seed sweep and reports what it measured."""

import importlib.util
import json
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "sweep_scaling.py"
_spec = importlib.util.spec_from_file_location("sweep_scaling", _PATH)
scaling = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(scaling)


def test_quick_run_writes_the_table_it_prints(tmp_path, capsys):
    out = tmp_path / "scaling.json"
    result = scaling.main(["--quick", "--seeds", "2", "1", "--out", str(out)])
    assert json.loads(out.read_text()) == result
    assert (result["env"], result["algos"], result["seeds"]) == ("toy/bandit", ["ppo"], [1, 2])
    assert result["isolate"] is False  # auto: the CPU keeps no memory stats
    assert {"device", "jax_version", "date", "memory_notes"} <= set(result)
    rows = result["rows"]
    assert [(row["algo"], row["num_seeds"]) for row in rows] == [("ppo", 1), ("ppo", 2)]
    base = rows[0]["run_seconds_median"]
    assert rows[0]["cost_vs_1_seed"] == 1.0
    for row in rows:
        assert len(row["run_seconds"]) == 1
        assert row["run_seconds_median"] == row["run_seconds"][0]
        assert row["cost_vs_1_seed"] == pytest.approx(row["run_seconds_median"] / base)
        assert row["seconds_per_seed"] == pytest.approx(row["run_seconds_median"] / row["num_seeds"])
        assert row["env_steps_per_second"] == pytest.approx(
            row["num_seeds"] * row["env_steps_per_run"] / row["run_seconds_median"])
        assert row["env_steps_per_run"] == 1_024 and row["compile_seconds"] > 0
        memory = row["compiled_memory"]
        if memory["available"]:
            assert memory["footprint_bytes"] == (memory["argument_bytes"] + memory["output_bytes"]
                                                 - memory["alias_bytes"] + memory["temp_bytes"])
        if not row["device_memory"]["available"]:
            assert "reason" in row["device_memory"]
    # 2 seeds' metrics are twice 1 seed's outputs in the compiled program.
    if rows[0]["compiled_memory"]["available"]:
        assert rows[1]["compiled_memory"]["output_bytes"] > rows[0]["compiled_memory"]["output_bytes"]
    printed = capsys.readouterr().out
    assert "vs 1 seed" in printed and f"wrote {out}" in printed


def test_isolated_rows_run_in_a_fresh_process(tmp_path):
    result = scaling.main(["--quick", "--seeds", "1", "--isolate", "on",
                           "--out", str(tmp_path / "isolated.json")])
    assert result["isolate"] is True
    (row,) = result["rows"]
    assert (row["algo"], row["num_seeds"], row["cost_vs_1_seed"]) == ("ppo", 1, 1.0)
    assert row["run_seconds_median"] > 0 and row["env_steps_per_run"] == 1_024
    if row["device_memory"]["available"]:
        assert row["device_memory"]["scope"].startswith("fresh process")


def test_cost_ratios_are_per_algorithm():
    rows = [{"algo": "sac", "num_seeds": 1, "run_seconds_median": 2.0},
            {"algo": "sac", "num_seeds": 4, "run_seconds_median": 5.0},
            {"algo": "ppo", "num_seeds": 4, "run_seconds_median": 3.0},
            {"algo": "ppo", "num_seeds": 1, "run_seconds_median": 1.5}]
    assert [row["cost_vs_1_seed"] for row in scaling.add_cost_ratios(rows)] == [1.0, 2.5, 2.0, 1.0]
    with pytest.raises(ValueError, match="no 1-seed row for 'wpo'"):
        scaling.add_cost_ratios([{"algo": "wpo", "num_seeds": 2, "run_seconds_median": 1.0}])


@pytest.mark.parametrize("argv, message", [
    (["--algos", "diffppo", "dqn"], "unknown algorithm(s) 'dqn' in --algos; allowed: "),
    (["--algos", "ppo", "ppo"], "lists an algorithm twice"),
    (["--seeds", "4", "16"], "--seeds must include 1"),
    (["--seeds", "1", "0"], "--seeds must be positive"),
    (["--seeds", "1", "-4"], "--seeds must be positive"),
    (["--seeds", "1", "4", "4"], "lists a count twice"),
    (["--repeats", "0"], "--repeats must be >= 1"),
    (["--total-steps", "0"], "--total-steps must be >= 1"),
    (["--num-envs", "0"], "--num-envs must be >= 1"),
])
def test_invalid_input_is_refused_before_any_work(argv, message, capsys, tmp_path):
    out = tmp_path / "never.json"
    with pytest.raises(SystemExit) as exit_info:
        scaling.main(argv + ["--quick", "--out", str(out)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err
    if "allowed" in message:
        for algo in ("sac", "diffsac", "wpo", "diffwpo", "ppo", "diffppo"):
            assert algo in err
    assert not out.exists()


def test_unknown_environment_is_refused_before_compiling(tmp_path):
    with pytest.raises(ValueError, match="unknown environment"):
        scaling.main(["--quick", "--env", "toy/nowhere", "--out", str(tmp_path / "x.json")])
