"""One module per algorithm family, each a factory of pure functions."""
import jax
import numpy as np

from jaxmeta.algorithms.base import Algorithm, vmap_algorithm
from jaxmeta.algorithms.black_box import (
    BlackBox, BlackBoxConfig, BlackBoxState, RL2Config, SNAILConfig, TrialBatch, rl2, snail,
)
from jaxmeta.algorithms.grbal import GrBAL, GrBALConfig, GrBALState, grbal
from jaxmeta.algorithms.maml import MAML, MAMLBatch, MAMLConfig, MAMLState, MetaParams, maml
from jaxmeta.algorithms.maml_q import MAMLQ, MAMLQBatch, MAMLQConfig, MAMLQState, maml_q
from jaxmeta.algorithms.maml_q import final_table as maml_q_final_table
from jaxmeta.algorithms.maml_regression import (
    MAMLRegression, MAMLRegressionConfig, MAMLRegressionState, RegressionBatch, maml_regression,
)
from jaxmeta.algorithms.maml_regression import final_table as maml_regression_final_table
from jaxmeta.algorithms.mbmpo import MBMPO, MBMPOBatch, MBMPOConfig, MBMPOState, mbmpo
from jaxmeta.algorithms.registry import REGISTRY, AlgorithmSpec, get, register
from jaxmeta.envs import DYNAMICS_ENVS, LOCOMOTION_ENVS as LOCOMOTION, METAWORLD_ENVS
from jaxmeta.evaluation import baselines
from jaxmeta.types import AdaptationCurve


def success_final_table(env, config, algorithm, state, key, collector=None, initial_state=None):
    """Meta-World's meta-test protocol (Yu et al. 2019) on the held-out (test) tasks.

    On each test task the learner adapts its own way -- MAML: K inner steps, each on
    fresh episodes; RL^2 / SNAIL: its memory over the episodes of a trial -- and the
    success rate (an episode succeeds if any of its steps does) is measured after
    0, 1, ..., K adaptation steps, for the untrained policy (`initial_state`) and the
    trained one, per test environment and as the mean over the test environments
    (Meta-World's mean).

    Returns:
      (header, rows, curves): one row per policy and test environment (and "mean" when
      there are several) with the number of test tasks evaluated, the success rate after
      each adaptation step and the mean return before and after adaptation; curves
      {"untrained", "trained"} for the plot.
    """
    k_trained, k_untrained = jax.random.split(key)
    curves = {}
    if initial_state is not None:
        curves["untrained"] = algorithm.evaluate(initial_state, k_untrained)
    curves["trained"] = algorithm.evaluate(state, k_trained)
    tasks = env.task_distribution().held_out_batch(jax.random.PRNGKey(config.eval_seed), config.num_eval_tasks)
    names = np.asarray(env.task_names(tasks))
    order = [n for n in env.env_names[1] if n in set(names.tolist())]
    K1 = int(curves["trained"].success.shape[0])
    header = ["policy", "test task", "tasks"] + [f"success after {k}" for k in range(K1)]
    header += ["return after 0", f"return after {K1 - 1}"]
    rows = []
    for label, curve in curves.items():
        success, returns = np.asarray(curve.per_task_success), np.asarray(curve.per_task)  # [N, K+1]
        per_env = [(success[names == n].mean(axis=0), returns[names == n].mean(axis=0)) for n in order]
        if len(order) > 1:
            per_env_rows = list(zip(order, [int(np.sum(names == n)) for n in order], per_env))
            per_env_rows.append(("mean", len(names), tuple(np.mean([p[i] for p in per_env], axis=0) for i in (0, 1))))
        else:
            per_env_rows = [(order[0], len(names), per_env[0])]
        for name, count, (s, r) in per_env_rows:
            rows.append([label, name, count, *(float(x) for x in s), float(r[0]), float(r[-1])])
    return header, rows, curves


METAWORLD_TABLES = {name: success_final_table for name in METAWORLD_ENVS}


def _on_own_tasks(factory):
    """A spec's `build`: `factory(env, tasks, config, collector=...)` on the env's own task distribution."""
    return lambda env, config, collector=None: factory(env, env.task_distribution(), config, collector=collector)

register(
    AlgorithmSpec(
        name="maml",
        config_cls=MAMLConfig,
        build=_on_own_tasks(maml),
        default_env="navigation2d",
        envs=("navigation2d",) + LOCOMOTION + METAWORLD_ENVS,
        description="MAML-RL (Finn et al. 2017): VPG/LVC/DiCE inner loop; TRPO, Adam or ProMP outer loop; Meta-SGD",
        env_final_tables=METAWORLD_TABLES,
        cpu_devices=lambda config: _largest_divisor(config.meta_batch_size, 64),
        cpu_seed_layout="map",
        # native MuJoCo in 2 workers: 6.9x Brax generalized on the cheetah, 2 cores
        cpu_simulators={name: "mujoco" for name in LOCOMOTION},
    )
)


def _largest_divisor(n: int, at_most: int) -> int:
    return max(d for d in range(1, min(n, at_most) + 1) if n % d == 0)


register(
    AlgorithmSpec(
        name="maml_q",
        config_cls=MAMLQConfig,
        build=_on_own_tasks(maml_q),
        default_env="maze_gen",
        envs=("maze_gen", "maze"),
        description="MAML over a Q-learning inner loop (Finn et al. 2017 with Watkins' Q-learning): meta-learned "
                    "Q-network initialisation, Meta-SGD; return (policy gradient) or TD outer objective",
        final_table=maml_q_final_table,
    )
)


register(
    AlgorithmSpec(
        name="maml_regression",
        config_cls=MAMLRegressionConfig,
        build=_on_own_tasks(maml_regression),
        default_env="sinusoid",
        envs=("sinusoid",),
        description="supervised few-shot MAML (Finn et al. 2017, sec. 5.1): sinusoid regression, MLP 40 x 40, "
                    "K shots; Meta-SGD; beside a model pretrained on all tasks",
        final_table=maml_regression_final_table,
        score="mse",
    )
)


def black_box_final_table(env, config, algorithm, state, key, collector=None, initial_state=None):
    """The agent's mean reward per trial on the held-out tasks beside the classic baselines.

    Returns:
      (header, rows, curves): one row per method with the mean total reward per trial and
      the mean return of the first and the last episode of the trial; the curves (mean
      return of episode k = 1..n) by method.
    """
    del initial_state  # the baselines are the reference here
    k_agent, k_base = jax.random.split(key)
    tasks = env.task_distribution().held_out_batch(
        jax.random.PRNGKey(config.eval_seed), config.num_eval_tasks
    )
    curves = {"agent": algorithm.evaluate(state, k_agent)}
    curves.update(baselines(env, tasks, k_base, config.episodes_per_trial, collector))
    header = ["method", "mean trial reward", "episode 1 return", f"episode {config.episodes_per_trial} return"]
    rows = [
        [name, float(c.returns.sum()), float(c.returns[0]), float(c.returns[-1])]
        for name, c in curves.items()
    ]
    return header, rows, curves


# (seed layouts on a CPU as measured in docs/benchmarks.md, "CPU layout")
for _name, _cls, _factory, _doc, _layout in (
    ("rl2", RL2Config, rl2, "RL^2 (Duan et al. 2016): GRU policy trained with PPO over trials of n episodes", "vmap"),
    ("snail", SNAILConfig, snail, "SNAIL (Mishra et al. 2018): TC + causal attention blocks trained with PPO over trials",
     "map"),
):
    register(
        AlgorithmSpec(
            name=_name,
            config_cls=_cls,
            build=_on_own_tasks(_factory),
            default_env="bandit",
            envs=("bandit", "tabular_mdp", "maze", "maze_gen", "navigation2d") + LOCOMOTION + METAWORLD_ENVS,
            description=_doc,
            aliases={"arms": "num_arms", "episodes": "episodes_per_trial"},
            final_table=black_box_final_table,
            env_final_tables=METAWORLD_TABLES,
            cpu_seed_layout=_layout,
        )
    )

# Model-based meta-RL (Clavera et al. 2018; Nagabandi, Clavera et al. 2019): the envs
# with a known `transition_reward(obs, action, next_obs, task)`.
register(
    AlgorithmSpec(
        name="mbmpo",
        config_cls=MBMPOConfig,
        build=_on_own_tasks(mbmpo),
        default_env="navigation2d",
        envs=("navigation2d",) + DYNAMICS_ENVS,
        description="MB-MPO (Clavera et al. 2018): MAML-TRPO policy on imagined rollouts of a dynamics ensemble",
    )
)
register(
    AlgorithmSpec(
        name="grbal",
        config_cls=GrBALConfig,
        build=_on_own_tasks(grbal),
        default_env="navigation2d_dynamics",
        envs=DYNAMICS_ENVS,
        description="GrBAL (Nagabandi, Clavera et al. 2019): MAML-adapted dynamics model acting through MPC",
    )
)

__all__ = [
    "AdaptationCurve", "Algorithm", "AlgorithmSpec", "BlackBox", "BlackBoxConfig", "BlackBoxState", "GrBAL",
    "GrBALConfig", "GrBALState", "MAML", "MAMLBatch", "MAMLConfig", "MAMLQ", "MAMLQBatch", "MAMLQConfig", "MAMLQState",
    "MAMLRegression", "MAMLRegressionConfig", "MAMLRegressionState", "MAMLState", "MBMPO", "MBMPOBatch", "MBMPOConfig",
    "MBMPOState", "MetaParams", "REGISTRY", "RL2Config", "RegressionBatch", "SNAILConfig", "TrialBatch",
    "black_box_final_table", "get", "grbal", "maml", "maml_q", "maml_regression", "mbmpo", "register", "rl2", "snail",
    "success_final_table", "vmap_algorithm",
]
