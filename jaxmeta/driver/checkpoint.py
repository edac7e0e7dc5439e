"""Orbax checkpoints of a whole training run: state, keys, iteration and metrics so far.

A checkpoint lives in `RUN/checkpoints/<iteration>/` and holds two items:

- "state": every array of the training pytree (the algorithm's state, whatever it is,
  plus the run's keys), saved bitwise, as a flat dict `leaf_00000, leaf_00001, ...`;
- "meta": JSON with the algorithm, environment, config, seeds, the iteration, the
  metrics rows so far and the *signature* of the pytree (path, shape and dtype of every
  leaf), which is checked before any array is read.

Restoring checks the signature against the state the current algorithm would build, so
a checkpoint of another algorithm, of another config (other shapes), or a corrupt one
is a `CheckpointError` with a message saying which, and nothing is written by a failed
restore (the manager is opened read-only until the restore has succeeded).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import jax
import numpy as np

CHECKPOINT_DIR = "checkpoints"


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable or does not belong to this run."""


def _ocp():
    import orbax.checkpoint as ocp

    return ocp


def signature(tree) -> list[list]:
    """[path, shape, dtype] of every leaf, in flattening order."""
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return [[jax.tree_util.keystr(p), list(np.shape(x)), str(np.dtype(x.dtype))] for p, x in leaves]


def _flat(tree) -> dict:
    return {f"leaf_{i:05d}": x for i, x in enumerate(jax.tree.leaves(tree))}


def _manager(run_dir, *, read_only: bool, max_to_keep: int | None = 3):
    ocp = _ocp()
    absl_logger = logging.getLogger("absl")
    level = absl_logger.level
    absl_logger.setLevel(logging.ERROR)  # orbax warns that a read-only manager is read-only
    try:
        return _make_manager(ocp, run_dir, read_only, max_to_keep)
    finally:
        absl_logger.setLevel(level)


def _make_manager(ocp, run_dir, read_only: bool, max_to_keep: int | None):
    options = ocp.CheckpointManagerOptions(
        max_to_keep=None if read_only else max_to_keep,
        create=not read_only,
        read_only=read_only,
        enable_async_checkpointing=False,
    )
    return ocp.CheckpointManager(Path(run_dir).absolute() / CHECKPOINT_DIR, options=options)


class Checkpointer:
    """Writes checkpoints of one run (synchronously: a save is on disk when it returns).

    Orbax writes each checkpoint into a temporary folder and renames it when complete,
    so a process killed mid-save leaves the previous checkpoints intact.
    """

    def __init__(self, run_dir, max_to_keep: int = 3):
        self.run_dir = Path(run_dir)
        self._mngr = _manager(run_dir, read_only=False, max_to_keep=max_to_keep)
        self.last_saved: int | None = self._mngr.latest_step()

    def save(self, iteration: int, tree, meta: dict) -> None:
        ocp = _ocp()
        if iteration == self.last_saved:
            return
        meta = dict(meta, iteration=iteration, signature=signature(tree))
        self._mngr.save(
            iteration,
            args=ocp.args.Composite(state=ocp.args.StandardSave(_flat(tree)), meta=ocp.args.JsonSave(meta)),
            force=True,
        )
        self._mngr.wait_until_finished()
        self.last_saved = iteration

    def close(self) -> None:
        self._mngr.close()


def latest_iteration(run_dir) -> int | None:
    """The iteration of the newest complete checkpoint of a run, None if it has none."""
    if not (Path(run_dir) / CHECKPOINT_DIR).is_dir():
        return None
    mngr = _manager(run_dir, read_only=True)
    try:
        return mngr.latest_step()
    finally:
        mngr.close()


def restore(run_dir, target, expect: dict[str, Any], sharding=None) -> tuple[Any, dict]:
    """The newest checkpoint of `run_dir`, checked against `target` and `expect`.

    Args:
      run_dir: the run folder.
      target: a pytree with the structure, shapes and dtypes to restore (arrays or
        `jax.ShapeDtypeStruct`s), e.g. `jax.eval_shape` of the run's initial state.
      expect: meta fields that must match exactly (algorithm, env, config, seeds, ...).
      sharding: sharding of the restored arrays (default: orbax's, one device).
    Returns:
      (tree, meta): the restored pytree and the checkpoint's JSON meta.
    Raises:
      CheckpointError: no checkpoint, an unreadable (corrupt) one, or one that belongs
        to another algorithm, config or set of seeds.
    """
    ocp = _ocp()
    ckpt_dir = Path(run_dir) / CHECKPOINT_DIR
    if not ckpt_dir.is_dir():
        raise CheckpointError(f"no checkpoint to resume from: {ckpt_dir} does not exist")
    try:
        mngr = _manager(run_dir, read_only=True)
    except Exception as e:  # noqa: BLE001 - any orbax failure is a bad checkpoint folder
        raise CheckpointError(f"cannot read the checkpoints in {ckpt_dir}: {type(e).__name__}: {e}") from e
    try:
        step = mngr.latest_step()
        if step is None:
            raise CheckpointError(f"no complete checkpoint in {ckpt_dir}")
        where = ckpt_dir / str(step)
        try:
            meta = mngr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
        except Exception as e:  # noqa: BLE001
            raise CheckpointError(f"checkpoint {where} is corrupt or unreadable (its metadata): {type(e).__name__}: {e}") from e
        if not isinstance(meta, dict) or "signature" not in meta:
            raise CheckpointError(f"checkpoint {where} is corrupt: its metadata has no signature")
        for k, v in expect.items():
            if meta.get(k) != v:
                raise CheckpointError(
                    f"checkpoint {where} does not match this run: {k} is {meta.get(k)!r} in the "
                    f"checkpoint but {v!r} here"
                )
        want = signature(target)
        got = meta["signature"]
        if got != want:
            if len(got) != len(want):
                detail = f"{len(got)} arrays in the checkpoint, {len(want)} expected"
            else:
                i = next(i for i, (a, b) in enumerate(zip(got, want)) if a != b)
                detail = f"{got[i][0]} is {tuple(got[i][1])} {got[i][2]} in the checkpoint, {tuple(want[i][1])} {want[i][2]} expected"
            raise CheckpointError(f"checkpoint {where} holds a different training state (other algorithm or config?): {detail}")
        leaves, treedef = jax.tree.flatten(target)
        abstract = {
            f"leaf_{i:05d}": jax.ShapeDtypeStruct(np.shape(x), x.dtype, sharding=sharding)
            for i, x in enumerate(leaves)
        }
        try:
            flat = mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract)))["state"]
            restored = [flat[f"leaf_{i:05d}"] for i in range(len(leaves))]
            for name, x, (_, shape, dtype) in zip(abstract, restored, want):
                if list(x.shape) != shape or str(x.dtype) != dtype:
                    raise ValueError(f"{name} restored as {x.shape} {x.dtype}")
        except CheckpointError:
            raise
        except Exception as e:  # noqa: BLE001
            raise CheckpointError(f"checkpoint {where} is corrupt or unreadable (its arrays): {type(e).__name__}: {e}") from e
        return jax.tree.unflatten(treedef, restored), meta
    finally:
        mngr.close()

