"""optkit.flatten: the inner transform runs on one flat vector per dtype, with per-leaf results.

The reference for every test is the same transform run leaf by leaf. Leaves of more than one
element must come out bit for bit identical: the arithmetic is elementwise either way, and in
this session (x64 on, XLA:CPU) XLA compiles it the same way on both paths. One-element leaves
are compared to within a few ulp: XLA rewrites ``x / scalar`` as ``x * (1 / scalar)`` for
arrays of more than one element, so a one-element leaf divides exactly on the per-leaf path but
takes the reciprocal inside the flat vector (Adam's bias corrections, Adagrad's decayed learning
rate). That rewrite is XLA's choice per kernel, not flatten's: with x64 off it is also made for
the flat vector but not for Adam's per-leaf kernels, and larger leaves then differ by an ulp or
two. If an XLA upgrade breaks the bitwise checks, compare those leaves in ulp as well; the
torch parity suite (tests/optimizers/test_parity.py) is the accuracy contract for both paths.
Gradients are computed by a separate jitted function and passed to the step, so both paths see
identical inputs.

Only rounding may differ where XLA can rewrite arithmetic across the per-leaf path's boundary
but not across flatten's concatenation and slices: a scalar multiply chained after flatten, a
gradient computed in the same jitted step (the Flax tests), a global norm summed in another
order. Those tests use ``assert_close``.

The compile-structure tests check the point of flatten: every leaf's slice is the same XLA
kernel, and the check fails if the slice offsets were plain constants.
"""

from __future__ import annotations

import collections
import re
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import optkit
from optkit.combinators import flatten as flatten_module
from tests.integration import test_flax as flax_tests
from tests.integration.compile_counter import count_compiles
from tests.support.registry import REGISTRY

Tree = Any
Factory = Callable[[], optkit.GradientTransformation]

STEPS = 5
# Measured: at most 3 ulp (adagrad) after 5 steps over 4 seeds; 8 leaves room for other CPUs.
ONE_ELEMENT_MAX_ULP = 8
RTOL = {"float32": 1e-6, "float64": 1e-14}


def mixed_tree(seed: int = 0) -> dict[str, Any]:
    """Ranks 0 to 3, an empty leaf, float32 and float64 leaves, nested dicts and a list."""
    rng = np.random.default_rng(seed)

    def leaf(shape: tuple[int, ...], dtype: type[np.floating]) -> jax.Array:
        return jnp.asarray(rng.normal(size=shape).astype(dtype))

    return {
        "scalar": leaf((), np.float32),
        "vector": leaf((5,), np.float32),
        "matrix": leaf((3, 4), np.float64),
        "block": {
            "tensor": leaf((2, 3, 4), np.float32),
            "layers": [leaf((7,), np.float64), leaf((0,), np.float32), leaf((2, 2), np.float32)],
            "bias": leaf((), np.float64),
        },
    }


def loss(params: Tree) -> jax.Array:
    """Non-convex and different per element, so moments and directions vary across leaves."""
    return sum(
        jnp.sum(jnp.sin(3.0 * p) * p**2).astype(jnp.float64) for p in jax.tree.leaves(params)
    )


grad_fn = jax.jit(jax.grad(loss))


def train(
    tx: optkit.GradientTransformation, params: Tree, steps: int = STEPS, **extra: Any
) -> tuple[Tree, Tree, Tree]:
    """Params, last updates and state after ``steps`` jitted steps."""

    @jax.jit
    def step(params: Tree, grads: Tree, state: Tree) -> tuple[Tree, Tree, Tree]:
        updates, state = tx.update(grads, state, params, **extra)
        return optkit.apply_updates(params, updates), updates, state

    state, updates = tx.init(params), None
    for _ in range(steps):
        params, updates, state = step(params, grad_fn(params), state)
    return params, updates, state


def assert_matches_per_leaf(actual: Tree, expected: Tree) -> None:
    """Same structure, shapes and dtypes; bitwise equal but for one-element leaves (see top)."""
    assert jax.tree.structure(actual) == jax.tree.structure(expected)
    for (path, a), b in zip(
        jax.tree_util.tree_leaves_with_path(actual), jax.tree.leaves(expected), strict=True
    ):
        where = jax.tree_util.keystr(path)
        a, b = np.asarray(a), np.asarray(b)
        assert (a.dtype, a.shape) == (b.dtype, b.shape), where
        if a.size == 1:
            np.testing.assert_array_max_ulp(a, b, maxulp=ONE_ELEMENT_MAX_ULP)
        else:
            assert a.tobytes() == b.tobytes(), f"{where}: {a} != {b}"


def assert_close(actual: Tree, expected: Tree) -> None:
    """Equal to within float rounding, for results that may legitimately differ in the last bits."""
    assert jax.tree.structure(actual) == jax.tree.structure(expected)
    for a, b in zip(jax.tree.leaves(actual), jax.tree.leaves(expected), strict=True):
        assert a.dtype == b.dtype
        np.testing.assert_allclose(a, b, rtol=RTOL[a.dtype.name], atol=RTOL[a.dtype.name])


def find_state(state: Tree, kind: type) -> Any:
    """The one sub-state of type ``kind`` in ``state``."""
    is_kind = lambda node: isinstance(node, kind)
    (found,) = filter(is_kind, jax.tree.leaves(state, is_leaf=is_kind))
    return found


# Every registry row whose math is elementwise, in its typical set-up, and Nesterov momentum.
OPTIMIZERS: dict[str, Factory] = {
    **{info.name: info.make for info in REGISTRY if info.flatten},
    "sgd_nesterov_wd": lambda: optkit.sgd(0.05, momentum=0.9, nesterov=True, weight_decay=0.1),
}


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_matches_per_leaf_under_jit(name: str) -> None:
    flat = train(optkit.flatten(OPTIMIZERS[name]()), mixed_tree())
    per_leaf = train(OPTIMIZERS[name](), mixed_tree())
    assert_matches_per_leaf(flat[:2], per_leaf[:2])  # params and last updates


# Registry rows whose math flatten would change (per-leaf shapes and norms): wrapped in flatten,
# they must fail, wherever they sit inside it, never return another optimizer's result. LBFGS
# (a closure row) is the exception: its math already spans every leaf as one vector, flatten hands
# it a loss of the flat vectors, and tests/optimizers/test_lbfgs.py checks that run against torch.
NOT_FLATTENED = {info.name: info.make for info in REGISTRY if not info.flatten and not info.closure}


@pytest.mark.parametrize("name", NOT_FLATTENED)
@pytest.mark.parametrize(
    "wrap",
    [
        lambda tx: optkit.flatten(tx),
        lambda tx: optkit.flatten(optkit.chain(optkit.clip(1.0), tx), max_flat_size=10),
        lambda tx: optkit.flatten(
            optkit.masked(tx, lambda tree: jax.tree.map(lambda _: True, tree))
        ),
    ],
    ids=["direct", "in_chain_large_leaves_whole", "masked"],
)
def test_optimizers_that_read_leaf_shapes_refuse_flatten(name: str, wrap: Callable) -> None:
    tx = wrap(NOT_FLATTENED[name]())
    with pytest.raises(ValueError, match=r"cannot run inside optkit\.flatten"):
        tx.init(mixed_tree())
    # The per-leaf path of the same transform works.
    train(NOT_FLATTENED[name](), mixed_tree(), steps=1)


# --- state layout ------------------------------------------------------------------------------


def state_bytes(state: Tree) -> int:
    return sum(np.asarray(leaf).nbytes for leaf in jax.tree.leaves(state))


def test_state_holds_one_vector_per_dtype() -> None:
    params = mixed_tree()
    sizes = collections.Counter()
    for leaf in jax.tree.leaves(params):
        sizes[leaf.dtype.name] += leaf.size
    # tests/conftest.py enables x64; without it the float64 leaves would silently be float32.
    assert jax.config.jax_enable_x64 and set(sizes) == {"float32", "float64"}
    tx = optkit.adam(0.01, amsgrad=True)
    state = optkit.flatten(tx).init(params)

    assert isinstance(state, optkit.FlattenState)
    vectors = 0
    for path, leaf in jax.tree_util.tree_leaves_with_path(state.inner_state):
        if leaf.ndim == 0:  # the step count
            continue
        dtype_name = path[-1].key
        assert leaf.shape == (sizes[dtype_name],) and leaf.dtype.name == dtype_name, path
        vectors += 1
    assert vectors == 3 * len(sizes)  # mu, nu and nu_max for each dtype
    assert state_bytes(state) == state_bytes(tx.init(params))


def test_leaves_above_max_flat_size_keep_their_own_shape() -> None:
    # block/tensor (24 elements) and matrix (12) exceed 10: a group each, keyed by path.
    tx = optkit.sgd(0.05, momentum=0.9, weight_decay=0.1)
    flat_tx = optkit.flatten(tx, max_flat_size=10)
    trace = find_state(flat_tx.init(mixed_tree()), optkit.TraceState).trace
    assert {name: v.shape for name, v in trace.items()} == {
        "block/tensor": (2, 3, 4),
        "matrix": (3, 4),
        "float32": (1 + 5 + 0 + 4,),
        "float64": (7 + 1,),
    }
    flat, per_leaf = train(flat_tx, mixed_tree()), train(tx, mixed_tree())
    assert_matches_per_leaf(flat[:2], per_leaf[:2])


def test_jit_init_matches_eager_init() -> None:
    tx = optkit.flatten(optkit.adamw(0.01, amsgrad=True))
    eager, jitted = tx.init(mixed_tree()), jax.jit(tx.init)(mixed_tree())
    assert jax.tree.structure(jitted) == jax.tree.structure(eager)
    jax.tree.map(np.testing.assert_array_equal, jitted, eager)


# --- composition -------------------------------------------------------------------------------


def not_vectors(tree: Tree) -> Tree:
    """A mask selecting every leaf but the rank-1 ones (so both dtypes stay selected)."""
    return jax.tree.map(lambda x: x.ndim != 1, tree)


GROUPS = [{"params": "block/**", "weight_decay": 0.0}, {"params": ["scalar", "vector", "matrix"]}]

COMPOSITIONS: dict[str, tuple[Factory, Factory]] = {
    # name: (with flatten, the per-leaf equivalent)
    "in_optkit_chain": (
        lambda: optkit.chain(optkit.clip(1.0), optkit.flatten(optkit.adam(0.01))),
        lambda: optkit.chain(optkit.clip(1.0), optkit.adam(0.01)),
    ),
    "in_optax_chain": (
        lambda: optax.chain(optax.clip(1.0), optkit.flatten(optkit.sgd(0.05, momentum=0.9))),
        lambda: optax.chain(optax.clip(1.0), optkit.sgd(0.05, momentum=0.9)),
    ),
    "optax_adam_inside": (lambda: optkit.flatten(optax.adam(1e-2)), lambda: optax.adam(1e-2)),
    "in_param_groups": (
        lambda: optkit.param_groups(
            lambda **kw: optkit.flatten(optkit.adamw(**kw)), GROUPS, learning_rate=0.01
        ),
        lambda: optkit.param_groups(optkit.adamw, GROUPS, learning_rate=0.01),
    ),
    "in_masked": (
        lambda: optkit.masked(optkit.flatten(optkit.rmsprop(0.01)), not_vectors),
        lambda: optkit.masked(optkit.rmsprop(0.01), not_vectors),
    ),
}


@pytest.mark.parametrize("name", COMPOSITIONS)
def test_composes_like_the_per_leaf_transform(name: str) -> None:
    with_flatten, per_leaf = COMPOSITIONS[name]
    flat = train(with_flatten(), mixed_tree())
    reference = train(per_leaf(), mixed_tree())
    assert_matches_per_leaf(flat[:2], reference[:2])


def test_masked_inner_state_holds_selected_leaves_only() -> None:
    params = mixed_tree()
    tx = optkit.masked(optkit.flatten(optkit.sgd(0.1, momentum=0.9)), not_vectors)
    trace = find_state(tx.init(params), optkit.TraceState).trace
    expected = collections.Counter()
    for leaf in jax.tree.leaves(params):
        if leaf.ndim != 1:
            expected[leaf.dtype.name] += leaf.size
    assert {name: vector.shape for name, vector in trace.items()} == {
        name: (size,) for name, size in expected.items()
    }


def test_set_hyperparams_reaches_an_injected_optimizer_inside() -> None:
    tx = optkit.flatten(optkit.inject_hyperparams(optkit.sgd)(learning_rate=0.1, momentum=0.9))
    params, _, state = train(tx, mixed_tree(), steps=2)
    frozen = optkit.set_hyperparams(state, learning_rate=0.0)

    assert isinstance(frozen, optkit.FlattenState)
    assert float(optkit.get_hyperparams(frozen)["learning_rate"]) == 0.0
    step = jax.jit(lambda p, g, s: tx.update(g, s, p))
    step(params, grad_fn(params), state)  # compile once with the old value
    with count_compiles() as compiled:
        updates, _ = step(params, grad_fn(params), frozen)
    assert not compiled
    jax.tree.map(lambda u: np.testing.assert_array_equal(u, 0.0), updates)


def plateau() -> optkit.GradientTransformation:
    return optkit.reduce_lr_on_plateau(patience=0, factor=0.5, learning_rate=0.1)


PLATEAU_LAYOUTS: dict[str, Callable[[Callable], optkit.GradientTransformation]] = {
    # flatten must forward value= to the plateau inside it
    "inside_flatten": lambda wrap: wrap(optkit.chain(optkit.sgd(0.1), plateau())),
    # optkit.chain forwards value= to the plateau, not to flatten(adam)
    "after_flatten": lambda wrap: optkit.chain(wrap(optkit.adam(0.1)), plateau()),
}


@pytest.mark.parametrize("layout", PLATEAU_LAYOUTS)
def test_reduce_lr_on_plateau_gets_the_value(layout: str) -> None:
    make = PLATEAU_LAYOUTS[layout]
    value = jnp.float32(1.0)
    flat = train(make(optkit.flatten), mixed_tree(), value=value)
    reference = train(make(lambda tx: tx), mixed_tree(), value=value)
    if layout == "inside_flatten":
        assert_matches_per_leaf(flat[:2], reference[:2])
    else:
        # Per leaf, XLA folds the plateau's scale into adam's `* -lr` (u * (-lr * scale));
        # flatten's slice sits between the two multiplies, so the rounding differs.
        assert_close(flat[:2], reference[:2])
    # A constant value never improves: with patience=0 the scale halves from the second update.
    assert float(find_state(flat[2], optkit.ReduceLROnPlateauState).scale) == 0.5 ** (STEPS - 1)


def test_extra_args_are_dropped_for_inner_transforms_without_them() -> None:
    scale = optax.scale(-0.5)  # a plain optax transform: update(updates, state, params=None)
    plain = optax.GradientTransformation(scale.init, scale.update)
    tx = optkit.flatten(plain)
    grads = grad_fn(mixed_tree())
    updates, _ = tx.update(grads, tx.init(mixed_tree()), value=1.0)
    assert_matches_per_leaf(updates, jax.tree.map(lambda g: -0.5 * g, grads))


def test_clip_by_global_norm_inside_matches_within_rounding() -> None:
    # The global norm sums the squares in another order, so only rounding may differ.
    params = jax.tree.map(lambda x: x.astype(jnp.float32), mixed_tree())
    make = lambda: optkit.chain(optkit.clip_by_global_norm(0.5), optkit.sgd(0.1, momentum=0.9))
    assert optkit.global_norm(grad_fn(params)) > 2 * 0.5  # the clip bites
    flat = train(optkit.flatten(make()), params)
    reference = train(make(), params)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), flat[:2], reference[:2])


# --- edge cases and errors ---------------------------------------------------------------------


EDGE_TREES: dict[str, Callable[[], Tree]] = {
    "none_leaf": lambda: {**mixed_tree(), "frozen": None},  # a frozen leaf: None in and out
    "empty_dtype_group": lambda: {"w": mixed_tree()["vector"], "e": jnp.zeros((0, 3), jnp.float64)},
    "bare_array": lambda: mixed_tree()["block"]["tensor"],
}


@pytest.mark.parametrize("name", EDGE_TREES)
def test_edge_trees_match_per_leaf(name: str) -> None:
    params = EDGE_TREES[name]()
    flat = train(optkit.flatten(optkit.adam(0.01)), params)
    reference = train(optkit.adam(0.01), params)
    assert_matches_per_leaf(flat[:2], reference[:2])  # the tree structures (None too) match


# --- compile structure -------------------------------------------------------------------------

LEAVES = 64


def fusion_bodies(hlo: str) -> collections.Counter[str]:
    """How often each fused computation's body occurs, with names and metadata removed.

    Two fusions with the same normalized body are the same kernel: XLA emits it once.
    """
    called = set(re.findall(r"\bfusion\(.*?calls=(%[\w.\-]+)", hlo))
    bodies: collections.Counter[str] = collections.Counter()
    for match in re.finditer(r"^(%[\w.\-]+) [^\n]*\{\n(.*?)\n\}$", hlo, re.M | re.S):
        if match.group(1) in called:
            body = re.sub(r", metadata=\{[^}]*\}", "", match.group(2))
            bodies[re.sub(r"%[\w.\-]+", "%_", body)] += 1
    return bodies


def adam_step_fusions() -> collections.Counter[str]:
    """The fusion bodies of a jitted flatten(adam) train step over LEAVES equal-shaped leaves."""
    cpu = jax.devices("cpu")[0]  # a fixed backend: fusion decisions differ between backends
    params = jax.device_put(
        {f"w{i:03d}": jnp.full((8, 16), i / LEAVES, jnp.float32) for i in range(LEAVES)}, cpu
    )
    tx = optkit.flatten(optkit.adam(1e-3))

    def step(params: Tree, grads: Tree, state: Tree) -> tuple[Tree, Tree]:
        updates, state = tx.update(grads, state, params)
        return optkit.apply_updates(params, updates), state

    hlo = jax.jit(step).lower(params, params, tx.init(params)).compile().as_text()
    return fusion_bodies(hlo)


def test_every_leaf_shares_one_kernel() -> None:
    bodies = adam_step_fusions()
    summary = f"{len(bodies)} distinct fusion bodies, shared by {sorted(bodies.values())}"
    assert max(bodies.values()) >= LEAVES, summary  # each leaf's slice + apply_updates
    assert len(bodies) < LEAVES // 4, summary


def test_constant_offsets_would_give_one_kernel_per_leaf(monkeypatch: pytest.MonkeyPatch) -> None:
    # The control for the test above: without the opaque offsets XLA folds each slice's start
    # into its kernel, and the count of distinct bodies grows with the number of leaves.
    monkeypatch.setattr(flatten_module, "_opaque_offsets", lambda offsets, witness: list(offsets))
    assert len(adam_step_fusions()) >= LEAVES


# --- Flax: the models and train steps of tests/integration/test_flax.py -------------------------
# A whole train step lets XLA fuse the gradient's arithmetic into the per-leaf update kernels and
# rewrite across them; flatten's concatenation stops that, so only rounding may differ.


def test_linen_train_state() -> None:
    flat, losses = flax_tests.train_linen(
        flax_tests.create_state(optkit.flatten(optkit.adam(1e-2))), steps=STEPS
    )
    reference, _ = flax_tests.train_linen(flax_tests.create_state(optkit.adam(1e-2)), steps=STEPS)
    assert isinstance(flat.opt_state, optkit.FlattenState)
    assert_close(flat.params, reference.params)
    assert losses[-1] < losses[0]


def test_nnx_optimizer() -> None:
    def run(tx: optkit.GradientTransformation) -> tuple[Tree, Tree, list[float]]:
        model, optimizer = flax_tests.make_nnx(tx)
        losses = flax_tests.train_nnx(model, optimizer, steps=STEPS)
        return flax_tests.params_of(model), nnx.as_pure(optimizer.opt_state), losses

    flat_params, flat_state, losses = run(optkit.flatten(optkit.adamw(1e-2)))
    mu = find_state(flat_state, optkit.ScaleByAdamState).mu
    assert {name: v.shape for name, v in mu.items()} == {"float32": (8 * 32 + 32 + 32 * 3 + 3,)}
    assert_close(flat_params, run(optkit.adamw(1e-2))[0])
    assert losses[-1] < losses[0]


def test_value_fn_reaches_the_inner_transform_as_a_loss_of_the_flat_vectors() -> None:
    """optax's ``value_fn`` extra argument is a function of the params; inside flatten the inner
    transform's params are the flat vectors, so it gets the same loss of those (optkit.lbfgs
    evaluates it). It compares equal from update to update, so compiled programs keyed on it
    are reused."""
    seen = []

    def update(updates, state, params=None, *, value_fn=None, **extra_args):
        seen.append((value_fn, value_fn(params)))
        return updates, state

    tx = optkit.flatten(optkit.GradientTransformation(lambda params: optkit.EmptyState(), update))
    params = mixed_tree()
    state = tx.init(params)
    for _ in range(2):
        tx.update(grad_fn(params), state, params, value_fn=loss)
    (first, value), (second, _) = seen
    assert first == second and hash(first) == hash(second)
    np.testing.assert_allclose(value, loss(params), rtol=1e-12)
