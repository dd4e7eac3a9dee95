"""scale_by_adam, scale_by_rms and scale_by_rss: torch's moment updates and eps placement."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optkit


def _run(tx, grads, params=None):
    state = tx.init(jnp.zeros_like(jnp.asarray(grads[0])) if params is None else params)
    outs = []
    for g in grads:
        out, state = tx.update(jnp.asarray(g), state)
        outs.append(np.asarray(out))
    return outs, state


# --- scale_by_adam -----------------------------------------------------------------------------


def test_adam_first_step_is_the_sign_of_the_gradient():
    g = np.array([0.5, -2.0, 1e-3, -7.0])
    eps = 1e-8
    (out,), _ = _run(optkit.scale_by_adam(eps=eps), [g])

    # m1 / bc1 = g and sqrt(v1) / sqrt(bc2) = |g|, so the step is g / (|g| + eps) ~ sign(g).
    np.testing.assert_allclose(out, g / (np.abs(g) + eps), rtol=1e-12)
    np.testing.assert_allclose(out, np.sign(g), rtol=1e-5)


def test_adam_two_steps_by_hand():
    # b1 = 0.5, b2 = 0.75, eps = 0.1 (large, so its placement matters); g = 2 then 1.
    # m1 = 1, v1 = 1: u1 = (1 / 0.5) / (1 / sqrt(0.25) + 0.1) = 2 / 2.1
    # m2 = 1 + 0.5 (1 - 1) = 1, v2 = 0.75 + 0.25 = 1:
    # u2 = (1 / 0.75) / (1 / sqrt(1 - 0.75**2) + 0.1)
    outs, state = _run(optkit.scale_by_adam(b1=0.5, b2=0.75, eps=0.1), [[2.0], [1.0]])

    np.testing.assert_allclose(outs[0], [2.0 / 2.1], rtol=1e-14)
    np.testing.assert_allclose(outs[1], [(1 / 0.75) / (1 / math.sqrt(0.4375) + 0.1)], rtol=1e-14)
    np.testing.assert_allclose(state.mu, [1.0], rtol=1e-15)
    np.testing.assert_allclose(state.nu, [1.0], rtol=1e-15)


def test_adam_state_is_documented_named_tuple():
    params = {"w": jnp.zeros((2, 2)), "b": jnp.zeros(2)}
    tx = optkit.scale_by_adam()
    state = tx.init(params)

    assert isinstance(state, optkit.ScaleByAdamState)
    assert state._fields == ("count", "mu", "nu", "nu_max")
    assert state.count.dtype == jnp.int32 and int(state.count) == 0
    assert state.nu_max is None
    for tree in (state.mu, state.nu):
        assert jax.tree.structure(tree) == jax.tree.structure(params)
        for leaf in jax.tree.leaves(tree):
            assert not np.any(np.asarray(leaf))
    _, state = tx.update(jax.tree.map(jnp.ones_like, params), state)
    assert isinstance(state, optkit.ScaleByAdamState)
    assert int(state.count) == 1
    assert state.nu_max is None


def test_adam_amsgrad_state_holds_the_running_max():
    tx = optkit.scale_by_adam(amsgrad=True)
    state = tx.init({"w": jnp.zeros(2)})

    assert isinstance(state, optkit.ScaleByAdamState)
    np.testing.assert_array_equal(state.nu_max["w"], [0.0, 0.0])


# Two sequences with b2 = 0.5 where torch's max over the raw second moment differs from optax's
# max over the bias-corrected one (bias correction shrinks the later v less, so the order flips).
#  g = 1, 0.1: v = 0.5, 0.255 -> raw max 0.5 (step 1); corrected 1, 0.34 -> max 1.
#  g = 1, 0.8: v = 0.5, 0.57  -> raw max 0.57 (step 2); corrected 1, 0.76 -> max 1.
@pytest.mark.parametrize(("g2", "raw_max"), [(0.1, 0.5), (0.8, 0.57)])
def test_amsgrad_takes_the_max_of_the_raw_second_moment(g2, raw_max):
    b1, b2 = 0.9, 0.5
    grads = [[1.0], [g2]]
    outs, state = _run(optkit.scale_by_adam(b1=b1, b2=b2, eps=0.0, amsgrad=True), grads)

    m2 = 0.1 * 1.0 + 0.1 * (g2 - 0.1)  # lerp(m1, g2, 1 - b1) with m1 = 0.1
    bc1, bc2 = 1 - b1**2, 1 - b2**2
    torch_rule = (m2 / bc1) / (math.sqrt(raw_max) / math.sqrt(bc2))
    np.testing.assert_allclose(state.nu, [0.25 + 0.5 * g2 * g2], rtol=1e-15)
    np.testing.assert_allclose(state.nu_max, [raw_max], rtol=1e-15)
    np.testing.assert_allclose(outs[1], [torch_rule], rtol=1e-14)

    # The case discriminates: optax's max over the corrected moment gives another step.
    optax_rule = (m2 / bc1) / math.sqrt(1.0)
    assert abs(torch_rule - optax_rule) > 0.05 * abs(torch_rule)
    optax_outs, _ = _run(optax.scale_by_amsgrad(b1=b1, b2=b2, eps=0.0), grads)
    np.testing.assert_allclose(optax_outs[1], [optax_rule], rtol=1e-14)


def test_amsgrad_equals_plain_adam_while_second_moment_grows():
    grads = [[0.1], [0.5], [2.0], [4.0]]
    plain, _ = _run(optkit.scale_by_adam(b2=0.9), grads)
    ams, _ = _run(optkit.scale_by_adam(b2=0.9, amsgrad=True), grads)

    for a, b in zip(plain, ams, strict=True):
        np.testing.assert_array_equal(a, b)


def test_eps_root_goes_inside_the_square_root():
    eps, eps_root = 0.01, 0.1
    (out,), _ = _run(optkit.scale_by_adam(eps=eps, eps_root=eps_root), [[0.5]])

    # m_hat = 0.5, v_hat = 0.25.
    np.testing.assert_allclose(out, [0.5 / (math.sqrt(0.25 + eps_root) + eps)], rtol=1e-12)


@pytest.mark.parametrize("eps_root", [0.0, 1e-3])
def test_adam_equals_optax_scale_by_adam(eps_root):
    rng = np.random.default_rng(1)
    grads = [rng.normal(size=(4, 3)) for _ in range(8)]
    kwargs = {"b1": 0.8, "b2": 0.95, "eps": 1e-6, "eps_root": eps_root}
    ours, _ = _run(optkit.scale_by_adam(**kwargs), grads)
    reference, _ = _run(optax.scale_by_adam(**kwargs), grads)

    for a, b in zip(ours, reference, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-10)


def test_mu_dtype_sets_the_first_moment_dtype_only():
    params = jnp.zeros(3, jnp.float32)
    grads = [np.array([0.5, -1.0, 2.0], np.float32), np.array([1.0, 1.0, -1.0], np.float32)]
    low, low_state = _run(optkit.scale_by_adam(mu_dtype=jnp.bfloat16), grads, params)
    full, _ = _run(optkit.scale_by_adam(), grads, params)

    assert low_state.mu.dtype == jnp.bfloat16
    assert low_state.nu.dtype == jnp.float32
    assert low[-1].dtype == np.float32
    np.testing.assert_allclose(low[-1], full[-1], rtol=2e-2)


def test_mu_dtype_state_at_init():
    state = optkit.scale_by_adam(mu_dtype="bfloat16").init({"w": jnp.zeros(2, jnp.float32)})

    assert state.mu["w"].dtype == jnp.bfloat16
    assert state.nu["w"].dtype == jnp.float32


def test_adam_count_saturates_at_int32_max():
    int32_max = np.iinfo(np.int32).max
    tx = optkit.scale_by_adam(b1=0.5, b2=0.5, eps=0.0)
    state = optkit.ScaleByAdamState(
        count=jnp.asarray(int32_max, jnp.int32),
        mu=jnp.array([1.0]),
        nu=jnp.array([4.0]),
        nu_max=None,
    )
    out, state = tx.update(jnp.array([3.0]), state)

    assert int(state.count) == int32_max
    assert state.count.dtype == jnp.int32
    # Bias corrections are 1 this late: m = 2, v = 0.5 * 4 + 0.5 * 9 = 6.5.
    np.testing.assert_allclose(out, [2.0 / math.sqrt(6.5)], rtol=1e-14)


# --- scale_by_rms ------------------------------------------------------------------------------


def test_rms_plain_two_steps_by_hand():
    # alpha = 0.5, eps = 0.5 (large, so inside vs outside the sqrt differs). g = 2, then -1.
    # v1 = 0.5 * 4 = 2, u1 = 2 / (sqrt(2) + 0.5); v2 = 1 + 0.5 = 1.5, u2 = -1 / (sqrt(1.5) + 0.5).
    outs, state = _run(optkit.scale_by_rms(alpha=0.5, eps=0.5), [[2.0], [-1.0]])

    np.testing.assert_allclose(outs[0], [2.0 / (math.sqrt(2.0) + 0.5)], rtol=1e-15)
    np.testing.assert_allclose(outs[1], [-1.0 / (math.sqrt(1.5) + 0.5)], rtol=1e-15)
    assert isinstance(state, optkit.ScaleByRmsState)
    np.testing.assert_allclose(state.nu, [1.5], rtol=1e-15)
    assert state.mu is None


def test_rms_centered_two_steps_by_hand():
    # alpha = 0.5, eps = 0.1. g = 2: v1 = 2, mu1 = 1, var1 = 1, u1 = 2 / 1.1.
    # g = 1: v2 = 1 + 0.5 = 1.5, mu2 = 1 + 0.5 (1 - 1) = 1, var2 = 0.5, u2 = 1 / (sqrt(0.5) + 0.1).
    outs, state = _run(optkit.scale_by_rms(alpha=0.5, eps=0.1, centered=True), [[2.0], [1.0]])

    np.testing.assert_allclose(outs[0], [2.0 / 1.1], rtol=1e-15)
    np.testing.assert_allclose(outs[1], [1.0 / (math.sqrt(0.5) + 0.1)], rtol=1e-15)
    assert isinstance(state, optkit.ScaleByRmsState)
    np.testing.assert_allclose(state.nu, [1.5], rtol=1e-15)
    np.testing.assert_allclose(state.mu, [1.0], rtol=1e-15)


def test_rms_state_at_init():
    plain = optkit.scale_by_rms().init({"w": jnp.ones(2)})
    centered = optkit.scale_by_rms(centered=True).init({"w": jnp.ones(2)})

    assert isinstance(plain, optkit.ScaleByRmsState)
    np.testing.assert_array_equal(plain.nu["w"], [0.0, 0.0])
    assert plain.mu is None
    np.testing.assert_array_equal(centered.mu["w"], [0.0, 0.0])


# --- scale_by_rss ------------------------------------------------------------------------------


def test_rss_with_initial_accumulator_value_by_hand():
    # s0 = 0.5, eps = 0.1. g = 1: s1 = 1.5; g = -2: s2 = 5.5.
    outs, state = _run(optkit.scale_by_rss(initial_accumulator_value=0.5, eps=0.1), [[1.0], [-2.0]])

    np.testing.assert_allclose(outs[0], [1.0 / (math.sqrt(1.5) + 0.1)], rtol=1e-15)
    np.testing.assert_allclose(outs[1], [-2.0 / (math.sqrt(5.5) + 0.1)], rtol=1e-15)
    assert isinstance(state, optkit.ScaleByRssState)
    np.testing.assert_allclose(state.sum_of_squares, [5.5], rtol=1e-15)


def test_rss_state_starts_at_initial_accumulator_value():
    state = optkit.scale_by_rss(initial_accumulator_value=0.25).init({"w": jnp.zeros((2, 2))})

    assert isinstance(state, optkit.ScaleByRssState)
    np.testing.assert_array_equal(state.sum_of_squares["w"], np.full((2, 2), 0.25))


def test_rss_defaults_start_at_zero():
    g = np.array([3.0, -4.0])
    (out,), state = _run(optkit.scale_by_rss(), [g])

    np.testing.assert_allclose(state.sum_of_squares, g * g, rtol=1e-15)
    np.testing.assert_allclose(out, g / (np.abs(g) + 1e-10), rtol=1e-15)


# --- behaviour shared by the adaptive transforms -----------------------------------------------

ADAPTIVE = {
    "adam": lambda: optkit.scale_by_adam(),
    "adam_amsgrad": lambda: optkit.scale_by_adam(amsgrad=True),
    "adam_mu_dtype": lambda: optkit.scale_by_adam(mu_dtype=jnp.bfloat16),
    "rms": lambda: optkit.scale_by_rms(),
    "rms_centered": lambda: optkit.scale_by_rms(centered=True),
    "rss": lambda: optkit.scale_by_rss(initial_accumulator_value=0.1),
}


def _layer():
    return {"layer": {"kernel": jnp.zeros((2, 3)), "bias": jnp.zeros(3)}}


@pytest.mark.parametrize("name", list(ADAPTIVE))
def test_missing_leaf_names_the_path(name):
    tx = ADAPTIVE[name]()
    state = tx.init(_layer())

    with pytest.raises(ValueError, match="layer/bias"):
        tx.update({"layer": {"kernel": jnp.ones((2, 3))}}, state)


@pytest.mark.parametrize("name", list(ADAPTIVE))
def test_wrong_shape_names_the_path(name):
    tx = ADAPTIVE[name]()
    state = tx.init(_layer())

    with pytest.raises(ValueError, match="layer/bias"):
        tx.update({"layer": {"kernel": jnp.ones((2, 3)), "bias": jnp.ones((3, 1))}}, state)


@pytest.mark.parametrize("name", list(ADAPTIVE))
def test_jit_matches_eager(name):
    tx = ADAPTIVE[name]()
    grads = [np.array([0.5, -1.0, 2.0]), np.array([1.5, 0.25, -3.0]), np.array([-1.0, 0.0, 1.0])]
    eager, _ = _run(tx, grads)
    update = jax.jit(tx.update)
    state = tx.init(jnp.zeros(3))
    for g, expected in zip(grads, eager, strict=True):
        out, state = update(jnp.asarray(g), state)
        np.testing.assert_allclose(out, expected, rtol=1e-13)
