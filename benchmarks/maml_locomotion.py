"""MAML-TRPO on HalfCheetahVel (or --env ant_dir, ...): Brax (one XLA program) vs MuJoCo through the host adapter.

Speed (default): one JSON line per path (`--paths`: a Brax backend, or host MuJoCo in
this process or in N worker processes) with env steps per second of
meta-training, seconds per meta-iteration (median of --repeats after
jax.block_until_ready, compile excluded), compile seconds, peak memory; then one line
with every path's throughput relative to the fastest and the compile-time bound check.
Each path runs in its own process so peak memory is its own.

    python benchmarks/maml_locomotion.py [--preset cpu|gpu|published] [--backend generalized]
    python benchmarks/maml_locomotion.py --preset published --repeats 2 \
        --paths brax:generalized,brax:positional,brax:spring,mujoco:0,mujoco:1,mujoco:2
    python benchmarks/maml_locomotion.py --learn [--iterations 30]   # HalfCheetahDir learning check

Compile seconds: for Brax, `jit(train_step).lower().compile()`; for the host path, the
first meta-iteration's time minus the median (its jitted pieces compile lazily).
The compile bound (--compile-bound-s, 180 s by default for the CPU preset) is checked
for the Brax train step, the larger of the two; exceeding it exits with status 1.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402

from common import device_info, emit, maml_config_record, median_time, peak_memory_mb  # noqa: E402
from jaxmeta.algorithms.maml import MAML, MAMLConfig  # noqa: E402

PRESETS = {
    # small enough for a 2-core CPU; horizon 100 as in ProMP / pytorch-maml-rl's cheetah runs
    "cpu": dict(meta_batch_size=5, num_episodes=5, horizon=100, hidden_sizes=(64, 64)),
    # pytorch-maml-rl's halfcheetah-vel.yaml sizes for accelerators
    "gpu": dict(meta_batch_size=40, num_episodes=20, horizon=200, hidden_sizes=(64, 64)),
}
PRESETS["published"] = PRESETS["gpu"]  # the same sizes, measured on any machine


ENVS = {"halfcheetah_vel": "HalfCheetahVel", "halfcheetah_dir": "HalfCheetahDir", "ant_dir": "AntDir",
        "ant_goal": "AntGoal"}


def _build(args, env_cls_name=None):
    from jaxmeta.envs import locomotion

    p = PRESETS[args.preset]
    env = getattr(locomotion, env_cls_name or ENVS[args.env])(horizon=args.horizon or p["horizon"], backend=args.backend,
                                            num_workers=args.workers)
    config = MAMLConfig(
        hidden_sizes=p["hidden_sizes"], meta_batch_size=args.meta_batch_size or p["meta_batch_size"],
        num_episodes=args.num_episodes or p["num_episodes"], num_inner_steps=1, outer="trpo",
        num_eval_tasks=args.meta_batch_size or p["meta_batch_size"],
    )
    return env, config, MAML(env, env.task_distribution(), config)


def run_one(args) -> dict:
    env, config, m = _build(args)
    state = m.init(jax.random.PRNGKey(0))
    key = jax.random.PRNGKey(1)
    env_steps = config.meta_batch_size * config.num_episodes * env.horizon * (config.num_inner_steps + 1)
    i = [0]
    collector = None
    if args.simulator == "brax":
        t0 = time.perf_counter()
        step = jax.jit(m.algorithm().train_step).lower(state, key).compile()
        compile_s = time.perf_counter() - t0
        first_s = None
    else:
        from jaxmeta.host import make_collector

        collector = make_collector(env, "mujoco", config.envs_per_batch)
        host = MAML(env, env.task_distribution(), config, collector=collector).algorithm()
        update = jax.jit(host.update)
        step = lambda state, key: update(state, host.sample(state, key))  # as the driver runs a host learner
        t0 = time.perf_counter()
        state, _ = step(state, key)
        jax.block_until_ready(state)
        first_s = time.perf_counter() - t0

    def one():
        nonlocal state
        i[0] += 1
        state, met = step(state, jax.random.fold_in(key, i[0]))
        return state

    sec, times = median_time(one, args.repeats)  # Brax compiled ahead; the host path's first iteration ran
    if first_s is not None:
        compile_s = max(first_s - sec, 0.0)
    if collector is not None:
        collector.close()
    return {
        "benchmark": "maml_locomotion",
        "simulator": args.simulator,
        "env": args.env,
        "path": _path_name(args.simulator, args.backend, args.workers),
        "backend": args.backend if args.simulator == "brax" else "mujoco-native",
        "workers": args.workers if args.simulator == "mujoco" else None,
        "preset": args.preset,
        "config": maml_config_record(config, env.horizon),
        "s_per_meta_iteration": sec,
        "s_per_meta_iteration_all": times,
        "env_steps_per_meta_iteration": env_steps,
        "env_steps_per_s": env_steps / sec,
        "compile_s": compile_s,
        **peak_memory_mb(),
        **device_info(),
    }


def _path_name(simulator, backend, workers) -> str:
    return f"brax:{backend}" if simulator == "brax" else f"mujoco:{workers}"


def learn(args) -> None:
    """MAML-TRPO on Brax HalfCheetahDir: held-out pre/post-adaptation returns over training."""
    env, config, m = _build(args, "HalfCheetahDir")
    state = m.init(jax.random.PRNGKey(args.seed))
    step = jax.jit(m.algorithm().train_step)
    evaluate = jax.jit(m.evaluate)
    t0 = time.perf_counter()
    for it in range(args.iterations + 1):
        if it % args.eval_every == 0 or it == args.iterations:
            pre, post = (float(x) for x in evaluate(state, jax.random.PRNGKey(10_000)).returns)
            emit({"benchmark": "maml_halfcheetah_dir_learning", "iteration": it, "pre_return": pre,
                  "post_return": post, "post_minus_pre": post - pre, "wall_s": time.perf_counter() - t0,
                  "backend": args.backend, "meta_batch_size": config.meta_batch_size,
                  "num_episodes": config.num_episodes, "horizon": env.horizon})
        if it < args.iterations:
            state, met = step(state, jax.random.fold_in(jax.random.PRNGKey(args.seed + 1), it))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    p.add_argument("--env", choices=sorted(ENVS), default="halfcheetah_vel", help="speed: the task measured")
    p.add_argument("--backend", default="generalized")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--horizon", type=int, default=None)
    p.add_argument("--meta-batch-size", type=int, default=None)
    p.add_argument("--num-episodes", type=int, default=None)
    p.add_argument("--paths", default=None,
                   help="comma-separated brax:BACKEND and mujoco:WORKERS (0: in this process); "
                        "default: brax:<--backend>,mujoco:0")
    p.add_argument("--simulator", choices=["brax", "mujoco"], default=None, help="run one (internal)")
    p.add_argument("--workers", type=int, default=0, help="MuJoCo worker processes of the run (internal)")
    p.add_argument("--compile-bound-s", type=float, default=None)
    p.add_argument("--learn", action="store_true")
    p.add_argument("--iterations", type=int, default=30)
    p.add_argument("--eval-every", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.learn:
        return learn(args)
    if args.simulator:
        print(json.dumps(run_one(args)), flush=True)
        return
    results = {}
    base = [a for a in (argv if argv is not None else sys.argv[1:])]
    paths = (args.paths or f"brax:{args.backend},mujoco:0").split(",")
    for path in paths:
        sim, _, arg = path.partition(":")
        if sim not in ("brax", "mujoco") or not arg:
            p.error(f"--paths: {path!r} is not brax:BACKEND or mujoco:WORKERS")
        extra = ["--backend", arg] if sim == "brax" else ["--workers", arg]
        out = subprocess.run([sys.executable, os.path.abspath(__file__), *base, *extra, "--simulator", sim],
                             check=True, capture_output=True, text=True).stdout
        rec = json.loads(out.strip().splitlines()[-1])
        emit(rec)
        results[rec["path"]] = rec
    bound = args.compile_bound_s or (180.0 if args.preset == "cpu" else 600.0)
    brax = [r for r in results.values() if r["simulator"] == "brax"]
    ok = all(r["compile_s"] <= bound for r in brax)
    fastest = max(results, key=lambda k: results[k]["env_steps_per_s"])
    emit({
        "benchmark": "maml_locomotion_summary",
        "preset": args.preset,
        "env": args.env,
        "env_steps_per_s": {k: r["env_steps_per_s"] for k, r in results.items()},
        "relative_to_fastest": {k: r["env_steps_per_s"] / results[fastest]["env_steps_per_s"] for k, r in results.items()},
        "fastest_path": fastest,
        "brax_compile_s": {r["path"]: r["compile_s"] for r in brax},
        "compile_bound_s": bound,
        "compile_within_bound": ok,
    })
    if not ok:
        sys.exit(1)


if __name__ == "__main__":
    main()
