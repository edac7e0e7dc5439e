"""RL^2's LSTM cell and SNAIL's multi-head attention: step == apply and windows in
float64, each against a direct formula, the paper's single-head path kept bit for bit,
causality per head, bad fields named, and `jaxmeta train` with each.
jit == no-jit and the LSTM's eager windows check are in tests/test_sequence.py."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmeta.algorithms import RL2Config, SNAILConfig
from jaxmeta.config import ConfigError
from jaxmeta.networks.sequence import (
    GRUArchitecture, GRUPolicy, LSTMCarry, SNAILArchitecture, SNAILPolicy, causal_attention,
)
from conftest import run_cli

T, B, D, A = 12, 3, 5, 4


def _lstm(hidden_size=6, **kw):
    return GRUPolicy(input_dim=D, num_outputs=A, continuous=False,
                     arch=GRUArchitecture(hidden_size=hidden_size, cell="lstm", **kw))


def _noisy(params, seed=2, scale=0.3):
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.PRNGKey(seed), len(leaves))
    return jax.tree.unflatten(tree, [p + scale * jax.random.normal(k, p.shape, p.dtype) for p, k in zip(leaves, keys)])


VARIANT_MODELS = {
    "lstm": lambda: _lstm(8),
    "lstm_gauss": lambda: GRUPolicy(input_dim=D, num_outputs=2, continuous=True,
                                    arch=GRUArchitecture(hidden_size=8, cell="lstm")),
    "gru_ln": lambda: GRUPolicy(input_dim=D, num_outputs=A, continuous=False,
                                arch=GRUArchitecture(hidden_size=8, layer_norm=True)),
    "lstm_ln": lambda: _lstm(8, layer_norm=True),
    "snail_heads": lambda: SNAILPolicy(input_dim=D, num_outputs=A, continuous=False, context=T,
                                       arch=SNAILArchitecture(filters=6, key_size=3, value_size=4, num_heads=3,
                                                              blocks=("tc", "attn"))),
}


@pytest.mark.parametrize("name", list(VARIANT_MODELS))
def test_step_and_windows_equal_apply_in_float64(name):
    """Acting one step at a time, and two windows passing the carry on, give one apply's
    outputs; with x64 enabled everything (params, carry, outputs, gradients) is float64."""
    with jax.enable_x64(True):
        model = VARIANT_MODELS[name]()
        params = _noisy(model.init(jax.random.PRNGKey(1)))
        xs = jax.random.normal(jax.random.PRNGKey(3), (T, B, D))
        apply, step = jax.jit(model.apply), jax.jit(model.step)
        carry0 = model.initial_carry(B)
        floats = lambda tree: {str(a.dtype) for a in jax.tree.leaves(tree) if jnp.issubdtype(a.dtype, jnp.floating)}  # noqa: E731
        assert floats((params, carry0)) == {"float64"} and xs.dtype == jnp.float64
        carry_end, (out, value) = apply(params, carry0, xs)
        assert floats((carry_end, out, value)) == {"float64"}
        assert out.shape == (T, B, model.num_outputs) and value.shape == (T, B)
        carry, outs = carry0, []
        for t in range(T):
            carry, o = step(params, carry, xs[t])
            outs.append(o)
        np.testing.assert_allclose(jnp.stack([o[0] for o in outs]), out, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(jnp.stack([o[1] for o in outs]), value, rtol=1e-10, atol=1e-12)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12), carry, carry_end)
        carry, (o1, v1) = apply(params, carry0, xs[:6])  # two windows of one shape: one compilation
        _, (o2, v2) = apply(params, carry, xs[6:])
        np.testing.assert_allclose(jnp.concatenate([o1, o2]), out, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(jnp.concatenate([v1, v2]), value, rtol=1e-10, atol=1e-12)
        assert float(jnp.std(value, axis=0).mean()) > 1e-4  # outputs depend on the past


# --------------------------------------------------------------------------- LSTM


def test_lstm_params_and_forget_bias_init():
    """The LSTM declares the GRU's parameter names with 4H gate columns (no b_hn); the
    bias is 0 but for 1 on the forget gate; the carry is (c, h) of zeros."""
    H = 6
    p = _lstm(H).init(jax.random.PRNGKey(0))["net"]
    g = GRUPolicy(input_dim=D, num_outputs=A, continuous=False, arch=GRUArchitecture(hidden_size=H))
    pg = g.init(jax.random.PRNGKey(0))["net"]
    assert set(p) == set(pg) - {"b_hn"}
    assert p["w_i"].shape == (D, 4 * H) and p["w_h"].shape == (H, 4 * H) and pg["w_h"].shape == (H, 3 * H)
    np.testing.assert_array_equal(p["b_i"], np.r_[np.zeros(H), np.ones(H), np.zeros(2 * H)])
    carry = _lstm(H).initial_carry(B)
    assert isinstance(carry, LSTMCarry) and carry.c.shape == carry.h.shape == (B, H)
    assert not np.any(carry.c) and not np.any(carry.h)


def test_lstm_step_matches_the_direct_formula():
    """One step against i, f, o = sigmoid(.), c' = f c + i tanh(g), h' = o tanh(c'), float64
    NumPy with one weight matrix per gate (order i, f, g, o), and the heads on h'."""
    H = 6
    model = _lstm(H)
    params = _noisy(model.init(jax.random.PRNGKey(1)))
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(3), 3)
    x = jax.random.normal(k1, (B, D))
    c0, h0 = jax.random.normal(k2, (B, H)), jnp.tanh(jax.random.normal(k3, (B, H)))
    (c1, h1), (logits, value) = model.step(params, LSTMCarry(c0, h0), x)

    p = jax.tree.map(lambda a: np.asarray(a, np.float64), params["net"])
    x, c0, h0 = (np.asarray(a, np.float64) for a in (x, c0, h0))
    W, U, b = (np.split(p[k], 4, axis=-1) for k in ("w_i", "w_h", "b_i"))
    sig = lambda z: 1.0 / (1.0 + np.exp(-z))  # noqa: E731
    gate = [x @ W[j] + h0 @ U[j] + b[j] for j in range(4)]
    c = sig(gate[1]) * c0 + sig(gate[0]) * np.tanh(gate[2])
    h = sig(gate[3]) * np.tanh(c)
    np.testing.assert_allclose(c1, c, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(h1, h, rtol=1e-5, atol=1e-6)
    heads = p["heads"]
    np.testing.assert_allclose(logits, h @ heads["policy"]["kernel"] + heads["policy"]["bias"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(value, (h @ heads["value"]["kernel"] + heads["value"]["bias"])[:, 0],
                               rtol=1e-5, atol=1e-6)
    # the cell state carries what the output gate hides: c' differs from h'
    assert np.max(np.abs(c - h)) > 0.1


# --------------------------------------------------------------------------- layer norm


def _ln(z, scale, bias, blocks):
    zb = z.reshape(*z.shape[:-1], blocks, -1)
    zb = (zb - zb.mean(-1, keepdims=True)) / np.sqrt(zb.var(-1, keepdims=True) + 1e-5)
    return zb.reshape(z.shape) * scale + bias


def test_layer_norm_gru_step_matches_the_direct_formula():
    """With layer_norm the GRU's step is, in float64 NumPy: each gate block of x W and of h U
    normalised on its own (mean 0, variance 1 over its H units) with its gain and bias, then
    r, z = sigmoid(.), n = tanh(x_n + r (h_n + b_hn)), h' = (1 - z) n + z h."""
    H = 6
    model = GRUPolicy(input_dim=D, num_outputs=A, continuous=False, arch=GRUArchitecture(hidden_size=H, layer_norm=True))
    params = _noisy(model.init(jax.random.PRNGKey(1)))
    k1, k2 = jax.random.split(jax.random.PRNGKey(3))
    x, h0 = jax.random.normal(k1, (B, D)), jnp.tanh(jax.random.normal(k2, (B, H)))
    h1, (logits, _) = model.step(params, h0, x)

    p = jax.tree.map(lambda a: np.asarray(a, np.float64), params["net"])
    x, h0 = np.asarray(x, np.float64), np.asarray(h0, np.float64)
    gx = np.split(_ln(x @ p["w_i"], p["ln_x_scale"], p["ln_x_bias"], 3) + p["b_i"], 3, axis=-1)
    gh = np.split(_ln(h0 @ p["w_h"], p["ln_h_scale"], p["ln_h_bias"], 3), 3, axis=-1)
    sig = lambda z: 1.0 / (1.0 + np.exp(-z))  # noqa: E731
    r, z = sig(gx[0] + gh[0]), sig(gx[1] + gh[1])
    n = np.tanh(gx[2] + r * (gh[2] + p["b_hn"]))
    h = (1 - z) * n + z * h0
    np.testing.assert_allclose(h1, h, rtol=1e-5, atol=1e-6)
    heads = p["heads"]
    np.testing.assert_allclose(logits, h @ heads["policy"]["kernel"] + heads["policy"]["bias"], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_layer_norm_makes_the_cell_blind_to_weight_scale(cell):
    """What the normalisation is for: scaling a gate's input or recurrent weights by any
    positive factor leaves the layer-normed cell's outputs unchanged (up to the 1e-5 added
    to each block's variance), and changes the plain cell's."""
    outs = {}
    for ln in (False, True):
        model = GRUPolicy(input_dim=D, num_outputs=A, continuous=False,
                          arch=GRUArchitecture(hidden_size=8, cell=cell, layer_norm=ln))
        params = _noisy(model.init(jax.random.PRNGKey(4)))
        xs = jax.random.normal(jax.random.PRNGKey(5), (T, B, D))
        scaled = jax.tree.map(lambda a: a, params)
        G = params["net"]["w_h"].shape[-1] // 8
        scale = jnp.repeat(jnp.linspace(3.0, 7.0, G), 8)  # one factor per gate block
        scaled["net"] = {**params["net"], "w_i": params["net"]["w_i"] * scale, "w_h": params["net"]["w_h"] * scale}
        _, (o1, v1) = model.apply(params, model.initial_carry(B), xs)
        _, (o2, v2) = model.apply(scaled, model.initial_carry(B), xs)
        outs[ln] = float(jnp.max(jnp.abs(o1 - o2)) + jnp.max(jnp.abs(v1 - v2)))
    assert outs[True] < 2e-3 and outs[False] > 0.1, outs


def test_layer_norm_params_only_when_asked():
    plain = GRUPolicy(input_dim=D, num_outputs=A, continuous=False, arch=GRUArchitecture(hidden_size=8))
    normed = GRUPolicy(input_dim=D, num_outputs=A, continuous=False, arch=GRUArchitecture(hidden_size=8, layer_norm=True))
    extra = set(normed.init(jax.random.PRNGKey(0))["net"]) - set(plain.init(jax.random.PRNGKey(0))["net"])
    assert extra == {"ln_x_scale", "ln_x_bias", "ln_h_scale", "ln_h_bias"}
    p = normed.init(jax.random.PRNGKey(0))["net"]
    assert p["ln_x_scale"].shape == (24,) and bool(jnp.all(p["ln_x_scale"] == 1)) and bool(jnp.all(p["ln_h_bias"] == 0))
    with pytest.raises(ConfigError, match="layer_norm"):
        GRUArchitecture(layer_norm="yes")


def test_lstm_remat_changes_nothing_but_memory():
    plain, remat = _lstm(8), _lstm(8, remat=True)
    params = _noisy(plain.init(jax.random.PRNGKey(4)))
    xs = jax.random.normal(jax.random.PRNGKey(5), (T, B, D))

    def loss(model, p):
        _, (out, value) = model.apply(p, model.initial_carry(B), xs)
        return jnp.sum(jnp.tanh(out) ** 2) + jnp.sum(value**3)

    f = jax.jit(jax.value_and_grad(loss, argnums=1), static_argnums=0)
    a, b = f(plain, params), f(remat, params)
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6), a, b)
    assert float(jnp.abs(b[1]["net"]["w_h"]).max()) > 1e-3  # the recurrent weights get a gradient


# --------------------------------------------------------------------------- multi-head attention


def _qkv(h, K, V, W=4, L=T, seed=0):
    kq, kk, kv = jax.random.split(jax.random.PRNGKey(seed), 3)
    return (jax.random.normal(kq, (W, B, h * K)), jax.random.normal(kk, (L, B, h * K)),
            jax.random.normal(kv, (L, B, h * V)))


def _single_head_reference(q, k, v, q_pos):
    """SNAIL's single-head attention exactly as it was written before heads existed."""
    pos = jnp.arange(k.shape[0])
    logits = jnp.einsum("wbk,lbk->bwl", q, k) / np.sqrt(q.shape[-1])
    logits = jnp.where(pos[None, :] <= q_pos[:, None], logits, -1e30)
    return jnp.einsum("bwl,lbv->wbv", jax.nn.softmax(logits, axis=-1), v)


def test_one_head_is_the_single_head_attention_bit_for_bit():
    q, k, v = _qkv(1, 5, 7)
    q_pos = 3 + jnp.arange(4)
    np.testing.assert_array_equal(causal_attention(q, k, v, q_pos), _single_head_reference(q, k, v, q_pos))
    np.testing.assert_array_equal(jax.jit(causal_attention, static_argnums=4)(q, k, v, q_pos, 1),
                                  jax.jit(_single_head_reference)(q, k, v, q_pos))
    # and SNAIL with num_heads=1 has the paper's parameter shapes ([c, K] per projection)
    model = SNAILPolicy(input_dim=D, num_outputs=A, continuous=False, context=T,
                        arch=SNAILArchitecture(filters=4, key_size=5, value_size=7, blocks=("attn",)))
    p = jax.eval_shape(model.init, jax.random.PRNGKey(0))["net"]
    assert p["attn0_q"].shape == (D, 5) and p["attn0_v"].shape == (D, 7)


def test_heads_are_separate_attentions_not_one_wide_head():
    """Head j's read is single-head attention on head j's columns of q, k, v; the same
    arrays read as one head of the full width give something else (one softmax)."""
    h, K, V = 3, 2, 4
    q, k, v = _qkv(h, K, V, seed=1)
    q_pos = 5 + jnp.arange(4)
    out = causal_attention(q, k, v, q_pos, h)  # [W, B, h*V]
    assert out.shape == (4, B, h * V)
    for j in range(h):
        sl = lambda a, w: a[..., j * w : (j + 1) * w]  # noqa: E731
        np.testing.assert_allclose(out[..., j * V : (j + 1) * V],
                                   _single_head_reference(sl(q, K), sl(k, K), sl(v, V), q_pos), rtol=1e-5, atol=1e-6)
    wide = causal_attention(q, k, v, q_pos, 1)
    assert float(jnp.max(jnp.abs(out - wide))) > 1e-2
    # causal per head: keys/values after the newest query step are never read
    late = k.at[9:].set(1e3), v.at[9:].set(1e3)
    np.testing.assert_array_equal(causal_attention(q, *late, q_pos, h), out)


def test_multi_head_snail_widths():
    """Per-head key/value widths: an attention block appends num_heads * value_size channels."""
    arch = SNAILArchitecture(filters=4, key_size=2, value_size=3, num_heads=5, blocks=("tc", "attn"))
    model = SNAILPolicy(input_dim=D, num_outputs=A, continuous=False, context=T, arch=arch)
    p = jax.eval_shape(model.init, jax.random.PRNGKey(0))["net"]  # shapes only
    attn = [k for k in p if k.endswith("_q")][0]
    c = p[attn].shape[0]
    assert p[attn].shape == (c, 10) and p[attn.replace("_q", "_v")].shape == (c, 15)
    carry = model.initial_carry(B)
    assert carry.keys[0].shape == (T, B, 10) and carry.values[0].shape == (T, B, 15)
    assert carry.feats.shape[-1] == c + 15
    assert p["heads"]["policy"]["kernel"].shape == (c + 15, A)


# --------------------------------------------------------------------------- configs


@pytest.mark.parametrize("make,field", [
    (lambda: GRUArchitecture(cell="rnn"), "cell"),
    (lambda: RL2Config(cell="LSTM"), "cell"),
    (lambda: SNAILArchitecture(num_heads=0), "num_heads"),
    (lambda: SNAILConfig(num_heads=2.0), "num_heads"),
    (lambda: SNAILArchitecture(num_heads=1024, key_size=128), "num_heads"),
])
def test_bad_cell_or_heads_raise_naming_the_field(make, field):
    with pytest.raises(ConfigError, match=field) as e:
        make()
    assert e.value.field == field


def test_defaults_are_the_papers():
    assert RL2Config().cell == "gru" and SNAILConfig().num_heads == 1


# --------------------------------------------------------------------------- command line


COMMON = ["--env", "bandit", "--arms", "3", "--episodes", "2", "--meta-batch-size", "2", "--num-minibatches", "1",
          "--num-eval-tasks", "8", "--no-progress"]


def test_cli_lstm_train(tmp_path, capsys):
    """`jaxmeta train rl2 --cell lstm`: the run's config and its final table beside the baselines
    (resume and `jaxmeta evaluate` of such runs: docs/benchmarks.md, issue 16 section)."""
    code, _, err = run_cli(["train", "rl2", *COMMON, "--cell", "lstm", "--hidden-size", "8", "--num-batches", "1",
                            "--out", str(tmp_path), "--name", "r"], capsys)
    assert code == 0, err
    config = json.loads((tmp_path / "r" / "config.json").read_text())["config"]
    assert (config["cell"], config["hidden_size"]) == ("lstm", 8)
    rows = json.loads((tmp_path / "r" / "final_table.json").read_text())["rows"]
    assert rows[0][0] == "agent" and np.isfinite(rows[0][1]) and len(rows) > 1


def test_cli_snail_heads_train(tmp_path, capsys):
    """`jaxmeta train snail --num-heads 2`: the run's config and its final table beside the baselines."""
    code, _, err = run_cli(["train", "snail", *COMMON, "--num-heads", "2", "--filters", "4", "--key-size", "2",
                            "--value-size", "3", "--num-batches", "1", "--out", str(tmp_path), "--name", "s"], capsys)
    assert code == 0, err
    assert json.loads((tmp_path / "s" / "config.json").read_text())["config"]["num_heads"] == 2
    rows = json.loads((tmp_path / "s" / "final_table.json").read_text())["rows"]
    assert rows[0][0] == "agent" and np.isfinite(rows[0][1]) and len(rows) > 1
