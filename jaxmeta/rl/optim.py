"""Second-order tools: Hessian-vector products, conjugate gradient, line search.

Vectors are flat arrays (`jax.flatten_util.ravel_pytree` the parameters first); the
loops are `lax` loops, so everything here jit-compiles into the caller's program.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
from jax import lax


def hvp(f: Callable[[jax.Array], jax.Array], x: jax.Array, v: jax.Array) -> jax.Array:
    """Hessian of scalar `f` at `x` times `v`, forward-over-reverse."""
    return jax.jvp(jax.grad(f), (x,), (v,))[1]


def gauss_newton_vector_product(
    jvp_fn: Callable, vjp_fn: Callable, out_hvp: Callable, damping: float = 0.0
) -> Callable[[jax.Array], jax.Array]:
    """v -> J^T M J v + damping * v.

    For a divergence D(out(x0), out(x)) that is zero with zero gradient at x = x0, this is
    its exact Hessian (the Fisher matrix for a KL): only a jvp, an output-space product
    and a vjp, no double backward pass.

    Args:
      jvp_fn: v -> J v (e.g. from `jax.linearize`).
      vjp_fn: u -> J^T u (e.g. `jax.linear_transpose` of `jvp_fn`), returning a 1-tuple.
      out_hvp: u -> M u, the divergence's Hessian in output space.
      damping: Tikhonov damping added to the product.
    """

    def product(v):
        (jtmjv,) = vjp_fn(out_hvp(jvp_fn(v)))
        return jtmjv + damping * v

    return product


def conjugate_gradient(
    mvp: Callable[[jax.Array], jax.Array],
    b: jax.Array,
    iters: int,
    residual_tol: float = 1e-10,
    with_product: bool = False,
):
    """Solve A x = b for symmetric positive-definite A given by `mvp`.

    Runs at most `iters` iterations and stops early when r.r < residual_tol, as in
    rllab/pytorch-maml-rl (x starts at 0).

    Returns:
      x, or (x, A x) with `with_product`: A x is b - r, tracked by the iteration itself,
      so a caller that needs x^T A x (TRPO's step size) saves one product.
    """
    x = jnp.zeros_like(b)
    r = b
    p = b
    rdotr = r @ r

    def cond(c):
        i, _, _, _, rdotr = c
        return (i < iters) & (rdotr >= residual_tol)

    def body(c):
        i, x, r, p, rdotr = c
        z = mvp(p)
        alpha = rdotr / (p @ z)
        x = x + alpha * p
        r = r - alpha * z
        new_rdotr = r @ r
        p = r + (new_rdotr / rdotr) * p
        return i + 1, x, r, p, new_rdotr

    _, x, r, _, _ = lax.while_loop(cond, body, (jnp.zeros((), jnp.int32), x, r, p, rdotr))
    return (x, b - r) if with_product else x


def backtracking_line_search(
    evaluate: Callable[[jax.Array], tuple[jax.Array, jax.Array]],
    x0: jax.Array,
    full_step: jax.Array,
    loss0: jax.Array,
    max_constraint: float,
    max_steps: int,
    backtrack_ratio: float,
):
    """Try x0 - ratio^k * full_step for k = 0..max_steps-1 until the loss improves and
    the constraint holds; keep x0 if none does.

    Args:
      evaluate: x -> (loss, constraint).
    Returns:
      (x, loss, constraint, steps_tried, accepted).
    """

    def cond(c):
        k, _, _, _, accepted = c
        return (k < max_steps) & ~accepted

    def body(c):
        k, x, loss, con, _ = c
        cand = x0 - jnp.asarray(backtrack_ratio, x0.dtype) ** k * full_step
        new_loss, new_con = evaluate(cand)
        accepted = (new_loss < loss0) & (new_con < max_constraint)
        x = jnp.where(accepted, cand, x)
        loss = jnp.where(accepted, new_loss, loss)
        con = jnp.where(accepted, new_con, con)
        return k + 1, x, loss, con, accepted

    init = (jnp.zeros((), jnp.int32), x0, loss0, jnp.zeros_like(loss0), jnp.zeros((), bool))
    k, x, loss, con, accepted = lax.while_loop(cond, body, init)
    return x, loss, con, k, accepted


def trpo_step(
    fvp: Callable[[jax.Array], jax.Array],
    grad: jax.Array,
    x0: jax.Array,
    loss0: jax.Array,
    evaluate: Callable[[jax.Array], tuple[jax.Array, jax.Array]],
    max_kl: float,
    cg_iters: int,
    ls_max_steps: int,
    ls_backtrack_ratio: float,
):
    """TRPO's step from x0 (Schulman et al. 2015): s = F^-1 g by `cg_iters` conjugate-
    gradient iterations (F given by `fvp`, g the loss's gradient), scaled so that the
    quadratic model's KL, 0.5 s^T F s, is `max_kl`, then backtracked until the loss
    improves and the KL is below `max_kl`.

    Args:
      evaluate: x -> (loss, KL from the policy at x0).
    Returns:
      `backtracking_line_search`'s (x, loss, kl, steps_tried, accepted).
    """
    step_dir, f_step_dir = conjugate_gradient(fvp, grad, cg_iters, with_product=True)
    shs = 0.5 * step_dir @ f_step_dir
    lagrange = jnp.sqrt(jnp.maximum(shs, 1e-30) / max_kl)
    full_step = step_dir / lagrange
    return backtracking_line_search(evaluate, x0, full_step, loss0, max_kl, ls_max_steps, ls_backtrack_ratio)
