"""The `jaxmeta` command: `jaxmeta train ALGO --env ENV [flags]`, `jaxmeta list`.

`jaxmeta train ALGO ... --seeds 8` trains 8 seeds in one program (see --seed-layout);
`jaxmeta train --resume runs/NAME` continues a run from its newest checkpoint;
`jaxmeta evaluate runs/NAME [--num-tasks N] [--steps K] [--seed S] [--checkpoint N]`
evaluates a checkpoint on held-out tasks again (e.g. Meta-World's success rates on its
test tasks), into runs/NAME/eval-<...>/;
`--simulator mujoco` steps the locomotion tasks on native MuJoCo outside jit (the
`metaworld-*` environments run on their `metaworld` simulator, in worker processes;
a one-seed MAML locomotion run on a CPU-only machine takes MuJoCo by default, in one
worker per core: measured faster there than Brax);
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
import os
import socket
import sys
import threading
import time
import types
import typing
from pathlib import Path
from typing import Any, Sequence

from jaxmeta import driver, envs
from jaxmeta.algorithms import registry
from jaxmeta.config import ConfigError
from jaxmeta.driver import reproduce
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
    tr = sub.add_parser("train", help="meta-train an algorithm")
    tr.error = parser.error  # type: ignore[method-assign]
    tr.add_argument("algorithm", nargs="?", choices=sorted(registry.REGISTRY),
                    help="algorithm (may be left out with --resume)")
    tr.add_argument("--env", help="environment (default: the algorithm's own)")
    tr.add_argument("--simulator", default=None,
                    help="jax (the environment's own jittable code; brax for the locomotion tasks), "
                         "mujoco (native MuJoCo stepped outside jit) or metaworld (worker processes; the "
                         "default and only simulator of the metaworld-* environments). Default: jax, except "
                         "MAML on the locomotion tasks on a CPU-only machine with one seed: mujoco in one "
                         "worker per core (measured faster, docs/benchmarks.md)")
    tr.add_argument("--num-batches", type=int, default=None, help="meta-iterations (default: 100)")
    tr.add_argument("--seed", type=int, default=None, help="default: 0")
    tr.add_argument("--name", help="run name (default: ALGO-ENV-TIME)")
    tr.add_argument("--out", default="runs", help="folder for runs (default: runs)")
    tr.add_argument("--no-progress", action="store_true", help="no progress bar")
    tr.add_argument("--seed-layout", choices=("auto", "vmap", "map"), default=None,
                    help="how --seeds run: vmapped, or one after the other in one program (map); auto (default): "
                         "on a CPU the layout measured faster for the algorithm (MAML, SNAIL map; RL^2 vmap), vmap on an "
                         "accelerator")
    tr.add_argument("--seeds", type=int, default=None, metavar="N",
                    help="train N seeds (--seed, --seed+1, ...) in one program (default: 1; see --seed-layout)")
    tr.add_argument("--checkpoint-every", type=int, default=None, metavar="N",
                    help="checkpoint every N meta-iterations (default: 100; 0: only at the end and on Ctrl-C/SIGTERM)")
    tr.add_argument("--resume", metavar="RUN_DIR",
                    help="continue the run in RUN_DIR from its newest checkpoint (algorithm, env and config come from it)")
    tr.add_argument("--config", metavar="FILE",
                    help="settings file (TOML, YAML or JSON; or a shipped config's name, see `jaxmeta list`); "
                         "flags override it")
    tr.add_argument("--print-config", action="store_true", help="print the merged settings as TOML and exit")
    tr.add_argument("--no-tensorboard", action="store_true", help="no TensorBoard event files in the run folder")
    tr.add_argument("--wandb", metavar="PROJECT", help="also log to this Weights & Biases project (jaxmeta[wandb])")
    ev = sub.add_parser("evaluate", help="evaluate a run's checkpoint on held-out tasks again")
    ev.error = parser.error  # type: ignore[method-assign]
    ev.add_argument("run", metavar="RUN_DIR")
    ev.add_argument("--num-tasks", type=int, default=None, help="held-out tasks (default: the run's num_eval_tasks)")
    ev.add_argument("--steps", type=int, default=None,
                    help="MAML: inner steps (0..K measured); RL^2: episodes per trial (default: the run's)")
    ev.add_argument("--seed", type=int, default=None, help="other held-out tasks and evaluation key (default: the run's)")
    ev.add_argument("--checkpoint", type=int, default=None, metavar="N", help="meta-iteration (default: the newest)")
    rp = sub.add_parser("reproduce", help="train every cell of a published table and compare with the paper")
    rp.error = parser.error  # type: ignore[method-assign]
    rp.add_argument("table", choices=sorted(reproduce.TABLES))
    rp.add_argument("--cells", metavar="A,B", help="only these cells (e.g. n10-k5,n100-k5; default: all)")
    rp.add_argument("--quick", action="store_true",
                    help="2 meta-iterations of small batches per cell: a smoke test, not a result")
    rp.add_argument("--out", default="runs", help="folder for the table's runs (default: runs)")
    rp.add_argument("--no-progress", action="store_true", help="no progress bar")
    dist = tr.add_argument_group("multi-process (multi-host) runs, see docs/scaling.md")
    dist.add_argument("--coordinator", metavar="HOST:PORT", help="address of process 0 (jax.distributed.initialize)")
    dist.add_argument("--num-processes", type=int, default=1)
    dist.add_argument("--process-id", type=int, default=0)
    dist.add_argument("--coordinator-timeout", type=int, default=300, metavar="S",
                      help="seconds to wait for every process to connect (default: 300)")
    if algo is not None and algo in registry.REGISTRY:
        spec = registry.get(algo)
        seen: dict[str, str] = {}
        _add_dataclass_flags(tr.add_argument_group(f"{algo} config"), spec.config_cls, seen, "config", spec.aliases)
        env_name = env_name or spec.default_env
        if env_name in envs.REGISTRY and dataclasses.is_dataclass(envs.REGISTRY[env_name]):
            _add_dataclass_flags(tr.add_argument_group(f"{env_name} environment"), envs.REGISTRY[env_name], seen,
                                 "env", spec.aliases)
    return parser


def _option(argv: Sequence[str], flag: str) -> str | None:
    for i, a in enumerate(argv):
        if a == flag and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith(flag + "="):
            return a.split("=", 1)[1]
    return None


def _peek(argv: Sequence[str]) -> tuple[str | None, str | None]:
    """The algorithm and --env given on the command line (or fixed by the run that
    --resume names), before full parsing, so that their flags can be recognised."""
    algo = env_name = None
    if len(argv) >= 2 and argv[0] == "train" and not argv[1].startswith("-"):
        algo = argv[1]
    env_name = _option(argv, "--env")
    resume, config_file = _option(argv, "--resume"), _option(argv, "--config")
    if argv[:1] == ["train"] and (resume is not None or config_file is not None):
        try:
            saved = driver.RunFolder(resume).read_config() if resume is not None else \
                driver.settings.read_settings_file(config_file)
            algo, env_name = algo or saved.get("algorithm"), env_name or saved.get("env")
        except (OSError, ValueError, AttributeError):
            pass  # reported with the flag once the arguments are parsed
    return algo, env_name


def cmd_list() -> None:
    print("algorithms:")
    for name, spec in sorted(registry.REGISTRY.items()):
        print(f"  {name:13s} {spec.description}  [envs: {', '.join(spec.envs)}; default {spec.default_env}]")
    print("environments:")
    for name, factory in sorted(envs.REGISTRY.items()):
        doc = (factory.__doc__ or "").strip().splitlines()
        print(f"  {name:14s} {doc[0] if doc else ''}")
    print("shipped configs (--config NAME):")
    for name, path in driver.settings.shipped_configs().items():
        first = next((line[2:] for line in path.read_text().splitlines() if line.startswith("# ")), "")
        print(f"  {name:24s} {first}")
    print("simulators (--simulator):")
    print("  jax            every environment's own jittable implementation (Brax for locomotion; default "
          "except for metaworld-*)")
    for name, runs in envs.HOST_SIMULATORS.items():
        print(f"  {name:14s} stepped outside jit, for {', '.join(runs)}")


def _run_guarded(fn) -> int:
    """Run the driver; its expected failures are one line on stderr and an exit code."""
    try:
        fn()
    except (driver.CheckpointError, driver.RunFolderError, ConfigError) as e:
        print(f"jaxmeta: error: {e}", file=sys.stderr)
        return 2
    except driver.NonFiniteError as e:
        print(f"jaxmeta: error: {e}", file=sys.stderr)
        return 1
    except driver.TrainingInterrupted as e:
        print(f"jaxmeta: {e}", file=sys.stderr)
        return 128 + e.signum
    except KeyboardInterrupt:
        print("jaxmeta: interrupted before training started; nothing was written", file=sys.stderr)
        return 130
    return 0


def _quiet_unraisable(unraisable) -> None:
    """Drop what orbax's background threads leave behind after a failed read or write
    (a callback on an asyncio loop it already closed); the error itself is reported."""
    if isinstance(unraisable.exc_value, RuntimeError) and "Event loop is closed" in str(unraisable.exc_value):
        return
    sys.__unraisablehook__(unraisable)


def _check_coordinator(address: str, parser) -> None:
    host, sep, port = address.rpartition(":")
    if not (sep and host and port.isdigit() and 1 <= int(port) <= 65535):
        parser.error(f"argument --coordinator: expected HOST:PORT with a port in [1, 65535], got {address!r}")


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
    if not 1 <= args.coordinator_timeout <= 86_400:
        parser.error(f"argument --coordinator-timeout: must be in [1, 86400] seconds, got {args.coordinator_timeout}")
    if args.coordinator:
        _check_coordinator(args.coordinator, parser)
        _connect(args, parser)


def _connect(args, parser) -> None:
    """Join the multi-process job, or end with one line within --coordinator-timeout.

    jax's own timeout aborts the process from C++ with a stack trace, so jaxmeta keeps
    its own deadline: a process other than 0 first waits for process 0 to listen, and a
    watchdog ends the process cleanly if not every process has connected in time.
    """
    timeout, address = args.coordinator_timeout, args.coordinator
    print(f"process {args.process_id} of {args.num_processes}: connecting to the coordinator at {address} "
          f"(waiting up to {timeout} s for every process)", flush=True)
    deadline = time.monotonic() + timeout
    if args.process_id > 0:
        host, _, port = address.rpartition(":")
        while not _listening(host, int(port)):
            if time.monotonic() > deadline:
                parser.exit(2, f"jaxmeta: error: no process 0 is listening at {address} after {timeout} s: start "
                               "process 0 first, or check --coordinator\n")
            time.sleep(0.25)
    done = threading.Event()

    def watchdog():
        if not done.wait(max(1.0, deadline - time.monotonic())):
            sys.stderr.write(f"jaxmeta: error: not all {args.num_processes} processes connected to {address} within "
                             f"{timeout} s: start the missing ones (--process-id 0..{args.num_processes - 1})\n")
            sys.stderr.flush()
            os._exit(2)

    threading.Thread(target=watchdog, daemon=True).start()
    try:
        initialize_distributed(address, args.num_processes, args.process_id, timeout_s=timeout + 60)
    except Exception as e:  # noqa: BLE001 - jax raises its runtime's error types
        what = " ".join(str(e).split())[:200]
        parser.exit(2, f"jaxmeta: error: cannot join the job at {address}: {type(e).__name__}: {what}\n")
    finally:
        done.set()


def _listening(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def _config_error(parser, e: ConfigError, argv: Sequence[str] = (), aliases: dict[str, str] | None = None) -> None:
    """A ConfigError as the one-line error of the flag that set the field (the alias the
    user typed, if any)."""
    if e.field is None:
        parser.error(str(e))
    flags = [SETTING_FLAGS.get(e.field, _flag(e.field))]
    flags += [_flag(a) for a, target in (aliases or {}).items() if target == e.field]
    typed = [f for f in flags if any(a == f or a.startswith(f + "=") for a in argv)]
    parser.error(f"argument {(typed or flags)[0]}: {e}")


def cmd_resume(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    given = [k for k in vars(args) if k.startswith(("config:", "env:"))]
    fixed = [("--env", args.env), ("--seed", args.seed), ("--seeds", args.seeds), ("--simulator", args.simulator),
             ("--seed-layout", args.seed_layout)]
    if given or any(v is not None for _, v in fixed):
        bad = _flag(given[0].split(":", 1)[1]) if given else next(f for f, v in fixed if v is not None)
        parser.error(f"argument {bad}: not allowed with --resume (the run's config.json fixes it)")
    folder = driver.RunFolder(args.resume)
    try:
        settings = driver.read_settings(folder)
    except driver.RunFolderError as e:
        parser.error(f"argument --resume: {e}")
    if args.algorithm and settings.algorithm != args.algorithm:
        parser.error(f"argument --resume: {folder.path} is a run of {settings.algorithm!r}, not {args.algorithm!r}")
    for flag, value, low in (("--num-batches", args.num_batches, 1), ("--checkpoint-every", args.checkpoint_every, 0)):
        if value is not None and not low <= value <= 10_000_000:
            parser.error(f"argument {flag}: must be an integer in [{low}, 10000000], got {value}")
    _check_distributed(args, parser)
    _choose_cpu_devices(settings, args.num_processes)
    print(f"resuming {folder.path}")
    return _run_guarded(lambda: driver.resume(folder.path, num_batches=args.num_batches,
                                              checkpoint_every=args.checkpoint_every, progress=not args.no_progress,
                                              **_logging(args)))


def cmd_train(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    _check_logging(args, parser)
    if args.resume:
        return cmd_resume(args, parser)
    file_values = {}
    if args.config is not None:
        try:
            file_values = driver.settings.read_settings_file(args.config)
        except ConfigError as e:
            parser.error(f"argument --config: {e}")
    if args.algorithm is None and "algorithm" not in file_values:
        parser.error("argument algorithm: required (unless --resume RUN_DIR or --config FILE names it)")
    values = vars(args)
    config_kw = {k.split(":", 1)[1]: v for k, v in values.items() if k.startswith("config:")}
    env_kw = {k.split(":", 1)[1]: v for k, v in values.items() if k.startswith("env:")}
    spec = registry.get(args.algorithm or file_values["algorithm"])
    scalars = {"num_batches": args.num_batches, "seed": args.seed, "num_seeds": args.seeds,
               "checkpoint_every": args.checkpoint_every, "simulator": args.simulator, "seed_layout": args.seed_layout}
    defaults = {"num_batches": 100, "checkpoint_every": 100}  # the command line's, where the file says nothing
    scalars.update({k: v for k, v in defaults.items() if scalars[k] is None and k not in file_values})
    try:
        settings = driver.settings.merge_settings(file_values, args.algorithm, args.env, config_kw, env_kw, scalars)
    except ConfigError as e:
        if args.config is not None and e.field not in (None, *config_kw, *env_kw, *scalars, "env", "algorithm"):
            parser.error(f"argument --config: {e}")  # a value from the file
        _config_error(parser, e, args.argv, spec.aliases)
    settings = _choose_cpu_simulator(settings, args.simulator is not None or "simulator" in file_values,
                                     args.num_processes)
    if args.print_config:
        print(driver.settings.settings_to_toml(settings), end="")
        return 0
    name = args.name if args.name is not None else f"{spec.name}-{settings.env}-{time.strftime('%Y%m%d-%H%M%S')}"
    try:
        driver.check_name(name)
    except driver.RunFolderError as e:
        parser.error(f"argument --name: {e}")
    _check_distributed(args, parser)
    _choose_cpu_devices(settings, args.num_processes)
    if args.num_processes > 1:  # every process must agree on the folder: no -2 suffixes
        run_dir = Path(args.out) / name
        if args.process_id == 0 and run_dir.exists():
            parser.error(f"argument --name: {run_dir} exists; a multi-process run needs a new name")
    else:
        try:
            run_dir = driver.new_run_dir(args.out, name)
        except driver.RunFolderError as e:
            parser.error(f"argument --out: {e}")
    S = settings.num_seeds
    seeds = f"seed {settings.seed}" if S == 1 else \
        f"seeds {settings.seed}..{settings.seed + S - 1} ({settings.resolved_seed_layout()} layout)"
    where = "" if settings.simulator == "jax" else f" ({settings.simulator})"
    print(f"{spec.name} on {settings.env}{where}: {settings.num_batches} meta-iterations, {seeds} -> {run_dir}")
    return _run_guarded(lambda: driver.train(settings, run_dir, progress=not args.no_progress, **_logging(args)))


ACCELERATOR_PLUGINS = ("jax_cuda12_plugin", "jax_cuda13_plugin", "jax_rocm60_plugin", "jax_rocm7_plugin", "libtpu")


def _cpu_only() -> bool:
    """True when JAX will run on the CPU alone (told so, or no accelerator plugin installed)."""
    import importlib.util

    platforms = os.environ.get("JAX_PLATFORMS", "")
    if platforms:
        return set(platforms.lower().split(",")) <= {"cpu"}
    return not any(importlib.util.find_spec(m) for m in ACCELERATOR_PLUGINS)


def _choose_cpu_devices(settings, num_processes: int = 1) -> None:
    """The CPU layout: on a CPU-only machine, give XLA as many host devices as the
    algorithm's measured layout asks (`AlgorithmSpec.cpu_devices`; MAML: one per task of
    the meta-batch, whose work XLA then runs concurrently in cache-sized pieces), unless
    XLA_FLAGS already says how many. The library itself never sets XLA flags."""
    spec = settings.spec
    if spec.cpu_devices is None or settings.host or num_processes > 1:
        return
    _force_host_devices(int(spec.cpu_devices(settings.config)))


def _choose_cpu_simulator(settings, given: bool, num_processes: int = 1):
    """The CPU path: on a CPU-only machine, a one-seed run whose simulator was not named
    (flag or config file) runs on the host simulator its algorithm measured faster there
    (`AlgorithmSpec.cpu_simulators`; MAML on the locomotion tasks: native MuJoCo, 6.9x
    Brax on 2 cores), in one worker process per CPU core unless --num-workers says, when
    that simulator is installed. Brax stays the path on an accelerator, for several
    seeds (which run inside one XLA program), for a multi-process run, and when a Brax
    --backend is named."""
    simulator = settings.spec.cpu_simulators.get(settings.env)
    if given or simulator is None or settings.num_seeds > 1 or num_processes > 1 or "backend" in settings.env_kwargs \
            or not _cpu_only() or not envs.host_simulator_installed(simulator):
        return settings
    env_kwargs = {"num_workers": _cpu_cores(), **settings.env_kwargs}
    return settings.replace(simulator=simulator, env_kwargs=env_kwargs)


def _cpu_cores() -> int:
    """The CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _force_host_devices(n: int) -> None:
    """XLA_FLAGS for `n` host devices, on a CPU-only machine whose backend has not started
    and whose XLA_FLAGS name no count of their own."""
    from jax._src import xla_bridge

    flags = os.environ.get("XLA_FLAGS", "")
    if n <= 1 or "xla_force_host_platform_device_count" in flags or xla_bridge.backends_are_initialized() \
            or not _cpu_only():
        return
    os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={n}".strip()


def cmd_evaluate(args) -> int:
    """`jaxmeta evaluate`: on a CPU, with the host devices the run trained on (config.json's
    device_count), so that its own final table is reproduced."""
    try:
        _force_host_devices(int(driver.RunFolder(args.run).read_config().get("device_count", 1)))
    except (OSError, ValueError, TypeError, AttributeError):
        pass  # not a readable run: evaluate_run says so in one line
    return _run_guarded(lambda: driver.evaluate_run(args.run, num_tasks=args.num_tasks, steps=args.steps,
                                                    seed=args.seed, checkpoint=args.checkpoint))


def cmd_reproduce(args, parser) -> int:
    """`jaxmeta reproduce TABLE`: every cell of one table is one algorithm, so the CPU
    layout of its first cell holds for all of them."""
    try:
        table, cells = reproduce.select_cells(args.table, args.cells)
    except ConfigError as e:
        parser.error(f"argument --cells: {e}")
    _choose_cpu_devices(reproduce.cell_settings(cells[0]))
    return _run_guarded(lambda: reproduce.reproduce(args.table, args.out, args.cells, args.quick,
                                                    progress=not args.no_progress))


def _logging(args) -> dict:
    return {"tensorboard": not args.no_tensorboard, "wandb_project": args.wandb}


def _check_logging(args, parser) -> None:
    import importlib.util

    if args.wandb is not None and importlib.util.find_spec("wandb") is None:
        parser.error("argument --wandb: Weights & Biases is not installed: pip install 'jaxmeta[wandb]'")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    algo, env_name = _peek(argv)
    parser = _build_parser(algo, env_name)
    given_env = _option(argv, "--env")
    if algo in registry.REGISTRY and given_env is not None and given_env not in envs.REGISTRY:
        parser.error(f"argument --env: unknown environment {given_env!r}; known: {', '.join(sorted(envs.REGISTRY))}")
    sys.unraisablehook = _quiet_unraisable
    try:
        args = parser.parse_args(argv)
        args.argv = argv
        if args.command == "list":
            cmd_list()
            return 0
        if args.command == "evaluate":
            return cmd_evaluate(args)
        if args.command == "reproduce":
            return cmd_reproduce(args, parser)
        return cmd_train(args, parser)
    except KeyboardInterrupt:  # before the driver took over the signals (imports, compilation)
        print("jaxmeta: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
