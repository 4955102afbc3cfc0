"""Hyperparameter sweeps: grid parsing, chunk planning, and one real chunked sweep whose
members equal the unchunked vmapped run and plain single-seed runs."""

import contextlib
import csv
import importlib.util
import io
import json
from pathlib import Path

import jax
import numpy as np
import pytest

from diffrl_jax.experiment import make_config
from diffrl_jax.sweep import (
    SweepSpec,
    balance_chunks,
    batched_config,
    device_memory_bytes,
    grid_members,
    member_policy,
    member_state,
    parse_grid,
    plan_chunks,
    run_sweep,
    traced_fields,
)
from diffrl_jax.training import train
from diffrl_jax.validation import ConfigError

from conftest import computed_once

_CLI = Path(__file__).resolve().parents[1] / "experiments" / "sweep.py"
_spec = importlib.util.spec_from_file_location("sweep_cli", _CLI)
sweep_cli = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(sweep_cli)

ALGO, ENV, TOTAL_STEPS, SEED, NUM_SEEDS = "ppo", "toy/bandit", 1_024, 3, 2
# Small and quick to compile: 32 envs x 1 step per rollout, 16 rollouts per interval.
OVERRIDES = dict(num_envs=32, num_minibatches=2, num_epochs=1, num_evals=2, num_eval_envs=16)
LRS = (1e-3, 3e-4)


def small_config():
    return make_config(ALGO, ENV, total_steps=TOTAL_STEPS, **OVERRIDES)


def _run_the_sweep(out):
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        result = run_sweep(ALGO, ENV, [f"actor_lr={LRS[0]},{LRS[1]}"], NUM_SEEDS, SEED, out,
                           total_steps=TOTAL_STEPS, overrides=OVERRIDES,
                           max_members_per_chunk=3, keep_state=True)
    return result, printed.getvalue()


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """2 learning rates x 2 seeds = 4 members in chunks of 3 (the second chunk padded).

    Under pytest-xdist the tests using it may land on both workers; the first one runs the
    sweep and the other waits for it and loads the result (the pytest-xdist recipe for a
    session-wide fixture), so its three compiles are paid once."""
    result, out = computed_once(tmp_path_factory, "test_sweep_run", _run_the_sweep)
    return (*result, out)


def test_members_order_files_and_plan(sweep):
    result, printed, out = sweep
    assert result["num_members"] == 4 and result["num_points"] == 2
    assert [(m["hyperparameters"]["actor_lr"], m["seed_index"]) for m in result["members"]] == [
        (LRS[0], 0), (LRS[0], 1), (LRS[1], 0), (LRS[1], 1)]
    assert json.loads((out / "sweep.json").read_text()) == {k: v for k, v in result.items()
                                                            if k != "state"}
    for m in result["members"]:
        summary = json.loads((out / "members" / str(m["index"]) / "summary.json").read_text())
        assert summary["sweep_member"]["index"] == m["index"]
        assert summary["sweep_member"]["hyperparameters"] == {"actor_lr": m["hyperparameters"]["actor_lr"]}
        assert summary["sweep_member"]["seed_index"] == m["seed_index"]
        assert summary["config"]["actor_lr"] == m["hyperparameters"]["actor_lr"]
        assert summary["config"]["critic_lr"] == small_config().critic_lr  # not swept
        assert summary["num_seeds"] == 1 and len(summary["final_eval_return"]) == 1
        assert summary["final_eval_return"][0] == m["final_eval_return"]
        assert len(summary["eval_curve"]) == OVERRIDES["num_evals"]
    plan = result["chunking"]
    assert (plan["chunk_size"], plan["num_chunks"], plan["padded_members"]) == (3, 2, 2)
    assert plan["chunk_size_source"] == "max_members_per_chunk"
    if plan["estimate"]["available"]:
        assert plan["per_member_bytes"] > 0 and plan["fixed_bytes"] >= 0
        assert plan["estimated_chunk_bytes"] == plan["fixed_bytes"] + 3 * plan["per_member_bytes"]
        assert plan["fits_in_budget"] is True  # a toy run fits in any machine's memory
        assert plan["chunk_program_bytes"] == plan["chunk_program_memory"]["footprint_bytes"] > 0
        # 1 and 2 members were compiled for the estimate, then the chunk program for 3
        assert set(plan["estimate"]["compile_seconds"]) == {"1", "2"}
        assert result["compile_seconds_detail"]["chunk_program_reused"] is False
    assert plan["budget_bytes"] > 0
    assert len(result["chunk_train_seconds"]) == 2 and result["compile_seconds"] > 0
    assert "chunk 2/2: members 3-3 (+2 padding)" in printed
    assert "env steps" in printed  # per-interval progress lines


def test_aggregate_table_csv_and_printout(sweep):
    result, printed, out = sweep
    table = result["aggregate"]
    assert [row["hyperparameters"]["actor_lr"] for row in table] == list(LRS)
    for row in table:
        mine = [m for m in result["members"] if m["point"] == row["point"]]
        assert row["members"] == [m["index"] for m in mine] and row["num_seeds"] == NUM_SEEDS
        for key in ("final_eval_return", "final_eval_return_deterministic"):
            values = np.array([m[key] for m in mine])
            stats = row[key]
            assert stats["mean"] == pytest.approx(values.mean())
            assert stats["std"] == pytest.approx(values.std())
            assert (stats["min"], stats["max"]) == (pytest.approx(values.min()), pytest.approx(values.max()))
    with open(out / "sweep.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 and float(rows[1]["actor_lr"]) == LRS[1]
    assert float(rows[0]["return_mean"]) == pytest.approx(table[0]["final_eval_return"]["mean"])
    assert float(rows[0]["det_max"]) == pytest.approx(table[0]["final_eval_return_deterministic"]["max"])
    header = printed.splitlines()[-3]
    assert header.split() == list(rows[0])


def test_members_equal_the_unchunked_vmapped_run(sweep):
    result, _, _ = sweep
    config = small_config()
    members = result["members"]
    keys = jax.random.split(jax.random.PRNGKey(SEED), NUM_SEEDS)[np.array([m["seed_index"] for m in members])]
    state, metrics = jax.jit(jax.vmap(train))(keys, batched_config(config, members))
    np.testing.assert_allclose([m["final_eval_return"] for m in members],
                               metrics["eval_return"][:, -1], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose([m["final_eval_return_deterministic"] for m in members],
                               metrics["eval_return_deterministic"][:, -1], rtol=1e-4, atol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5),
                 result["state"].policy_params, jax.device_get(state.policy_params))


def test_seed_j_of_a_grid_point_is_a_plain_run_with_that_value(sweep):
    result, _, _ = sweep
    config = small_config()
    keys = jax.random.split(jax.random.PRNGKey(SEED), NUM_SEEDS)  # experiments/train.py's keys
    plain = jax.jit(train)  # one compile: the config's floats are traced leaves
    for m in result["members"]:
        lr = m["hyperparameters"]["actor_lr"]
        _, metrics = plain(keys[m["seed_index"]], config.replace(actor_lr=lr))
        # equal to rounding per step, which training amplifies (Adam normalises small
        # gradients): 1.9e-3 relative seen after 16 updates; a wrong member's key or value
        # would differ by tens of percent
        np.testing.assert_allclose(m["final_eval_return"], metrics["eval_return"][-1],
                                   rtol=1e-2, atol=1e-5)
    # different learning rates do train differently
    finals = [m["final_eval_return"] for m in result["members"]]
    assert finals[0] != finals[2] or finals[1] != finals[3]


def test_member_policy_has_no_member_axis(sweep):
    result, _, _ = sweep
    config = small_config()
    policy, params, obs_stats = member_policy(config, result["state"], 2)
    reference = policy.init(jax.random.PRNGKey(0))
    assert jax.tree.structure(params) == jax.tree.structure(reference)
    jax.tree.map(lambda p, r: np.testing.assert_equal(np.shape(p), np.shape(r)), params, reference)
    jax.tree.map(lambda p, b: np.testing.assert_array_equal(p, b[2]), params,
                 result["state"].policy_params)
    assert np.shape(obs_stats.mean) == np.shape(member_state(result["state"], 2).obs_stats.mean)
    assert np.ndim(obs_stats.count) == 0
    obs = np.zeros((5, np.shape(obs_stats.mean)[0]), np.float32)
    chain = policy.sample_chain(params, obs, jax.random.PRNGKey(1))
    assert chain.action.shape[0] == 5


def test_grid_members_and_batched_config():
    config = small_config()
    members = grid_members({"actor_lr": [1.0, 2.0], "clip_eps": [0.1, 0.2, 0.3]}, 2)
    assert len(members) == 12
    assert [m["index"] for m in members] == list(range(12))
    assert members[0] == {"index": 0, "point": 0, "seed_index": 0,
                          "hyperparameters": {"actor_lr": 1.0, "clip_eps": 0.1}}
    assert members[7]["hyperparameters"] == {"actor_lr": 2.0, "clip_eps": 0.1}
    assert (members[7]["point"], members[7]["seed_index"]) == (3, 1)
    batched = batched_config(config, members)
    for name in traced_fields(config):
        value = getattr(batched, name)
        assert value.shape == (12,) and value.dtype == np.float32
    np.testing.assert_allclose(batched.actor_lr, [1.0] * 6 + [2.0] * 6)
    np.testing.assert_allclose(batched.clip_eps, [0.1, 0.1, 0.2, 0.2, 0.3, 0.3] * 2)
    np.testing.assert_allclose(batched.critic_lr, [config.critic_lr] * 12)
    assert batched.num_envs == config.num_envs  # static fields untouched
    spec = SweepSpec.parse(["actor_lr=1e-3,3e-4"], config, num_seeds=3, seed=SEED)
    assert (spec.num_points, spec.num_members) == (2, 6)
    np.testing.assert_array_equal(spec.keys()[4], jax.random.split(jax.random.PRNGKey(SEED), 3)[1])
    assert grid_members({}, 2) == [{"index": 0, "point": 0, "hyperparameters": {}, "seed_index": 0},
                                   {"index": 1, "point": 0, "hyperparameters": {}, "seed_index": 1}]
    with pytest.raises(ValueError, match="num_seeds"):
        grid_members({"actor_lr": [1.0]}, 0)


def test_parse_grid_accepts_traced_fields_and_refuses_the_rest():
    config = small_config()
    assert parse_grid(["actor_lr=1e-3, 3e-4", "discount=0.9,0.99"], config) == {
        "actor_lr": [1e-3, 3e-4], "discount": [0.9, 0.99]}
    with pytest.raises(ValueError, match="num_envs is a static field") as err:
        parse_grid(["num_envs=8,16"], config)
    assert "actor_lr" in str(err.value) and "gae_lambda" in str(err.value)
    with pytest.raises(ValueError, match="value_hidden is a static field"):
        parse_grid(["value_hidden=64"], config)
    with pytest.raises(ValueError, match="unknown field 'actor_learning_rate'") as err:
        parse_grid(["actor_learning_rate=1e-3"], config)
    assert "actor_lr" in str(err.value)
    with pytest.raises(ValueError, match="'actor_lr': 'fast' is not a number"):
        parse_grid(["actor_lr=1e-3,fast"], config)
    with pytest.raises(ValueError, match="'tau'"):  # an off-policy field on PPO
        parse_grid(["tau=0.1"], config)
    with pytest.raises(ConfigError, match=r"OnPolicyConfig.actor_lr must be a finite number > 0, got -0.001"):
        parse_grid(["actor_lr=1e-3,-1e-3"], config)
    with pytest.raises(ConfigError, match=r"OnPolicyConfig.discount must lie in \[0.0, 1.0\]"):
        parse_grid(["discount=1.5"], config)
    with pytest.raises(ValueError, match="finite"):
        parse_grid(["value_coef=nan"], config)
    with pytest.raises(ValueError, match="FIELD=V1,V2"):
        parse_grid(["actor_lr"], config)
    with pytest.raises(ValueError, match="given twice"):
        parse_grid(["actor_lr=1e-3", "actor_lr=3e-4"], config)
    with pytest.raises(ValueError, match="comma-separated"):
        parse_grid(["actor_lr="], config)
    off_policy = make_config("sac", ENV, total_steps=2_000)
    assert parse_grid(["tau=0.005,0.05"], off_policy) == {"tau": [0.005, 0.05]}
    with pytest.raises(ValueError, match="critic_hidden is a static field"):
        parse_grid(["critic_hidden=64"], off_policy)


def test_plan_chunks_arithmetic_and_too_big_error():
    assert plan_chunks(10, per_member=100, fixed=50, budget=1_000, fraction=0.8) == 7
    assert plan_chunks(5, per_member=100, fixed=50, budget=1_000, fraction=0.8) == 5
    assert plan_chunks(10, per_member=100, fixed=0, budget=1_000, fraction=1.0) == 10
    assert plan_chunks(10, per_member=100, fixed=700, budget=1_000, fraction=0.8) == 1
    assert plan_chunks(3, per_member=0, fixed=10, budget=1_000) == 3
    with pytest.raises(ValueError, match="not even one sweep member fits") as err:
        plan_chunks(10, per_member=500, fixed=400, budget=1_000, fraction=0.8)
    assert all(s in str(err.value) for s in ("900", "400", "500", "1,000", "800"))
    with pytest.raises(ValueError, match="fraction"):
        plan_chunks(10, 1, 1, 1_000, fraction=1.5)
    # the fitting size spread evenly: the same number of chunks, the least padding
    assert [balance_chunks(m, 7) for m in (7, 8, 10, 14, 15)] == [7, 4, 5, 7, 5]
    assert balance_chunks(100, 64) == 50 and balance_chunks(3, 1) == 1
    assert device_memory_bytes() > 0


def test_cli_bad_grid_field_exits_2(tmp_path, capsys):
    code = sweep_cli.main(["--algo", ALGO, "--env", ENV, "--grid", "num_envs=8,16",
                           "--out", str(tmp_path / "run")])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "num_envs" in err and "actor_lr" in err
    code = sweep_cli.main(["--algo", ALGO, "--env", ENV, "--grid", "actor_lr=0",
                           "--out", str(tmp_path / "run")])
    assert code == 2 and "must be a finite number > 0" in capsys.readouterr().err
    assert not (tmp_path / "run" / "sweep.json").exists()
