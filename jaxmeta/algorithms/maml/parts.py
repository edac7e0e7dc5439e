"""The parts MAML is composed of, each a NamedTuple of pure functions made by a factory.

- an inner objective (`vpg`, `lvc`, `dice`): the policy-gradient loss of one task's
  episodes that the inner steps descend; all three share the signature
  `loss(log_prob, old_log_prob, advantage, valid)` and their gradient at the sampling
  policy, and differ in the curvature the meta-gradient sees
  (see `jaxmeta.rl.meta_estimators`);
- a step size (`fixed`, `learned`): always a params-shaped pytree of inner learning
  rates, either one scalar broadcast to every parameter or learned per parameter
  alongside the initialisation (Meta-SGD, Li et al. 2017);
- an outer update (`trpo`, `adam`, `promp`): how the meta-parameters move given the
  post-adaptation objective of a sampled meta-batch.

`jaxmeta.maml(env, config)` builds them from the config's names; pass your own to
`MAML(..., inner=..., step_size=..., outer=...)` to try a variant.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.flatten_util import ravel_pytree

from jaxmeta.config import check_float
from jaxmeta.rl import (
    episode_mean, gauss_newton_vector_product, ppo_clip_loss, reinforce_loss, trpo_step,
)
from jaxmeta.rl.meta_estimators import dice_loss, lvc_loss
from jaxmeta.types import Params

if TYPE_CHECKING:  # pragma: no cover
    from jaxmeta.algorithms.maml.core import MAML, MAMLBatch, MetaParams


# --------------------------------------------------------------------------- inner objectives


class InnerObjective(NamedTuple):
    """loss(log_prob [T, E], old_log_prob [T, E], advantage [T, E], valid [T, E]) -> [],
    to minimise; `log_prob` is under the parameters being adapted, the rest is data."""

    loss: Callable[[jax.Array, jax.Array, jax.Array, jax.Array], jax.Array]


def _vpg_loss(log_prob, old_log_prob, advantage, valid):
    del old_log_prob
    return reinforce_loss(log_prob, advantage, valid, mean_fn=episode_mean)


def _lvc_loss(log_prob, old_log_prob, advantage, valid):
    return lvc_loss(log_prob, old_log_prob, advantage, valid)


def _dice_loss(log_prob, old_log_prob, advantage, valid):
    del old_log_prob
    return dice_loss(log_prob, advantage, valid)


def vpg() -> InnerObjective:
    """REINFORCE with advantages (Finn et al. 2017, as pytorch-maml-rl)."""
    return InnerObjective(_vpg_loss)


def lvc() -> InnerObjective:
    """ProMP's low-variance curvature estimator (Rothfuss et al. 2019)."""
    return InnerObjective(_lvc_loss)


def dice() -> InnerObjective:
    """Loaded DiCE (Foerster et al. 2018; Farquhar et al. 2019)."""
    return InnerObjective(_dice_loss)


INNER_OBJECTIVES = {"vpg": vpg, "lvc": lvc, "dice": dice}


# --------------------------------------------------------------------------- step sizes


class StepSize(NamedTuple):
    """init(policy params) -> learned step-size parameters (None when nothing is learned);
    apply(learned, policy params) -> a params-shaped pytree of inner learning rates."""

    init: Callable[[Params], Any]
    apply: Callable[[Any, Params], Params]


def fixed(lr: float) -> StepSize:
    """One scalar step size for every parameter, not meta-learned."""

    def apply(learned, params):
        del learned
        return jax.tree.map(lambda p: jnp.full(p.shape, lr, p.dtype), params)

    return StepSize(lambda params: None, apply)


def learned(init_lr: float) -> StepSize:
    """A step size per parameter, meta-learned with the initialisation (Meta-SGD)."""

    def init(params):
        return jax.tree.map(lambda p: jnp.full(p.shape, init_lr, p.dtype), params)

    return StepSize(init, lambda learned, params: learned)


# --------------------------------------------------------------------------- outer updates


class OuterUpdate(NamedTuple):
    """init(meta) -> optimiser state;
    update(maml, meta, opt_state, batch) -> (meta, opt_state, info): one outer step on a
    sampled meta-batch, using the learner's adaptation (`maml.adapt`, `maml.outer_loss`,
    `maml.linearize_adaptation`, ...)."""

    init: Callable[[Any], Any]
    update: Callable[..., tuple[Any, Any, dict]]


def trpo(max_kl: float = 1e-2, cg_iters: int = 10, cg_damping: float = 1e-5, ls_max_steps: int = 15,
         ls_backtrack_ratio: float = 0.8, cg_subsample: float = 1.0) -> OuterUpdate:
    """TRPO on the post-adaptation surrogate, the KL taken through the adaptation
    (Finn et al. 2017; pytorch-maml-rl's MetaLearner.step).

    The Fisher-vector product is the exact Hessian of the KL at the current point,
    J^T M J, with J the Jacobian of the adapted policies' outputs with respect to the
    meta-parameters (through the inner updates, see `MAML.linearize_adaptation`) and M
    the KL's Hessian in output space: no double backward pass.

    `cg_subsample` < 1 computes the Fisher-vector products of the conjugate gradient on
    the first ceil(cg_subsample * M) tasks of the meta-batch only (tasks are drawn i.i.d.,
    so that is an unbiased estimate of the tasks' mean KL Hessian). The gradient and the
    line search (surrogate and KL) still use every task. Schulman et al. 2015 (TRPO)
    compute the products on a subsample of the data in the same way, as does rllab's
    ConjugateGradientOptimizer (`subsample_factor`): the CG iterations dominate the
    update's cost. 1 (the default) uses every task.
    """
    check_float("cg_subsample", cg_subsample, 0.0, 1.0, low_open=True)

    def update(maml: MAML, meta: MetaParams, opt_state, batch: MAMLBatch):
        valid = batch.valid
        flat0, unravel = ravel_pytree(meta)
        out0, jvp_tree, vjp_tree = maml.linearize_adaptation(meta, batch)
        out0 = jax.lax.stop_gradient(out0)
        loss0, g_out = jax.value_and_grad(maml.surrogate_from_outputs)(out0, valid)
        grad = ravel_pytree(vjp_tree(g_out))[0]

        M = jax.tree.leaves(batch)[0].shape[0]
        m = min(M, math.ceil(cg_subsample * M))
        fisher_out, fisher_valid = out0, valid
        if m < M:  # the Fisher on the first m tasks: their own linearisation
            head = jax.tree.map(lambda x: x[:m], batch)
            fisher_out, jvp_tree, vjp_tree = maml.linearize_adaptation(meta, head)
            fisher_out, fisher_valid = jax.lax.stop_gradient(fisher_out), head.valid
        jvp_fn = lambda v: jvp_tree(unravel(v))
        vjp_fn = lambda u: (ravel_pytree(vjp_tree(u))[0],)
        kl_grad = jax.grad(lambda o: maml.kl_from_outputs(fisher_out, o, fisher_valid))

        def out_hvp(u):
            return jax.jvp(kl_grad, (fisher_out,), (u,))[1]

        fvp = gauss_newton_vector_product(jvp_fn, vjp_fn, out_hvp, cg_damping)

        def evaluate(flat):
            out = maml.adapted_outputs(unravel(flat), batch)
            return maml.surrogate_from_outputs(out, valid), maml.kl_from_outputs(out0, out, valid)

        flat, loss, kl, steps, accepted = trpo_step(
            fvp, grad, flat0, loss0, evaluate, max_kl, cg_iters, ls_max_steps, ls_backtrack_ratio
        )
        info = {
            "loss_before": loss0,
            "loss_after": jnp.where(accepted, loss, loss0),
            "kl": kl,
            "ls_steps": steps,
            "accepted": accepted,
            "grad_norm": jnp.linalg.norm(grad),
        }
        return unravel(flat), opt_state, info

    return OuterUpdate(lambda meta: (), update)


def adam(lr: float | optax.Schedule = 1e-3) -> OuterUpdate:
    """One Adam step on the post-adaptation surrogate per meta-batch (`lr` a float or an optax schedule)."""
    opt = optax.adam(lr)

    def update(maml: MAML, meta: MetaParams, opt_state, batch: MAMLBatch):
        loss, grads = jax.value_and_grad(maml.outer_loss)(meta, batch)
        updates, opt_state = opt.update(grads, opt_state, meta)
        meta = optax.apply_updates(meta, updates)
        return meta, opt_state, {"loss_before": loss, "grad_norm": optax.tree.norm(grads)}

    return OuterUpdate(opt.init, update)


class ProMPState(NamedTuple):
    adam: Any  # optax state
    inner_kl_penalty: jax.Array  # [K] eta_k


def promp_objective(maml: MAML, meta: MetaParams, old_meta: MetaParams, eta: jax.Array, batch: MAMLBatch,
                    clip_eps: float):
    """ProMP's loss (clipped surrogate + eta-weighted inner KLs) and its parts.

    Args:
      meta: current meta-parameters; old_meta: those that sampled the data.
      eta: [K] inner-KL penalty coefficients.
      batch: adaptation batches [M, K, ...] and post-adaptation batches [M, ...].
    Returns:
      (loss, (surrogate loss, inner KLs [K])).
    """

    def one(train_m, valid_m):
        path, adapted = maml.adapt_path(meta, train_m)
        old_path, _ = maml.adapt_path(old_meta, train_m)
        t = valid_m.traj
        log_prob = maml.policy.log_prob(adapted, t.obs, t.action)  # [T, E]
        surr = ppo_clip_loss(log_prob, t.log_prob, valid_m.advantage, t.valid, clip_eps, mean_fn=episode_mean)
        kls = []
        for k, (p, p_old) in enumerate(zip(path, old_path)):
            tk = jax.tree.map(lambda x: x[k], train_m).traj
            new = maml.policy.distribution(*maml.policy.apply(p, tk.obs))
            old = maml.policy.distribution(*maml.policy.apply(jax.lax.stop_gradient(p_old), tk.obs))
            kls.append(episode_mean(old.kl_divergence(new), tk.valid))
        return surr, jnp.stack(kls)

    surr, kls = jax.vmap(one)(batch.train, batch.valid)  # [M], [M, K]
    surr, kls = jnp.mean(surr), jnp.mean(kls, axis=0)
    return surr + jnp.sum(eta * kls), (surr, kls)


def promp(lr: float = 1e-3, num_steps: int = 5, clip_eps: float = 0.3, init_inner_kl_penalty: float = 5e-4,
          adaptive_inner_kl_penalty: bool = False, target_inner_step: float = 0.01,
          num_inner_steps: int = 1) -> OuterUpdate:
    """ProMP's outer loop (Rothfuss et al. 2019, "ProMP: Proximal Meta-Policy Search").

    PPO's clipped surrogate of the adapted policies on their own episodes minus an
    inner-KL penalty that keeps every pre-adaptation policy of the inner steps close to
    the one that sampled its episodes:

        J(theta) = mean_tasks E[min(r A, clip(r, 1 - eps, 1 + eps) A)]
                   - sum_k eta_k mean_tasks KL(pi_{theta_k, old} || pi_{theta_k}),

    with r = pi_{theta'}(a|s) / pi_{theta'_old}(a|s). `num_steps` Adam steps are taken on
    J per sampled meta-batch (the data stay fixed, the adaptation is redone through the
    current theta each step). With `adaptive_inner_kl_penalty`, eta_k is halved when the
    k-th inner KL is below target / 1.5 and doubled when above target * 1.5.
    """
    opt = optax.adam(lr)

    def init(meta):
        dtype = jax.tree.leaves(meta)[0].dtype
        return ProMPState(opt.init(meta), jnp.full((num_inner_steps,), init_inner_kl_penalty, dtype))

    def update(maml: MAML, meta: MetaParams, state: ProMPState, batch: MAMLBatch):
        old_meta = jax.lax.stop_gradient(meta)
        eta = state.inner_kl_penalty
        grad_fn = jax.value_and_grad(lambda m: promp_objective(maml, m, old_meta, eta, batch, clip_eps), has_aux=True)

        def body(carry, _):
            meta, opt_state = carry
            (loss, (surr, kls)), grads = grad_fn(meta)
            updates, opt_state = opt.update(grads, opt_state, meta)
            return (optax.apply_updates(meta, updates), opt_state), (loss, surr, kls, jnp.linalg.norm(ravel_pytree(grads)[0]))

        (meta, adam_state), (loss, surr, kls, gnorm) = jax.lax.scan(body, (meta, state.adam), None, length=num_steps)
        # inner KLs at the final parameters drive the adaptive penalty
        _, (surr_after, kls_after) = promp_objective(maml, meta, old_meta, eta, batch, clip_eps)
        if adaptive_inner_kl_penalty:
            eta = jnp.where(kls_after < target_inner_step / 1.5, eta / 2, eta)
            eta = jnp.where(kls_after > target_inner_step * 1.5, eta * 2, eta)
        info = {
            "loss_before": surr[0],
            "loss_after": surr_after,
            "inner_kl": jnp.mean(kls_after),
            "inner_kl_penalty": jnp.mean(eta),
            "grad_norm": gnorm[0],
        }
        return meta, ProMPState(adam_state, eta), info

    return OuterUpdate(init, update)
