"""ProMP (Rothfuss et al. 2019, "ProMP: Proximal Meta-Policy Search") as a MAML outer loop.

The inner loop is MAML's, with the low-variance curvature (LVC) estimator: one or more
policy-gradient steps on -E[pi / pi_old * A]. The outer objective is PPO's clipped
surrogate of the adapted policies on their own episodes minus an inner-KL penalty
that keeps every pre-adaptation policy of the inner steps close to the one that
sampled its episodes:

    J(theta) = mean_tasks E[min(r A, clip(r, 1 - eps, 1 + eps) A)]
               - sum_k eta_k mean_tasks KL(pi_{theta_k, old} || pi_{theta_k}),

with r = pi_{theta'}(a|s) / pi_{theta'_old}(a|s). `num_promp_steps` Adam steps are
taken on J per sampled meta-batch (the data stay fixed, the adaptation is redone through
the current theta each step). With `adaptive_inner_kl_penalty`, eta_k is halved when the
k-th inner KL is below target / 1.5 and doubled when above target * 1.5, as ProMP does.
Defaults are ProMP's MuJoCo run script (pro-mp_run_mujoco.py).

Sampling, advantage processing and evaluation are MAML's (`jaxmeta.algorithms.maml`).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.flatten_util import ravel_pytree

from jaxmeta.algorithms.base import Algorithm
from jaxmeta.algorithms.maml import MAML, Batch, MAMLConfig, _tree_index, batch_returns
from jaxmeta.config import check_bool, check_float, check_int
from jaxmeta.rl import episode_mean
from jaxmeta.types import Params, PRNGKey


@dataclass(frozen=True)
class ProMPConfig:
    """ProMP hyperparameters; defaults are ProMP's MuJoCo run script."""

    hidden_sizes: tuple[int, ...] = (64, 64)
    activation: str = "tanh"
    init_std: float = 1.0
    meta_batch_size: int = 40
    num_episodes: int = 20  # "rollouts_per_meta_task"
    inner_lr: float = 0.1
    num_inner_steps: int = 1
    inner_estimator: str = "lvc"  # ProMP's; "vpg"/"dice" for ablations
    gamma: float = 0.99
    gae_lambda: float = 1.0
    normalize_advantages: bool = True
    outer_lr: float = 1e-3  # Adam
    num_promp_steps: int = 5  # meta-gradient steps per sampled meta-batch
    clip_eps: float = 0.3
    init_inner_kl_penalty: float = 5e-4
    adaptive_inner_kl_penalty: bool = False
    target_inner_step: float = 0.01
    num_eval_tasks: int = 40
    eval_seed: int = 0

    def __post_init__(self):
        self.maml_config  # validates every field shared with MAMLConfig, with its ranges
        check_int("num_promp_steps", self.num_promp_steps, 1, 1000)
        check_float("clip_eps", self.clip_eps, 0.0, 1.0, low_open=True, high_open=True)
        check_float("init_inner_kl_penalty", self.init_inner_kl_penalty, 0.0, 1e6)
        check_bool("adaptive_inner_kl_penalty", self.adaptive_inner_kl_penalty)
        check_float("target_inner_step", self.target_inner_step, 0.0, 1e3, low_open=True)

    @property
    def maml_config(self) -> MAMLConfig:
        """The MAML config that sampling, adaptation and evaluation run with."""
        shared = {f.name for f in dataclasses.fields(MAMLConfig)} & {f.name for f in dataclasses.fields(self)}
        return MAMLConfig(outer="adam", **{k: getattr(self, k) for k in shared})


class ProMPState(NamedTuple):
    meta: dict  # {"policy": params}
    opt_state: Any  # Adam state
    inner_kl_penalty: jax.Array  # [K] eta_k
    step: jax.Array  # [] int32 meta-iterations done


def clipped_surrogate(log_prob, old_log_prob, advantage, valid, clip_eps: float) -> jax.Array:
    """PPO's clipped surrogate (to minimise) with pytorch-maml-rl's episode mean; [T, E] in."""
    ratio = jnp.exp(log_prob - old_log_prob)  # [T, E]
    clipped = jnp.clip(ratio, 1.0 - clip_eps, 1.0 + clip_eps)
    return -episode_mean(jnp.minimum(ratio * advantage, clipped * advantage), valid)


@dataclass(frozen=True)
class ProMP(MAML):
    """MAML's sampling and inner loop (with `config = promp.maml_config`), ProMP's outer loop."""

    promp: ProMPConfig = ProMPConfig()

    def adapt_path(self, meta: dict, train: Batch) -> tuple[list[Params], Params]:
        """Parameters before each inner step ([theta_0, ..., theta_{K-1}]) and after the last."""
        params, lr = meta["policy"], self.inner_lr(meta)
        path = []
        for k in range(self.config.num_inner_steps):
            path.append(params)
            params = self.adapt_step(params, lr, _tree_index(train, k), self.config.first_order)
        return path, params

    def promp_objective(self, meta: dict, old_meta: dict, eta: jax.Array, train: Batch, valid: Batch):
        """ProMP's loss (clipped surrogate + eta-weighted inner KLs) and its parts.

        Args:
          meta: current meta-parameters; old_meta: those that sampled the data.
          eta: [K] inner-KL penalty coefficients.
          train: adaptation batches [M, K, ...]; valid: post-adaptation batches [M, ...].
        Returns:
          (loss, (surrogate loss, inner KLs [K])).
        """
        c = self.promp

        def one(train_m, valid_m):
            path, adapted = self.adapt_path(meta, train_m)
            old_path, _ = self.adapt_path(old_meta, train_m)
            t = valid_m.traj
            log_prob = self.policy.log_prob(adapted, t.obs, t.action)  # [T, E]
            surr = clipped_surrogate(log_prob, t.log_prob, valid_m.advantage, t.valid, c.clip_eps)
            kls = []
            for k, (p, p_old) in enumerate(zip(path, old_path)):
                tk = _tree_index(train_m, k).traj
                new = self.policy.distribution(*self.policy.apply(p, tk.obs))
                old = self.policy.distribution(*self.policy.apply(jax.lax.stop_gradient(p_old), tk.obs))
                kls.append(episode_mean(old.kl_divergence(new), tk.valid))
            return surr, jnp.stack(kls)

        surr, kls = jax.vmap(one)(train, valid)  # [M], [M, K]
        surr, kls = jnp.mean(surr), jnp.mean(kls, axis=0)
        return surr + jnp.sum(eta * kls), (surr, kls)

    def promp_update(self, state: ProMPState, train: Batch, valid: Batch):
        """`num_promp_steps` Adam steps on the ProMP objective for one meta-batch."""
        c = self.promp
        opt = optax.adam(c.outer_lr)
        old_meta = jax.lax.stop_gradient(state.meta)
        grad_fn = jax.value_and_grad(self.promp_objective, has_aux=True)

        def body(carry, _):
            meta, opt_state = carry
            (loss, (surr, kls)), grads = grad_fn(meta, old_meta, state.inner_kl_penalty, train, valid)
            updates, opt_state = opt.update(grads, opt_state, meta)
            return (optax.apply_updates(meta, updates), opt_state), (loss, surr, kls, jnp.linalg.norm(ravel_pytree(grads)[0]))

        (meta, opt_state), (loss, surr, kls, gnorm) = jax.lax.scan(
            body, (state.meta, state.opt_state), None, length=c.num_promp_steps
        )
        # inner KLs at the final parameters drive the adaptive penalty
        _, (surr_after, kls_after) = self.promp_objective(meta, old_meta, state.inner_kl_penalty, train, valid)
        eta = state.inner_kl_penalty
        if c.adaptive_inner_kl_penalty:
            eta = jnp.where(kls_after < c.target_inner_step / 1.5, eta / 2, eta)
            eta = jnp.where(kls_after > c.target_inner_step * 1.5, eta * 2, eta)
        info = {
            "loss_before": surr[0],
            "loss_after": surr_after,
            "inner_kl": jnp.mean(kls_after),
            "inner_kl_penalty": jnp.mean(eta),
            "grad_norm": gnorm[0],
        }
        return meta, opt_state, eta, info

    def init(self, key: PRNGKey) -> ProMPState:
        meta = {"policy": self.policy.init(key)}
        opt_state = optax.adam(self.promp.outer_lr).init(meta)
        eta = jnp.full((self.promp.num_inner_steps,), self.promp.init_inner_kl_penalty, jnp.float32)
        return ProMPState(meta, opt_state, eta, jnp.zeros((), jnp.int32))

    def update(self, state: ProMPState, train: Batch, valid: Batch):
        """ProMP's clipped updates of one sampled meta-batch (MAML's `train_step` calls it)."""
        meta, opt_state, eta, info = self.promp_update(state, train, valid)
        return ProMPState(meta, opt_state, eta, state.step + 1), {**batch_returns(train, valid), **info}

    def algorithm(self) -> Algorithm:
        return Algorithm(self.init, self.train_step, self.evaluate)


def make_promp(env, tasks=None, config: ProMPConfig | None = None) -> ProMP:
    """The ProMP object (pure pieces) for an environment, task distribution and config."""
    config = config or ProMPConfig()
    tasks = env.task_distribution() if tasks is None else tasks
    return ProMP(env, tasks, config.maml_config, config)


def promp(env, tasks=None, config: ProMPConfig | None = None) -> Algorithm:
    """ProMP as an `Algorithm(init, train_step, evaluate)`.

    Args:
      env: a MetaEnv with a Box action space.
      tasks: its TaskDistribution (default: `env.task_distribution()`).
      config: hyperparameters (default: ProMP's MuJoCo run script).
    """
    return make_promp(env, tasks, config).algorithm()
