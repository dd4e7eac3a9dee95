"""Hyperparameter validation, run when a transform is built so bad values fail before any step.

Values may be Python numbers, NumPy or JAX scalars, or (where allowed) schedules. Concrete values
are range-checked; traced values (under ``jit`` or ``inject_hyperparams``) can only be
shape-checked, since their value is not known yet.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import jax
import numpy as np


def _as_concrete_scalar(name: str, value: Any) -> float | None:
    """The value as a Python float, or ``None`` when it is traced (unknown until run time)."""
    if isinstance(value, bool | np.bool_):
        raise TypeError(f"{name} must be a number, got the bool {value!r}.")
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, jax.Array | np.ndarray | np.generic):
        if np.ndim(value) != 0:
            raise ValueError(f"{name} must be a scalar, got an array of shape {np.shape(value)}.")
        if not (
            np.issubdtype(value.dtype, np.floating)
            or np.issubdtype(value.dtype, np.integer)
            or value.dtype == jax.numpy.bfloat16
        ):
            raise TypeError(f"{name} must be a real number, got an array of dtype {value.dtype}.")
        if isinstance(value, jax.core.Tracer):
            return None
        return float(value)
    raise TypeError(f"{name} must be a number, got {type(value).__name__} {value!r}.")


def scalar(
    name: str,
    value: Any,
    *,
    low: float | None = 0.0,
    high: float | None = None,
    high_inclusive: bool = True,
    allow_schedule: bool = False,
) -> Any:
    """Check that ``value`` is a real scalar in ``[low, high]`` (or ``[low, high)``) and not NaN.

    Returns the value unchanged. With ``allow_schedule`` a callable passes (it is a schedule of the
    update count; its outputs are not known until it runs).
    """
    if allow_schedule and callable(value):
        return value
    number = _as_concrete_scalar(name, value)
    if number is None:
        return value
    upper = "]" if high_inclusive else ")"
    allowed = f"[{low if low is not None else '-inf'}, {high if high is not None else 'inf'}{upper}"
    if math.isnan(number):
        raise ValueError(f"{name} must be in {allowed}, got NaN.")
    too_low = low is not None and number < low
    too_high = high is not None and (number > high if high_inclusive else number >= high)
    if too_low or too_high:
        raise ValueError(f"{name} must be in {allowed}, got {value!r}.")
    return value


def non_negative(name: str, value: Any, *, allow_schedule: bool = False) -> Any:
    """Check ``value >= 0`` (and not NaN): learning rates, eps, weight decay, momentum, ..."""
    return scalar(name, value, low=0.0, allow_schedule=allow_schedule)


def decay_rate(name: str, value: Any) -> Any:
    """Check ``0 <= value < 1``: exponential-average coefficients (b1, b2, alpha)."""
    return scalar(name, value, low=0.0, high=1.0, high_inclusive=False)


def boolean(name: str, value: Any) -> bool:
    """Check a flag is a real bool, so ``amsgrad="no"`` does not silently count as true."""
    if not isinstance(value, bool | np.bool_):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__} {value!r}.")
    return bool(value)


def is_static_zero(value: Any) -> bool:
    """Whether ``value`` is a Python or NumPy number equal to zero.

    Optimizers drop a transform only when a hyperparameter is *statically* zero. A JAX array is
    treated as dynamic even when it holds zero, so the state's structure never depends on a value
    that may change at run time.
    """
    return (
        isinstance(value, numbers.Real | np.generic)
        and not isinstance(value, bool)
        and (float(value) == 0.0)
    )
