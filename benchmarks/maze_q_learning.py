"""Learning on held-out generated mazes: MAML-Q beside Q-learning from scratch, a pretrained
multi-task Q and RL^2, after the same number of adaptation episodes.

1. Meta-trains MAML-Q (`--iterations`) and evaluates, on the same `--num-eval-tasks`
   held-out mazes and episode keys, the meta-learned initialisation and the baselines
   (`MAMLQ.baseline_stats`: Q-learning from a zero and a random initialisation, and from a
   multi-task Q pretrained by Q-learning for `--multitask-iterations` on the training
   distribution), all adapted by the same K Q-learning updates of E episodes each.
2. Trains RL^2 (`--rl2-iterations`, 0 to skip) on the same maze distribution with trials
   of (K + 1) * E episodes, and reads its success and steps to the goal in each group of
   E consecutive episodes of a trial on the same held-out mazes: group k has seen k * E
   episodes of the maze, as the Q-learners after k updates.

Prints one JSON line per method (success rate and steps to goal after 0..K updates, i.e.
after 0, E, ..., K * E adaptation episodes), and with `--plot DIR` writes the adaptation
curves and a held-out maze with the adapted policy's trajectory as PNGs.

    python benchmarks/maze_q_learning.py --iterations 1000 --rl2-iterations 300 --plot runs/maze_q
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
import typing
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from common import device_info, emit  # noqa: E402
from jaxmeta.algorithms import BlackBox, RL2Config  # noqa: E402
from jaxmeta.algorithms.maml_q import MAMLQ, AdaptationStats, MAMLQConfig, episode_stats  # noqa: E402
from jaxmeta.cli import _flag_type  # noqa: E402 - the CLI's parsing of a dataclass field
from jaxmeta.envs import GeneratedMaze  # noqa: E402
from jaxmeta.envs.mazes import bfs_distances  # noqa: E402
from jaxmeta.types import AdaptationCurve  # noqa: E402


def rl2_stats(bb: BlackBox, params, tasks, key, group: int) -> AdaptationStats:
    """RL^2's success and steps per group of `group` consecutive episodes of one trial per task."""
    traj = bb.sample_trials(params, tasks, key, 1)  # leaves [N, T, 1, ...]
    n, H = bb.config.episodes_per_trial, bb.env.horizon

    def per_task(t):
        r = t.reward[:, 0].reshape(n, H).T  # [H, n] one column per episode
        v = t.valid[:, 0].reshape(n, H).T
        ret, success, steps = episode_stats(r, v)  # [n]
        return jnp.stack([x.reshape(n // group, group).mean(-1) for x in (ret, success, steps)])  # [3, groups]

    s = jax.vmap(per_task)(traj)  # [N, 3, groups]
    return AdaptationStats(s[:, 0], s[:, 1], s[:, 2])


def overrides(cls, text: str, flag: str) -> dict:
    """Scalar fields of dataclass `cls` from "k=v,k=v", each parsed as the CLI parses its flag."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kw = {}
    for item in filter(None, text.split(",")):
        k, sep, v = item.partition("=")
        if not sep or k not in fields:
            raise SystemExit(f"{flag}: expected k=v with k a field of {cls.__name__}, got {item!r}")
        if hints.get(k) is bool or isinstance(fields[k].default, bool):
            if v not in ("True", "False"):
                raise SystemExit(f"{flag}: {k} is True or False, got {v!r}")
            kw[k] = v == "True"
            continue
        parse, _ = _flag_type(hints.get(k), fields[k].default)
        try:
            kw[k] = parse(v)
        except (ValueError, argparse.ArgumentTypeError):
            raise SystemExit(f"{flag}: {k}={v!r} is not a valid value") from None
    return kw


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--iterations", type=int, default=1000)
    p.add_argument("--multitask-iterations", type=int, default=None, help="default: --iterations")
    p.add_argument("--rl2-iterations", type=int, default=300)
    p.add_argument("--rl2-hidden-size", type=int, default=128)
    p.add_argument("--rl2-meta-batch-size", type=int, default=64)
    p.add_argument("--rl2-config", default="", help="RL2Config fields as k=v,k=v over the defaults below "
                                                    "(e.g. gamma=0.95,entropy_coef=0.05,gae_lambda=0.95)")
    p.add_argument("--rows", type=int, default=7)
    p.add_argument("--cols", type=int, default=7)
    p.add_argument("--horizon", type=int, default=100)
    p.add_argument("--num-eval-tasks", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--plot", default=None, help="folder for the PNGs")
    p.add_argument("--config", default="", help="MAMLQConfig fields as k=v,k=v (e.g. n_step=20,meta_sgd=True)")
    p.add_argument("--lr-sweep", default="", help="also adapt the zero init and the multi-task Q with these fixed "
                                                  "step sizes (comma-separated), to show the baselines are not "
                                                  "held back by the default inner_lr")
    args = p.parse_args(argv)

    kw = overrides(MAMLQConfig, args.config, "--config")
    rl2_kw = overrides(RL2Config, args.rl2_config, "--rl2-config")
    mt_its = args.iterations if args.multitask_iterations is None else args.multitask_iterations
    config = MAMLQConfig(**{"num_eval_tasks": args.num_eval_tasks, "multitask_iterations": mt_its, **kw})
    env = GeneratedMaze(rows=args.rows, cols=args.cols, horizon=args.horizon)
    m = MAMLQ(env, env.task_distribution(), config)
    K, E = config.num_inner_steps, config.num_episodes
    setup = {"env": {"rows": args.rows, "cols": args.cols, "horizon": args.horizon, "placement": env.placement,
                     "observation": env.observation}, "adaptation_episodes": K * E, "eval_tasks": args.num_eval_tasks,
             "seed": args.seed}

    # ---- MAML-Q and the Q-learning baselines
    algo = m.algorithm()
    state = algo.init(jax.random.PRNGKey(args.seed))
    step = jax.jit(algo.train_step)
    k_train = jax.random.PRNGKey(args.seed + 1)
    t0 = time.perf_counter()
    for it in range(args.iterations):
        state, metrics = step(state, jax.random.fold_in(k_train, it))
    jax.block_until_ready(state)
    train_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    stats = jax.jit(m.baseline_stats)(state, jax.random.PRNGKey(args.seed + 2))
    baseline_s = time.perf_counter() - t0
    config_json = {k: v for k, v in config.__dict__.items()}
    for name, s in stats.items():
        mean = s.mean()
        emit({"benchmark": "maze_q_learning", "method": name, **setup,
              "success": [float(x) for x in mean.success], "steps": [float(x) for x in mean.steps],
              "iterations": args.iterations if name.startswith("meta") else
              (mt_its if name.startswith("multi") else 0),
              "train_s": train_s if name.startswith("meta") else None, "config": config_json, **device_info()})
    emit({"benchmark": "maze_q_learning_baselines_s", "s": baseline_s})
    tasks = m.eval_tasks()  # the oracle: the BFS shortest path from start to goal of the same mazes
    d = jax.vmap(lambda w, s, g: bfs_distances(w, s)[g[0], g[1]])(tasks.walls, tasks.start, tasks.goal)
    emit({"benchmark": "maze_q_learning", "method": "BFS shortest path (oracle)", **setup,
          "steps_mean": float(jnp.mean(d)), "steps_min": int(jnp.min(d)), "steps_max": int(jnp.max(d))})

    if args.lr_sweep:  # the baselines with other fixed inner step sizes
        from jaxmeta.algorithms.maml import MetaParams

        k_zero, k_mt = jax.random.split(jax.random.PRNGKey(args.seed + 3))
        inits = {"Q-learning, zero init": m.zero_init(k_zero),
                 "multi-task Q, pretrained": jax.jit(m.pretrain_multitask)(k_mt)}
        for lr in (float(x) for x in args.lr_sweep.split(",")):
            fixed = MAMLQ(env, env.task_distribution(), dataclasses.replace(config, inner_lr=lr, meta_sgd=False))
            for name, params in inits.items():
                s = jax.jit(lambda p, k: fixed.adaptation_stats(MetaParams(p, None), fixed.eval_tasks(), k))(
                    params, jax.random.PRNGKey(args.seed + 2)).mean()
                emit({"benchmark": "maze_q_learning_lr_sweep", "method": name, "inner_lr": lr, **setup,
                      "success": [float(x) for x in s.success], "steps": [float(x) for x in s.steps]})

    # ---- RL^2 on the same mazes: trials of (K + 1) * E episodes
    curves = {name: s for name, s in stats.items()}
    if args.rl2_iterations:
        rl2_cfg = RL2Config(**{"episodes_per_trial": (K + 1) * E, "hidden_size": args.rl2_hidden_size,
                               "meta_batch_size": args.rl2_meta_batch_size, "num_eval_tasks": args.num_eval_tasks,
                               "num_minibatches": 2, "gamma": 0.99, "lr": 1e-3, **rl2_kw})
        bb = BlackBox(env, env.task_distribution(), rl2_cfg)
        rl2 = bb.algorithm()
        rstate = rl2.init(jax.random.PRNGKey(args.seed))
        rstep = jax.jit(rl2.train_step)
        t0 = time.perf_counter()
        for it in range(args.rl2_iterations):
            rstate, info = rstep(rstate, jax.random.fold_in(k_train, 10_000_000 + it))
            if (it + 1) % 25 == 0:
                print(f"RL^2 iteration {it + 1}: trial_reward {float(info['trial_reward']):.3f} "
                      f"entropy {float(info['entropy']):.3f} ({time.perf_counter() - t0:.0f} s)",
                      file=sys.stderr, flush=True)
        jax.block_until_ready(rstate)
        rl2_s = time.perf_counter() - t0
        s = jax.jit(lambda prm, k: rl2_stats(bb, prm, m.eval_tasks(), k, E))(rstate.params, jax.random.PRNGKey(7))
        curves["RL^2 (episode groups)"] = s
        mean = s.mean()
        emit({"benchmark": "maze_q_learning", "method": "RL^2", **setup, "success": [float(x) for x in mean.success],
              "steps": [float(x) for x in mean.steps], "iterations": args.rl2_iterations, "train_s": rl2_s,
              "config": {k: v for k, v in rl2_cfg.__dict__.items()}, **device_info()})

    if args.plot:
        from jaxmeta.driver.report import plot_adaptation, plot_maze

        out = Path(args.plot)
        out.mkdir(parents=True, exist_ok=True)
        for what in ("success", "steps"):
            plot_adaptation({n: AdaptationCurve(jnp.mean(getattr(s, what), 0), getattr(s, what))
                             for n, s in curves.items()}, out / f"maze_q_{what}.png",
                            ylabel={"success": "success rate", "steps": "steps to goal"}[what])
        # one held-out maze and the meta-learned Q's first episode after K updates
        tasks = m.eval_tasks()
        batch = jax.jit(lambda meta, k: m.sample_tasks(meta, tasks, k))(state.meta, jax.random.PRNGKey(3))
        obs, valid = np.asarray(batch.valid.obs[0, :, 0]), np.asarray(batch.valid.valid[0, :, 0])
        cells = np.argmax(obs[valid > 0], -1)
        traj = np.stack([cells // args.cols, cells % args.cols], 1)
        plot_maze(tasks.walls[0], tasks.start[0], tasks.goal[0], trajectory=traj, path=out / "maze_q_trajectory.png",
                  title=f"after {K} updates: {int(valid.sum())} steps")


if __name__ == "__main__":
    main()
