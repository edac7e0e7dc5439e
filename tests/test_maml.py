import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from jaxmeta import ConfigError
from jaxmeta.algorithms.maml import MAML, MAMLConfig, parts
from jaxmeta.envs import Navigation2D
from jaxmeta.rollout import rollout_episodes
from conftest import central_differences, relative_errors

SMALL = dict(hidden_sizes=(8, 8), meta_batch_size=3, num_episodes=4, num_eval_tasks=4)


def build(horizon=12, **kw):
    env = Navigation2D(horizon=horizon)
    return MAML(env, env.task_distribution(), MAMLConfig(**{**SMALL, **kw}))


def to64(tree):
    return jax.tree.map(lambda x: x.astype(jnp.float64) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree)


def _tree_index(tree, i):
    return jax.tree.map(lambda x: x[i], tree)


def sampled(m, seed=0):
    state = m.init(jax.random.PRNGKey(seed))
    return state.meta, m.sample(state, jax.random.PRNGKey(seed + 1))


def trpo_update(m, meta, batch):
    meta, _, info = m.outer.update(m, meta, (), batch)
    return meta, info


@pytest.mark.parametrize("steps,meta_sgd", [(1, False), (2, False), (1, True), (2, True)])
def test_meta_gradient_matches_central_finite_differences(steps, meta_sgd):
    with jax.enable_x64(True):
        m = build(num_inner_steps=steps, meta_sgd=meta_sgd, inner_lr=0.5)
        meta, batch = to64(sampled(m))
        flat, unravel = ravel_pytree(meta)
        loss = jax.jit(lambda f: m.outer_loss(unravel(f), batch))
        grad = jax.grad(lambda f: m.outer_loss(unravel(f), batch))(flat)
        fo = MAML(m.env, m.tasks, dataclasses.replace(m.config, first_order=True))
        grad_fo = jax.grad(lambda f: fo.outer_loss(unravel(f), batch))(flat)
        ds, fds = central_differences(loss, flat, 4, seed=100)
        errs, fo_errs = relative_errors(grad, ds, fds), relative_errors(grad_fo, ds, fds)
        assert max(errs) < 1e-3, errs
        # The check discriminates: the first-order gradient is measurably different.
        assert max(fo_errs) > 1e-2, fo_errs


def test_first_order_equals_stopped_inner_gradient():
    m = build(first_order=True)
    meta, batch = sampled(m)

    def manual(meta):
        def one(tr, va):
            p = meta.policy
            g = jax.lax.stop_gradient(jax.grad(m.inner_loss)(p, _tree_index(tr, 0)))
            p = jax.tree.map(lambda x, gx: x - m.config.inner_lr * gx, p, g)
            return m.policy.apply(p, va.traj.obs)

        return m.surrogate_from_outputs(jax.vmap(one)(batch.train, batch.valid), batch.valid)

    got = ravel_pytree(jax.grad(m.outer_loss)(meta, batch))[0]
    ref = ravel_pytree(jax.grad(manual)(meta))[0]
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-7)
    second = ravel_pytree(jax.grad(build().outer_loss)(meta, batch))[0]
    assert float(jnp.linalg.norm(second - got)) > 1e-4 * float(jnp.linalg.norm(got))


@pytest.mark.parametrize("kw", [{}, {"num_inner_steps": 2, "meta_sgd": True}, {"first_order": True}])
def test_fisher_vector_product_is_hessian_of_kl_through_adaptation(kw):
    m = build(**kw)
    meta, batch = sampled(m)
    valid = batch.valid
    flat, unravel = ravel_pytree(meta)
    out0, jvp, vjp = m.linearize_adaptation(meta, batch)
    kl_grad = jax.grad(lambda o: m.kl_from_outputs(out0, o, valid))
    v = jax.random.normal(jax.random.PRNGKey(7), flat.shape)
    mjv = jax.jvp(kl_grad, (out0,), (jvp(unravel(v)),))[1]
    fast = ravel_pytree(vjp(mjv))[0]
    kl = lambda f: m.kl_from_outputs(out0, m.adapted_outputs(unravel(f), batch), valid)
    ref = jax.jvp(jax.grad(kl), (flat,), (v,))[1]  # double backward through adaptation
    np.testing.assert_allclose(fast, ref, rtol=2e-3, atol=1e-6 * float(jnp.max(jnp.abs(ref))))
    # the vjp of the linearisation is the gradient of the outer loss
    g_out = jax.grad(m.surrogate_from_outputs)(out0, valid)
    np.testing.assert_allclose(
        ravel_pytree(vjp(g_out))[0], ravel_pytree(jax.grad(m.outer_loss)(meta, batch))[0],
        rtol=1e-4, atol=1e-7,
    )


@pytest.mark.parametrize("kw", [{}, {"meta_sgd": True, "num_inner_steps": 2}])
def test_trpo_step_respects_kl_through_adaptation_and_improves(kw):
    m = build(**kw)
    meta, batch = sampled(m)
    new_meta, info = jax.jit(lambda me, b: trpo_update(m, me, b))(meta, batch)
    assert bool(info["accepted"])
    out_old = m.adapted_outputs(meta, batch)
    out_new = m.adapted_outputs(new_meta, batch)
    kl = m.kl_from_outputs(out_old, out_new, batch.valid)
    assert 0.0 < float(kl) <= m.config.max_kl
    assert float(m.outer_loss(new_meta, batch)) < float(m.outer_loss(meta, batch))


def test_trpo_fisher_on_a_subsample_of_tasks():
    """`cg_subsample`: the CG's Fisher products use the first ceil(f * M) tasks only. On a
    meta-batch made of the same tasks twice, half of it holds every distinct task, so the
    step equals the full-batch step; on distinct tasks it differs but still respects the
    KL bound, as the line search checks the KL on every task (float64: the CG amplifies
    float32 rounding)."""
    m = build(meta_batch_size=3)
    meta, batch = sampled(m)
    step = lambda mm, b: jax.jit(lambda me, bb: trpo_update(mm, me, bb))(meta, b)  # noqa: E731
    with jax.enable_x64(True):
        meta64, batch64 = to64((meta, batch))
        twice = jax.tree.map(lambda x: jnp.concatenate([x, x]), batch64)
        step64 = lambda mm: jax.jit(lambda me, bb: trpo_update(mm, me, bb))(meta64, twice)  # noqa: E731
        full, _ = step64(m)
        half, _ = step64(build(meta_batch_size=3, cg_subsample=0.5))
        for a, b in zip(jax.tree.leaves(full), jax.tree.leaves(half)):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-9)  # CG on a near-singular Fisher
    sub = build(meta_batch_size=3, cg_subsample=0.34)  # one task of three
    new_meta, info = step(sub, batch)
    plain, _ = step(m, batch)
    assert bool(info["accepted"])
    kl = m.kl_from_outputs(m.adapted_outputs(meta, batch), m.adapted_outputs(new_meta, batch), batch.valid)
    assert 0.0 < float(kl) <= m.config.max_kl
    rel = max(float(jnp.max(jnp.abs(a - b) / (jnp.abs(b) + 1e-6))) for a, b in zip(jax.tree.leaves(new_meta),
                                                                             jax.tree.leaves(plain)))
    assert rel > 1e-2, rel  # another Fisher, another step


def test_jit_equals_no_jit():
    # float64: CG on a tiny, ill-conditioned problem amplifies float32 rounding differences.
    # (The initial state is drawn as the float32 program draws it, then cast.)
    state32 = build(num_inner_steps=2).init(jax.random.PRNGKey(0))
    with jax.enable_x64(True):
        algo = build(num_inner_steps=2).algorithm()
        state = to64(state32)
        key = jax.random.PRNGKey(5)
        s1, met1 = algo.train_step(state, key)
        s2, met2 = jax.jit(algo.train_step)(state, key)
    assert int(met1["ls_steps"]) == int(met2["ls_steps"]) and bool(met1["accepted"])
    # parameters: atol 1e-7 against values of ~1e-2; on some builds a bias near zero
    # (4.2e-4) differs by 1.5e-8 between the two programs, too small to be a real discrepancy
    for a, b in zip(jax.tree.leaves(s1), jax.tree.leaves(s2)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    for k in met1:
        np.testing.assert_allclose(met1[k], met2[k], rtol=1e-5, atol=1e-8)


def test_vmap_over_tasks_equals_python_loop():
    m = build()
    meta = m.init(jax.random.PRNGKey(0)).meta
    tasks = m.tasks.sample_batch(jax.random.PRNGKey(1), 3)
    keys = jax.random.split(jax.random.PRNGKey(2), 3)
    traj = m.collector.episodes(m.policy.act, meta.policy, tasks, keys, m.config.num_episodes)
    episodes = m.process_tasks(traj)
    lr = m.step_sizes(meta)
    adapted = m.adapt_tasks(meta.policy, lr, episodes, params_axis=None)
    batch = m.sample(m.init(jax.random.PRNGKey(0)), jax.random.PRNGKey(3))
    outs = m.adapted_outputs(meta, batch)
    for i in range(3):
        task_i = _tree_index(tasks, i)
        traj_i = rollout_episodes(m.env, m.policy.act, meta.policy, task_i, keys[i], m.config.num_episodes)
        ep_i = m.process(traj_i)
        for a, b in zip(jax.tree.leaves(ep_i), jax.tree.leaves(_tree_index(episodes, i))):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
        p_i = m.adapt_step(meta.policy, lr, ep_i, first_order=True)
        for a, b in zip(jax.tree.leaves(p_i), jax.tree.leaves(_tree_index(adapted, i))):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
        tr_i, va_i = _tree_index(batch.train, i), _tree_index(batch.valid, i)
        mean_i, log_std_i = m.policy.apply(m.adapt(meta, tr_i), va_i.traj.obs)
        np.testing.assert_allclose(outs[0][i], mean_i, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(outs[1][i], log_std_i, rtol=1e-6)


def test_sample_collects_each_inner_batch_with_the_policy_adapted_so_far():
    m = build(num_inner_steps=2)
    state = m.init(jax.random.PRNGKey(0))
    batch = m.sample(state, jax.random.PRNGKey(1))
    assert batch.train.traj.reward.shape[:2] == (3, 2) and batch.valid.traj.reward.shape[0] == 3
    # the recorded log-probabilities are those of the policy adapted by the earlier steps
    for i in range(3):
        tr = _tree_index(batch.train, i)
        params = state.meta.policy
        for k in range(2):
            t = _tree_index(tr, k).traj
            np.testing.assert_allclose(t.log_prob, m.policy.log_prob(params, t.obs, t.action), rtol=1e-4, atol=1e-4)
            params = m.adapt_step(params, m.step_sizes(state.meta), _tree_index(tr, k), first_order=True)
        t = _tree_index(batch.valid, i).traj
        np.testing.assert_allclose(t.log_prob, m.policy.log_prob(params, t.obs, t.action), rtol=1e-4, atol=1e-4)


def test_evaluate_curve_shape_and_is_deterministic():
    m = build(num_inner_steps=2)
    state = m.init(jax.random.PRNGKey(0))
    c1 = jax.jit(m.evaluate)(state, jax.random.PRNGKey(3))
    c2 = jax.jit(m.evaluate)(state, jax.random.PRNGKey(3))
    assert c1.returns.shape == (3,) and c1.per_task.shape == (4, 3)
    np.testing.assert_array_equal(c1.returns, c2.returns)
    np.testing.assert_allclose(c1.returns, c1.per_task.mean(0), rtol=1e-6)


def test_adam_outer_loop_step():
    algo = build(outer="adam", outer_lr=1e-2).algorithm()
    state = algo.init(jax.random.PRNGKey(0))
    new, metrics = jax.jit(algo.train_step)(state, jax.random.PRNGKey(1))
    assert int(new.step) == 1 and np.isfinite(float(metrics["loss_before"]))
    moved = ravel_pytree(new.meta)[0] - ravel_pytree(state.meta)[0]
    assert 0 < float(jnp.max(jnp.abs(moved))) <= 1.01e-2  # Adam's step is bounded by the lr


BAD_VALUES = {
    "hidden_sizes": [(), (0,), [64], (64, "a")],
    "activation": ["sigmoidx"],
    "init_std": [0.0, -1.0],
    "meta_batch_size": [0, 2.5, True],
    "num_episodes": [0, -3],
    "inner_lr": [-0.1, float("nan"), "0.1"],
    "num_inner_steps": [0, 101],
    "first_order": [1, "yes"],
    "meta_sgd": [0],
    "gamma": [1.5, -0.1],
    "gae_lambda": [2.0],
    "normalize_advantages": [None],
    "outer": ["sgd", "ppo"],
    "max_kl": [0.0, -1.0],
    "cg_iters": [0],
    "cg_damping": [-1e-5],
    "ls_max_steps": [0],
    "ls_backtrack_ratio": [0.0, 1.0],
    "cg_subsample": [0.0, 1.5],
    "outer_lr": [0.0],
    "num_promp_steps": [0],
    "clip_eps": [0.0, 1.0],
    "init_inner_kl_penalty": [-1.0],
    "adaptive_inner_kl_penalty": ["no"],
    "target_inner_step": [0.0],
    "num_eval_tasks": [0],
    "eval_seed": [-1],
    "inner_estimator": ["reinforce", 3],
}


def test_every_config_field_has_a_bad_value_case():
    assert set(BAD_VALUES) == {f.name for f in dataclasses.fields(MAMLConfig)}


@pytest.mark.parametrize("field,value", [(f, v) for f, vs in BAD_VALUES.items() for v in vs])
def test_config_rejects_bad_values(field, value):
    outer = "promp" if field in parts_fields("promp") else "trpo"
    with pytest.raises(ConfigError, match=field) as e:
        MAMLConfig(**{field: value, **({"outer": outer} if field != "outer" else {})})
    assert e.value.field == field


def parts_fields(outer):
    from jaxmeta.algorithms.maml.core import OUTER_FIELDS

    return OUTER_FIELDS[outer]


@pytest.mark.parametrize("outer,field,value", [
    ("adam", "max_kl", 0.05), ("adam", "cg_iters", 20), ("trpo", "outer_lr", 3e-4), ("trpo", "clip_eps", 0.2),
    ("promp", "ls_max_steps", 3), ("adam", "num_promp_steps", 2),
])
def test_settings_of_another_outer_update_are_refused(outer, field, value):
    with pytest.raises(ConfigError, match=f"{field} is a setting of outer") as e:
        MAMLConfig(outer=outer, **{field: value})
    assert e.value.field == field


def test_outer_update_defaults():
    assert (MAMLConfig().meta_batch_size, MAMLConfig().inner_estimator) == (20, "vpg")
    assert (MAMLConfig(outer="adam").meta_batch_size, MAMLConfig(outer="adam").inner_estimator) == (20, "vpg")
    promp = MAMLConfig(outer="promp")
    assert (promp.meta_batch_size, promp.inner_estimator) == (40, "lvc")
    assert MAMLConfig(outer="promp", meta_batch_size=8, inner_estimator="vpg").meta_batch_size == 8


def test_parts_follow_the_config_and_can_be_replaced():
    m = build(meta_sgd=True)
    params = m.policy.init(jax.random.PRNGKey(0))
    lr = m.step_size.init(params)
    assert jax.tree.structure(lr) == jax.tree.structure(params)  # learned per parameter
    fixed = build().step_size
    assert fixed.init(params) is None
    rates = fixed.apply(None, params)  # a scalar broadcast to every parameter
    assert all(r.shape == p.shape and float(r.max()) == float(r.min()) == float(np.float32(0.1))
               for r, p in zip(jax.tree.leaves(rates), jax.tree.leaves(params)))
    # a user-supplied part replaces the config's: an Adam outer update on a TRPO config
    custom = MAML(m.env, m.tasks, MAMLConfig(**SMALL), outer=parts.adam(1e-2))
    state = custom.init(jax.random.PRNGKey(0))
    assert jax.tree.leaves(state.opt_state)  # Adam state, not TRPO's ()
    new, metrics = jax.jit(custom.algorithm().train_step)(state, jax.random.PRNGKey(1))
    assert "kl" not in metrics and "grad_norm" in metrics and int(new.step) == 1


def test_maml_rejects_discrete_action_env():
    from jaxmeta.envs import BernoulliBandit

    env = BernoulliBandit()
    with pytest.raises(ConfigError, match="Box action space"):
        MAML(env, env.task_distribution(), MAMLConfig())


@pytest.mark.slow
def test_maml_learns_to_adapt_on_navigation():
    """After 12 meta-iterations of the default config, 1-step adaptation clearly helps."""
    env = Navigation2D()
    m = MAML(env, env.task_distribution(), MAMLConfig())
    state = m.init(jax.random.PRNGKey(0))
    evaluate = jax.jit(m.evaluate)
    untrained = evaluate(state, jax.random.PRNGKey(99)).returns  # [pre, post]
    step = jax.jit(m.algorithm().train_step)
    key = jax.random.PRNGKey(1)
    for _ in range(12):
        key, sub = jax.random.split(key)
        state, _ = step(state, sub)
    pre, post = (float(x) for x in evaluate(state, jax.random.PRNGKey(99)).returns)
    assert post > pre + 5.0, (pre, post)
    assert post > float(untrained[0]) + 10.0 and post > float(untrained[1]) + 10.0, (untrained, post)


@pytest.mark.parametrize("kw", [{}, {"meta_sgd": True}, {"outer": "adam"}, {"outer": "promp"}])
def test_train_step_keeps_state_types_so_jit_compiles_once(kw):
    m = build(**kw)
    state = m.init(jax.random.PRNGKey(0))
    step = jax.jit(m.algorithm().train_step)
    new, _ = step(state, jax.random.PRNGKey(1))
    avals = lambda s: jax.tree.map(lambda x: (x.shape, x.dtype, x.weak_type), s)
    assert avals(new) == avals(state)
    step(new, jax.random.PRNGKey(2))
    assert step._cache_size() == 1
