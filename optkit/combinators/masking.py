"""Apply a transform to some leaves (``masked``), or each group its own (``partition``)."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from typing import Any, NamedTuple

import jax

from optkit import _tree
from optkit._base import GradientTransformation, OptState, Params, Updates


class MaskedNode(NamedTuple):
    """Stands in for a leaf that a masked transform does not see: a pytree node with no leaves."""


class MaskedState(NamedTuple):
    """The inner transform's state, built on the selected leaves only."""

    inner_state: OptState


class PartitionState(NamedTuple):
    """One :class:`MaskedState` per label."""

    inner_states: dict[Hashable, MaskedState]


def _is_masked(x: Any) -> bool:
    return isinstance(x, MaskedNode)


def _prune(tree: Any, mask: Any) -> Any:
    """``tree`` with every unselected leaf replaced by :class:`MaskedNode`."""
    return jax.tree.map(lambda keep, leaf: leaf if keep else MaskedNode(), mask, tree)


def masked(
    inner: GradientTransformation, mask: Any | Callable[[Params], Any]
) -> GradientTransformation:
    """Apply ``inner`` to the leaves where ``mask`` is ``True``; pass the others through.

    ``inner`` is initialized on, and its state holds, only the selected leaves (the others are
    :class:`MaskedNode` placeholders), so a transform applied to a small part of a large model
    costs state for that part alone. Same semantics as ``optax.masked``.

    Args:
        inner: the transform to apply to the selected leaves.
        mask: a pytree of Python bools with the params' structure (or a prefix of it), or a
            function from the params (at ``init``) or updates (at ``update``) to one.

    Examples:
        >>> import jax.numpy as jnp, optkit
        >>> params = {"w": jnp.ones(2), "b": jnp.ones(2)}
        >>> tx = optkit.masked(optkit.scale(-0.5), {"w": True, "b": False})
        >>> updates, _ = tx.update(params, tx.init(params))
        >>> updates["w"], updates["b"]
        (Array([-0.5, -0.5], dtype=float32), Array([1., 1.], dtype=float32))
    """

    def init(params: Params) -> MaskedState:
        selected = _tree.resolve_mask(mask, params, "masked")
        return MaskedState(inner_state=inner.init(_prune(params, selected)))

    def update(updates: Updates, state: MaskedState, params: Params | None = None, **extra_args):
        if params is not None:
            # Name the mismatching leaf here: pruning the params with the updates' mask would
            # fail first, with jax's structure error.
            _tree.check_match(params, updates, "masked", "params", "updates")
        selected = _tree.resolve_mask(mask, updates, "masked")
        inner_params = None if params is None else _prune(params, selected)
        inner_updates, inner_state = inner.update(
            _prune(updates, selected), state.inner_state, inner_params, **extra_args
        )
        merged = jax.tree.map(
            lambda keep, new, old: new if keep else old,
            selected,
            inner_updates,
            updates,
            is_leaf=_is_masked,
        )
        return merged, MaskedState(inner_state=inner_state)

    return GradientTransformation(init, update)


def partition(
    transforms: Mapping[Hashable, GradientTransformation], labels: Any | Callable[[Params], Any]
) -> GradientTransformation:
    """Route each leaf to the transform named by its label. Same semantics as ``optax.partition``.

    Args:
        transforms: a mapping from label to transform.
        labels: a pytree of labels with the params' structure (or a prefix of it), or a function
            of the params returning one. Every label must be a key of ``transforms``.

    Examples:
        >>> import jax.numpy as jnp, optkit
        >>> params = {"w": jnp.ones(2), "b": jnp.ones(2)}
        >>> tx = optkit.partition(
        ...     {"fast": optkit.sgd(0.1), "frozen": optkit.scale(0.0)}, {"w": "fast", "b": "frozen"}
        ... )
        >>> updates, _ = tx.update(params, tx.init(params), params)
        >>> updates["w"], updates["b"]
        (Array([-0.1, -0.1], dtype=float32), Array([0., 0.], dtype=float32))
    """
    transforms = dict(transforms)

    def masks(tree: Any) -> dict[Hashable, Any]:
        given = labels(_tree.as_arrays(tree)) if callable(labels) else labels
        full = _tree.broadcast_prefix(given, tree, "partition", "labels")
        unknown = sorted(
            {
                f"{path} -> {label!r}"
                for path, label in _tree.leaves_with_paths(full)
                if label not in transforms
            }
        )
        if unknown:
            raise ValueError(
                f"partition: labels with no transform (known: {sorted(map(repr, transforms))}): "
                + ", ".join(unknown[:5])
            )
        return {key: jax.tree.map(lambda label, key=key: label == key, full) for key in transforms}

    def init(params: Params) -> PartitionState:
        return PartitionState(
            inner_states={
                key: masked(transforms[key], mask).init(params)
                for key, mask in masks(params).items()
            }
        )

    def update(updates: Updates, state: PartitionState, params: Params | None = None, **extra_args):
        new_states = {}
        for key, mask in masks(updates).items():
            updates, new_states[key] = masked(transforms[key], mask).update(
                updates, state.inner_states[key], params, **extra_args
            )
        return updates, PartitionState(inner_states=new_states)

    return GradientTransformation(init, update)
