"""trace: torch's SGD momentum buffer, with dampening and Nesterov."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optkit

GRADS = [np.array([1.0, -2.0]), np.array([0.5, 3.0]), np.array([-4.0, 1.0]), np.array([2.0, 2.0])]


def _run(tx, grads):
    state = tx.init(jnp.zeros_like(jnp.asarray(grads[0])))
    outs = []
    for g in grads:
        out, state = tx.update(jnp.asarray(g), state)
        outs.append(np.asarray(out))
    return outs, state


def test_first_step_is_the_gradient_undampened():
    outs, state = _run(optkit.trace(0.9, dampening=0.5), GRADS[:1])

    np.testing.assert_array_equal(outs[0], GRADS[0])
    np.testing.assert_array_equal(state.trace, GRADS[0])


@pytest.mark.parametrize("dampening", [0.0, 0.3, 1.0])
def test_buffer_follows_torch_recurrence(dampening):
    decay = 0.9
    outs, state = _run(optkit.trace(decay, dampening=dampening), GRADS)

    buffer = GRADS[0]
    np.testing.assert_allclose(outs[0], buffer, rtol=1e-15)
    for g, out in zip(GRADS[1:], outs[1:], strict=True):
        buffer = decay * buffer + (1.0 - dampening) * g
        np.testing.assert_allclose(out, buffer, rtol=1e-14)
    np.testing.assert_allclose(state.trace, buffer, rtol=1e-14)


def test_second_step_by_hand():
    outs, _ = _run(optkit.trace(0.5, dampening=0.25), GRADS[:2])

    # b2 = 0.5 * [1, -2] + 0.75 * [0.5, 3] = [0.875, 1.25]
    np.testing.assert_allclose(outs[1], [0.875, 1.25], rtol=1e-15)


def test_nesterov_outputs_gradient_plus_decayed_buffer():
    decay = 0.9
    outs, _ = _run(optkit.trace(decay, nesterov=True), GRADS)

    buffer = GRADS[0]
    np.testing.assert_allclose(outs[0], GRADS[0] + decay * buffer, rtol=1e-15)
    for g, out in zip(GRADS[1:], outs[1:], strict=True):
        buffer = decay * buffer + g
        np.testing.assert_allclose(out, g + decay * buffer, rtol=1e-14)


@pytest.mark.parametrize("nesterov", [False, True])
def test_undampened_trace_equals_optax_trace(nesterov):
    rng = np.random.default_rng(0)
    grads = [rng.normal(size=(3, 2)) for _ in range(6)]
    ours, _ = _run(optkit.trace(0.8, nesterov=nesterov), grads)
    reference, _ = _run(optax.trace(0.8, nesterov=nesterov), grads)

    for a, b in zip(ours, reference, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-14)


def test_state_is_trace_state_and_count_increments():
    tx = optkit.trace(0.9, dampening=0.1)
    state = tx.init({"w": jnp.zeros(2)})

    assert isinstance(state, optkit.TraceState)
    assert state.count.dtype == jnp.int32
    assert int(state.count) == 0
    np.testing.assert_array_equal(state.trace["w"], [0.0, 0.0])
    for k in range(1, 4):
        _, state = tx.update({"w": jnp.ones(2)}, state)
        assert isinstance(state, optkit.TraceState)
        assert int(state.count) == k
        assert state.count.dtype == jnp.int32


@pytest.mark.parametrize("dampening", [0.0, 0.5])
def test_count_saturates_at_int32_max(dampening):
    int32_max = np.iinfo(np.int32).max
    tx = optkit.trace(0.5, dampening=dampening)
    state = optkit.TraceState(count=jnp.asarray(int32_max, jnp.int32), trace=jnp.array([2.0]))
    out, state = tx.update(jnp.array([4.0]), state)

    assert int(state.count) == int32_max
    assert state.count.dtype == jnp.int32
    # Not a first step: the buffer decays and the gradient is dampened.
    np.testing.assert_allclose(out, [0.5 * 2.0 + (1.0 - dampening) * 4.0], rtol=1e-15)
    _, state = tx.update(jnp.array([4.0]), state)
    assert int(state.count) == int32_max


def test_dampened_trace_under_jit_matches_eager():
    tx = optkit.trace(0.7, dampening=0.4)
    eager, _ = _run(tx, GRADS)
    state = tx.init(jnp.zeros(2))
    update = jax.jit(tx.update)
    for g, expected in zip(GRADS, eager, strict=True):
        out, state = update(jnp.asarray(g), state)
        np.testing.assert_allclose(out, expected, rtol=1e-14)


def test_bfloat16_buffer_stays_bfloat16():
    tx = optkit.trace(0.9, dampening=0.1)
    state = tx.init(jnp.zeros(2, jnp.bfloat16))
    for _ in range(3):
        out, state = tx.update(jnp.ones(2, jnp.bfloat16), state)

    assert out.dtype == jnp.bfloat16
    assert state.trace.dtype == jnp.bfloat16


def test_nesterov_requires_momentum_and_no_dampening():
    with pytest.raises(ValueError, match="dampening"):
        optkit.trace(0.9, dampening=0.1, nesterov=True)
    with pytest.raises(ValueError, match="momentum"):
        optkit.trace(0.0, nesterov=True)


def _layer():
    return {"layer": {"kernel": jnp.zeros((2, 3)), "bias": jnp.zeros(3)}}


@pytest.mark.parametrize("dampening", [0.0, 0.5])
def test_missing_leaf_names_the_path(dampening):
    tx = optkit.trace(0.9, dampening=dampening)
    state = tx.init(_layer())

    with pytest.raises(ValueError, match="layer/bias"):
        tx.update({"layer": {"kernel": jnp.zeros((2, 3))}}, state)


@pytest.mark.parametrize("dampening", [0.0, 0.5])
def test_wrong_shape_names_the_path(dampening):
    tx = optkit.trace(0.9, dampening=dampening)
    state = tx.init(_layer())

    with pytest.raises(ValueError, match="layer/bias"):
        tx.update({"layer": {"kernel": jnp.zeros((2, 3)), "bias": jnp.zeros(4)}}, state)
