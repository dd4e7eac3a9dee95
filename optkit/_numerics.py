"""Scalar arithmetic shared by the stateful transforms: step counters, bias corrections and
schedules; and the rounding of float16/bfloat16 leaves at torch's op boundaries."""

from __future__ import annotations

import contextlib
import contextvars
import math
from collections.abc import Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from optkit import _tree, _validation

_INT32_MAX = jnp.iinfo(jnp.int32).max

# The storage dtype of the float16/bfloat16 leaf whose kernel is being traced (None otherwise).
_STORAGE: contextvars.ContextVar[Any] = contextvars.ContextVar("optkit_storage", default=None)


def is_half(dtype: Any) -> bool:
    """Whether ``dtype`` is a 16-bit float that torch computes in float32 (float16, bfloat16)."""
    return jnp.dtype(dtype) in (jnp.dtype(jnp.float16), jnp.dtype(jnp.bfloat16))


@contextlib.contextmanager
def stored_as(dtype: Any) -> Iterator[None]:
    """Within the block, :func:`rounded` rounds to ``dtype`` (a 16-bit float) or, for ``None``,
    not at all. Set by the leaf kernels around a kernel's body."""
    token = _STORAGE.set(None if dtype is None else jnp.dtype(dtype))
    try:
        yield
    finally:
        _STORAGE.reset(token)


def storing_half() -> bool:
    """Whether the kernel being traced computes a float16/bfloat16 leaf (in float32)."""
    return _STORAGE.get() is not None


def storage_dtype() -> Any:
    """The float16/bfloat16 dtype of the leaf the kernel being traced computes, or ``None``."""
    return _STORAGE.get()


def rounded(value: Any) -> Any:
    """``value`` rounded to the storage dtype of the 16-bit leaf being computed, kept in float32.

    torch's CPU kernels compute each op on a float16 or bfloat16 tensor in float32 and round the
    op's result once to the tensor's dtype; a kernel calls this where torch's op ends. The
    identity for float32 and float64 leaves (and outside a kernel), so their math is unchanged.
    """
    storage = _STORAGE.get()
    if storage is None:
        return value
    value = jnp.asarray(value)
    # Not value.astype(storage).astype(value.dtype): under jit, XLA drops that convert pair
    # (its SimplifyFPConversions pass, on by default with xla_allow_excess_precision), even
    # behind an optimization barrier. reduce_precision rounds the same way (to nearest even,
    # overflowing to inf) but flushes float16 subnormals to zero: those are the multiples of
    # 2**-24 below 2**-14, rounded here by scaling (exact) and rounding to an integer.
    finfo = jnp.finfo(storage)
    normal = jax.lax.reduce_precision(value, exponent_bits=finfo.nexp, mantissa_bits=finfo.nmant)
    if storage != jnp.dtype(jnp.float16):
        return normal
    quantum = 2.0**-24
    subnormal = jnp.round(value / quantum) * quantum
    return jnp.where(jnp.abs(value) < finfo.smallest_normal, subnormal, normal)


def rounded_scalar(value: Any) -> Any:
    """A scalar multiplier rounded to the storage dtype of the 16-bit leaf being computed.

    torch rounds ``alpha`` of ``add_(x, alpha=a)`` and the scalar of ``add_(s)`` to the
    tensor's dtype before the op (``mul_(s)``, ``lerp_``, ``addcmul_`` and ``addcdiv_`` take
    theirs in float32). The identity for float32 and float64 leaves.
    """
    storage = _STORAGE.get()
    if storage is None:
        return value
    if isinstance(value, int | float):
        return float(np.asarray(value, dtype=storage).astype(np.float32))
    return jnp.asarray(value).astype(storage).astype(jnp.float32)


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


def float32_times_double(value: jax.Array, factor: float) -> jax.Array:
    """``float32(double(value) * factor)`` for a float32 ``value``, in 32-bit integer arithmetic
    (for when float64 is off).

    With ``value = a * 2**i`` (``a`` its 24-bit significand) and ``factor = b * 2**j`` (``b`` a
    53-bit integer), the exact product ``a * b`` (at most 77 bits) is formed in base-2**16 digits.
    Rounding it to 53 bits and then to 24 differs from rounding once only where the 53-bit value
    lands on a 24-bit midpoint, so the 53 bits below the kept 24 decide: more than half a double
    unit (2**23 of them) above the midpoint rounds up, as far below rounds down, and in between is
    a tie, rounded to even. Exact wherever the result is a normal float32; a subnormal ``value``
    is multiplied in float32.
    """
    fraction, exponent = math.frexp(factor)
    b = int(fraction * 2**53)  # factor == b * 2**(exponent - 53) exactly
    bits = jax.lax.bitcast_convert_type(value, jnp.uint32)
    biased_exponent = (bits >> 23) & np.uint32(0xFF)
    a = (bits & np.uint32(0x7FFFFF)) | np.uint32(0x800000)
    digits = [jnp.zeros_like(a) for _ in range(6)]
    for i, a_digit in enumerate((a & np.uint32(0xFFFF), a >> 16)):
        for k in range(4):
            partial = a_digit * np.uint32((b >> (16 * k)) & 0xFFFF)  # < 2**32
            digits[i + k] = digits[i + k] + (partial & np.uint32(0xFFFF))
            digits[i + k + 1] = digits[i + k + 1] + (partial >> 16)
    for k in range(5):
        digits[k + 1] = digits[k + 1] + (digits[k] >> 16)
        digits[k] = digits[k] & np.uint32(0xFFFF)
    low, middle, high = (digits[2 * k] | (digits[2 * k + 1] << 16) for k in range(3))
    # a * b is in [2**75, 2**77): shift it into [2**76, 2**77) so the rounding positions are fixed.
    top = (high >> 12) & np.uint32(1)
    shifted = top == 0
    high = jnp.where(shifted, (high << 1) | (middle >> 31), high)
    middle = jnp.where(shifted, (middle << 1) | (low >> 31), middle)
    low = jnp.where(shifted, low << 1, low)
    kept = ((high & np.uint32(0x1FFF)) << 11) | (middle >> 21)  # bits 53-76
    dropped_high = middle & np.uint32(0x1FFFFF)  # bits 32-52; bits 0-31 are `low`
    # Python ints would be weakly typed int32 without float64 and overflow: uint32 constants.
    midpoint_high, half_unit = np.uint32(2**20), np.uint32(2**23)
    up = (dropped_high > midpoint_high) | ((dropped_high == midpoint_high) & (low > half_unit))
    below = midpoint_high - np.uint32(1)
    down = (dropped_high < below) | ((dropped_high == below) & (low < np.uint32(2**32 - 2**23)))
    tie_to_odd = jnp.logical_not(up | down) & ((kept & np.uint32(1)) == 1)
    rounded = kept + up.astype(jnp.uint32) + tie_to_odd.astype(jnp.uint32)  # <= 2**24: exact
    # value * factor = (a * b) * 2**(i + j) with i = biased - 150, j = exponent - 53, and the
    # kept bits start at bit 53 of a * b shifted left by (1 - top).
    power = biased_exponent.astype(jnp.int32) - 151 + exponent + top.astype(jnp.int32)
    exact = jnp.ldexp(rounded.astype(jnp.float32), power)
    return jnp.where(biased_exponent == 0, value * np.float32(factor), exact)


def times_in_double(value: jax.Array, factor: Any) -> jax.Array:
    """A float32 ``value`` (a loss scale) times ``factor``, rounded as torch's
    ``_amp_update_scale_`` rounds it: the product in double, then float32."""
    number = _validation.static_number(factor)
    if number is not None and float(np.float32(number)) == number:
        # Two float32 numbers: their exact product has at most 48 bits, so the double product is
        # exact and one float32 rounding of it is torch's result (2.0, 0.5, 1.5, ...).
        return value * np.float32(number)
    if jnp.result_type(float) == jnp.float64 or number is None:
        # Under jax_enable_x64 this is torch's arithmetic itself; a run-time factor (an injected
        # hyperparameter) is already an array of the default float dtype.
        return (as_double(value) * factor).astype(jnp.float32)
    return float32_times_double(value, number)
