"""Black-box meta-RL: RL^2 and SNAIL trained by PPO (or TRPO) over whole trials.

RL^2 (Duan et al. 2016, "RL^2: Fast Reinforcement Learning via Slow Reinforcement
Learning") and SNAIL (Mishra et al. 2018, "A Simple Neural Attentive Meta-Learner")
learn a learning algorithm in the weights of a sequence model: the model reads the
observation, previous action, previous reward and done flag of every step of a trial
(n episodes of one task) and its memory, kept across episode boundaries and reset
between trials, is what adapts to the task.

Both are trained here by the same learner, PPO by default (Schulman et al. 2017):
clipped surrogate, value loss and entropy bonus, with GAE (Schulman et al. 2016)
computed over the whole trial (the return of a step counts the rewards of later
episodes of the same trial, as in RL^2). Gradients flow back through whole trials, or
through windows of `bptt_window` steps with the carry passed on from the previous
window. `outer="trpo"` is the RL^2 paper's own outer step instead (Schulman et al. 2015):
a natural-gradient step on the policy's surrogate under a KL bound, and the value
network, a separate one, fit by Adam epochs on its own loss.

`sample` collects a `TrialBatch` from the learner's collector (jitted environments or
host simulators); `update` is the outer step (PPO epochs or TRPO) on it. With a jitted
collector the whole train step compiles to one XLA program.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.flatten_util import ravel_pytree

from jaxmeta.algorithms.base import Algorithm
from jaxmeta.config import (
    ConfigError, check_bool, check_choice, check_float, check_int, check_outer_fields, check_trpo_fields,
)
from jaxmeta.envs.base import Box, MetaEnv, TaskDistribution, action_dim
from jaxmeta.networks.sequence import GRUArchitecture, GRUPolicy, SNAILArchitecture, SNAILPolicy
from jaxmeta.parallel import shard_tasks
from jaxmeta.rl import discounted_returns, gae, ppo_clip_loss, weighted_mean, weighted_normalize
from jaxmeta.rl.optim import gauss_newton_vector_product, trpo_step
from jaxmeta.rollout import (
    Collector, JaxCollector, TrialTrajectory, trial_episode_returns, trial_episode_success, trial_input_dim,
)
from jaxmeta.types import AdaptationCurve, PRNGKey


OUTERS = ("ppo", "trpo")
# Fields read by only one outer step; the other must leave them at their defaults.
OUTER_FIELDS = {
    "ppo": ("clip_eps",),
    "trpo": ("max_kl", "cg_iters", "cg_damping", "ls_max_steps", "ls_backtrack_ratio", "cg_subsample"),
}


def _annealed(start: float, final: float, decay_steps: int, step):
    """A config's linearly annealed value at train step `step`: `start` to `final` over
    `decay_steps` steps, then `final` (optax's schedule); 0 steps: `start` throughout."""
    if not decay_steps:
        return jnp.asarray(start, jnp.float32)
    return jnp.asarray(optax.linear_schedule(start, final, decay_steps)(step), jnp.float32)


@dataclass(frozen=True)
class BlackBoxConfig:
    """Hyperparameters of the trial-based outer step (PPO or TRPO) shared by RL^2 and SNAIL."""

    episodes_per_trial: int = 10  # n
    meta_batch_size: int = 256  # tasks per train step
    trials_per_task: int = 1  # parallel trials on each task
    gamma: float = 0.99
    gae_lambda: float = 0.3  # RL^2 used lambda = 0.3 for bandits and tabular MDPs
    # "ppo": clipped-surrogate epochs on the whole network. "trpo" (the RL^2 paper's): one
    # natural-gradient step on the policy under a KL bound, then Adam epochs (num_epochs x
    # num_minibatches, lr) on the value loss of the separate value network
    outer: str = "ppo"
    clip_eps: float = 0.2  # PPO
    max_kl: float = 1e-2  # TRPO: the step's bound on the mean KL(old || new) per step
    cg_iters: int = 10  # TRPO
    cg_damping: float = 1e-5  # TRPO
    ls_max_steps: int = 15  # TRPO
    ls_backtrack_ratio: float = 0.8  # TRPO
    # TRPO: fraction of the batch's trials whose Fisher-vector products the conjugate gradient
    # uses (the first ceil(f * B)); the gradient and the line search use every trial
    cg_subsample: float = 1.0
    value_coef: float = 0.5
    entropy_coef: float = 0.01
    # linear entropy annealing (Wang et al. 2016, "Learning to reinforcement learn", anneal the
    # entropy weight over training): the weight goes from entropy_coef to entropy_coef_final over
    # the first entropy_decay_steps train steps, then stays there; 0 steps: a constant entropy_coef
    entropy_coef_final: float = 0.0
    entropy_decay_steps: int = 0
    lr: float = 3e-3
    # linear learning-rate annealing: from lr to lr_final over the first lr_decay_steps train
    # steps, then constant (every minibatch step of one train step uses that step's rate);
    # 0 steps: a constant lr
    lr_final: float = 0.0
    lr_decay_steps: int = 0
    max_grad_norm: float = 1.0
    num_epochs: int = 2
    num_minibatches: int = 2
    bptt_window: int = 0  # 0: backprop through whole trials
    normalize_advantages: bool = True
    # the value from a second network of the same architecture (own weights and memory), so
    # the value loss does not share the policy's weights
    separate_value: bool = False
    # A per-step baseline under the value: the batch's mean discounted return-to-go at each
    # step t of the trial, b_t. GAE uses V(h_t) = b_t + the network's value, and the network
    # regresses the return less b_t, so it no longer has to count the steps left in the trial
    # to predict a long discounted return (rllab's baselines give the value the time step
    # for the same reason). b_t is a batch statistic, not a parameter: nothing to learn.
    time_baseline: bool = False
    # The step's place in the trial, t / T, as one more network input (policy and value): a
    # finite-horizon Bayes-optimal player's choice depends on the steps left, which the network
    # otherwise has to count in its memory (Pardo et al. 2018, "Time limits in RL").
    time_input: bool = False
    num_eval_tasks: int = 1000
    eval_seed: int = 0

    def __post_init__(self):
        check_int("episodes_per_trial", self.episodes_per_trial, 1, 100_000)
        check_int("meta_batch_size", self.meta_batch_size, 1, 1_000_000)
        check_int("trials_per_task", self.trials_per_task, 1, 100_000)
        check_float("gamma", self.gamma, 0.0, 1.0)
        check_float("gae_lambda", self.gae_lambda, 0.0, 1.0)
        check_choice("outer", self.outer, OUTERS)
        check_float("clip_eps", self.clip_eps, 0.0, 1.0, low_open=True)
        check_trpo_fields(self)
        check_float("value_coef", self.value_coef, 0.0, 1e6)
        check_float("entropy_coef", self.entropy_coef, 0.0, 1e6)
        check_float("entropy_coef_final", self.entropy_coef_final, 0.0, 1e6)
        check_int("entropy_decay_steps", self.entropy_decay_steps, 0, 1_000_000_000)
        check_float("lr", self.lr, 0.0, 10.0, low_open=True)
        check_float("lr_final", self.lr_final, 0.0, 10.0)
        check_int("lr_decay_steps", self.lr_decay_steps, 0, 1_000_000_000)
        check_float("max_grad_norm", self.max_grad_norm, 0.0, 1e9, low_open=True)
        check_int("num_epochs", self.num_epochs, 1, 1000)
        check_int("num_minibatches", self.num_minibatches, 1, 1_000_000)
        check_int("bptt_window", self.bptt_window, 0, 10_000_000)
        check_bool("normalize_advantages", self.normalize_advantages)
        check_bool("separate_value", self.separate_value)
        check_bool("time_baseline", self.time_baseline)
        check_bool("time_input", self.time_input)
        check_int("num_eval_tasks", self.num_eval_tasks, 1, 10_000_000)
        check_int("eval_seed", self.eval_seed, 0, 2**31 - 1)
        check_outer_fields(self, self.outer, OUTER_FIELDS)
        if self.outer == "trpo" and not self.separate_value:
            raise ConfigError("outer='trpo' fits the value on its own network: set separate_value = true "
                              "(--separate-value)", "separate_value")
        batch = self.meta_batch_size * self.trials_per_task
        if batch % self.num_minibatches:
            raise ConfigError(
                f"num_minibatches must divide meta_batch_size * trials_per_task = {batch}, "
                f"got {self.num_minibatches}"
            )

    def entropy_weight(self, step):
        """The entropy bonus's weight at train step `step` (0 for the first update)."""
        return _annealed(self.entropy_coef, self.entropy_coef_final, self.entropy_decay_steps, step)

    def learning_rate(self, step):
        """The learning rate of train step `step` (0 for the first update)."""
        return _annealed(self.lr, self.lr_final, self.lr_decay_steps, step)

    @property
    def num_trials(self) -> int:
        """Trials per train step."""
        return self.meta_batch_size * self.trials_per_task

    @property
    def envs_per_batch(self) -> int:
        """Environments one sampled batch steps at once (one per trial)."""
        return self.num_trials


@dataclass(frozen=True)
class RL2Config(GRUArchitecture, BlackBoxConfig):
    """RL^2: PPO (or TRPO) over trials with a recurrent policy, GRU or LSTM (`cell`; the architecture
    fields are GRUArchitecture's)."""

    def __post_init__(self):
        BlackBoxConfig.__post_init__(self)
        GRUArchitecture.__post_init__(self)


@dataclass(frozen=True)
class SNAILConfig(SNAILArchitecture, BlackBoxConfig):
    """SNAIL: PPO (or TRPO) over trials with TC and (single- or multi-head) attention blocks (fields of
    SNAILArchitecture)."""

    def __post_init__(self):
        BlackBoxConfig.__post_init__(self)
        SNAILArchitecture.__post_init__(self)


class TrialBatch(NamedTuple):
    """What `sample` returns and `update` takes: trials of M tasks, tasks merged into
    the batch axis, and the key of the update's minibatch shuffles."""

    traj: TrialTrajectory  # leaves [T, M*E, ...]
    key: PRNGKey


class BlackBoxState(NamedTuple):
    params: Any
    opt_state: Any
    step: jax.Array  # [] int32 train steps done


def trial_length(env, config: BlackBoxConfig) -> int:
    return config.episodes_per_trial * env.horizon


def make_model(env, config: BlackBoxConfig):
    """The sequence policy a config describes (its architecture fields), sized for `env`'s trials."""
    continuous = isinstance(env.action_space, Box)
    common = dict(input_dim=trial_input_dim(env) + config.time_input, num_outputs=action_dim(env),
                  continuous=continuous, separate_value=config.separate_value)
    if isinstance(config, GRUArchitecture):
        return GRUPolicy(**common, arch=config)
    if isinstance(config, SNAILArchitecture):
        return SNAILPolicy(**common, context=trial_length(env, config), arch=config)
    raise ConfigError(f"config must be an RL2Config or SNAILConfig, got {type(config).__name__}")


@dataclass(frozen=True)
class BlackBox:
    """The pure pieces of a trial-based PPO/TRPO meta-learner.

    `collector` (where trials come from) defaults to the env's jitted rollouts.
    """

    env: MetaEnv
    tasks: TaskDistribution
    config: BlackBoxConfig
    collector: Collector | None = None
    model: Any = field(init=False, repr=False, compare=False)  # the sequence policy

    def __post_init__(self):
        W = self.config.bptt_window
        T = trial_length(self.env, self.config)
        if W and T % W:
            raise ConfigError(f"bptt_window must divide the trial length {T}, got {W}")
        if self.collector is None:
            object.__setattr__(self, "collector", JaxCollector(self.env))
        object.__setattr__(self, "model", make_model(self.env, self.config))

    @property
    def T(self) -> int:
        return trial_length(self.env, self.config)

    def _optimizer(self) -> optax.GradientTransformation:
        c = self.config
        lr = c.lr
        if c.lr_decay_steps:  # optax counts minibatch steps; the schedule is in train steps
            per_step = c.num_epochs * c.num_minibatches
            lr = lambda count: c.learning_rate(count // per_step)  # noqa: E731
        return optax.chain(optax.clip_by_global_norm(c.max_grad_norm), optax.adam(lr, eps=1e-5))

    # ----------------------------------------------------------------- acting
    def initial_carry(self, num_trials: int, dtype=None):
        """The memory at the start of a trial; with `time_input`, (steps taken [] int32, memory)."""
        carry = self.model.initial_carry(num_trials, dtype)
        return (jnp.zeros((), jnp.int32), carry) if self.config.time_input else carry

    def act(self, params, carry, x, key):
        """Sample actions: returns (carry, action [E, ...], log_prob [E], value [E])."""
        model = self.model
        if self.config.time_input:
            t, carry = carry
            x = jnp.concatenate([x, jnp.full(x.shape[:1] + (1,), t / self.T, x.dtype)], axis=-1)
        carry, (out, value) = model.step(params, carry, x)
        action, log_prob = model.distribution(params, out).sample_and_log_prob(seed=key)
        if self.config.time_input:
            carry = (t + 1, carry)
        return carry, action, log_prob, value

    def sample_trials(self, params, tasks, key: PRNGKey, trials_per_task: int) -> TrialTrajectory:
        """Trials on a batch of tasks, each from a fresh memory. Leaves [M, T, E, ...]."""
        tasks = shard_tasks(tasks)
        keys = shard_tasks(jax.random.split(key, jax.tree.leaves(tasks)[0].shape[0]))
        carry = self.initial_carry(trials_per_task)
        return self.collector.trials(self.act, carry, params, tasks, keys, self.config.episodes_per_trial,
                                     trials_per_task)

    # ----------------------------------------------------------------- learning
    def _discounts(self, traj: TrialTrajectory):
        """[T, B] gamma at every step but the trial's last (the trial ends at T)."""
        return jnp.full_like(traj.reward, self.config.gamma).at[-1].set(0.0)

    def time_baseline(self, traj: TrialTrajectory):
        """b_t [T]: the batch's mean discounted return-to-go at each step of the trial
        (over the valid trials at t; 0 where none is)."""
        to_go = jax.vmap(discounted_returns, in_axes=1, out_axes=1)(traj.reward, self._discounts(traj))  # [T, B]
        w = traj.valid.astype(to_go.dtype)
        return jnp.sum(to_go * w, axis=1) / jnp.maximum(jnp.sum(w, axis=1), 1.0)

    def advantages(self, traj: TrialTrajectory):
        """GAE over whole trials: [T, B] advantages, and the network's value targets (the
        return estimate, less the time baseline b_t where `time_baseline` is set)."""
        c = self.config
        v_t = traj.value  # [T, B], the network's
        if c.time_baseline:
            v_t = v_t + self.time_baseline(traj)[:, None]
        discount_t = self._discounts(traj)
        v_T = jnp.zeros(v_t.shape[1], v_t.dtype)  # [B]
        adv = jax.vmap(gae, in_axes=(1, 1, 1, 0, None), out_axes=1)(
            traj.reward, discount_t, v_t, v_T, c.gae_lambda
        )  # [T, B]
        return adv, adv + traj.value  # (adv + V) - b_t

    def forward(self, params, inputs):
        """Policy outputs over whole trials from a fresh carry, in BPTT windows if set.

        Args:
          inputs: [T, B, D_in], as the trials recorded them (t / T is added here with `time_input`).
        Returns:
          (policy_out [T, B, A], value [T, B]).
        """
        model = self.model
        T, B = inputs.shape[:2]
        if self.config.time_input:
            t = jnp.broadcast_to((jnp.arange(T, dtype=inputs.dtype) / self.T)[:, None, None], (T, B, 1))
            inputs = jnp.concatenate([inputs, t], axis=-1)
        carry = model.initial_carry(B, inputs.dtype)
        W = self.config.bptt_window
        if not W or W >= T:
            return model.apply(params, carry, inputs)[1]
        windows = inputs.reshape(T // W, W, B, -1)  # [T/W, W, B, D]

        def body(carry, xs):
            carry, out = model.apply(params, carry, xs)
            return jax.lax.stop_gradient(carry), out

        _, (out, value) = jax.lax.scan(body, carry, windows)
        return out.reshape((T, B) + out.shape[3:]), value.reshape(T, B)

    def loss(self, params, batch, entropy_coef=None):
        """PPO loss of a minibatch of whole trials (time-major leaves [T, b, ...]); the
        entropy weight is the config's at step 0 unless given."""
        c = self.config
        entropy_coef = c.entropy_weight(0) if entropy_coef is None else entropy_coef
        traj, adv, target = batch
        out, value = self.forward(params, traj.inputs)
        dist = self.model.distribution(params, out)
        log_prob = dist.log_prob(traj.action)  # [T, b]
        w = traj.valid
        pg = ppo_clip_loss(log_prob, traj.log_prob, adv, w, c.clip_eps)
        v_loss = 0.5 * weighted_mean((value - target) ** 2, w)
        entropy = weighted_mean(dist.entropy(), w)
        total = pg + c.value_coef * v_loss - entropy_coef * entropy
        approx_kl = weighted_mean(traj.log_prob - log_prob, w)
        return total, {"pg_loss": pg, "value_loss": v_loss, "entropy": entropy, "approx_kl": approx_kl}

    def _adam_epochs(self, params, opt_state, data, key: PRNGKey, loss_fn):
        """`num_epochs` passes of Adam over `num_minibatches` shuffled minibatches of whole
        trials (data leaves [T, B, ...]); loss_fn(params, minibatch) -> (loss, info)."""
        c = self.config
        B = jax.tree.leaves(data)[0].shape[1]
        nmb = c.num_minibatches
        opt = self._optimizer()
        grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

        def minibatch(carry, mb):
            params, opt_state = carry
            (_, info), grads = grad_fn(params, mb)
            updates, opt_state = opt.update(grads, opt_state, params)
            info = {**info, "grad_norm": optax.tree.norm(grads)}  # before clipping
            return (optax.apply_updates(params, updates), opt_state), info

        def epoch(carry, k):
            if nmb == 1:  # one minibatch holds every trial: the order does not matter
                shuffled = data
            else:
                perm = jax.random.permutation(k, B)
                shuffled = jax.tree.map(lambda x: jnp.take(x, perm, axis=1), data)
            mbs = jax.tree.map(
                lambda x: jnp.swapaxes(x.reshape((x.shape[0], nmb, B // nmb) + x.shape[2:]), 0, 1), shuffled
            )  # leaves [nmb, T, B/nmb, ...]
            return jax.lax.scan(minibatch, carry, mbs)

        (params, opt_state), info = jax.lax.scan(epoch, (params, opt_state), jax.random.split(key, c.num_epochs))
        return params, opt_state, jax.tree.map(jnp.mean, info)

    def _targets(self, traj: TrialTrajectory):
        adv, target = self.advantages(traj)
        if self.config.normalize_advantages:
            adv = weighted_normalize(adv, traj.valid)
        return adv, target

    def ppo_update(self, params, opt_state, traj: TrialTrajectory, key: PRNGKey, step=0):
        """PPO epochs over minibatches of whole trials at train step `step` (it sets the
        entropy weight); traj leaves are [T, B, ...]."""
        entropy_coef = self.config.entropy_weight(step)
        adv, target = self._targets(traj)
        return self._adam_epochs(params, opt_state, (traj, adv, target), key,
                                 lambda p, mb: self.loss(p, mb, entropy_coef))

    def _policy_outputs(self, params, inputs):
        """What the policy's action distribution is made of over whole trials: the policy
        head's output, and the log std of a continuous policy."""
        out = {"out": self.forward(params, inputs)[0]}
        if "log_std" in params:
            out["log_std"] = params["log_std"]
        return out

    def _dist(self, outputs):
        return self.model.distribution(outputs, outputs["out"])

    def trpo_update(self, params, opt_state, traj: TrialTrajectory, key: PRNGKey, step=0):
        """The RL^2 paper's outer step (Duan et al. 2016 used TRPO, Schulman et al. 2015) at
        train step `step`; traj leaves are [T, B, ...].

        Policy: minimise the importance-weighted surrogate -E[pi/pi_old A] (less the
        entropy bonus, if its weight is not 0) along F^-1 g, scaled to the KL bound and
        backtracked until the surrogate improves and the mean KL(old || new) per valid
        step is below `max_kl`. F, the Fisher, is the KL's exact Hessian J^T M J (J the
        Jacobian of the policy outputs over the trials, M the KL's Hessian in output
        space), used by `cg_iters` conjugate-gradient iterations; with `cg_subsample` < 1,
        F is that of the first ceil(cg_subsample * B) trials only (trials are i.i.d.: an
        unbiased estimate; TRPO's and rllab's subsampling), which cuts the iterations'
        cost, the update's largest. Value: Adam epochs on the separate value network's
        loss toward the same GAE targets.
        """
        c = self.config
        entropy_coef = c.entropy_weight(step)
        adv, target = self._targets(traj)
        w = traj.valid
        policy = {k: v for k, v in params.items() if k != "value_net"}
        flat0, unravel = ravel_pytree(policy)

        def outputs(flat, inputs=traj.inputs):
            return self._policy_outputs({**params, **unravel(flat)}, inputs)

        B = w.shape[1]
        m = min(B, math.ceil(c.cg_subsample * B))
        if m == B:  # one linearisation gives the gradient and the Fisher's products
            out0, jvp_fn = jax.linearize(outputs, flat0)
            vjp_fn = grad_vjp = jax.linear_transpose(jvp_fn, flat0)
            out_f = out0
        else:  # the gradient by one backward pass; the Fisher linearised on the first m trials
            out0, grad_vjp = jax.vjp(outputs, flat0)
            out_f, jvp_fn = jax.linearize(lambda f: outputs(f, traj.inputs[:, :m]), flat0)
            vjp_fn = jax.linear_transpose(jvp_fn, flat0)
        out0, out_f = jax.lax.stop_gradient((out0, out_f))
        old = self._dist(out0)

        def surrogate(o):
            dist = self._dist(o)
            ratio = jnp.exp(dist.log_prob(traj.action) - traj.log_prob)
            return -weighted_mean(ratio * adv, w) - entropy_coef * weighted_mean(dist.entropy(), w)

        def kl(o, old, w):
            return weighted_mean(old.kl_divergence(self._dist(o)), w)

        loss0, g_out = jax.value_and_grad(surrogate)(out0)
        (grad,) = grad_vjp(g_out)
        kl_grad = jax.grad(lambda o: kl(o, self._dist(out_f), w[:, :m]))  # the Fisher's trials
        fvp = gauss_newton_vector_product(jvp_fn, vjp_fn, lambda u: jax.jvp(kl_grad, (out_f,), (u,))[1],
                                          c.cg_damping)

        def evaluate(flat):
            o = outputs(flat)
            return surrogate(o), kl(o, old, w)

        flat, loss, step_kl, ls_steps, accepted = trpo_step(
            fvp, grad, flat0, loss0, evaluate, c.max_kl, c.cg_iters, c.ls_max_steps, c.ls_backtrack_ratio)

        def value_loss(value_params, mb):
            mb_traj, mb_target = mb
            value = self.forward({**params, "value_net": value_params}, mb_traj.inputs)[1]
            v_loss = 0.5 * weighted_mean((value - mb_target) ** 2, mb_traj.valid)
            return v_loss, {"value_loss": v_loss}

        value_params, opt_state, v_info = self._adam_epochs(params["value_net"], opt_state, (traj, target), key,
                                                            value_loss)
        info = {
            "surrogate_before": loss0,
            "surrogate_after": jnp.where(accepted, loss, loss0),
            "kl": step_kl,
            "ls_steps": ls_steps,
            "accepted": accepted.astype(jnp.float32),
            "grad_norm": jnp.linalg.norm(grad),
            "entropy": weighted_mean(old.entropy(), w),
            "value_loss": v_info["value_loss"],
            "value_grad_norm": v_info["grad_norm"],
        }
        return {**unravel(flat), "value_net": value_params}, opt_state, info

    # ----------------------------------------------------------------- Algorithm
    def init(self, key: PRNGKey) -> BlackBoxState:
        params = self.model.init(key)
        fitted = params["value_net"] if self.config.outer == "trpo" else params  # what Adam moves
        return BlackBoxState(params, self._optimizer().init(fitted), jnp.zeros((), jnp.int32))

    def sample(self, state: BlackBoxState, key: PRNGKey) -> TrialBatch:
        """A batch of trials on fresh tasks, and the key of the update's shuffles."""
        c = self.config
        k_tasks, k_trials, k_update = jax.random.split(key, 3)
        tasks = self.tasks.sample_batch(k_tasks, c.meta_batch_size)
        traj = self.sample_trials(state.params, tasks, k_trials, c.trials_per_task)  # [M, T, E, ...]
        return TrialBatch(jax.tree.map(_merge_task_axis, traj), k_update)  # [T, M*E, ...]

    def update(self, state: BlackBoxState, batch: TrialBatch):
        """The outer step (PPO epochs, or TRPO) on one sampled batch of trials, whatever
        collected it."""
        traj = batch.traj
        outer_update = self.trpo_update if self.config.outer == "trpo" else self.ppo_update
        params, opt_state, info = outer_update(state.params, state.opt_state, traj, batch.key, state.step)
        metrics = {
            "trial_reward": jnp.mean(jnp.sum(traj.reward, axis=0)),
            "env_steps": jnp.asarray(traj.reward.size, jnp.int32),
            **info,
        }
        if self.config.entropy_decay_steps:  # the annealed weight this update used
            metrics["entropy_coef"] = self.config.entropy_weight(state.step)
        if self.config.lr_decay_steps:  # the annealed learning rate this update used
            metrics["lr"] = self.config.learning_rate(state.step)
        if traj.success is not None:  # success rate of the first and the last episode of the trials
            success = trial_episode_success(traj, self.config.episodes_per_trial)  # [B, n]
            metrics["first_episode_success"] = jnp.mean(success[:, 0])
            metrics["last_episode_success"] = jnp.mean(success[:, -1])
        return BlackBoxState(params, opt_state, state.step + 1), metrics

    def eval_tasks(self):
        """The fixed, seeded held-out tasks used by `evaluate` and the baselines (the
        benchmark's test split where it has one, e.g. Meta-World)."""
        return self.tasks.held_out_batch(jax.random.PRNGKey(self.config.eval_seed), self.config.num_eval_tasks)

    def evaluate(self, state: BlackBoxState, key: PRNGKey) -> AdaptationCurve:
        """Mean return (and success rate, where reported) of episode k = 0..n-1 of a
        trial, one trial per held-out task."""
        traj = self.sample_trials(state.params, self.eval_tasks(), key, 1)  # [N, T, 1, ...]
        n = self.config.episodes_per_trial
        per_task = jax.vmap(lambda t: trial_episode_returns(t, n)[0])(traj)  # [N, n]
        if traj.success is None:
            return AdaptationCurve(jnp.mean(per_task, axis=0), per_task)
        per_task_s = jax.vmap(lambda t: trial_episode_success(t, n)[0])(traj)  # [N, n]
        return AdaptationCurve(jnp.mean(per_task, axis=0), per_task, jnp.mean(per_task_s, axis=0), per_task_s)

    def algorithm(self) -> Algorithm:
        return Algorithm(self.init, self.sample, self.update, self.evaluate, jittable=self.collector.jittable)


def _merge_task_axis(x):
    """[M, T, E, ...] -> [T, M*E, ...]."""
    x = jnp.swapaxes(x, 0, 1)
    return x.reshape((x.shape[0], x.shape[1] * x.shape[2]) + x.shape[3:])


def _black_box(name, config_cls, env, tasks, config, collector) -> Algorithm:
    tasks = env.task_distribution() if tasks is None else tasks
    config = config_cls() if config is None else config
    if not isinstance(config, config_cls):
        raise ConfigError(f"{name} needs an {config_cls.__name__}, got {type(config).__name__}")
    return BlackBox(env, tasks, config, collector).algorithm()


def rl2(env: MetaEnv, tasks: TaskDistribution | None = None, config: RL2Config | None = None, *,
        collector: Collector | None = None) -> Algorithm:
    """RL^2 (Duan et al. 2016): a GRU (or LSTM, `config.cell`) policy trained with PPO (or
    TRPO, `config.outer`) over trials.

    Args:
      env: a MetaEnv (discrete or Box actions).
      tasks: its TaskDistribution (default: `env.task_distribution()`).
      config: hyperparameters (default `RL2Config()`).
      collector: where trials come from (default: `env`'s jitted rollouts).
    """
    return _black_box("rl2", RL2Config, env, tasks, config, collector)


def snail(env: MetaEnv, tasks: TaskDistribution | None = None, config: SNAILConfig | None = None, *,
          collector: Collector | None = None) -> Algorithm:
    """SNAIL (Mishra et al. 2018): TC + attention blocks trained with PPO (or TRPO) over trials.

    Args:
      env: a MetaEnv (discrete or Box actions).
      tasks: its TaskDistribution (default: `env.task_distribution()`).
      config: hyperparameters (default `SNAILConfig()`).
      collector: where trials come from (default: `env`'s jitted rollouts).
    """
    return _black_box("snail", SNAILConfig, env, tasks, config, collector)
