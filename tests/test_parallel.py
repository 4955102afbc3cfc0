"""Training on a device mesh and across processes equals the single-device run.

Several CPU devices come from XLA_FLAGS=--xla_force_host_platform_device_count, which has to
be set before JAX starts, so the multi-device checks run in subprocesses."""

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import numpy as np
import pytest

from diffrl_jax.parallel import (
    DATA_AXIS,
    SEED_AXIS,
    constrain_batch,
    gather_to_host,
    global_seed_keys,
    initialize,
    is_main_process,
    make_mesh,
    parse_mesh_shape,
    process_info,
    seed_sharding,
)

ROOT = Path(__file__).resolve().parents[1]


def _run(code_or_args, devices: int):
    # CPU devices even on a GPU machine; the package from this checkout
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
               JAX_PLATFORMS="cpu",
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    args = ["-c", textwrap.dedent(code_or_args)] if isinstance(code_or_args, str) else code_or_args
    return subprocess.Popen([sys.executable, *args], env=env, cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _finish(proc, timeout=300):
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err[-3000:]
    return out


# ---- in-process: one device ---------------------------------------------------------------

def test_mesh_shapes_parse_and_bad_ones_are_named():
    assert parse_mesh_shape("4x2") == (4, 2)
    assert parse_mesh_shape("1X1") == (1, 1)
    for bad in ("4", "0x2", "ax2", "2x2x2", "-1x1"):
        with pytest.raises(ValueError, match="SEEDSxDATA"):
            parse_mesh_shape(bad)


def test_make_mesh_checks_the_device_count():
    mesh = make_mesh(1, 1, jax.devices()[:1])
    assert mesh.axis_names == (SEED_AXIS, DATA_AXIS) and mesh.devices.shape == (1, 1)
    with pytest.raises(ValueError, match="needs 4 devices, 1 given"):
        make_mesh(2, 2, jax.devices()[:1])
    with pytest.raises(ValueError, match="data_shards must be a positive integer"):
        make_mesh(1, 0)


def test_without_a_mesh_nothing_is_constrained_and_keys_are_the_plain_split():
    tree = {"x": np.ones((4, 2))}
    assert constrain_batch(tree, None) is tree
    mesh = make_mesh(1, 1, jax.devices()[:1])
    keys = global_seed_keys(3, 5, seed_sharding(mesh))
    np.testing.assert_array_equal(np.asarray(keys), np.asarray(jax.random.split(jax.random.PRNGKey(3), 5)))
    host = gather_to_host({"k": keys})
    assert isinstance(host["k"], np.ndarray) and host["k"].shape == keys.shape


def test_single_process_information_and_partial_distributed_arguments():
    info = process_info()
    assert (info.index, info.count) == (0, 1) and info.devices == len(jax.devices())
    assert is_main_process()
    with pytest.raises(ValueError, match="give all of coordinator_address"):
        initialize("localhost:1234", None, None)
    with pytest.raises(ValueError, match="process_id must be in"):
        initialize("localhost:1234", 2, 2)


# ---- four CPU devices in one process --------------------------------------------------------

MESH_CHECK = """
    import json, re
    import jax, numpy as np
    from diffrl_jax.experiment import make_config
    from diffrl_jax.parallel import make_mesh
    from diffrl_jax.training import mesh_train
    from diffrl_jax.training import train

    assert len(jax.devices()) == 4
    small = {
        "sac": dict(num_envs=8, learning_starts=64, batch_size=32, updates_per_step=2,
                    buffer_size=1000, total_steps=300),
        "ppo": dict(num_envs=8, unroll_length=4, num_minibatches=2, total_steps=256),
    }
    keys = jax.random.split(jax.random.PRNGKey(0), 4)
    shapes = {"sac": ((2, 2), (4, 1)), "ppo": ((2, 2),)}
    report = {}
    for algo, kw in small.items():
        config = make_config(algo, "toy/bandit", num_evals=2, num_eval_envs=16, **kw)
        _, reference = jax.jit(jax.vmap(lambda k: train(k, config)))(keys)
        row = {}
        for shape in shapes[algo]:
            compiled = mesh_train(config, make_mesh(*shape)).lower(keys).compile()
            _, metrics = compiled(keys)
            shards = metrics["eval_return"].addressable_shards
            row[str(shape)] = {
                # allclose(rtol=2e-2, atol=2e-3) holds where this is <= 0: the gradient
                # all-reduce sums in another order, and training amplifies the rounding (a
                # run that dropped half of each minibatch would differ by O(0.1))
                "worst_excess": {k: float(np.max(np.abs(np.asarray(metrics[k]) - np.asarray(reference[k]))
                                                 - 2e-2 * np.abs(np.asarray(reference[k])) - 2e-3))
                                 for k in reference},
                "seed_rows_per_device": sorted({s.data.shape[0] for s in shards}),
                "devices_holding_seed_rows": len({s.device for s in shards}),
                "seed_slices": sorted({(s.index[0].start or 0) for s in shards}),
                "all_reduces": len(re.findall(r"all-reduce(?:-start)?\\(", compiled.as_text())),
            }
        report[algo] = row
    try:
        mesh_train(make_config("sac", "toy/bandit", num_envs=6), make_mesh(1, 4))(keys)
    except ValueError as err:
        report["error"] = str(err)
    print(json.dumps(report))
"""


def test_mesh_run_equals_the_unsharded_run_and_splits_the_seeds():
    report = json.loads(_finish(_run(MESH_CHECK, devices=4)).strip().splitlines()[-1])
    for algo in ("sac", "ppo"):
        for shape, row in report[algo].items():
            for name, excess in row["worst_excess"].items():
                assert excess <= 0, (algo, shape, name, excess)
        # the seed axis is split: 2 seed rows on each device, two different seed slices
        assert report[algo]["(2, 2)"]["seed_rows_per_device"] == [2]
        assert report[algo]["(2, 2)"]["seed_slices"] == [0, 2]
        # split environments: gradients (and statistics) are reduced across devices
        assert report[algo]["(2, 2)"]["all_reduces"] > 0
    # seeds alone are independent programs: one seed per device, no cross-device reduction
    assert report["sac"]["(4, 1)"]["seed_rows_per_device"] == [1]
    assert report["sac"]["(4, 1)"]["seed_slices"] == [0, 1, 2, 3]
    assert report["sac"]["(4, 1)"]["devices_holding_seed_rows"] == 4
    assert report["sac"]["(4, 1)"]["all_reduces"] == 0
    assert "num_envs (6) must be a multiple of the mesh's 4 data shards" in report["error"]


def test_interval_chunks_donate_the_state_and_update_it_in_place():
    """The chunk program aliases its whole input state to its output (no second copy of the
    replay buffer), deletes the given state and still gives mesh_train's result."""
    from diffrl_jax.experiment import make_config
    from diffrl_jax.training import mesh_program, mesh_train

    config = make_config("sac", "toy/bandit", "mjx", 800, num_evals=2, learning_starts=64,
                         buffer_size=4096)
    mesh = make_mesh(1, 1)
    keys = global_seed_keys(0, 2, seed_sharding(mesh))
    program = mesh_program(config, mesh)
    abstract = program.abstract_state(keys)
    chunk = program.chunk(1).lower(abstract).compile()
    memory = chunk.memory_analysis()
    state_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(abstract))
    assert memory.argument_size_in_bytes == state_bytes
    assert memory.alias_size_in_bytes == state_bytes  # every leaf updated in place

    state = program.init(keys)
    buffer_before = state.buffer.data.obs
    metrics = []
    for _ in range(program.num_intervals):
        given = state
        state, m = chunk(state)
        metrics.append(m)
        assert all(x.is_deleted() for x in jax.tree.leaves(given))
    assert buffer_before.is_deleted()
    # another compiled program: equal up to floating-point reassociation (observed 7e-5)
    _, whole = mesh_train(config, mesh)(keys)
    for name in ("eval_return", "critic_loss", "alpha"):
        chunked = np.concatenate([np.asarray(m[name]) for m in metrics], axis=1)
        np.testing.assert_allclose(chunked, np.asarray(whole[name]), rtol=1e-3, atol=1e-5)


# ---- two processes x two CPU devices through the experiment command --------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_run_the_same_training_as_one_process(tmp_path):
    common = ["experiments/train.py", "--algo", "sac", "--env", "toy/bandit", "--total-steps",
              "1000", "--num-seeds", "4", "--mesh", "2x2", "--quiet", "--no-compile-cache"]
    address = f"localhost:{_free_port()}"
    # both processes write one run directory (a shared filesystem on a real cluster)
    procs = [_run(common + ["--out", str(tmp_path / "multi"), "--distributed",
                            "--coordinator", address, "--num-processes", "2", "--process-id", str(i)],
                  devices=2) for i in range(2)]
    outs = [_finish(p) for p in procs]
    single_out = _finish(_run(common + ["--out", str(tmp_path / "single")], devices=4))

    multi = json.loads((tmp_path / "multi" / "summary.json").read_text())
    single = json.loads((tmp_path / "single" / "summary.json").read_text())
    assert "final eval return" in outs[0] and "final eval return" not in outs[1]  # process 0 reports
    assert "final eval return" in single_out
    assert (multi["processes"], single["processes"]) == (2, 1)
    assert multi["mesh"] == single["mesh"] == {"seed": 2, "data": 2}
    # the checkpoint the two processes wrote together holds every seed's state
    check = _finish(_run(f"""
        import numpy as np
        from diffrl_jax.checkpoint_eval import load_run
        run = load_run({str(tmp_path / "multi")!r})
        print("STEPS", int(run.step), np.asarray(run.state.env_steps).tolist())
    """, devices=1))
    assert f"STEPS {multi['total_env_steps']} {[multi['total_env_steps']] * 4}" in check
    # plots gather seed 0's policy from both processes; only process 0 writes them
    assert (tmp_path / "multi" / "action_histogram.png").read_bytes()[:4] == b"\x89PNG"
    for a, b in zip(multi["eval_curve"], single["eval_curve"]):
        np.testing.assert_allclose(a["return_per_seed"], b["return_per_seed"], atol=1e-5)
