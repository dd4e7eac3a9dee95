"""A params tree seen as one vector, as torch's LBFGS sees its params (``_gather_flat_grad``),
without concatenating: inner products and norms over every leaf, and steps along a direction.

torch concatenates the params in the order they were given; these functions visit the leaves in
JAX's flatten order (dict keys sorted). The order only changes how sums are rounded. Empty leaves
contribute nothing, as in torch's concatenation.
"""

from __future__ import annotations

import functools
import operator
from typing import Any

import jax
import jax.numpy as jnp

from optkit import _numerics
from optkit._base import Updates
from optkit._kernel import leaf_kernel


def _reduce(parts: list[jax.Array], combine: Any, dtype: jnp.dtype) -> jax.Array:
    if _numerics.is_half(dtype):
        # torch's dot and sum of a float16/bfloat16 vector accumulate in float32 and round the
        # result once.
        parts = [part.astype(jnp.float32) for part in parts]
        total = functools.reduce(combine, parts) if parts else jnp.zeros([], jnp.float32)
        return scalar_op(dtype, lambda x: x, total)
    parts = [part.astype(dtype) for part in parts]
    return functools.reduce(combine, parts) if parts else jnp.zeros([], dtype)


def scalar_op(dtype: Any, op: Any, *operands: Any) -> jax.Array:
    """``op(*operands)`` as torch computes an op on 0-dim tensors of ``dtype``: for float16 and
    bfloat16, in float32 with the result rounded once to ``dtype`` (explicitly: XLA would
    otherwise keep the float32 value between ops); else in ``dtype``."""
    if not _numerics.is_half(dtype):
        return jnp.asarray(op(*operands)).astype(dtype)
    wide = [jnp.asarray(x).astype(jnp.float32) for x in operands]
    with _numerics.stored_as(dtype):
        return _numerics.rounded(op(*wide)).astype(dtype)


def _wide(x: jax.Array) -> jax.Array:
    """A float16/bfloat16 leaf in float32 (products of two are exact there), else itself."""
    return x.astype(jnp.float32) if _numerics.is_half(x.dtype) else x


def dtype_of(tree: Updates) -> jnp.dtype:
    """The promoted dtype of the leaves: torch's concatenated vector's, and its scalars'. Real:
    torch's vector holds a complex param as its real and imaginary parts (``view_as_real``)."""
    dtype = jnp.result_type(*jax.tree.leaves(tree))
    return jnp.finfo(dtype).dtype if jnp.issubdtype(dtype, jnp.complexfloating) else dtype


def _real_leaves(tree: Updates) -> list[jax.Array]:
    """The leaves, a complex one as its real and imaginary parts side by side on a last axis
    (``view_as_real``'s layout): torch's vector's entries."""
    return [
        jnp.stack([jnp.real(leaf), jnp.imag(leaf)], axis=-1) if jnp.iscomplexobj(leaf) else leaf
        for leaf in jax.tree.leaves(tree)
    ]


def dot(a: Updates, b: Updates) -> jax.Array:
    """``a . b`` over every element of two trees of the same structure (complex leaves as real
    pairs: the real part of ``conj(a) b``)."""
    # Elementwise products, then a sum: no reshape, so a sharded leaf is never gathered.
    pairs = zip(_real_leaves(a), _real_leaves(b), strict=True)
    parts = [jnp.sum(_wide(x) * _wide(y)) for x, y in pairs]
    return _reduce(parts, operator.add, dtype_of(a))


def sum_abs(tree: Updates) -> jax.Array:
    """The 1-norm of every element together (torch's ``flat.abs().sum()``)."""
    parts = [jnp.sum(jnp.abs(_wide(x))) for x in _real_leaves(tree)]
    return _reduce(parts, operator.add, dtype_of(tree))


def max_abs(tree: Updates) -> jax.Array:
    """The largest absolute element (torch's ``flat.abs().max()``)."""
    parts = [jnp.max(jnp.abs(x)) for x in _real_leaves(tree) if x.size]
    return _reduce(parts, jnp.maximum, dtype_of(tree))


@leaf_kernel
def _step_along(param: jax.Array, direction: jax.Array, *, step_size: Any) -> jax.Array:
    return param + step_size * direction


def step_along(params: Updates, direction: Updates, step_size: Any) -> Updates:
    """``params + step_size * direction``: torch's ``p.add_(d, alpha=t)``, in each leaf's dtype."""
    return _step_along(params, direction, step_size=step_size)


@leaf_kernel
def _difference(vector: jax.Array, other: jax.Array) -> jax.Array:
    return vector - other


def difference(a: Updates, b: Updates) -> Updates:
    """``a - b``, in ``a``'s dtypes."""
    return _difference(a, b)
