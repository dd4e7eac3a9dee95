"""Pytree helpers shared by every transform: path names, structure checks, state buffers."""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

_MAX_LISTED = 5


def _key_name(key: Any) -> str:
    for attribute in ("key", "idx", "name"):
        if hasattr(key, attribute):
            return str(getattr(key, attribute))
    return str(key)


def path_str(path: Sequence[Any]) -> str:
    """Join a jax key path into the ``/``-separated string optkit uses in messages and selectors.

    Dict keys, sequence indices and attribute names each become one segment:
    ``{"params": {"Dense_0": {"bias": b}}}`` gives ``params/Dense_0/bias`` for ``b``, and
    ``[w, {"b": b}]`` gives ``0`` and ``1/b``.
    """
    return "/".join(_key_name(k) for k in path) or "<root>"


def is_nnx_variable(node: Any) -> bool:
    """Whether ``node`` is a Flax nnx ``Variable`` (checked by name: optkit does not need flax)."""
    return any(
        cls.__name__ == "Variable" and cls.__module__.startswith("flax.nnx")
        for cls in type(node).__mro__
    )


def leaves_with_paths(tree: Any) -> list[tuple[str, Any]]:
    """The leaves of ``tree`` paired with their path strings (``None`` counts as no leaf).

    An nnx ``Variable`` holding one array is named by its own path, so a leaf of
    ``nnx.state(model, nnx.Param)`` reads ``l1/bias``, as in the module, not ``l1/bias/value``.
    """
    pairs = []
    for path, node in jax.tree_util.tree_leaves_with_path(tree, is_leaf=is_nnx_variable):
        if not is_nnx_variable(node):
            pairs.append((path_str(path), node))
            continue
        inner = jax.tree_util.tree_leaves_with_path(node)
        for inner_path, leaf in inner:
            pairs.append((path_str(path if len(inner) == 1 else (*path, *inner_path)), leaf))
    return pairs


def listed(paths: Sequence[str]) -> str:
    """The first few paths, quoted, for an error message."""
    shown = ", ".join(repr(p) for p in paths[:_MAX_LISTED])
    return shown + (f" and {len(paths) - _MAX_LISTED} more" if len(paths) > _MAX_LISTED else "")


def check_match(
    expected: Any, actual: Any, where: str, expected_name: str, actual_name: str
) -> None:
    """Raise ``ValueError`` unless the two trees have the same structure and leaf shapes.

    Runs at trace time on static information only, so it costs nothing inside a compiled step.
    The message names the paths that are missing, extra or differently shaped.
    """
    expected_def = jax.tree.structure(expected)
    actual_def = jax.tree.structure(actual)
    if expected_def != actual_def:
        expected_paths = [p for p, _ in leaves_with_paths(expected)]
        actual_paths = [p for p, _ in leaves_with_paths(actual)]
        missing = [p for p in expected_paths if p not in set(actual_paths)]
        extra = [p for p in actual_paths if p not in set(expected_paths)]
        details = []
        if missing:
            details.append(f"missing from {actual_name}: {listed(missing)}")
        if extra:
            details.append(f"not in {expected_name}: {listed(extra)}")
        if not details:
            details.append(f"{expected_name} is {expected_def}, {actual_name} is {actual_def}")
        raise ValueError(
            f"{where}: the {actual_name} tree does not match the {expected_name} tree; "
            + "; ".join(details)
            + "."
        )
    for (path, e), (_, a) in zip(
        leaves_with_paths(expected), leaves_with_paths(actual), strict=True
    ):
        e_shape, a_shape = np.shape(e), np.shape(a)
        if e_shape != a_shape:
            raise ValueError(
                f"{where}: leaf {path!r} has shape {a_shape} in {actual_name} but {e_shape} in "
                f"{expected_name}."
            )


def zeros_like(params: Any, dtype: Any = None) -> Any:
    """A tree of zeros shaped like ``params``, in each leaf's dtype unless ``dtype`` is given.

    Every optimizer-state buffer is made here, so how state is placed lives in one spot.
    """
    return full_like(params, 0, dtype)


def is_committed(x: Any) -> bool:
    """Whether ``x`` is a concrete JAX array pinned to its devices (not a tracer, not default)."""
    return isinstance(x, jax.Array) and not isinstance(x, jax.core.Tracer) and x.committed


def full_like(params: Any, value: Any, dtype: Any = None) -> Any:
    """A tree filled with ``value`` shaped like ``params`` (see :func:`zeros_like`).

    Each buffer keeps a (never taken) data dependency on its param. Under ``jax.jit`` a plain
    constant depends on nothing, so XLA would put it on one device; with the dependency it
    inherits the param's sharding, and ``jax.jit(tx.init)`` of a model-sharded network returns
    state sharded the same way instead of gathering it onto device 0.
    """

    def fill(p: jax.Array) -> jax.Array:
        if not isinstance(p, jax.core.Tracer):
            # Eager: place the buffer where the param is, without an extra pass over it. Only a
            # committed param pins its buffer: an uncommitted one (the default placement) must
            # give uncommitted state, or the first jitted step would compile twice.
            device = p.sharding if is_committed(p) else None
            return jnp.full_like(p, value, dtype=dtype, device=device)
        filled = jnp.full_like(p, value, dtype=dtype)
        return jnp.where(False, p.astype(filled.dtype), filled)

    return jax.tree.map(fill, params)


def reduced_zeros(param: jax.Array, axis: int) -> jax.Array:
    """Zeros shaped like ``param`` with ``axis`` reduced to size 1, in the param's dtype: the
    buffer of a statistic taken over that axis (Adafactor's row and column second moments).

    Placed like the param along its other axes and replicated along ``axis`` (a size-1 axis
    cannot be split): eagerly from a committed param's sharding; under ``jit`` through a (never
    taken) data dependency on a one-wide slice of the param, which sharding propagation places
    that way without any collective (see :func:`full_like`).
    """
    axis = axis % param.ndim
    shape = (*param.shape[:axis], 1, *param.shape[axis + 1 :])

    def traced(p: jax.Array) -> jax.Array:
        zeros = jnp.zeros(shape, p.dtype)
        return jnp.where(False, jax.lax.slice_in_dim(p, 0, 1, axis=axis), zeros)

    if isinstance(param, jax.core.Tracer):
        return traced(param)
    if not is_committed(param):
        return jnp.zeros(shape, param.dtype)
    sharding = param.sharding
    if isinstance(sharding, NamedSharding):
        spec = list(sharding.spec) + [None] * (param.ndim - len(sharding.spec))
        spec[axis] = None
        placed = NamedSharding(
            sharding.mesh, PartitionSpec(*spec), memory_kind=sharding.memory_kind
        )
        return jnp.zeros(shape, param.dtype, device=placed)
    if len(sharding.device_set) == 1:
        return jnp.zeros(shape, param.dtype, device=sharding)
    return jax.jit(traced)(param)


_FLATTENED: contextvars.ContextVar[bool] = contextvars.ContextVar("optkit_flattened", default=False)


@contextlib.contextmanager
def flattened_leaves() -> Iterator[None]:
    """Mark the trees that transforms see inside as flat vectors standing in for the params'
    leaves (``optkit.flatten`` runs its inner transform in this context)."""
    token = _FLATTENED.set(True)
    try:
        yield
    finally:
        _FLATTENED.reset(token)


def require_own_leaves(where: str) -> None:
    """Fail inside ``optkit.flatten``: for transforms whose math depends on each leaf's shape
    (row and column statistics, per-leaf norms), which a flat vector per dtype would silently
    change."""
    if _FLATTENED.get():
        raise ValueError(
            f"{where} cannot run inside optkit.flatten: its math depends on each leaf's shape "
            "(per-leaf norms, row and column statistics), and flatten would hand it one flat "
            "vector per dtype instead, silently changing the result. Use it without flatten."
        )


def cast_like(value: jax.Array, reference: jax.Array) -> jax.Array:
    """Cast a computed buffer back to the dtype it is stored in, only when they differ.

    Keeps state dtypes stable across steps (bfloat16 state stays bfloat16 when a float32
    hyperparameter enters the arithmetic) without emitting a convert when nothing changes.
    """
    return value if value.dtype == reference.dtype else value.astype(reference.dtype)


def broadcast_prefix(prefix: Any, tree: Any, where: str, what: str) -> Any:
    """Repeat each leaf of ``prefix`` over the matching subtree of ``tree``.

    A mask or label tree may stop early: ``{"encoder": False, "head": True}`` covers every leaf
    under ``encoder`` and ``head``. The result has exactly ``tree``'s structure.
    """
    try:
        return jax.tree.map(lambda value, sub: jax.tree.map(lambda _: value, sub), prefix, tree)
    except ValueError as error:
        raise ValueError(
            f"{where}: the {what} must have the params' structure, or a prefix of it: {error}"
        ) from None


def resolve_mask(mask: Any, tree: Any, where: str) -> Any:
    """A tree of Python bools with ``tree``'s structure, from a mask, a prefix of one, or a
    function of ``tree`` returning either."""
    full = broadcast_prefix(mask(tree) if callable(mask) else mask, tree, where, "mask")
    for path, leaf in leaves_with_paths(full):
        if not isinstance(leaf, bool | np.bool_):
            raise TypeError(
                f"{where}: mask entry {path!r} is {type(leaf).__name__}, expected a Python bool "
                "(the mask decides at trace time which leaves are selected)."
            )
    return jax.tree.map(bool, full)


def _replicated_placement(params: Any) -> jax.sharding.Sharding | None:
    """A replicated sharding over the devices of the first committed param, if there is one."""
    for leaf in jax.tree.leaves(params):
        if is_committed(leaf):
            sharding = leaf.sharding
            if isinstance(sharding, NamedSharding):
                return NamedSharding(sharding.mesh, PartitionSpec())
            return sharding if len(sharding.device_set) == 1 else None
    return None


def place_scalars(scalars: Any, params: Any) -> Any:
    """Put eagerly built state scalars (counts, hyperparameters) next to committed params.

    Otherwise they would sit uncommitted on the default device while the buffers follow the
    params, and the first jitted step would see other input shardings on its second call and
    compile twice. Under ``jit`` (traced params) and for uncommitted params nothing changes.
    """
    placement = _replicated_placement(params)
    return scalars if placement is None else jax.device_put(scalars, placement)


def states_of(tree: Any, state_type: type) -> list[Any]:
    """Every node of ``state_type`` in ``tree`` (an optimizer state), in order, including those
    nested in another's fields (a wrapper around a wrapper of the same kind).

    The accessors that find a wrapper's state wherever it sits (``loss_scale``,
    ``optimizer_stepped``, ``get_averaged_params``, ...) look through chains, param groups,
    ``inject_hyperparams`` and the other wrappers with this one walk.
    """
    is_state = lambda node: isinstance(node, state_type)
    found = []
    for node in jax.tree.leaves(tree, is_leaf=is_state):
        if is_state(node):
            found.append(node)
            found.extend(states_of(tuple(node), state_type))
    return found


def only_state(
    tree: Any, state_type: type, *, where: str, what: str, if_none: str, if_several: str
) -> Any:
    """The one node of ``state_type`` in ``tree`` (see :func:`states_of`).

    Raises a ValueError from ``where`` when there is none (``if_none`` says how to get one) or
    several (``if_several`` follows the count: how to pick one).
    """
    found = states_of(tree, state_type)
    if len(found) == 1:
        return found[0]
    hint = f"it holds none; {if_none}" if not found else f"it holds {len(found)}{if_several}"
    raise ValueError(f"{where}: the state must hold one {what} state; {hint}.")
