"""optkit._tree.map_leaves: per-leaf math through one nested jit per leaf type."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import optkit
from optkit import _tree


def _axpy(x, y, *, a, b):
    return a * x + b * y


def _pair(x, y, *, a):
    return x * a, y - x


def _calls(jaxpr: jax.extend.core.ClosedJaxpr, name: str) -> int:
    return sum(
        1
        for eqn in jaxpr.jaxpr.eqns
        if eqn.primitive.name in ("pjit", "jit") and eqn.params["name"] == name
    )


TREE = {
    "w1": jnp.arange(6.0).reshape(2, 3),
    "w2": jnp.ones((2, 3)),
    "b": jnp.arange(4.0),
}


def test_matches_tree_map_with_constant_and_array_scalars():
    other = jax.tree.map(lambda x: x + 1.5, TREE)
    b = jnp.float32(0.25)
    got = _tree.map_leaves(_axpy, TREE, other, a=3.0, b=b)
    want = jax.tree.map(lambda x, y: 3.0 * x + b * y, TREE, other)
    assert jax.tree.structure(got) == jax.tree.structure(want)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_array_equal(g, w)
        assert g.dtype == w.dtype


def test_repeated_leaf_types_share_one_nested_jit_unique_ones_inline():
    jaxpr = jax.make_jaxpr(lambda t: _tree.map_leaves(_axpy, t, t, a=2.0, b=jnp.float32(1)))(TREE)
    # w1 and w2 share (2, 3) float32: one call each; b is (4,) and alone: inline.
    assert _calls(jaxpr, "_axpy") == 2
    assert len(jaxpr.jaxpr.eqns) > 2


def test_multiple_outputs_and_empty_trees():
    first, second = _tree.map_leaves(_pair, TREE, TREE, outputs=2, a=2.0)
    np.testing.assert_array_equal(first["w1"], TREE["w1"] * 2.0)
    np.testing.assert_array_equal(second["b"], np.zeros(4))
    assert _tree.map_leaves(_pair, {}, {}, outputs=2, a=2.0) == ({}, {})
    assert _tree.map_leaves(_axpy, [], [], a=1.0, b=1.0) == []


def test_select_keeps_the_first_trees_unselected_leaves_and_is_leaf_passes_none():
    other = jax.tree.map(lambda x: x + 1.0, TREE)
    got = _tree.map_leaves(_axpy, TREE, other, select=[True, False, True], a=2.0, b=1.0)
    leaves = jax.tree.leaves(TREE)
    np.testing.assert_array_equal(got["b"], 2.0 * TREE["b"] + other["b"])
    assert got["w1"] is leaves[1]
    np.testing.assert_array_equal(got["w2"], 2.0 * TREE["w2"] + other["w2"])
    params = {"frozen": None, "w": jnp.ones(2)}
    updates = {"frozen": None, "w": jnp.ones(2)}
    out = optkit.apply_updates(params, updates)
    assert out["frozen"] is None
    np.testing.assert_array_equal(out["w"], [2.0, 2.0])
    with pytest.raises(ValueError, match="select"):
        _tree.map_leaves(_pair, TREE, TREE, outputs=2, select=[True] * 3, a=1.0)


def test_signed_zero_and_bool_constants_get_their_own_traces():
    ones = {"x": jnp.ones(3), "y": jnp.ones(3)}
    plus = _tree.map_leaves(_pair, ones, ones, outputs=2, a=0.0)[0]
    minus = _tree.map_leaves(_pair, ones, ones, outputs=2, a=-0.0)[0]
    assert not np.signbit(plus["x"]).any()
    assert np.signbit(minus["x"]).all()
    ints = {"x": jnp.ones(3, jnp.int32), "y": jnp.ones(3, jnp.int32)}
    assert _tree.map_leaves(_pair, ints, ints, outputs=2, a=1)[0]["x"].dtype == jnp.int32
    assert _tree.map_leaves(_pair, ints, ints, outputs=2, a=1.0)[0]["x"].dtype != jnp.int32


def test_array_scalars_do_not_retrace():
    tree = {"x": jnp.ones(3), "y": jnp.ones(3)}
    nested = _tree._nested_jit(_axpy)
    _tree.map_leaves(_axpy, tree, tree, a=1.0, b=jnp.float32(1.0))
    before = nested._cache_size()
    _tree.map_leaves(_axpy, tree, tree, a=1.0, b=jnp.float32(7.0))
    assert nested._cache_size() == before


@pytest.mark.parametrize(
    "make",
    [
        lambda: optkit.adamw(1e-2, weight_decay=0.1, amsgrad=True),
        lambda: optkit.sgd(1e-2, momentum=0.9, dampening=0.1, weight_decay=1e-3),
        lambda: optkit.rmsprop(1e-2, centered=True, momentum=0.5),
        lambda: optkit.adagrad(1e-2),
    ],
    ids=["adamw-amsgrad", "sgd-dampened", "rmsprop-centered", "adagrad"],
)
def test_optimizers_emit_one_call_per_repeated_leaf(make):
    """The default path traces each optimizer's per-leaf math once per leaf type, and its
    numbers equal an unjitted run leaf by leaf."""
    tx = make()
    params = {f"l{i}": jnp.full((5,), 0.1 * (i + 1)) for i in range(4)}
    grads = jax.tree.map(lambda p: jnp.sin(p) + 0.3, params)
    state = tx.init(params)
    jaxpr = jax.make_jaxpr(tx.update)(grads, state, params)
    names = [e.params["name"] for e in jaxpr.jaxpr.eqns if e.primitive.name in ("pjit", "jit")]
    leafwise = [n for n in names if n.endswith("_leaf")]
    assert leafwise, "no nested per-leaf calls"
    assert all(leafwise.count(n) == 4 for n in set(leafwise)), leafwise
    jitted, _ = jax.jit(tx.update)(grads, state, params)
    with jax.disable_jit():
        eager, _ = tx.update(grads, state, params)
    for a, b in zip(jax.tree.leaves(jitted), jax.tree.leaves(eager), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6)
