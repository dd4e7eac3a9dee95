"""Run a transform on one flat vector per dtype: the multi-tensor path for many small leaves.

XLA's compile time grows with the number of HLO instructions and outputs per leaf. A model with
thousands of small leaves pays for every moment buffer of every leaf: Adam writes three outputs
per leaf (param, first and second moment). :func:`flatten` keeps the optimizer state as one
vector per dtype, so the whole update is a handful of large elementwise kernels, and each leaf
only reads its slice of the result.

Two details make that cheap to compile, where ``optax.flatten`` is slower than no flattening:

* the slices are ``dynamic_slice`` at offsets XLA cannot constant-fold (they pass through one
  order-preserving ``sort``), so every leaf's kernel is the same program and XLA compiles it
  once instead of once per leaf;
* gradients are concatenated in one instruction, and the params only when the inner transform
  reads them (otherwise XLA removes the concatenation).

The arithmetic is the inner transform's, element by element: under ``jit`` the results equal the
per-leaf path's bitwise for leaves of more than one element, and within a few ulp otherwise
(XLA rewrites a division by a scalar differently for one-element arrays, fuses across the
per-leaf kernels but not across the flat vectors, and ``clip_by_global_norm`` sums in another
order). docs/performance.md lists the cases; the parity suite runs on both paths.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from optkit import _tree, _validation
from optkit._base import (
    GradientTransformation,
    OptState,
    Params,
    Updates,
    check_transform,
    takes_extra_args,
)

DEFAULT_MAX_FLAT_SIZE = 2**16
_MAX_OFFSET = 2**31 - 1  # the largest start an int32 offset holds


class FlattenState(NamedTuple):
    """The inner transform's state over ``{group: vector}``: one vector per dtype for the small
    leaves, keyed by the dtype's name, and one per large leaf, keyed by its path (``#``
    appended while that name is taken)."""

    inner_state: OptState


class _Layout(NamedTuple):
    """Where each leaf lives: its group, its offset in that group's vector, its shape."""

    groups: dict[str, list[int]]  # group name -> leaf indices, in tree order
    offsets: list[int]  # per leaf: start in its group's vector
    shapes: list[tuple[int, ...]]
    whole: frozenset[str]  # groups of one large leaf, kept in the leaf's own shape


def _layout(tree: Any, max_flat_size: int | None) -> tuple[list[Any], _Layout]:
    """The leaves of ``tree`` and their groups: small leaves share their dtype's vector, a leaf
    of more than ``max_flat_size`` elements is a group of its own, kept whole."""
    with_paths = jax.tree_util.tree_flatten_with_path(tree)[0]
    leaves = [leaf for _, leaf in with_paths]
    sizes = [math.prod(np.shape(leaf)) for leaf in leaves]
    dtype_names = [jnp.dtype(leaf.dtype).name for leaf in leaves]

    large = [max_flat_size is not None and size > max_flat_size for size in sizes]

    # A large leaf's key is its path, made unique against every dtype group and earlier key.
    taken = {name for name, big in zip(dtype_names, large, strict=True) if not big}
    names = []
    for (path, _), big, dtype_name in zip(with_paths, large, dtype_names, strict=True):
        if not big:
            names.append(dtype_name)
            continue
        name = _tree.path_str(path)
        while name in taken:
            name += "#"
        taken.add(name)
        names.append(name)

    groups: dict[str, list[int]] = {}
    offsets = []
    totals: dict[str, int] = {}
    for index, (name, size) in enumerate(zip(names, sizes, strict=True)):
        groups.setdefault(name, []).append(index)
        offsets.append(totals.get(name, 0))
        totals[name] = totals.get(name, 0) + size
    for name, total in totals.items():
        if len(groups[name]) > 1 and total > _MAX_OFFSET:
            raise ValueError(
                f"flatten: the {name} leaves hold {total} elements together, more than the "
                f"{_MAX_OFFSET} that int32 offsets address; pass a smaller max_flat_size so "
                "that large leaves keep groups of their own."
            )
    whole = frozenset(name for name, big in zip(names, large, strict=True) if big)
    shapes = [tuple(np.shape(leaf)) for leaf in leaves]
    return leaves, _Layout(groups, offsets, shapes, whole)


def _check_dtypes(updates: Any, params: Any) -> None:
    """Each param must share its update's dtype: the two are grouped by the update's dtype."""
    pairs = zip(jax.tree.leaves(updates), jax.tree.leaves(params), strict=True)
    if all(jnp.dtype(u.dtype) == jnp.dtype(p.dtype) for u, p in pairs):
        return
    for (path, u), (_, p) in zip(
        _tree.leaves_with_paths(updates), _tree.leaves_with_paths(params), strict=True
    ):
        if jnp.dtype(u.dtype) != jnp.dtype(p.dtype):
            raise ValueError(
                f"flatten: leaf {path!r} is {jnp.dtype(p.dtype).name} in params but "
                f"{jnp.dtype(u.dtype).name} in updates; flatten groups leaves by dtype, so "
                "each update must have its param's dtype (cast the gradients first)."
            )


def _concatenate(leaves: Sequence[Any], layout: _Layout) -> dict[str, jax.Array]:
    flat = {}
    for name, indices in layout.groups.items():
        if name in layout.whole:
            # Kept in its shape, not raveled: raveled, XLA ran the leaf's kernels on vectors and
            # copied each new param into its donated buffer (3x slower AdamW transformer steps).
            flat[name] = leaves[indices[0]]
            continue
        parts = [jnp.ravel(leaves[i]) for i in indices]
        flat[name] = parts[0] if len(parts) == 1 else jnp.concatenate(parts)
    return flat


def _opaque_offsets(offsets: Sequence[int], witness: jax.Array) -> list[jax.Array]:
    """``offsets`` as run-time int32 scalars XLA cannot fold back into constants.

    A slice at a constant offset makes each leaf's kernel a different program, compiled
    separately (about 10 ms each on CPU). A stable sort on equal keys returns its operands
    unchanged, but XLA cannot know that: the keys depend on ``witness`` (a value of the flat
    gradient), so the offsets become plain scalar buffers and every leaf's kernel is identical.
    """
    key = jnp.zeros((2,), jnp.int32) + jnp.isnan(witness).astype(jnp.int32)
    # Two different values make each operand a literal constant: a uniform array is lowered as a
    # broadcast, which XLA:CPU runs as one more kernel per leaf.
    operands = [np.array([offset, -1], np.int32) for offset in offsets]
    _, *opaque = jax.lax.sort([key, *operands], num_keys=1, is_stable=True)
    return [jax.lax.index_in_dim(o, 0, keepdims=False) for o in opaque]


def _split(flat: dict[str, jax.Array], layout: _Layout, where: str) -> list[Any]:
    """The leaves back from the flat vectors (the inverse of :func:`_concatenate`)."""
    if not isinstance(flat, dict) or set(flat) != set(layout.groups):
        got = sorted(flat) if isinstance(flat, dict) else type(flat).__name__
        raise ValueError(
            f"{where}: the inner transform returned {got}, expected a dict of arrays for the "
            f"groups {sorted(layout.groups)}."
        )
    leaves: list[Any] = [None] * len(layout.shapes)
    for name, indices in layout.groups.items():
        vector = flat[name]
        if name in layout.whole:
            leaves[indices[0]] = vector
            continue
        if len(indices) == 1 or vector.size == 0:
            # Static offsets: one leaf is a reshape, empty leaves are empty slices.
            starts: list[Any] = [layout.offsets[i] for i in indices]
        else:
            starts = _opaque_offsets([layout.offsets[i] for i in indices], vector[0])
        for index, start in zip(indices, starts, strict=True):
            shape = layout.shapes[index]
            piece = jax.lax.dynamic_slice(
                vector, (start,), (math.prod(shape),), allow_negative_indices=False
            )
            leaves[index] = piece.reshape(shape)
    return leaves


class _OnFlatVectors:
    """A loss of the params tree (optax's ``value_fn`` extra argument) as a loss of the flat
    vectors. Equal for the same loss and layout, so a compiled program keyed on it (an eager
    ``lbfgs`` update) is reused from one update to the next."""

    def __init__(self, value_fn: Callable[[Params], Any], treedef: Any, layout: _Layout) -> None:
        self.value_fn, self.treedef, self.layout = value_fn, treedef, layout

    def __call__(self, flat: dict[str, jax.Array]) -> Any:
        leaves = _split(flat, self.layout, "flatten: value_fn")
        return self.value_fn(jax.tree.unflatten(self.treedef, leaves))

    def _key(self) -> tuple[Any, ...]:
        return (self.value_fn, self.treedef, self.layout)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _OnFlatVectors) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash((self.value_fn, self.treedef))


def flatten(
    inner: GradientTransformation, *, max_flat_size: int | None = DEFAULT_MAX_FLAT_SIZE
) -> GradientTransformation:
    """Apply ``inner`` to one flat vector per dtype instead of leaf by leaf.

    The state is ``inner``'s state over ``{group: vector}``: the leaves of at most
    ``max_flat_size`` elements are concatenated in tree order into one vector per dtype (key
    ``"float32"`` for float32 leaves), and each larger leaf is a group of its own, keyed by its
    path and kept in its own shape (no copy: concatenating a large leaf would cost a pass over
    its bytes and save no compile time, and XLA compiles it as on the per-leaf path). Updates
    come back with the original tree's structure and shapes, so :func:`optkit.apply_updates`,
    ``optax.chain`` and Flax's ``TrainState`` use it unchanged. A ``value_fn=`` extra argument
    (the loss as a function of the params, which :func:`optkit.lbfgs` evaluates) reaches the
    inner transform as the same loss of the flat vectors.

    When to use it: Adam-family optimizers over many small leaves on one device. On the CPU
    benchmarks (1000 and 2000 leaves of 4000 floats) an AdamW or Adam train step compiled in
    0.5-0.66x optax's time, where the per-leaf path takes 0.8-1.0x optax's; for SGD with
    momentum it compiled slower than the per-leaf path, and steps were up to 1.9x slower at 2000
    leaves (docs/performance.md has the table). The per-leaf path stays the default because it
    keeps torch's layout and its state mirrors the params: each moment buffer takes its
    param's sharding, and per-leaf selectors (:func:`optkit.param_groups`,
    :func:`optkit.masked`) see the params' tree. Put those outside ``flatten``:
    ``param_groups(lambda **kw: flatten(adamw(**kw)), groups, ...)``. For params sharded
    across devices keep the per-leaf path: concatenating sharded leaves gathers them.

    Only elementwise math keeps its meaning on a flat vector. Transforms whose math depends on
    each leaf's shape (:func:`optkit.adafactor`, :func:`optkit.muon` and their primitives: row
    and column statistics, whole matrices, per-leaf norms) refuse to run inside ``flatten`` and
    raise a ``ValueError`` at ``init`` instead of silently computing something else.
    ``optax.flatten`` cannot tell: do not wrap them in it. :func:`optkit.lbfgs` already works on
    one vector of every param; inside ``flatten`` it gets a loss function of the flat vectors.

    Args:
        inner: the transform to run on the flat vectors (any optkit or optax transform).
        max_flat_size: leaves with more elements than this are kept whole, a group of their own
            (default ``2**16``); ``None`` concatenates every leaf.

    Returns:
        A transform with state :class:`FlattenState`.

    Raises:
        ValueError: at ``init`` or ``update``, if ``inner`` depends on each leaf's shape
            (:func:`optkit.adafactor`) or one dtype's small leaves hold more than ``2**31 - 1``
            elements together (int32 offsets); at ``update``, if a param's dtype differs from
            its update's (leaves are grouped by dtype) or the params tree does not match.

    Examples:
        >>> import jax.numpy as jnp, optkit
        >>> params = {"w": jnp.ones((2, 2)), "b": jnp.zeros(2)}
        >>> tx = optkit.flatten(optkit.adam(0.1))
        >>> state = tx.init(params)
        >>> state.inner_state[0].mu["float32"].shape
        (6,)
        >>> updates, state = tx.update(params, state, params)
        >>> updates["w"].shape, updates["b"]
        ((2, 2), Array([-0., -0.], dtype=float32))
    """
    check_transform(inner, "flatten", 0)
    if max_flat_size is not None:
        max_flat_size = _validation.positive_int("max_flat_size", max_flat_size)
    forward_extra = takes_extra_args(inner)

    def init(params: Params) -> FlattenState:
        params = _tree.as_arrays(params)
        _tree.check_params(params, "flatten")
        leaves, layout = _layout(params, max_flat_size)
        with _tree.flattened_leaves():
            return FlattenState(inner_state=inner.init(_concatenate(leaves, layout)))

    def update(
        updates: Updates, state: FlattenState, params: Params | None = None, **extra_args: Any
    ) -> tuple[Updates, FlattenState]:
        flat_params = None
        if params is not None:
            params = _tree.as_arrays(params)
            updates = _tree.check_updates(params, updates, "flatten", "params")
            _check_dtypes(updates, params)
        updates = _tree.check_floating(updates, "flatten")
        leaves, layout = _layout(updates, max_flat_size)
        treedef = jax.tree.structure(updates)
        if params is not None:
            flat_params = _concatenate(jax.tree.leaves(params), layout)
        if not forward_extra:
            extra_args = {}
        elif callable(extra_args.get("value_fn")):
            extra_args = {
                **extra_args,
                "value_fn": _OnFlatVectors(extra_args["value_fn"], treedef, layout),
            }
        with _tree.flattened_leaves():
            flat_updates, inner_state = inner.update(
                _concatenate(leaves, layout), state.inner_state, flat_params, **extra_args
            )
        new_leaves = _split(flat_updates, layout, "flatten")
        return jax.tree.unflatten(treedef, new_leaves), FlattenState(inner_state=inner_state)

    return GradientTransformation(init, update)
