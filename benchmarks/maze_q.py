"""Generated mazes and MAML-Q: maze generation, inner Q-learning and meta-training speed.

Prints one JSON line per measurement, each a median of `--repeats` timed runs after
`jax.block_until_ready`, compilation timed separately, with peak memory and the device:

- "maze_generation": 1,024 (`--num-mazes`) R x C mazes with start and goal, one jitted
  vmap (randomised Kruskal + BFS placement): mazes/s;
- "maze_q_inner": the inner loop alone over a batch of mazes (`--inner-mazes`): K rounds of
  collecting E episodes per maze with the current Q and a Q-learning update, then the
  adapted Q's episodes, no outer gradient: env steps/s;
- "maze_q_meta_train": one meta-iteration (collection, K Q-learning updates
  differentiated through, Adam step) on `--meta-batch-size` mazes: env steps/s.

    python benchmarks/maze_q.py [--repeats 5] [--q-network tabular] [--observation cell] ...
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402

from common import compiled, device_info, emit, median_time, peak_memory_mb  # noqa: E402
from jaxmeta.algorithms.maml_q import MAMLQ, MAMLQConfig  # noqa: E402
from jaxmeta.envs import GeneratedMaze  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--rows", type=int, default=7)
    p.add_argument("--cols", type=int, default=7)
    p.add_argument("--horizon", type=int, default=100)
    p.add_argument("--observation", default="cell")
    p.add_argument("--num-mazes", type=int, default=1024)
    p.add_argument("--inner-mazes", type=int, default=256)
    p.add_argument("--meta-batch-size", type=int, default=32)
    p.add_argument("--num-episodes", type=int, default=4)
    p.add_argument("--num-inner-steps", type=int, default=8)
    p.add_argument("--n-step", type=int, default=20)
    p.add_argument("--q-network", default="tabular")
    p.add_argument("--hidden-sizes", default="64")
    args = p.parse_args(argv)

    env = GeneratedMaze(rows=args.rows, cols=args.cols, horizon=args.horizon, observation=args.observation)
    config = MAMLQConfig(q_network=args.q_network, hidden_sizes=tuple(int(h) for h in args.hidden_sizes.split(",")),
                         meta_batch_size=args.meta_batch_size, num_episodes=args.num_episodes,
                         num_inner_steps=args.num_inner_steps, n_step=args.n_step, meta_sgd=True)
    m = MAMLQ(env, env.task_distribution(), config)
    common = {"rows": args.rows, "cols": args.cols, "horizon": args.horizon, "observation": args.observation,
              "q_network": args.q_network}
    key = jax.random.PRNGKey(0)

    # ---- maze generation
    gen, compile_s = compiled(lambda k: env.task_distribution().sample_batch(k, args.num_mazes), key)
    jax.block_until_ready(gen(key))
    keys = iter(list(jax.random.split(key, 1_000)))  # split up front: indexing a key array compiles once
    sec, times = median_time(lambda: gen(next(keys)), args.repeats)
    emit({"benchmark": "maze_generation", **common, "placement": env.placement, "num_mazes": args.num_mazes,
          "s_median": sec, "s_all": times, "mazes_per_s": args.num_mazes / sec, "compile_s": compile_s,
          **peak_memory_mb(), **device_info()})

    # ---- the inner loop alone: K rounds of collection + Q-learning update, then the adapted Q's episodes
    state = m.init(jax.random.PRNGKey(1))
    tasks = env.task_distribution().sample_batch(jax.random.PRNGKey(2), args.inner_mazes)
    inner, compile_s = compiled(lambda meta, k: m.sample_tasks(meta, tasks, k).valid.reward, state.meta, key)
    jax.block_until_ready(inner(state.meta, key))
    sec, times = median_time(lambda: inner(state.meta, next(keys)), args.repeats)
    steps = args.inner_mazes * args.num_episodes * args.horizon * (args.num_inner_steps + 1)
    emit({"benchmark": "maze_q_inner", **common, "mazes": args.inner_mazes, "num_episodes": args.num_episodes,
          "num_inner_steps": args.num_inner_steps, "env_steps_per_call": steps, "s_median": sec, "s_all": times,
          "env_steps_per_s": steps / sec, "compile_s": compile_s, **peak_memory_mb(), **device_info()})

    # ---- meta-training: one meta-iteration per call
    train_step = m.algorithm().train_step
    step, compile_s = compiled(train_step, state, key)
    state, _ = step(state, key)
    jax.block_until_ready(state)

    def one():
        nonlocal state
        state, metrics = step(state, next(keys))
        return state

    sec, times = median_time(one, args.repeats)
    steps = args.meta_batch_size * args.num_episodes * args.horizon * (args.num_inner_steps + 1)
    emit({"benchmark": "maze_q_meta_train", **common, "meta_batch_size": args.meta_batch_size,
          "num_episodes": args.num_episodes, "num_inner_steps": args.num_inner_steps, "n_step": args.n_step,
          "env_steps_per_meta_iteration": steps, "s_per_meta_iteration": sec, "s_per_meta_iteration_all": times,
          "env_steps_per_s": steps / sec, "compile_s": compile_s, **peak_memory_mb(), **device_info()})


if __name__ == "__main__":
    main()
