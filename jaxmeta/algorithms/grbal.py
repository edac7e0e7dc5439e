"""GrBAL: a dynamics model meta-trained with MAML to adapt online, acting through MPC.

Nagabandi, Clavera et al. 2019, "Learning to Adapt in Dynamic, Real-World Environments
through Meta-Reinforcement Learning" (gradient-based adaptive learner). Tasks change the
dynamics (a crippled joint, masses, damping, a rotated or drifting point mass); the
reward is known and the same for every task.

- Meta-training of the model (`update`): segments of M + K consecutive real transitions
  are drawn from the replay buffer; the inner step adapts the model on the first M,
  theta' = theta - alpha * grad L(theta; past M), and the outer loss is the prediction
  loss of theta' on the next K (M = K = 16, alpha = 0.01), minimised by Adam through the
  inner step. L is the MSE of the normalised state change. Training uses
  `jaxmeta.models.fit` (per-member validation split of the segments, early stopping).
- Acting (`MPCController`): at every control step the model is adapted on the last M
  transitions of the current episode (fewer at its start), then a planner (random
  shooting, or CEM) picks the action with the known reward
  `env.transition_reward(obs, action, next_obs, task)` over `plan_horizon` steps.
- Data (`sample`): each iteration runs the controller on `meta_batch_size` tasks drawn
  from the training distribution (uniform random actions for the first
  `random_iterations` iterations, as the paper's initial dataset) and adds the
  episodes to the buffer.

The controller is a policy with memory (the window of recent transitions), so real
episodes come from the collector's `trials` (one episode per trial): the same code
runs on jitted environments and on host simulators.

Baselines are settings: `evaluate` returns the mean return on held-out tasks of MPC
with the model *without* the inner step (entry 0: "model + MPC", no adaptation) and
with it (entry 1: GrBAL); `meta_learning=False` fits the model by plain MSE on the same
segments and collects data without adaptation ("MPC with a model trained without
meta-learning", entry 0 of its curve; entry 1 is that model fine-tuned online).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxmeta.algorithms.base import Algorithm
from jaxmeta.config import ConfigError, check_bool, check_choice, check_float, check_int
from jaxmeta.envs.base import MetaEnv, TaskDistribution, action_dim, obs_dim
from jaxmeta.models import (
    DynamicsConfig, DynamicsModel, EpisodeBuffer, ModelState, Normalizer, buffer_add, buffer_init,
    check_planning_env, cem, fit, fit_normalizer, member, random_shooting, sample_indices, segment_mask, segments,
    transition_done, transitions,
)
from jaxmeta.rollout import Collector, JaxCollector, TrialTrajectory, trial_episode_returns
from jaxmeta.types import AdaptationCurve, Params, PRNGKey

PLANNERS = ("random_shooting", "cem")


@dataclass(frozen=True)
class GrBALConfig(DynamicsConfig):
    """GrBAL hyperparameters (the dynamics-model fields are `DynamicsConfig`'s; the
    paper's model is 3 x 512 ReLU, M = K = 16, inner lr 0.01, random shooting with
    1000-2000 candidates over 10-20 steps)."""

    model_hidden_sizes: tuple[int, ...] = (512, 512, 512)
    past_steps: int = 16  # M: transitions the inner step adapts on
    future_steps: int = 16  # K: transitions the adapted model is scored on
    inner_lr: float = 0.01
    meta_learning: bool = True  # False: the model is fit by plain MSE and acts without adaptation
    meta_batch_size: int = 10  # tasks whose real episodes are collected per iteration
    episodes_per_task: int = 1
    random_iterations: int = 1  # first iterations act uniformly at random
    planner: str = "random_shooting"  # or "cem"
    num_candidates: int = 1000
    plan_horizon: int = 10
    cem_iterations: int = 5
    cem_elites: int = 100
    cem_alpha: float = 0.1
    num_eval_tasks: int = 10
    eval_seed: int = 0

    def __post_init__(self):
        DynamicsConfig.__post_init__(self)
        check_int("past_steps", self.past_steps, 1, 10_000)
        check_int("future_steps", self.future_steps, 1, 10_000)
        check_float("inner_lr", self.inner_lr, 0.0, 1e3)
        check_bool("meta_learning", self.meta_learning)
        check_int("meta_batch_size", self.meta_batch_size, 1, 100_000)
        check_int("episodes_per_task", self.episodes_per_task, 1, 100_000)
        check_int("random_iterations", self.random_iterations, 0, 1_000_000)
        check_choice("planner", self.planner, PLANNERS)
        check_int("num_candidates", self.num_candidates, 1, 10_000_000)
        check_int("plan_horizon", self.plan_horizon, 1, 10_000)
        check_int("cem_iterations", self.cem_iterations, 1, 1000)
        check_int("cem_elites", self.cem_elites, 1, 10_000_000)
        check_float("cem_alpha", self.cem_alpha, 0.0, 1.0, high_open=True)
        check_int("num_eval_tasks", self.num_eval_tasks, 1, 1_000_000)
        check_int("eval_seed", self.eval_seed, 0, 2**31 - 1)
        if self.planner == "cem" and self.cem_elites > self.num_candidates:
            raise ConfigError(f"cem_elites must be <= num_candidates = {self.num_candidates}, got {self.cem_elites}",
                              "cem_elites")

    @property
    def segment_length(self) -> int:
        return self.past_steps + self.future_steps

    @property
    def envs_per_batch(self) -> int:
        return self.meta_batch_size * self.episodes_per_task


class GrBALState(NamedTuple):
    model: ModelState  # one model: params leaves [1, ...], and its normaliser
    buffer: EpisodeBuffer
    real_steps: jax.Array  # [] int32 real environment steps collected
    step: jax.Array  # [] int32 iterations done


class GrBALBatch(NamedTuple):
    trials: TrialTrajectory  # [M, T, E, ...] one episode per trial
    key: PRNGKey  # of the model fit


class MPCParams(NamedTuple):
    """What the controller acts with."""

    model: ModelState
    explore: jax.Array  # [] bool: act uniformly at random instead of planning


class MPCCarry(NamedTuple):
    """The controller's memory: the last W transitions of the episode (oldest first)."""

    obs: jax.Array  # [W, D]
    action: jax.Array  # [W, A]
    next_obs: jax.Array  # [W, D]
    count: jax.Array  # [] int32 transitions in the window (<= W)
    prev_obs: jax.Array  # [D] the observation the last action was taken in
    has_prev: jax.Array  # [] bool


@dataclass(frozen=True)
class GrBAL:
    """The pure pieces of GrBAL for one environment, task distribution and config."""

    env: MetaEnv
    tasks: TaskDistribution
    config: GrBALConfig
    collector: Collector | None = None
    model: DynamicsModel = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self):
        check_planning_env(self.env, "GrBAL")
        if getattr(self.env, "reward_uses_task", True):
            raise ConfigError(f"GrBAL plans with a reward that is the same for every task (tasks change the "
                              f"dynamics); {type(self.env).__name__}'s reward depends on the task", "env")
        c = self.config
        if c.segment_length >= self.env.horizon:
            raise ConfigError(f"past_steps + future_steps must be < the env horizon {self.env.horizon}, got "
                              f"{c.segment_length}", "past_steps")
        if self.collector is None:
            object.__setattr__(self, "collector", JaxCollector(self.env))
        object.__setattr__(self, "model", DynamicsModel(obs_dim(self.env), action_dim(self.env), 1,
                                                        c.model_hidden_sizes, c.model_activation))

    # ----------------------------------------------------------------- the model
    def adapt(self, params: Params, norm: Normalizer, obs, action, next_obs, weight) -> Params:
        """One SGD step on the weighted mean prediction loss of transitions [W, ...]."""

        def loss(p):
            per = self.model.loss(p, norm, obs, action, next_obs)  # [W]
            return jnp.sum(per * weight) / jnp.maximum(jnp.sum(weight), 1.0)

        grads = jax.grad(loss)(params)
        return jax.tree.map(lambda p, g: p - self.config.inner_lr * g, params, grads)

    def segment_losses(self, params: Params, norm: Normalizer, obs, action, next_obs):
        """(future loss without adaptation, after the inner step) of one segment [M+K, ...]."""
        M = self.config.past_steps
        fut = lambda p: jnp.mean(self.model.loss(p, norm, obs[M:], action[M:], next_obs[M:]))
        w = jnp.ones((M,), obs.dtype)
        adapted = self.adapt(params, norm, obs[:M], action[:M], next_obs[:M], w)
        return fut(params), fut(adapted)

    def fit_model(self, model: ModelState, buffer: EpisodeBuffer, key: PRNGKey):
        """Refit the normaliser, then meta-train (or, without meta-learning, fit) the model on segments.

        Returns:
          (ModelState, FitInfo, (future loss unadapted, adapted) on a sample of segments).
        """
        c = self.config
        L = c.segment_length
        norm = fit_normalizer(*transitions(buffer))
        mask = segment_mask(buffer, L).reshape(-1)  # [N * S]

        def item_loss(params, idx):
            obs, action, next_obs = segments(buffer, idx, L)  # [B, L, ...]
            if c.meta_learning:
                return jax.vmap(lambda o, a, n: self.segment_losses(params, norm, o, a, n)[1])(obs, action, next_obs)
            return jnp.mean(self.model.loss(params, norm, obs, action, next_obs), axis=-1)

        k_fit, k_eval = jax.random.split(key)
        params, info = fit(k_fit, model.params, item_loss, mask, **c.fit_settings())
        idx = sample_indices(k_eval, mask, 256)
        obs, action, next_obs = segments(buffer, idx, L)
        p0 = member(params, 0)
        losses = jax.vmap(lambda o, a, n: self.segment_losses(p0, norm, o, a, n))(obs, action, next_obs)
        return ModelState(params, norm), info, jax.tree.map(jnp.mean, losses)

    # ----------------------------------------------------------------- acting
    def initial_carry(self, num: int, dtype) -> MPCCarry:
        W, D, A = self.config.past_steps, obs_dim(self.env), action_dim(self.env)
        z = lambda *s: jnp.zeros((num,) + s, dtype)
        return MPCCarry(z(W, D), z(W, A), z(W, D), jnp.zeros((num,), jnp.int32), z(D),
                        jnp.zeros((num,), bool))

    def plan(self, params: Params, norm: Normalizer, obs, key):
        """The planner's first action from obs [D] under one model's params."""
        c, space = self.config, self.env.action_space
        dynamics = lambda o, a: self.model.predict(params, norm, o, a)
        reward = lambda o, a, o2: self.env.transition_reward(o, a, o2, None)
        done = lambda o, a, o2: transition_done(self.env, o, a, o2, None)
        kw = dict(num_candidates=c.num_candidates, horizon=c.plan_horizon, low=space.low, high=space.high,
                  action_dim=action_dim(self.env), done=done)
        if c.planner == "cem":
            return cem(key, obs, dynamics, reward, num_iterations=c.cem_iterations, num_elites=c.cem_elites,
                       alpha=c.cem_alpha, **kw).action
        return random_shooting(key, obs, dynamics, reward, **kw).action

    def control(self, params: MPCParams, carry: MPCCarry, x, key, adapt: bool):
        """One control step of E trials: remember the last transition, adapt, plan.

        Args:
          x: [E, D + A + 2] trial inputs (obs, previous action, previous reward, done flag).
        Returns:
          (carry, action [E, A], log_prob [E] (zeros), value [E] (zeros)).
        """
        D, A = obs_dim(self.env), action_dim(self.env)
        E = x.shape[0]
        obs, prev_action, prev_done = x[:, :D], x[:, D:D + A], x[:, -1]
        space = self.env.action_space
        prev_action = jnp.clip(prev_action, space.low, space.high)
        buf_len = self.config.past_steps

        def remember(c: MPCCarry, o, a, done):
            push = c.has_prev & (done < 0.5)
            shift = lambda buf, new: jnp.where(push, jnp.concatenate([buf[1:], new[None]]), buf)
            count = jnp.where(push, jnp.minimum(c.count + 1, buf_len), jnp.where(done < 0.5, c.count, 0))
            return MPCCarry(shift(c.obs, c.prev_obs), shift(c.action, a), shift(c.next_obs, o), count, o,
                            jnp.ones((), bool))

        carry = jax.vmap(remember)(carry, obs, prev_action, prev_done)
        p0, norm = member(params.model.params, 0), params.model.normalizer

        def act_one(c: MPCCarry, o, k):
            p = p0
            if adapt:
                w = (jnp.arange(buf_len) >= buf_len - c.count).astype(o.dtype)  # the filled tail of the window
                p = self.adapt(p0, norm, c.obs, c.action, c.next_obs, w)
            return self.plan(p, norm, o, k)

        k_random, k_plan = jax.random.split(key)
        keys = jax.random.split(k_plan, E)

        def random_actions():
            return jax.random.uniform(k_random, (E, A), obs.dtype, space.low, space.high)

        action = jax.lax.cond(params.explore, random_actions, lambda: jax.vmap(act_one)(carry, obs, keys))
        zeros = jnp.zeros((E,), obs.dtype)
        return carry, action, zeros, zeros

    # ----------------------------------------------------------------- Algorithm
    def init(self, key: PRNGKey) -> GrBALState:
        model = self.model.init_state(key)
        dtype = jax.tree.leaves(model.params)[0].dtype
        buffer = buffer_init(self.config.buffer_episodes, self.env.horizon, obs_dim(self.env), action_dim(self.env),
                             dtype)
        zero = jnp.zeros((), jnp.int32)
        return GrBALState(model, buffer, zero, zero)

    def run_mpc(self, model: ModelState, tasks, key: PRNGKey, num_episodes: int, adapt: bool, explore=False):
        """Episodes of the MPC controller on `tasks` (one trial each): TrialTrajectory [N, T, E, ...]."""
        N = jax.tree.leaves(tasks)[0].shape[0]
        dtype = jax.tree.leaves(model.params)[0].dtype
        params = MPCParams(model, jnp.asarray(explore))
        return self.collector.trials(MPCController(self, adapt), self.initial_carry(num_episodes, dtype), params,
                                     tasks, jax.random.split(key, N), 1, num_episodes)

    def sample(self, state: GrBALState, key: PRNGKey) -> GrBALBatch:
        """Real episodes of the controller on fresh training tasks (random actions at first)."""
        c = self.config
        k_tasks, k_run, k_fit = jax.random.split(key, 3)
        tasks = self.tasks.sample_batch(k_tasks, c.meta_batch_size)
        explore = state.step < c.random_iterations
        trials = self.run_mpc(state.model, tasks, k_run, c.episodes_per_task, c.meta_learning, explore)
        return GrBALBatch(trials, k_fit)

    def update(self, state: GrBALState, batch: GrBALBatch):
        """Store the episodes and (meta-)train the model on the buffer's segments."""
        D = obs_dim(self.env)
        t = batch.trials
        flat = lambda x: jnp.swapaxes(x, 1, 2).reshape((-1,) + x.shape[1:2] + x.shape[3:])  # [M*E, T, ...]
        space = self.env.action_space
        buffer = buffer_add(state.buffer, flat(t.inputs[..., :D]), jnp.clip(flat(t.action), space.low, space.high),
                            flat(t.valid))
        model, info, (unadapted, adapted) = self.fit_model(state.model, buffer, batch.key)
        real_steps = state.real_steps + jnp.sum(t.valid).astype(jnp.int32)
        metrics = {
            "real_steps": real_steps,
            "real_return": jnp.mean(jnp.sum(t.reward, axis=1)),
            "model_val_loss": info.val_loss[0],
            "model_epochs": info.epochs[0].astype(jnp.float32),
            "future_loss_unadapted": unadapted,
            "future_loss_adapted": adapted,
        }
        return GrBALState(model, buffer, real_steps, state.step + 1), metrics

    def eval_tasks(self):
        return self.tasks.sample_batch(jax.random.PRNGKey(self.config.eval_seed), self.config.num_eval_tasks)

    def evaluate(self, state: GrBALState, key: PRNGKey) -> AdaptationCurve:
        """Mean return on the held-out tasks of MPC without (entry 0) and with (entry 1)
        the online inner step, on the same tasks and keys."""
        tasks = self.eval_tasks()
        per_task = []
        for adapt in (False, True):
            trials = self.run_mpc(state.model, tasks, key, self.config.episodes_per_task, adapt)
            per_task.append(jnp.mean(jax.vmap(trial_episode_returns, in_axes=(0, None))(trials, 1), axis=(1, 2)))
        per_task = jnp.stack(per_task, axis=1)  # [N, 2]
        return AdaptationCurve(jnp.mean(per_task, axis=0), per_task)

    def algorithm(self) -> Algorithm:
        return Algorithm(self.init, self.sample, self.update, self.evaluate, jittable=self.collector.jittable)


@dataclass(frozen=True)
class MPCController:
    """GrBAL's controller as a trial acting function (params, carry, x, key) ->
    (carry, action, log_prob, value); hashable, so a host collector compiles it once."""

    grbal: GrBAL
    adapt: bool

    def __call__(self, params: MPCParams, carry: MPCCarry, x, key):
        return self.grbal.control(params, carry, x, key, self.adapt)


def grbal(env: MetaEnv, tasks: TaskDistribution | None = None, config: GrBALConfig | None = None, *,
          collector: Collector | None = None) -> Algorithm:
    """GrBAL as an `Algorithm(init, sample, update, evaluate)`.

    Args:
      env: a MetaEnv whose tasks change the dynamics (`reward_uses_task = False`) with a
        Box action space and a `transition_reward(obs, action, next_obs, task)` method.
      tasks: its TaskDistribution (default: `env.task_distribution()`).
      config: hyperparameters (default: the paper's settings).
      collector: where real episodes come from (default: `env`'s jitted rollouts).
    """
    tasks = env.task_distribution() if tasks is None else tasks
    return GrBAL(env, tasks, config or GrBALConfig(), collector=collector).algorithm()
