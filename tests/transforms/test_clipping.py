"""clip and clip_by_global_norm: torch's clip_grad_value_ and clip_grad_norm_."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import optkit


def _apply(tx, updates):
    out, _ = tx.update(updates, tx.init(updates))
    return out


def _torch_clip(function_name, grads, threshold):
    """Run ``torch.nn.utils.<function_name>`` on tensors whose ``.grad`` are ``grads``."""
    torch = pytest.importorskip("torch")
    tensors = []
    for g in grads:
        t = torch.zeros(g.shape, dtype=torch.float64, requires_grad=True)
        t.grad = torch.tensor(g, dtype=torch.float64)
        tensors.append(t)
    result = getattr(torch.nn.utils, function_name)(tensors, threshold)
    return [t.grad.numpy() for t in tensors], result


def test_clip_bounds_every_element():
    out = _apply(optkit.clip(1.5), {"a": jnp.array([0.5, 3.0, -2.0]), "b": jnp.array([-1.5, 1.0])})

    np.testing.assert_array_equal(out["a"], [0.5, 1.5, -1.5])
    np.testing.assert_array_equal(out["b"], [-1.5, 1.0])


def test_clip_zero_zeroes_everything():
    out = _apply(optkit.clip(0.0), jnp.array([0.5, -3.0]))

    np.testing.assert_array_equal(np.abs(out), [0.0, 0.0])


@pytest.mark.torch
def test_clip_matches_torch_clip_grad_value():
    rng = np.random.default_rng(0)
    grads = [rng.normal(scale=2.0, size=(3, 4)), rng.normal(scale=2.0, size=(5,))]
    expected, _ = _torch_clip("clip_grad_value_", grads, 0.7)
    out = _apply(optkit.clip(0.7), [jnp.asarray(g) for g in grads])

    for a, b in zip(out, expected, strict=True):
        np.testing.assert_array_equal(a, b)


def test_clip_is_stateless():
    assert jax.tree.leaves(optkit.clip(1.0).init(jnp.ones(3))) == []
    assert jax.tree.leaves(optkit.clip_by_global_norm(1.0).init(jnp.ones(3))) == []


def test_global_norm_of_a_tree():
    tree = {"a": jnp.array([3.0]), "b": jnp.array([[4.0, 12.0]])}

    np.testing.assert_allclose(optkit.global_norm(tree), 13.0, rtol=1e-15)


def test_global_norm_of_bfloat16_accumulates_in_float32():
    # 256 elements of 1: the running sum exceeds bfloat16's 8-bit mantissa, float32 is exact.
    norm = optkit.global_norm({"a": jnp.ones(256, jnp.bfloat16), "b": jnp.ones(1, jnp.bfloat16)})

    assert norm.dtype == jnp.float32
    np.testing.assert_allclose(norm, math.sqrt(257.0), rtol=1e-6)


def test_clip_by_global_norm_scales_to_max_norm_with_torch_eps():
    # ||g|| = 13, so the factor is 2 / (13 + 1e-6).
    out = _apply(
        optkit.clip_by_global_norm(2.0), {"a": jnp.array([3.0]), "b": jnp.array([4.0, 12.0])}
    )

    factor = 2.0 / (13.0 + 1e-6)
    np.testing.assert_allclose(out["a"], [3.0 * factor], rtol=1e-14)
    np.testing.assert_allclose(out["b"], [4.0 * factor, 12.0 * factor], rtol=1e-14)


def test_clip_by_global_norm_leaves_small_updates_unchanged():
    updates = {"a": jnp.array([0.3, -0.4]), "b": jnp.array([[0.1]])}
    out = _apply(optkit.clip_by_global_norm(1.0), updates)

    np.testing.assert_array_equal(out["a"], updates["a"])
    np.testing.assert_array_equal(out["b"], updates["b"])


def test_clip_by_global_norm_of_zeros_is_finite():
    out = _apply(optkit.clip_by_global_norm(1.0), jnp.zeros(3))

    np.testing.assert_array_equal(out, [0.0, 0.0, 0.0])


def test_clip_by_global_norm_keeps_float32_and_bfloat16():
    updates = {"a": jnp.array([30.0, 40.0], jnp.float32), "b": jnp.array([1.0], jnp.bfloat16)}
    out = _apply(optkit.clip_by_global_norm(jnp.asarray(1.0, jnp.float64)), updates)

    assert out["a"].dtype == jnp.float32
    assert out["b"].dtype == jnp.bfloat16
    # ||g|| = sqrt(30**2 + 40**2 + 1**2).
    factor = 1.0 / (math.sqrt(2501.0) + 1e-6)
    np.testing.assert_allclose(out["a"], [30.0 * factor, 40.0 * factor], rtol=1e-6)
    np.testing.assert_allclose(out["b"].astype(jnp.float32), [factor], rtol=1e-2)


@pytest.mark.torch
@pytest.mark.parametrize(
    "max_norm",
    [
        0.5,  # well below the norm: scaled down
        13.0,  # exactly the norm: torch's + 1e-6 still scales by 13 / (13 + 1e-6)
        13.0 + 0.5e-6,  # just above the norm, inside the 1e-6 margin: still scaled
        20.0,  # above: unchanged
    ],
)
def test_clip_by_global_norm_matches_torch_clip_grad_norm(max_norm):
    grads = [np.array([3.0]), np.array([[4.0, 12.0]])]
    expected, total_norm = _torch_clip("clip_grad_norm_", grads, max_norm)
    out = _apply(optkit.clip_by_global_norm(max_norm), [jnp.asarray(g) for g in grads])

    np.testing.assert_allclose(optkit.global_norm(grads), float(total_norm), rtol=1e-15)
    for a, b in zip(out, expected, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-14)


@pytest.mark.torch
def test_clip_by_global_norm_matches_torch_on_random_tree():
    rng = np.random.default_rng(3)
    grads = [rng.normal(size=(4, 3)), rng.normal(size=(3,)), rng.normal(size=(2, 2, 2))]
    expected, _ = _torch_clip("clip_grad_norm_", grads, 1.0)
    out = _apply(optkit.clip_by_global_norm(1.0), [jnp.asarray(g) for g in grads])

    for a, b in zip(out, expected, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-14)


def test_exactly_at_max_norm_is_scaled_by_the_eps_formula():
    # optax's clip_by_global_norm would leave this untouched; torch scales by 5 / (5 + 1e-6).
    out = _apply(optkit.clip_by_global_norm(5.0), jnp.array([3.0, 4.0]))

    np.testing.assert_allclose(out, np.array([3.0, 4.0]) * (5.0 / (5.0 + 1e-6)), rtol=1e-15)
    assert float(out[0]) < 3.0
