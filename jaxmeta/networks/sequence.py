"""Sequence models for black-box meta-RL, used through explicit params.

Both models share one interface, so the trial-based learner is agnostic to which one
it trains:

  params = model.init(key)
  carry = model.initial_carry(batch_size)               # memory of a fresh trial
  carry, (policy_out, value) = model.step(params, carry, x)    # x: [B, D]
  carry, (policy_out, value) = model.apply(params, carry, xs)  # xs: [T, B, D]

`apply` over a sequence gives exactly the outputs of `step` applied one step at a time,
and `apply` of a window starting from the carry left by the previous window gives the
outputs of one `apply` over both windows (truncated backprop passes the carry on).

`policy_out` is the logits of a categorical policy (discrete actions) or the mean of a
diagonal Gaussian (continuous actions, with a learned state-independent log-std held in
`params["log_std"]`); `model.distribution(params, policy_out)` builds the distrax
distribution.

* `GRUPolicy`: RL^2 (Duan et al. 2016, "RL^2: Fast Reinforcement Learning via Slow
  Reinforcement Learning"): a recurrent cell with policy and value heads, a GRU (Cho
  et al. 2014; the paper's, the default) or an LSTM (Hochreiter & Schmidhuber 1997, with
  the forget gate of Gers et al. 2000), chosen by `GRUArchitecture.cell`. The GRU's
  carry is h [B, H], the LSTM's an `LSTMCarry(c, h)`.
* `SNAILPolicy`: SNAIL (Mishra et al. 2018, "A Simple Neural Attentive Meta-Learner"):
  TC blocks (dense blocks of dilated causal convolutions) interleaved with causal
  key-value attention blocks, each single-head (the paper's) or multi-head (Vaswani et
  al. 2017, `SNAILArchitecture.num_heads`). Its carry is a fixed-size buffer of every
  layer's past features (and the attention keys/values) plus the step counter, so
  step-by-step acting never sees the future.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, NamedTuple

import distrax
import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from jaxmeta.config import ConfigError, check_bool, check_choice, check_int
from jaxmeta.types import default_float


def _head_init(scale: float):
    return nn.initializers.orthogonal(scale)


class _Heads(nn.Module):
    """Policy and value heads on top of a feature sequence."""

    num_outputs: int
    continuous: bool

    @nn.compact
    def __call__(self, h):  # h: [..., F]
        dtype = default_float()
        policy_out = nn.Dense(self.num_outputs, kernel_init=_head_init(0.01), param_dtype=dtype, name="policy")(h)
        value = nn.Dense(1, kernel_init=_head_init(1.0), param_dtype=dtype, name="value")(h)[..., 0]
        return policy_out, value


# --------------------------------------------------------------------------- architectures


CELLS = ("gru", "lstm")


@dataclass(frozen=True)
class GRUArchitecture:
    """RL^2's recurrent core: a `cell` of `hidden_size` units (the paper: GRU, 256).

    `cell` is "gru" (Cho et al. 2014, the RL^2 paper's) or "lstm" (Hochreiter &
    Schmidhuber 1997 with a forget gate, Gers et al. 2000; forget-gate bias 1 at init).
    `remat` recomputes the cell's gates in the backward pass: less memory traffic, faster
    for small cells over many trials on a CPU (see `gru_sequence`); values are unchanged.
    `layer_norm` normalises the cell's input and recurrent projections, each gate's block on
    its own, with a learned gain and bias (Ba et al. 2016, "Layer Normalization"; the
    recurrent layers of the RL^2 authors' rllab code offer the same option); see `block_ln`.
    """

    hidden_size: int = 256
    remat: bool = False
    cell: str = "gru"
    layer_norm: bool = False

    def __post_init__(self):
        check_int("hidden_size", self.hidden_size, 1, 65_536)
        check_bool("remat", self.remat)
        check_choice("cell", self.cell, CELLS)
        check_bool("layer_norm", self.layer_norm)


@dataclass(frozen=True)
class SNAILArchitecture:
    """SNAIL's blocks: TC blocks ("tc") and attention blocks ("attn") in the given order.

    The default is the paper's bandit architecture, TC(T, 32), TC(T, 32), attention(32, 32).
    `num_heads` > 1 makes every attention block multi-head (Vaswani et al. 2017);
    `key_size` and `value_size` are then the widths of one head, so an attention block
    appends `num_heads * value_size` channels to the stream (8 heads of width 64: `num_heads=8,
    key_size=64, value_size=64`). One head is the paper's block, unchanged.
    """

    blocks: tuple[str, ...] = ("tc", "tc", "attn")
    filters: int = 32
    key_size: int = 32
    value_size: int = 32
    num_heads: int = 1

    def __post_init__(self):
        if not (isinstance(self.blocks, tuple) and self.blocks):
            raise ConfigError(f"blocks must be a non-empty tuple of 'tc'/'attn', got {self.blocks!r}", "blocks")
        for b in self.blocks:
            check_choice("blocks", b, ("tc", "attn"))
        check_int("filters", self.filters, 1, 4096)
        check_int("key_size", self.key_size, 1, 4096)
        check_int("value_size", self.value_size, 1, 4096)
        check_int("num_heads", self.num_heads, 1, 1024)
        for name in ("key_size", "value_size"):
            width = self.num_heads * getattr(self, name)
            if width > 65_536:
                raise ConfigError(f"num_heads * {name} (the attention width over all heads) must be at most "
                                  f"65536, got {self.num_heads} * {getattr(self, name)} = {width}", "num_heads")


# --------------------------------------------------------------------------- GRU, LSTM


LN_EPS = 1e-5


def block_ln(z, ln: dict | None, blocks: int):
    """Layer normalisation of each of the `blocks` gate blocks of a projection z [..., G*H]
    on its own (mean 0, variance 1 over the block's H units), then the learned gain and
    bias `ln = {"scale": [G*H], "bias": [G*H]}`. `ln` None: z unchanged."""
    if ln is None:
        return z
    zb = z.reshape(*z.shape[:-1], blocks, z.shape[-1] // blocks)
    mean = zb.mean(-1, keepdims=True)
    var = jnp.square(zb - mean).mean(-1, keepdims=True)
    zb = (zb - mean) * lax.rsqrt(var + LN_EPS)
    return zb.reshape(z.shape) * ln["scale"] + ln["bias"]


def gru_cell(h, g, w_h, b_hn, ln_h: dict | None = None):
    """One GRU step (Cho et al. 2014). h: [B, H]; g: [B, 3H] input projection; `ln_h`:
    the layer-norm gain and bias of the recurrent projection (None: no normalisation)."""
    H = h.shape[-1]
    g_h = block_ln(h @ w_h, ln_h, 3)  # [B, 3H]
    r = jax.nn.sigmoid(g[..., :H] + g_h[..., :H])
    z = jax.nn.sigmoid(g[..., H : 2 * H] + g_h[..., H : 2 * H])
    n = jnp.tanh(g[..., 2 * H :] + r * (g_h[..., 2 * H :] + b_hn))
    return (1.0 - z) * n + z * h


class LSTMCarry(NamedTuple):
    """The LSTM's memory: cell state c and output h, each [B, H]."""

    c: jax.Array
    h: jax.Array


def lstm_cell(carry: LSTMCarry, g, w_h, ln_h: dict | None = None) -> LSTMCarry:
    """One LSTM step (Hochreiter & Schmidhuber 1997; forget gate of Gers et al. 2000).

    carry: (c, h) each [B, H]; g: [B, 4H] input projection with its bias, gates in the
    order input, forget, candidate, output. No peepholes:
      i, f, o = sigmoid(.), c' = f * c + i * tanh(candidate), h' = o * tanh(c').
    `ln_h`: the layer-norm gain and bias of the recurrent projection (None: none).
    """
    c, h = carry
    H = h.shape[-1]
    z = g + block_ln(h @ w_h, ln_h, 4)  # [B, 4H]
    i = jax.nn.sigmoid(z[..., :H])
    f = jax.nn.sigmoid(z[..., H : 2 * H])
    c = f * c + i * jnp.tanh(z[..., 2 * H : 3 * H])
    h = jax.nn.sigmoid(z[..., 3 * H :]) * jnp.tanh(c)
    return LSTMCarry(c, h)


def _recurrent_sequence(cell, heads: dict, carry, xs, remat: bool):
    """`cell` (carry, x [B, D]) -> (carry, h [B, H]) over a time-major window, with the
    policy/value `heads` applied to h at every step inside the scan (see `gru_sequence`).

    Returns (carry, (policy_out [T, B, A], value [T, B])).
    """

    def dense(q, x):
        return x @ q["kernel"] + q["bias"]

    def body(carry, x):
        carry, h = cell(carry, x)
        return carry, (dense(heads["policy"], h), dense(heads["value"], h)[..., 0])

    if xs.shape[0] == 1:  # acting: no loop
        carry, out = body(carry, xs[0])
        return carry, jax.tree.map(lambda a: a[None], out)
    return lax.scan(jax.checkpoint(body, prevent_cse=False) if remat else body, carry, xs)


def gru_sequence(p: dict, h, xs, remat: bool = False):
    """GRU over a time-major window with the policy/value heads applied at every step.

    p: {"w_i", "b_i", "w_h", "b_hn", "heads": {"policy": {...}, "value": {...}}};
    h: [B, H]; xs: [T, B, D]. Returns (h, (policy_out [T, B, A], value [T, B])).

    Everything per step stays inside the scan (input projection, cell, heads): on a CPU
    the training step is bound by memory traffic more than by FLOPs, and a [T, B, 3H]
    projection computed outside the loop costs more in traffic than it saves in matmul
    efficiency. With `remat` the step is recomputed in the backward pass, so only h_t is
    kept per step instead of the [T, B, 3H] gate activations: faster where traffic
    dominates (small hidden size, many trials: GRU 64 x 2048 trials, 1.4x), slower where
    the matmuls do (GRU 256 x 128 trials, 0.8x); see docs/benchmarks.md. `remat`
    changes speed and memory, never values.

    With layer normalisation, p also holds "ln_x" and "ln_h" (`block_ln` gains and biases of
    the input and recurrent projections).
    """

    def cell(h, x):
        h = gru_cell(h, block_ln(x @ p["w_i"], p.get("ln_x"), 3) + p["b_i"], p["w_h"], p["b_hn"], p.get("ln_h"))
        return h, h

    return _recurrent_sequence(cell, p["heads"], h, xs, remat)


def lstm_sequence(p: dict, carry: LSTMCarry, xs, remat: bool = False):
    """LSTM over a time-major window, built as `gru_sequence` (projection, cell and heads
    inside the scan, optional `remat`), so the two cells' speeds compare like for like.

    p: {"w_i" [D, 4H], "b_i" [4H], "w_h" [H, 4H], "heads": {...}}; carry: (c, h) each
    [B, H]; xs: [T, B, D]. Returns (carry, (policy_out [T, B, A], value [T, B])).
    """

    def cell(carry, x):
        carry = lstm_cell(carry, block_ln(x @ p["w_i"], p.get("ln_x"), 4) + p["b_i"], p["w_h"], p.get("ln_h"))
        return carry, carry.h

    return _recurrent_sequence(cell, p["heads"], carry, xs, remat)


def _lstm_bias_init(key, shape, dtype=jnp.float32):
    """Zeros, except 1 on the forget gate (the second quarter): remember by default
    at the start of training (Gers et al. 2000; Jozefowicz et al. 2015)."""
    H = shape[0] // 4
    return jnp.zeros(shape, dtype).at[H : 2 * H].set(1.0)


def _ln_params(module: nn.Module, width: int, dtype) -> dict:
    """Layer-norm gains (ones) and biases (zeros) of the input and recurrent projections."""
    return {
        name: {"scale": module.param(f"{name}_scale", nn.initializers.ones, (width,), dtype),
               "bias": module.param(f"{name}_bias", nn.initializers.zeros, (width,), dtype)}
        for name in ("ln_x", "ln_h")
    }


class GRUNet(nn.Module):
    """Declares the GRU and head parameters; the computation is `gru_sequence`."""

    hidden_size: int
    num_outputs: int
    continuous: bool = False
    remat: bool = False
    layer_norm: bool = False

    @nn.compact
    def __call__(self, h, xs):  # h: [B, H]; xs: [T, B, D]
        H = self.hidden_size
        D = xs.shape[-1]
        heads = _Heads(self.num_outputs, self.continuous, name="heads")
        heads(h)  # creates the head parameters at init (unused otherwise; XLA drops it)
        dtype = default_float()
        p = {
            "w_i": self.param("w_i", nn.initializers.glorot_uniform(), (D, 3 * H), dtype),
            "b_i": self.param("b_i", nn.initializers.zeros, (3 * H,), dtype),
            "w_h": self.param("w_h", nn.initializers.orthogonal(), (H, 3 * H), dtype),
            "b_hn": self.param("b_hn", nn.initializers.zeros, (H,), dtype),
            "heads": heads.variables["params"],
        }
        if self.layer_norm:
            p.update(_ln_params(self, 3 * H, dtype))
        return gru_sequence(p, h, xs, self.remat)


class LSTMNet(nn.Module):
    """Declares the LSTM and head parameters (named as the GRU's, with 4H gate columns
    and no b_hn); the computation is `lstm_sequence`."""

    hidden_size: int
    num_outputs: int
    continuous: bool = False
    remat: bool = False
    layer_norm: bool = False

    @nn.compact
    def __call__(self, carry: LSTMCarry, xs):  # carry: (c, h) each [B, H]; xs: [T, B, D]
        H = self.hidden_size
        D = xs.shape[-1]
        heads = _Heads(self.num_outputs, self.continuous, name="heads")
        heads(carry.h)  # creates the head parameters at init (unused otherwise; XLA drops it)
        dtype = default_float()
        p = {
            "w_i": self.param("w_i", nn.initializers.glorot_uniform(), (D, 4 * H), dtype),
            "b_i": self.param("b_i", _lstm_bias_init, (4 * H,), dtype),
            "w_h": self.param("w_h", nn.initializers.orthogonal(), (H, 4 * H), dtype),
            "heads": heads.variables["params"],
        }
        if self.layer_norm:
            p.update(_ln_params(self, 4 * H, dtype))
        return lstm_sequence(p, carry, xs, self.remat)


# --------------------------------------------------------------------------- SNAIL


class SNAILCarry(NamedTuple):
    """Fixed-size memory of a SNAIL trial, time-major so a step writes one row.

    t: [] int32 steps seen so far (shared by the batch).
    feats: [P + L, B, C] the stream (the input, then every layer's output channels) at
      each past step; P zero rows of left padding (the largest dilation) so causal
      convolutions read zeros before t = 0.
    keys, values: tuples (one per attention block) of [L, B, h*K] / [L, B, h*V], the h
      heads side by side on the last axis (head j in columns j*K..(j+1)*K-1).
    """

    t: jax.Array
    feats: jax.Array
    keys: tuple
    values: tuple


def snail_layout(blocks: tuple[str, ...], context: int, input_dim: int, filters: int,
                 key_size: int, value_size: int, num_heads: int = 1) -> list[tuple]:
    """Static plan of SNAIL layers: ("dense", dilation, c_in) or ("attn", c_in).

    A TC block over a sequence of length `context` is ceil(log2 context) dense blocks
    with dilations 1, 2, 4, ...; each layer appends its output channels to the stream
    (an attention block `num_heads * value_size`).
    """
    plan, c = [], input_dim
    for b in blocks:
        if b == "tc":
            for i in range(max(1, math.ceil(math.log2(max(context, 2))))):
                plan.append(("dense", 2**i, c))
                c += filters
        else:
            plan.append(("attn", c))
            c += num_heads * value_size
    return plan


def causal_attention(q, k, v, q_pos, num_heads: int = 1):
    """Causal scaled dot-product attention (Vaswani et al. 2017) of a window's queries
    over a trial's key/value buffer, all heads in one einsum.

    Args:
      q: [W, B, h*K] queries of the window's steps; k: [L, B, h*K] and v: [L, B, h*V]
        the keys and values of every step of the trial so far (rows after the newest
        step are never read); the h heads side by side on the last axis.
      q_pos: [W] the trial step of each query; step t reads key steps 0..t.
      num_heads: h.
    Returns:
      [W, B, h*V] the heads' reads, side by side (no output projection: SNAIL appends the
      read to the stream, and every consumer of the stream is a linear map of it, which
      would absorb one).
    """
    W, B = q.shape[:2]
    L = k.shape[0]
    K = q.shape[-1] // num_heads
    if num_heads > 1:  # [.., h*K] -> [.., h, K]: a bitcast of the contiguous last axis
        q, k, v = (a.reshape(a.shape[:2] + (num_heads, -1)) for a in (q, k, v))
    h = "h" if num_heads > 1 else ""  # one head: exactly the paper's single-head program
    logits = jnp.einsum(f"wb{h}k,lb{h}k->b{h}wl", q, k) / math.sqrt(K)  # [B, (h,) W, L]
    mask = jnp.arange(L)[None, :] <= q_pos[:, None]  # [W, L] causal: key step <= query step
    logits = jnp.where(mask, logits, -1e30)
    out = jnp.einsum(f"b{h}wl,lb{h}v->wb{h}v", jax.nn.softmax(logits, axis=-1), v)  # [W, B, (h,) V]
    return out.reshape(W, B, -1)


class SNAILNet(nn.Module):
    """SNAIL over a time-major window, continuing from a `SNAILCarry`."""

    blocks: tuple[str, ...]
    context: int  # maximum trial length L
    filters: int
    key_size: int
    value_size: int
    num_outputs: int
    continuous: bool = False
    num_heads: int = 1  # key_size and value_size are per head

    @nn.compact
    def __call__(self, carry: SNAILCarry, xs):  # xs: [W, B, D]
        W, B, D = xs.shape
        nh = self.num_heads
        plan = snail_layout(self.blocks, self.context, D, self.filters, self.key_size, self.value_size, nh)
        pad = max([p[1] for p in plan if p[0] == "dense"], default=0)
        t, old = carry.t, carry.feats  # old: [P + L, B, C] the stream before this window
        keys, values = list(carry.keys), list(carry.values)
        zero = jnp.zeros((), t.dtype)  # slice indices share t's integer dtype (also with x64 enabled)

        def write(buf, rows, start):  # rows [W, B, C] into buf at time `start`
            return lax.dynamic_update_slice(buf, rows.astype(buf.dtype), (start, zero, zero))

        def back(x, d):  # the stream's first c channels d steps before each step of the window
            c = x.shape[-1]
            if d >= W:  # entirely before the window: from the carry
                return lax.dynamic_slice(old, (pad + t - d, zero, zero), (W, B, c))
            before = lax.dynamic_slice(old, (pad + t - d, zero, zero), (d, B, c))  # [d, B, c]
            return jnp.concatenate([before, x[: W - d]], axis=0)

        # The window's stream is built as a list of channel blocks (the input, then each
        # layer's output); a layer reads their concatenation, and the carry's buffer is
        # written once at the end. Reading and writing one shared buffer per layer would
        # make the backward pass materialise a buffer-sized cotangent for every read.
        pieces = [xs.astype(old.dtype)]
        a = 0
        dtype = default_float()
        q_pos = t + jnp.arange(W)  # [W]
        for i, layer in enumerate(plan):
            x = jnp.concatenate(pieces, axis=-1) if len(pieces) > 1 else pieces[0]  # [W, B, c]
            c = layer[-1]  # stream channels this layer reads (the plan tracks them)
            if layer[0] == "dense":
                d = layer[1]
                w = self.param(f"dense{i}_w", nn.initializers.glorot_uniform(), (2 * c, 2 * self.filters), dtype)
                b = self.param(f"dense{i}_b", nn.initializers.zeros, (2 * self.filters,), dtype)
                # causal dilated convolution of width 2: the stream d steps back and now
                y = back(x, d) @ w[:c] + x @ w[c:] + b  # [W, B, 2F]
                out = jnp.tanh(y[..., : self.filters]) * jax.nn.sigmoid(y[..., self.filters :])  # [W, B, F]
            else:
                # the heads' projections side by side: [c, h*K] ([c, K] for one head, as in the paper)
                wq = self.param(f"attn{i}_q", nn.initializers.glorot_uniform(), (c, nh * self.key_size), dtype)
                wk = self.param(f"attn{i}_k", nn.initializers.glorot_uniform(), (c, nh * self.key_size), dtype)
                wv = self.param(f"attn{i}_v", nn.initializers.glorot_uniform(), (c, nh * self.value_size), dtype)
                q = x @ wq  # [W, B, h*K] (before k and v: the order of x's uses fixes its gradient's sum order)
                keys[a] = write(keys[a], x @ wk, t)  # [L, B, h*K]
                values[a] = write(values[a], x @ wv, t)  # [L, B, h*V]
                out = causal_attention(q, keys[a], values[a], q_pos, nh)  # [W, B, h*V]
                a += 1
            pieces.append(out.astype(old.dtype))
        stream = jnp.concatenate(pieces, axis=-1)  # [W, B, C]
        policy_out, value = _Heads(self.num_outputs, self.continuous, name="heads")(stream)
        feats = write(old, stream, pad + t)
        return SNAILCarry(t + W, feats, tuple(keys), tuple(values)), (policy_out, value)


# --------------------------------------------------------------------------- policies


@dataclass(frozen=True)
class _SequencePolicy:
    """Common plumbing: params, distributions, step == apply on a length-1 window.

    `separate_value`: the value comes from a second network of the same architecture with
    its own parameters and memory (params "value_net", carry `(policy carry, value
    carry)`), so the value loss never moves the policy's weights; otherwise one network
    carries both heads."""

    input_dim: int
    num_outputs: int  # actions (discrete) or action dimensions (continuous)
    continuous: bool
    separate_value: bool = False

    def _net(self) -> nn.Module:  # pragma: no cover - abstract
        raise NotImplementedError

    def _net_carry(self, batch_size: int, dtype=None) -> Any:  # pragma: no cover
        raise NotImplementedError

    def initial_carry(self, batch_size: int, dtype=None) -> Any:
        """The memory at the start of a trial (a pair of them with `separate_value`)."""
        carry = self._net_carry(batch_size, dtype)
        return (carry, carry) if self.separate_value else carry

    def init(self, key) -> dict:
        carry = self._net_carry(1)
        dtype = default_float()
        x = jnp.zeros((1, 1, self.input_dim), dtype)
        params = {"net": self._net().init(key, carry, x)["params"]}
        if self.separate_value:
            params["value_net"] = self._net().init(jax.random.fold_in(key, 1), carry, x)["params"]
        if self.continuous:
            params["log_std"] = jnp.zeros((self.num_outputs,), dtype)
        return params

    def apply(self, params, carry, xs):
        """Whole window: xs [T, B, D] -> (carry, (policy_out [T, B, A], value [T, B]))."""
        net = self._net()
        if not self.separate_value:
            return net.apply({"params": params["net"]}, carry, xs)
        policy_carry, value_carry = carry
        policy_carry, (out, _) = net.apply({"params": params["net"]}, policy_carry, xs)
        value_carry, (_, value) = net.apply({"params": params["value_net"]}, value_carry, xs)
        return (policy_carry, value_carry), (out, value)

    def step(self, params, carry, x):
        """One step: x [B, D] -> (carry, (policy_out [B, A], value [B]))."""
        carry, (out, value) = self.apply(params, carry, x[None])
        return carry, (out[0], value[0])

    def distribution(self, params, policy_out) -> distrax.Distribution:
        if self.continuous:
            scale = jnp.exp(params["log_std"]) * jnp.ones_like(policy_out)
            return distrax.MultivariateNormalDiag(policy_out, scale)
        return distrax.Categorical(logits=policy_out)


@dataclass(frozen=True)
class GRUPolicy(_SequencePolicy):
    """RL^2's recurrent policy: a GRU (default) or LSTM (`arch.cell`) of
    `arch.hidden_size` units -> policy and value heads."""

    arch: GRUArchitecture = GRUArchitecture()

    def __post_init__(self):
        check_int("input_dim", self.input_dim, 1, 1_000_000)
        check_int("num_outputs", self.num_outputs, 1, 1_000_000)
        check_bool("separate_value", self.separate_value)

    def _net(self):
        net = LSTMNet if self.arch.cell == "lstm" else GRUNet
        return net(self.arch.hidden_size, self.num_outputs, self.continuous, self.arch.remat, self.arch.layer_norm)

    def _net_carry(self, batch_size: int, dtype=None):
        """h [B, H] (GRU) or `LSTMCarry(c, h)` of [B, H] each (LSTM), zeros."""
        h = jnp.zeros((batch_size, self.arch.hidden_size), dtype or default_float())  # [B, H]
        return LSTMCarry(h, h) if self.arch.cell == "lstm" else h


@dataclass(frozen=True)
class SNAILPolicy(_SequencePolicy):
    """SNAIL policy: `arch.blocks` of "tc"/"attn" over a trial of at most `context` steps."""

    context: int = 10
    arch: SNAILArchitecture = SNAILArchitecture()

    def __post_init__(self):
        check_int("context", self.context, 1, 1_000_000)
        check_bool("separate_value", self.separate_value)

    def _net(self):
        a = self.arch
        return SNAILNet(a.blocks, self.context, a.filters, a.key_size, a.value_size, self.num_outputs,
                        self.continuous, a.num_heads)

    @property
    def layout(self) -> list[tuple]:
        a = self.arch
        return snail_layout(a.blocks, self.context, self.input_dim, a.filters, a.key_size, a.value_size,
                            a.num_heads)

    def _net_carry(self, batch_size: int, dtype=None) -> SNAILCarry:
        dtype = dtype or default_float()
        plan = self.layout
        a = self.arch
        pad = max([p[1] for p in plan if p[0] == "dense"], default=0)
        num_attn = sum(p[0] == "attn" for p in plan)
        L = self.context
        # The stream buffer holds the input and every layer's output channels.
        nh = a.num_heads
        total = self.input_dim + sum(a.filters if p[0] == "dense" else nh * a.value_size for p in plan)
        return SNAILCarry(
            t=jnp.zeros((), jnp.int32),
            feats=jnp.zeros((pad + L, batch_size, total), dtype),
            keys=tuple(jnp.zeros((L, batch_size, nh * a.key_size), dtype) for _ in range(num_attn)),
            values=tuple(jnp.zeros((L, batch_size, nh * a.value_size), dtype) for _ in range(num_attn)),
        )
