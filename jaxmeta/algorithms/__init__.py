"""One module per algorithm family, each a factory of pure functions."""
import jax

from jaxmeta.algorithms.base import Algorithm, vmap_algorithm
from jaxmeta.algorithms.black_box import (
    BlackBox, BlackBoxConfig, BlackBoxState, RL2Config, SNAILConfig, TrialBatch, rl2, snail,
)
from jaxmeta.algorithms.grbal import GrBAL, GrBALConfig, GrBALState, grbal
from jaxmeta.algorithms.maml import MAML, MAMLBatch, MAMLConfig, MAMLState, MetaParams, maml
from jaxmeta.algorithms.mbmpo import MBMPO, MBMPOBatch, MBMPOConfig, MBMPOState, mbmpo
from jaxmeta.algorithms.registry import REGISTRY, AlgorithmSpec, get, register
from jaxmeta.envs import DYNAMICS_ENVS
from jaxmeta.evaluation import baselines
from jaxmeta.types import AdaptationCurve

LOCOMOTION = ("halfcheetah_vel", "halfcheetah_dir", "ant_dir", "ant_goal")

register(
    AlgorithmSpec(
        name="maml",
        config_cls=MAMLConfig,
        build=lambda env, config, collector=None: maml(env, env.task_distribution(), config, collector=collector),
        default_env="navigation2d",
        envs=("navigation2d",) + LOCOMOTION,
        description="MAML-RL (Finn et al. 2017): VPG/LVC/DiCE inner loop; TRPO, Adam or ProMP outer loop; Meta-SGD",
    )
)


def black_box_final_table(env, config, algorithm, state, key, collector=None):
    """The agent's mean reward per trial on the held-out tasks beside the classic baselines.

    Returns:
      (header, rows): one row per method with the mean total reward per trial and the
      mean return of the first and the last episode of the trial.
    """
    k_agent, k_base = jax.random.split(key)
    tasks = env.task_distribution().sample_batch(
        jax.random.PRNGKey(config.eval_seed), config.num_eval_tasks
    )
    curves = {"agent": algorithm.evaluate(state, k_agent)}
    curves.update(baselines(env, tasks, k_base, config.episodes_per_trial, collector))
    header = ["method", "mean trial reward", "episode 1 return", f"episode {config.episodes_per_trial} return"]
    rows = [
        [name, float(c.returns.sum()), float(c.returns[0]), float(c.returns[-1])]
        for name, c in curves.items()
    ]
    return header, rows


for _name, _cls, _factory, _doc in (
    ("rl2", RL2Config, rl2, "RL^2 (Duan et al. 2016): GRU policy trained with PPO over trials of n episodes"),
    ("snail", SNAILConfig, snail, "SNAIL (Mishra et al. 2018): TC + causal attention blocks trained with PPO over trials"),
):
    register(
        AlgorithmSpec(
            name=_name,
            config_cls=_cls,
            build=lambda env, config, collector=None, f=_factory: f(env, env.task_distribution(), config,
                                                                     collector=collector),
            default_env="bandit",
            envs=("bandit", "tabular_mdp", "maze", "navigation2d") + LOCOMOTION,
            description=_doc,
            aliases={"arms": "num_arms", "episodes": "episodes_per_trial"},
            final_table=black_box_final_table,
        )
    )

# Model-based meta-RL (Clavera et al. 2018; Nagabandi, Clavera et al. 2019): the envs
# with a known `transition_reward(obs, action, next_obs, task)`.
register(
    AlgorithmSpec(
        name="mbmpo",
        config_cls=MBMPOConfig,
        build=lambda env, config, collector=None: mbmpo(env, env.task_distribution(), config, collector=collector),
        default_env="navigation2d",
        envs=("navigation2d",) + DYNAMICS_ENVS,
        description="MB-MPO (Clavera et al. 2018): MAML-TRPO policy on imagined rollouts of a dynamics ensemble",
    )
)
register(
    AlgorithmSpec(
        name="grbal",
        config_cls=GrBALConfig,
        build=lambda env, config, collector=None: grbal(env, env.task_distribution(), config, collector=collector),
        default_env="navigation2d_dynamics",
        envs=DYNAMICS_ENVS,
        description="GrBAL (Nagabandi, Clavera et al. 2019): MAML-adapted dynamics model acting through MPC",
    )
)

__all__ = [
    "AdaptationCurve", "Algorithm", "AlgorithmSpec", "BlackBox", "BlackBoxConfig", "BlackBoxState", "GrBAL",
    "GrBALConfig", "GrBALState", "MAML", "MAMLBatch", "MAMLConfig", "MAMLState", "MBMPO", "MBMPOBatch",
    "MBMPOConfig", "MBMPOState", "MetaParams", "REGISTRY", "RL2Config", "SNAILConfig", "TrialBatch", "get",
    "grbal", "maml", "mbmpo", "register", "rl2", "snail", "vmap_algorithm",
]
