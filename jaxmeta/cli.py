"""The `jaxmeta` command: `jaxmeta train ALGO --env ENV [flags]`, `jaxmeta list`.

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
    tr.add_argument("algorithm", choices=sorted(registry.REGISTRY))
    tr.add_argument("--env", help="environment (default: the algorithm's own)")
    tr.add_argument("--num-batches", type=int, default=None, help="meta-iterations (default: 100)")
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--name", help="run name (default: ALGO-ENV-TIME)")
    tr.add_argument("--out", default="runs", help="folder for runs (default: runs)")
    tr.add_argument("--no-progress", action="store_true", help="no progress bar")
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
    if len(argv) >= 2 and argv[0] == "train":
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
        print(f"  {name:10s} {spec.description}  [envs: {', '.join(spec.envs)}; default {spec.default_env}]")
    print("environments:")
    for name, factory in sorted(envs.REGISTRY.items()):
        doc = (factory.__doc__ or "").strip().splitlines()
        print(f"  {name:14s} {doc[0] if doc else ''}")


def cmd_train(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from jaxmeta import train as driver

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
    try:
        env = envs.make(env_name, **env_kw)
        config = spec.config_cls(**config_kw)
    except ConfigError as e:
        if e.field is not None:
            parser.error(f"argument {_flag(e.field)}: {e}")
        parser.error(str(e))
    name = args.name or f"{spec.name}-{env_name}-{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir = driver.new_run_dir(args.out, name)
    print(f"{spec.name} on {env_name}: {num_batches} meta-iterations, seed {args.seed} -> {run_dir}")
    driver.train(
        spec, env, config, num_batches=num_batches, seed=args.seed, run_dir=run_dir,
        env_name=env_name, env_kwargs=env_kw, progress=not args.no_progress,
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    algo, env_name = _peek(argv)
    parser = _build_parser(algo, env_name)
    args = parser.parse_args(argv)
    if args.command == "list":
        cmd_list()
        return 0
    return cmd_train(args, parser)


if __name__ == "__main__":
    sys.exit(main())
