"""masked and partition: the selected leaves get the inner transform, the rest pass through.

Expected values come from hand computation (``scale`` and ``add_decayed_weights`` have one-line
math) or from optax.masked / optax.partition, whose semantics these combinators reproduce.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optkit
from tests.parity import problem

# Leaf paths written out by hand, in jax's (sorted-key) flattening order.
PATHS = ["b", "nested/u", "nested/v", "w"]


def _params() -> dict:
    return {
        "w": jnp.array([[1.0, -2.0], [3.0, 4.0], [0.5, -0.5]]),
        "b": jnp.array([10.0, -20.0]),
        "nested": {"u": jnp.array([1.0, 2.0, 3.0, 4.0]), "v": jnp.array(7.0)},
    }


def _grads() -> dict:
    return {
        "w": jnp.array([[0.5, 0.25], [-1.0, 2.0], [3.0, -4.0]]),
        "b": jnp.array([1.0, -3.0]),
        "nested": {"u": jnp.array([0.1, -0.2, 0.3, -0.4]), "v": jnp.array(-2.0)},
    }


def _by_path(tree: dict) -> dict[str, np.ndarray]:
    """The leaves keyed by hand-built paths (independent of optkit's path spelling)."""
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update({f"{key}/{k}": v for k, v in _by_path(value).items()})
        else:
            out[key] = np.asarray(value)
    return out


def _is_masked_node(x) -> bool:
    return isinstance(x, optkit.MaskedNode)


def _assert_bits_equal(actual, expected) -> None:
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.dtype == expected.dtype and actual.shape == expected.shape
    assert actual.tobytes() == expected.tobytes()


FULL_MASK = {"w": True, "b": False, "nested": {"u": True, "v": False}}
MASKS = {
    "full": FULL_MASK,
    "numpy_bools": {"w": np.True_, "b": np.False_, "nested": {"u": np.True_, "v": np.False_}},
    "callable": lambda tree: jax.tree.map(lambda x: x.ndim >= 1 and x.size > 2, tree),
}
SELECTED = {"w", "nested/u"}


# --- masked: which leaves change ------------------------------------------------------------------


@pytest.mark.parametrize("mask", list(MASKS.values()), ids=list(MASKS))
def test_masked_scales_selected_leaves_only(mask):
    tx = optkit.masked(optkit.scale(-0.5), mask)
    out, _ = tx.update(_grads(), tx.init(_params()))

    grads = _by_path(_grads())
    for path, value in _by_path(out).items():
        expected = -0.5 * grads[path] if path in SELECTED else grads[path]
        np.testing.assert_array_equal(value, expected, err_msg=path)


def test_prefix_mask_covers_whole_subtrees():
    tx = optkit.masked(optkit.scale(3.0), {"w": False, "b": True, "nested": True})
    out, _ = tx.update(_grads(), tx.init(_params()))

    grads = _by_path(_grads())
    for path, value in _by_path(out).items():
        expected = grads[path] if path == "w" else 3.0 * grads[path]
        np.testing.assert_array_equal(value, expected, err_msg=path)


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
def test_unselected_leaves_pass_through_bit_identical(jit):
    # NaN and -0.0 survive only if the unselected leaf is returned untouched, not recomputed.
    grads = _grads()
    grads["b"] = jnp.array([jnp.nan, -0.0])
    grads["nested"]["v"] = jnp.array(-0.0)
    tx = optkit.masked(optkit.adam(0.1), FULL_MASK)
    update = jax.jit(tx.update) if jit else tx.update
    out, _ = update(grads, tx.init(_params()), _params())

    _assert_bits_equal(out["b"], grads["b"])
    _assert_bits_equal(out["nested"]["v"], grads["nested"]["v"])
    assert np.all(np.isfinite(out["w"])) and np.all(np.isfinite(out["nested"]["u"]))


def test_inner_transform_sees_pruned_params():
    # add_decayed_weights reads the params: selected leaves become g + 0.5 p, the others stay g.
    tx = optkit.masked(optkit.add_decayed_weights(0.5), FULL_MASK)
    out, _ = tx.update(_grads(), tx.init(_params()), _params())

    grads, params = _by_path(_grads()), _by_path(_params())
    for path, value in _by_path(out).items():
        expected = grads[path] + 0.5 * params[path] if path in SELECTED else grads[path]
        np.testing.assert_allclose(value, expected, rtol=1e-15, err_msg=path)


def test_all_false_mask_is_identity():
    tx = optkit.masked(optkit.sgd(0.1, momentum=0.9), {"w": False, "b": False, "nested": False})
    state = tx.init(_params())
    out, _ = tx.update(_grads(), state, _params())

    for path, value in _by_path(out).items():
        _assert_bits_equal(value, _by_path(_grads())[path])
    # Only the step counter is left: no momentum buffer for any leaf.
    assert all(np.ndim(leaf) == 0 for leaf in jax.tree.leaves(state))


# --- masked: the state holds the selected leaves only ---------------------------------------------


def test_state_holds_only_selected_leaves():
    tx = optkit.masked(optkit.adam(0.1), FULL_MASK)
    state = tx.init(_params())

    assert isinstance(state, optkit.MaskedState)
    # Adam keeps mu and nu per selected leaf plus one step count: 1 + 2 * 2 leaves.
    leaves = jax.tree.leaves(state)
    assert len(leaves) == 1 + 2 * len(SELECTED)
    adam_state = next(
        node
        for node in jax.tree.leaves(state, is_leaf=lambda x: isinstance(x, optkit.ScaleByAdamState))
        if isinstance(node, optkit.ScaleByAdamState)
    )
    params = _by_path(_params())
    for moment in (adam_state.mu, adam_state.nu):
        placeholders = jax.tree.leaves(moment, is_leaf=_is_masked_node)
        assert sum(map(_is_masked_node, placeholders)) == len(PATHS) - len(SELECTED)
        assert isinstance(moment["b"], optkit.MaskedNode)
        assert isinstance(moment["nested"]["v"], optkit.MaskedNode)
        assert moment["w"].shape == params["w"].shape
        assert moment["nested"]["u"].shape == params["nested/u"].shape


def test_state_has_as_many_leaves_as_optax_masked():
    mask = {"w": True, "b": True, "nested": {"u": False, "v": True}}
    ours = optkit.masked(optkit.adam(0.1), mask).init(_params())
    theirs = optax.masked(optax.adam(0.1), mask).init(_params())

    assert len(jax.tree.leaves(ours)) == len(jax.tree.leaves(theirs)) == 1 + 2 * 3
    assert sum(np.size(x) for x in jax.tree.leaves(ours)) == 1 + 2 * (6 + 2 + 1)


# --- masked: errors -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mask", "path", "type_name"),
    [
        ({"w": True, "b": 1j, "nested": {"u": True, "v": False}}, "'b'", "complex"),
        ({"w": True, "b": False, "nested": {"u": 0.5, "v": False}}, "'nested/u'", "float"),
        ({"w": True, "b": False, "nested": "yes"}, "'nested/", "str"),
        ({"w": jnp.array([True, True]), "b": False, "nested": False}, "'w'", "shape (2,)"),
    ],
    ids=["complex", "float_nested", "str_prefix", "jax_array"],
)
def test_non_bool_mask_entry_is_a_type_error_naming_the_path(mask, path, type_name):
    tx = optkit.masked(optkit.scale(2.0), mask)
    with pytest.raises(TypeError, match="bool") as error:
        tx.init(_params())
    assert path in str(error.value)
    assert type_name in str(error.value)


def test_callable_mask_returning_non_bools_fails_at_update_too():
    # 0 and 1 stand for False and True (as in optax); other integers are refused.
    tx = optkit.masked(optkit.scale(2.0), lambda tree: jax.tree.map(lambda _: 2, tree))
    with pytest.raises(ValueError, match="'b'"):
        tx.update(_grads(), optkit.MaskedState(inner_state=optkit.EmptyState()))


@pytest.mark.parametrize(
    "mask",
    [
        {"w": True, "b": False},  # missing "nested"
        {"w": True, "b": False, "nested": True, "extra": True},
        {"w": {"deeper": True}, "b": False, "nested": True},
        [True, False, True],
    ],
    ids=["missing_key", "extra_key", "deeper_than_params", "wrong_container"],
)
def test_mask_tree_that_does_not_match_is_a_value_error(mask):
    tx = optkit.masked(optkit.scale(2.0), mask)
    with pytest.raises(ValueError, match="masked"):
        tx.init(_params())


# --- masked: composition --------------------------------------------------------------------------


def test_masked_under_jit_matches_eager():
    tx = optkit.masked(optkit.adam(0.1), MASKS["callable"])
    state = tx.init(_params())
    eager, eager_state = tx.update(_grads(), state, _params())
    jitted, jitted_state = jax.jit(tx.update)(_grads(), state, _params())

    for path, value in _by_path(jitted).items():
        np.testing.assert_allclose(value, _by_path(eager)[path], rtol=1e-14, err_msg=path)
    for a, b in zip(jax.tree.leaves(jitted_state), jax.tree.leaves(eager_state), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-14)


@pytest.mark.parametrize("inner_mask_kind", ["tree", "callable"])
def test_nested_masked_applies_where_both_masks_select(inner_mask_kind):
    outer = {"w": True, "b": True, "nested": {"u": True, "v": False}}
    inner = (
        {"w": False, "b": True, "nested": {"u": True, "v": True}}
        if inner_mask_kind == "tree"
        else (lambda tree: jax.tree.map(lambda x: x.ndim == 1, tree))
    )
    tx = optkit.masked(optkit.masked(optkit.scale(-2.0), inner), outer)
    out, _ = tx.update(_grads(), tx.init(_params()))

    grads = _by_path(_grads())
    for path, value in _by_path(out).items():
        expected = -2.0 * grads[path] if path in {"b", "nested/u"} else grads[path]
        np.testing.assert_array_equal(value, expected, err_msg=path)


def test_nested_masked_state_holds_the_intersection():
    outer = {"w": True, "b": True, "nested": {"u": True, "v": False}}
    inner = {"w": False, "b": True, "nested": {"u": True, "v": True}}
    tx = optkit.masked(optkit.masked(optkit.sgd(0.1, momentum=0.9), inner), outer)
    state = tx.init(_params())

    trace_state = next(
        node
        for node in jax.tree.leaves(state, is_leaf=lambda x: isinstance(x, optkit.TraceState))
        if isinstance(node, optkit.TraceState)
    )
    buffers = jax.tree.leaves(trace_state.trace)
    assert sorted(b.shape for b in buffers) == [(2,), (4,)]


# --- masked vs optax.masked -----------------------------------------------------------------------


def _trajectory(tx, steps: int = 30) -> list[dict[str, np.ndarray]]:
    """Run ``tx`` on the shared parity problem in float32, jitted; params after every step."""
    params = {k: jnp.asarray(v) for k, v in problem.initial_params(np.float32).items()}
    state = tx.init(params)

    @jax.jit
    def step(params, state):
        _, grads = problem.jax_value_and_grad(params)
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    path = [params]
    for _ in range(steps):
        params, state = step(params, state)
        path.append(params)
    return [{k: np.asarray(v) for k, v in p.items()} for p in path]


# (mask, its complement): the complement gets plain SGD so that no leaf is stepped by the raw
# gradient that ``masked`` passes through.
PROBLEM_MASKS = {
    "tree": (
        {"scalar": False, "vector": True, "matrix": True, "tensor": False},
        {"scalar": True, "vector": False, "matrix": False, "tensor": True},
    ),
    "callable": (
        lambda tree: {k: k in ("scalar", "tensor") for k in tree},
        lambda tree: {k: k not in ("scalar", "tensor") for k in tree},
    ),
}


@pytest.mark.parametrize(("mask", "rest"), list(PROBLEM_MASKS.values()), ids=list(PROBLEM_MASKS))
def test_masked_adam_matches_optax_masked_adam(mask, rest):
    ours = _trajectory(
        optkit.chain(optkit.masked(optkit.adam(1e-2), mask), optkit.masked(optkit.sgd(1e-2), rest))
    )
    theirs = _trajectory(
        optax.chain(optax.masked(optax.adam(1e-2), mask), optax.masked(optax.sgd(1e-2), rest))
    )

    assert all(np.max(np.abs(ours[-1][k] - ours[0][k])) > 0.05 for k in ours[0])
    for step, (a, b) in enumerate(zip(ours, theirs, strict=True)):
        for name in a:
            np.testing.assert_allclose(a[name], b[name], rtol=1e-6, atol=1e-6, err_msg=f"{step}")


# --- partition ------------------------------------------------------------------------------------

TRANSFORMS = {"fast": optkit.scale(-0.5), "frozen": optkit.scale(0.0), "same": optkit.identity()}
LABELS = {
    "tree": {"w": "fast", "b": "frozen", "nested": {"u": "same", "v": "fast"}},
    "prefix": {"w": "fast", "b": "frozen", "nested": "same"},
    "callable": lambda tree: {
        "w": "fast",
        "b": "frozen",
        "nested": jax.tree.map(lambda x: "same" if x.ndim else "fast", tree["nested"]),
    },
}
EXPECTED_FACTOR = {
    "tree": {"w": -0.5, "b": 0.0, "nested/u": 1.0, "nested/v": -0.5},
    "prefix": {"w": -0.5, "b": 0.0, "nested/u": 1.0, "nested/v": 1.0},
    "callable": {"w": -0.5, "b": 0.0, "nested/u": 1.0, "nested/v": -0.5},
}


@pytest.mark.parametrize("kind", list(LABELS))
def test_partition_routes_each_leaf_to_its_label(kind):
    tx = optkit.partition(TRANSFORMS, LABELS[kind])
    out, _ = tx.update(_grads(), tx.init(_params()), _params())

    grads = _by_path(_grads())
    for path, value in _by_path(out).items():
        np.testing.assert_array_equal(value, EXPECTED_FACTOR[kind][path] * grads[path], path)


def test_partition_state_per_label_holds_only_its_leaves():
    labels = {"w": "a", "b": "b", "nested": {"u": "a", "v": "b"}}
    transforms = {"a": optkit.adam(0.1), "b": optkit.sgd(0.1, momentum=0.9)}
    state = optkit.partition(transforms, labels).init(_params())

    assert isinstance(state, optkit.PartitionState)
    assert set(state.inner_states) == {"a", "b"}
    # Float leaves are the per-parameter buffers (the step counters are integers).
    buffers = {
        label: sorted(x.shape for x in jax.tree.leaves(inner) if x.dtype.kind == "f")
        for label, inner in state.inner_states.items()
    }
    # a: mu and nu for w (3, 2) and nested/u (4,); b: one momentum buffer for b (2,) and v ().
    assert buffers == {"a": [(3, 2), (3, 2), (4,), (4,)], "b": [(), (2,)]}


def test_partition_unknown_label_names_the_path_and_label():
    labels = {"w": "fast", "b": "missing", "nested": "same"}
    tx = optkit.partition(TRANSFORMS, labels)
    with pytest.raises(ValueError, match="'missing'") as error:
        tx.init(_params())
    assert "b" in str(error.value)


def test_partition_labels_that_do_not_match_the_params_fail():
    tx = optkit.partition(TRANSFORMS, {"w": "fast", "b": "frozen"})
    with pytest.raises(ValueError, match="partition"):
        tx.init(_params())


def test_partition_under_jit_matches_eager():
    transforms = {"a": optkit.adam(0.1), "b": optkit.sgd(0.1, momentum=0.9)}
    tx = optkit.partition(transforms, {"w": "a", "b": "b", "nested": "a"})
    state = tx.init(_params())
    eager, _ = tx.update(_grads(), state, _params())
    jitted, _ = jax.jit(tx.update)(_grads(), state, _params())

    for path, value in _by_path(jitted).items():
        np.testing.assert_allclose(value, _by_path(eager)[path], rtol=1e-14, err_msg=path)


def test_partition_matches_optax_partition():
    labels = {"scalar": "sgd", "vector": "adam", "matrix": "sgd", "tensor": "adam"}
    ours = _trajectory(
        optkit.partition({"adam": optkit.adam(1e-2), "sgd": optkit.sgd(0.01, momentum=0.9)}, labels)
    )
    theirs = _trajectory(
        optax.partition({"adam": optax.adam(1e-2), "sgd": optax.sgd(0.01, momentum=0.9)}, labels)
    )

    assert all(np.max(np.abs(ours[-1][k] - ours[0][k])) > 0.05 for k in ours[0])
    for step, (a, b) in enumerate(zip(ours, theirs, strict=True)):
        for name in a:
            np.testing.assert_allclose(a[name], b[name], rtol=1e-6, atol=1e-6, err_msg=f"{step}")
