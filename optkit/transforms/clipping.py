"""Gradient clipping, with the semantics of ``torch.nn.utils.clip_grad_value_`` and
``clip_grad_norm_``."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from optkit import _validation
from optkit._base import GradientTransformation, Scalar, Updates, stateless
from optkit.transforms.scaling import scale_tree

# torch.nn.utils.clip_grad_norm_ divides by (norm + 1e-6); kept for identical clipping.
_NORM_EPS = 1e-6


def clip(max_delta: Scalar) -> GradientTransformation:
    """Clip every update element to ``[-max_delta, max_delta]``.

    Same as ``torch.nn.utils.clip_grad_value_(parameters, clip_value=max_delta)``.

    Examples:
        >>> import jax.numpy as jnp, optkit
        >>> tx = optkit.clip(1.0)
        >>> tx.update(jnp.array([0.5, 3.0, -2.0]), tx.init(None))[0]
        Array([ 0.5,  1. , -1. ], dtype=float32)
    """
    _validation.hyperparameters(max_delta=max_delta)
    return stateless(
        lambda updates, params: jax.tree.map(lambda u: jnp.clip(u, -max_delta, max_delta), updates)
    )


def global_norm(updates: Updates) -> jax.Array:
    """The 2-norm of all leaves taken together, accumulated in at least float32.

    Args:
        updates: a pytree of arrays.

    Returns:
        A scalar: the square root of the sum of squares of every element.

    Examples:
        >>> import jax.numpy as jnp, optkit
        >>> optkit.global_norm({"a": jnp.array([3.0]), "b": jnp.array([4.0])})
        Array(5., dtype=float32)
    """
    leaves = jax.tree.leaves(updates)
    if not leaves:
        return jnp.zeros([])
    squares = []
    for leaf in leaves:
        wide = leaf.astype(jnp.promote_types(leaf.dtype, jnp.float32))
        squares.append(jnp.sum(wide * wide))
    return jnp.sqrt(sum(squares[1:], squares[0]))


def clip_by_global_norm(max_norm: Scalar) -> GradientTransformation:
    r"""Rescale all updates together so that their global 2-norm is at most ``max_norm``.

    .. math::
        g \leftarrow g \cdot \min\left(1,
            \frac{\text{max\_norm}}{\lVert g \rVert_2 + 10^{-6}}\right)

    Same as ``torch.nn.utils.clip_grad_norm_(parameters, max_norm)`` with the default 2-norm.

    Examples:
        >>> import jax.numpy as jnp, optkit
        >>> tx = optkit.clip_by_global_norm(1.0)
        >>> out = tx.update({"a": jnp.array([3.0]), "b": jnp.array([4.0])}, tx.init(None))[0]
        >>> [round(float(v[0]), 4) for v in (out["a"], out["b"])]
        [0.6, 0.8]
    """
    _validation.hyperparameters(max_norm=max_norm)

    def clip_tree(updates, params):
        del params
        norm = global_norm(updates)
        factor = jnp.minimum(max_norm / (norm + _NORM_EPS), 1.0)
        return scale_tree(updates, factor)

    return stateless(clip_tree)
