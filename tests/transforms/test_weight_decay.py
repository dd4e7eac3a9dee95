"""add_l2_decay and add_decayed_weights: ``updates + weight_decay * params`` on masked leaves."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import optkit

DECAYS = [optkit.add_l2_decay, optkit.add_decayed_weights]
NAMES = ["add_l2_decay", "add_decayed_weights"]


def _params() -> dict[str, jax.Array]:
    return {"w": jnp.array([[1.0, -2.0], [3.0, 4.0]]), "b": jnp.array([10.0, -20.0])}


def _grads() -> dict[str, jax.Array]:
    return {"w": jnp.array([[0.5, 0.5], [-1.0, 0.0]]), "b": jnp.array([1.0, 2.0])}


@pytest.mark.parametrize("make", DECAYS, ids=NAMES)
def test_adds_scaled_params_to_every_leaf(make):
    tx = make(0.1)
    out, _ = tx.update(_grads(), tx.init(_params()), _params())

    np.testing.assert_allclose(out["w"], [[0.6, 0.3], [-0.7, 0.4]], rtol=1e-14)
    np.testing.assert_allclose(out["b"], [2.0, 0.0], rtol=1e-14, atol=1e-15)


@pytest.mark.parametrize("make", DECAYS, ids=NAMES)
def test_zero_weight_decay_is_identity(make):
    tx = make(0.0)
    out, _ = tx.update(_grads(), tx.init(_params()), _params())

    np.testing.assert_array_equal(out["w"], _grads()["w"])
    np.testing.assert_array_equal(out["b"], _grads()["b"])


@pytest.mark.parametrize("make", DECAYS, ids=NAMES)
def test_bool_mask_tree_selects_leaves(make):
    tx = make(0.5, mask={"w": True, "b": False})
    out, _ = tx.update(_grads(), tx.init(_params()), _params())

    np.testing.assert_allclose(out["w"], [[1.0, -0.5], [0.5, 2.0]], rtol=1e-15)
    np.testing.assert_array_equal(out["b"], _grads()["b"])


@pytest.mark.parametrize("make", DECAYS, ids=NAMES)
def test_numpy_bools_are_accepted_in_the_mask(make):
    tx = make(0.5, mask={"w": np.bool_(False), "b": np.bool_(True)})
    out, _ = tx.update(_grads(), tx.init(_params()), _params())

    np.testing.assert_array_equal(out["w"], _grads()["w"])
    np.testing.assert_allclose(out["b"], [6.0, -8.0], rtol=1e-15)


@pytest.mark.parametrize("make", DECAYS, ids=NAMES)
def test_prefix_mask_applies_to_whole_subtrees(make):
    params = {"encoder": _params(), "decoder": _params()}
    grads = {"encoder": _grads(), "decoder": _grads()}
    tx = make(1.0, mask={"encoder": False, "decoder": True})
    out, _ = tx.update(grads, tx.init(params), params)

    for name in ("w", "b"):
        np.testing.assert_array_equal(out["encoder"][name], grads["encoder"][name])
        expected = np.asarray(grads["decoder"][name]) + np.asarray(params["decoder"][name])
        np.testing.assert_allclose(out["decoder"][name], expected, rtol=1e-15)


@pytest.mark.parametrize("make", DECAYS, ids=NAMES)
def test_callable_mask_gets_the_params(make):
    received = []

    def matrices_only(params):
        received.append(params)
        return jax.tree.map(lambda p: p.ndim > 1, params)

    tx = make(0.5, mask=matrices_only)
    out, _ = tx.update(_grads(), tx.init(_params()), _params())

    assert len(received) == 1
    np.testing.assert_array_equal(received[0]["b"], _params()["b"])
    np.testing.assert_allclose(out["w"], [[1.0, -0.5], [0.5, 2.0]], rtol=1e-15)
    np.testing.assert_array_equal(out["b"], _grads()["b"])


@pytest.mark.parametrize("make", DECAYS, ids=NAMES)
def test_callable_mask_under_jit(make):
    tx = make(0.5, mask=lambda params: {"w": False, "b": True})
    out, _ = jax.jit(tx.update)(_grads(), tx.init(_params()), _params())

    np.testing.assert_array_equal(out["w"], _grads()["w"])
    np.testing.assert_allclose(out["b"], [6.0, -8.0], rtol=1e-15)


@pytest.mark.parametrize("make", DECAYS, ids=NAMES)
def test_missing_params_raise(make):
    tx = make(0.1)

    with pytest.raises(ValueError, match="params"):
        tx.update(_grads(), tx.init(_params()))


@pytest.mark.parametrize("make", DECAYS, ids=NAMES)
def test_non_bool_mask_entry_names_its_path(make):
    params = {"layer": {"kernel": jnp.ones((2, 2)), "bias": jnp.ones(2)}}
    mask = {"layer": {"kernel": True, "bias": 0.5}}
    tx = make(0.1, mask=mask)

    with pytest.raises(TypeError, match="layer/bias"):
        tx.update(params, tx.init(params), params)


@pytest.mark.parametrize("make", DECAYS, ids=NAMES)
def test_jax_bool_array_in_mask_is_rejected(make):
    # A 0-d JAX bool is a bool (as in optax); an array of them selects nothing per leaf.
    tx = make(0.1, mask={"w": True, "b": jnp.asarray([True, True])})

    with pytest.raises(TypeError, match="'b'"):
        tx.update(_grads(), tx.init(_params()), _params())


@pytest.mark.parametrize("make", DECAYS, ids=NAMES)
def test_mask_with_wrong_structure_raises(make):
    tx = make(0.1, mask={"w": True, "bias": False})

    with pytest.raises(ValueError, match="mask"):
        tx.update(_grads(), tx.init(_params()), _params())


@pytest.mark.parametrize("make", DECAYS, ids=NAMES)
def test_updates_not_matching_params_name_the_path(make):
    params = {"layer": {"kernel": jnp.ones((2, 2)), "bias": jnp.ones(2)}}
    tx = make(0.1)
    wrong_shape = {"layer": {"kernel": jnp.ones((2, 2)), "bias": jnp.ones(3)}}
    missing = {"layer": {"kernel": jnp.ones((2, 2))}}

    with pytest.raises(ValueError, match="layer/bias"):
        tx.update(wrong_shape, tx.init(params), params)
    with pytest.raises(ValueError, match="layer/bias"):
        tx.update(missing, tx.init(params), params)


@pytest.mark.parametrize("make", DECAYS, ids=NAMES)
def test_float32_leaves_stay_float32(make):
    params = jnp.array([1.0, 2.0], jnp.float32)
    tx = make(jnp.asarray(0.1, jnp.float64))
    out, _ = tx.update(jnp.zeros(2, jnp.float32), tx.init(params), params)

    assert out.dtype == jnp.float32
    np.testing.assert_allclose(out, [0.1, 0.2], rtol=1e-7)


@pytest.mark.parametrize("make", DECAYS, ids=NAMES)
def test_is_stateless(make):
    tx = make(0.1)
    assert jax.tree.leaves(tx.init(_params())) == []
