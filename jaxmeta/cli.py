"""The `jaxmeta` command: `jaxmeta train ALGO --env ENV [flags]`, `jaxmeta list`.

`jaxmeta train ALGO ... --seeds 8` trains 8 seeds at once (vmapped);
`jaxmeta train --resume runs/NAME` continues a run from its newest checkpoint;
`jaxmeta evaluate runs/NAME` makes its final table (e.g. Meta-World's success rates on
its test tasks) at its newest checkpoint, into runs/NAME/evaluate-<iteration>/;
`--simulator mujoco` steps the locomotion tasks on native MuJoCo outside jit (the
`metaworld-*` environments run on their `metaworld` simulator, in worker processes);
`--coordinator HOST:PORT --num-processes N --process-id I` runs one process of a
multi-host job (see docs/scaling.md).

Flags are generated from the algorithm's config dataclass and the environment's
dataclass (`--meta-batch-size`, `--horizon`, ...), plus the algorithm's short aliases
(`--arms`). The run's settings are validated once, by `RunSettings`; a bad value is one
line naming the flag and its allowed range.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import time
import types
import typing
from pathlib import Path
from typing import Any, Sequence

from jaxmeta import driver, envs
from jaxmeta.algorithms import registry
from jaxmeta.config import ConfigError
from jaxmeta.driver.distributed import initialize_distributed

# RunSettings fields whose flag is not their own name
SETTING_FLAGS = {"num_seeds": "--seeds", "env_kwargs": "--env", "config": "algorithm", "algorithm": "algorithm"}


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, no usage dump
        self.exit(2, f"jaxmeta: error: {message}\n")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _tuple_parser(item: type):
    def parse(text: str) -> tuple:
        parts = [x.strip() for x in text.split(",") if x.strip()]
        if item is int:
            try:
                return tuple(int(x) for x in parts)
            except ValueError:
                raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}")
        return tuple(parts)

    return parse


def _flag_type(hint: Any, default: Any):
    """The argparse `type` of a dataclass field, from its annotation (Optional unwrapped)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        hint = args[0] if len(args) == 1 else str
    if typing.get_origin(hint) is tuple:
        return _tuple_parser(typing.get_args(hint)[0]), "A,B"
    if hint in (int, float, str):
        return hint, None
    for t in (bool, int, float):  # no usable annotation: the default's type
        if isinstance(default, t):
            return t, None
    return str, None


def _add_dataclass_flags(group, cls, seen: dict[str, str], owner: str, aliases: dict[str, str]):
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in seen or not f.init:
            continue
        seen[f.name] = owner
        names = [_flag(f.name)] + [_flag(a) for a, target in aliases.items() if target == f.name]
        hint, default = hints.get(f.name), f.default
        kw: dict[str, Any] = {"dest": f"{owner}:{f.name}", "default": argparse.SUPPRESS, "help": f"default: {default}"}
        if hint is bool or isinstance(default, bool):
            group.add_argument(*names, action=argparse.BooleanOptionalAction, **kw)
            continue
        kw["type"], metavar = _flag_type(hint, default)
        if metavar:
            kw["metavar"] = metavar
        group.add_argument(*names, **kw)


def _build_parser(algo: str | None = None, env_name: str | None = None) -> argparse.ArgumentParser:
    parser = _Parser(prog="jaxmeta", description="Meta-reinforcement learning in JAX.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list algorithms and environments")
    ev = sub.add_parser("evaluate", help="the final table of a run at its newest checkpoint")
    ev.error = parser.error  # type: ignore[method-assign]
    ev.add_argument("run_dir", metavar="RUN_DIR", help="a run folder (runs/NAME)")
    tr = sub.add_parser("train", help="meta-train an algorithm")
    tr.error = parser.error  # type: ignore[method-assign]
    tr.add_argument("algorithm", nargs="?", choices=sorted(registry.REGISTRY),
                    help="algorithm (may be left out with --resume)")
    tr.add_argument("--env", help="environment (default: the algorithm's own)")
    tr.add_argument("--simulator", default=None,
                    help="jax (default: the environment's own jittable code; brax for the locomotion tasks), "
                         "mujoco (native MuJoCo stepped outside jit) or metaworld (worker processes; the "
                         "default and only simulator of the metaworld-* environments)")
    tr.add_argument("--num-batches", type=int, default=None, help="meta-iterations (default: 100)")
    tr.add_argument("--seed", type=int, default=None, help="default: 0")
    tr.add_argument("--name", help="run name (default: ALGO-ENV-TIME)")
    tr.add_argument("--out", default="runs", help="folder for runs (default: runs)")
    tr.add_argument("--no-progress", action="store_true", help="no progress bar")
    tr.add_argument("--seeds", type=int, default=None, metavar="N",
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
            _add_dataclass_flags(tr.add_argument_group(f"{env_name} environment"), envs.REGISTRY[env_name], seen,
                                 "env", spec.aliases)
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
    print("simulators (--simulator):")
    print("  jax            every environment's own jittable implementation (Brax for locomotion; default "
          "except for metaworld-*)")
    for name, runs in envs.HOST_SIMULATORS.items():
        print(f"  {name:14s} stepped outside jit, for {', '.join(runs)}")


def _run_guarded(fn) -> int:
    """Run the driver; its expected failures are one line on stderr and an exit code."""
    try:
        fn()
    except driver.CheckpointError as e:
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
        initialize_distributed(args.coordinator, args.num_processes, args.process_id)


def _config_error(parser, e: ConfigError) -> None:
    """A ConfigError as the one-line error of the flag that set the field."""
    if e.field is None:
        parser.error(str(e))
    parser.error(f"argument {SETTING_FLAGS.get(e.field, _flag(e.field))}: {e}")


def cmd_resume(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    given = [k for k in vars(args) if k.startswith(("config:", "env:"))]
    fixed = [("--env", args.env), ("--seed", args.seed), ("--seeds", args.seeds), ("--simulator", args.simulator)]
    if given or any(v is not None for _, v in fixed):
        bad = _flag(given[0].split(":", 1)[1]) if given else next(f for f, v in fixed if v is not None)
        parser.error(f"argument {bad}: not allowed with --resume (the run's config.json fixes it)")
    folder = driver.RunFolder(args.resume)
    try:
        saved = folder.read_config()
    except (OSError, ValueError) as e:
        parser.error(f"argument --resume: {folder.path} is not a run folder with a readable config.json ({e})")
    if args.algorithm and saved.get("algorithm") != args.algorithm:
        parser.error(f"argument --resume: {folder.path} is a run of {saved.get('algorithm')!r}, not {args.algorithm!r}")
    for flag, value, low in (("--num-batches", args.num_batches, 1), ("--checkpoint-every", args.checkpoint_every, 0)):
        if value is not None and not low <= value <= 10_000_000:
            parser.error(f"argument {flag}: must be an integer in [{low}, 10000000], got {value}")
    _check_distributed(args, parser)
    print(f"resuming {folder.path}")
    return _run_guarded(lambda: driver.resume(folder.path, num_batches=args.num_batches,
                                              checkpoint_every=args.checkpoint_every, progress=not args.no_progress))


def cmd_train(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if args.resume:
        return cmd_resume(args, parser)
    if args.algorithm is None:
        parser.error("argument algorithm: required (unless --resume RUN_DIR)")
    values = vars(args)
    config_kw = {k.split(":", 1)[1]: v for k, v in values.items() if k.startswith("config:")}
    env_kw = {k.split(":", 1)[1]: v for k, v in values.items() if k.startswith("env:")}
    spec = registry.get(args.algorithm)
    try:
        config = spec.config_cls(**config_kw)
    except ConfigError as e:
        _config_error(parser, e)
    try:
        settings = driver.RunSettings(
            args.algorithm, args.env, env_kw, config,
            num_batches=100 if args.num_batches is None else args.num_batches,
            seed=0 if args.seed is None else args.seed, num_seeds=1 if args.seeds is None else args.seeds,
            checkpoint_every=100 if args.checkpoint_every is None else args.checkpoint_every,
            simulator=args.simulator,
        )
    except ConfigError as e:
        _config_error(parser, e)
    _check_distributed(args, parser)
    name = args.name or f"{spec.name}-{settings.env}-{time.strftime('%Y%m%d-%H%M%S')}"
    if args.num_processes > 1:  # every process must agree on the folder: no -2 suffixes
        run_dir = Path(args.out) / name
        if args.process_id == 0 and run_dir.exists():
            parser.error(f"argument --name: {run_dir} exists; a multi-process run needs a new name")
    else:
        run_dir = driver.new_run_dir(args.out, name)
    S = settings.num_seeds
    seeds = f"seed {settings.seed}" if S == 1 else f"seeds {settings.seed}..{settings.seed + S - 1} (vmapped)"
    where = "" if settings.simulator == "jax" else f" ({settings.simulator})"
    print(f"{spec.name} on {settings.env}{where}: {settings.num_batches} meta-iterations, {seeds} -> {run_dir}")
    return _run_guarded(lambda: driver.train(settings, run_dir, progress=not args.no_progress))


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    algo, env_name = _peek(argv)
    parser = _build_parser(algo, env_name)
    if algo in registry.REGISTRY and env_name is not None and env_name not in envs.REGISTRY:
        parser.error(f"argument --env: unknown environment {env_name!r}; known: {', '.join(sorted(envs.REGISTRY))}")
    args = parser.parse_args(argv)
    if args.command == "list":
        cmd_list()
        return 0
    if args.command == "evaluate":
        return _run_guarded(lambda: driver.evaluate(args.run_dir))
    return cmd_train(args, parser)


if __name__ == "__main__":
    sys.exit(main())
