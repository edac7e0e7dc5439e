"""MAML for reinforcement learning (Finn et al. 2017), composed from parts.

The inner loop adapts a Gaussian MLP policy with K policy-gradient steps on an inner
objective (REINFORCE, LVC or DiCE with the linear feature baseline and GAE, as
pytorch-maml-rl), each on fresh episodes sampled with the current adapted policy, with a
step size that is fixed or meta-learned per parameter (Meta-SGD, Li et al. 2017). The
outer update (TRPO, Adam or ProMP's clipped objective) maximises the return of the
adapted policy on validation episodes, differentiating through the adaptation (second
order unless `first_order`).

`sample` collects a `MAMLBatch` from the learner's collector (jitted environments, a
learned model, or host simulators); `update` is the outer step on it. With a jitted
collector the whole meta-iteration compiles to one XLA program.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxmeta.algorithms.base import Algorithm
from jaxmeta.algorithms.maml import parts
from jaxmeta.config import (
    ConfigError, check_bool, check_choice, check_float, check_int, check_outer_fields, check_sizes, check_trpo_fields,
)
from jaxmeta.envs.base import Box, MetaEnv, TaskDistribution, action_dim, obs_dim
from jaxmeta.networks import ACTIVATIONS, GaussianPolicy
from jaxmeta.parallel import shard_tasks
from jaxmeta.rl import discounted_returns, episode_mean, gae, linear_baseline, trpo_surrogate, weighted_normalize
from jaxmeta.rollout import Collector, JaxCollector, episode_success
from jaxmeta.types import AdaptationCurve, Params, PRNGKey, Trajectory

OUTERS = ("trpo", "adam", "promp")
# Fields read by only some outer updates; any other outer must leave them at their defaults.
OUTER_FIELDS = {
    "trpo": ("max_kl", "cg_iters", "cg_damping", "ls_max_steps", "ls_backtrack_ratio", "cg_subsample"),
    "adam": ("outer_lr",),
    "promp": ("outer_lr", "num_promp_steps", "clip_eps", "init_inner_kl_penalty", "adaptive_inner_kl_penalty",
              "target_inner_step"),
}
# Defaults that depend on the outer update: ProMP's run script uses 40 tasks and LVC.
OUTER_DEFAULTS = {
    "meta_batch_size": {"trpo": 20, "adam": 20, "promp": 40},
    "inner_estimator": {"trpo": "vpg", "adam": "vpg", "promp": "lvc"},
}


@dataclass(frozen=True)
class MAMLConfig:
    """MAML-RL hyperparameters.

    Defaults are pytorch-maml-rl's 2d-navigation.yaml for `outer="trpo"` (and "adam"), and
    ProMP's MuJoCo run script for `outer="promp"`: `meta_batch_size` and
    `inner_estimator` left as None take the chosen outer update's default (20 / "vpg",
    or 40 / "lvc" for ProMP). Fields that only one outer update reads (TRPO's `max_kl`,
    ProMP's `clip_eps`, ...) must stay at their defaults with another outer update.
    """

    hidden_sizes: tuple[int, ...] = (64, 64)
    activation: str = "tanh"
    init_std: float = 1.0
    meta_batch_size: int | None = None  # tasks per meta-iteration (20; 40 with ProMP)
    num_episodes: int = 20  # episodes per task per adaptation step ("fast batch size")
    inner_lr: float = 0.1  # "fast lr"; the initial value with meta_sgd
    num_inner_steps: int = 1
    first_order: bool = False
    meta_sgd: bool = False
    gamma: float = 0.99
    gae_lambda: float = 1.0
    normalize_advantages: bool = True
    outer: str = "trpo"  # "trpo", "adam" or "promp"
    max_kl: float = 1e-2
    cg_iters: int = 10
    cg_damping: float = 1e-5
    ls_max_steps: int = 15
    ls_backtrack_ratio: float = 0.8
    cg_subsample: float = 1.0  # TRPO: fraction of the meta-batch's tasks the CG's Fisher products use
    outer_lr: float = 1e-3  # Adam and ProMP
    num_promp_steps: int = 5  # ProMP: meta-gradient steps per sampled meta-batch
    clip_eps: float = 0.3  # ProMP
    init_inner_kl_penalty: float = 5e-4  # ProMP
    adaptive_inner_kl_penalty: bool = False  # ProMP
    target_inner_step: float = 0.01  # ProMP
    num_eval_tasks: int = 40
    eval_seed: int = 0
    inner_estimator: str | None = None  # inner objective: "vpg", "lvc" or "dice" (vpg; lvc with ProMP)

    def __post_init__(self):
        check_choice("outer", self.outer, OUTERS)
        for name, by_outer in OUTER_DEFAULTS.items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, by_outer[self.outer])
        check_sizes("hidden_sizes", self.hidden_sizes)
        check_choice("activation", self.activation, tuple(ACTIVATIONS))
        check_float("init_std", self.init_std, 0.0, 1e3, low_open=True)
        check_int("meta_batch_size", self.meta_batch_size, 1, 100_000)
        check_int("num_episodes", self.num_episodes, 1, 100_000)
        check_float("inner_lr", self.inner_lr, 0.0, 1e3)
        check_int("num_inner_steps", self.num_inner_steps, 1, 100)
        check_bool("first_order", self.first_order)
        check_bool("meta_sgd", self.meta_sgd)
        check_float("gamma", self.gamma, 0.0, 1.0)
        check_float("gae_lambda", self.gae_lambda, 0.0, 1.0)
        check_bool("normalize_advantages", self.normalize_advantages)
        check_trpo_fields(self)
        check_float("outer_lr", self.outer_lr, 0.0, 1e3, low_open=True)
        check_int("num_promp_steps", self.num_promp_steps, 1, 1000)
        check_float("clip_eps", self.clip_eps, 0.0, 1.0, low_open=True, high_open=True)
        check_float("init_inner_kl_penalty", self.init_inner_kl_penalty, 0.0, 1e6)
        check_bool("adaptive_inner_kl_penalty", self.adaptive_inner_kl_penalty)
        check_float("target_inner_step", self.target_inner_step, 0.0, 1e3, low_open=True)
        check_int("num_eval_tasks", self.num_eval_tasks, 1, 1_000_000)
        check_int("eval_seed", self.eval_seed, 0, 2**31 - 1)
        check_choice("inner_estimator", self.inner_estimator, tuple(parts.INNER_OBJECTIVES))
        check_outer_fields(self, self.outer, OUTER_FIELDS)

    @property
    def envs_per_batch(self) -> int:
        """Environments one sampled batch steps at once (tasks x episodes)."""
        return self.meta_batch_size * self.num_episodes

    def inner_objective(self) -> parts.InnerObjective:
        return parts.INNER_OBJECTIVES[self.inner_estimator]()

    def step_size(self) -> parts.StepSize:
        return parts.learned(self.inner_lr) if self.meta_sgd else parts.fixed(self.inner_lr)

    def outer_update(self) -> parts.OuterUpdate:
        if self.outer == "trpo":
            return parts.trpo(self.max_kl, self.cg_iters, self.cg_damping, self.ls_max_steps, self.ls_backtrack_ratio,
                              self.cg_subsample)
        if self.outer == "adam":
            return parts.adam(self.outer_lr)
        return parts.promp(self.outer_lr, self.num_promp_steps, self.clip_eps, self.init_inner_kl_penalty,
                           self.adaptive_inner_kl_penalty, self.target_inner_step, self.num_inner_steps)


class Episodes(NamedTuple):
    """One task's episodes with their advantages; leaves are time-major [T, E, ...]."""

    traj: Trajectory
    advantage: jax.Array  # [T, E]


class MAMLBatch(NamedTuple):
    """What `sample` returns and `update` takes: a meta-batch of M tasks."""

    train: Episodes  # [M, K, T, E, ...] the batch of each inner step
    valid: Episodes  # [M, T, E, ...] the adapted policies' own episodes


class MetaParams(NamedTuple):
    """What the outer loop learns."""

    policy: Params  # the initialisation
    inner_lr: Any  # learned step sizes (params-shaped, Meta-SGD), or None


class MAMLState(NamedTuple):
    meta: MetaParams
    opt_state: Any  # the outer update's state: () for TRPO, optax state for Adam, ProMPState
    step: jax.Array  # [] int32 meta-iterations done


def _tree_stack(trees, axis: int = 0):
    return jax.tree.map(lambda *xs: jnp.stack(xs, axis=axis), *trees)


def _tree_index(tree, i):
    return jax.tree.map(lambda x: x[i], tree)


@dataclass(frozen=True)
class MAML:
    """The pure pieces of MAML-RL for one environment, task distribution, config and parts.

    `inner`, `step_size` and `outer` default to the parts the config names;
    `collector` (where episodes come from) defaults to the env's jitted rollouts.
    """

    env: MetaEnv
    tasks: TaskDistribution
    config: MAMLConfig
    inner: parts.InnerObjective | None = None
    step_size: parts.StepSize | None = None
    outer: parts.OuterUpdate | None = None
    collector: Collector | None = None
    policy: GaussianPolicy = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self):
        if not isinstance(self.env.action_space, Box):
            raise ConfigError("MAML-RL here uses a Gaussian policy: env must have a Box action space")
        defaults = {
            "inner": self.config.inner_objective, "step_size": self.config.step_size,
            "outer": self.config.outer_update, "collector": lambda: JaxCollector(self.env),
        }
        for name, make in defaults.items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, make())
        c = self.config
        # one policy object, so its bound `act` is the same function on every call
        object.__setattr__(self, "policy", GaussianPolicy(obs_dim(self.env), action_dim(self.env), c.hidden_sizes,
                                                          c.activation, c.init_std))

    # ----------------------------------------------------------------- inner loop
    def step_sizes(self, meta: MetaParams) -> Params:
        """The inner learning rate of every parameter (a params-shaped pytree)."""
        return self.step_size.apply(meta.inner_lr, meta.policy)

    def process(self, traj: Trajectory) -> Episodes:
        """Advantages of one task's episodes: linear baseline + GAE, normalised."""
        c = self.config
        discount_t = jnp.full_like(traj.reward, c.gamma)  # [T, E]
        returns = jax.vmap(discounted_returns, in_axes=1, out_axes=1)(traj.reward, discount_t)
        values = linear_baseline(traj.obs, returns, traj.valid)  # [T, E]
        v_T = jnp.zeros(traj.reward.shape[1], traj.reward.dtype)  # [E]
        adv = jax.vmap(gae, in_axes=(1, 1, 1, 0, None), out_axes=1)(
            traj.reward, discount_t, values, v_T, c.gae_lambda
        )  # [T, E]
        if c.normalize_advantages:
            adv = weighted_normalize(adv, traj.valid, mean_fn=episode_mean)
        return Episodes(traj, jax.lax.stop_gradient(adv))

    def inner_loss(self, params: Params, batch: Episodes) -> jax.Array:
        """The inner objective of one task's episodes under `params`."""
        t = batch.traj
        log_prob = self.policy.log_prob(params, t.obs, t.action)  # [T, E]
        return self.inner.loss(log_prob, t.log_prob, batch.advantage, t.valid)

    def adapt_step(self, params: Params, lr: Params, batch: Episodes, first_order: bool) -> Params:
        """One policy-gradient step: params - lr * grad(inner_loss), lr params-shaped."""
        grads = jax.grad(self.inner_loss)(params, batch)
        if first_order:
            grads = jax.lax.stop_gradient(grads)
        return jax.tree.map(lambda p, a, g: p - a * g, params, lr, grads)

    def adapt_path(self, meta: MetaParams, train: Episodes, first_order: bool | None = None):
        """K inner steps; `train` leaves have a leading axis K (one batch per step).

        Returns:
          ([params before step 0, ..., before step K-1], the adapted params).
        """
        first_order = self.config.first_order if first_order is None else first_order
        params, lr = meta.policy, self.step_sizes(meta)
        path = []
        for k in range(self.config.num_inner_steps):
            path.append(params)
            params = self.adapt_step(params, lr, _tree_index(train, k), first_order)
        return path, params

    def adapt(self, meta: MetaParams, train: Episodes, first_order: bool | None = None) -> Params:
        """The adapted policy parameters of one task (see `adapt_path`)."""
        return self.adapt_path(meta, train, first_order)[1]

    # ----------------------------------------------------------------- sampling
    def process_tasks(self, traj: Trajectory) -> Episodes:
        """`process` on every task of a batch ([M, T, E, ...])."""
        return jax.vmap(self.process)(traj)

    def adapt_tasks(self, params: Params, lr: Params, batch: Episodes, params_axis: int | None) -> Params:
        """One first-order inner step on every task: the next sampling policies."""
        step = lambda p, b: self.adapt_step(p, lr, b, first_order=True)
        return jax.vmap(step, in_axes=(params_axis, 0))(params, batch)

    def sample_tasks(self, meta: MetaParams, tasks, key: PRNGKey, num_steps: int | None = None) -> MAMLBatch:
        """Episodes of `tasks`: K adaptation batches, then the adapted policies' batch.

        Each inner step's batch is collected with the policy adapted by the steps before
        it (first order: sampling carries no gradient).
        """
        c = self.config
        num_steps = c.num_inner_steps if num_steps is None else num_steps
        M = jax.tree.leaves(tasks)[0].shape[0]
        tasks = shard_tasks(tasks)
        keys = shard_tasks(jax.random.split(key, M))
        keys = jax.vmap(lambda k: jax.random.split(k, num_steps + 1))(keys)  # [M, K+1, 2]
        meta = jax.lax.stop_gradient(meta)
        lr = self.step_sizes(meta)
        stage = self.collector.stage
        keys = [keys[:, k] for k in range(num_steps + 1)]
        if hasattr(self.collector, "prepare"):  # a host collector: derive every collection's keys before
            for k in keys:                      # the inner steps are dispatched (see HostCollector.prepare)
                self.collector.prepare(k, c.num_episodes)
        collect = lambda params, k, axis: self.collector.episodes(
            self.policy.act, params, tasks, keys[k], c.num_episodes, params_axis=axis)
        params, axis = meta.policy, None
        train = []
        for k in range(num_steps):
            batch = stage(self.process_tasks)(collect(params, k, axis))
            train.append(batch)
            params = stage(self.adapt_tasks, ("params_axis",))(params, lr, batch, params_axis=axis)
            axis = 0
        valid = stage(self.process_tasks)(collect(params, num_steps, axis))
        return MAMLBatch(_tree_stack(train, axis=1), valid)

    def sample(self, state: MAMLState, key: PRNGKey) -> MAMLBatch:
        """A meta-batch on fresh tasks: adaptation batches [M, K, ...] and valid batches [M, ...]."""
        k_tasks, k_eps = jax.random.split(key)
        tasks = self.tasks.sample_batch(k_tasks, self.config.meta_batch_size)
        return self.sample_tasks(state.meta, tasks, k_eps)

    # ----------------------------------------------------------------- outer loss
    def adapted_outputs(self, meta: MetaParams, batch: MAMLBatch):
        """Policy outputs (mean [M, T, E, A], log_std [M, A]) of the adapted policies."""

        def one(train_m, valid_m):
            return self.policy.apply(self.adapt(meta, train_m), valid_m.traj.obs)

        return jax.vmap(one)(batch.train, batch.valid)

    def surrogate_from_outputs(self, outputs, valid: Episodes) -> jax.Array:
        """TRPO surrogate (to minimise) of the adapted policies, mean over tasks."""

        def one(mean, log_std, v):
            t = v.traj
            log_prob = self.policy.distribution(mean, log_std).log_prob(t.action)
            return trpo_surrogate(log_prob, t.log_prob, v.advantage, t.valid, mean_fn=episode_mean)

        return jnp.mean(jax.vmap(one)(*outputs, valid))

    def kl_from_outputs(self, old_outputs, outputs, valid: Episodes) -> jax.Array:
        """Mean KL(old || new) of the adapted policies on the valid episodes."""

        def one(old_mean, old_log_std, mean, log_std, v):
            old = self.policy.distribution(old_mean, old_log_std)
            new = self.policy.distribution(mean, log_std)
            return episode_mean(old.kl_divergence(new), v.traj.valid)

        return jnp.mean(jax.vmap(one)(*old_outputs, *outputs, valid))

    def outer_loss(self, meta: MetaParams, batch: MAMLBatch) -> jax.Array:
        """Post-adaptation surrogate as a function of the meta-parameters."""
        return self.surrogate_from_outputs(self.adapted_outputs(meta, batch), batch.valid)

    def linearize_adaptation(self, meta: MetaParams, batch: MAMLBatch):
        """Linearise the map meta-parameters -> adapted policies' outputs, once.

        With p_{k+1} = p_k - a * g_k(p_k) and a = a(meta) the step sizes, the Jacobian of
        one inner step is I - a * H_k with respect to p_k and -g_k times the Jacobian of a
        with respect to the meta-parameters (zero for a fixed step size), where H_k is the
        inner loss's Hessian on step k's training episodes. H_k is symmetric, so the
        transposed map reuses the same linearised Hessian-vector product instead of
        transposing it, and every linearisation is made once and reused by all CG
        iterations.

        Returns:
          (outputs, jvp, vjp): outputs of the adapted policies (mean [M, T, E, A],
          log_std [M, A]); jvp maps a meta-parameter tangent to output tangents; vjp maps
          output cotangents to a meta-parameter cotangent (summed over tasks).
        """
        M, K = jax.tree.leaves(batch.valid)[0].shape[0], self.config.num_inner_steps  # tasks in this batch
        lr_of = lambda learned: self.step_size.apply(learned, meta.policy)
        lr, lr_jvp = jax.linearize(lr_of, meta.inner_lr)
        lr_vjp = jax.linear_transpose(lr_jvp, meta.inner_lr)
        params = jax.tree.map(lambda x: jnp.broadcast_to(x, (M,) + x.shape), meta.policy)
        grads, hvps = [], []
        for k in range(K):
            batch_k = _tree_index(batch.train, (slice(None), k))  # task axis kept
            grad_fn = jax.vmap(jax.grad(self.inner_loss))
            g_k, hvp_k = jax.linearize(lambda q: grad_fn(q, batch_k), params)
            grads.append(g_k)
            hvps.append(None if self.config.first_order else hvp_k)
            params = jax.tree.map(lambda p, a, g: p - a * g, params, lr, g_k)
        apply_fn = jax.vmap(self.policy.apply)
        outputs, out_jvp = jax.linearize(lambda q: apply_fn(q, batch.valid.traj.obs), params)
        out_vjp = jax.linear_transpose(out_jvp, params)

        def jvp(tangent: MetaParams):
            d = jax.tree.map(lambda x: jnp.broadcast_to(x, (M,) + x.shape), tangent.policy)
            d_lr = lr_jvp(tangent.inner_lr)  # params-shaped, shared by the tasks
            for k in range(K):
                new = d
                if hvps[k] is not None:
                    new = jax.tree.map(lambda x, a, h: x - a * h, new, lr, hvps[k](d))
                d = jax.tree.map(lambda x, da, g: x - da * g, new, d_lr, grads[k])
            return out_jvp(d)

        def vjp(cotangent) -> MetaParams:
            (w,) = out_vjp(cotangent)
            d_lr = None
            for k in reversed(range(K)):
                term = jax.tree.map(lambda g, x: -jnp.sum(g * x, axis=0), grads[k], w)
                d_lr = term if d_lr is None else jax.tree.map(jnp.add, d_lr, term)
                if hvps[k] is not None:
                    w = jax.tree.map(lambda x, h: x - h, w, hvps[k](jax.tree.map(lambda a, x: a * x, lr, w)))
            (d_inner_lr,) = lr_vjp(d_lr)
            return MetaParams(jax.tree.map(lambda x: jnp.sum(x, axis=0), w), d_inner_lr)

        return outputs, jvp, vjp

    # ----------------------------------------------------------------- Algorithm
    def init(self, key: PRNGKey) -> MAMLState:
        params = self.policy.init(key)
        meta = MetaParams(params, self.step_size.init(params))
        return MAMLState(meta, self.outer.init(meta), jnp.zeros((), jnp.int32))

    def update(self, state: MAMLState, batch: MAMLBatch):
        """The outer update of one sampled meta-batch, whatever collected it."""
        meta, opt_state, info = self.outer.update(self, state.meta, state.opt_state, batch)
        return MAMLState(meta, opt_state, state.step + 1), {**batch_returns(batch), **info}

    def eval_tasks(self):
        """The fixed, seeded held-out tasks used by `evaluate` (the benchmark's test split
        where it has one, e.g. Meta-World)."""
        return self.tasks.held_out_batch(jax.random.PRNGKey(self.config.eval_seed), self.config.num_eval_tasks)

    def evaluate(self, state: MAMLState, key: PRNGKey, num_steps: int | None = None) -> AdaptationCurve:
        """Mean return on the held-out tasks after 0, 1, ..., K inner steps."""
        return adaptation_curve(self.sample_tasks(state.meta, self.eval_tasks(), key, num_steps))

    def algorithm(self) -> Algorithm:
        return Algorithm(self.init, self.sample, self.update, self.evaluate, jittable=self.collector.jittable)


def batch_returns(batch: MAMLBatch) -> dict:
    """Mean episode return before adaptation (first inner batch) and after it, and the
    success rates where the simulator reports success."""
    train, valid = batch.train.traj, batch.valid.traj
    out = {
        "pre_return": jnp.mean(jnp.sum(train.reward[:, 0], axis=1)),
        "post_return": jnp.mean(jnp.sum(valid.reward, axis=1)),
    }
    if valid.success is not None:
        out["pre_success"] = jnp.mean(episode_success(train.success[:, 0], train.valid[:, 0], axis=1))
        out["post_success"] = jnp.mean(episode_success(valid.success, valid.valid, axis=1))
    return out


def adaptation_curve(batch: MAMLBatch) -> AdaptationCurve:
    """Mean return (and success rate, where reported) per task after 0..K inner steps,
    from train [N, K, T, E, ...] and valid [N, T, E, ...]."""
    train, valid = batch.train.traj, batch.valid.traj
    pre = jnp.mean(jnp.sum(train.reward, axis=2), axis=-1)  # [N, K]
    post = jnp.mean(jnp.sum(valid.reward, axis=1), axis=-1)  # [N]
    per_task = jnp.concatenate([pre, post[:, None]], axis=1)  # [N, K+1]
    if valid.success is None:
        return AdaptationCurve(jnp.mean(per_task, axis=0), per_task)
    pre_s = jnp.mean(episode_success(train.success, train.valid, axis=2), axis=-1)  # [N, K]
    post_s = jnp.mean(episode_success(valid.success, valid.valid, axis=1), axis=-1)  # [N]
    per_task_s = jnp.concatenate([pre_s, post_s[:, None]], axis=1)  # [N, K+1]
    return AdaptationCurve(jnp.mean(per_task, axis=0), per_task, jnp.mean(per_task_s, axis=0), per_task_s)


def maml(env: MetaEnv, tasks: TaskDistribution | None = None, config: MAMLConfig | None = None, *,
         collector: Collector | None = None, **parts_) -> Algorithm:
    """MAML-RL as an `Algorithm(init, sample, update, evaluate)`.

    Args:
      env: a MetaEnv with a Box action space.
      tasks: its TaskDistribution (default: `env.task_distribution()`).
      config: hyperparameters (default: pytorch-maml-rl's 2D navigation config).
      collector: where episodes come from (default: `env`'s jitted rollouts; a
        `jaxmeta.host.HostCollector` steps a host simulator).
      inner, step_size, outer: parts to use instead of the config's (see
        `jaxmeta.algorithms.maml.parts`).
    """
    tasks = env.task_distribution() if tasks is None else tasks
    return MAML(env, tasks, config or MAMLConfig(), collector=collector, **parts_).algorithm()
