"""Full-state checkpoints of a training run with Orbax.

A checkpoint holds three items under RUN/checkpoints/<env_steps>/:
  state:   the whole training carry of every seed (parameters, optimiser states,
           temperatures, normaliser statistics, replay buffer, environment states, RNG keys,
           counters), sharded as the running program holds it, stored as its non-empty
           arrays by position (Orbax cannot store empty ones; they are re-created);
  history: the per-interval metrics so far, [seeds, intervals, ...] NumPy arrays, so a
           resumed run's summary has the whole learning curve;
  meta:    JSON: the resolved config (all fields, nested ones included; it rebuilds the
           run), algorithm, environment, seeds, mesh, intervals done, the state's layout
           (path, shape, dtype of every array), library versions and the format version.
Orbax writes each checkpoint into a temporary folder and renames it when complete, so a
crash mid-save leaves no partial checkpoint behind that could be picked up; older ones are
deleted only after a newer one is committed (`max_to_keep`). Reading one back checks the
meta's format, that the state matches the expected shapes and that it is finite, and
raises `CheckpointError` naming the checkpoint and what is wrong.
"""

import importlib.metadata
import shutil
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

FORMAT_VERSION = 2  # 2: state stored as its non-empty leaves by position, with its layout
CHECKPOINT_SUBDIR = "checkpoints"
SUPERSEDED_SUBDIR = "superseded_checkpoints"
_PACKAGES = ("diffrl_jax", "jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "brax", "mujoco")

__all__ = ["CHECKPOINT_SUBDIR", "CheckpointError", "CheckpointStore", "library_versions"]


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: missing, unreadable, incomplete or for another run."""


def library_versions() -> dict[str, str]:
    """Installed versions of the packages a checkpoint depends on."""
    out = {}
    for name in _PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


class CheckpointStore:
    """The checkpoints of one run directory (RUN/checkpoints), steps named by env steps per
    seed. Every process of a multi-process run must make the same calls (saving is a
    collective); Orbax writes the shared files from process 0. step_flag: the command-line
    flag that picks a checkpoint, named in the errors' hints (train.py's --resume-step,
    evaluate.py's --step)."""

    def __init__(self, run_dir: str | Path, max_to_keep: int | None = 2,
                 async_save: bool = True, read_only: bool = False,
                 step_flag: str = "--resume-step"):
        if max_to_keep is not None and (not isinstance(max_to_keep, int) or max_to_keep < 1):
            raise ValueError(f"max_to_keep must be a positive integer or None, got {max_to_keep!r}")
        self.directory = Path(run_dir).absolute() / CHECKPOINT_SUBDIR
        if read_only and not self.directory.is_dir():
            raise CheckpointError(f"no checkpoints in {Path(run_dir)} (expected a folder "
                                  f"{self.directory})")
        # read_only: no folder is created and nothing is saved (Orbax's own read_only mode
        # only adds warnings)
        # The driver donates the state to the next interval right after `save` returns. That
        # is safe because Orbax copies every array to the host inside `save` (its default);
        # do not set a device-to-host byte limit (save_device_host_concurrent_bytes), which
        # defers those copies to the background thread.
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep, create=not read_only, enable_async_checkpointing=async_save,
        )
        self.read_only = read_only
        self.step_flag = step_flag
        self.manager = ocp.CheckpointManager(self.directory, options=options, item_handlers={
            "state": ocp.StandardCheckpointHandler(),
            "history": ocp.StandardCheckpointHandler(),
            "meta": ocp.JsonCheckpointHandler(),
        })

    def steps(self) -> list[int]:
        """The complete checkpoints, oldest first."""
        return sorted(self.manager.all_steps())

    def save(self, step: int, state: Any, metrics: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        """Starts writing checkpoint `step` (returns before the files are written when async;
        `wait` blocks). Refuses a state with non-finite floating-point values, so a
        diverged run never replaces a good checkpoint."""
        if self.read_only:
            raise CheckpointError(f"{self.directory} was opened read-only")
        bad = nonfinite_leaves(state)
        if bad:
            raise CheckpointError(f"not saving checkpoint {step}: the training state has "
                                  f"non-finite values in {bad[:5]}")
        meta = dict(meta, format_version=FORMAT_VERSION, versions=library_versions(),
                    state_layout=state_layout(state))
        self.manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(_stored_leaves(state)),
            # Orbax cannot store empty arrays (eval_mode_counts without reward peaks)
            history=ocp.args.StandardSave({k: np.asarray(v) for k, v in metrics.items()
                                           if np.asarray(v).size}),
            meta=ocp.args.JsonSave(meta),
        ), force=True)

    def supersede_after(self, step: int) -> list[int]:
        """Moves the checkpoints after `step` out of the way (into RUN/superseded_checkpoints/),
        so a run resumed from an older checkpoint neither collides with them nor has
        max_to_keep delete the one it resumed from. Returns the moved steps. Every process
        calls it; process 0 moves the folders."""
        later = [s for s in self.steps() if s > step]
        if later and jax.process_index() == 0:
            aside = self.directory.parent / SUPERSEDED_SUBDIR
            aside.mkdir(exist_ok=True)
            for s in later:
                target = aside / str(s)
                suffix = 1
                while target.exists():
                    target, suffix = aside / f"{s}.{suffix}", suffix + 1
                shutil.move(str(self.directory / str(s)), str(target))
        if later:
            if jax.process_count() > 1:
                multihost_utils.sync_global_devices("diffrl_jax_supersede_checkpoints")
            self.manager.reload()
        return later

    def wait(self) -> None:
        """Blocks until every started save is committed."""
        self.manager.wait_until_finished()

    def read_meta(self, step: int | None = None) -> tuple[int, dict[str, Any]]:
        """(step, meta) of checkpoint `step` (default: the latest)."""
        step = self._resolve(step)
        try:
            meta = self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
        except Exception as err:  # any read failure is reported the same way
            raise self._unreadable(step, "meta", err) from err
        if not isinstance(meta, dict) or meta.get("format_version") != FORMAT_VERSION:
            version = meta.get("format_version") if isinstance(meta, dict) else None
            raise CheckpointError(f"checkpoint {self.directory / str(step)} has format version "
                                  f"{version!r}; this diffrl_jax reads version {FORMAT_VERSION}")
        return step, meta

    def restore(self, step: int, abstract_state: Any) -> tuple[Any, dict[str, np.ndarray]]:
        """(state, metrics) of checkpoint `step`; abstract_state gives the expected tree,
        shapes, dtypes and shardings (`jax.ShapeDtypeStruct` leaves)."""
        step, meta = self.read_meta(step)
        expected = state_layout(abstract_state)
        if meta.get("state_layout") != expected:
            saved = meta.get("state_layout") or []
            show = lambda entry: f"{entry[0]} {tuple(entry[1])} {entry[2]}"
            diff = [f"{show(a)} vs {show(b)}" for a, b in zip(saved, expected, strict=False) if a != b][:5]
            raise CheckpointError(
                f"checkpoint {self.directory / str(step)} holds a state of another layout than "
                f"this run's ({len(saved)} vs {len(expected)} arrays; first differences, saved vs "
                f"expected: {'; '.join(diff) or 'none, but the counts differ'})")
        try:
            restored = self.manager.restore(step, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(_stored_leaves(abstract_state)),
                history=ocp.args.StandardRestore(),
            ))
        except Exception as err:
            raise self._unreadable(step, "state", err) from err
        state = _rebuild(abstract_state, restored["state"])
        metrics = restored["history"]
        bad = nonfinite_leaves(state)
        if bad:
            raise CheckpointError(f"checkpoint {self.directory / str(step)} has non-finite values "
                                  f"in {bad[:5]}; choose an earlier one with {self.step_flag} "
                                  f"(available: {self.steps()})")
        return state, {k: np.asarray(v) for k, v in metrics.items()}

    def close(self) -> None:
        self.manager.close()

    def _resolve(self, step: int | None) -> int:
        steps = self.steps()
        if not steps:
            raise CheckpointError(f"no complete checkpoint in {self.directory}")
        if step is None:
            return steps[-1]
        if step not in steps:
            raise CheckpointError(f"no checkpoint {step} in {self.directory}; available: {steps}")
        return step

    def _unreadable(self, step: int, item: str, err: Exception) -> CheckpointError:
        others = [s for s in self.steps() if s != step]
        hint = f"; other checkpoints: {others} (choose one with {self.step_flag})" if others else ""
        return CheckpointError(f"checkpoint {self.directory / str(step)} cannot be read ({item}: "
                               f"{type(err).__name__}: {str(err)[:300]}){hint}")


def complete_checkpoint_steps(run_dir: str | Path) -> list[int]:
    """The env steps of the complete checkpoints in RUN_DIR/checkpoints, ascending; [] when
    there is no checkpoint folder. Opens the store read-only and closes it again."""
    if not (Path(run_dir) / CHECKPOINT_SUBDIR).is_dir():
        return []
    store = CheckpointStore(run_dir, None, read_only=True)
    try:
        return store.steps()
    finally:
        store.close()


def state_layout(tree: Any) -> list[list[Any]]:
    """[path, shape, dtype] of every array leaf: what a checkpoint must match to be restored."""
    return [[jax.tree_util.keystr(path), list(leaf.shape), str(np.dtype(leaf.dtype))]
            for path, leaf in jax.tree_util.tree_leaves_with_path(tree)]


def _stored_leaves(tree: Any) -> dict[str, Any]:
    """The non-empty leaves by position ("00012"): Orbax cannot store zero-size arrays (e.g.
    the actuator activations of a Brax system without any), which `_rebuild` re-creates."""
    return {f"{i:05d}": leaf for i, leaf in enumerate(jax.tree.leaves(tree))
            if int(np.prod(leaf.shape)) > 0}


def _rebuild(abstract_state: Any, stored: dict[str, Any]) -> Any:
    leaves, treedef = jax.tree.flatten(abstract_state)
    out = []
    for i, leaf in enumerate(leaves):
        if int(np.prod(leaf.shape)) > 0:
            out.append(stored[f"{i:05d}"])
        else:
            empty = np.zeros(leaf.shape, leaf.dtype)
            sharding = getattr(leaf, "sharding", None)
            out.append(jax.device_put(empty, sharding) if sharding is not None else jax.numpy.asarray(empty))
    return jax.tree.unflatten(treedef, out)


def nonfinite_leaves(tree: Any) -> list[str]:
    """Paths of floating-point leaves holding NaN or infinity (one compiled check)."""
    paths, leaves = [], []
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
        if hasattr(leaf, "dtype") and np.issubdtype(leaf.dtype, np.inexact):
            paths.append(jax.tree_util.keystr(path))
            leaves.append(leaf)
    if not leaves:
        return []
    finite = np.asarray(_all_finite_per_leaf(leaves))
    return [p for p, ok in zip(paths, finite, strict=True) if not ok]


@jax.jit
def _all_finite_per_leaf(leaves: list[Any]) -> Any:
    return jax.numpy.stack([jax.numpy.all(jax.numpy.isfinite(x)) for x in leaves])
