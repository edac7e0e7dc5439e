"""Evaluate a run again: `jaxmeta evaluate RUN [--num-tasks N] [--steps K] [--seed S] [--checkpoint N]`.

The run's settings come from its config.json and its state from a checkpoint (the
newest by default). With no options the evaluation is the run's own: the same held-out
tasks, adaptation steps and key, so the table equals the run's final table. Options
change what is measured, not what was trained:

- `num_tasks`: held-out tasks to evaluate on;
- `steps`: inner steps after which MAML's return is measured (0..K), or episodes per
  trial for RL^2 (SNAIL's context is fixed by training: its trial length cannot change);
- `seed`: draws other held-out tasks (the config's `eval_seed`) and another evaluation
  key (what `--seed S` would give a run);
- `checkpoint`: the meta-iteration to evaluate.

Results go to `RUN/eval-<checkpoint>-<tasks>-<steps>-<seed>/`: table.txt, table.json and
adaptation.png.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Callable, NamedTuple

import jax

from jaxmeta import parallel
from jaxmeta.algorithms.black_box import BlackBoxConfig
from jaxmeta.algorithms.maml import MAMLConfig
from jaxmeta.config import ConfigError, check_int
from jaxmeta.driver import checkpoint as ckpt
from jaxmeta.driver import report, seeds
from jaxmeta.driver.loop import Program, build_algorithm, final_results, read_settings
from jaxmeta.driver.run_folder import RunFolder, to_jsonable, write_atomic
from jaxmeta.networks.sequence import SNAILArchitecture


class Evaluation(NamedTuple):
    folder: Path  # where the table and plot were written
    iteration: int  # the checkpoint evaluated
    title: str
    table: report.Table
    curves: dict


def _changed_config(config, num_tasks, steps, seed):
    """The config that evaluates as asked (training fields untouched)."""
    changes = {}
    if num_tasks is not None:
        check_int("num_tasks", num_tasks, 1, 1_000_000)
        changes["num_eval_tasks"] = num_tasks
    if seed is not None:
        check_int("seed", seed, 0, 2**31 - 1)
        changes["eval_seed"] = seed
    if steps is not None:
        if isinstance(config, MAMLConfig):
            check_int("steps", steps, 1, 100)
        elif isinstance(config, SNAILArchitecture):
            if steps != config.episodes_per_trial:
                raise ConfigError(f"SNAIL's context is {config.episodes_per_trial} episodes, fixed by training: "
                                  f"--steps {steps} would need another network", "steps")
        elif isinstance(config, BlackBoxConfig):
            if config.time_input and steps != config.episodes_per_trial:
                raise ConfigError(f"this policy reads t / T of a {config.episodes_per_trial}-episode trial "
                                  f"(time_input), fixed by training: --steps {steps} would change what t / T means",
                                  "steps")
            check_int("steps", steps, 1, 100_000)
            changes["episodes_per_trial"] = steps
        elif hasattr(config, "num_eval_steps"):  # MAML-Q: Q-learning updates on the adaptation curve
            check_int("steps", steps, 1, 100)
            changes["num_eval_steps"] = steps
        else:
            raise ConfigError(f"--steps is not defined for {type(config).__name__}", "steps")
    return dataclasses.replace(config, **changes) if changes else config


def evaluate_run(run_dir, *, num_tasks: int | None = None, steps: int | None = None, seed: int | None = None,
                 checkpoint: int | None = None, log: Callable[[str], None] = print) -> Evaluation:
    """Evaluate a run's checkpoint on held-out tasks and write RUN/eval-.../ (see module)."""
    folder = RunFolder(run_dir)
    settings = read_settings(folder, "evaluate")
    available = ckpt.steps(folder.path)
    if not available:
        raise ckpt.CheckpointError(f"{folder.path} has no checkpoint to evaluate")
    if checkpoint is not None and checkpoint not in available:
        raise ckpt.CheckpointError(f"{folder.path} has no checkpoint {checkpoint}; it has {', '.join(map(str, available))}")
    iteration = checkpoint if checkpoint is not None else available[-1]
    mesh = parallel.task_mesh()

    # the trained state, restored with the algorithm it was trained as
    env = settings.make_env()
    trained_algo, trained_collector = build_algorithm(settings, env)
    program = Program(trained_algo, settings.num_seeds, mesh, settings.resolved_seed_layout())
    keys = seeds.run_keys(settings.seed, settings.num_seeds)
    with parallel.use_mesh(mesh):
        state0 = program.init(keys.init)
    restored = ckpt.restore(folder.path, {"state": state0, "k_train": keys.train}, settings.identity(),
                            sharding=parallel.replicated(mesh), step=iteration,
                            defaults=settings.identity_defaults())
    if restored.iteration != iteration:
        raise ckpt.CheckpointError(f"checkpoint {iteration} of {folder.path} does not restore "
                                   f"({'; '.join(f'{s}: {r}' for s, r in restored.skipped)})")

    # evaluated with the asked-for tasks, steps and key
    config = _changed_config(settings.config, num_tasks, steps, seed)
    eval_settings = settings.replace(config=config)
    algo, collector = build_algorithm(eval_settings, env)
    eval_program = Program(algo, settings.num_seeds, mesh, settings.resolved_seed_layout())
    evaluate = eval_program.evaluate
    if steps is not None and isinstance(config, MAMLConfig):  # MAML measures after 0..K inner steps
        one = lambda s, k: algo.evaluate(s, k, num_steps=steps)
        f = jax.vmap(one) if settings.num_seeds > 1 else one
        evaluate = jax.jit(f) if algo.jittable else f
    eval_keys = seeds.run_keys(seed, settings.num_seeds).eval if seed is not None else keys.eval
    own_table = settings.spec.final_table_for(settings.env) is not None
    untrained = None
    try:
        if not own_table:
            with parallel.use_mesh(mesh):
                untrained = evaluate(state0, eval_keys)
        res = final_results(eval_settings, env, algo, collector, evaluate, restored.tree["state"], state0, untrained,
                            eval_keys, mesh)
    finally:
        for c in {id(c): c for c in (collector, trained_collector) if c is not None}.values():
            c.close()  # a host simulator's worker processes
    title = f"{res.title}; checkpoint {iteration}"
    log(f"\n{title}\n{report.format_table(*res.table)}")

    c = config
    n_steps = steps if steps is not None else getattr(c, "num_inner_steps", getattr(c, "episodes_per_trial", 0))
    out = folder.path / f"eval-{iteration}-{c.num_eval_tasks}tasks-{n_steps}steps-seed{c.eval_seed if seed is None else seed}"
    out.mkdir(exist_ok=True)
    header, rows = res.table
    write_atomic(out / "table.txt", title + "\n" + report.format_table(header, rows) + "\n")
    payload = {"checkpoint": iteration, "num_tasks": c.num_eval_tasks, "steps": n_steps,
               "seed": seed, "header": header, "rows": to_jsonable(rows)}
    if res.per_seed:
        payload["per_seed"] = {s: {"header": h, "rows": to_jsonable(r)} for s, (h, r) in res.per_seed.items()}
    write_atomic(out / "table.json", json.dumps(payload, indent=2))
    if res.curves:
        success = all(getattr(c, "success", None) is not None for c in res.curves.values())
        xlabel = "episode of the trial" if own_table and isinstance(config, BlackBoxConfig) else "adaptation steps"
        report.plot_adaptation(res.curves, out / "adaptation.png", xlabel=xlabel,
                               metric="success" if success else "returns",
                               ylabel=report.curve_label(settings.spec.score))
    log(f"results in {out}")
    return Evaluation(out, iteration, title, res.table, res.curves)
