"""Apply a transform to some leaves (``masked``), or each group its own (``partition``)."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from typing import Any, NamedTuple

import jax

from optkit import _state, _tree
from optkit._base import GradientTransformation, OptState, Params, Updates, takes_extra_args


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


def is_params_placeholder(params: Any) -> bool:
    """Whether ``init`` is being called by ``optax.tree.map_params`` (a.k.a.
    ``optax.tree_utils.tree_map_params``), which passes a leafless placeholder to find where the
    state holds copies of the params. There is no mask to apply to it: the placeholder goes to the
    inner ``init`` as it is, as in optax. Checked by name: optkit does not import optax."""
    cls = type(params)
    return cls.__name__ == "_ParamsPlaceholder" and cls.__module__.startswith("optax")


def _prune_extra_args(
    extra_args: dict[str, Any], updates: Updates, mask: Any, enabled: bool
) -> dict[str, Any]:
    """With ``mask_compatible_extra_args``, prune the extra arguments shaped like the updates."""
    if not enabled:
        return extra_args
    structure = jax.tree.structure(updates)
    return {
        name: _prune(value, mask) if jax.tree.structure(value) == structure else value
        for name, value in extra_args.items()
    }


# optax's private name for the same test, kept so optax's own tests run against optkit.
mask_is_function = _tree.mask_is_function


def masked(
    inner: GradientTransformation,
    mask: Any | Callable[[Params], Any],
    *,
    mask_compatible_extra_args: bool = False,
) -> GradientTransformation:
    """Apply ``inner`` to the leaves where ``mask`` is ``True``; pass the others through.

    ``inner`` is initialized on, and its state holds, only the selected leaves (the others are
    :class:`MaskedNode` placeholders), so a transform applied to a small part of a large model
    costs state for that part alone. Same semantics as ``optax.masked``: extra keyword
    arguments of ``update`` reach ``inner`` only when its ``update`` accepts them (as in
    :func:`chain`), and ``optax.tree.map_params`` works on the state.

    Args:
        inner: the transform to apply to the selected leaves.
        mask: a pytree of bools (Python, NumPy or 0-d JAX bools, or the integers 0 and 1) with
            the params' structure or a prefix of it, or a function from the params (at
            ``init``) or updates (at ``update``) to one. A callable pytree such as an equinox
            ``Module`` holding bools is a mask, not a function. Any other entry is an error
            naming it.
        mask_compatible_extra_args: also prune the extra arguments of ``update`` that have the
            updates' structure (per-leaf tags), as optax's keyword of the same name.

    Examples:
        >>> import jax.numpy as jnp, optkit
        >>> params = {"w": jnp.ones(2), "b": jnp.ones(2)}
        >>> tx = optkit.masked(optkit.scale(-0.5), {"w": True, "b": False})
        >>> updates, _ = tx.update(params, tx.init(params))
        >>> updates["w"], updates["b"]
        (Array([-0.5, -0.5], dtype=float32), Array([1., 1.], dtype=float32))
    """

    forwards_extra = takes_extra_args(inner)

    def init(params: Params) -> MaskedState:
        if is_params_placeholder(params):
            return MaskedState(inner_state=inner.init(params))
        selected = _tree.resolve_mask(mask, params, "masked")
        return MaskedState(inner_state=inner.init(_prune(params, selected)))

    def update(updates: Updates, state: MaskedState, params: Params | None = None, **extra_args):
        if params is not None:
            # Name the mismatching leaf here: pruning the params with the updates' mask would
            # fail first, with jax's structure error.
            _tree.check_match(params, updates, "masked", "params", "updates")
        selected = _tree.resolve_mask(mask, updates, "masked")
        inner_params = None if params is None else _prune(params, selected)
        if forwards_extra:
            extra = _prune_extra_args(extra_args, updates, selected, mask_compatible_extra_args)
            inner_updates, inner_state = inner.update(
                _prune(updates, selected), state.inner_state, inner_params, **extra
            )
        else:
            inner_updates, inner_state = inner.update(
                _prune(updates, selected), state.inner_state, inner_params
            )
        merged = jax.tree.map(
            lambda keep, new, old: new if keep else old,
            selected,
            inner_updates,
            updates,
            is_leaf=_is_masked,
        )
        return merged, MaskedState(inner_state=inner_state)

    return GradientTransformation(init, _state.checking_state(init, update, "masked update"))


def partition(
    transforms: Mapping[Hashable, GradientTransformation],
    param_labels: Any | Callable[[Params], Any],
    *,
    mask_compatible_extra_args: bool = False,
) -> GradientTransformation:
    """Route each leaf to the transform named by its label. Same semantics and arguments as
    ``optax.partition``: extra keyword arguments of ``update`` reach only the transforms whose
    ``update`` accepts them, and ``optax.tree.map_params`` works on the state.

    Args:
        transforms: a mapping from label to transform.
        param_labels: a pytree of labels with the params' structure (or a prefix of it), or a
            function of the params returning one. Every label must be a key of ``transforms``.
        mask_compatible_extra_args: as in :func:`masked`.

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
        given = (
            param_labels(_tree.as_arrays(tree))
            if _tree.mask_is_function(param_labels)
            else param_labels
        )
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

    def wrapped(key: Hashable, mask: Any) -> GradientTransformation:
        return masked(transforms[key], mask, mask_compatible_extra_args=mask_compatible_extra_args)

    def init(params: Params) -> PartitionState:
        if is_params_placeholder(params):
            return PartitionState({key: wrapped(key, None).init(params) for key in transforms})
        return PartitionState(
            inner_states={
                key: wrapped(key, mask).init(params) for key, mask in masks(params).items()
            }
        )

    def update(updates: Updates, state: PartitionState, params: Params | None = None, **extra_args):
        new_states = {}
        for key, mask in masks(updates).items():
            updates, new_states[key] = wrapped(key, mask).update(
                updates, state.inner_states[key], params, **extra_args
            )
        return updates, PartitionState(inner_states=new_states)

    return GradientTransformation(init, _state.checking_state(init, update, "partition update"))
