"""MB-MPO: a MAML meta-policy trained on imagined rollouts of a learned dynamics ensemble.

Clavera et al. 2018, "Model-Based Reinforcement Learning via Meta-Policy Optimization".
Each imagined task is (an ensemble member, an environment task). The meta-policy is
meta-trained with MAML-TRPO on imagined episodes so that one inner policy-gradient step
adapts it to any task; the adapted policies' real episodes refit the ensemble; repeat:

    sample(state, key):   imagine the meta-batch with the current model, adapt the
                          policy to every imagined task (one inner step), collect the
                          adapted policies' *real* episodes through the real env's
                          collector (jitted env or host simulator)
    update(state, batch): add the real episodes to the replay buffer, refit the
                          ensemble (normalised-delta MSE, per-member validation split,
                          early stopping), then `policy_steps` MAML train steps on
                          imagined meta-batches -- MAML's own `sample_tasks` and
                          `update` on `MAML(ModelEnv(...), ...)`, unchanged

Two forms, one setting (`task_form`):

- "ensemble" (the paper's MB-MPO): the real environment is one MDP (its
  `nominal_task()`, or the task drawn at `eval_seed`); the tasks are the K members,
  meta-batch tasks cycle over them (meta_batch_size is a multiple of K).
- "distribution" (the reference's form for a task distribution): each imagined task is
  (a member, a task of the env's distribution), the model is shared across tasks
  (dynamics shared, rewards differ: navigation goals), and the policy adapts to the
  task's reward from imagined episodes.

"MB-MPO without meta-learning" (the paper's ablation: a policy trained on the ensemble
mean, ME-TRPO-like) is the same algorithm with `inner_lr=0` (no adaptation: TRPO on
the imagined episodes) and `model_mean=True`.

Rewards come from the environment's known `transition_reward(obs, action, next_obs,
task)`. The state (policy, ensemble, normaliser, replay buffer, counters) is a pytree
of arrays, so checkpoints and resume work through the driver.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxmeta.algorithms.base import Algorithm
from jaxmeta.algorithms.maml import MAML, MAMLConfig, MAMLState
from jaxmeta.config import ConfigError, check_bool, check_choice, check_int
from jaxmeta.envs.base import MetaEnv, TaskDistribution, action_dim, obs_dim
from jaxmeta.models import (
    DynamicsConfig, DynamicsModel, EpisodeBuffer, ModelEnv, ModelState, ModelTask, buffer_add, buffer_init,
    check_planning_env, fit, fit_normalizer, initial_observations, transition_loss, transitions,
)
from jaxmeta.rollout import Collector, JaxCollector
from jaxmeta.types import AdaptationCurve, PRNGKey, Trajectory

TASK_FORMS = ("ensemble", "distribution")


@dataclass(frozen=True)
class MBMPOConfig(DynamicsConfig, MAMLConfig):
    """MB-MPO: MAML's fields (the policy, inner step, TRPO outer step), the dynamics
    model's (`model_*`, see `jaxmeta.models.DynamicsConfig`) and its own. Reference
    settings: 5 models of 2 x 512 ReLU, Adam 1e-3, 64 x 64 tanh policy, meta-batch 20,
    one inner step, TRPO step 0.01, 30-50 meta-steps per real-data iteration."""

    ensemble_size: int = 5
    policy_steps: int = 30  # MAML meta-steps on imagined meta-batches per real-data iteration
    real_episodes: int = 1  # real episodes of each adapted policy per iteration (training data)
    monitor_episodes: int = 1  # real episodes of the pre-update policy per task, reported, not trained on
    task_form: str = "ensemble"  # "ensemble" or "distribution"
    model_mean: bool = False  # imagine with the ensemble mean (the no-meta-learning baseline)
    imagined_horizon: int = 0  # 0: the environment's horizon

    def __post_init__(self):
        MAMLConfig.__post_init__(self)
        DynamicsConfig.__post_init__(self)
        check_int("ensemble_size", self.ensemble_size, 1, 1000)
        check_int("policy_steps", self.policy_steps, 1, 100_000)
        check_int("real_episodes", self.real_episodes, 1, 100_000)
        check_int("monitor_episodes", self.monitor_episodes, 0, 100_000)
        check_choice("task_form", self.task_form, TASK_FORMS)
        check_bool("model_mean", self.model_mean)
        check_int("imagined_horizon", self.imagined_horizon, 0, 100_000)
        if self.meta_batch_size % self.ensemble_size:
            raise ConfigError(f"meta_batch_size must be a multiple of ensemble_size = {self.ensemble_size} "
                              f"(tasks cycle over the members), got {self.meta_batch_size}", "meta_batch_size")

    @property
    def envs_per_batch(self) -> int:
        """Real environments one sampled batch steps at once."""
        return self.meta_batch_size * max(self.real_episodes, self.monitor_episodes)


class MBMPOState(NamedTuple):
    policy: MAMLState  # the meta-policy and its outer optimiser
    model: ModelState  # the ensemble ([K, ...] params) and its normaliser
    buffer: EpisodeBuffer  # every real episode trained on (up to the capacity)
    real_steps: jax.Array  # [] int32 real environment steps collected as training data
    monitor_steps: jax.Array  # [] int32 real steps of the pre-update policy (reported only)
    step: jax.Array  # [] int32 iterations done


class MBMPOBatch(NamedTuple):
    """What `sample` returns: real episodes and the key of the update's model fit and
    imagined meta-steps."""

    real: Trajectory  # [M, T, E, ...] the adapted policies' real episodes
    monitor: Trajectory | None  # [M, T, E', ...] the pre-update policy's (None without monitoring)
    key: PRNGKey


def _episodes_first(x):
    """[M, T, E, ...] -> [M*E, T, ...] (one row per episode)."""
    x = jnp.swapaxes(x, 1, 2)
    return x.reshape((x.shape[0] * x.shape[1],) + x.shape[2:])


def _mean_return(traj: Trajectory) -> jax.Array:
    return jnp.mean(jnp.sum(traj.reward, axis=1))


@dataclass(frozen=True)
class MBMPO:
    """The pure pieces of MB-MPO for one environment, task distribution and config.

    `collector` collects the real episodes (default: the env's jitted rollouts; a
    `jaxmeta.host.HostCollector` steps a host simulator); imagined episodes always run
    in XLA through the model env.
    """

    env: MetaEnv
    tasks: TaskDistribution
    config: MBMPOConfig
    collector: Collector | None = None
    model: DynamicsModel = dataclasses.field(init=False, repr=False, compare=False)
    learner: MAML = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self):
        check_planning_env(self.env, "MB-MPO")
        c = self.config
        if self.collector is None:
            object.__setattr__(self, "collector", JaxCollector(self.env))
        object.__setattr__(self, "model", DynamicsModel(obs_dim(self.env), action_dim(self.env), c.ensemble_size,
                                                        c.model_hidden_sizes, c.model_activation))
        # MAML on the real env: the same policy and parts as the imagined learners; its
        # policy acts in the real environment
        object.__setattr__(self, "learner", MAML(self.env, self.tasks, c, collector=self.collector))

    @property
    def policy(self):
        return self.learner.policy

    # ----------------------------------------------------------------- the model side
    def model_env(self, model: ModelState, buffer: EpisodeBuffer) -> ModelEnv:
        """The learned model with the env's reward, starting from real initial observations."""
        return ModelEnv(self.env, self.model, model, initial_observations(buffer), buffer.size,
                        self.config.imagined_horizon, self.config.model_mean)

    def policy_learner(self, model: ModelState, buffer: EpisodeBuffer) -> MAML:
        """MAML (this config's policy, inner step and outer update) on the model env."""
        menv = self.model_env(model, buffer)
        return MAML(menv, menv.task_distribution(self.tasks), self.config)

    def fit_model(self, model: ModelState, buffer: EpisodeBuffer, key: PRNGKey):
        """Refit the normaliser and the ensemble (warm start) on every stored transition."""
        obs, action, next_obs, mask = transitions(buffer)
        norm = fit_normalizer(obs, action, next_obs, mask)
        loss = transition_loss(self.model, norm, obs, action, next_obs)
        params, info = fit(key, model.params, loss, mask, **self.config.fit_settings())
        return ModelState(params, norm), info

    # ----------------------------------------------------------------- tasks
    def real_task(self):
        """The real MDP of the "ensemble" form: the env's nominal task, else the task at eval_seed."""
        nominal = getattr(self.env, "nominal_task", None)
        return nominal() if callable(nominal) else self.tasks.sample(jax.random.PRNGKey(self.config.eval_seed))

    def env_tasks(self, key: PRNGKey, num: int):
        """`num` real-environment tasks: the real MDP repeated, or draws from the distribution."""
        if self.config.task_form == "ensemble":
            return jax.tree.map(lambda x: jnp.broadcast_to(x, (num,) + jnp.shape(x)), self.real_task())
        return self.tasks.sample_batch(key, num)

    def imagined_tasks(self, env_tasks) -> ModelTask:
        """Task i imagined by member i mod K."""
        num = jax.tree.leaves(env_tasks)[0].shape[0]
        return ModelTask(jnp.arange(num, dtype=jnp.int32) % self.config.ensemble_size, env_tasks)

    # ----------------------------------------------------------------- Algorithm
    def init(self, key: PRNGKey) -> MBMPOState:
        k_pol, k_model = jax.random.split(key)
        policy = self.learner.init(k_pol)
        dtype = jax.tree.leaves(policy.meta.policy)[0].dtype
        buffer = buffer_init(self.config.buffer_episodes, self.env.horizon, obs_dim(self.env), action_dim(self.env),
                             dtype)
        zero = jnp.zeros((), jnp.int32)
        return MBMPOState(policy, self.model.init_state(k_model), buffer, zero, zero, zero)

    def adapted_policies(self, state: MBMPOState, env_tasks, key: PRNGKey):
        """The meta-policy adapted (first order, as for sampling) to each task on imagined episodes.

        Returns:
          (adapted policy params with a leading task axis, the imagined MAMLBatch).
        """
        maml = self.policy_learner(state.model, state.buffer)
        batch = maml.sample_tasks(state.policy.meta, self.imagined_tasks(env_tasks), key)
        adapt = lambda train: maml.adapt(state.policy.meta, train, first_order=True)
        return jax.vmap(adapt)(batch.train), batch

    def _adapted_policies(self, state, env_tasks, key):
        return self.adapted_policies(state, env_tasks, key)[0]

    def sample(self, state: MBMPOState, key: PRNGKey) -> MBMPOBatch:
        """Real episodes of the policies adapted on imagined data (and of the pre-update policy)."""
        c = self.config
        M = c.meta_batch_size
        k_tasks, k_imag, k_real, k_mon, k_update = jax.random.split(key, 5)
        env_tasks = self.env_tasks(k_tasks, M)
        adapted = self.collector.stage(self._adapted_policies)(state, env_tasks, k_imag)
        real = self.collector.episodes(self.policy.act, adapted, env_tasks, jax.random.split(k_real, M),
                                       c.real_episodes, params_axis=0)
        monitor = None
        if c.monitor_episodes:
            monitor = self.collector.episodes(self.policy.act, state.policy.meta.policy, env_tasks,
                                              jax.random.split(k_mon, M), c.monitor_episodes)
        return MBMPOBatch(real, monitor, k_update)

    def update(self, state: MBMPOState, batch: MBMPOBatch):
        """Store the real episodes, refit the ensemble, take `policy_steps` MAML steps on imagination."""
        c = self.config
        real = batch.real
        space = self.env.action_space
        action = jnp.clip(_episodes_first(real.action), space.low, space.high)
        buffer = buffer_add(state.buffer, _episodes_first(real.obs), action, _episodes_first(real.valid))
        k_fit, k_pol = jax.random.split(batch.key)
        model, info = self.fit_model(state.model, buffer, k_fit)
        maml = self.policy_learner(model, buffer)

        def meta_step(policy: MAMLState, key):
            k_tasks, k_eps = jax.random.split(key)
            tasks = self.imagined_tasks(self.env_tasks(k_tasks, c.meta_batch_size))
            return maml.update(policy, maml.sample_tasks(policy.meta, tasks, k_eps))

        policy, steps = jax.lax.scan(meta_step, state.policy, jax.random.split(k_pol, c.policy_steps))
        real_steps = state.real_steps + jnp.sum(real.valid).astype(jnp.int32)
        monitor_steps = state.monitor_steps
        metrics = {"real_steps": real_steps, "real_post_return": _mean_return(real)}
        if batch.monitor is not None:
            monitor_steps = monitor_steps + jnp.sum(batch.monitor.valid).astype(jnp.int32)
            metrics.update(real_pre_return=_mean_return(batch.monitor), monitor_steps=monitor_steps)
        names = {"pre_return": "imagined_pre_return", "post_return": "imagined_post_return"}
        metrics.update({names.get(k, f"policy_{k}"): jnp.mean(v.astype(jnp.result_type(float))) for k, v in steps.items()})
        metrics.update({f"model_val_loss_{k}": info.val_loss[k] for k in range(c.ensemble_size)})
        metrics.update(model_val_loss=jnp.mean(info.val_loss), model_epochs=jnp.mean(info.epochs.astype(jnp.float32)))
        new = MBMPOState(policy, model, buffer, real_steps, monitor_steps, state.step + 1)
        return new, metrics

    def eval_tasks(self):
        """The fixed held-out real tasks (the real MDP repeated in the "ensemble" form)."""
        return self.env_tasks(jax.random.PRNGKey(self.config.eval_seed), self.config.num_eval_tasks)

    def evaluate(self, state: MBMPOState, key: PRNGKey) -> AdaptationCurve:
        """Real return on the held-out tasks of the meta-policy and of the policies adapted
        to them on imagined episodes (task i imagined by member i mod K)."""
        c = self.config
        tasks = self.eval_tasks()
        N = c.num_eval_tasks
        k_imag, k_pre, k_post = jax.random.split(key, 3)
        adapted = self.collector.stage(self._adapted_policies)(state, tasks, k_imag)
        pre = self.collector.episodes(self.policy.act, state.policy.meta.policy, tasks, jax.random.split(k_pre, N),
                                      c.num_episodes)
        post = self.collector.episodes(self.policy.act, adapted, tasks, jax.random.split(k_post, N), c.num_episodes,
                                       params_axis=0)
        per_task = jnp.stack([jnp.mean(jnp.sum(t.reward, axis=1), axis=-1) for t in (pre, post)], axis=1)  # [N, 2]
        return AdaptationCurve(jnp.mean(per_task, axis=0), per_task)

    def algorithm(self) -> Algorithm:
        return Algorithm(self.init, self.sample, self.update, self.evaluate, jittable=self.collector.jittable)


def mbmpo(env: MetaEnv, tasks: TaskDistribution | None = None, config: MBMPOConfig | None = None, *,
          collector: Collector | None = None) -> Algorithm:
    """MB-MPO as an `Algorithm(init, sample, update, evaluate)`.

    Args:
      env: a MetaEnv with a Box action space and a `transition_reward(obs, action,
        next_obs, task)` method.
      tasks: its TaskDistribution (default: `env.task_distribution()`).
      config: hyperparameters (default: the paper's reference settings).
      collector: where the real episodes come from (default: `env`'s jitted rollouts).
    """
    tasks = env.task_distribution() if tasks is None else tasks
    return MBMPO(env, tasks, config or MBMPOConfig(), collector=collector).algorithm()


def without_meta_learning(config: MBMPOConfig) -> MBMPOConfig:
    """The paper's "MB-MPO without meta-learning" baseline of `config`: a policy trained
    by TRPO on imagined episodes of the ensemble mean, with no inner step."""
    return dataclasses.replace(config, inner_lr=0.0, model_mean=True)
