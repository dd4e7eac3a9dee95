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


def _is_none(x: Any) -> bool:
    return x is None


def matched_rows(
    expected: Any, actual: Any, where: str, expected_name: str, actual_name: str
) -> list[tuple[str, Any, Any]]:
    """The leaves of two trees side by side, ``None`` counting as a leaf on either side:
    ``(path, expected_leaf, actual_leaf)`` in flattening order.

    For the functions that let ``None`` stand for "nothing here" (optax's convention for frozen
    or absent entries). Raises like :func:`check_match` when the structures differ, or when two
    leaves that are both present differ in shape.
    """
    treedef = jax.tree.structure(expected, is_leaf=_is_none)
    if jax.tree.structure(actual, is_leaf=_is_none) != treedef:
        check_match(expected, actual, where, expected_name, actual_name)
        raise ValueError(
            f"{where}: the {actual_name} tree does not match the {expected_name} tree: "
            f"{expected_name} is {treedef}, {actual_name} is "
            f"{jax.tree.structure(actual, is_leaf=_is_none)}."
        )
    paths = [path_str(path) for path, _ in jax.tree_util.tree_leaves_with_path(expected, _is_none)]
    rows = list(
        zip(paths, treedef.flatten_up_to(expected), treedef.flatten_up_to(actual), strict=True)
    )
    for path, e, a in rows:
        if e is not None and a is not None and np.shape(e) != np.shape(a):
            raise ValueError(
                f"{where}: leaf {path!r} has shape {np.shape(a)} in {actual_name} but "
                f"{np.shape(e)} in {expected_name}."
            )
    return rows


def _dtype_name(dtype: Any) -> str:
    return jnp.dtype(dtype).name


def as_arrays(tree: Any) -> Any:
    """``tree`` with its Python ``float`` and ``complex`` leaves as 0-d arrays of JAX's default
    dtype (float32, or float64 under ``jax_enable_x64``), as optax takes ``{"w": 0.5}``.

    Python ``bool`` and ``int`` leaves are left as they are, for :func:`check_params` and
    :func:`check_updates` to refuse with their path. ``None`` stays ``None``.
    """

    def convert(leaf: Any) -> Any:
        if isinstance(leaf, float | complex) and not isinstance(leaf, np.generic):
            return jnp.asarray(leaf, dtype=jnp.result_type(type(leaf)))
        return leaf

    return jax.tree.map(convert, tree)


def _kind(leaf: Any) -> str:
    """What a non-floating leaf is, for a message: its dtype's name, or its Python type."""
    if isinstance(leaf, bool | int) and not isinstance(leaf, np.generic):
        return f"a Python {type(leaf).__name__}"
    return _dtype_name(jnp.result_type(leaf))


def _is_floating(leaf: Any) -> bool:
    if isinstance(leaf, bool | int) and not isinstance(leaf, np.generic):
        return False
    return bool(jnp.issubdtype(jnp.result_type(leaf), jnp.inexact))


def check_params(params: Any, where: str) -> None:
    """Raise ``ValueError`` naming the first params leaf that is not floating (or complex).

    An integer or bool param cannot take a fractional step: optimizers would round every update
    away (SGD never moves) or divide by zero (Adam's NaN). Called by ``init``.
    """
    for path, leaf in leaves_with_paths(params):
        if not _is_floating(leaf):
            raise ValueError(
                f"{where}: params leaf {path!r} is {_kind(leaf)}; optimizers take floating or "
                "complex params (cast it with .astype(jnp.float32), or leave it out of the "
                "optimized tree, e.g. with optkit.masked or optkit.partition)."
            )


def refuse_complex(params: Any, where: str, reason: str) -> None:
    """Raise ``ValueError`` naming the first complex params leaf, for the transforms that, like
    their torch counterparts, have no complex version (``reason`` says why)."""
    for path, leaf in leaves_with_paths(params):
        if jnp.issubdtype(jnp.result_type(leaf), jnp.complexfloating):
            raise ValueError(
                f"{where}: params leaf {path!r} is {_kind(leaf)}; {reason} Optimize its real "
                "and imaginary parts as two real leaves instead."
            )


def _is_weak(leaf: Any) -> bool:
    """Whether ``leaf`` is weakly typed (a Python number, or an array made from one): it takes
    the dtype of what it meets, as in JAX's own promotion."""
    if isinstance(leaf, float | complex) and not isinstance(leaf, np.generic):
        return True
    typeof = getattr(jax, "typeof", None) or jax.core.get_aval
    return isinstance(leaf, jax.Array) and bool(getattr(typeof(leaf), "weak_type", False))


def promoted_update(path: str, reference: Any, update: Any, where: str, reference_name: str) -> Any:
    """``update`` in ``reference``'s dtype, or a ValueError when that would change its value."""
    if not _is_floating(update):
        raise ValueError(
            f"{where}: updates leaf {path!r} is {_kind(update)}; gradients must be floating or "
            "complex (an integer gradient would be truncated)."
        )
    if not _is_floating(reference):
        raise ValueError(
            f"{where}: {reference_name} leaf {path!r} is {_kind(reference)}; optimizer state "
            "must be floating or complex."
        )
    target = jnp.result_type(reference)
    dtype = jnp.result_type(update)
    if dtype == target:
        return update
    if _is_weak(update) or jnp.promote_types(dtype, target) == target:
        # A lower precision (float16 on float32, float32 on complex64): exact, so the math runs
        # in the state's precision (float16 gradients squared in float16 overflow at 256).
        return jnp.asarray(update).astype(target)
    if jnp.issubdtype(dtype, jnp.complexfloating) and not jnp.issubdtype(
        target, jnp.complexfloating
    ):
        problem = "the imaginary part would be dropped"
    else:
        problem = (
            "optkit computes each update in the params' dtype and does not round gradients "
            "down silently (torch refuses a gradient whose dtype differs from its param's)"
        )
    raise ValueError(
        f"{where}: updates leaf {path!r} is {_dtype_name(dtype)} but the {reference_name} leaf "
        f"is {_dtype_name(target)}; {problem}. Cast the gradients to the params' dtype, or "
        "keep the params in the wider dtype."
    )


def check_updates(
    reference: Any, updates: Any, where: str, reference_name: str = "optimizer state"
) -> Any:
    """:func:`check_match` of ``updates`` against ``reference`` (the params, or a state buffer in
    their dtype), then the dtype rules; returns the updates ready for the math.

    Python float leaves become 0-d arrays. An update of a lower precision than its reference
    leaf (float16 or bfloat16 on float32, float32 on float64 or complex64) or weakly typed is
    promoted to the reference's dtype, so the update is computed in the params' dtype. Integer
    and bool updates, updates of a wider or incompatible dtype (float64 on float32, complex on
    real) and non-floating references are a ``ValueError`` naming the leaf. Runs at trace time
    on static information: inside ``jit`` it costs a convert only where a leaf is promoted.
    """
    updates = as_arrays(updates)
    check_match(reference, updates, where, reference_name, "updates")
    pairs = zip(leaves_with_paths(reference), leaves_with_paths(updates), strict=True)
    promoted = [
        promoted_update(path, ref, update, where, reference_name)
        for (path, ref), (_, update) in pairs
    ]
    return jax.tree.unflatten(jax.tree.structure(updates), promoted)


def check_floating(updates: Any, where: str) -> Any:
    """``updates`` with Python float leaves as 0-d arrays, or a ``ValueError`` naming the first
    integer or bool leaf: for the transforms that have no params or state to promote against
    (scaling, clipping, wrappers)."""
    updates = as_arrays(updates)
    for path, leaf in leaves_with_paths(updates):
        if not _is_floating(leaf):
            raise ValueError(
                f"{where}: updates leaf {path!r} is {_kind(leaf)}; gradients must be floating "
                "or complex (an integer gradient would be truncated)."
            )
    return updates


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
        target = jnp.result_type(p) if dtype is None else jnp.dtype(dtype)
        # A complex buffer is a pair of real ones, as torch's view_as_real: a real value fills
        # both parts (torch's Adagrad and Rprop start from complex(value, value)).
        value_of_p = _both_parts(value) if jnp.issubdtype(target, jnp.complexfloating) else value
        if not isinstance(p, jax.core.Tracer):
            # Eager: place the buffer where the param is, without an extra pass over it. Only a
            # committed param pins its buffer: an uncommitted one (the default placement) must
            # give uncommitted state, or the first jitted step would compile twice.
            device = p.sharding if is_committed(p) else None
            return jnp.full_like(p, value_of_p, dtype=dtype, device=device)
        filled = jnp.full_like(p, value_of_p, dtype=dtype)
        return jnp.where(False, p.astype(filled.dtype), filled)

    return jax.tree.map(fill, params)


def _both_parts(value: Any) -> Any:
    """``value + value * 1j`` for a real ``value`` (a number or a scalar array)."""
    if isinstance(value, complex) or jnp.iscomplexobj(value):
        return value
    if isinstance(value, int | float | np.generic):
        return complex(value, value)
    return jax.lax.complex(value, value)


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


def mask_is_function(mask: Any) -> bool:
    """Whether ``mask`` is a function of the params rather than a mask tree.

    A callable pytree (an equinox ``Module`` holding bools, a registered dataclass with
    ``__call__``) is a mask tree: it is a function only when every leaf of it is callable, which
    is true of a plain function (its own single leaf). optax decides the same way.
    """
    if not callable(mask):
        return False
    leaves = jax.tree.leaves(mask)
    return not leaves or all(callable(leaf) for leaf in leaves)


def _mask_value(value: Any, path: str, where: str) -> bool:
    """One mask entry as a Python bool: a Python or NumPy bool, a 0/1 integer, or a concrete
    0-d JAX or NumPy array of either."""
    concrete = isinstance(value, jax.Array | np.ndarray) and not isinstance(value, jax.core.Tracer)
    if (
        concrete
        and np.ndim(value) == 0
        and (np.issubdtype(value.dtype, np.bool_) or np.issubdtype(value.dtype, np.integer))
    ):
        value = value.item()
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer):
        if value in (0, 1):
            return bool(value)
        raise ValueError(
            f"{where}: mask entry {path!r} is {value!r}, expected a bool (or 0/1): a mask only "
            "selects leaves, it does not weight them."
        )
    shown = type(value).__name__
    if isinstance(value, jax.Array | np.ndarray):
        shown = f"an array of shape {np.shape(value)} and dtype {value.dtype}"
        if isinstance(value, jax.core.Tracer):
            shown = "a traced value"
    raise TypeError(
        f"{where}: mask entry {path!r} is {shown}, expected a bool (True, False, 0 or 1, a NumPy "
        "or JAX bool): the mask decides at trace time which leaves are selected."
    )


def resolve_mask(mask: Any, tree: Any, where: str) -> Any:
    """A tree of Python bools with ``tree``'s structure, from a mask, a prefix of one, or a
    function of ``tree`` returning either (see :func:`mask_is_function`).

    Entries may be Python or NumPy bools, 0/1 integers, or concrete 0-d JAX/NumPy bool or
    integer arrays; anything else is an error naming the entry.
    """
    given = mask(tree) if mask_is_function(mask) else mask
    full = broadcast_prefix(given, tree, where, "mask")
    values = [_mask_value(leaf, path, where) for path, leaf in leaves_with_paths(full)]
    return jax.tree.structure(full).unflatten(values)


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
