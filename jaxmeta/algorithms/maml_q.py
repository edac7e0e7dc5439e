"""MAML with a Q-learning inner loop: a meta-learned Q-network initialisation.

The model-agnostic meta-learning recipe (Finn et al. 2017, "Model-Agnostic
Meta-Learning for Fast Adaptation of Deep Networks") with Q-learning (Watkins & Dayan
1992) as the inner algorithm: for each task (a maze) T_i, starting from the
meta-parameters theta (the Q-network's initialisation, and with `meta_sgd` a learned
step size per parameter, Li et al. 2017 "Meta-SGD"), run K Q-learning updates, each on
E fresh episodes collected in that maze with the current Q (Boltzmann or
epsilon-greedy exploration) and made of `num_minibatches` gradient steps on the TD loss
of minibatches of those episodes, with TD(0) or n-step targets
(Sutton & Barto 2018, ch. 6-7):

    theta_{k+1} = theta_k - alpha * grad_q 1/2 E[(Q_q(s_t, a_t) - y_t(theta_k))^2] |_{q = theta_k},
    y_t(theta) = r_t + gamma r_{t+1} + ... + gamma^n max_a Q_theta(s_{t+n}, a).

The inner gradient is Q-learning's semi-gradient (the target is held fixed inside the
step), but the map theta -> theta_K is differentiated exactly: the outer gradient sees the
target's dependence on theta too. The outer objective, `objective=`:

- "return": J(theta) = E_T[R(T, pi_{theta_K})], the return of the post-adaptation
  Boltzmann policy pi(a|s) = softmax(Q_{theta_K}(s) / temperature), estimated by
  REINFORCE (Williams 1992) on E fresh episodes of each task with a leave-one-out
  baseline, differentiated through the K Q-learning updates (second order, or first
  order with `first_order`: the inner gradients are treated as constants);
- "td": the TD loss of the adapted Q on fresh episodes of the same maze (the target
  held fixed, as DQN's, Mnih et al. 2015), differentiated through the inner updates.

Adam outer loop (`parts.adam`); every task of a meta-batch is one `vmap` lane and the
whole meta-iteration (collection, inner updates, meta-gradient) is one XLA program.

Collection follows MAML's `sample_tasks`: the k-th inner update's episodes are collected
with the Q adapted by the k updates before it (sampling carries no gradient), so
`sample` returns every batch and `update` redoes the adaptation through theta. Baselines
on the same held-out tasks (`baseline_stats`): Q-learning with the same inner budget
from a zero or a random initialisation, and from a multi-task Q pretrained by Q-learning
on the training distribution without meta-learning.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax import lax

from jaxmeta.algorithms.base import Algorithm
from jaxmeta.algorithms.maml import parts
from jaxmeta.algorithms.maml.core import MetaParams, _tree_index, _tree_stack
from jaxmeta.config import ConfigError, check_bool, check_choice, check_float, check_int, check_sizes
from jaxmeta.envs.base import Discrete, MetaEnv, TaskDistribution, action_dim, obs_dim
from jaxmeta.networks import ACTIVATIONS
from jaxmeta.networks.q import Q_NETWORKS, QNetwork, boltzmann_log_probs, epsilon_greedy_log_probs
from jaxmeta.parallel import shard_tasks
from jaxmeta.rl import (
    discounted_returns, episode_mean, n_step_returns, reinforce_loss, weighted_normalize,
)
from jaxmeta.rollout import Collector, JaxCollector
from jaxmeta.types import AdaptationCurve, Params, PRNGKey, Trajectory

EXPLORATIONS = ("boltzmann", "epsilon")
OBJECTIVES = ("return", "td")


@dataclass(frozen=True)
class MAMLQConfig:
    """MAML-Q hyperparameters.

    Defaults are the 7 x 7 generated-maze setting of docs/benchmarks.md (32 mazes, 8
    Q-learning updates of 4 episodes each, 50-step targets, Meta-SGD, Adam 3e-3); there
    the outer learning rate decays over the run (`outer_lr_decay_steps` = the number of
    meta-iterations).
    """

    q_network: str = "tabular"  # "tabular" (q = obs @ table: a table over one-hot obs) or "mlp"
    hidden_sizes: tuple[int, ...] = (64,)  # "mlp"
    activation: str = "relu"  # "mlp"
    init_scale: float = 0.01  # "tabular": std of the random initial table
    meta_batch_size: int = 32  # mazes per meta-iteration
    num_episodes: int = 4  # E: episodes per maze per inner update (and for the outer objective)
    num_inner_steps: int = 8  # K: Q-learning updates, each on freshly collected episodes
    num_minibatches: int = 1  # gradient steps per update, each on E / num_minibatches episodes
    inner_lr: float = 0.3  # tabular step size per visit x E (see `MAMLQ.td_loss`); initial value with meta_sgd
    meta_sgd: bool = True  # learn a step size per parameter with the initialisation
    first_order: bool = False
    gamma: float = 0.95
    n_step: int = 50  # bootstrapped n-step targets; 1: TD(0)
    exploration: str = "boltzmann"  # "boltzmann" or "epsilon" (epsilon-greedy)
    temperature: float = 0.1  # of the Boltzmann policy (exploration and the "return" objective)
    epsilon: float = 0.1  # exploration="epsilon"
    objective: str = "return"  # "return" (policy gradient of the adapted policy) or "td"
    outer_lr: float = 3e-3  # Adam
    outer_lr_decay_steps: int = 0  # cosine decay of outer_lr to 0 over this many meta-iterations (0: constant)
    num_eval_tasks: int = 200
    num_eval_steps: int | None = None  # inner updates on the adaptation curve (None: num_inner_steps)
    eval_seed: int = 0
    multitask_iterations: int = 500  # Q-learning iterations of the pretrained multi-task baseline
    multitask_lr: float = 1e-2  # its Adam learning rate

    def __post_init__(self):
        check_choice("q_network", self.q_network, Q_NETWORKS)
        check_sizes("hidden_sizes", self.hidden_sizes)
        check_choice("activation", self.activation, tuple(ACTIVATIONS))
        check_float("init_scale", self.init_scale, 0.0, 1e3)
        check_int("meta_batch_size", self.meta_batch_size, 1, 1_000_000)
        check_int("num_episodes", self.num_episodes, 1, 100_000)
        check_int("num_inner_steps", self.num_inner_steps, 1, 100)
        check_int("num_minibatches", self.num_minibatches, 1, self.num_episodes)
        if self.num_episodes % self.num_minibatches:
            raise ConfigError(f"num_minibatches must divide num_episodes = {self.num_episodes}, "
                              f"got {self.num_minibatches}", "num_minibatches")
        check_float("inner_lr", self.inner_lr, 0.0, 1e4)
        check_bool("meta_sgd", self.meta_sgd)
        check_bool("first_order", self.first_order)
        check_float("gamma", self.gamma, 0.0, 1.0)
        check_int("n_step", self.n_step, 1, 1000)
        check_choice("exploration", self.exploration, EXPLORATIONS)
        check_float("temperature", self.temperature, 0.0, 1e6, low_open=True)
        check_float("epsilon", self.epsilon, 0.0, 1.0)
        if self.exploration != "epsilon" and self.epsilon != 0.1:
            raise ConfigError("epsilon is a setting of exploration='epsilon'; leave it at 0.1 or choose "
                              "exploration='epsilon'", "epsilon")
        check_choice("objective", self.objective, OBJECTIVES)
        check_float("outer_lr", self.outer_lr, 0.0, 1e3, low_open=True)
        check_int("outer_lr_decay_steps", self.outer_lr_decay_steps, 0, 10_000_000)
        check_int("num_eval_tasks", self.num_eval_tasks, 1, 1_000_000)
        if self.num_eval_steps is not None:
            check_int("num_eval_steps", self.num_eval_steps, 1, 100)
        check_int("eval_seed", self.eval_seed, 0, 2**31 - 1)
        check_int("multitask_iterations", self.multitask_iterations, 0, 10_000_000)
        check_float("multitask_lr", self.multitask_lr, 0.0, 1e3, low_open=True)

    @property
    def eval_steps(self) -> int:
        return self.num_inner_steps if self.num_eval_steps is None else self.num_eval_steps

    @property
    def envs_per_batch(self) -> int:
        """Environments one sampled batch steps at once (tasks x episodes)."""
        return self.meta_batch_size * self.num_episodes

    def step_size(self) -> parts.StepSize:
        return parts.learned(self.inner_lr) if self.meta_sgd else parts.fixed(self.inner_lr)

    def outer_update(self) -> parts.OuterUpdate:
        """Adam on the post-adaptation objective, with the learning rate's cosine decay if set."""
        lr = self.outer_lr
        if self.outer_lr_decay_steps:
            lr = optax.cosine_decay_schedule(self.outer_lr, self.outer_lr_decay_steps)
        return parts.adam(lr)


class MAMLQBatch(NamedTuple):
    """What `sample` returns and `update` takes: a meta-batch of M tasks."""

    train: Trajectory  # [M, K, T, E, ...] the episodes of each inner update
    valid: Trajectory  # [M, T, E, ...] the adapted Q's own episodes (the outer objective's)


class MAMLQState(NamedTuple):
    meta: MetaParams  # policy: the Q-network initialisation; inner_lr: Meta-SGD step sizes or None
    opt_state: Any  # Adam's
    step: jax.Array  # [] int32 meta-iterations done


class AdaptationStats(NamedTuple):
    """Per-task statistics of the episodes after 0, 1, ..., N inner updates: [num_tasks, N+1].

    `success` is the fraction of episodes that reached the goal (collected a positive
    reward: only the goal pays one); `steps` the mean steps to the goal, the horizon for an
    episode that did not reach it.
    """

    returns: jax.Array
    success: jax.Array
    steps: jax.Array

    def mean(self) -> AdaptationStats:
        """Means over tasks: [N+1] each."""
        return AdaptationStats(*(jnp.mean(x, axis=0) for x in self))


def episode_stats(reward: jax.Array, valid: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(return, success, steps to goal) of every episode of a time-major batch.

    Args:
      reward: [T, E]; valid: [T, E] (1 while the episode runs).
    Returns:
      [E] each: the undiscounted return, 1.0 if a positive reward was collected (the
      goal), and the number of steps taken if so, else T.
    """
    T = reward.shape[0]
    success = jnp.any((reward > 0) & (valid > 0), axis=0).astype(reward.dtype)  # [E]
    steps = jnp.where(success > 0, jnp.sum(valid, axis=0), T).astype(reward.dtype)  # [E]
    return jnp.sum(reward, axis=0), success, steps


@dataclass(frozen=True)
class MAMLQ:
    """The pure pieces of MAML-Q for one environment, task distribution, config and parts.

    `step_size` (fixed or Meta-SGD) and `outer` (Adam) default to the config's;
    `collector` (where episodes come from) defaults to the env's jitted rollouts.
    """

    env: MetaEnv
    tasks: TaskDistribution
    config: MAMLQConfig
    step_size: parts.StepSize | None = None
    outer: parts.OuterUpdate | None = None
    collector: Collector | None = None
    qnet: QNetwork = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self):
        if not isinstance(self.env.action_space, Discrete):
            raise ConfigError("MAML-Q learns Q-values of discrete actions: env must have a Discrete action space")
        c = self.config
        defaults = {"step_size": c.step_size, "outer": c.outer_update,
                    "collector": lambda: JaxCollector(self.env)}
        for name, make in defaults.items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, make())
        object.__setattr__(self, "qnet", QNetwork(obs_dim(self.env), action_dim(self.env), c.q_network,
                                                  c.hidden_sizes, c.activation, c.init_scale))

    # ----------------------------------------------------------------- acting
    def log_probs(self, params: Params, obs: jax.Array, boltzmann: bool = False) -> jax.Array:
        """Log-probabilities [..., A] of the exploration policy (or the Boltzmann policy)."""
        q = self.qnet.apply(params, obs)
        if boltzmann or self.config.exploration == "boltzmann":
            return boltzmann_log_probs(q, self.config.temperature)
        return epsilon_greedy_log_probs(q, self.config.epsilon)

    def _sample(self, log_probs, key):
        action = jax.random.categorical(key, log_probs)  # [E]
        return action, jnp.take_along_axis(log_probs, action[:, None], axis=-1)[:, 0]

    def act(self, params: Params, obs: jax.Array, key: PRNGKey):
        """Exploration actions for observations [E, D]: (action [E], log_prob [E])."""
        return self._sample(self.log_probs(params, obs), key)

    def act_boltzmann(self, params: Params, obs: jax.Array, key: PRNGKey):
        """Actions of the Boltzmann policy softmax(Q / temperature): (action [E], log_prob [E])."""
        return self._sample(self.log_probs(params, obs, boltzmann=True), key)

    # ----------------------------------------------------------------- Q-learning
    def td_loss(self, params: Params, traj: Trajectory, target_params: Params) -> jax.Array:
        """1/2 squared TD errors of one task's episodes summed over time, mean over episodes,
        targets from `target_params`.

        Every transition t = 0..T-2 of a running episode counts; its target is the
        n-step return bootstrapped with max_a Q_target (cut at the episode's end: a
        transition into the goal has target r_t). The last step of the batch has no next
        observation and is left out. Summing over time makes a gradient step of size
        `inner_lr` move a table entry by inner_lr / E times the TD error of each visit:
        `inner_lr` is tabular Q-learning's step size for one episode's worth of data,
        whatever the episodes' length.

        Args:
          traj: leaves [T, E, ...].
        """
        q = self.qnet.apply(params, traj.obs[:-1])  # [T-1, E, A]
        q_sa = jnp.take_along_axis(q, traj.action[:-1, ..., None].astype(jnp.int32), axis=-1)[..., 0]  # [T-1, E]
        y_t = self._td_targets(traj, jnp.max(self.qnet.apply(target_params, traj.obs[1:]), axis=-1))
        return 0.5 * jnp.sum(traj.valid[:-1] * (q_sa - y_t) ** 2) / traj.valid.shape[1]

    def _td_targets(self, traj: Trajectory, v_tp1: jax.Array) -> jax.Array:
        """n-step targets [T-1, E] of transitions 0..T-2 from bootstrap values v_tp1 [T-1, E]."""
        c = self.config
        discount_t = c.gamma * traj.valid[1:].astype(v_tp1.dtype)  # [T-1, E] 0 after the goal
        r_t = traj.reward[:-1].astype(v_tp1.dtype)  # [T-1, E]
        return jax.vmap(n_step_returns, in_axes=(1, 1, 1, None), out_axes=1)(r_t, discount_t, v_tp1, c.n_step)

    def td_grad(self, params: Params, traj: Trajectory) -> Params:
        """grad_q td_loss(q, traj, target_params=params) at q = params, from one forward pass.

        The same function of `params` as `jax.grad(self.td_loss)(params, traj, params)`
        (so its outer derivative is the same too), computed with one pass of the network
        over the episodes instead of two: the Q-values of every observation serve both as
        the predictions (steps 0..T-2) and, through the max, as the targets' bootstrap
        values (steps 1..T-1), and the gradient is the pullback of dloss/dQ(s_t, a_t) =
        valid_t (Q(s_t, a_t) - y_t) / E. `traj` leaves are [T, E, ...].
        """
        q_all, pullback = jax.vjp(lambda p: self.qnet.apply(p, traj.obs), params)  # [T, E, A]
        action = traj.action[:-1].astype(jnp.int32)
        q_sa = jnp.take_along_axis(q_all[:-1], action[..., None], axis=-1)[..., 0]  # [T-1, E]
        y_t = self._td_targets(traj, jnp.max(q_all[1:], axis=-1))
        delta = traj.valid[:-1] * (q_sa - y_t) / traj.valid.shape[1]
        cot = jax.nn.one_hot(action, q_all.shape[-1], dtype=q_all.dtype) * delta[..., None]
        cot = jnp.concatenate([cot, jnp.zeros_like(q_all[-1:])], axis=0)  # the last step is no prediction
        return pullback(cot)[0]

    def q_update(self, params: Params, lr: Params, traj: Trajectory, first_order: bool) -> Params:
        """One Q-learning update: a gradient step on each minibatch of the episodes in turn.

        Each step is p <- p - lr * grad_q td_loss(q, minibatch, target = p) at q = p;
        with `first_order` the step's gradient is a constant for the outer gradient.
        `lr` is params-shaped. `traj` leaves are [T, E, ...].
        """
        nmb = self.config.num_minibatches

        def sgd(p, mb):
            g = self.td_grad(p, mb)
            if first_order:
                g = lax.stop_gradient(g)
            return jax.tree.map(lambda x, a, gx: x - a * gx, p, lr, g), None

        if nmb == 1:
            return sgd(params, traj)[0]
        mbs = jax.tree.map(lambda x: jnp.swapaxes(x.reshape((x.shape[0], nmb, -1) + x.shape[2:]), 0, 1), traj)
        return lax.scan(sgd, params, mbs)[0]  # minibatch leaves [nmb, T, E/nmb, ...]

    def step_sizes(self, meta: MetaParams) -> Params:
        """The inner learning rate of every parameter (a params-shaped pytree)."""
        return self.step_size.apply(meta.inner_lr, meta.policy)

    def adapt(self, meta: MetaParams, train: Trajectory, first_order: bool | None = None) -> Params:
        """The Q-network after the inner updates of one task; `train` leaves [K, T, E, ...]."""
        first_order = self.config.first_order if first_order is None else first_order
        params, lr = meta.policy, self.step_sizes(meta)
        for k in range(jax.tree.leaves(train)[0].shape[0]):
            params = self.q_update(params, lr, _tree_index(train, k), first_order)
        return params

    # ----------------------------------------------------------------- sampling
    def adapt_tasks(self, params: Params, lr: Params, traj: Trajectory, params_axis: int | None) -> Params:
        """One first-order Q-learning update on every task: the next collecting Q-networks."""
        update = lambda p, t: self.q_update(p, lr, t, first_order=True)
        return jax.vmap(update, in_axes=(params_axis, 0))(params, traj)

    def sample_tasks(self, meta: MetaParams, tasks, key: PRNGKey, num_steps: int | None = None) -> MAMLQBatch:
        """Episodes of `tasks`: one batch per inner update, then the adapted Q's batch.

        The k-th batch is collected by the exploration policy of the Q adapted by the
        updates before it; the last one by the Boltzmann policy ("return" objective) or
        the exploration policy ("td").
        """
        c = self.config
        K = c.num_inner_steps if num_steps is None else num_steps
        M = jax.tree.leaves(tasks)[0].shape[0]
        tasks = shard_tasks(tasks)
        keys = shard_tasks(jax.random.split(key, M))
        keys = jax.vmap(lambda k: jax.random.split(k, K + 1))(keys)  # [M, K+1, 2]
        meta = lax.stop_gradient(meta)
        lr = self.step_sizes(meta)
        params, axis = meta.policy, None
        train = []
        for k in range(K):
            traj = self.collector.episodes(self.act, params, tasks, keys[:, k], c.num_episodes, params_axis=axis)
            train.append(traj)
            params = self.collector.stage(self.adapt_tasks, ("params_axis",))(params, lr, traj, params_axis=axis)
            axis = 0
        final = self.act_boltzmann if c.objective == "return" else self.act
        valid = self.collector.episodes(final, params, tasks, keys[:, K], c.num_episodes, params_axis=axis)
        return MAMLQBatch(_tree_stack(train, axis=1), valid)

    def sample(self, state: MAMLQState, key: PRNGKey) -> MAMLQBatch:
        """A meta-batch on fresh tasks: inner batches [M, K, ...] and the adapted Qs' batches [M, ...]."""
        k_tasks, k_eps = jax.random.split(key)
        tasks = self.tasks.sample_batch(k_tasks, self.config.meta_batch_size)
        return self.sample_tasks(state.meta, tasks, k_eps)

    # ----------------------------------------------------------------- outer objective
    def return_loss(self, params: Params, traj: Trajectory) -> jax.Array:
        """REINFORCE loss of the Boltzmann policy of `params` on its own episodes [T, E, ...].

        Advantages are the discounted returns minus the mean return of the other episodes
        at the same step (leave-one-out), normalised; every episode weighs the same.
        """
        c = self.config
        log_pi = self.log_probs(params, traj.obs, boltzmann=True)  # [T, E, A]
        log_pi = jnp.take_along_axis(log_pi, traj.action[..., None].astype(jnp.int32), axis=-1)[..., 0]  # [T, E]
        valid = traj.valid.astype(log_pi.dtype)
        r_t = traj.reward.astype(log_pi.dtype)
        g_t = jax.vmap(discounted_returns, in_axes=1, out_axes=1)(r_t, jnp.full_like(r_t, c.gamma))  # [T, E]
        total, count = jnp.sum(g_t * valid, axis=1, keepdims=True), jnp.sum(valid, axis=1, keepdims=True)  # [T, 1]
        baseline = (total - g_t * valid) / jnp.maximum(count - valid, 1.0)  # [T, E] leave-one-out mean
        adv = weighted_normalize(g_t - baseline, valid, mean_fn=episode_mean)
        return reinforce_loss(log_pi, lax.stop_gradient(adv), valid, mean_fn=episode_mean)

    def task_loss(self, params: Params, traj: Trajectory) -> jax.Array:
        """The outer objective of one task's adapted Q-network on its fresh episodes."""
        if self.config.objective == "return":
            return self.return_loss(params, traj)
        return self.td_loss(params, traj, lax.stop_gradient(params))

    def outer_loss(self, meta: MetaParams, batch: MAMLQBatch) -> jax.Array:
        """Post-adaptation objective as a function of the meta-parameters, mean over tasks."""
        per_task = jax.vmap(lambda tr, va: self.task_loss(self.adapt(meta, tr), va))(batch.train, batch.valid)
        return jnp.mean(per_task)

    # ----------------------------------------------------------------- Algorithm
    def init(self, key: PRNGKey) -> MAMLQState:
        params = self.qnet.init(key)
        meta = MetaParams(params, self.step_size.init(params))
        return MAMLQState(meta, self.outer.init(meta), jnp.zeros((), jnp.int32))

    def update(self, state: MAMLQState, batch: MAMLQBatch):
        """One Adam step on the post-adaptation objective of a sampled meta-batch."""
        meta, opt_state, info = self.outer.update(self, state.meta, state.opt_state, batch)
        return MAMLQState(meta, opt_state, state.step + 1), {**batch_metrics(batch), **info}

    def eval_tasks(self):
        """The fixed, seeded held-out tasks used by `evaluate` and the baselines."""
        return self.tasks.sample_batch(jax.random.PRNGKey(self.config.eval_seed), self.config.num_eval_tasks)

    def adaptation_stats(self, meta: MetaParams, tasks, key: PRNGKey, num_steps: int | None = None
                         ) -> AdaptationStats:
        """Return, success and steps to the goal on `tasks` after 0..N inner updates from `meta`."""
        batch = self.sample_tasks(meta, tasks, key, self.config.eval_steps if num_steps is None else num_steps)
        return stats_of(batch)

    def evaluate(self, state: MAMLQState, key: PRNGKey) -> AdaptationCurve:
        """Mean return on the held-out tasks after 0, 1, ..., N inner updates."""
        returns = self.adaptation_stats(state.meta, self.eval_tasks(), key).returns
        return AdaptationCurve(jnp.mean(returns, axis=0), returns)

    def algorithm(self) -> Algorithm:
        return Algorithm(self.init, self.sample, self.update, self.evaluate, jittable=self.collector.jittable)

    # ----------------------------------------------------------------- baselines
    def zero_init(self, key: PRNGKey) -> Params:
        """A Q-network whose Q-values start at 0 (tabular: a zero table; mlp: a zero output layer)."""
        params = self.qnet.init(key)
        if self.config.q_network == "tabular":
            return jax.tree.map(jnp.zeros_like, params)
        last = f"Dense_{len(self.config.hidden_sizes)}"
        return {**params, last: jax.tree.map(jnp.zeros_like, params[last])}

    def multitask_step(self, params: Params, opt_state, key: PRNGKey, lr: float):
        """One iteration of the multi-task baseline: episodes on fresh tasks, an Adam step on their TD loss."""
        c = self.config
        k_tasks, k_eps = jax.random.split(key)
        tasks = shard_tasks(self.tasks.sample_batch(k_tasks, c.meta_batch_size))
        keys = shard_tasks(jax.random.split(k_eps, c.meta_batch_size))
        traj = self.collector.episodes(self.act, params, tasks, keys, c.num_episodes)  # [M, T, E, ...]

        def loss(p):
            return jnp.mean(jax.vmap(lambda t: self.td_loss(p, t, lax.stop_gradient(p)))(traj))

        grads = jax.grad(loss)(params)
        updates, opt_state = optax.adam(lr).update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    def pretrain_multitask(self, key: PRNGKey, num_iterations: int | None = None, lr: float | None = None) -> Params:
        """A multi-task Q-network: Q-learning on episodes of the training distribution pooled
        over tasks, `multitask_iterations` Adam steps, no meta-learning (the baseline that
        asks whether meta-learning beats plain pretraining)."""
        c = self.config
        n = c.multitask_iterations if num_iterations is None else num_iterations
        lr = c.multitask_lr if lr is None else lr
        k_init, k_loop = jax.random.split(key)
        params = self.qnet.init(k_init)
        carry = (params, optax.adam(lr).init(params))
        keys = jax.random.split(k_loop, max(n, 1))[:n]
        if self.collector.jittable:
            carry, _ = lax.scan(lambda cr, k: (self.multitask_step(*cr, k, lr), None), carry, keys)
        else:
            for k in keys:
                carry = self.multitask_step(*carry, k, lr)
        return carry[0]

    def baseline_stats(self, state: MAMLQState, key: PRNGKey) -> dict[str, AdaptationStats]:
        """The meta-learned initialisation and the baselines, adapted by the same inner
        loop on the same held-out tasks and episode keys (the baselines with the fixed step
        size `inner_lr`), as one vmap over the methods."""
        c = self.config
        k_eval, k_zero, k_rand, k_mt = jax.random.split(key, 4)
        meta = state.meta
        cast = lambda tree: jax.tree.map(lambda x, ref: x.astype(ref.dtype), tree, meta.policy)
        fixed_lr = parts.fixed(c.inner_lr).apply(None, meta.policy)
        inits = {
            "meta-learned (maml_q)": (meta.policy, self.step_sizes(meta)),
            "Q-learning, zero init": (cast(self.zero_init(k_zero)), fixed_lr),
            "Q-learning, random init": (cast(self.qnet.init(k_rand)), fixed_lr),
        }
        if c.multitask_iterations:
            inits["multi-task Q, pretrained"] = (cast(self.pretrain_multitask(k_mt)), fixed_lr)
        methods = _tree_stack([MetaParams(p, lr) for p, lr in inits.values()])  # leading axis: methods
        own_rates = dataclasses.replace(self, step_size=parts.learned(c.inner_lr))  # each method's `inner_lr`
        tasks = self.eval_tasks()
        stats = jax.vmap(lambda m: own_rates.adaptation_stats(m, tasks, k_eval))(methods)
        return {name: _tree_index(stats, i) for i, name in enumerate(inits)}


def stats_of(batch: MAMLQBatch) -> AdaptationStats:
    """Per-task return, success and steps after 0..K updates from train [N, K, ...] and valid [N, ...]."""

    def per_round(traj):  # leaves [T, E, ...] -> [3] means over the episodes
        return jnp.stack([jnp.mean(x) for x in episode_stats(traj.reward, traj.valid)])

    pre = jax.vmap(jax.vmap(per_round))(batch.train)  # [N, K, 3]
    post = jax.vmap(per_round)(batch.valid)  # [N, 3]
    both = jnp.concatenate([pre, post[:, None]], axis=1)  # [N, K+1, 3]
    return AdaptationStats(both[..., 0], both[..., 1], both[..., 2])


def batch_metrics(batch: MAMLQBatch) -> dict:
    """Return, success rate and steps to the goal before adaptation and after it."""
    s = stats_of(batch).mean()
    return {
        "pre_return": s.returns[0], "post_return": s.returns[-1],
        "pre_success": s.success[0], "post_success": s.success[-1],
        "pre_steps": s.steps[0], "post_steps": s.steps[-1],
        "env_steps": jnp.asarray(batch.valid.reward.size * (batch.train.reward.shape[1] + 1), jnp.int32),
    }


def final_table(env, config: MAMLQConfig, algorithm, state: MAMLQState, key, collector=None, initial_state=None):
    """Success rate and steps to the goal on the held-out tasks after 0..N inner updates:
    the meta-learned initialisation beside Q-learning from zero / random initialisations
    and from a pretrained multi-task Q (the same inner loop and budget)."""
    del algorithm
    learner = MAMLQ(env, env.task_distribution(), config, collector=collector)
    stats = learner.baseline_stats(state, key)
    N = config.eval_steps
    header = ["method"] + [f"success @{k}" for k in range(N + 1)] + [f"steps @{k}" for k in range(N + 1)]
    rows = []
    for name, s in stats.items():
        m = s.mean()
        rows.append([name] + [float(x) for x in m.success] + [float(x) for x in m.steps])
    return header, rows


def maml_q(env: MetaEnv, tasks: TaskDistribution | None = None, config: MAMLQConfig | None = None, *,
           collector: Collector | None = None, **parts_) -> Algorithm:
    """MAML over a Q-learning inner loop as an `Algorithm(init, sample, update, evaluate)`.

    Args:
      env: a MetaEnv with a Discrete action space (e.g. `GeneratedMaze`, `MetaMaze`).
      tasks: its TaskDistribution (default: `env.task_distribution()`).
      config: hyperparameters (default `MAMLQConfig()`).
      collector: where episodes come from (default: `env`'s jitted rollouts).
      step_size, outer: parts to use instead of the config's (`parts.fixed`/`learned`, `parts.adam`).
    """
    tasks = env.task_distribution() if tasks is None else tasks
    return MAMLQ(env, tasks, config or MAMLQConfig(), collector=collector, **parts_).algorithm()
