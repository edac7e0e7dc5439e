"""Supervised few-shot MAML: sinusoid regression, the MAML paper's first example.

Finn et al. 2017, "Model-Agnostic Meta-Learning for Fast Adaptation of Deep Networks",
section 5.1 (Algorithm 2). A task T_i is a sinusoid (`jaxmeta.envs.Sinusoid`); its loss
is the mean squared error of an MLP 1 -> 40 -> 40 -> 1 (ReLU). For every task of a
meta-batch, starting from the meta-parameters theta, take `num_inner_steps` gradient
steps on K points D_i of the task,

    theta'_i = theta - alpha * grad_theta L_{D_i}(f_theta)        (repeated from theta'_i),

and update theta by Adam on the loss of the adapted models on fresh points D'_i of the
same tasks, differentiated through the inner steps (second order by default;
`first_order` treats the inner gradients as constants, first-order MAML):

    theta <- theta - beta * Adam(grad_theta sum_i L_{D'_i}(f_{theta'_i})).

With `meta_sgd` the step size alpha is a per-parameter array learned with theta
(Li et al. 2017, "Meta-SGD: Learning to Learn Quickly for Few-Shot Learning", which
uses the same sinusoid benchmark). Every task of a meta-batch is one `vmap` lane; one
meta-iteration (sampling the points, inner steps, meta-gradient, Adam) is one program.

The paper's baseline is a model *pretrained on all tasks*: the same network trained by
plain regression on points of random tasks, then fine-tuned at test time by the same
gradient steps. `pretrain=True` trains it in the same `update`, on every point of the
meta-batch MAML learns from (support and query points pooled) with its own Adam, so it
gets exactly MAML's budget of iterations and data, and is checkpointed and resumed with
the run. `final_table` compares both on the same held-out tasks and points after
0, 1, ..., `num_eval_steps` gradient steps, beside the pretrained model fine-tuned with
a step size tuned on training tasks (the paper: "an automatically tuned step size").

The paper's setting: K = 5 or 10, one inner step with alpha = 0.01 (up to 10 at test
time), meta-batch 25, Adam beta = 1e-3, 70,000 meta-iterations. The defaults are those,
except the number of meta-iterations, which is the run's (`jaxmeta train --num-batches`;
the shipped config `maml_regression-sinusoid-k10` trains 10,000, a CPU-sized run; see
docs/benchmarks.md for what it reaches).

The adaptation curve (`evaluate`, an `AdaptationCurve`) holds mean squared errors in its
`returns` field: lower is better (the registry names the score "mse" for the driver's
plots and progress bar).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax
from jax.flatten_util import ravel_pytree

from jaxmeta.algorithms.base import Algorithm
from jaxmeta.algorithms.maml import parts
from jaxmeta.algorithms.maml.core import MetaParams, _tree_stack
from jaxmeta.config import ConfigError, check_bool, check_choice, check_float, check_int, check_sizes
from jaxmeta.envs.base import TaskDistribution
from jaxmeta.envs.sinusoid import Sinusoid
from jaxmeta.networks import ACTIVATIONS, MLP
from jaxmeta.parallel import shard_tasks
from jaxmeta.types import AdaptationCurve, Params, PRNGKey, default_float

# step sizes the tuned pretrained baseline chooses from (on training tasks)
TUNING_LRS = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3)


@dataclass(frozen=True)
class MAMLRegressionConfig:
    """Supervised MAML hyperparameters; defaults are the MAML paper's sinusoid setting
    (K = 10 shots, one inner step of 0.01, meta-batch 25, Adam 1e-3)."""

    hidden_sizes: tuple[int, ...] = (40, 40)
    activation: str = "relu"
    num_shots: int = 10  # K: points of a task for the inner steps
    num_query: int | None = None  # fresh points of the same task for the outer loss (None: K)
    num_inner_steps: int = 1
    inner_lr: float = 0.01  # alpha; the initial value with meta_sgd
    meta_sgd: bool = False  # learn a step size per parameter with the initialisation (Li et al. 2017)
    first_order: bool = False
    meta_batch_size: int = 25
    outer_lr: float = 1e-3  # beta (Adam)
    pretrain: bool = True  # also train the pretrained-on-all-tasks baseline, same data and budget
    num_eval_tasks: int = 600
    num_eval_points: int = 100  # points per held-out task on which the MSE is measured
    num_eval_steps: int = 10  # gradient steps on the adaptation curve (0..N)
    eval_seed: int = 0

    def __post_init__(self):
        check_sizes("hidden_sizes", self.hidden_sizes)
        check_choice("activation", self.activation, tuple(ACTIVATIONS))
        check_int("num_shots", self.num_shots, 1, 100_000)
        if self.num_query is not None:
            check_int("num_query", self.num_query, 1, 100_000)
        check_int("num_inner_steps", self.num_inner_steps, 1, 100)
        check_float("inner_lr", self.inner_lr, 0.0, 1e3)
        check_bool("meta_sgd", self.meta_sgd)
        check_bool("first_order", self.first_order)
        check_int("meta_batch_size", self.meta_batch_size, 1, 1_000_000)
        check_float("outer_lr", self.outer_lr, 0.0, 1e3, low_open=True)
        check_bool("pretrain", self.pretrain)
        check_int("num_eval_tasks", self.num_eval_tasks, 1, 1_000_000)
        check_int("num_eval_points", self.num_eval_points, 1, 100_000)
        check_int("num_eval_steps", self.num_eval_steps, 1, 100)
        check_int("eval_seed", self.eval_seed, 0, 2**31 - 1)

    @property
    def query_size(self) -> int:
        return self.num_shots if self.num_query is None else self.num_query

    def step_size(self) -> parts.StepSize:
        return parts.learned(self.inner_lr) if self.meta_sgd else parts.fixed(self.inner_lr)

    def outer_update(self) -> parts.OuterUpdate:
        return parts.adam(self.outer_lr)


class RegressionBatch(NamedTuple):
    """Points of M tasks: K support points for the inner steps, Q query points for the loss after them."""

    x_support: jax.Array  # [M, K, 1]
    y_support: jax.Array  # [M, K, 1]
    x_query: jax.Array  # [M, Q, 1]
    y_query: jax.Array  # [M, Q, 1]


class MAMLRegressionState(NamedTuple):
    meta: MetaParams  # policy: the network's initialisation; inner_lr: Meta-SGD step sizes or None
    opt_state: Any  # Adam's
    pretrained: Params | None  # the pretrained-on-all-tasks baseline (None without `pretrain`)
    pretrained_opt_state: Any  # its Adam state (None without `pretrain`)
    step: jax.Array  # [] int32 meta-iterations done


@dataclass(frozen=True)
class MAMLRegression:
    """The pure pieces of supervised MAML for a task family, config and parts.

    `step_size` (fixed, or learned: Meta-SGD) and `outer` (Adam) default to the config's.
    """

    env: Sinusoid
    tasks: TaskDistribution
    config: MAMLRegressionConfig
    step_size: parts.StepSize | None = None
    outer: parts.OuterUpdate | None = None
    net: MLP = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self):
        if not hasattr(self.env, "sample_points"):
            raise ConfigError(f"supervised MAML needs a regression task family with sample_points (e.g. "
                              f"Sinusoid), got {type(self.env).__name__}", "env")
        c = self.config
        for name, make in {"step_size": c.step_size, "outer": c.outer_update}.items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, make())
        object.__setattr__(self, "net", MLP(c.hidden_sizes, 1, c.activation))

    # ----------------------------------------------------------------- the model and its loss
    def init_params(self, key: PRNGKey) -> Params:
        return self.net.init(key, jnp.zeros((1, 1), default_float()))["params"]

    def predict(self, params: Params, x: jax.Array) -> jax.Array:
        """f_params(x): [N, 1] -> [N, 1]."""
        return self.net.apply({"params": params}, x)

    def loss(self, params: Params, x: jax.Array, y: jax.Array) -> jax.Array:
        """Mean squared error on points x, y [N, 1]."""
        return jnp.mean((self.predict(params, x) - y) ** 2)

    # ----------------------------------------------------------------- inner loop
    def step_sizes(self, meta: MetaParams) -> Params:
        """The inner learning rate of every parameter (a params-shaped pytree)."""
        return self.step_size.apply(meta.inner_lr, meta.policy)

    def sgd_step(self, params: Params, lr: Params, x: jax.Array, y: jax.Array, first_order: bool) -> Params:
        """params - lr * grad L(params; x, y), lr params-shaped; `first_order` stops the gradient's gradient."""
        grads = jax.grad(self.loss)(params, x, y)
        if first_order:
            grads = lax.stop_gradient(grads)
        return jax.tree.map(lambda p, a, g: p - a * g, params, lr, grads)

    def adapt(self, meta: MetaParams, x: jax.Array, y: jax.Array, num_steps: int | None = None,
              first_order: bool | None = None) -> Params:
        """The network after `num_steps` (default `num_inner_steps`) gradient steps on one
        task's support points x, y [K, 1] (the same points every step, as the paper)."""
        c = self.config
        first_order = c.first_order if first_order is None else first_order
        params, lr = meta.policy, self.step_sizes(meta)
        for _ in range(c.num_inner_steps if num_steps is None else num_steps):
            params = self.sgd_step(params, lr, x, y, first_order)
        return params

    def task_loss(self, meta: MetaParams, x_s, y_s, x_q, y_q) -> jax.Array:
        """The query loss of one task's adapted network, a function of the meta-parameters."""
        return self.loss(self.adapt(meta, x_s, y_s), x_q, y_q)

    def outer_loss(self, meta: MetaParams, batch: RegressionBatch) -> jax.Array:
        """Post-adaptation query MSE, mean over the tasks of the meta-batch (one vmap)."""
        return jnp.mean(jax.vmap(self.task_loss, in_axes=(None, 0, 0, 0, 0))(meta, *batch))

    def curve(self, params: Params, lr: Params, x_s, y_s, x_q, y_q, num_steps: int) -> jax.Array:
        """Query MSE of one task after 0, 1, ..., num_steps gradient steps from `params`: [num_steps + 1]."""

        def body(p, _):
            return self.sgd_step(p, lr, x_s, y_s, first_order=True), self.loss(p, x_q, y_q)

        params, losses = lax.scan(body, params, None, length=num_steps)
        return jnp.append(losses, self.loss(params, x_q, y_q))

    # ----------------------------------------------------------------- data
    def points(self, tasks, key: PRNGKey, num_support: int, num_query: int) -> RegressionBatch:
        """Fresh points of every task (leading axis M): K support and Q query points each."""
        M = jax.tree.leaves(tasks)[0].shape[0]
        tasks = shard_tasks(tasks)
        keys = shard_tasks(jax.random.split(key, M))

        def one(task, k):
            x, y = self.env.sample_points(k, task, num_support + num_query)  # [K+Q, 1]
            return x[:num_support], y[:num_support], x[num_support:], y[num_support:]

        return RegressionBatch(*jax.vmap(one)(tasks, keys))

    def sample(self, state: MAMLRegressionState, key: PRNGKey) -> RegressionBatch:
        """A meta-batch: M fresh tasks, K support and Q query points of each."""
        del state  # the points do not depend on the learner
        c = self.config
        k_tasks, k_points = jax.random.split(key)
        return self.points(self.tasks.sample_batch(k_tasks, c.meta_batch_size), k_points, c.num_shots, c.query_size)

    # ----------------------------------------------------------------- Algorithm
    def init(self, key: PRNGKey) -> MAMLRegressionState:
        k_meta, k_pre = jax.random.split(key)
        params = self.init_params(k_meta)
        meta = MetaParams(params, self.step_size.init(params))
        pretrained = pre_opt = None
        if self.config.pretrain:
            pretrained = self.init_params(k_pre)
            pre_opt = optax.adam(self.config.outer_lr).init(pretrained)
        return MAMLRegressionState(meta, self.outer.init(meta), pretrained, pre_opt, jnp.zeros((), jnp.int32))

    def pretrain_loss(self, params: Params, batch: RegressionBatch) -> jax.Array:
        """The pretrained baseline's loss: plain regression on every point of the batch, tasks pooled."""
        x = jnp.concatenate([batch.x_support, batch.x_query], axis=1)  # [M, K+Q, 1]
        y = jnp.concatenate([batch.y_support, batch.y_query], axis=1)
        return self.loss(params, x.reshape(-1, 1), y.reshape(-1, 1))

    def update(self, state: MAMLRegressionState, batch: RegressionBatch):
        """One Adam step on the post-adaptation loss (and one on the pretrained baseline's)."""
        pre_mse = jnp.mean(jax.vmap(self.loss, in_axes=(None, 0, 0))(state.meta.policy, batch.x_query,
                                                                       batch.y_query))
        meta, opt_state, info = self.outer.update(self, state.meta, state.opt_state, batch)
        metrics = {"pre_mse": pre_mse, "post_mse": info["loss_before"], "grad_norm": info["grad_norm"]}
        pretrained, pre_opt = state.pretrained, state.pretrained_opt_state
        if self.config.pretrain:
            loss, grads = jax.value_and_grad(self.pretrain_loss)(pretrained, batch)
            updates, pre_opt = optax.adam(self.config.outer_lr).update(grads, pre_opt, pretrained)
            pretrained = optax.apply_updates(pretrained, updates)
            metrics["pretrained_mse"] = loss
        return MAMLRegressionState(meta, opt_state, pretrained, pre_opt, state.step + 1), metrics

    def eval_batch(self, key: PRNGKey) -> RegressionBatch:
        """The held-out tasks (fixed by `eval_seed`) with K support points and
        `num_eval_points` query points each, drawn from `key`."""
        c = self.config
        tasks = self.tasks.held_out_batch(jax.random.PRNGKey(c.eval_seed), c.num_eval_tasks)
        return self.points(tasks, key, c.num_shots, c.num_eval_points)

    def curves(self, params: Params, lr: Params, batch: RegressionBatch, num_steps: int | None = None) -> jax.Array:
        """Per-task query MSE after 0..N steps from one initialisation `params`: [M, N+1]."""
        N = self.config.num_eval_steps if num_steps is None else num_steps
        return jax.vmap(lambda *b: self.curve(params, lr, *b, num_steps=N))(*batch)

    def evaluate(self, state: MAMLRegressionState, key: PRNGKey) -> AdaptationCurve:
        """Mean squared error on the held-out tasks after 0, 1, ..., `num_eval_steps` gradient
        steps from the meta-learned initialisation (in the curve's `returns`: lower is better)."""
        per_task = self.curves(state.meta.policy, self.step_sizes(state.meta), self.eval_batch(key))
        return AdaptationCurve(jnp.mean(per_task, axis=0), per_task)

    def algorithm(self) -> Algorithm:
        return Algorithm(self.init, self.sample, self.update, self.evaluate)

    # ----------------------------------------------------------------- baselines
    def baseline_curves(self, state: MAMLRegressionState, key: PRNGKey, initial_state: MAMLRegressionState | None = None
                        ) -> tuple[dict[str, AdaptationCurve], dict[str, jax.Array]]:
        """MAML and the baselines fine-tuned by the same gradient steps on the same held-out
        tasks and points: the meta-learned initialisation (its own step sizes), the model
        pretrained on all tasks (step size `inner_lr`, and the step size of `TUNING_LRS`
        with the lowest mean MSE over steps 1..N on fresh *training* tasks), and the
        untrained initialisation of `initial_state`. Every (initialisation, step size,
        tasks) triple is one lane of a single vmap: the pretrained model runs with every
        tuning step size on the training tasks (to choose one) and on the held-out tasks
        (to report the chosen one's curve).

        Returns:
          ({method: AdaptationCurve}, {method: its step size (Meta-SGD: the mean rate)}).
        """
        c = self.config
        k_eval, k_tune_tasks, k_tune_points = jax.random.split(key, 3)
        held_out = self.eval_batch(k_eval)
        fixed = lambda a: parts.fixed(a).apply(None, state.meta.policy)
        mean_rate = lambda lr: jnp.mean(ravel_pytree(lr)[0])
        lanes = {"maml": (state.meta.policy, self.step_sizes(state.meta), held_out)}  # name -> (params, lr, batch)
        if initial_state is not None:
            lanes["untrained"] = (initial_state.meta.policy, self.step_sizes(initial_state.meta), held_out)
        lrs = jnp.asarray(TUNING_LRS, ravel_pytree(state.meta.policy)[0].dtype)
        if state.pretrained is not None:
            tune = self.points(self.tasks.sample_batch(k_tune_tasks, c.num_eval_tasks), k_tune_points,
                               c.num_shots, c.num_eval_points)
            lanes["pretrained"] = (state.pretrained, fixed(c.inner_lr), held_out)
            for j in range(len(TUNING_LRS)):
                lanes[f"tune {j}"] = (state.pretrained, fixed(lrs[j]), tune)
                lanes[f"held-out {j}"] = (state.pretrained, fixed(lrs[j]), held_out)
        stacked = _tree_stack(list(lanes.values()))  # leading axis: lanes
        per_task = jax.vmap(lambda p, lr, b: self.curves(p, lr, b))(*stacked)  # [lanes, tasks, N+1]
        out = {name: per_task[i] for i, name in enumerate(lanes)}
        curves = {"maml": out["maml"]}
        rates = {"maml": mean_rate(lanes["maml"][1])}
        if state.pretrained is not None:
            scores = jnp.stack([jnp.mean(out[f"tune {j}"][:, 1:]) for j in range(len(TUNING_LRS))])  # [L]
            best = jnp.argmin(jnp.where(jnp.isfinite(scores), scores, jnp.inf))
            curves["pretrained"] = out["pretrained"]
            rates["pretrained"] = jnp.asarray(c.inner_lr, lrs.dtype)
            held_out_curves = jnp.stack([out[f"held-out {j}"] for j in range(len(TUNING_LRS))])  # [L, tasks, N+1]
            curves["pretrained, tuned step size"] = held_out_curves[best]
            rates["pretrained, tuned step size"] = lrs[best]
        if initial_state is not None:
            curves["untrained"] = out["untrained"]
            rates["untrained"] = mean_rate(lanes["untrained"][1])
        return {name: AdaptationCurve(jnp.mean(x, axis=0), x) for name, x in curves.items()}, rates


def final_table(env, config: MAMLRegressionConfig, algorithm, state: MAMLRegressionState, key, collector=None,
                initial_state=None):
    """Held-out MSE after 0..N gradient steps: MAML beside the model pretrained on all
    tasks (fine-tuned with `inner_lr` and with a step size tuned on training tasks) and
    the untrained initialisation, on the same tasks and points.

    Returns:
      (header, rows, curves): one row per method with its step size and the mean MSE
      after each number of steps; the curves by method for the adaptation plot.
    """
    del algorithm, collector
    learner = MAMLRegression(env, env.task_distribution(), config)
    curves, rates = jax.jit(learner.baseline_curves)(state, key, initial_state)
    N = config.num_eval_steps
    header = ["method", "step size"] + [f"mse @{k}" for k in range(N + 1)]
    rows = [[name, float(rates[name])] + [float(x) for x in np.asarray(c.returns)] for name, c in curves.items()]
    return header, rows, curves


def maml_regression(env: Sinusoid | None = None, tasks: TaskDistribution | None = None,
                    config: MAMLRegressionConfig | None = None, *, collector=None, **parts_) -> Algorithm:
    """Supervised few-shot MAML (Finn et al. 2017, sec. 5.1) as an `Algorithm(init, sample, update, evaluate)`.

    Args:
      env: the regression task family (default `Sinusoid()`).
      tasks: its TaskDistribution (default: `env.task_distribution()`).
      config: hyperparameters (default `MAMLRegressionConfig()`, the paper's K = 10 setting).
      collector: must be None (the points are sampled in JAX; there is nothing to simulate).
      step_size, outer: parts to use instead of the config's (`parts.fixed`/`learned`, `parts.adam`).
    """
    if collector is not None:
        raise ConfigError("supervised MAML samples its points in JAX: it takes no host simulator", "simulator")
    env = Sinusoid() if env is None else env
    tasks = env.task_distribution() if tasks is None else tasks
    return MAMLRegression(env, tasks, config or MAMLRegressionConfig(), **parts_).algorithm()
