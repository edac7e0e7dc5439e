"""The `jaxmeta` command: `jaxmeta train ALGO --env ENV [flags]`, `jaxmeta list`.

`jaxmeta train ALGO ... --seeds 8` trains 8 seeds at once (vmapped);
`jaxmeta train --resume runs/NAME` continues a run from its newest checkpoint;
`--coordinator HOST:PORT --num-processes N --process-id I` runs one process of a
multi-host job (see docs/scaling.md).

Flags are generated from the algorithm's config dataclass and the environment's
dataclass (`--meta-batch-size`, `--horizon`, ...), plus the algorithm's short aliases
(`--arms`). A bad value is one line naming the flag and its allowed range.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import time
import typing
from typing import Any, Sequence

from jaxmeta import envs
from jaxmeta.algorithms import registry
from jaxmeta.config import ConfigError


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, no usage dump
        self.exit(2, f"jaxmeta: error: {message}\n")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _parse_sizes(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}")


def _add_dataclass_flags(group, cls, seen: dict[str, str], owner: str, aliases: dict[str, str]):
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in seen:
            continue
        seen[f.name] = owner
        names = [_flag(f.name)] + [_flag(a) for a, target in aliases.items() if target == f.name]
        hint = hints.get(f.name)
        default = f.default
        kw: dict[str, Any] = {"dest": f"{owner}:{f.name}", "default": argparse.SUPPRESS}
        if hint is bool or isinstance(default, bool):
            kw["action"] = argparse.BooleanOptionalAction
            group.add_argument(*names, help=f"default: {default}", **kw)
            continue
        if isinstance(default, tuple):
            kw["type"] = _parse_sizes
            kw["metavar"] = "N,N"
        elif isinstance(default, int):
            kw["type"] = int
        elif isinstance(default, float):
            kw["type"] = float
        else:
            kw["type"] = str
        group.add_argument(*names, help=f"default: {default}", **kw)


def _build_parser(algo: str | None = None, env_name: str | None = None) -> argparse.ArgumentParser:
    parser = _Parser(prog="jaxmeta", description="Meta-reinforcement learning in JAX.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list algorithms and environments")
    tr = sub.add_parser("train", help="meta-train an algorithm")
    tr.error = parser.error  # type: ignore[method-assign]
    tr.add_argument("algorithm", nargs="?", choices=sorted(registry.REGISTRY),
                    help="algorithm (may be left out with --resume)")
    tr.add_argument("--env", help="environment (default: the algorithm's own)")
    tr.add_argument("--num-batches", type=int, default=None, help="meta-iterations (default: 100)")
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--name", help="run name (default: ALGO-ENV-TIME)")
    tr.add_argument("--out", default="runs", help="folder for runs (default: runs)")
    tr.add_argument("--no-progress", action="store_true", help="no progress bar")
    tr.add_argument("--seeds", type=int, default=1, metavar="N",
                    help="train N seeds (--seed, --seed+1, ...) at once, vmapped (default: 1)")
    tr.add_argument("--checkpoint-every", type=int, default=None, metavar="N",
                    help="checkpoint every N meta-iterations (default: 100; 0: only at the end and on Ctrl-C/SIGTERM)")
    tr.add_argument("--resume", metavar="RUN_DIR",
                    help="continue the run in RUN_DIR from its newest checkpoint (algorithm, env and config come from it)")
    dist = tr.add_argument_group("multi-process (multi-host) runs, see docs/scaling.md")
    dist.add_argument("--coordinator", metavar="HOST:PORT", help="address of process 0 (jax.distributed.initialize)")
    dist.add_argument("--num-processes", type=int, default=1)
    dist.add_argument("--process-id", type=int, default=0)
    if algo is not None and algo in registry.REGISTRY:
        spec = registry.get(algo)
        seen: dict[str, str] = {}
        _add_dataclass_flags(tr.add_argument_group(f"{algo} config"), spec.config_cls, seen, "config", spec.aliases)
        env_name = env_name or spec.default_env
        if env_name in envs.REGISTRY and dataclasses.is_dataclass(envs.REGISTRY[env_name]):
            _add_dataclass_flags(tr.add_argument_group(f"{env_name} environment"), envs.REGISTRY[env_name], seen, "env", spec.aliases)
    return parser


def _peek(argv: Sequence[str]) -> tuple[str | None, str | None]:
    """The algorithm and --env given on the command line, before full parsing."""
    algo = env_name = None
    if len(argv) >= 2 and argv[0] == "train" and not argv[1].startswith("-"):
        algo = argv[1]
    for i, a in enumerate(argv):
        if a == "--env" and i + 1 < len(argv):
            env_name = argv[i + 1]
        elif a.startswith("--env="):
            env_name = a.split("=", 1)[1]
    return algo, env_name


def cmd_list() -> None:
    print("algorithms:")
    for name, spec in sorted(registry.REGISTRY.items()):
        print(f"  {name:13s} {spec.description}  [envs: {', '.join(spec.envs)}; default {spec.default_env}]")
    print("environments:")
    for name, factory in sorted(envs.REGISTRY.items()):
        doc = (factory.__doc__ or "").strip().splitlines()
        print(f"  {name:14s} {doc[0] if doc else ''}")


def _run_guarded(fn) -> int:
    """Run the driver; its expected failures are one line on stderr and an exit code."""
    from jaxmeta import train as driver
    from jaxmeta.checkpoint import CheckpointError

    try:
        fn()
    except CheckpointError as e:
        print(f"jaxmeta: error: {e}", file=sys.stderr)
        return 2
    except driver.NonFiniteError as e:
        print(f"jaxmeta: error: {e}", file=sys.stderr)
        return 1
    except driver.TrainingInterrupted as e:
        print(f"jaxmeta: {e}", file=sys.stderr)
        return 128 + e.signum
    return 0


def _check_distributed(args, parser) -> None:
    if args.num_processes < 1:
        parser.error(f"argument --num-processes: must be >= 1, got {args.num_processes}")
    if not 0 <= args.process_id < args.num_processes:
        parser.error(f"argument --process-id: must be in [0, {args.num_processes - 1}], got {args.process_id}")
    if args.num_processes > 1:
        if not args.coordinator:
            parser.error("argument --num-processes: a multi-process run needs --coordinator HOST:PORT")
        if not (args.name or args.resume):
            parser.error("argument --name: a multi-process run needs --name (all processes share the run folder)")
    if args.coordinator:
        from jaxmeta import parallel

        parallel.initialize_distributed(args.coordinator, args.num_processes, args.process_id)


def cmd_resume(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    import json
    from pathlib import Path

    from jaxmeta import train as driver

    given = [k for k in vars(args) if k.startswith(("config:", "env:"))]
    if given or args.env or args.seed != 0 or args.seeds != 1:
        bad = _flag(given[0].split(":", 1)[1]) if given else ("--env" if args.env else ("--seed" if args.seed else "--seeds"))
        parser.error(f"argument {bad}: not allowed with --resume (the run's config.json fixes it)")
    run_dir = Path(args.resume)
    try:
        saved = json.loads((run_dir / "config.json").read_text())
    except (OSError, ValueError) as e:
        parser.error(f"argument --resume: {run_dir} is not a run folder with a readable config.json ({e})")
    if args.algorithm and saved.get("algorithm") != args.algorithm:
        parser.error(f"argument --resume: {run_dir} is a run of {saved.get('algorithm')!r}, not {args.algorithm!r}")
    if args.num_batches is not None and not 1 <= args.num_batches <= 10_000_000:
        parser.error(f"argument --num-batches: must be an integer in [1, 10000000], got {args.num_batches}")
    if args.checkpoint_every is not None and args.checkpoint_every < 0:
        parser.error(f"argument --checkpoint-every: must be >= 0, got {args.checkpoint_every}")
    _check_distributed(args, parser)
    kw = {} if args.checkpoint_every is None else {"checkpoint_every": args.checkpoint_every}
    print(f"resuming {run_dir}")
    return _run_guarded(lambda: driver.resume(run_dir, num_batches=args.num_batches, progress=not args.no_progress, **kw))


def cmd_train(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from pathlib import Path

    from jaxmeta import train as driver

    if args.resume:
        return cmd_resume(args, parser)
    if args.algorithm is None:
        parser.error("argument algorithm: required (unless --resume RUN_DIR)")
    spec = registry.get(args.algorithm)
    env_name = args.env or spec.default_env
    if env_name not in spec.envs:
        parser.error(f"argument --env: {spec.name} supports {', '.join(spec.envs)}, got {env_name!r}")
    values = vars(args)
    config_kw = {k.split(":", 1)[1]: v for k, v in values.items() if k.startswith("config:")}
    env_kw = {k.split(":", 1)[1]: v for k, v in values.items() if k.startswith("env:")}
    num_batches = 100 if args.num_batches is None else args.num_batches
    if num_batches < 1 or num_batches > 10_000_000:
        parser.error(f"argument --num-batches: must be an integer in [1, 10000000], got {num_batches}")
    if args.seed < 0 or args.seed > 2**31 - 1:
        parser.error(f"argument --seed: must be an integer in [0, 2147483647], got {args.seed}")
    if args.seeds < 1 or args.seeds > 100_000:
        parser.error(f"argument --seeds: must be an integer in [1, 100000], got {args.seeds}")
    if args.seed + args.seeds - 1 > 2**31 - 1:
        parser.error("argument --seeds: --seed + --seeds - 1 must be <= 2147483647")
    checkpoint_every = 100 if args.checkpoint_every is None else args.checkpoint_every
    if checkpoint_every < 0:
        parser.error(f"argument --checkpoint-every: must be >= 0, got {checkpoint_every}")
    try:
        env = envs.make(env_name, **env_kw)
        config = spec.config_cls(**config_kw)
    except ConfigError as e:
        if e.field is not None:
            parser.error(f"argument {_flag(e.field)}: {e}")
        parser.error(str(e))
    _check_distributed(args, parser)
    name = args.name or f"{spec.name}-{env_name}-{time.strftime('%Y%m%d-%H%M%S')}"
    if args.num_processes > 1:  # every process must agree on the folder: no -2 suffixes
        run_dir = Path(args.out) / name
        if args.process_id == 0 and run_dir.exists():
            parser.error(f"argument --name: {run_dir} exists; a multi-process run needs a new name")
    else:
        run_dir = driver.new_run_dir(args.out, name)
    seeds = f"seed {args.seed}" if args.seeds == 1 else f"seeds {args.seed}..{args.seed + args.seeds - 1} (vmapped)"
    print(f"{spec.name} on {env_name}: {num_batches} meta-iterations, {seeds} -> {run_dir}")
    return _run_guarded(lambda: driver.train(
        spec, env, config, num_batches=num_batches, seed=args.seed, num_seeds=args.seeds, run_dir=run_dir,
        env_name=env_name, env_kwargs=env_kw, progress=not args.no_progress, checkpoint_every=checkpoint_every,
    ))


def _rewrite_variants(argv: list[str]) -> list[str]:
    """`train maml --outer promp` -> `train promp`; `--simulator mujoco` -> the host variant.

    ProMP and the host-adapter learners are registered algorithms of their own (their
    configs and drivers differ), so the spellings researchers expect map onto them here.
    """
    if len(argv) < 2 or argv[0] != "train" or argv[1].startswith("-"):
        return argv
    argv = list(argv)
    algo = argv[1]
    for flag in ("--outer", "--simulator"):
        for i, a in enumerate(argv):
            value = None
            if a == flag and i + 1 < len(argv):
                value, cut = argv[i + 1], (i, i + 2)
            elif a.startswith(flag + "="):
                value, cut = a.split("=", 1)[1], (i, i + 1)
            if value is None:
                continue
            if flag == "--outer" and value == "promp" and algo == "maml":
                algo = "promp"
                del argv[cut[0] : cut[1]]
            elif flag == "--simulator":
                if value not in ("brax", "mujoco"):
                    _Parser(prog="jaxmeta").error(f"argument --simulator: must be one of 'brax', 'mujoco', got {value!r}")
                if value == "mujoco":
                    if algo not in ("maml", "promp"):
                        _Parser(prog="jaxmeta").error(f"argument --simulator: mujoco is available for maml and promp, not {algo!r}")
                    algo = f"{algo}-mujoco"
                del argv[cut[0] : cut[1]]
            break
    argv[1] = algo
    return argv


def main(argv: Sequence[str] | None = None) -> int:
    argv = _rewrite_variants(list(sys.argv[1:] if argv is None else argv))
    algo, env_name = _peek(argv)
    parser = _build_parser(algo, env_name)
    args = parser.parse_args(argv)
    if args.command == "list":
        cmd_list()
        return 0
    return cmd_train(args, parser)


if __name__ == "__main__":
    sys.exit(main())
