"""Weight decay, coupled (L2 added to the gradient) and decoupled (AdamW's shrink)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax

from optkit import _numerics, _tree, _validation
from optkit._base import (
    GradientTransformation,
    Params,
    Scalar,
    Updates,
    require_params,
    stateless,
)
from optkit._kernel import leaf_kernel

Mask = Any | Callable[[Params], Any]
"""A pytree of bools shaped like the params (or a prefix of them), or a function of the params
returning one. ``True`` marks the leaves to decay."""


def _is_none(x: Any) -> bool:
    return x is None


@leaf_kernel
def _add_decay(update: jax.Array, param: jax.Array, *, weight_decay: Any) -> jax.Array:
    # torch's grad.add(param, alpha=weight_decay), whose alpha is rounded to a 16-bit dtype.
    return update + _numerics.rounded_scalar(weight_decay) * param


@leaf_kernel
def _add_decay_unless_half(update: jax.Array, param: jax.Array, *, weight_decay: Any) -> jax.Array:
    return update if _numerics.storing_half() else update + weight_decay * param


def _add_scaled_params(
    where: str, weight_decay: Any, mask: Mask | None, kernel: Any = _add_decay
) -> GradientTransformation:
    """``updates + weight_decay * params`` on the leaves selected by ``mask``."""
    _validation.hyperparameters(weight_decay=weight_decay)

    def decay_tree(updates: Updates, params: Params | None) -> Updates:
        params = require_params(params, where)
        if updates is None:  # optax's "no updates at all" passes through
            return None
        params = _tree.as_arrays(params)
        updates = _tree.as_arrays(updates)
        rows = _tree.matched_rows(params, updates, where, "params", "updates")
        absent = [path for path, param, update in rows if param is None and update is not None]
        if absent:
            raise ValueError(
                f"{where}: params {_tree.listed(absent)} are None but have updates: there is "
                "no weight to decay. Pass the params, or None updates for those leaves."
            )
        # Gradients in a lower precision than their param are promoted (the dtype rules).
        promoted = [
            update
            if param is None or update is None
            else _tree.promoted_update(path, param, update, where, "params")
            for path, param, update in rows
        ]
        updates = jax.tree.unflatten(jax.tree.structure(updates, is_leaf=_is_none), promoted)
        selected = iter(
            [True] * len(jax.tree.leaves(params))
            if mask is None
            else jax.tree.leaves(_tree.resolve_mask(mask, params, where))
        )
        # None updates (optax's "no update here") pass through as None.
        select = [
            param is not None and next(selected) and update is not None for _, param, update in rows
        ]
        return kernel(updates, params, select=select, weight_decay=weight_decay, is_leaf=_is_none)

    return stateless(decay_tree)


def add_l2_decay(weight_decay: Scalar, mask: Mask | None = None) -> GradientTransformation:
    r"""Add ``weight_decay * params`` to the gradient: coupled (L2) weight decay.

    .. math:: g_t \leftarrow g_t + \lambda \theta_{t-1}

    This is the ``weight_decay`` of ``torch.optim.SGD``, ``Adam``, ``Adagrad`` and ``RMSprop``: it
    goes at the start of a chain, before momentum or adaptive scaling, so the decay term is
    accumulated and rescaled with the gradient.

    Args:
        weight_decay: the coefficient :math:`\lambda \ge 0`.
        mask: which leaves to decay (a bool pytree, a prefix of one, or a function of the params
            returning one); all leaves when ``None``.

    Examples:
        >>> import jax.numpy as jnp, optkit
        >>> tx = optkit.add_l2_decay(0.1)
        >>> params = jnp.array([1.0, 2.0])
        >>> tx.update(jnp.zeros(2), tx.init(params), params)[0]
        Array([0.1, 0.2], dtype=float32)
    """
    return _add_scaled_params("add_l2_decay", weight_decay, mask)


def add_decayed_weights(weight_decay: Scalar, mask: Mask | None = None) -> GradientTransformation:
    r"""Add ``weight_decay * params`` to the *preconditioned* update: decoupled weight decay.

    Placed after an adaptive transform and before ``scale_by_learning_rate``, the final update is
    :math:`-\gamma (u_t + \lambda \theta_{t-1})`, which is torch's AdamW shrink
    :math:`\theta \leftarrow \theta (1 - \gamma \lambda)` followed by the Adam step, with the
    decay following the (scheduled) learning rate as in torch.

    Args:
        weight_decay: the coefficient :math:`\lambda \ge 0`.
        mask: which leaves to decay (a bool pytree, a prefix of one, or a function of the params
            returning one); all leaves when ``None``. Masking biases and norms out is common.

    Examples:
        >>> import jax.numpy as jnp, optkit
        >>> params = {"w": jnp.ones(2), "b": jnp.ones(2)}
        >>> tx = optkit.add_decayed_weights(0.5, mask={"w": True, "b": False})
        >>> grads = {"w": jnp.zeros(2), "b": jnp.zeros(2)}
        >>> tx.update(grads, tx.init(params), params)[0]["b"]
        Array([0., 0.], dtype=float32)
    """
    return _add_scaled_params("add_decayed_weights", weight_decay, mask)


def add_decayed_weights_unless_half(
    weight_decay: Scalar, mask: Mask | None = None
) -> GradientTransformation:
    """:func:`add_decayed_weights` on float32 and float64 leaves, the identity on float16 and
    bfloat16 leaves: for an optimizer whose preconditioner applies the decoupled decay itself
    on 16-bit leaves, rounding the shrunk param as torch's ``param.mul_(1 - lr * wd)`` does."""
    return _add_scaled_params("add_decayed_weights", weight_decay, mask, _add_decay_unless_half)


def maybe_decayed_weights(weight_decay: Scalar, mask: Mask | None) -> GradientTransformation | None:
    """:func:`add_decayed_weights`, or ``None`` (left out of a chain) for a Python zero."""
    if _validation.is_static_zero(weight_decay):
        return None
    return add_decayed_weights(weight_decay, mask=mask)
