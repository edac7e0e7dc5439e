import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmeta.rl import (
    backtracking_line_search, conjugate_gradient, discounted_returns, episode_mean, gae,
    fit_linear, gaussian_kl, hvp, linear_baseline, linear_features, ppo_clip_loss, reinforce_loss,
    trpo_surrogate, weighted_mean, weighted_normalize,
)
from jaxmeta.rl.meta_estimators import dice_loss, lvc_loss


def np_returns(r, d, v_T):
    g, out = v_T, np.zeros_like(r)
    for t in reversed(range(len(r))):
        g = r[t] + d[t] * g
        out[t] = g
    return out


def np_gae(r, d, v, v_T, lam):
    T = len(r)
    v_next = np.append(v[1:], v_T)
    adv, a = np.zeros(T), 0.0
    for t in reversed(range(T)):
        delta = r[t] + d[t] * v_next[t] - v[t]
        a = delta + d[t] * lam * a
        adv[t] = a
    return adv


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_discounted_returns_match_numpy(seed):
    rng = np.random.default_rng(seed)
    r = rng.normal(size=17).astype(np.float32)
    d = (0.97 * (rng.random(17) > 0.2)).astype(np.float32)
    got = discounted_returns(jnp.asarray(r), jnp.asarray(d), 0.5)
    np.testing.assert_allclose(got, np_returns(r, d, 0.5), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("lam", [0.0, 0.5, 0.95, 1.0])
def test_gae_matches_numpy(lam):
    rng = np.random.default_rng(3)
    r, v = rng.normal(size=(2, 23)).astype(np.float32)
    d = np.full(23, 0.99, np.float32)
    d[10] = 0.0
    got = gae(jnp.asarray(r), jnp.asarray(d), jnp.asarray(v), 1.3, lam)
    np.testing.assert_allclose(got, np_gae(r, d, v, 1.3, lam), rtol=1e-4, atol=1e-5)


def test_gae_lambda_one_is_returns_minus_values():
    rng = np.random.default_rng(4)
    r, v = rng.normal(size=(2, 12)).astype(np.float32)
    d = np.full(12, 0.9, np.float32)
    adv = gae(jnp.asarray(r), jnp.asarray(d), jnp.asarray(v), 0.0, 1.0)
    ret = discounted_returns(jnp.asarray(r), jnp.asarray(d))
    np.testing.assert_allclose(adv, ret - v, rtol=1e-5, atol=1e-5)


def test_linear_baseline_fit_matches_numpy_ridge():
    rng = np.random.default_rng(5)
    obs = rng.normal(size=(30, 4, 2)).astype(np.float64)
    valid = np.ones((30, 4))
    valid[20:, 1] = 0.0
    y = rng.normal(size=(30, 4))
    with jax.enable_x64(True):
        feats = linear_features(jnp.asarray(obs), jnp.asarray(valid))
        coef = fit_linear(feats, jnp.asarray(y), jnp.asarray(valid), 1e-5)
        X = np.asarray(feats).reshape(-1, feats.shape[-1])[valid.reshape(-1) > 0]
        t = y.reshape(-1)[valid.reshape(-1) > 0]
        ref = np.linalg.solve(X.T @ X + 1e-5 * np.eye(X.shape[1]), X.T @ t)
        np.testing.assert_allclose(coef, ref, rtol=1e-6, atol=1e-8)
    assert feats.shape == (30, 4, 2 * 2 + 4)
    assert np.all(np.asarray(feats)[20:, 1] == 0)


def test_weighted_normalize_and_episode_mean():
    x = jnp.array([[1.0, 2.0], [3.0, 100.0]])  # [T=2, E=2]
    w = jnp.array([[1.0, 1.0], [1.0, 0.0]])
    assert float(episode_mean(x, w)) == pytest.approx((2.0 + 2.0) / 2)
    z = weighted_normalize(x, w, mean_fn=episode_mean)
    assert float(z[1, 1]) == 0.0
    assert float(episode_mean(z, w)) == pytest.approx(0.0, abs=1e-6)


def test_conjugate_gradient_solves_spd_system():
    rng = np.random.default_rng(6)
    a = rng.normal(size=(8, 8))
    A = jnp.asarray(a @ a.T + 8 * np.eye(8), jnp.float32)
    b = jnp.asarray(rng.normal(size=8), jnp.float32)
    x, ax = conjugate_gradient(lambda v: A @ v, b, 20, with_product=True)
    np.testing.assert_allclose(A @ x, b, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(ax, A @ x, rtol=1e-3, atol=1e-4)


def test_hvp_matches_hessian():
    f = lambda x: jnp.sum(jnp.sin(x) * x[::-1] ** 2)
    x = jnp.arange(5.0) / 3
    v = jnp.linspace(-1.0, 1.0, 5)
    np.testing.assert_allclose(hvp(f, x, v), jax.hessian(f)(x) @ v, rtol=1e-5, atol=1e-5)


def test_line_search_backtracks_to_feasible_improvement():
    # loss = x^2, constraint = |x - 1|; from x0=1 a full step of 4 overshoots to -3.
    evaluate = lambda x: (jnp.sum(x**2), jnp.sum(jnp.abs(x - 1.0)))
    x, loss, con, steps, ok = backtracking_line_search(
        evaluate, jnp.array([1.0]), jnp.array([4.0]), jnp.array(1.0), 1.5, 10, 0.5
    )
    # tries: x=-3 (constraint 4), x=-1 (constraint 2), x=0 (loss 0, constraint 1): accepted.
    assert bool(ok) and int(steps) == 3
    np.testing.assert_allclose(x, [0.0])
    assert float(loss) == 0.0 and float(con) == 1.0


def test_line_search_keeps_x0_when_nothing_works():
    evaluate = lambda x: (jnp.sum(x**2), jnp.zeros(()))
    x, loss, con, steps, ok = backtracking_line_search(
        evaluate, jnp.array([0.0]), jnp.array([1.0]), jnp.array(0.0), 1.0, 5, 0.5
    )
    assert not bool(ok) and int(steps) == 5
    np.testing.assert_allclose(x, [0.0])


def test_ppo_clip_and_kl():
    lp = jnp.log(jnp.array([2.0, 0.5]))
    adv = jnp.array([1.0, -1.0])
    loss = ppo_clip_loss(lp, jnp.zeros(2), adv, jnp.ones(2), 0.2)
    assert float(loss) == pytest.approx(-(1.2 * 1.0 + 0.8 * -1.0) / 2)
    kl = gaussian_kl(jnp.zeros(2), jnp.zeros(2), jnp.ones(2), jnp.log(2.0) * jnp.ones(2))
    ref = 2 * (np.log(2.0) + (1 + 1) / (2 * 4) - 0.5)
    assert float(kl) == pytest.approx(ref, rel=1e-5)


class JitEqualsNoJit(chex.TestCase):
    """Every rl/ function gives the same values jitted and not (chex variants)."""

    def setUp(self):
        super().setUp()
        rng = np.random.default_rng(7)
        self.r, self.v, self.lp, self.old, self.adv = (jnp.asarray(rng.normal(size=(9, 3)), jnp.float32)
                                                       for _ in range(5))
        self.d = jnp.full((9, 3), 0.95, jnp.float32)
        self.valid = jnp.ones((9, 3), jnp.float32).at[6:, 1].set(0.0)
        self.obs = jnp.asarray(rng.normal(size=(9, 3, 2)), jnp.float32)

    @chex.variants(with_jit=True, without_jit=True)
    def test_returns_and_gae(self):
        ret = self.variant(discounted_returns)(self.r[:, 0], self.d[:, 0], 0.3)
        np.testing.assert_allclose(ret, np_returns(np.asarray(self.r[:, 0]), np.asarray(self.d[:, 0]), 0.3),
                                   rtol=1e-5, atol=1e-5)
        adv = self.variant(gae, static_argnums=4)(self.r[:, 0], self.d[:, 0], self.v[:, 0], 0.3, 0.9)
        np.testing.assert_allclose(adv, np_gae(*(np.asarray(x[:, 0]) for x in (self.r, self.d, self.v)), 0.3, 0.9),
                                   rtol=1e-4, atol=1e-5)

    @chex.variants(with_jit=True, without_jit=True)
    def test_baseline(self):
        values = self.variant(linear_baseline)(self.obs, self.r, self.valid)
        chex.assert_shape(values, (9, 3))
        assert float(jnp.abs(values[6:, 1]).max()) == 0.0  # padding predicts nothing

    @chex.variants(with_jit=True, without_jit=True)
    def test_losses(self):
        got = {
            "reinforce": self.variant(reinforce_loss)(self.lp, self.adv, self.valid),
            "trpo": self.variant(trpo_surrogate)(self.lp, self.old, self.adv, self.valid),
            "ppo": self.variant(ppo_clip_loss, static_argnums=4)(self.lp, self.old, self.adv, self.valid, 0.2),
            "lvc": self.variant(lvc_loss)(self.lp, self.old, self.adv, self.valid),
            "dice": self.variant(dice_loss)(self.lp, self.adv, self.valid),
            "normalize": self.variant(weighted_normalize)(self.adv, self.valid),
        }
        ratio = np.exp(np.asarray(self.lp - self.old))
        w, a = np.asarray(self.valid), np.asarray(self.adv)
        np.testing.assert_allclose(got["reinforce"], -np.sum(np.asarray(self.lp) * a * w) / w.sum(), rtol=1e-5)
        np.testing.assert_allclose(got["trpo"], -np.sum(ratio * a * w) / w.sum(), rtol=1e-5)
        clipped = np.minimum(ratio * a, np.clip(ratio, 0.8, 1.2) * a)
        np.testing.assert_allclose(got["ppo"], -np.sum(clipped * w) / w.sum(), rtol=1e-5)
        per_ep = np.sum(ratio * a * w, 0) / w.sum(0)
        np.testing.assert_allclose(got["lvc"], -per_ep.mean(), rtol=1e-5)
        assert abs(float(got["dice"])) < 1e-6  # DiCE's objective is 0 in value
        assert float(jnp.abs(got["normalize"][6:, 1]).max()) == 0.0
        np.testing.assert_allclose(weighted_mean(got["normalize"], self.valid), 0.0, atol=1e-6)
        # the episode-mean reduction weighs every episode the same
        ppo_ep = ppo_clip_loss(self.lp, self.old, self.adv, self.valid, 0.2, mean_fn=episode_mean)
        np.testing.assert_allclose(ppo_ep, -(np.sum(clipped * w, 0) / w.sum(0)).mean(), rtol=1e-5)
