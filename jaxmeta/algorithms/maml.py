"""MAML for reinforcement learning (Finn et al. 2017), with TRPO or Adam outer loop.

The inner loop adapts a Gaussian MLP policy with K policy-gradient steps
(REINFORCE with the linear feature baseline and GAE, as pytorch-maml-rl), each on fresh
episodes sampled with the current adapted policy. The outer loop maximises the return
of the adapted policy on validation episodes, differentiating through the adaptation
(second order unless `first_order`). Meta-SGD (Li et al. 2017) learns a per-parameter
inner learning rate alongside the initialisation.

Everything in `train_step` (sampling, adaptation, meta-gradient, conjugate gradient,
line search) is pure and compiles to one XLA program.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.flatten_util import ravel_pytree

from jaxmeta.algorithms.base import AdaptationCurve, Algorithm
from jaxmeta.config import (
    ConfigError, check_bool, check_choice, check_float, check_int, check_sizes,
)
from jaxmeta.envs.base import Box, action_dim, obs_dim
from jaxmeta.networks import ACTIVATIONS, GaussianPolicy
from jaxmeta.parallel import shard_tasks
from jaxmeta.rl import (
    backtracking_line_search, conjugate_gradient, discounted_returns, episode_mean, gae,
    gauss_newton_vector_product, linear_baseline, reinforce_loss, trpo_surrogate,
    weighted_normalize,
)
from jaxmeta.rl.meta_estimators import dice_loss, lvc_loss
from jaxmeta.rollout import rollout_episodes
from jaxmeta.types import Params, PRNGKey, Trajectory


@dataclass(frozen=True)
class MAMLConfig:
    """MAML-RL hyperparameters; defaults are pytorch-maml-rl's 2d-navigation.yaml."""

    hidden_sizes: tuple[int, ...] = (64, 64)
    activation: str = "tanh"
    init_std: float = 1.0
    meta_batch_size: int = 20  # tasks per meta-iteration
    num_episodes: int = 20  # episodes per task per adaptation step ("fast batch size")
    inner_lr: float = 0.1  # "fast lr"; the initial value with meta_sgd
    num_inner_steps: int = 1
    first_order: bool = False
    meta_sgd: bool = False
    gamma: float = 0.99
    gae_lambda: float = 1.0
    normalize_advantages: bool = True
    outer: str = "trpo"  # "trpo" or "adam"
    max_kl: float = 1e-2
    cg_iters: int = 10
    cg_damping: float = 1e-5
    ls_max_steps: int = 15
    ls_backtrack_ratio: float = 0.8
    outer_lr: float = 1e-3  # Adam outer loop only
    num_eval_tasks: int = 40
    eval_seed: int = 0
    inner_estimator: str = "vpg"  # inner objective: "vpg", "lvc" (ProMP) or "dice" (Loaded DiCE)

    def __post_init__(self):
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
        check_choice("outer", self.outer, ("trpo", "adam"))
        check_float("max_kl", self.max_kl, 0.0, 1e3, low_open=True)
        check_int("cg_iters", self.cg_iters, 1, 1000)
        check_float("cg_damping", self.cg_damping, 0.0, 1e3)
        check_int("ls_max_steps", self.ls_max_steps, 1, 1000)
        check_float("ls_backtrack_ratio", self.ls_backtrack_ratio, 0.0, 1.0, low_open=True, high_open=True)
        check_float("outer_lr", self.outer_lr, 0.0, 1e3, low_open=True)
        check_int("num_eval_tasks", self.num_eval_tasks, 1, 1_000_000)
        check_int("eval_seed", self.eval_seed, 0, 2**31 - 1)
        check_choice("inner_estimator", self.inner_estimator, ("vpg", "lvc", "dice"))


class Batch(NamedTuple):
    """One task's episodes with their advantages; leaves are time-major [T, E, ...]."""

    traj: Trajectory
    advantage: jax.Array  # [T, E]


class MAMLState(NamedTuple):
    meta: dict  # {"policy": params} plus {"inner_lr": params-shaped} with Meta-SGD
    opt_state: Any  # optax state for the Adam outer loop, () for TRPO
    step: jax.Array  # [] int32 meta-iterations done


def _tree_index(tree, i):
    return jax.tree.map(lambda x: x[i], tree)


def _tree_stack(trees):
    return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


@dataclass(frozen=True)
class MAML:
    """The pure pieces of MAML-RL for one environment, task distribution and config."""

    env: Any
    tasks: Any  # TaskDistribution
    config: MAMLConfig

    def __post_init__(self):
        if not isinstance(self.env.action_space, Box):
            raise ConfigError("MAML-RL here uses a Gaussian policy: env must have a Box action space")

    @property
    def policy(self) -> GaussianPolicy:
        c = self.config
        return GaussianPolicy(obs_dim(self.env), action_dim(self.env), c.hidden_sizes, c.activation, c.init_std)

    # ----------------------------------------------------------------- inner loop
    def inner_lr(self, meta: dict):
        """The step size: a scalar, or a params-shaped pytree with Meta-SGD."""
        return meta["inner_lr"] if self.config.meta_sgd else self.config.inner_lr

    def process(self, traj: Trajectory) -> Batch:
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
        return Batch(traj, jax.lax.stop_gradient(adv))

    def inner_loss(self, params: Params, batch: Batch) -> jax.Array:
        """Inner loss of one task's episodes under `params`: REINFORCE, LVC or DiCE.

        The three share their gradient at the sampling policy and differ in the Hessian
        that the meta-gradient sees (see `jaxmeta.rl.meta_estimators`).
        """
        t = batch.traj
        log_prob = self.policy.log_prob(params, t.obs, t.action)  # [T, E]
        if self.config.inner_estimator == "lvc":
            return lvc_loss(log_prob, t.log_prob, batch.advantage, t.valid)
        if self.config.inner_estimator == "dice":
            return dice_loss(log_prob, batch.advantage, t.valid)
        return reinforce_loss(log_prob, batch.advantage, t.valid, mean_fn=episode_mean)

    def adapt_step(self, params: Params, lr, batch: Batch, first_order: bool) -> Params:
        """One policy-gradient step: params - lr * grad(inner_loss)."""
        grads = jax.grad(self.inner_loss)(params, batch)
        if first_order:
            grads = jax.lax.stop_gradient(grads)
        return jax.tree.map(lambda p, a, g: p - a * g, params, _broadcast_lr(lr, params), grads)

    def adapt(self, meta: dict, train: Batch, first_order: bool | None = None) -> Params:
        """K inner steps; `train` leaves have a leading axis K (one batch per step).

        Args:
          meta: meta-parameters.
          train: the K batches the inner steps use, stacked on axis 0.
          first_order: stop gradients through the inner gradients (default: config).
        Returns:
          the adapted policy parameters.
        """
        first_order = self.config.first_order if first_order is None else first_order
        params, lr = meta["policy"], self.inner_lr(meta)
        for k in range(self.config.num_inner_steps):
            params = self.adapt_step(params, lr, _tree_index(train, k), first_order)
        return params

    # ----------------------------------------------------------------- sampling
    def sample_task(self, meta: dict, task, key: PRNGKey, num_steps: int | None = None):
        """Episodes for one task: K adaptation batches, then the adapted policy's batch.

        Returns:
          (train Batch with leading axis K, valid Batch).
        """
        num_steps = self.config.num_inner_steps if num_steps is None else num_steps
        meta = jax.lax.stop_gradient(meta)
        params, lr = meta["policy"], self.inner_lr(meta)
        keys = jax.random.split(key, num_steps + 1)
        train = []
        for k in range(num_steps):
            batch = self.process(self._rollout(params, task, keys[k]))
            train.append(batch)
            params = self.adapt_step(params, lr, batch, first_order=True)
        valid = self.process(self._rollout(params, task, keys[-1]))
        return _tree_stack(train), valid

    def _rollout(self, params, task, key):
        return rollout_episodes(self.env, self.policy.act, params, task, key, self.config.num_episodes)

    def sample(self, meta: dict, key: PRNGKey):
        """A meta-batch: tasks, their adaptation batches [M, K, ...] and valid batches [M, ...]."""
        k_tasks, k_eps = jax.random.split(key)
        tasks = shard_tasks(self.tasks.sample_batch(k_tasks, self.config.meta_batch_size))
        keys = shard_tasks(jax.random.split(k_eps, self.config.meta_batch_size))
        train, valid = jax.vmap(self.sample_task, in_axes=(None, 0, 0))(meta, tasks, keys)
        return tasks, train, valid

    # ----------------------------------------------------------------- outer loss
    def adapted_outputs(self, meta: dict, train: Batch, valid: Batch):
        """Policy outputs (mean [M, T, E, A], log_std [M, A]) of the adapted policies."""

        def one(train_m, valid_m):
            return self.policy.apply(self.adapt(meta, train_m), valid_m.traj.obs)

        return jax.vmap(one)(train, valid)

    def surrogate_from_outputs(self, outputs, valid: Batch) -> jax.Array:
        """TRPO surrogate (to minimise) of the adapted policies, mean over tasks."""

        def one(mean, log_std, v):
            t = v.traj
            log_prob = self.policy.distribution(mean, log_std).log_prob(t.action)
            return trpo_surrogate(log_prob, t.log_prob, v.advantage, t.valid, mean_fn=episode_mean)

        return jnp.mean(jax.vmap(one)(*outputs, valid))

    def kl_from_outputs(self, old_outputs, outputs, valid: Batch) -> jax.Array:
        """Mean KL(old || new) of the adapted policies on the valid episodes."""

        def one(old_mean, old_log_std, mean, log_std, v):
            old = self.policy.distribution(old_mean, old_log_std)
            new = self.policy.distribution(mean, log_std)
            return episode_mean(old.kl_divergence(new), v.traj.valid)

        return jnp.mean(jax.vmap(one)(*old_outputs, *outputs, valid))

    def outer_loss(self, meta: dict, train: Batch, valid: Batch) -> jax.Array:
        """Post-adaptation surrogate as a function of the meta-parameters."""
        return self.surrogate_from_outputs(self.adapted_outputs(meta, train, valid), valid)

    # ----------------------------------------------------------------- outer updates
    def linearize_adaptation(self, meta: dict, train: Batch, valid: Batch):
        """Linearise the map meta-parameters -> adapted policies' outputs, once.

        With p_{k+1} = p_k - a * g_k(p_k), the Jacobian of one inner step is
        I - a * H_k (plus -g_k for a learned step size a), where H_k is the inner loss's
        Hessian on step k's training episodes. H_k is symmetric, so the transposed map
        reuses the same linearised Hessian-vector product instead of transposing it, and
        every linearisation is made once and reused by all CG iterations.

        Returns:
          (outputs, jvp, vjp): outputs of the adapted policies (mean [M, T, E, A],
          log_std [M, A]); jvp maps a meta-parameter tangent to output tangents; vjp maps
          output cotangents to a meta-parameter cotangent (summed over tasks).
        """
        M, K = self.config.meta_batch_size, self.config.num_inner_steps
        lr = self.inner_lr(meta)
        lr_tree = _broadcast_lr(lr, meta["policy"])
        params = jax.tree.map(lambda x: jnp.broadcast_to(x, (M,) + x.shape), meta["policy"])
        grads, hvps = [], []
        for k in range(K):
            batch_k = _tree_index(train, (slice(None), k))  # task axis kept
            grad_fn = jax.vmap(jax.grad(self.inner_loss))
            g_k, hvp_k = jax.linearize(lambda q: grad_fn(q, batch_k), params)
            grads.append(g_k)
            hvps.append(None if self.config.first_order else hvp_k)
            params = jax.tree.map(lambda p, a, g: p - a * g, params, lr_tree, g_k)
        apply_fn = jax.vmap(self.policy.apply)
        outputs, out_jvp = jax.linearize(lambda q: apply_fn(q, valid.traj.obs), params)
        out_vjp = jax.linear_transpose(out_jvp, params)

        def jvp(tangent):
            d = jax.tree.map(lambda x: jnp.broadcast_to(x, (M,) + x.shape), tangent["policy"])
            for k in range(K):
                new = d
                if hvps[k] is not None:
                    new = jax.tree.map(lambda x, a, h: x - a * h, new, lr_tree, hvps[k](d))
                if self.config.meta_sgd:
                    new = jax.tree.map(lambda x, da, g: x - da * g, new, tangent["inner_lr"], grads[k])
                d = new
            return out_jvp(d)

        def vjp(cotangent):
            (w,) = out_vjp(cotangent)
            d_lr = None
            for k in reversed(range(K)):
                if self.config.meta_sgd:
                    term = jax.tree.map(lambda g, x: -jnp.sum(g * x, axis=0), grads[k], w)
                    d_lr = term if d_lr is None else jax.tree.map(jnp.add, d_lr, term)
                if hvps[k] is not None:
                    w = jax.tree.map(lambda x, h: x - h, w, hvps[k](jax.tree.map(lambda a, x: a * x, lr_tree, w)))
            out = {"policy": jax.tree.map(lambda x: jnp.sum(x, axis=0), w)}
            if self.config.meta_sgd:
                out["inner_lr"] = d_lr
            return out

        return outputs, jvp, vjp

    def trpo_update(self, meta: dict, train: Batch, valid: Batch):
        """One TRPO step on the post-adaptation surrogate, KL taken through adaptation.

        The Fisher-vector product is the exact Hessian of the KL at the current point,
        J^T M J, with J the Jacobian of the adapted policies' outputs with respect to the
        meta-parameters (through the inner update, see `linearize_adaptation`) and M the
        KL's Hessian in output space: no double backward pass.
        """
        c = self.config
        flat0, unravel = ravel_pytree(meta)
        out0, jvp_tree, vjp_tree = self.linearize_adaptation(meta, train, valid)
        out0 = jax.lax.stop_gradient(out0)
        jvp_fn = lambda v: jvp_tree(unravel(v))
        vjp_fn = lambda u: (ravel_pytree(vjp_tree(u))[0],)
        loss0, g_out = jax.value_and_grad(self.surrogate_from_outputs)(out0, valid)
        (grad,) = vjp_fn(g_out)

        kl_grad = jax.grad(lambda o: self.kl_from_outputs(out0, o, valid))

        def out_hvp(u):
            return jax.jvp(kl_grad, (out0,), (u,))[1]

        fvp = gauss_newton_vector_product(jvp_fn, vjp_fn, out_hvp, c.cg_damping)
        step_dir, f_step_dir = conjugate_gradient(fvp, grad, c.cg_iters, with_product=True)
        shs = 0.5 * step_dir @ f_step_dir
        lagrange = jnp.sqrt(jnp.maximum(shs, 1e-30) / c.max_kl)
        full_step = step_dir / lagrange

        def evaluate(flat):
            out = self.adapted_outputs(unravel(flat), train, valid)
            return self.surrogate_from_outputs(out, valid), self.kl_from_outputs(out0, out, valid)

        flat, loss, kl, steps, accepted = backtracking_line_search(
            evaluate, flat0, full_step, loss0, c.max_kl, c.ls_max_steps, c.ls_backtrack_ratio
        )
        info = {
            "loss_before": loss0,
            "loss_after": jnp.where(accepted, loss, loss0),
            "kl": kl,
            "ls_steps": steps,
            "accepted": accepted,
            "grad_norm": jnp.linalg.norm(grad),
        }
        return unravel(flat), info

    def _adam(self) -> optax.GradientTransformation:
        return optax.adam(self.config.outer_lr)

    def adam_update(self, meta: dict, opt_state, train: Batch, valid: Batch):
        """One Adam step on the post-adaptation surrogate."""
        loss, grads = jax.value_and_grad(self.outer_loss)(meta, train, valid)
        updates, opt_state = self._adam().update(grads, opt_state, meta)
        meta = optax.apply_updates(meta, updates)
        grad_norm = optax.tree.norm(grads)
        return meta, opt_state, {"loss_before": loss, "grad_norm": grad_norm}

    # ----------------------------------------------------------------- Algorithm
    def init(self, key: PRNGKey) -> MAMLState:
        params = self.policy.init(key)
        meta = {"policy": params}
        if self.config.meta_sgd:
            meta["inner_lr"] = jax.tree.map(lambda p: jnp.full(p.shape, self.config.inner_lr, p.dtype), params)
        opt_state = self._adam().init(meta) if self.config.outer == "adam" else ()
        return MAMLState(meta, opt_state, jnp.zeros((), jnp.int32))

    def train_step(self, state: MAMLState, key: PRNGKey):
        """One meta-iteration: sample, adapt, outer update. Pure and jittable."""
        _, train, valid = self.sample(state.meta, key)
        return self.update(state, train, valid)

    def update(self, state: MAMLState, train: Batch, valid: Batch):
        """The outer update of one sampled meta-batch (also used by the host-simulator path)."""
        if self.config.outer == "trpo":
            meta, info = self.trpo_update(state.meta, train, valid)
            opt_state = state.opt_state
        else:
            meta, opt_state, info = self.adam_update(state.meta, state.opt_state, train, valid)
        return MAMLState(meta, opt_state, state.step + 1), {**batch_returns(train, valid), **info}

    def eval_tasks(self):
        """The fixed, seeded held-out tasks used by `evaluate`."""
        return self.tasks.sample_batch(jax.random.PRNGKey(self.config.eval_seed), self.config.num_eval_tasks)

    def evaluate(self, state: MAMLState, key: PRNGKey, num_steps: int | None = None) -> AdaptationCurve:
        """Mean return on the held-out tasks after 0, 1, ..., K inner steps."""
        num_steps = self.config.num_inner_steps if num_steps is None else num_steps
        tasks = self.eval_tasks()
        keys = jax.random.split(key, self.config.num_eval_tasks)
        sample = lambda task, k: self.sample_task(state.meta, task, k, num_steps)
        train, valid = jax.vmap(sample)(tasks, keys)
        return adaptation_curve(train, valid)

    def algorithm(self) -> Algorithm:
        return Algorithm(self.init, self.train_step, self.evaluate)


def batch_returns(train: Batch, valid: Batch) -> dict:
    """Mean episode return before adaptation (first inner batch) and after it."""
    return {
        "pre_return": jnp.mean(jnp.sum(train.traj.reward[:, 0], axis=1)),
        "post_return": jnp.mean(jnp.sum(valid.traj.reward, axis=1)),
    }


def adaptation_curve(train: Batch, valid: Batch) -> AdaptationCurve:
    """Mean return per task after 0..K inner steps, from train [N, K, ...] and valid [N, ...]."""
    pre = jnp.mean(jnp.sum(train.traj.reward, axis=2), axis=-1)  # [N, K]
    post = jnp.mean(jnp.sum(valid.traj.reward, axis=1), axis=-1)  # [N]
    per_task = jnp.concatenate([pre, post[:, None]], axis=1)  # [N, K+1]
    return AdaptationCurve(jnp.mean(per_task, axis=0), per_task)


def _broadcast_lr(lr, params):
    """A scalar step size as a params-shaped pytree; a pytree passes through."""
    if isinstance(lr, (int, float)) or (hasattr(lr, "ndim") and lr.ndim == 0 and not isinstance(lr, dict)):
        return jax.tree.map(lambda _: lr, params)
    return lr


def maml(env, tasks=None, config: MAMLConfig | None = None) -> Algorithm:
    """MAML-RL as an `Algorithm(init, train_step, evaluate)`.

    Args:
      env: a MetaEnv with a Box action space.
      tasks: its TaskDistribution (default: `env.task_distribution()`).
      config: hyperparameters (default: pytorch-maml-rl's 2D navigation config).
    """
    tasks = env.task_distribution() if tasks is None else tasks
    return MAML(env, tasks, config or MAMLConfig()).algorithm()
