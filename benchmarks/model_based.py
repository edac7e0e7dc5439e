"""Model-based meta-RL: sample efficiency of MB-MPO against MAML-TRPO, GrBAL's online
adaptation against its baselines, and planning throughput.

Every measurement is one JSON line.

    python benchmarks/model_based.py --part mbmpo     # real steps to a post-adaptation return
    python benchmarks/model_based.py --part grbal     # held-out return: adapt > no inner step > no meta-learning
    python benchmarks/model_based.py --part planning  # candidate model steps/s, seconds per control step

`--part mbmpo`: MB-MPO ("distribution" form: the tasks are (ensemble member,
navigation goal)) and MAML-TRPO model-free train on 2D navigation until the mean real
return on held-out goals *after adaptation* reaches the highest of `--thresholds`.
Each line reports the real environment steps used for training so far (MB-MPO: the
adapted policies' episodes that fill its replay buffer; MAML: every inner and outer
episode); the summary gives the steps at which each threshold was first reached.
Evaluation episodes are not counted for either. `--methods mbmpo,baseline,maml` adds
the paper's ablation "MB-MPO without meta-learning" (TRPO on the ensemble mean, no
inner step).

`--part grbal`: GrBAL (meta-trained model) and the same algorithm with
`meta_learning=False` (model fit by MSE) train for `--grbal-iterations`; then, on the
same held-out tasks and keys, MPC with online adaptation, the same model without the
inner step, and MPC with the non-meta-learned model. `--grbal-env
halfcheetah_dynamics --backend spring` runs it on crippled-joint HalfCheetah (Brax).

`--part planning`: random shooting and CEM through a learned model, and one GrBAL
control step (inner step + plan) for one environment; compile timed separately,
medians of `--repeats`.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from common import device_info, emit, median_time, peak_memory_mb  # noqa: E402
from jaxmeta import envs  # noqa: E402
from jaxmeta.algorithms.grbal import GrBAL, GrBALConfig, MPCParams  # noqa: E402
from jaxmeta.algorithms.maml import MAML, MAMLConfig  # noqa: E402
from jaxmeta.algorithms.mbmpo import MBMPO, MBMPOConfig, without_meta_learning  # noqa: E402
from jaxmeta.envs.base import TaskDistribution  # noqa: E402
from jaxmeta.models import cem, member, random_shooting  # noqa: E402


def _steps_of(batch) -> int:
    """Real env steps in a MAML batch: every inner and outer episode (valid steps)."""
    return int(jnp.sum(batch.train.traj.valid) + jnp.sum(batch.valid.traj.valid))


# --------------------------------------------------------------------------- MB-MPO vs MAML


def _first_crossings(curve, thresholds):
    """{threshold: real steps at the first evaluation whose post-adaptation return reached it (None: never)}."""
    return {str(t): next((steps for steps, post in curve if post >= t), None) for t in thresholds}


def run_maml(env, tasks, args):
    config = MAMLConfig(num_eval_tasks=args.eval_tasks, num_episodes=args.maml_episodes)
    m = MAML(env, tasks, config)
    state = m.init(jax.random.PRNGKey(args.seed))
    sample, update, evaluate = jax.jit(m.sample), jax.jit(m.update), jax.jit(m.evaluate)
    steps, t0, history = 0, time.perf_counter(), []
    for it in range(1, args.maml_iterations + 1):
        batch = sample(state, jax.random.fold_in(jax.random.PRNGKey(args.seed + 1), it))
        steps += _steps_of(batch)
        state, _ = update(state, batch)
        if it % args.maml_eval_every == 0 or it == args.maml_iterations:
            curve = evaluate(state, jax.random.PRNGKey(10_000 + it))
            post = float(curve.returns[-1])
            emit({"benchmark": "model_based", "part": "mbmpo", "env": args.mbmpo_env, "method": "maml_trpo", "iteration": it,
                  "real_steps": steps, "post_return": post, "pre_return": float(curve.returns[0]),
                  "wall_s": time.perf_counter() - t0})
            history.append((steps, post))
            if post >= max(args.thresholds):
                break
    return history


def run_mbmpo(env, task_form, args, baseline: bool = False):
    config = MBMPOConfig(
        task_form=task_form, ensemble_size=args.ensemble_size, model_hidden_sizes=args.model_hidden_sizes,
        policy_steps=args.policy_steps, num_episodes=args.imagined_episodes, monitor_episodes=0,
        num_eval_tasks=args.eval_tasks, buffer_episodes=args.buffer_episodes, model_max_epochs=args.model_epochs,
    )
    if baseline:
        config = without_meta_learning(config)
    m = MBMPO(env, env.task_distribution(), config)
    algo = m.algorithm()
    state = algo.init(jax.random.PRNGKey(args.seed))
    t0 = time.perf_counter()
    step = jax.jit(algo.train_step).lower(state, jax.random.PRNGKey(0)).compile()
    evaluate = jax.jit(algo.evaluate)
    compile_s = time.perf_counter() - t0
    method = "mbmpo_no_meta_learning" if baseline else "mbmpo"
    times, history = [], []
    for it in range(1, args.mbmpo_iterations + 1):
        t1 = time.perf_counter()
        state, met = step(state, jax.random.fold_in(jax.random.PRNGKey(args.seed + 1), it))
        jax.block_until_ready(state)
        times.append(time.perf_counter() - t1)
        curve = evaluate(state, jax.random.PRNGKey(10_000 + it))
        post = float(curve.returns[-1])
        emit({"benchmark": "model_based", "part": "mbmpo", "env": args.mbmpo_env, "method": method, "iteration": it,
              "real_steps": int(met["real_steps"]), "post_return": post, "pre_return": float(curve.returns[0]),
              "model_val_loss": float(met["model_val_loss"]), "imagined_post_return": float(met["imagined_post_return"]),
              "s_per_iteration": times[-1], "compile_s": compile_s})
        history.append((int(met["real_steps"]), post))
        if post >= max(args.thresholds):
            break
    return history, times


def _mbmpo_problem(args):
    """(env, MB-MPO's task form, MAML-TRPO's task distribution) of `--mbmpo-env`.

    navigation2d: the task-distribution form (tasks are goals). halfcheetah_dynamics /
    ant_dynamics: the paper's own setting, one locomotion MDP (the nominal, unperturbed
    system, running forward) whose MB-MPO tasks are the ensemble members; MAML-TRPO
    model-free meta-trains on the same single MDP (every task is the nominal one), so
    both are judged by the same real return after one inner step.
    """
    if args.mbmpo_env == "navigation2d":
        env = envs.Navigation2D()
        return env, "distribution", env.task_distribution()
    kw = {"backend": args.backend}
    if args.mbmpo_horizon:
        kw["horizon"] = args.mbmpo_horizon
    env = envs.make(args.mbmpo_env, **kw)
    nominal = env.nominal_task()
    return env, "ensemble", TaskDistribution(lambda key: nominal)


def part_mbmpo(args):
    env, form, tasks = _mbmpo_problem(args)
    mb, times = run_mbmpo(env, form, args) if "mbmpo" in args.methods else ([], [])
    base = run_mbmpo(env, form, args, baseline=True)[0] if "baseline" in args.methods else None
    maml = run_maml(env, tasks, args) if "maml" in args.methods else []
    mb_x, maml_x = _first_crossings(mb, args.thresholds), _first_crossings(maml, args.thresholds)
    emit({
        "benchmark": "model_based", "part": "mbmpo_summary", "env": args.mbmpo_env, "task_form": form,
        "mbmpo_real_steps_to": mb_x, "maml_trpo_real_steps_to": maml_x,
        "mbmpo_no_meta_learning_real_steps_to": _first_crossings(base, args.thresholds) if base else None,
        "ratio": {t: (maml_x[t] / mb_x[t]) if (mb_x[t] and maml_x[t]) else None for t in mb_x},
        "mbmpo_best_post_return": max((p for _, p in mb), default=None),
        "maml_best_post_return": max((p for _, p in maml), default=None),
        "mbmpo_no_meta_learning_best_post_return": max((p for _, p in base), default=None) if base else None,
        "mbmpo_s_per_iteration_median": sorted(times)[len(times) // 2] if times else None,
        "config": {"ensemble_size": args.ensemble_size, "model_hidden_sizes": args.model_hidden_sizes,
                   "policy_steps": args.policy_steps, "imagined_episodes": args.imagined_episodes},
        **peak_memory_mb(), **device_info(),
    })


# --------------------------------------------------------------------------- GrBAL


def _grbal_config(args, meta: bool) -> GrBALConfig:
    return GrBALConfig(
        model_hidden_sizes=args.grbal_hidden_sizes, meta_learning=meta, meta_batch_size=args.grbal_tasks,
        episodes_per_task=1, num_candidates=args.candidates, plan_horizon=args.plan_horizon,
        num_eval_tasks=args.eval_tasks, buffer_episodes=args.buffer_episodes, model_max_epochs=args.model_epochs,
        planner=args.planner, past_steps=args.past_steps, future_steps=args.past_steps,
    )


def _grbal_env(args):
    kw = {"backend": args.backend} if args.grbal_env != "navigation2d_dynamics" else {}
    if args.grbal_horizon:
        kw["horizon"] = args.grbal_horizon
    return envs.make(args.grbal_env, **kw)


def part_grbal(args):
    env = _grbal_env(args)
    curves, states = {}, {}
    for meta in (True, False):
        g = GrBAL(env, env.task_distribution(), _grbal_config(args, meta))
        algo = g.algorithm()
        state = algo.init(jax.random.PRNGKey(args.seed))
        t0 = time.perf_counter()
        step = jax.jit(algo.train_step).lower(state, jax.random.PRNGKey(0)).compile()
        compile_s = time.perf_counter() - t0
        times = []
        for it in range(1, args.grbal_iterations + 1):
            t1 = time.perf_counter()
            state, met = step(state, jax.random.fold_in(jax.random.PRNGKey(args.seed + 1), it))
            jax.block_until_ready(state)
            times.append(time.perf_counter() - t1)
            emit({"benchmark": "model_based", "part": "grbal", "env": args.grbal_env, "meta_learning": meta,
                  "iteration": it, **{k: float(v) for k, v in met.items()}, "s_per_iteration": times[-1],
                  "compile_s": compile_s})
        t1 = time.perf_counter()
        curves[meta] = jax.block_until_ready(jax.jit(algo.evaluate)(state, jax.random.PRNGKey(777)))
        states[meta] = state
        # each model's held-out pair as soon as it is known (the summary needs both models)
        emit({"benchmark": "model_based", "part": "grbal_eval", "env": args.grbal_env, "meta_learning": meta,
              "held_out_tasks": args.eval_tasks, "no_inner_step_return": float(curves[meta].returns[0]),
              "online_step_return": float(curves[meta].returns[1]),
              "evaluate_s_with_compile": time.perf_counter() - t1})
    emit({
        "benchmark": "model_based", "part": "grbal_summary", "env": args.grbal_env,
        "held_out_tasks": args.eval_tasks, "iterations": args.grbal_iterations,
        "real_steps": int(states[True].real_steps),
        "grbal_adapted_return": float(curves[True].returns[1]),
        "grbal_model_no_inner_step_return": float(curves[True].returns[0]),
        "mse_model_mpc_return": float(curves[False].returns[0]),
        "mse_model_online_finetuned_return": float(curves[False].returns[1]),
        "order_holds": bool(curves[True].returns[1] > curves[True].returns[0] > curves[False].returns[0]),
        "config": {k: v for k, v in dataclasses.asdict(_grbal_config(args, True)).items() if k in (
            "model_hidden_sizes", "past_steps", "future_steps", "inner_lr", "planner", "num_candidates",
            "plan_horizon", "meta_batch_size")},
        **peak_memory_mb(), **device_info(),
    })


# --------------------------------------------------------------------------- planning


def part_planning(args):
    env = _grbal_env(args)
    g = GrBAL(env, env.task_distribution(), _grbal_config(args, True))
    state = g.init(jax.random.PRNGKey(0))
    p, norm = member(state.model.params, 0), state.model.normalizer
    D, A = env.observation_space.shape[0], env.action_space.shape[0]
    obs = jnp.zeros((D,))
    dynamics = lambda o, a: g.model.predict(p, norm, o, a)
    reward = lambda o, a, o2: env.transition_reward(o, a, o2, None)
    kw = dict(num_candidates=args.candidates, horizon=args.plan_horizon, low=env.action_space.low,
              high=env.action_space.high, action_dim=A)
    for name, fn, extra, evals in (
        ("random_shooting", random_shooting, {}, 1),
        ("cem", cem, {"num_iterations": 5, "num_elites": max(1, args.candidates // 10)}, 5),
    ):
        plan = jax.jit(lambda key: fn(key, obs, dynamics, reward, **kw, **extra).action)
        t0 = time.perf_counter()
        jax.block_until_ready(plan(jax.random.PRNGKey(0)))
        compile_s = time.perf_counter() - t0
        sec, _ = median_time(lambda: plan(jax.random.PRNGKey(1)), args.repeats)
        model_steps = args.candidates * args.plan_horizon * evals
        emit({"benchmark": "model_based", "part": "planning", "planner": name, "env": args.grbal_env,
              "candidates": args.candidates, "horizon": args.plan_horizon, "model_hidden_sizes": args.grbal_hidden_sizes,
              "s_per_plan": sec, "candidate_model_steps_per_s": model_steps / sec, "compile_s": compile_s,
              **peak_memory_mb(), **device_info()})
    # one GrBAL control step (inner step on M transitions + random shooting) for one env
    carry = g.initial_carry(1, obs.dtype)
    carry = carry._replace(count=jnp.full((1,), args.past_steps, jnp.int32))
    x = jnp.zeros((1, D + A + 2))
    params = MPCParams(state.model, jnp.asarray(False))
    for adapt in (False, True):
        control = jax.jit(lambda key: g.control(params, carry, x, key, adapt)[1])
        t0 = time.perf_counter()
        jax.block_until_ready(control(jax.random.PRNGKey(0)))
        compile_s = time.perf_counter() - t0
        sec, _ = median_time(lambda: control(jax.random.PRNGKey(1)), args.repeats)
        emit({"benchmark": "model_based", "part": "control_step", "adapt": adapt, "env": args.grbal_env,
              "planner": args.planner, "candidates": args.candidates, "horizon": args.plan_horizon,
              "s_per_control_step": sec, "compile_s": compile_s, **device_info()})


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sizes = lambda s: tuple(int(x) for x in s.split(","))
    p.add_argument("--part", default="all", choices=("all", "mbmpo", "grbal", "planning"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--thresholds", type=lambda s: [float(x) for x in s.split(",")], default=[-20.0, -15.0, -12.0, -10.0],
                   help="post-adaptation real returns; training stops at the highest")
    p.add_argument("--mbmpo-env", default="navigation2d", choices=("navigation2d", "halfcheetah_dynamics", "ant_dynamics"))
    p.add_argument("--mbmpo-horizon", type=int, default=0, help="locomotion episode length (0: the env's default)")
    p.add_argument("--maml-episodes", type=int, default=20, help="MAML-TRPO episodes per task per step")
    p.add_argument("--eval-tasks", type=int, default=40)
    p.add_argument("--maml-iterations", type=int, default=150)
    p.add_argument("--maml-eval-every", type=int, default=5)
    p.add_argument("--mbmpo-iterations", type=int, default=20)
    p.add_argument("--methods", type=lambda s: s.split(","), default=["mbmpo", "maml"],
                   help="of mbmpo, baseline (MB-MPO without meta-learning), maml")
    p.add_argument("--ensemble-size", type=int, default=5)
    p.add_argument("--model-hidden-sizes", type=sizes, default=(64, 64))
    p.add_argument("--policy-steps", type=int, default=30)
    p.add_argument("--imagined-episodes", type=int, default=20)
    p.add_argument("--buffer-episodes", type=int, default=1000)
    p.add_argument("--model-epochs", type=int, default=50)
    p.add_argument("--grbal-env", default="navigation2d_dynamics")
    p.add_argument("--grbal-horizon", type=int, default=0, help="0: the env's default")
    p.add_argument("--backend", default="spring")
    p.add_argument("--grbal-iterations", type=int, default=10)
    p.add_argument("--grbal-tasks", type=int, default=20)
    p.add_argument("--grbal-hidden-sizes", type=sizes, default=(64, 64))
    p.add_argument("--past-steps", type=int, default=16)
    p.add_argument("--planner", default="random_shooting")
    p.add_argument("--candidates", type=int, default=1000)
    p.add_argument("--plan-horizon", type=int, default=10)
    p.add_argument("--repeats", type=int, default=7)
    args = p.parse_args(argv)
    if args.part in ("all", "planning"):
        part_planning(args)
    if args.part in ("all", "grbal"):
        part_grbal(args)
    if args.part in ("all", "mbmpo"):
        part_mbmpo(args)


if __name__ == "__main__":
    main()
