"""Scalar arithmetic shared by the stateful transforms: step counters, bias corrections and
schedules."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from optkit import _tree, _validation

_INT32_MAX = jnp.iinfo(jnp.int32).max


def zero_count(params: Any = None) -> jax.Array:
    """A fresh update counter, placed next to ``params`` when they are committed to devices.

    int32, so it is cheap and the same under ``jax_enable_x64``.
    """
    return _tree.place_scalars(jnp.zeros([], jnp.int32), params)


def increment(count: jax.Array) -> jax.Array:
    """``count + 1``, saturating at the int32 maximum instead of wrapping to a negative step."""
    return jnp.where(count < _INT32_MAX, count + 1, _INT32_MAX)


def bias_correction(decay: Any, step: jax.Array) -> jax.Array:
    """``1 - decay**step`` for a 1-based ``step``, accurate even in float32.

    torch evaluates this in Python double. Computed naively in float32, ``1 - 0.999**t`` loses
    about 4 digits at small ``t`` because ``0.999`` itself rounds;
    ``-expm1(t * log1p(-(1 - decay)))`` keeps ``1 - decay`` (formed in double when ``decay`` is a
    Python number) and stays accurate to a few ulp. The result has the default float dtype
    (float64 under ``jax_enable_x64``).
    """
    return -jnp.expm1(step * jnp.log1p(-(1.0 - decay)))


def lerp(start: jax.Array, end: jax.Array, weight: Any) -> jax.Array:
    """torch's ``start.lerp_(end, weight)`` as its CPU kernel computes it.

    ``start + weight * (end - start)`` for ``|weight| < 0.5`` (every moving average's
    ``1 - beta``), else ``end + (weight - 1) * (end - start)`` with ``weight - 1`` formed in the
    arrays' dtype, as torch does, so a weight near 1 lands exactly on ``end``'s side. A run-time
    (array) weight picks its formula per step.
    """
    small = _validation.static_number(weight)
    if small is not None and abs(small) < 0.5:
        return start + weight * (end - start)
    w = jnp.asarray(weight).astype(jnp.result_type(start, end))
    near_end = end + (w - 1) * (end - start)
    if small is not None:
        return near_end
    return jnp.where(jnp.abs(w) < 0.5, start + w * (end - start), near_end)


def as_double(value: Any) -> jax.Array:
    """``value`` in the default float dtype: float64 under ``jax_enable_x64``, where torch's
    Python-double scalar arithmetic is reproduced exactly, else float32."""
    return jnp.asarray(value, dtype=jnp.result_type(float))


def value_at(value: Any, count: jax.Array, where: str) -> Any:
    """A hyperparameter's value for the update of 0-based ``count``: the number itself, or a
    schedule's output, which must be a scalar."""
    if not callable(value):
        return value
    out = jnp.asarray(value(count))
    if out.ndim != 0:
        raise ValueError(
            f"{where}: the schedule returned shape {out.shape}; it must return a scalar."
        )
    return out
