import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from jaxmeta.algorithms.maml import MAML, MAMLConfig, parts
from jaxmeta.envs import Navigation2D
from jaxmeta.rl import episode_mean, reinforce_loss
from jaxmeta.rl.meta_estimators import dice_loss, lvc_loss

SMALL = dict(hidden_sizes=(8,), meta_batch_size=3, num_episodes=4, num_eval_tasks=3)


# ------------------------------------------------------------------ linear-Gaussian case
# pi(a | s) = N(W s, sigma^2 I); theta = vec(W) (row-major). For one inner step
# theta' = theta - alpha * grad L_in(theta), the meta-gradient of f(theta') is
# (I - alpha * H_in)^T grad f(theta'), with, per step (t, e) weighted by w_e = 1 / (E T_e):
#   g_t = vec((a_t - W s_t) s_t^T) / sigma^2,  grad^2 log pi_t = -kron(I_A, s_t s_t^T) / sigma^2
#   VPG:  H = -sum w A_t grad^2 log pi_t
#   LVC:  H = -sum w A_t (grad^2 log pi_t + g_t g_t^T)
#   DiCE: H = LVC - sum w A_t (g_t G_t^T + G_t g_t^T),  G_t = sum_{t' < t} g_t'

T, E, D, A = 4, 3, 3, 2
SIGMA, ALPHA = 0.7, 0.3


def _data():
    ks = jax.random.split(jax.random.PRNGKey(0), 6)
    with jax.enable_x64(True):
        s = jax.random.normal(ks[0], (T, E, D), jnp.float64)
        a = jax.random.normal(ks[1], (T, E, A), jnp.float64)
        adv = jax.random.normal(ks[2], (T, E), jnp.float64)
        valid = jnp.ones((T, E), jnp.float64).at[3, 1].set(0.0).at[2:, 2].set(0.0)  # ragged episodes
        w0 = 0.3 * jax.random.normal(ks[3], (A, D), jnp.float64)
        target = jax.random.normal(ks[4], (A * D,), jnp.float64)
    return s, a, adv, valid, w0, target


def _log_prob(theta, s, a):
    mean = jnp.einsum("ij,tej->tei", theta.reshape(A, D), s)
    return jnp.sum(-0.5 * ((a - mean) / SIGMA) ** 2 - jnp.log(SIGMA) - 0.5 * jnp.log(2 * jnp.pi), -1)  # [T, E]


def _closed_form_hessian(estimator, s, a, adv, valid, theta):
    s, a, adv, valid, theta = map(np.asarray, (s, a, adv, valid, theta))
    W = theta.reshape(A, D)
    n = A * D
    H = np.zeros((n, n))
    grad = np.zeros(n)
    for e in range(E):
        w = 1.0 / (E * valid[:, e].sum())
        G = np.zeros(n)
        for t in range(T):
            if valid[t, e] == 0:
                continue
            g = np.outer(a[t, e] - W @ s[t, e], s[t, e]).ravel() / SIGMA**2
            hess_lp = -np.kron(np.eye(A), np.outer(s[t, e], s[t, e])) / SIGMA**2
            term = hess_lp
            if estimator in ("lvc", "dice"):
                term = term + np.outer(g, g)
            if estimator == "dice":
                term = term + np.outer(g, G) + np.outer(G, g)
            H -= w * adv[t, e] * term
            grad -= w * adv[t, e] * g
            G = G + g
    return grad, H


@pytest.mark.parametrize("estimator", ["lvc", "dice", "vpg"])
def test_inner_estimator_meta_gradient_matches_closed_form_linear_gaussian(estimator):
    with jax.enable_x64(True):
        s, a, adv, valid, w0, target = _data()
        theta0 = w0.ravel()
        old_lp = jax.lax.stop_gradient(_log_prob(theta0, s, a))  # the sampling policy's, as data

        def inner(theta):
            lp = _log_prob(theta, s, a)
            if estimator == "lvc":
                return lvc_loss(lp, old_lp, adv, valid)
            if estimator == "dice":
                return dice_loss(lp, adv, valid)
            return reinforce_loss(lp, adv, valid, mean_fn=episode_mean)

        def outer(theta):
            adapted = theta - ALPHA * jax.grad(inner)(theta)
            return 0.5 * jnp.sum((adapted - target) ** 2)

        meta_grad = jax.grad(outer)(theta0)
        g_in, H = _closed_form_hessian(estimator, s, a, adv, valid, theta0)
        np.testing.assert_allclose(jax.grad(inner)(theta0), g_in, rtol=1e-10, atol=1e-12)
        adapted = np.asarray(theta0) - ALPHA * g_in
        expected = (np.eye(A * D) - ALPHA * H).T @ (adapted - np.asarray(target))
        np.testing.assert_allclose(meta_grad, expected, rtol=1e-9, atol=1e-12)
        # the estimators really differ in curvature: LVC's is not VPG's
        if estimator == "lvc":
            _, H_vpg = _closed_form_hessian("vpg", s, a, adv, valid, theta0)
            assert np.abs(H - H_vpg).max() > 1e-2


# ------------------------------------------------------------------ MAML integration
def _maml(**kw):
    env = Navigation2D(horizon=10)
    return MAML(env, env.task_distribution(), MAMLConfig(**{**SMALL, **kw}))


def test_maml_inner_estimators_share_the_gradient_and_vpg_is_unchanged():
    m = _maml()
    state = m.init(jax.random.PRNGKey(0))
    meta = state.meta
    batch = jax.jit(m.sample)(state, jax.random.PRNGKey(1))
    episodes = jax.tree.map(lambda x: x[0, 0], batch.train)  # task 0, step 0
    p = meta.policy
    t = episodes.traj
    ref = reinforce_loss(m.policy.log_prob(p, t.obs, t.action), episodes.advantage, t.valid, mean_fn=episode_mean)
    assert float(m.inner_loss(p, episodes)) == float(ref)
    grads = {}
    for est in ("vpg", "lvc", "dice"):
        mi = _maml(inner_estimator=est)
        grads[est] = ravel_pytree(jax.grad(mi.inner_loss)(p, episodes))[0]
    np.testing.assert_allclose(grads["lvc"], grads["vpg"], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(grads["dice"], grads["vpg"], rtol=1e-4, atol=1e-6)
    outer = {est: ravel_pytree(jax.jit(jax.grad(_maml(inner_estimator=est).outer_loss))(meta, batch))[0]
             for est in ("vpg", "lvc")}
    assert float(jnp.linalg.norm(outer["lvc"] - outer["vpg"])) > 1e-3 * float(jnp.linalg.norm(outer["vpg"]))


def test_maml_trpo_runs_with_lvc_and_dice():
    for est in ("lvc", "dice"):
        algo = _maml(inner_estimator=est).algorithm()
        state = algo.init(jax.random.PRNGKey(0))
        _, met = jax.jit(algo.train_step)(state, jax.random.PRNGKey(1))
        assert bool(met["accepted"]) and np.isfinite(float(met["loss_after"]))


# ------------------------------------------------------------------ ProMP
def _promp(**kw):
    return _maml(outer="promp", **kw)


def test_promp_first_gradient_is_maml_lvc_outer_gradient():
    """At the sampling parameters the ratio is 1 (no clipping) and the KL's gradient is 0."""
    p = _promp(init_inner_kl_penalty=0.1)
    assert p.config.inner_estimator == "lvc"  # ProMP's default inner objective
    state = p.init(jax.random.PRNGKey(0))
    batch = jax.jit(p.sample)(state, jax.random.PRNGKey(1))
    eta = state.opt_state.inner_kl_penalty
    objective = lambda m: parts.promp_objective(p, m, state.meta, eta, batch, p.config.clip_eps)[0]
    g = jax.jit(jax.grad(objective))(state.meta)
    ref = jax.jit(jax.grad(p.outer_loss))(state.meta, batch)  # MAML's surrogate, LVC inner step
    np.testing.assert_allclose(ravel_pytree(g)[0], ravel_pytree(ref)[0], rtol=1e-4, atol=1e-7)


def test_promp_update_improves_objective_and_adapts_penalty():
    p = _promp(num_promp_steps=5, outer_lr=3e-3, adaptive_inner_kl_penalty=True, target_inner_step=1e-6)
    algo = p.algorithm()
    state = algo.init(jax.random.PRNGKey(0))
    new, met = jax.jit(algo.train_step)(state, jax.random.PRNGKey(1))
    assert int(new.step) == 1
    assert float(met["loss_after"]) < float(met["loss_before"])
    assert float(met["inner_kl"]) > 1e-6 * 1.5  # above target -> penalty doubled
    np.testing.assert_allclose(new.opt_state.inner_kl_penalty, 2 * state.opt_state.inner_kl_penalty)
    curve = jax.jit(algo.evaluate)(new, jax.random.PRNGKey(2))
    assert curve.returns.shape == (2,)


def test_promp_is_maml_with_another_outer_update():
    from jaxmeta.algorithms import registry

    assert "promp" not in registry.REGISTRY  # one algorithm, one config: `maml --outer promp`
    algo = registry.get("maml").build(Navigation2D(horizon=5), MAMLConfig(outer="promp", **SMALL))
    state = algo.init(jax.random.PRNGKey(0))
    assert isinstance(state.opt_state, parts.ProMPState) and int(state.step) == 0
