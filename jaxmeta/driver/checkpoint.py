"""Orbax checkpoints of a whole training run: state, keys, iteration and metrics so far.

A checkpoint lives in `RUN/checkpoints/<iteration>/` and holds two items:

- "state": every array of the training pytree (the algorithm's state, whatever it is,
  plus the run's keys), saved bitwise, as a flat dict `leaf_00000, leaf_00001, ...`;
- "meta": JSON with the algorithm, environment, config, seeds, the iteration, the
  metrics rows so far and the *signature* of the pytree (path, shape and dtype of every
  leaf), which is checked before any array is read;

plus `jaxmeta-manifest.json`, the size and SHA-256 of every file of the checkpoint,
written once orbax has finished. Restoring checks the manifest, then the metadata
against the run, then the signature against the state the current algorithm would
build, and only then reads arrays: a checkpoint of another run is a `CheckpointError`
naming what differs, and a corrupt one is skipped for the newest older checkpoint that
restores (`Restored.skipped` says which and why). Nothing is written by a restore.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np

CHECKPOINT_DIR = "checkpoints"
CORRUPT_DIR = "corrupt-checkpoints"
MANIFEST = "jaxmeta-manifest.json"
TMP_MARK = ".orbax-checkpoint-tmp"


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable, cannot be written, or does not belong to this run."""


def _ocp():
    import orbax.checkpoint as ocp

    return ocp


def signature(tree) -> list[list]:
    """[path, shape, dtype] of every leaf, in flattening order."""
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return [[jax.tree_util.keystr(p), list(np.shape(x)), str(np.dtype(x.dtype))] for p, x in leaves]


def _flat(tree) -> dict:
    return {f"leaf_{i:05d}": x for i, x in enumerate(jax.tree.leaves(tree))}


def _short(e: BaseException, limit: int = 160) -> str:
    """One short line for an exception (orbax/tensorstore messages run to kilobytes);
    an operating-system error inside them is named first (e.g. no space left on device)."""
    text = " ".join(str(e).split())
    code = re.search(r"os_error_code='(\d+)'", text)
    errno_ = getattr(e, "errno", None) or (int(code.group(1)) if code else None)
    cause = f"{os.strerror(errno_).lower()}: " if errno_ else ""
    return f"{cause}{type(e).__name__}: {text[:limit]}{'...' if len(text) > limit else ''}"


@contextlib.contextmanager
def _quiet():
    """Silence what orbax and tensorstore print on their own when a read fails (absl
    warnings, asyncio tracebacks of callbacks on a closed event loop, C-level stderr)."""
    absl_logger = logging.getLogger("absl")
    level = absl_logger.level
    absl_logger.setLevel(logging.CRITICAL)
    hooks = sys.unraisablehook
    sys.unraisablehook = lambda unraisable: None
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            sys.unraisablehook = hooks
            absl_logger.setLevel(level)


def _manager(run_dir, *, read_only: bool, max_to_keep: int | None = 3):
    ocp = _ocp()
    options = ocp.CheckpointManagerOptions(
        max_to_keep=None if read_only else max_to_keep,
        create=not read_only,
        read_only=read_only,
        enable_async_checkpointing=False,
    )
    absl_logger = logging.getLogger("absl")
    level = absl_logger.level
    absl_logger.setLevel(logging.ERROR)  # orbax warns that a read-only manager is read-only
    try:
        return ocp.CheckpointManager(Path(run_dir).absolute() / CHECKPOINT_DIR, options=options)
    finally:
        absl_logger.setLevel(level)


# --------------------------------------------------------------------------- the folder


def steps(run_dir) -> list[int]:
    """Iterations of the complete checkpoints of a run, oldest first."""
    folder = Path(run_dir) / CHECKPOINT_DIR
    if not folder.is_dir():
        return []
    return sorted(int(p.name) for p in folder.iterdir() if p.is_dir() and p.name.isdigit())


def latest_iteration(run_dir) -> int | None:
    """The iteration of the newest complete checkpoint of a run, None if it has none."""
    found = steps(run_dir)
    return found[-1] if found else None


def temporary(run_dir) -> list[Path]:
    """Unfinished checkpoints (orbax's temporary folders) left by a killed process."""
    folder = Path(run_dir) / CHECKPOINT_DIR
    return sorted(p for p in folder.iterdir() if TMP_MARK in p.name) if folder.is_dir() else []


def remove_temporary(run_dir) -> list[Path]:
    """Delete unfinished checkpoints; returns what was removed."""
    removed = temporary(run_dir)
    for p in removed:
        shutil.rmtree(p, ignore_errors=True)
    return removed


def _remove_temporary_settled(run_dir, pause: float = 0.1, quiet_rounds: int = 3, rounds: int = 50) -> None:
    """Remove unfinished checkpoints until none has reappeared for `quiet_rounds`
    pauses in a row (a failed save's last writes can land after the first removal);
    gives up after `rounds` pauses and leaves the rest to the next run's cleanup."""
    quiet = 0
    for _ in range(rounds):
        quiet = 0 if remove_temporary(run_dir) else quiet + 1
        if quiet >= quiet_rounds:
            return
        time.sleep(pause)


def set_aside(run_dir, iterations: list[int]) -> list[Path]:
    """Move corrupt checkpoints to RUN/corrupt-checkpoints/ (kept, out of orbax's way)."""
    moved = []
    for it in iterations:
        src = Path(run_dir) / CHECKPOINT_DIR / str(it)
        if not src.is_dir():
            continue
        dst = Path(run_dir) / CORRUPT_DIR / str(it)
        i = 1
        while dst.exists():
            i += 1
            dst = Path(run_dir) / CORRUPT_DIR / f"{it}-{i}"
        dst.parent.mkdir(exist_ok=True)
        os.replace(src, dst)
        moved.append(dst)
    return moved


def _files(step_dir: Path) -> list[Path]:
    return sorted(p for p in step_dir.rglob("*") if p.is_file() and p.name != MANIFEST)


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_manifest(step_dir: Path) -> None:
    files = {str(p.relative_to(step_dir)): [p.stat().st_size, _digest(p)] for p in _files(step_dir)}
    tmp = step_dir / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(files))
    os.replace(tmp, step_dir / MANIFEST)


def check_manifest(step_dir: Path) -> str | None:
    """Why the checkpoint's files differ from its manifest; None if they match (or it
    has no manifest: a checkpoint whose writer was killed right after orbax finished)."""
    path = step_dir / MANIFEST
    if not path.exists():
        return None
    try:
        files = json.loads(path.read_text())
    except ValueError:
        return f"its manifest {MANIFEST} is unreadable"
    for name, (size, digest) in files.items():
        f = step_dir / name
        if not f.is_file():
            return f"{name} is missing"
        if f.stat().st_size != size:
            return f"{name} has {f.stat().st_size} bytes, {size} were written"
        if _digest(f) != digest:
            return f"{name} has changed since it was written"
    return None


# --------------------------------------------------------------------------- writing


class Checkpointer:
    """Writes checkpoints of one run (synchronously: a save is on disk when it returns).

    Orbax writes each checkpoint into a temporary folder and renames it when complete,
    so a process killed mid-save leaves the previous checkpoints intact (and a
    temporary folder that the next run removes).
    """

    def __init__(self, run_dir, max_to_keep: int = 3, primary: bool = True):
        self.run_dir = Path(run_dir)
        self.primary = primary  # the process that writes the manifest (the others only join orbax's save)
        try:
            self._mngr = _manager(run_dir, read_only=False, max_to_keep=max_to_keep)
        except OSError as e:
            raise CheckpointError(f"cannot create {self.run_dir / CHECKPOINT_DIR}: {_short(e)}") from e
        self.last_saved: int | None = latest_iteration(run_dir)

    def save(self, iteration: int, tree, meta: dict) -> None:
        ocp = _ocp()
        if iteration == self.last_saved:
            return
        meta = dict(meta, iteration=iteration, signature=signature(tree))
        try:
            with _quiet():
                self._mngr.save(
                    iteration,
                    args=ocp.args.Composite(state=ocp.args.StandardSave(_flat(tree)), meta=ocp.args.JsonSave(meta)),
                    force=True,
                )
                self._mngr.wait_until_finished()
            if self.primary:
                write_manifest(self.run_dir / CHECKPOINT_DIR / str(iteration))
        except Exception as e:  # noqa: BLE001 - orbax wraps OS errors in its own types
            self._settle()
            if self.primary:
                _remove_temporary_settled(self.run_dir)
            kept = f"checkpoint {self.last_saved} is kept" if self.last_saved is not None else "no checkpoint is kept"
            raise CheckpointError(
                f"cannot write checkpoint {iteration} to {self.run_dir / CHECKPOINT_DIR}: {_short(e)} ({kept})"
            ) from e
        self.last_saved = iteration

    def _settle(self) -> None:
        """Wait for the writer threads of a failed save: until they stop, they may
        recreate the temporary folder that the cleanup removes."""
        try:
            with _quiet():
                self._mngr.wait_until_finished()
        except Exception:  # noqa: BLE001 - the save's own error is the one reported
            pass

    def close(self) -> None:
        self._mngr.close()


# --------------------------------------------------------------------------- reading


class Restored(NamedTuple):
    tree: Any
    meta: dict
    iteration: int
    skipped: list[tuple[int, str]]  # newer checkpoints that did not restore, and why


def _differences(got, want, prefix: str, defaults=None) -> list[str]:
    """'a.b is X in the checkpoint but Y here' for every differing leaf of two JSON values.

    A field missing in the checkpoint matches when `defaults` (the same nesting) holds it
    with the value here: a field added to a config after the run was saved, left at its
    default, which is what the old code did."""
    if isinstance(got, dict) and isinstance(want, dict):
        out = []
        defaults = defaults if isinstance(defaults, dict) else {}
        for k in list(want) + [k for k in got if k not in want]:
            if k not in got and k in defaults and defaults[k] == want[k]:
                continue
            if k not in got:
                out.append(f"{prefix}.{k} is missing in the checkpoint (here {want[k]!r})")
            elif k not in want:
                out.append(f"{prefix}.{k} is {got[k]!r} in the checkpoint but not a field here")
            else:
                out += _differences(got[k], want[k], f"{prefix}.{k}", defaults.get(k))
        return out
    return [] if got == want else [f"{prefix} is {got!r} in the checkpoint but {want!r} here"]


def restore(run_dir, target, expect: dict[str, Any], sharding=None, step: int | None = None,
            defaults: dict[str, Any] | None = None) -> Restored:
    """The newest checkpoint of `run_dir` that restores, checked against `target` and `expect`.

    Args:
      run_dir: the run folder.
      target: a pytree with the structure, shapes and dtypes to restore (arrays or
        `jax.ShapeDtypeStruct`s), e.g. `jax.eval_shape` of the run's initial state.
      expect: meta fields that must match exactly (algorithm, env, config, seeds, ...).
      sharding: sharding of the restored arrays (default: orbax's, one device).
      step: restore this iteration only (default: the newest that restores).
      defaults: values of `expect`'s fields that a checkpoint written before they existed
        is taken to have (`RunSettings.identity_defaults`).
    Returns:
      Restored(tree, meta, iteration, skipped): corrupt newer checkpoints are skipped.
    Raises:
      CheckpointError: no checkpoint, none that restores, or one that belongs to another
        algorithm, config or set of seeds.
    """
    ocp = _ocp()
    ckpt_dir = Path(run_dir) / CHECKPOINT_DIR
    candidates = steps(run_dir)
    if not candidates:
        raise CheckpointError(f"no checkpoint to resume from: {ckpt_dir} holds none")
    if step is not None:
        if step not in candidates:
            raise CheckpointError(f"{ckpt_dir} has no checkpoint {step}")
        candidates = [step]
    want = signature(target)
    leaves, treedef = jax.tree.flatten(target)
    abstract = {
        f"leaf_{i:05d}": jax.ShapeDtypeStruct(np.shape(x), x.dtype, sharding=sharding) for i, x in enumerate(leaves)
    }
    skipped: list[tuple[int, str]] = []
    mngr = None
    try:
        with _quiet():
            mngr = _manager(run_dir, read_only=True)
        for it in reversed(candidates):
            where = ckpt_dir / str(it)
            reason = check_manifest(where)
            if reason is not None:
                skipped.append((it, f"corrupt: {reason}"))
                continue
            try:
                with _quiet():
                    meta = mngr.restore(it, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
            except Exception as e:  # noqa: BLE001
                skipped.append((it, f"corrupt metadata: {_short(e)}"))
                continue
            if not isinstance(meta, dict) or "signature" not in meta:
                skipped.append((it, "corrupt: its metadata has no signature"))
                continue
            defaults = defaults or {}
            diffs = [d for k, v in expect.items() for d in _differences(meta.get(k), v, k, defaults.get(k))]
            if diffs:
                raise CheckpointError(f"checkpoint {where} does not match this run: {'; '.join(diffs[:4])}"
                                      + (f" (and {len(diffs) - 4} more)" if len(diffs) > 4 else ""))
            got = meta["signature"]
            if got != want:
                if len(got) != len(want):
                    detail = f"{len(got)} arrays in the checkpoint, {len(want)} expected"
                else:
                    i = next(i for i, (a, b) in enumerate(zip(got, want)) if a != b)
                    detail = (f"{got[i][0]} is {tuple(got[i][1])} {got[i][2]} in the checkpoint, "
                              f"{tuple(want[i][1])} {want[i][2]} expected")
                raise CheckpointError(f"checkpoint {where} holds a different training state "
                                      f"(other algorithm, config or float precision?): {detail}")
            try:
                with _quiet():
                    flat = mngr.restore(it, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract)))["state"]
                restored = [flat[f"leaf_{i:05d}"] for i in range(len(leaves))]
                for name, x, (_, shape, dtype) in zip(abstract, restored, want):
                    if list(x.shape) != shape or str(x.dtype) != dtype:
                        raise ValueError(f"{name} restored as {x.shape} {x.dtype}")
            except Exception as e:  # noqa: BLE001
                skipped.append((it, f"corrupt arrays: {_short(e)}"))
                continue
            return Restored(jax.tree.unflatten(treedef, restored), meta, int(meta["iteration"]), skipped)
    finally:
        if mngr is not None:
            mngr.close()
    detail = "; ".join(f"{s}: {r}" for s, r in skipped)
    raise CheckpointError(f"no checkpoint in {ckpt_dir} restores ({detail})")
