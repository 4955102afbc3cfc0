"""experiments/reproduce.py: argument errors before anything compiles, the aggregation on
synthetic run directories (grids, AUC, IQMs, verdicts, exclusions, budgets, settings that
differ, analysis errors, strict JSON), and one small end-to-end reproduction (toy/bandit, sac
and diffsac, 2 seeds; a Ctrl-C during sac's last interval stops it before diffsac, --resume
finishes it) whose tables are recomputed from the runs' summary.json files, resumed and
re-aggregated."""

import contextlib
import importlib.util
import io
import json
import os
import re
import shlex
import shutil
import signal
import threading
from pathlib import Path

import numpy as np
import pytest

from conftest import computed_once
from diffrl_jax import experiment
from diffrl_jax import reproduction as rp
from diffrl_jax.reproduction_report import format_interval, markdown_tables, write_results
from diffrl_jax.score_stats import (
    area_under_curve,
    common_grid,
    interpolate_curves,
    iqm,
    stratified_bootstrap_ci,
)
from diffrl_jax.training import schedule_of

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("cli_reproduce", ROOT / "experiments" / "reproduce.py")
cli = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(cli)


# ---- task lists and planning ------------------------------------------------------------------

def test_task_lists():
    cpu, gpu = rp.TASK_LISTS["cpu"], rp.TASK_LISTS["gpu"]
    assert [t.name for t in cpu] == ["brax/inverted_pendulum", "brax/reacher",
                                     "playground/CartpoleSwingup", "playground/PendulumSwingup"]
    dmc = [t for t in gpu if t.env.startswith("playground/")]
    assert sorted(t.env.split("/")[1] for t in dmc) == sorted(
        ["CheetahRun", "WalkerWalk", "WalkerRun", "WalkerStand", "FingerSpin", "FishSwim",
         "HopperHop", "HopperStand", "AcrobotSwingup", "PendulumSwingup", "CartpoleSwingupSparse"])
    assert {t.env for t in gpu} - {t.env for t in dmc} == {
        f"brax/{e}" for e in ("ant", "halfcheetah", "hopper", "walker2d", "humanoid")}
    for t in gpu:  # the authors' settings: 50M env steps, 8 seeds
        assert (t.preset, t.budget, t.num_seeds) == ("authors", 50_000_000, 8)
    assert all(t.score_range == (0.0, 1000.0) for t in dmc)


def test_resolve_tasks():
    assert rp.resolve_tasks("cpu") == list(rp.TASK_LISTS["cpu"])
    two = rp.resolve_tasks("brax/inverted_pendulum, brax/reacher")
    assert [t.name for t in two] == ["brax/inverted_pendulum", "brax/reacher"]
    assert rp.resolve_tasks("gpu:playground/PendulumSwingup")[0].preset == "authors"
    assert rp.resolve_tasks("cpu:playground/PendulumSwingup")[0].preset == "cpu"
    with pytest.raises(ValueError, match="unknown task 'nope'"):
        rp.resolve_tasks("nope")
    with pytest.raises(ValueError, match="several lists.*cpu:playground/PendulumSwingup"):
        rp.resolve_tasks("playground/PendulumSwingup")
    with pytest.raises(ValueError, match="twice"):
        rp.resolve_tasks("brax/reacher,brax/reacher")
    with pytest.raises(ValueError, match="twice"):
        rp.resolve_tasks("cpu:playground/PendulumSwingup,gpu:playground/PendulumSwingup")


def test_parse_algos_and_pairs():
    assert rp.parse_algos(None) == ["sac", "diffsac", "wpo", "diffwpo", "ppo", "diffppo"]
    assert rp.parse_algos("diffppo,ppo,sac") == ["diffppo", "ppo", "sac"]
    assert rp.pairs_of(["diffppo", "ppo", "sac"]) == [("diffppo", "ppo")]
    for bad, message in (("sac,foo", "unknown algorithm"), ("sac,sac", "twice"), (",", "unknown")):
        with pytest.raises(ValueError, match=message):
            rp.parse_algos(bad)


def test_plan_runs_equal_budgets_scoped_settings_and_scaled_prefill(tmp_path):
    task = rp.resolve_tasks("brax/inverted_pendulum")[0]
    plans = rp.plan_runs([task], ["sac", "diffsac", "ppo"], tmp_path, num_seeds=3, seed=4,
                         steps_scale=0.5, settings=["actor_lr=2e-3", "sac:critic_lr=5e-4"],
                         pairing="presets")
    assert {p.total_steps for p in plans} == {20_480}
    assert all(p.config.total_env_steps == 20_480 and p.config.num_evals == 8 for p in plans)
    by = {p.algo: p for p in plans}
    assert all(p.config.actor_lr == 2e-3 and p.num_seeds == 3 and p.seed == 4 for p in plans)
    assert by["sac"].config.critic_lr == 5e-4 and by["diffsac"].config.critic_lr == 1e-3
    assert by["sac"].config.learning_starts == 1000  # the preset's 2000, halved with the budget
    assert by["sac"].run_dir == tmp_path / "brax" / "inverted_pendulum" / "sac"
    kept = rp.plan_runs([task], ["sac"], tmp_path, steps_scale=0.5, settings=["learning_starts=300"])
    assert kept[0].config.learning_starts == 300 and kept[0].num_seeds == task.num_seeds
    assert rp.plan_runs([task], ["sac"], tmp_path, steps_scale=2.0)[0].config.learning_starts == 2000


def test_every_pair_runs_the_same_env_steps():
    tasks = [t for name in ("cpu", "gpu") for t in rp.TASK_LISTS[name] if t.env.startswith("brax/")]
    plans = rp.plan_runs(tasks, rp.DEFAULT_ALGOS, "unused")
    run = {(p.task.name, p.algo): schedule_of(p.config)["total_env_steps"] for p in plans}
    for task in tasks:
        for diff, base in rp.PAIRS:
            assert run[task.name, diff] == run[task.name, base], (task.name, diff)
        if task in rp.TASK_LISTS["cpu"]:  # PPO exactly, off-policy within one iteration per interval
            assert run[task.name, "ppo"] == task.budget
            assert task.budget - 16 * 8 < run[task.name, "sac"] <= task.budget


def test_plan_runs_refuses_unequal_budgets_within_a_pair(tmp_path):
    task = rp.resolve_tasks("brax/inverted_pendulum")[0]
    with pytest.raises(ValueError, match=r"task brax/inverted_pendulum: unequal budgets: "
                                         r"diffppo would run 40,960 env steps per seed and ppo "):
        rp.plan_runs([task], ["ppo", "diffppo"], tmp_path, settings=["ppo:unroll_length=24"])
    # the same setting for both algorithms of the pair, or for an unpaired one, is fine
    rp.plan_runs([task], ["ppo", "diffppo"], tmp_path, settings=["unroll_length=20"])
    rp.plan_runs([task], ["ppo", "sac"], tmp_path, settings=["ppo:unroll_length=24"])


# ---- pairings: matched Gaussians ----------------------------------------------------------------

def _fake_run_experiment(algo, env, total_steps, num_seeds, seed, out, *, backend, progress,
                         preset, settings, options, resume, **overrides):
    """run_experiment's config resolution (make_config of exactly the arguments execute
    passes) and a summary.json with that config, without training."""
    config = experiment.make_config(algo, env, backend, total_steps, preset, settings, **overrides)
    root = Path(out).parents[env.count("/") + 1]  # out is root/<env>/<name>
    path = write_run(root, env, Path(out).name, [1.0] * num_seeds)
    summary = json.loads(path.read_text())
    summary.update(config=experiment.config_to_dict(config), seed=seed)
    path.write_text(json.dumps(summary))
    return {"status": "completed", "message": None, "train_seconds": 1.0, "compile_seconds": 1.0}


def test_matched_pairs_differ_only_in_policy_kind_fields_on_the_cpu_list(tmp_path, monkeypatch):
    # every task of the CPU list, all three pairs, both pairings; the runs' configs are what
    # run_experiment resolves from the arguments execute passes (make_config), as
    # summary.json records them
    tasks = rp.TASK_LISTS["cpu"]
    plans = rp.plan_runs(tasks, rp.DEFAULT_ALGOS, tmp_path, num_seeds=2, pairing="both")
    assert len(plans) == len(tasks) * 9  # six algorithms and three matched Gaussians per task
    monkeypatch.setattr(rp, "run_experiment", _fake_run_experiment)
    records = rp.run_plans(plans, {}, rp.RunOptions(), "none", log=lambda line: None)
    assert {r["status"] for r in records} == {"completed"}
    for plan in plans:  # each run's config is its plan's (no preset and settings lost)
        summary = json.loads((plan.run_dir / "summary.json").read_text())
        assert summary["config"] == experiment.config_to_dict(plan.config), plan.run_dir
    matched = rp.results_of(tasks, rp.DEFAULT_ALGOS, tmp_path, resamples=20, pairing="matched")
    presets = rp.results_of(tasks, rp.DEFAULT_ALGOS, tmp_path, resamples=20, pairing="presets")
    for m, p in zip(matched["tasks"], presets["tasks"]):
        assert [(x["diff"], x["base"]) for x in m["pairs"]] == list(rp.PAIRS)
        for pair in m["pairs"]:
            assert pair["settings_differ"] is not None
            assert all(d["policy_kind"] for d in pair["settings_differ"]), (m["task"], pair)
        # not vacuous: with per-algorithm presets the off-policy pairs differ in settings
        for pair in p["pairs"][:2]:
            assert any(not d["policy_kind"] for d in pair["settings_differ"]), (p["task"], pair)
    pendulum = {x["diff"]: x for x in presets["tasks"][0]["pairs"]}
    assert {d["field"] for d in pendulum["diffsac"]["settings_differ"]} >= {
        "critic_layer_norm", "max_grad_norm", "tau", "target_entropy_multiplier"}
    assert matched["tasks"][0]["pairs"][0]["settings_differ"] == []


def test_matched_config_by_hand():
    env = "brax/inverted_pendulum"
    own = experiment.make_config("sac", env, settings=["gaussian.hidden_sizes=(8,)"])
    diff = experiment.make_config("diffsac", env, settings=[
        "entropy_chains=32", "estimator=full_chain", "tau=0.2", "target_entropy_multiplier=3.5"])
    m = rp.matched_config(diff, own)
    assert (m.algo, m.gaussian, m.diffusion) == ("sac", own.gaussian, own.diffusion)
    assert (m.entropy_chains, m.estimator) == (None, "per_step")  # the Gaussian's own
    assert (m.tau, m.target_entropy_multiplier, m.updates_per_step, m.critic_layer_norm) == (
        0.2, 3.5, diff.updates_per_step, True)  # copied as they are
    differ = rp.settings_differences(experiment.config_to_dict(diff), experiment.config_to_dict(m))
    assert [(d["field"], d["policy_kind"]) for d in differ] == [
        ("entropy_chains", True), ("estimator", True)]
    # discount_mode "diffusion": gamma_d = 0.999 and lambda = 0.98 per augmented step of K = 8
    # are 0.999^8 and 0.98^8 per environment step
    for algo, base in (("diffppo", "ppo"), ("diffsac", "sac")):
        diff = experiment.make_config(algo, env, settings=[
            "discount_mode=diffusion", "discount=0.999", "diffusion.num_steps=8"]
            + (["gae_lambda=0.98"] if base == "ppo" else []))
        m = rp.matched_config(diff, experiment.make_config(base, env))
        assert m.discount_mode == "env"
        assert m.discount == pytest.approx(0.992027944069944, rel=1e-14)  # 0.999 ** 8
        if base == "ppo":
            assert m.gae_lambda == pytest.approx(0.8507630225817855, rel=1e-14)  # 0.98 ** 8
        differ = rp.settings_differences(experiment.config_to_dict(diff),
                                         experiment.config_to_dict(m))
        assert {d["field"] for d in differ} == {"discount_mode", "discount"} | (
            {"gae_lambda"} if base == "ppo" else set())
        assert all(d["policy_kind"] for d in differ)
        # the same fields with another discount per env step are a setting, not the policy kind
        other = experiment.config_to_dict(m.replace(discount=0.99))
        differ = rp.settings_differences(experiment.config_to_dict(diff), other)
        assert not any(d["policy_kind"] for d in differ if d["field"] in rp.DISCOUNT_FIELDS)
    with pytest.raises(ValueError, match="cannot match ppo to diffsac"):
        rp.matched_config(experiment.make_config("diffsac", env), experiment.make_config("ppo", env))


def test_matched_plans_take_their_own_scoped_settings_and_keep_equal_budgets(tmp_path):
    task = rp.resolve_tasks("brax/inverted_pendulum")[0]
    plans = rp.plan_runs([task], ["sac", "diffsac"], tmp_path, steps_scale=0.5, settings=[
        "actor_lr=2e-3", "sac:critic_lr=5e-4", "diffsac:tau=0.1", "sac:gaussian.hidden_sizes=(8,)"])
    assert [(p.algo, p.matched_to) for p in plans] == [("sac", "diffsac"), ("diffsac", None)]
    sac, diffsac = plans
    assert sac.run_dir == tmp_path / "brax/inverted_pendulum/sac.matched"
    assert diffsac.run_dir == tmp_path / "brax/inverted_pendulum/diffsac"
    assert sac.config.tau == 0.1 and sac.config.actor_lr == 2e-3  # diffsac's, scoped or not
    assert sac.config.critic_lr == 5e-4 and diffsac.config.critic_lr == 1e-3  # its own scoped
    assert sac.config.gaussian.hidden_sizes == (8,)
    assert sac.config.learning_starts == diffsac.config.learning_starts == 1000
    with pytest.raises(ValueError, match=r"unequal budgets: diffsac would run .* and sac matched "
                                         r"to diffsac"):
        rp.plan_runs([task], ["sac", "diffsac"], tmp_path, settings=["sac:num_envs=32"])
    with pytest.raises(ValueError, match="--pairing must be one of matched, presets, both"):
        rp.plan_runs([task], ["sac", "diffsac"], tmp_path, pairing="fair")
    # an unpaired Gaussian runs its own preset in every pairing
    alone = rp.plan_runs([task], ["sac", "diffppo"], tmp_path, pairing="matched")
    assert [(p.algo, p.matched_to, p.run_dir.name) for p in alone] == [
        ("sac", None, "sac"), ("diffppo", None, "diffppo")]


def test_matched_runs_never_mix_with_a_reproduction_planned_per_preset(tmp_path, monkeypatch):
    task = rp.resolve_tasks("brax/inverted_pendulum")[0]
    algos = ["sac", "diffsac"]
    monkeypatch.setattr(rp, "run_experiment", _fake_run_experiment)
    # a reproduction from before the pairings: OUT/<env>/sac and OUT/<env>/diffsac, per preset
    old = rp.prepare([task], algos, tmp_path, num_seeds=2, pairing="presets")
    rp.run_plans(old.plans, old.states, rp.RunOptions(), "none", log=lambda line: None)
    # its resume per preset continues exactly it: the same directories, the same configs
    again = rp.prepare([task], algos, tmp_path, num_seeds=2, pairing="presets", resume=True)
    assert again.states == {p.run_dir: "completed" for p in old.plans}
    # the matched default plans sac into its own directory: the old one is not touched
    matched = rp.prepare([task], algos, tmp_path, num_seeds=2, resume=True)
    assert [p.run_dir.name for p in matched.plans] == ["sac.matched", "diffsac"]
    assert matched.states[tmp_path / task.env / "sac.matched"] == "none"
    before = (tmp_path / task.env / "sac/summary.json").read_text()
    records = rp.run_plans(matched.plans, matched.states, rp.RunOptions(), "none", lambda line: None)
    assert [(r["algo"], r["matched_to"], r["status"], r.get("skipped")) for r in records] == [
        ("sac", "diffsac", "completed", False), ("diffsac", None, "completed", True)]
    assert (tmp_path / task.env / "sac/summary.json").read_text() == before
    # a matched run where a per-preset run is expected (e.g. directories renamed by hand) is
    # refused on resume, not continued or skipped
    shutil.rmtree(tmp_path / task.env / "sac")
    shutil.copytree(tmp_path / task.env / "sac.matched", tmp_path / task.env / "sac")
    with pytest.raises(rp.CheckpointError, match=r"sac holds a run made with other settings.*tau"):
        rp.prepare([task], algos, tmp_path, num_seeds=2, pairing="presets", resume=True)
    with pytest.raises(rp.CheckpointError, match="already holds a run"):  # without --resume
        rp.prepare([task], algos, tmp_path, num_seeds=2, pairing="matched")


def test_the_report_shows_both_pairings_when_both_exist(tmp_path, capsys):
    MATCHED = [95.0, 96.0, 97.0, 98.0, 99.0]  # IQM 97 against diffsac's 92: -5
    out = tmp_path / "runs"
    write_run(out, "toy/a", "diffsac", WIN[0])
    write_run(out, "toy/a", "sac", WIN[1])             # per preset: diffsac wins
    write_run(out, "toy/a", "sac.matched", MATCHED)    # matched: diffsac loses
    task = rp.Task("toy/a", 8000, 5, (0.0, 100.0))
    res = rp.analyse([task], ["sac", "diffsac"], out, ("matched",), resamples=200)
    assert res["pairing"] == "matched" and res["other_pairing"]["pairing"] == "presets"
    assert res["tasks"][0]["pairs"][0]["final"]["verdict"] == "loses"
    assert res["tasks"][0]["algos"]["sac"]["final_per_seed"] == MATCHED
    assert res["other_pairing"]["tasks"][0]["pairs"][0]["final"]["verdict"] == "wins"
    # asked for presets only: still both, matched first (the verdicts)
    assert rp.analyse([task], ["sac", "diffsac"], out, ("presets",), resamples=200)["tasks"] == res["tasks"]
    # without the matched runs: only the pairing asked for and those found
    shutil.rmtree(out / "toy/a/sac.matched")
    alone = rp.analyse([task], ["sac", "diffsac"], out, ("presets",), resamples=200)
    assert alone["pairing"] == "presets" and alone["other_pairing"] is None
    asked = rp.analyse([task], ["sac", "diffsac"], out, ("matched",), resamples=200)
    assert asked["pairing"] == "matched" and asked["tasks"][0]["algos"]["sac"]["status"] == "missing"
    assert asked["other_pairing"]["pairing"] == "presets"
    write_run(out, "toy/a", "sac.matched", MATCHED)
    rp.TASK_LISTS["synthetic"] = (task,)
    try:
        code = cli.main(["--tasks", "synthetic", "--algos", "sac,diffsac", "--out", str(out),
                         "--aggregate-only", "--bootstrap-resamples", "200"])
    finally:
        del rp.TASK_LISTS["synthetic"]
    assert code == 0
    md = (out / "results.md").read_text()
    assert md.index("Verdicts: Matched pairs") < md.index("| toy/a | diffsac − sac | -5 [")
    second = md.index("## Second table: per-algorithm presets")
    assert md.index("| toy/a | diffsac − sac | -5 [") < second < md.index("| toy/a | diffsac − sac | +80 [")
    assert "### Diff − Gaussian per task (raw returns)" in md[second:]
    assert "| toy/a | sac (matched) | completed |" in md and "| toy/a | sac | completed |" in md
    for name in ("learning_curves_toy_a.png", "learning_curves_toy_a_presets.png",
                 "iqm_intervals.png", "iqm_intervals_presets.png"):
        assert (out / "plots" / name).stat().st_size > 0, name
    saved = json.loads((out / "results.json").read_text())
    assert saved["options"]["pairing"] == "matched" and saved["other_pairing"]["pairing"] == "presets"
    assert saved["definitions"]["pairing"].startswith("which Gaussian run a pair compares")
    # a pair listing: only policy-kind differences are marked as such
    pair = {"settings_differ": [
        {"field": "tau", "diff": 0.05, "base": 0.005, "policy_kind": False},
        {"field": "estimator", "diff": "full_chain", "base": "per_step", "policy_kind": True}]}
    from diffrl_jax.reproduction_report import _settings_differ
    assert _settings_differ(pair) == "tau 0.05 vs 0.005; policy kind only: estimator full_chain vs per_step"
    assert _settings_differ({"settings_differ": pair["settings_differ"][1:]}) == (
        "none; policy kind only: estimator full_chain vs per_step")


# ---- CLI errors: exit 2 before anything compiles --------------------------------------------

@pytest.mark.parametrize("extra, message", [
    (["--tasks", "nope"], "unknown task 'nope'"),
    (["--tasks", "playground/PendulumSwingup"], "several lists"),
    (["--algos", "sac,foo"], "unknown algorithm"),
    (["--algos", "sac,sac"], "lists an algorithm twice"),
    (["--steps-scale", "0"], "--steps-scale must be a finite number > 0"),
    (["--steps-scale", "nan"], "--steps-scale must be a finite number > 0"),
    (["--num-seeds", "0"], "--num-seeds must be >= 1"),
    (["--bootstrap-resamples", "0"], "--bootstrap-resamples must be >= 1"),
    (["--seed", "-1"], "must be >= 0"),
    (["--set", "total_env_steps=5"], "--steps-scale instead"),
    (["--set", "learning_rate=1e-3"], "task brax/inverted_pendulum, algo sac: unknown config field"),
    (["--set", "ppo:num_epochs=0"], "algo ppo: .*num_epochs"),
    (["--set", "dqn:actor_lr=1e-3"], "'dqn' is not an algorithm"),
    (["--steps-scale", "0.001"], "algo sac: .*leaves no training steps"),
    # mujoco_playground missing (ImportError) or too small a budget: exit 2 either way
    (["--tasks", "cpu:playground/CartpoleSwingup", "--steps-scale", "1e-5"],
     "task playground/CartpoleSwingup, algo sac: "),
    (["--checkpoint-every", "-1"], "checkpoint_every"),
    (["--resume", "--aggregate-only"], "leave out --resume"),
    (["--algos", "ppo,diffppo", "--set", "ppo:unroll_length=24"], "unequal budgets: diffppo would run"),
])
def test_cli_errors(tmp_path, capsys, extra, message):
    out = tmp_path / "out"
    argv = ["--tasks", "brax/inverted_pendulum", "--algos", "sac,ppo", "--out", str(out)]
    code = cli.main(argv + extra)
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ")
    assert re.search(message, err), err
    assert not out.exists()  # nothing was written


# ---- aggregation on synthetic runs ------------------------------------------------------------

OFF_STEPS, ON_STEPS = [2000, 4000, 6000, 8000], [2048, 4096, 6144, 8192]


def presets_results(*args, **kwargs):
    """rp.results_of of the "presets" pairing: write_run's directories are OUT/<env>/<algo>."""
    return rp.results_of(*args, pairing="presets", **kwargs)


def write_run(out, env, algo, final, steps=None, status="completed", curve=None, config=None):
    """A summary.json as run_experiment writes it (the fields the aggregation reads), every
    seed's curve constant at its final return unless curve [seeds, T] is given."""
    steps = steps or (ON_STEPS if "ppo" in algo else OFF_STEPS)
    final = np.asarray(final, dtype=float)
    curve = np.repeat(final[:, None], len(steps), axis=1) if curve is None else np.asarray(curve, float)
    directory = Path(out) / env / algo
    directory.mkdir(parents=True)
    summary = {
        "algo": algo, "env": env, "status": status, "message": None if status == "completed" else status,
        "num_seeds": len(final), "seed": 0, "total_env_steps": steps[-1],
        "final_eval_return": curve[:, -1].tolist(),
        "final_eval_return_deterministic": (curve[:, -1] + 1).tolist(),
        "eval_curve": [{"env_steps": s, "return_mean": float(curve[:, i].mean()),
                        "return_per_seed": curve[:, i].tolist(),
                        "return_deterministic_per_seed": (curve[:, i] + 1).tolist()}
                       for i, s in enumerate(steps)],
        "train_seconds": 10.0, "compile_seconds": 5.0, "env_steps_per_second": 800.0,
        "config": {} if config is None else config,
    }
    (directory / "summary.json").write_text(json.dumps(summary))
    return directory / "summary.json"


WIN = ([90, 91, 92, 93, 94], [10, 11, 12, 13, 14])      # diffsac, sac
LOSE = ([1, 2, 3, 4, 5], [50, 51, 52, 53, 54])           # diffwpo, wpo
TIE = ([50, 60, 40, 55, 45], [52, 58, 42, 50, 48])       # diffppo, ppo
ALGOS6 = ["sac", "diffsac", "wpo", "diffwpo", "ppo", "diffppo"]


def synthetic(tmp_path):
    """a, b: ranged tasks with all six algos (diffsac wins, diffwpo loses, diffppo ties);
    c: no range; d: ranged, sac diverged, diffppo failed, diffwpo missing."""
    out = tmp_path / "runs"
    for env in ("toy/a", "toy/b", "toy/c"):
        for (diff, base), (d, g) in zip([("diffsac", "sac"), ("diffwpo", "wpo"), ("diffppo", "ppo")],
                                        [WIN, LOSE, TIE]):
            write_run(out, env, diff, d)
            write_run(out, env, base, g)
    write_run(out, "toy/d", "sac", WIN[1], status="diverged")
    write_run(out, "toy/d", "diffsac", WIN[0])
    write_run(out, "toy/d", "wpo", LOSE[1])
    (out / "toy/d/diffppo").mkdir(parents=True)
    (out / "toy/d/diffppo" / rp.FAILURE_FILE).write_text(json.dumps({"error": "RuntimeError: boom"}))
    write_run(out, "toy/d", "ppo", TIE[1])
    tasks = [rp.Task("toy/a", 8192, 5, (0.0, 100.0)), rp.Task("toy/b", 8192, 5, (0.0, 200.0)),
             rp.Task("toy/c", 8192, 5, None), rp.Task("toy/d", 8192, 5, (0.0, 100.0))]
    return out, tasks


def test_aggregation_verdicts_and_exclusions(tmp_path):
    out, tasks = synthetic(tmp_path)
    res = presets_results(tasks, ALGOS6, out, resamples=500)
    a = res["tasks"][0]
    # each pair's own grid: the union of its two runs' eval steps inside the span both cover
    assert [p["grid"] for p in a["pairs"]] == [OFF_STEPS, OFF_STEPS, ON_STEPS]
    assert a["algos"]["sac"]["auc_grid"] == OFF_STEPS and a["algos"]["ppo"]["auc_grid"] == ON_STEPS
    assert a["budget"] is None and a["budget_source"].startswith("unknown")  # configs are {}
    assert a["algos"]["diffsac"]["final"]["iqm"] == pytest.approx(iqm(WIN[0]))  # 92
    assert a["algos"]["diffsac"]["auc_per_seed"] == pytest.approx(WIN[0])  # constant curves
    assert [(p["diff"], p["final"]["verdict"], p["auc"]["verdict"]) for p in a["pairs"]] == [
        ("diffsac", "wins", "wins"), ("diffwpo", "loses", "loses"), ("diffppo", "ties", "ties")]
    assert a["pairs"][0]["final"]["iqm"] == pytest.approx(92 - 12)
    d = {p["diff"]: p for p in res["tasks"][3]["pairs"]}
    assert d["diffsac"]["unavailable"] == "sac diverged"
    assert d["diffwpo"]["unavailable"] == "diffwpo missing"
    assert d["diffppo"]["unavailable"] == "diffppo failed"
    assert res["tasks"][3]["algos"]["diffppo"]["message"] == "RuntimeError: boom"
    agg = res["aggregate"]
    assert agg["tasks"] == ["toy/a", "toy/b"]
    assert agg["excluded"] == [
        {"task": "toy/c", "reason": "no score range"},
        {"task": "toy/d", "reason": "sac diverged, diffwpo missing, diffppo failed"}]
    # normalised: toy/a / 100, toy/b / 200, pooled over 10 runs
    pooled = np.concatenate([np.asarray(WIN[0]) / 100, np.asarray(WIN[0]) / 200])
    assert agg["algos"]["diffsac"]["final"]["iqm"] == pytest.approx(iqm(pooled))
    assert [(p["diff"], p["final"]["verdict"]) for p in agg["pairs"]] == [
        ("diffsac", "wins"), ("diffwpo", "loses"), ("diffppo", "ties")]
    md = markdown_tables(dict(res, options={"algos": ALGOS6, "confidence": 0.95,
                                            "bootstrap_resamples": 500}))
    assert "| toy/a | diffsac − sac | +80 [" in md and "| Diff wins |" in md
    assert "| toy/d | diffsac − sac | - | n/a (sac diverged) | - | n/a |" in md
    assert "Excluded: toy/c (no score range); toy/d (sac diverged, diffwpo missing, diffppo failed)." in md
    assert "| toy/d | 8,000–8,192 | 5 | diverged |" in md  # sac's cell in the final-return table


def test_auc_on_the_pair_grid_by_hand_and_unequal_budgets(tmp_path):
    out = tmp_path / "runs"
    rising = np.array(OFF_STEPS, float) / 100  # r(s) = s / 100 on 2000..8000
    write_run(out, "toy/a", "diffsac", rising[-1:].repeat(2), curve=[rising, 2 * rising])
    write_run(out, "toy/a", "sac", [5.0, 5.0], steps=[1000, 3000, 8192])  # 8,192 env steps
    res = presets_results([rp.Task("toy/a", 8192, 2, None)], ["sac", "diffsac"], out, resamples=50)
    task = res["tasks"][0]
    assert task["algos"]["diffsac"]["auc_grid"] == [2000, 3000, 4000, 6000, 8000]
    assert task["algos"]["sac"]["auc_grid"] == [2000, 3000, 4000, 6000, 8000]
    # the mean of a linear function over [2000, 8000] is its midpoint value
    assert task["algos"]["diffsac"]["auc_per_seed"] == pytest.approx([50.0, 100.0])
    assert task["algos"]["diffsac"]["grid_returns_per_seed"][0] == pytest.approx([20, 30, 40, 60, 80])
    assert task["algos"]["sac"]["auc_per_seed"] == pytest.approx([5.0, 5.0])
    # 8,000 vs 8,192 env steps: each run is scored, the pair is not compared
    pair = task["pairs"][0]
    assert pair["unavailable"] == "unequal budgets: 8000 vs 8192 env steps"
    assert "final" not in pair and "auc" not in pair
    assert task["algos"]["sac"]["usable"] and task["algos"]["diffsac"]["usable"]
    md = markdown_tables(dict(res, options={"algos": ["sac", "diffsac"], "confidence": 0.95,
                                            "bootstrap_resamples": 50}))
    assert "| toy/a | diffsac − sac | - | n/a (unequal budgets: 8000 vs 8192 env steps) |" in md
    # a ranged task with unequal budgets stays out of the aggregate
    ranged = presets_results([rp.Task("toy/a", 8192, 2, (0.0, 100.0))], ["sac", "diffsac"], out,
                           resamples=50)["aggregate"]
    assert ranged["tasks"] == [] and ranged["excluded"] == [
        {"task": "toy/a", "reason": "diffsac − sac unequal budgets: 8000 vs 8192 env steps"}]


def test_nonfinite_and_interrupted_runs_are_reported_not_scored(tmp_path):
    out = tmp_path / "runs"
    write_run(out, "toy/a", "sac", [1.0, 2.0])
    summary_path = out / "toy/a/sac/summary.json"
    summary = json.loads(summary_path.read_text())
    summary["final_eval_return"] = [1.0, float("nan")]
    summary_path.write_text(json.dumps(summary))
    write_run(out, "toy/a", "diffsac", [1.0, 2.0], status="interrupted")
    assert rp.load_run_result(out / "toy/a/sac")["status"] == "non-finite"
    res = presets_results([rp.Task("toy/a", 8000, 2, (0.0, 1.0))], ["sac", "diffsac"], out, resamples=50)
    entry = res["tasks"][0]["algos"]
    assert not entry["sac"]["usable"] and not entry["diffsac"]["usable"]
    assert "auc_grid" not in entry["sac"] and "grid" not in res["tasks"][0]["pairs"][0]
    assert res["tasks"][0]["pairs"][0]["unavailable"] == "diffsac interrupted, sac non-finite"
    assert res["aggregate"]["tasks"] == []


@pytest.mark.parametrize("where", ["final", "curve"])
def test_nonfinite_deterministic_returns_are_not_scored_and_results_json_is_strict(tmp_path, where):
    out = tmp_path / "runs"
    path = write_run(out, "toy/a", "sac", [1.0, 2.0])
    write_run(out, "toy/a", "diffsac", [3.0, 4.0])
    summary = json.loads(path.read_text())
    if where == "final":
        summary["final_eval_return_deterministic"] = [1.0, float("inf")]
    else:
        summary["eval_curve"][1]["return_deterministic_per_seed"] = [float("nan"), 1.0]
    path.write_text(json.dumps(summary))  # NaN / Infinity literals, as json.dumps writes them
    run = rp.load_run_result(out / "toy/a/sac")
    assert (run["status"], run["usable"]) == ("non-finite", False)
    assert "deterministic" in run["message"]
    res = presets_results([rp.Task("toy/a", 8000, 2, (0.0, 10.0))], ["sac", "diffsac"], out, resamples=50)
    assert res["tasks"][0]["pairs"][0]["unavailable"] == "sac non-finite"
    # results.json is strict JSON: any NaN left in the results (here planted) is null
    res.update(options={"algos": ["sac", "diffsac"], "confidence": 0.95, "bootstrap_resamples": 50},
               planted={"nan": float("nan"), "arr": np.array([1.0, np.inf]), "n": np.float32(2)})
    written = write_results(res, tmp_path / "report")

    def no_constants(name):
        raise AssertionError(f"results.json holds {name}")

    loaded = json.loads(written["json"].read_text(), parse_constant=no_constants)
    assert loaded["planted"] == {"nan": None, "arr": [1.0, None], "n": 2.0}
    assert loaded["tasks"][0]["algos"]["sac"]["status"] == "non-finite"


def test_the_newest_record_of_a_run_wins(tmp_path):
    run = tmp_path / "toy/a/sac"
    summary = write_run(tmp_path, "toy/a", "sac", [1.0, 2.0], status="interrupted")
    failure = run / rp.FAILURE_FILE
    failure.write_text(json.dumps({"error": "RuntimeError: resume failed"}))
    # a resume after the interrupted session failed: failure.json is newer
    os.utime(summary, ns=(1_000_000_000, 1_000_000_000))
    os.utime(failure, ns=(2_000_000_000, 2_000_000_000))
    assert rp.load_run_result(run)["status"] == "failed"
    assert rp.load_run_result(run)["message"] == "RuntimeError: resume failed"
    assert rp.dir_state(run) == "failed"
    # a later session wrote the summary after the failure: the summary is the news
    os.utime(summary, ns=(3_000_000_000, 3_000_000_000))
    assert rp.load_run_result(run)["status"] == "interrupted"
    data = json.loads(summary.read_text())
    data["status"] = "completed"
    summary.write_text(json.dumps(data))
    os.utime(summary, ns=(3_000_000_000, 3_000_000_000))
    assert rp.load_run_result(run)["usable"] and rp.dir_state(run) == "completed"
    # the same time: the failure (recorded only after a summary's session) wins
    os.utime(failure, ns=(3_000_000_000, 3_000_000_000))
    assert rp.load_run_result(run)["status"] == "failed" and rp.dir_state(run) == "failed"


def test_settings_that_differ_besides_the_policy(tmp_path):
    out = tmp_path / "runs"
    base = {"algo": "sac", "env": "toy/a", "total_env_steps": 8000, "tau": 0.005,
            "updates_per_step": 8, "critic_hidden": [256, 256],
            "diffusion": {"num_steps": 8, "hidden_sizes": [256, 256]},
            "gaussian": {"hidden_sizes": [64, 64]}}
    diff = dict(base, algo="diffsac", tau=0.05, updates_per_step=16, critic_hidden=[128],
                diffusion={"num_steps": 4, "hidden_sizes": [32]}, gaussian={"hidden_sizes": [8]})
    write_run(out, "toy/a", "diffsac", WIN[0], config=diff)
    write_run(out, "toy/a", "sac", WIN[1], config=base)
    write_run(out, "toy/a", "diffppo", TIE[0], config=dict(base, algo="diffppo", total_env_steps=8192))
    write_run(out, "toy/a", "ppo", TIE[1], config=dict(base, algo="ppo", total_env_steps=8192))
    write_run(out, "toy/a", "diffwpo", LOSE[0], config=dict(base, algo="diffwpo", extra=1))
    res = presets_results([rp.Task("toy/a", 8192, 5, None)], ALGOS6, out, resamples=50)
    pairs = {p["diff"]: p for p in res["tasks"][0]["pairs"]}
    # algo and the policy sub-configs (diffusion, gaussian) define the method: not listed
    assert pairs["diffsac"]["settings_differ"] == [
        {"field": "critic_hidden", "diff": [128], "base": [256, 256], "policy_kind": False},
        {"field": "tau", "diff": 0.05, "base": 0.005, "policy_kind": False},
        {"field": "updates_per_step", "diff": 16, "base": 8, "policy_kind": False}]
    assert pairs["diffppo"]["settings_differ"] == []
    assert pairs["diffwpo"]["settings_differ"] is None  # wpo has no run
    assert rp.settings_differences({"a": 1, "n": {"x": 1}}, {"n": {"x": 2, "y": 3}}) == [
        {"field": "a", "diff": 1, "base": "<missing>", "policy_kind": False},
        {"field": "n.x", "diff": 1, "base": 2, "policy_kind": False},
        {"field": "n.y", "diff": "<missing>", "base": 3, "policy_kind": False}]
    md = markdown_tables(dict(res, options={"algos": ALGOS6, "confidence": 0.95,
                                            "bootstrap_resamples": 50}))
    table_end = md.index("Settings that differ besides the policy")
    assert md.index("## Diff − Gaussian per task") < table_end
    assert ("- toy/a diffsac − sac: critic_hidden (128) vs (256, 256), tau 0.05 vs 0.005, "
            "updates_per_step 16 vs 8\n") in md
    assert "- toy/a diffppo − ppo: none\n" in md
    assert "- toy/a diffwpo − wpo: unknown (no config of both runs)\n" in md
    # the budget in aggregate-only mode: what the runs were asked for, where they agree
    assert (res["tasks"][0]["budget"], res["tasks"][0]["budget_source"]) == (
        None, "the runs disagree: config.total_env_steps 8000, 8192")
    planned = presets_results([rp.Task("toy/a", 8192, 5, None)], ALGOS6, out, resamples=50,
                            budgets={"toy/a": 4096})["tasks"][0]
    assert (planned["budget"], planned["task_budget"]) == (4096, 8192)
    only = presets_results([rp.Task("toy/a", 99, 5, None)], ["sac", "diffsac"], out, resamples=50)
    assert (only["tasks"][0]["budget"], only["tasks"][0]["task_budget"]) == (8000, 99)


def test_bootstrap_streams_do_not_depend_on_the_other_tasks(tmp_path):
    out, tasks = synthetic(tmp_path)
    alone = presets_results(tasks[:1], ["sac", "diffsac"], out, resamples=300)["tasks"][0]
    among = presets_results(tasks, ALGOS6, out, resamples=300)["tasks"][0]
    assert alone["algos"]["sac"]["final"] == among["algos"]["sac"]["final"]
    assert alone["pairs"][0]["final"] == among["pairs"][0]["final"]
    assert alone["pairs"][0]["auc"] == among["pairs"][0]["auc"]


def test_a_pairs_auc_does_not_depend_on_the_other_pairs_runs(tmp_path):
    # rising curves, so the AUC depends on the grid; ppo evaluates at other steps
    # (2048..8192), which would narrow a grid shared by all algorithms to [2048, 8000]
    out = tmp_path / "runs"
    rising = np.array(OFF_STEPS, float) / 100
    write_run(out, "toy/a", "diffsac", [80.0, 160.0], curve=[rising, 2 * rising])
    write_run(out, "toy/a", "sac", [40.0, 80.0], curve=[rising / 2, rising])
    task = rp.Task("toy/a", 8192, 2, (0.0, 100.0))
    keys = ("auc_per_seed", "auc", "auc_grid", "grid_returns_per_seed")

    def sac_pair(algos):
        res = presets_results([task], algos, out, resamples=200)
        t = res["tasks"][0]
        return ({a: {k: t["algos"][a][k] for k in keys} for a in ("sac", "diffsac")},
                t["pairs"][0], res["aggregate"]["algos"]["sac"]["auc"])

    alone = sac_pair(["sac", "diffsac"])
    assert alone[0]["diffsac"]["auc_per_seed"] == pytest.approx([50.0, 100.0])
    write_run(out, "toy/a", "ppo", [1.0, 2.0], curve=[np.array(ON_STEPS) / 100] * 2)
    with_ppo = sac_pair(["sac", "diffsac", "ppo"])
    write_run(out, "toy/a", "diffppo", [1.0, 2.0], curve=[np.array(ON_STEPS) / 50] * 2)
    with_pair = sac_pair(["sac", "diffsac", "ppo", "diffppo"])
    assert alone == with_ppo == with_pair
    # ppo's AUC: its pair's grid, or without a usable partner its own evaluation steps
    res = presets_results([task], ["sac", "ppo"], out, resamples=50)["tasks"][0]["algos"]["ppo"]
    assert (res["auc_grid"], res["auc_grid_of"]) == (ON_STEPS, "own evaluation steps")


def test_a_failing_run_is_recorded_and_the_rest_go_on(tmp_path, monkeypatch):
    calls = []

    def fake_run(algo, env, total_steps, num_seeds, seed, out, **kwargs):
        calls.append((algo, kwargs["resume"]))
        if algo == "sac":
            raise RuntimeError("out of memory")
        Path(out).mkdir(parents=True)
        status = "interrupted" if algo == "wpo" else "diverged"
        return {"status": status, "message": f"{status} at 100", "train_seconds": 1.0,
                "compile_seconds": 2.0}

    monkeypatch.setattr(rp, "run_experiment", fake_run)
    task = rp.Task("toy/a", 1000, 2)
    plans = [rp.RunPlan(task, a, 1000, 2, 0, (), None, rp.run_dir(tmp_path, task, a))
             for a in ("sac", "diffsac", "wpo", "diffwpo")]
    records = rp.run_plans(plans, {}, rp.RunOptions(), progress="none", log=lambda line: None)
    assert [(r["algo"], r["status"]) for r in records] == [
        ("sac", "failed"), ("diffsac", "diverged"), ("wpo", "interrupted")]  # diffwpo not started
    assert records[0]["message"] == "RuntimeError: out of memory"
    failure = json.loads((tmp_path / "toy/a/sac" / rp.FAILURE_FILE).read_text())
    assert "out of memory" in failure["error"] and "Traceback" in failure["traceback"]
    assert rp.load_run_result(tmp_path / "toy/a/sac")["status"] == "failed"
    # resuming: the failed run is set aside and run again, fresh
    assert rp.dir_state(tmp_path / "toy/a/sac") == "failed"
    calls.clear()
    record = rp.execute(plans[0], "failed", rp.RunOptions(), "none")
    assert record["set_aside"] == str(tmp_path / "toy/a/sac.attempt-1")
    assert (tmp_path / "toy/a/sac.attempt-1" / rp.FAILURE_FILE).exists()
    assert calls == [("sac", False)]


def test_a_stop_requested_during_a_runs_last_interval_starts_no_further_run(tmp_path, monkeypatch):
    # run_experiment reports "completed" (the run finished) with stop_requested: the Ctrl-C
    # came during its last interval; the reproduction must not go on to the next run
    calls = []

    def fake_run(algo, env, total_steps, num_seeds, seed, out, **kwargs):
        calls.append(algo)
        return {"status": "completed", "message": None, "train_seconds": 1.0,
                "compile_seconds": 2.0, "stop_requested": algo == "diffsac"}

    monkeypatch.setattr(rp, "run_experiment", fake_run)
    task = rp.Task("toy/a", 1000, 2)
    plans = [rp.RunPlan(task, a, 1000, 2, 0, (), None, rp.run_dir(tmp_path, task, a))
             for a in ("sac", "diffsac", "wpo")]
    lines = []
    records = rp.run_plans(plans, {}, rp.RunOptions(), progress="none", log=lines.append)
    assert calls == ["sac", "diffsac"]
    assert [(r["status"], r["stop_requested"]) for r in records] == [
        ("completed", False), ("completed", True)]
    assert "not starting the next run; continue with --resume" in lines[-1]
    calls.clear()  # the stop request during the last plan: nothing is left to skip
    assert len(rp.run_plans(plans[1:2], {}, rp.RunOptions(), "none", lambda line: None)) == 1


def _analysis_list(out):
    write_run(out, "toy/a", "diffsac", WIN[0])
    write_run(out, "toy/a", "sac", WIN[1])
    write_run(out, "toy/b", "diffsac", WIN[0])
    broken = write_run(out, "toy/b", "sac", WIN[1])
    summary = json.loads(broken.read_text())
    summary["eval_curve"] = summary["eval_curve"][::-1]  # steps not increasing: common_grid raises
    broken.write_text(json.dumps(summary))
    return (rp.Task("toy/a", 8000, 5, (0.0, 100.0)), rp.Task("toy/b", 8000, 5, (0.0, 100.0)))


def test_an_analysis_error_of_one_task_is_reported_and_the_rest_written(tmp_path, capsys):
    out = tmp_path / "out"
    rp.TASK_LISTS["synthetic"] = _analysis_list(out)
    try:
        code = cli.main(["--tasks", "synthetic", "--algos", "sac,diffsac", "--out", str(out),
                         "--aggregate-only", "--bootstrap-resamples", "100", "--pairing", "presets"])
    finally:
        del rp.TASK_LISTS["synthetic"]
    captured = capsys.readouterr()
    assert code == 1  # not 2: the arguments were fine
    assert re.search(r"error: the analysis of toy/b failed: ValueError: .*strictly increasing",
                     captured.err), captured.err
    results = json.loads((out / "results.json").read_text())
    a, b = results["tasks"]
    assert a["pairs"][0]["final"]["verdict"] == "wins" and "error" not in a
    assert b["error"].startswith("ValueError: ") and b["pairs"][0]["unavailable"] == "analysis failed"
    assert b["algos"]["sac"]["status"] == "analysis failed"
    assert [e["task"] for e in results["analysis_errors"]] == ["toy/b"]
    assert "Traceback" in results["analysis_errors"][0]["traceback"]
    assert results["aggregate"]["tasks"] == ["toy/a"]
    assert results["aggregate"]["excluded"][0]["reason"].startswith("analysis failed: ValueError")
    md = (out / "results.md").read_text()
    assert "## Analysis errors" in md and "- toy/b: ValueError: " in md
    assert "| toy/b | - | - | analysis failed | analysis failed |" in md
    assert (out / "plots" / "learning_curves_toy_a.png").exists()


# ---- one small reproduction end to end ------------------------------------------------------

TINY = ("num_evals=2", "num_eval_envs=16", "diffusion.num_steps=2", "diffusion.hidden_sizes=(16,)",
        "diffusion.time_hidden=8", "gaussian.hidden_sizes=(16,)", "critic_hidden=(32,)",
        "batch_size=64", "updates_per_step=1", "buffer_size=4096", "learning_starts=256")
SMOKE_TASK = rp.Task("toy/bandit", 1024, 2, (0.0, 1.0), settings=TINY)
SMOKE_ARGS = ["--tasks", "smoke", "--algos", "sac,diffsac", "--bootstrap-resamples", "300",
              "--progress", "none", "--no-compile-cache"]
# the default pairing, "matched": sac runs diffsac's settings, in its own directory
SMOKE_DIRS = {"sac": "sac.matched", "diffsac": "diffsac"}


@contextlib.contextmanager
def smoke_list():
    rp.TASK_LISTS["smoke"] = (SMOKE_TASK,)
    try:
        yield
    finally:
        del rp.TASK_LISTS["smoke"]


def run_cli(argv):
    stdout = io.StringIO()
    with smoke_list(), contextlib.redirect_stdout(stdout):
        code = cli.main(argv)
    return code, stdout.getvalue()


class _CtrlCInFirstRunsLastInterval(experiment._StopRequests):
    """A Ctrl-C (a real SIGINT to this process) during the last of the first run's 2
    intervals: too late to stop that run, which completes."""

    fired = False

    def agreed(self) -> bool:
        self.checks = getattr(self, "checks", 0) + 1
        if self.checks == 2 and not _CtrlCInFirstRunsLastInterval.fired:
            _CtrlCInFirstRunsLastInterval.fired = True
            if self.previous:  # our handler is installed (the main thread)
                signal.raise_signal(signal.SIGINT)
            else:
                self.requested = True
        return super().agreed()


@contextlib.contextmanager
def ctrl_c_in_first_runs_last_interval():
    original = experiment._StopRequests
    _CtrlCInFirstRunsLastInterval.fired = False
    experiment._StopRequests = _CtrlCInFirstRunsLastInterval
    try:
        yield
    finally:
        experiment._StopRequests = original


def _reproduce(directory: Path):
    """The smoke reproduction, stopped by a Ctrl-C during sac's last interval (exit 130,
    diffsac not started), then continued with --resume."""
    out = directory / "out"
    stderr = io.StringIO()
    with ctrl_c_in_first_runs_last_interval(), contextlib.redirect_stderr(stderr):
        stopped = run_cli(SMOKE_ARGS + ["--out", str(out)])
    stopped_results = json.loads((out / "results.json").read_text())
    stopped_results["test_stderr"] = stderr.getvalue()
    return stopped, stopped_results, run_cli(SMOKE_ARGS + ["--out", str(out), "--resume"])


@pytest.fixture(scope="module")
def smoke_sessions(tmp_path_factory):
    (stopped, stopped_results, resumed), directory = computed_once(
        tmp_path_factory, "test_reproduce_smoke", _reproduce)
    return stopped, stopped_results, resumed, directory / "out"


@pytest.fixture(scope="module")
def smoke(smoke_sessions):
    _, _, (code, stdout), out = smoke_sessions
    return code, stdout, out


def test_smoke_a_ctrl_c_in_a_runs_last_interval_stops_before_the_next_run(smoke_sessions):
    (code, stdout), results, _, out = smoke_sessions
    assert code == 130
    assert results["interrupted"] is True
    assert [(r["algo"], r["status"], r["stop_requested"]) for r in results["runs"]] == [
        ("sac", "completed", True)]  # diffsac was not started
    sac, diffsac = (results["tasks"][0]["algos"][a] for a in ("sac", "diffsac"))
    assert sac["usable"] and diffsac["status"] == "missing"
    summary = json.loads((out / "toy/bandit/sac.matched/summary.json").read_text())
    assert summary["status"] == "completed" and summary["stop_requested"] is True
    assert "not starting the next run; continue with --resume" in stdout
    if threading.current_thread() is threading.main_thread():  # the SIGINT handler ran
        assert "SIGINT: stopping after the current interval" in results["test_stderr"]
    assert "interrupted: continue with the same command and --resume" in results["test_stderr"]


def test_smoke_writes_runs_results_and_plots(smoke):
    code, stdout, out = smoke
    assert code == 0
    assert not (out / "toy/bandit/sac").exists()  # no per-preset sac run in the matched pairing
    for algo in ("sac", "diffsac"):
        run = out / "toy/bandit" / SMOKE_DIRS[algo]
        assert (run / "summary.json").exists() and (run / "learning_curve.png").exists()
        assert (run / "checkpoints").is_dir()
        assert json.loads((run / "summary.json").read_text())["status"] == "completed"
    for name in ("results.json", "results.md", "plots/learning_curves_toy_bandit.png",
                 "plots/iqm_intervals.png"):
        assert (out / name).stat().st_size > 0, name
    results = json.loads((out / "results.json").read_text())
    assert results["command"] == shlex.join(
        ["python", "experiments/reproduce.py"] + SMOKE_ARGS + ["--out", str(out), "--resume"])
    assert [(r["algo"], r["skipped"]) for r in results["runs"]] == [("sac", True), ("diffsac", False)]
    assert results["runs"][1]["stop_requested"] is False and results["interrupted"] is False
    assert results["tasks"][0]["budget"] == 1024 and results["plans"][0]["total_env_steps_requested"] == 1024
    assert results["versions"]["jax"] and results["device"]["kind"] and results["date"]
    assert (out / "results.md").read_text() in stdout  # the tables are printed
    assert results["markdown"] == (out / "results.md").read_text()


def test_smoke_tables_equal_the_runs_summaries(smoke):
    _, _, out = smoke
    results = json.loads((out / "results.json").read_text())
    markdown = (out / "results.md").read_text()
    task = results["tasks"][0]
    summaries = {a: json.loads((out / "toy/bandit" / SMOKE_DIRS[a] / "summary.json").read_text())
                 for a in ("sac", "diffsac")}
    # matched: the runs' own configs differ in no setting besides the policy
    assert results["pairing"] == "matched" and results["other_pairing"] is None
    assert task["pairs"][0]["settings_differ"] == []
    assert summaries["sac"]["config"]["tau"] == 0.05  # diffsac's preset (sac's own: 0.005)
    assert summaries["sac"]["config"]["gaussian"]["hidden_sizes"] == [16]  # its own policy
    curves = {a: (np.array([p["env_steps"] for p in s["eval_curve"]], float),
                  np.array([p["return_per_seed"] for p in s["eval_curve"]]).T)
              for a, s in summaries.items()}
    grid = common_grid([c[0] for c in curves.values()])
    assert task["pairs"][0]["grid"] == grid.tolist() == task["algos"]["sac"]["auc_grid"]
    for algo, summary in summaries.items():
        entry = task["algos"][algo]
        final = np.array(summary["final_eval_return"])
        assert entry["final_per_seed"] == summary["final_eval_return"]
        assert entry["total_env_steps"] == summary["total_env_steps"] <= 1024
        auc = area_under_curve(grid, interpolate_curves(*curves[algo], grid))
        assert entry["auc_per_seed"] == pytest.approx(auc, rel=1e-12)
        ci = stratified_bootstrap_ci([final], lambda s: iqm(s[0], axis=1), 300, 0.95,
                                     rp._rng(0, "toy/bandit", algo, "final"))
        assert (entry["final"]["iqm"], entry["final"]["ci_low"], entry["final"]["ci_high"]) == ci
        assert entry["final"]["iqm"] == iqm(final)
        assert f"| {format_interval(entry['final'])} |" in markdown
        assert f"| {format_interval(entry['auc'])} |" in markdown
    pair = task["pairs"][0]
    assert (pair["diff"], pair["base"]) == ("diffsac", "sac")
    assert pair["final"]["iqm"] == pytest.approx(
        iqm(summaries["diffsac"]["final_eval_return"]) - iqm(summaries["sac"]["final_eval_return"]))
    expected = ("wins" if pair["final"]["ci_low"] > 0 else
                "loses" if pair["final"]["ci_high"] < 0 else "ties")
    assert pair["final"]["verdict"] == expected
    assert f"| {format_interval(pair['final'], signed=True)} | Diff {expected} |" in markdown
    # the bandit's range (0, 1): normalised scores are the raw ones
    assert results["aggregate"]["tasks"] == ["toy/bandit"]
    aggregate_sac = results["aggregate"]["algos"]["sac"]["final"]["iqm"]
    assert aggregate_sac == pytest.approx(task["algos"]["sac"]["final"]["iqm"])


def test_smoke_resume_skips_finished_runs_and_aggregate_only_recomputes(smoke, tmp_path):
    _, _, shared = smoke
    out = tmp_path / "out"
    shutil.copytree(shared, out)
    before = json.loads((out / "results.json").read_text())
    code, _ = run_cli(SMOKE_ARGS + ["--out", str(out)])  # no --resume: refused
    assert code == 2
    code, _ = run_cli(SMOKE_ARGS + ["--out", str(out), "--resume"])
    assert code == 0
    again = json.loads((out / "results.json").read_text())
    assert [r["skipped"] for r in again["runs"]] == [True, True]
    assert again["tasks"] == before["tasks"]
    (out / "results.json").unlink()
    code, stdout = run_cli(["--tasks", "smoke", "--algos", "sac,diffsac", "--out", str(out),
                            "--aggregate-only", "--bootstrap-resamples", "300"])
    assert code == 0 and "| toy/bandit | diffsac − sac |" in stdout
    recomputed = json.loads((out / "results.json").read_text())
    assert recomputed["aggregate"] == before["aggregate"]
    # the same budget, read back from the runs instead of planned
    assert [t.pop("budget_source") for t in recomputed["tasks"] + before["tasks"]] == [
        "the runs' summary.json config.total_env_steps", "planned: the task's budget x --steps-scale"]
    assert recomputed["tasks"] == before["tasks"]
    # other options for a finished run are refused, not silently reused
    code, _ = run_cli(SMOKE_ARGS + ["--out", str(out), "--resume", "--num-seeds", "3"])
    assert code == 2


def test_a_run_directory_written_since_planning_is_left_alone(tmp_path, monkeypatch):
    # two reproductions on one OUT: the other one finished this run after we planned it
    calls = []
    monkeypatch.setattr(rp, "run_experiment", lambda *a, **k: calls.append(a) or {})
    task = rp.Task("toy/a", 1000, 2)
    plan = rp.RunPlan(task, "sac", 1000, 2, 0, (), None, rp.run_dir(tmp_path, task, "sac"))
    plan.run_dir.mkdir(parents=True)
    (plan.run_dir / "summary.json").write_text(json.dumps({"status": "completed"}))
    record = rp.execute(plan, "none", rp.RunOptions(), "none")
    assert record["status"] == "conflict" and "changed since planning" in record["message"]
    assert calls == [] and not (plan.run_dir / rp.FAILURE_FILE).exists()
    assert rp.dir_state(plan.run_dir) == "completed"
