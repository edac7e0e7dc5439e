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
        envs=("navigation2d",),
        description="MAML-RL (Finn et al. 2017): policy-gradient inner loop, TRPO or Adam outer loop, Meta-SGD",
    )
)
