"""Gradient clipping, with the semantics of ``torch.nn.utils.clip_grad_value_`` and
``clip_grad_norm_``.

The global norm follows ``torch.nn.utils.get_total_norm`` step by step, dtypes included: a norm
per leaf (``torch.linalg.vector_norm``) in the leaf's real dtype, then the same norm of those
norms in their promoted dtype; float16 and bfloat16 are summed in float32 and rounded after each
of torch's operations, as torch's CPU and CUDA kernels do.

Where JAX differs: XLA sums a leaf's elements in its own order (a tree of partial sums, where
torch's CPU kernel runs vectorized lanes), so float32 and float64 norms can differ from torch's
in the last bits. XLA is also allowed to keep a 16-bit intermediate in float32 (excess
precision) instead of rounding it; on the CPU cases tested it rounds wherever asked, and 16-bit
results equal torch's bitwise.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from optkit import _tree, _validation
from optkit._base import GradientTransformation, Params, Scalar, Updates, stateless

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
        lambda updates, params: jax.tree.map(
            lambda u: jnp.clip(u, -max_delta, max_delta), _real_updates(updates, "clip")
        )
    )


def _real_updates(updates: Updates, where: str) -> Updates:
    """``updates``, checked floating and real: torch's ``clamp`` refuses complex gradients."""
    updates = _tree.check_floating(updates, where)
    for path, leaf in _tree.leaves_with_paths(updates):
        if jnp.iscomplexobj(leaf):
            raise ValueError(
                f"{where}: updates leaf {path!r} is complex; clipping each entry has no complex "
                "meaning (torch.nn.utils.clip_grad_value_ refuses complex gradients too). Clip "
                "by the norm instead (clip_by_global_norm measures the modulus)."
            )
    return updates


def _check_norm_type(norm_type: Any) -> float:
    """``norm_type`` as a float: any order p > 0, or ``inf``, as a Python or NumPy number."""
    if isinstance(norm_type, str):
        raise TypeError(
            f"norm_type must be a number, got the string {norm_type!r} (torch's float() accepts "
            "'inf'; write float('inf') for the infinity norm)."
        )
    _validation.hyperparameters(norm_type=norm_type)
    return float(norm_type)


def _compute_dtype(dtype: Any) -> np.dtype:
    """torch's ``opmath`` type: float16 and bfloat16 compute in float32, others in their own."""
    return jnp.promote_types(dtype, jnp.float32)


def _norm_dtype(dtype: Any) -> np.dtype:
    """The dtype of torch's ``vector_norm`` of an array: its real dtype (float32 for complex64)."""
    if jnp.issubdtype(dtype, jnp.inexact):
        return jnp.finfo(dtype).dtype
    return jnp.dtype(jnp.float32)  # integer leaves (torch refuses them): as optkit always did


def _vector_norm(array: jax.Array, norm_type: float) -> jax.Array:
    """``torch.linalg.vector_norm(array, norm_type)``: the p-norm of ``|array|`` (the modulus for
    complex arrays), summed in the compute dtype and rounded to the real dtype."""
    dtype = _norm_dtype(array.dtype)
    magnitude = jnp.abs(array).astype(_compute_dtype(dtype))
    if norm_type == math.inf:
        # initial=0: every norm of an empty array is 0. torch refuses the inf norm of an empty
        # tensor (the max has no identity); 0 is the limit of the finite orders.
        norm = jnp.max(magnitude, initial=0.0)
    elif norm_type == 1.0:
        norm = jnp.sum(magnitude)
    elif norm_type == 2.0:
        norm = jnp.sqrt(jnp.sum(magnitude * magnitude))
    else:
        # As torch: sum |x|^p, then the 1/p power, with p and 1/p in the compute dtype. No
        # rescaling by the largest element, so a large p overflows where torch's does (p = 100
        # on values near 1e3 in float32 gives an infinite norm, and the clip zeroes everything).
        order = jnp.asarray(norm_type, magnitude.dtype)
        norm = jnp.sum(magnitude**order) ** (1 / order)
    return norm.astype(dtype)


def _total_norm(leaves: list[jax.Array], norm_type: float) -> jax.Array:
    """``torch.nn.utils.get_total_norm``: the norm of the per-leaf norms, stacked in their
    promoted dtype (float32 for float16 with bfloat16, float64 as soon as one leaf is)."""
    norms = [_vector_norm(jnp.asarray(leaf), norm_type) for leaf in leaves]
    dtype = jnp.result_type(*norms)
    return _vector_norm(jnp.stack([norm.astype(dtype) for norm in norms]), norm_type)


def global_norm(updates: Updates, norm_type: float = 2.0) -> jax.Array:
    r"""The ``norm_type``-norm of all leaves taken together, as torch's ``get_total_norm``.

    .. math::
        \lVert g \rVert_p = \Big(\sum_{\text{leaves } i} \lVert g_i \rVert_p^p\Big)^{1/p}
            = \Big(\sum_{\text{elements } j} |g_j|^p\Big)^{1/p}, \qquad
        \lVert g \rVert_\infty = \max_j |g_j|

    computed as torch does: the norm of each leaf, then the norm of those norms. ``|g_j|`` is
    the modulus of a complex element.

    Same as ``torch.nn.utils.get_total_norm(grads, norm_type)``, the value
    ``torch.nn.utils.clip_grad_norm_`` returns, dtype included: each leaf's norm is in the
    leaf's real dtype (summed in float32 for float16 and bfloat16, as torch's kernels do), and the
    total in the promoted dtype of those norms (bfloat16 for a bfloat16 tree, float32 for one
    mixing float16 and bfloat16). An empty tree has norm ``0.0`` (float32), as in torch.

    Args:
        updates: a pytree of arrays.
        norm_type: the order p of the norm: any p > 0 (orders below 1 are torch's quasi-norms),
            or ``float("inf")`` for the largest absolute value. A Python number: it picks the
            formula.

    Returns:
        A scalar: the norm of every element of every leaf.

    Raises:
        ValueError: if ``norm_type`` is outside ``(0, inf]`` or NaN.
        TypeError: if ``norm_type`` is not a Python or NumPy number (a string, a bool, an array).

    Examples:
        >>> import jax.numpy as jnp, optkit
        >>> optkit.global_norm({"a": jnp.array([3.0]), "b": jnp.array([4.0])})
        Array(5., dtype=float32)
        >>> optkit.global_norm({"a": jnp.array([3.0]), "b": jnp.array([-4.0])}, float("inf"))
        Array(4., dtype=float32)
        >>> optkit.global_norm([jnp.array([3.0 + 4.0j])], norm_type=1)
        Array(5., dtype=float32)
    """
    norm_type = _check_norm_type(norm_type)
    leaves = jax.tree.leaves(updates)
    if not leaves:
        return jnp.zeros((), jnp.float32)
    return _total_norm(leaves, norm_type)


def _clip_coefficient(total_norm: jax.Array, max_norm: Any) -> jax.Array:
    """``clamp(max_norm / (total_norm + 1e-6), max=1)`` with torch's roundings.

    torch evaluates the division as ``(total_norm + 1e-6).reciprocal() * max_norm``
    (``Tensor.__rtruediv__``), each operation rounded to the total's dtype and computed in float32
    when that dtype is float16 or bfloat16 (with ``max_norm`` and ``1e-6`` unrounded there).
    """
    dtype = total_norm.dtype
    compute = _compute_dtype(dtype)

    def rounded(value: jax.Array) -> jax.Array:
        return value.astype(dtype).astype(compute)

    denominator = rounded(total_norm.astype(compute) + _NORM_EPS)
    reciprocal = rounded(1 / denominator)
    coefficient = (reciprocal * jnp.asarray(max_norm).astype(compute)).astype(dtype)
    return jnp.minimum(coefficient, 1)


def _scale(update: jax.Array, coefficient: jax.Array) -> jax.Array:
    """torch's in-place ``grad.mul_(coefficient)``: the coefficient is cast to the gradient's
    dtype (complex for a complex gradient), except that a float16 or bfloat16 gradient is
    multiplied in float32 by the unrounded coefficient, then rounded."""
    compute = _compute_dtype(update.dtype)
    return (update.astype(compute) * coefficient.astype(compute)).astype(update.dtype)


def clip_by_global_norm(max_norm: Scalar, norm_type: float = 2.0) -> GradientTransformation:
    r"""Rescale all updates together so that their global ``norm_type``-norm is at most
    ``max_norm``.

    .. math::
        g \leftarrow g \cdot \min\left(1,
            \frac{\text{max\_norm}}{\lVert g \rVert_p + 10^{-6}}\right), \qquad
        \lVert g \rVert_p = \Big(\sum_j |g_j|^p\Big)^{1/p}, \quad
        \lVert g \rVert_\infty = \max_j |g_j|

    with the norm over every element of every leaf, computed as :func:`global_norm`.

    Same as ``torch.nn.utils.clip_grad_norm_(parameters, max_norm, norm_type)``: the same
    formula, with the ``1e-6`` added to the norm (so a norm equal to ``max_norm`` is still
    scaled, by ``max_norm / (max_norm + 1e-6)``), the coefficient computed in the total norm's
    dtype and each gradient multiplied by it in its own dtype (float32 for float16 and bfloat16
    gradients). Complex gradients are measured by their modulus, as torch's ``vector_norm``.

    Differences:

    - optax's ``clip_by_global_norm`` has only the 2-norm, leaves updates whose norm is below or
      equal to ``max_norm`` untouched and divides by the norm without the ``1e-6``.
    - torch raises for the inf norm of an empty gradient; here an empty leaf has norm 0 for
      every order.
    - Large orders overflow as in torch: ``|g|^p`` is summed in the gradient's precision (p = 100
      on values near ``1e3`` overflows float32, so the norm is inf and every update becomes 0).

    Args:
        max_norm: the largest norm allowed, ``>= 0``. It may be injected
            (``inject_hyperparams``) and set at run time.
        norm_type: the order p of the norm: any p > 0, or ``float("inf")``. A Python number
            fixed when the transform is built (it picks the formula), so ``inject_hyperparams``
            keeps it static.

    Raises:
        ValueError: if ``max_norm`` is negative or NaN, or ``norm_type`` is outside
            ``(0, inf]`` or NaN (torch's ``0`` counts non-zero elements and negative orders
            shrink to 0: neither measures a size).
        TypeError: if ``norm_type`` is not a Python or NumPy number (a string, a bool, an
            array).

    Examples:
        >>> import jax.numpy as jnp, optkit
        >>> tx = optkit.clip_by_global_norm(1.0)
        >>> out = tx.update({"a": jnp.array([3.0]), "b": jnp.array([4.0])}, tx.init(None))[0]
        >>> [round(float(v[0]), 4) for v in (out["a"], out["b"])]
        [0.6, 0.8]
        >>> tx = optkit.clip_by_global_norm(2.0, norm_type=float("inf"))
        >>> out = tx.update(jnp.array([3.0, -4.0]), tx.init(None))[0]  # ||g||_inf = 4
        >>> [round(float(v), 4) for v in out]
        [1.5, -2.0]
    """
    _validation.hyperparameters(max_norm=max_norm)
    norm_type = _check_norm_type(norm_type)

    def clip_tree(updates: Updates, params: Params | None) -> Updates:
        del params
        updates = _tree.check_floating(updates, "clip_by_global_norm")
        leaves = jax.tree.leaves(updates)
        if not leaves:
            return updates
        coefficient = _clip_coefficient(_total_norm(leaves, norm_type), max_norm)
        return jax.tree.map(lambda update: _scale(jnp.asarray(update), coefficient), updates)

    return stateless(clip_tree)
