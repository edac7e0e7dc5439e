"""Sequence models: step-by-step acting equals whole-sequence evaluation, causality.

RL^2's LSTM cell and multi-head SNAIL run the cheap checks here; their step == apply
and window checks (jitted, in float64) and multi-head causality are in
tests/test_sequence_variants.py."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmeta.config import ConfigError
from jaxmeta.networks.sequence import GRUArchitecture, GRUPolicy, SNAILArchitecture, SNAILPolicy

T, B, D, A = 12, 3, 5, 4


def _models():
    return {
        "gru": GRUPolicy(input_dim=D, num_outputs=A, continuous=False, arch=GRUArchitecture(hidden_size=16)),
        "gru_gauss": GRUPolicy(input_dim=D, num_outputs=2, continuous=True, arch=GRUArchitecture(hidden_size=8)),
        "snail": SNAILPolicy(input_dim=D, num_outputs=A, continuous=False, context=T,
                             arch=SNAILArchitecture(filters=6, key_size=5, value_size=7,
                                                    blocks=("attn", "tc", "tc", "attn"))),
        "lstm": GRUPolicy(input_dim=D, num_outputs=A, continuous=False,
                          arch=GRUArchitecture(hidden_size=16, cell="lstm")),
        "snail_heads": SNAILPolicy(input_dim=D, num_outputs=A, continuous=False, context=T,
                                   arch=SNAILArchitecture(filters=6, key_size=3, value_size=4, num_heads=3,
                                                          blocks=("tc", "attn"))),
    }


def _xs(seed=0):
    return jax.random.normal(jax.random.PRNGKey(seed), (T, B, D))


def _step_by_step(model, params, xs):
    carry = model.initial_carry(B)
    outs, values = [], []
    for t in range(xs.shape[0]):
        carry, (o, v) = model.step(params, carry, xs[t])
        outs.append(o)
        values.append(v)
    return jnp.stack(outs), jnp.stack(values)


@pytest.mark.parametrize("name", ["gru", "gru_gauss", "snail"])
def test_step_by_step_equals_whole_sequence(name):
    model = _models()[name]
    params = model.init(jax.random.PRNGKey(1))
    # Non-trivial heads so the comparison is sensitive.
    params = jax.tree.map(lambda p: p + 0.3 * jax.random.normal(jax.random.PRNGKey(2), p.shape), params)
    xs = _xs()
    _, (out, value) = model.apply(params, model.initial_carry(B), xs)
    step_out, step_value = _step_by_step(model, params, xs)
    assert out.shape == (T, B, model.num_outputs) and value.shape == (T, B)
    np.testing.assert_allclose(step_out, out, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(step_value, value, rtol=1e-4, atol=1e-5)
    # Outputs depend on the past: they are not constant over time.
    assert float(jnp.std(value, axis=0).mean()) > 1e-4


@pytest.mark.parametrize("name", ["gru", "snail", "lstm"])
def test_windows_with_carry_equal_whole_sequence(name):
    model = _models()[name]
    params = model.init(jax.random.PRNGKey(1))
    xs = _xs(3)
    _, (out, value) = model.apply(params, model.initial_carry(B), xs)
    carry = model.initial_carry(B)
    carry, (o1, v1) = model.apply(params, carry, xs[:5])
    carry, (o2, v2) = model.apply(params, carry, xs[5:])
    np.testing.assert_allclose(jnp.concatenate([o1, o2]), out, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(jnp.concatenate([v1, v2]), value, rtol=1e-4, atol=1e-5)


def test_snail_is_causal():
    model = _models()["snail"]
    params = model.init(jax.random.PRNGKey(4))
    xs = _xs(5)
    t = 6
    xs_changed = xs.at[t + 1 :].set(100.0 * jax.random.normal(jax.random.PRNGKey(6), xs[t + 1 :].shape))
    _, (out, value) = model.apply(params, model.initial_carry(B), xs)
    _, (out2, value2) = model.apply(params, model.initial_carry(B), xs_changed)
    np.testing.assert_allclose(out2[: t + 1], out[: t + 1], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(value2[: t + 1], value[: t + 1], rtol=1e-5, atol=1e-6)
    # ... while later outputs do change, so the check above is not vacuous.
    assert float(jnp.max(jnp.abs(value2[t + 1 :] - value[t + 1 :]))) > 1e-3
    # And the first output sees input 0 (dense blocks and attention both read it).
    xs_first = xs.at[0].set(xs[0] + 1.0)
    _, (_, value3) = model.apply(params, model.initial_carry(B), xs_first)
    assert float(jnp.max(jnp.abs(value3[t] - value[t]))) > 1e-4


@pytest.mark.parametrize("name", ["gru", "snail", "lstm", "snail_heads"])
def test_jit_equals_no_jit(name):
    model = _models()[name]
    params = model.init(jax.random.PRNGKey(7))
    xs = _xs(8)
    carry = model.initial_carry(B)
    _, (out, value) = model.apply(params, carry, xs)
    _, (out_j, value_j) = jax.jit(model.apply)(params, carry, xs)
    np.testing.assert_allclose(out_j, out, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(value_j, value, rtol=1e-5, atol=1e-6)


def test_bad_model_config_raises():
    with pytest.raises(ConfigError, match="hidden_size"):
        GRUArchitecture(hidden_size=0)
    with pytest.raises(ConfigError, match="blocks"):
        SNAILArchitecture(blocks=("tc", "lstm"))
    with pytest.raises(ConfigError, match="filters"):
        SNAILArchitecture(filters=-1)
    with pytest.raises(ConfigError, match="input_dim"):
        GRUPolicy(input_dim=0, num_outputs=A, continuous=False)
    with pytest.raises(ConfigError, match="context"):
        SNAILPolicy(input_dim=D, num_outputs=A, continuous=False, context=0)


def test_gru_remat_changes_nothing_but_memory():
    """The rematerialised GRU gives the stored-activations GRU's (default) values and gradients."""
    kw = dict(input_dim=D, num_outputs=A, continuous=False)
    plain = GRUPolicy(**kw, arch=GRUArchitecture(hidden_size=16))
    remat = GRUPolicy(**kw, arch=GRUArchitecture(hidden_size=16, remat=True))
    params = plain.init(jax.random.PRNGKey(4))
    assert jax.tree.structure(params) == jax.tree.structure(remat.init(jax.random.PRNGKey(4)))
    xs = _xs(5)

    def loss(model, p):
        _, (out, value) = model.apply(p, model.initial_carry(B), xs)
        return jnp.sum(jnp.tanh(out) ** 2) + jnp.sum(value**3)

    for f in (lambda m, p: loss(m, p), jax.grad(loss, argnums=1)):
        a, b = f(plain, params), jax.jit(f, static_argnums=0)(remat, params)
        jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6), a, b)
    g = jax.grad(loss, argnums=1)(remat, params)
    assert float(jnp.abs(g["net"]["w_h"]).max()) > 1e-3  # the recurrent weights get a gradient
    with pytest.raises(ConfigError, match="remat"):
        GRUArchitecture(remat="yes")
