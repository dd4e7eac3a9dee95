"""optkit._kernel.leaf_kernel: per-leaf math lifted to trees, named outputs, dtype rules, and one
nested jit per leaf type."""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import optkit
from optkit._kernel import LeafKernel, leaf_kernel
from tests.support.registry import BY_NAME, NAMES


class Pair(NamedTuple):
    x: jax.Array
    y: jax.Array


@leaf_kernel
def _axpy(x, y, *, a, b) -> jax.Array:
    return a * x + b * y


@leaf_kernel
def _pair(x, y, *, a) -> Pair:
    return Pair(x * a, y - x)


def _optkit_kernel_names() -> set[str]:
    """The names of every kernel defined in optkit's modules."""
    import importlib
    import pkgutil

    names = set()
    for info in pkgutil.walk_packages(optkit.__path__, prefix="optkit."):
        module = importlib.import_module(info.name)
        names |= {v.__name__ for v in vars(module).values() if isinstance(v, LeafKernel)}
    return names


def _calls(jaxpr: jax.extend.core.ClosedJaxpr, name: str) -> int:
    return sum(
        1
        for eqn in jaxpr.jaxpr.eqns
        if eqn.primitive.name in ("pjit", "jit") and eqn.params["name"] == name
    )


TREE = {
    "w1": jnp.arange(6.0, dtype=jnp.float32).reshape(2, 3),
    "w2": jnp.ones((2, 3), jnp.float32),
    "b": jnp.arange(4.0, dtype=jnp.float32),
}


def test_matches_tree_map_with_constant_and_array_scalars():
    other = jax.tree.map(lambda x: x + 1.5, TREE)
    b = jnp.float32(0.25)
    got = _axpy(TREE, other, a=3.0, b=b)
    want = jax.tree.map(lambda x, y: 3.0 * x + b * y, TREE, other)
    assert jax.tree.structure(got) == jax.tree.structure(want)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_array_equal(g, w)
        assert g.dtype == w.dtype


def test_repeated_leaf_types_share_one_nested_jit_unique_ones_inline():
    jaxpr = jax.make_jaxpr(lambda t: _axpy(t, t, a=2.0, b=jnp.float32(1)))(TREE)
    # w1 and w2 share (2, 3) float32: one call each; b is (4,) and alone: inline.
    assert _calls(jaxpr, "_axpy") == 2
    assert len(jaxpr.jaxpr.eqns) > 2


def test_named_outputs_hold_one_tree_each_and_empty_trees_work():
    new = _pair(TREE, TREE, a=2.0)
    assert isinstance(new, Pair)
    np.testing.assert_array_equal(new.x["w1"], TREE["w1"] * 2.0)
    np.testing.assert_array_equal(new.y["b"], np.zeros(4))
    assert _pair({}, {}, a=2.0) == Pair({}, {})
    assert _axpy([], [], a=1.0, b=1.0) == []


def test_float64_array_scalars_do_not_promote_float32_leaves():
    # The session enables x64: an unguarded float64 scalar would make every output float64.
    scale = jnp.asarray(1.0 / 3.0, jnp.float64)
    got = _axpy(TREE, TREE, a=scale, b=0.5)
    for leaf in jax.tree.leaves(got):
        assert leaf.dtype == jnp.float32
    np.testing.assert_array_equal(
        got["b"], np.float32(1.0 / 3.0) * np.asarray(TREE["b"]) + np.float32(0.5) * TREE["b"]
    )


def test_outputs_keep_the_dtype_of_the_input_they_name():
    narrow = {"v": jnp.ones(3, jnp.bfloat16)}
    wide = {"v": jnp.full(3, 1.0 + 2.0**-12, jnp.float32)}
    new = _pair(narrow, wide, a=3.0)
    # x is computed in float32 (the promoted dtype) and stored back as bfloat16; y stays float32.
    assert new.x["v"].dtype == jnp.bfloat16
    assert new.y["v"].dtype == jnp.float32
    np.testing.assert_array_equal(new.y["v"], np.full(3, 2.0**-12, np.float32))


def test_scalars_must_match_the_kernel_by_name():
    with pytest.raises(TypeError, match=r"missing scalars \['b'\], unknown scalars \['c'\]"):
        _axpy(TREE, TREE, a=1.0, c=2.0)
    with pytest.raises(TypeError, match=r"takes trees \['x', 'y'\], got 1"):
        _axpy(TREE, a=1.0, b=2.0)


def test_kernel_definitions_are_checked():
    with pytest.raises(TypeError, match="no \\*args or \\*\\*kwargs"):

        @leaf_kernel
        def _catch_all(x, **scalars) -> jax.Array:
            return x

    class Orphan(NamedTuple):
        x: jax.Array
        z: jax.Array

    def _orphan(x, y) -> Orphan:
        return Orphan(x, y)

    _orphan.__annotations__["return"] = Orphan
    with pytest.raises(TypeError, match=r"outputs \['z'\] name no input"):
        leaf_kernel(_orphan)


def test_select_keeps_the_first_trees_unselected_leaves_and_is_leaf_passes_none():
    other = jax.tree.map(lambda x: x + 1.0, TREE)
    got = _axpy(TREE, other, select=[True, False, True], a=2.0, b=1.0)
    leaves = jax.tree.leaves(TREE)
    np.testing.assert_array_equal(got["b"], 2.0 * TREE["b"] + other["b"])
    assert got["w1"] is leaves[1]
    np.testing.assert_array_equal(got["w2"], 2.0 * TREE["w2"] + other["w2"])
    params = {"frozen": None, "w": jnp.ones(2)}
    updates = {"frozen": None, "w": jnp.ones(2)}
    out = optkit.apply_updates(params, updates)
    assert out["frozen"] is None
    np.testing.assert_array_equal(out["w"], [2.0, 2.0])
    with pytest.raises(TypeError, match="select needs a single-output kernel"):
        _pair(TREE, TREE, select=[True] * 3, a=1.0)


def test_signed_zero_and_bool_constants_get_their_own_traces():
    ones = {"x": jnp.ones(3), "y": jnp.ones(3)}
    plus = _pair(ones, ones, a=0.0).x
    minus = _pair(ones, ones, a=-0.0).x
    assert not np.signbit(plus["x"]).any()
    assert np.signbit(minus["x"]).all()
    ints = {"x": jnp.ones(3, jnp.int32), "y": jnp.ones(3, jnp.int32)}
    assert _axpy(ints, ints, a=1, b=1)["x"].dtype == jnp.int32
    # 1 and True are different constants: the second call must not reuse the first's trace.
    np.testing.assert_array_equal(_axpy(ints, ints, a=True, b=1)["x"], [2, 2, 2])


def test_array_scalars_do_not_retrace():
    tree = {"x": jnp.ones(3), "y": jnp.ones(3)}
    _axpy(tree, tree, a=1.0, b=jnp.float32(1.0))
    before = _axpy._nested._cache_size()
    _axpy(tree, tree, a=1.0, b=jnp.float32(7.0))
    assert _axpy._nested._cache_size() == before


@pytest.mark.parametrize("name", NAMES)
def test_optimizers_emit_one_call_per_repeated_leaf(name):
    """The default path traces each optimizer's per-leaf math once per leaf type, and its
    numbers equal an unjitted run leaf by leaf."""
    tx = BY_NAME[name].make()
    # Matrices, which every optimizer takes (Muon takes nothing else).
    params = {f"l{i}": jnp.full((2, 5), 0.1 * (i + 1)) for i in range(4)}
    grads = jax.tree.map(lambda p: jnp.sin(p) + 0.3, params)
    # The loss whose gradient that is, for optimizers that evaluate it (LBFGS).
    loss = lambda p: sum(jnp.sum(0.3 * x - jnp.cos(x)) for x in jax.tree.leaves(p))
    update = functools.partial(tx.update, **BY_NAME[name].update_args(loss))
    state = tx.init(params)
    jaxpr = jax.make_jaxpr(update)(grads, state, params)
    names = [e.params["name"] for e in jaxpr.jaxpr.eqns if e.primitive.name in ("pjit", "jit")]
    kernels = [n for n in names if n in _optkit_kernel_names()]
    assert kernels, "no nested per-leaf calls"
    assert all(kernels.count(n) == 4 for n in set(kernels)), kernels
    jitted, _ = jax.jit(update)(grads, state, params)
    with jax.disable_jit():
        eager, _ = update(grads, state, params)
    for a, b in zip(jax.tree.leaves(jitted), jax.tree.leaves(eager), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6)
