"""Refuse a state that another transform made, naming the expected and the received state types.

``sgd(0.1, momentum=0.9).update(grads, adam(0.1).init(params), params)`` would otherwise fail deep
inside with an ``AttributeError``, or, when the two states happen to share a layout (an amsgrad
state given to a plain Adam), silently drop or misread buffers. :func:`checking_state` wraps a
transform's ``update`` so the state's pytree structure is compared, once per input signature and
at trace time only, with the structure its ``init`` returns for the same params
(``jax.eval_shape``: nothing is computed). Every torch-named optimizer,
:func:`optkit.inject_hyperparams` and :func:`optkit.param_groups` check this way; the outermost
check covers the whole state, so nested ones are skipped.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from optkit import _tree

_CHECKED: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "optkit_state_checked", default=False
)


def _is_namedtuple(node: Any) -> bool:
    return isinstance(node, tuple) and hasattr(type(node), "_fields")


def _is_leaf(node: Any) -> bool:
    return node is not None and jax.tree.structure(node).num_nodes == 1


def _structure(tree: Any) -> Any:
    # A Flax nnx Variable holding a state array counts as that array.
    return jax.tree.structure(tree, is_leaf=_tree.is_nnx_variable)


def render(node: Any) -> str:
    """A state's types, one level into tuples: ``(ScaleByAdamState, EmptyState)``."""
    if _is_namedtuple(node) or not isinstance(node, tuple):
        return _kind(node)
    return "(" + ", ".join(_kind(child) for child in node) + ")"


def _kind(node: Any) -> str:
    if node is None:
        return "None"
    if _is_namedtuple(node):
        return type(node).__name__
    if isinstance(node, tuple | list):
        return f"a {type(node).__name__} of {len(node)}"
    if isinstance(node, dict):
        return f"a dict with keys {sorted(map(str, node))}"
    if _is_leaf(node):
        return "an array"
    return type(node).__name__


def _children(node: Any) -> list[tuple[str, Any]] | None:
    if _is_namedtuple(node):
        return list(zip(type(node)._fields, node, strict=True))
    if isinstance(node, tuple | list):
        return [(str(i), child) for i, child in enumerate(node)]
    if isinstance(node, dict):
        return [(str(key), node[key]) for key in sorted(node, key=str)]
    return None


def first_difference(expected: Any, got: Any, path: str = "") -> tuple[str, Any, Any] | None:
    """The first node (path, expected, got) where two state trees differ in type or layout."""
    if _is_leaf(expected) and _is_leaf(got):
        return None
    if type(expected) is not type(got):
        return path, expected, got
    expected_children, got_children = _children(expected), _children(got)
    if expected_children is None or got_children is None:
        return None if _structure(expected) == _structure(got) else (path, expected, got)
    if [name for name, _ in expected_children] != [name for name, _ in got_children]:
        return path, expected, got
    for (name, e), (_, g) in zip(expected_children, got_children, strict=True):
        found = first_difference(e, g, f"{path}/{name}" if path else name)
        if found is not None:
            return found
    return None


def mismatch(expected: Any, got: Any, where: str) -> str | None:
    """The error message when ``got`` does not have ``expected``'s structure, else ``None``."""
    if _structure(expected) == _structure(got):
        return None
    message = f"{where}: the state is not this optimizer's: expected {render(expected)}, got "
    message += render(got)
    found = first_difference(expected, got)
    if found is not None and found[0]:
        path, e, g = found
        message += f"; at state path {path!r}: expected {_kind(e)}, got {_kind(g)}"
    return (
        message + ". Pass the state this optimizer's init returned; after changing the optimizer "
        "(another class, amsgrad, momentum, a chain), init a new state or convert the old one."
    )


def _signature(tree: Any) -> tuple[Any, ...]:
    leaves, treedef = jax.tree.flatten(tree, is_leaf=_tree.is_nnx_variable)
    return (treedef, *((np.shape(x), str(getattr(x, "dtype", type(x)))) for x in leaves))


def checking_state(
    init: Callable[..., Any], update: Callable[..., Any], where: str
) -> Callable[..., Any]:
    """``update``, first raising a ValueError (see :func:`mismatch`) when the state it gets does
    not have the structure ``init`` gives for the params (or, without params, the updates)."""
    expected_by_input: dict[tuple[Any, ...], Any] = {}

    def checked(updates: Any, state: Any, params: Any = None, **extra_args: Any) -> Any:
        if _CHECKED.get():
            return update(updates, state, params, **extra_args)
        reference = updates if params is None else params
        key = _signature(reference)
        if key not in expected_by_input:
            try:
                expected_by_input[key] = jax.eval_shape(init, reference)
            except Exception:  # the update itself reports bad inputs
                expected_by_input[key] = None
        expected = expected_by_input[key]
        if expected is not None:
            message = mismatch(expected, state, where)
            if message is not None:
                raise ValueError(message)
        token = _CHECKED.set(True)
        try:
            return update(updates, state, params, **extra_args)
        finally:
            _CHECKED.reset(token)

    return checked
