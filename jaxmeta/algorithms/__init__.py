"""One module per algorithm, each a factory of pure functions."""
from jaxmeta.algorithms.base import AdaptationCurve, Algorithm
from jaxmeta.algorithms.maml import MAML, MAMLConfig, MAMLState, maml
from jaxmeta.algorithms.registry import REGISTRY, AlgorithmSpec, get, register

register(
    AlgorithmSpec(
        name="maml",
        config_cls=MAMLConfig,
        build=lambda env, config: maml(env, env.task_distribution(), config),
        default_env="navigation2d",
        envs=("navigation2d", "halfcheetah_vel", "halfcheetah_dir", "ant_dir", "ant_goal"),
        description="MAML-RL (Finn et al. 2017): policy-gradient inner loop, TRPO or Adam outer loop, Meta-SGD",
    )
)

from jaxmeta.algorithms.promp import ProMP, ProMPConfig, ProMPState, promp  # noqa: E402

register(
    AlgorithmSpec(
        name="promp",
        config_cls=ProMPConfig,
        build=lambda env, config: promp(env, env.task_distribution(), config),
        default_env="navigation2d",
        envs=("navigation2d", "halfcheetah_vel", "halfcheetah_dir", "ant_dir", "ant_goal"),
        description="ProMP (Rothfuss et al. 2019): MAML with LVC inner steps, PPO-clipped outer loop, inner-KL penalty",
    )
)

HOST_ENVS = ("halfcheetah_vel", "halfcheetah_dir", "ant_dir", "ant_goal")


def _host_build(env, config):
    from jaxmeta.algorithms.maml_host import host_maml

    return host_maml(env, config, simulator="mujoco")


for _name, _cls in (("maml", MAMLConfig), ("promp", ProMPConfig)):
    register(
        AlgorithmSpec(
            name=f"{_name}-mujoco",
            config_cls=_cls,
            build=_host_build,
            default_env="halfcheetah_vel",
            envs=HOST_ENVS,
            description=f"{_name} with native MuJoCo (gymnasium) stepped outside jit through the host adapter",
            jittable=False,
        )
    )

from jaxmeta.algorithms.black_box import (  # noqa: E402
    BlackBox, BlackBoxConfig, BlackBoxState, RL2Config, SNAILConfig, rl2, snail,
)


def black_box_final_table(env, config, algorithm, state, key):
    """The agent's mean reward per trial on the held-out tasks beside the classic baselines.

    Returns:
      (header, rows): one row per method with the mean total reward per trial and the
      mean return of the first and the last episode of the trial.
    """
    import jax

    from jaxmeta.evaluation import baselines

    k_agent, k_base = jax.random.split(key)
    tasks = env.task_distribution().sample_batch(
        jax.random.PRNGKey(config.eval_seed), config.num_eval_tasks
    )
    curves = {"agent": algorithm.evaluate(state, k_agent)}
    curves.update(baselines(env, tasks, k_base, config.episodes_per_trial))
    header = ["method", "mean trial reward", "episode 1 return", f"episode {config.episodes_per_trial} return"]
    rows = [
        [name, float(c.returns.sum()), float(c.returns[0]), float(c.returns[-1])]
        for name, c in curves.items()
    ]
    return header, rows


def _register_black_box():
    black_box_envs = ("bandit", "tabular_mdp", "maze", "navigation2d",
                      "halfcheetah_vel", "halfcheetah_dir", "ant_dir", "ant_goal")
    aliases = {"arms": "num_arms", "episodes": "episodes_per_trial"}
    register(
        AlgorithmSpec(
            name="rl2",
            config_cls=RL2Config,
            build=lambda env, config: rl2(env, env.task_distribution(), config),
            default_env="bandit",
            envs=black_box_envs,
            description="RL^2 (Duan et al. 2016): GRU policy trained with PPO over trials of n episodes",
            aliases=dict(aliases),
            final_table=black_box_final_table,
        )
    )
    register(
        AlgorithmSpec(
            name="snail",
            config_cls=SNAILConfig,
            build=lambda env, config: snail(env, env.task_distribution(), config),
            default_env="bandit",
            envs=black_box_envs,
            description="SNAIL (Mishra et al. 2018): TC + causal attention blocks trained with PPO over trials",
            aliases=dict(aliases),
            final_table=black_box_final_table,
        )
    )


_register_black_box()
