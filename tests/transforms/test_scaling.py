"""scale, negate and scale_by_learning_rate: constant factors, sign flips and schedules."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import optkit


def _grads() -> dict[str, jax.Array]:
    return {"w": jnp.array([[1.0, -2.0], [0.5, 4.0]]), "b": jnp.array([-3.0, 0.25])}


def test_scale_multiplies_every_leaf():
    tx = optkit.scale(0.5)
    out, _ = tx.update(_grads(), tx.init(_grads()))

    np.testing.assert_array_equal(out["w"], [[0.5, -1.0], [0.25, 2.0]])
    np.testing.assert_array_equal(out["b"], [-1.5, 0.125])


def test_scale_accepts_a_negative_factor():
    tx = optkit.scale(-2.0)
    out, _ = tx.update(jnp.array([1.0, -3.0]), tx.init(None))

    np.testing.assert_array_equal(out, [-2.0, 6.0])


def test_scale_is_stateless():
    tx = optkit.scale(3.0)
    state = tx.init(_grads())

    assert jax.tree.leaves(state) == []
    _, new_state = tx.update(_grads(), state)
    assert new_state == state


def test_negate_flips_the_sign():
    tx = optkit.negate()
    out, _ = tx.update(_grads(), tx.init(_grads()))

    np.testing.assert_array_equal(out["w"], -np.asarray(_grads()["w"]))
    np.testing.assert_array_equal(out["b"], [3.0, -0.25])


def test_learning_rate_float_descends():
    tx = optkit.scale_by_learning_rate(0.1)
    out, _ = tx.update(jnp.array([1.0, -2.0]), tx.init(None))

    np.testing.assert_allclose(out, [-0.1, 0.2], rtol=1e-15)


def test_learning_rate_flip_sign_false_keeps_the_sign():
    tx = optkit.scale_by_learning_rate(0.1, flip_sign=False)
    out, _ = tx.update(jnp.array([1.0, -2.0]), tx.init(None))

    np.testing.assert_allclose(out, [0.1, -0.2], rtol=1e-15)


def test_learning_rate_jax_scalar_matches_float():
    tx = optkit.scale_by_learning_rate(jnp.asarray(0.25))
    out, _ = tx.update(jnp.array([1.0, -2.0]), tx.init(None))

    np.testing.assert_array_equal(out, [-0.25, 0.5])


def test_learning_rate_float64_jax_scalar_keeps_float32_updates():
    tx = optkit.scale_by_learning_rate(jnp.asarray(0.25, jnp.float64))
    out, _ = tx.update(jnp.array([1.0, -2.0], jnp.float32), tx.init(None))

    assert out.dtype == jnp.float32
    np.testing.assert_array_equal(out, np.array([-0.25, 0.5], np.float32))


def test_learning_rate_schedule_kth_update_uses_schedule_of_k():
    seen = []

    def schedule(count):
        seen.append(int(count))
        return 0.1 * (count + 1)

    tx = optkit.scale_by_learning_rate(schedule)
    assert seen == [0]  # checked once on the count 0 when built
    seen.clear()
    state = tx.init(jnp.zeros(2))
    outs = []
    for _ in range(4):
        out, state = tx.update(jnp.array([1.0, -1.0]), state)
        outs.append(np.asarray(out))

    assert seen == [0, 1, 2, 3]
    for k, out in enumerate(outs):
        lr = 0.1 * (k + 1)
        np.testing.assert_allclose(out, [-lr, lr], rtol=1e-15)


def test_learning_rate_schedule_state_counts_updates():
    tx = optkit.scale_by_learning_rate(lambda count: 0.5)
    state = tx.init(jnp.zeros(2))

    assert isinstance(state, optkit.ScaleByScheduleState)
    assert state.count == 0
    assert state.count.dtype == jnp.int32
    for k in range(1, 4):
        _, state = tx.update(jnp.ones(2), state)
        assert isinstance(state, optkit.ScaleByScheduleState)
        assert int(state.count) == k
        assert state.count.dtype == jnp.int32


def test_learning_rate_schedule_flip_sign_false():
    tx = optkit.scale_by_learning_rate(lambda count: 2.0**-count, flip_sign=False)
    state = tx.init(jnp.zeros(1))
    out0, state = tx.update(jnp.array([3.0]), state)
    out1, state = tx.update(jnp.array([3.0]), state)

    np.testing.assert_array_equal(out0, [3.0])
    np.testing.assert_array_equal(out1, [1.5])


def test_learning_rate_schedule_under_jit():
    tx = optkit.scale_by_learning_rate(lambda count: 1.0 / (1.0 + count))
    update = jax.jit(tx.update)
    state = tx.init(jnp.zeros(1))
    outs = []
    for _ in range(3):
        out, state = update(jnp.array([6.0]), state)
        outs.append(float(out[0]))

    assert outs == [-6.0, -3.0, -2.0]
    assert int(state.count) == 3


def test_learning_rate_float64_schedule_keeps_float32_updates():
    tx = optkit.scale_by_learning_rate(lambda count: jnp.asarray(0.5, jnp.float64) ** count)
    state = tx.init(jnp.zeros(2, jnp.float32))
    for _ in range(2):
        out, state = tx.update(jnp.array([1.0, 2.0], jnp.float32), state)

    assert out.dtype == jnp.float32
    np.testing.assert_array_equal(out, np.array([-0.5, -1.0], np.float32))


def test_learning_rate_schedule_count_saturates_at_int32_max():
    int32_max = np.iinfo(np.int32).max
    tx = optkit.scale_by_learning_rate(lambda count: 1.0)
    state = optkit.ScaleByScheduleState(count=jnp.asarray(int32_max, jnp.int32))
    _, state = tx.update(jnp.ones(1), state)

    assert int(state.count) == int32_max
    assert state.count.dtype == jnp.int32


def test_learning_rate_schedule_must_return_a_scalar():
    # Checked on the count 0 when built, and again on each traced value.
    with pytest.raises(ValueError, match="scalar"):
        optkit.scale_by_learning_rate(lambda count: jnp.ones(2))
    traced_vector = lambda count: jnp.ones(2) if isinstance(count, jax.core.Tracer) else 0.1
    tx = optkit.scale_by_learning_rate(traced_vector)
    with pytest.raises(ValueError, match="scalar"):
        jax.jit(tx.update)(jnp.ones(2), tx.init(jnp.zeros(2)))


def test_learning_rate_rejects_a_negative_value():
    with pytest.raises(ValueError, match="learning_rate"):
        optkit.scale_by_learning_rate(-0.1)
