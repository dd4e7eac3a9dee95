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


def test_global_norm_of_bfloat16_sums_in_float32_and_returns_bfloat16():
    # As torch: each leaf's sum of squares is a float32 sum (4096 ones: a bfloat16 running sum
    # would stop at 256), and the norms and their total are rounded to bfloat16.
    norm = optkit.global_norm({"a": jnp.ones(4096, jnp.bfloat16), "b": jnp.ones(1, jnp.bfloat16)})

    assert norm.dtype == jnp.bfloat16
    assert float(norm) == 64.0  # sqrt(64**2 + 1) = 64.0078 rounds to 64 in bfloat16
    mixed = optkit.global_norm({"a": jnp.ones(4, jnp.bfloat16), "b": jnp.ones(5, jnp.float16)})
    assert mixed.dtype == jnp.float32  # the promoted dtype of a bfloat16 and a float16 norm
    # The float16 leaf's norm sqrt(5) is rounded to float16 first, as torch's (3.0001938...).
    expected = np.sqrt(np.float32(2.0) ** 2 + np.float32(np.float16(np.sqrt(5.0))) ** 2)
    assert float(mixed) == float(expected)


@pytest.mark.parametrize("norm_type", [0.5, 1, 1.5, 2, 3.0, 7.5, math.inf])
def test_global_norm_is_the_p_norm_of_every_element(norm_type):
    tree = {"a": jnp.array([3.0, -1.0]), "b": jnp.array([[-4.0], [0.5]]), "c": jnp.array(2.0)}
    values = np.abs([3.0, -1.0, -4.0, 0.5, 2.0])
    expected = (
        values.max() if norm_type == math.inf else np.sum(values**norm_type) ** (1 / norm_type)
    )

    np.testing.assert_allclose(optkit.global_norm(tree, norm_type), expected, rtol=1e-14)
    np.testing.assert_allclose(optkit.global_norm(tree, norm_type=norm_type), expected, rtol=1e-14)


@pytest.mark.parametrize("dtype", [jnp.complex64, jnp.complex128])
def test_global_norm_of_complex_leaves_uses_the_modulus(dtype):
    # |3 + 4j| = 5: the norm is real, in the complex dtype's real precision.
    tree = [jnp.array([3.0 + 4.0j], dtype), jnp.array([0.0 - 12.0j], dtype)]

    for norm_type, expected in ((1.0, 17.0), (2.0, 13.0), (math.inf, 12.0)):
        norm = optkit.global_norm(tree, norm_type)
        assert norm.dtype == jnp.finfo(dtype).dtype
        np.testing.assert_allclose(norm, expected, rtol=1e-6)
    assert optkit.global_norm([3 + 4j]) == 5.0


def test_clip_by_global_norm_of_complex_scales_by_a_real_factor():
    updates = [jnp.array([3.0 + 4.0j, 0.0], jnp.complex64)]
    out = _apply(optkit.clip_by_global_norm(1.0), updates)

    assert out[0].dtype == jnp.complex64
    np.testing.assert_allclose(out[0], np.array([0.6 + 0.8j, 0.0]), rtol=1e-6)


def test_global_norm_of_an_empty_tree_is_float32_zero():
    norm = optkit.global_norm({})

    assert norm.dtype == jnp.float32 and float(norm) == 0.0


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


@pytest.mark.parametrize("norm_type", [0.5, 1.5, 3.0, math.inf])
def test_clip_by_global_norm_with_norm_type_follows_torch_formula(norm_type):
    updates = {"a": jnp.array([3.0, -1.0]), "b": jnp.array([[-4.0]])}
    norm = float(optkit.global_norm(updates, norm_type))
    out = _apply(optkit.clip_by_global_norm(0.5, norm_type=norm_type), updates)

    factor = 0.5 / (norm + 1e-6)
    np.testing.assert_allclose(out["a"], np.array([3.0, -1.0]) * factor, rtol=1e-14)
    np.testing.assert_allclose(out["b"], np.array([[-4.0]]) * factor, rtol=1e-14)


# --- norm_type: validation, injection, composition ---------------------------------------------

BAD_NORM_TYPES = [
    (0, ValueError, r"^norm_type must be in \(0.0, inf\], got 0"),  # torch's 0 counts non-zeros
    (0.0, ValueError, r"^norm_type must be in \(0.0, inf\]"),
    (-1.0, ValueError, r"^norm_type must be in \(0.0, inf\]"),
    (-math.inf, ValueError, r"^norm_type must be in \(0.0, inf\]"),
    (math.nan, ValueError, r"^norm_type must be in \(0.0, inf\], got NaN"),
    ("inf", TypeError, r"^norm_type must be a number, got the string 'inf'.*float\('inf'\)"),
    ("fro", TypeError, r"^norm_type must be a number, got the string 'fro'"),
    (True, TypeError, r"^norm_type fixes the transform's formula, so it must be a Python number"),
    (None, TypeError, r"^norm_type fixes the transform's formula, so it must be a Python number"),
    (jnp.asarray(2.0), TypeError, r"^norm_type fixes the transform's formula"),
]


@pytest.mark.parametrize(("norm_type", "error", "message"), BAD_NORM_TYPES)
def test_bad_norm_type_is_refused_when_built(norm_type, error, message):
    with pytest.raises(error, match=message):
        optkit.clip_by_global_norm(1.0, norm_type=norm_type)
    with pytest.raises(error, match=message):
        optkit.global_norm([jnp.ones(2)], norm_type)


@pytest.mark.parametrize("norm_type", [1, 2, np.float32(3.0), np.float64(0.5), np.inf])
def test_python_and_numpy_numbers_are_accepted(norm_type):
    tx = optkit.clip_by_global_norm(1.0, norm_type)
    expected = optkit.global_norm([jnp.array([3.0, -4.0])], float(norm_type))

    assert float(optkit.global_norm([jnp.array([3.0, -4.0])], norm_type)) == float(expected)
    assert isinstance(tx, optkit.GradientTransformation)


def test_norm_type_stays_static_under_inject_hyperparams():
    tx = optkit.inject_hyperparams(optkit.clip_by_global_norm)(max_norm=1.0, norm_type=1.0)
    updates = {"a": jnp.array([3.0, -4.0]), "b": jnp.array([1.0])}
    state = tx.init(updates)
    assert set(optkit.get_hyperparams(state)) == {"max_norm"}
    step = jax.jit(tx.update)

    out, _ = step(updates, optkit.set_hyperparams(state, max_norm=2.0))

    # ||g||_1 = 8: scaled by 2 / (8 + 1e-6), the injected max_norm with the static norm_type.
    np.testing.assert_allclose(out["a"], np.array([3.0, -4.0]) * 2.0 / (8.0 + 1e-6), rtol=1e-14)
    assert step._cache_size() == 1
    with pytest.raises(ValueError, match=r"^norm_type fixes the transform's structure"):
        optkit.set_hyperparams(state, norm_type=2.0)


def test_param_groups_clip_each_group_with_its_own_norm_type():
    # torch: clip_grad_norm_ called once per group's params, each with its norm_type.
    def clipped_sgd(learning_rate, norm_type):
        return optkit.chain(optkit.clip_by_global_norm(1.0, norm_type), optkit.sgd(learning_rate))

    for factory in (clipped_sgd, optkit.inject_hyperparams(clipped_sgd)):
        tx = optkit.param_groups(
            factory,
            [{"params": "a", "norm_type": 1.0}, {"params": "b", "norm_type": math.inf}],
            learning_rate=0.1,
            norm_type=2.0,
        )
        updates = {"a": jnp.array([3.0, -4.0]), "b": jnp.array([[6.0, -8.0]])}
        out, _ = jax.jit(tx.update)(updates, tx.init(updates), updates)

        np.testing.assert_allclose(out["a"], -0.1 * np.array([3.0, -4.0]) / (7.0 + 1e-6))
        np.testing.assert_allclose(out["b"], -0.1 * np.array([[6.0, -8.0]]) / (8.0 + 1e-6))


@pytest.mark.parametrize("norm_type", [0.5, 3.0, math.inf])
def test_flatten_matches_the_per_leaf_path_within_rounding(norm_type):
    # A p-norm of the per-leaf p-norms is the p-norm of every element: flatten's vectors give
    # the same total up to the order of the sums.
    rng = np.random.default_rng(0)
    params = {
        "w": jnp.asarray(rng.normal(size=(3, 4)), jnp.float32),
        "b": jnp.asarray(rng.normal(size=(4,)), jnp.float32),
        "s": jnp.asarray(rng.normal(), jnp.float32),
    }
    grads = jax.tree.map(lambda p: 3.0 * p, params)

    def two_steps(tx):
        state = tx.init(params)
        for _ in range(2):  # the second step also runs the momentum buffer
            updates, state = tx.update(grads, state, params)
        return updates

    make = lambda: optkit.chain(
        optkit.clip_by_global_norm(0.5, norm_type), optkit.sgd(0.1, momentum=0.9)
    )
    assert optkit.global_norm(grads, norm_type) > 0.5  # the clip bites
    expected = two_steps(make())
    actual = two_steps(optkit.flatten(make()))

    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), actual, expected)
