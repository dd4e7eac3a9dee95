"""Hyperparameter validation, run when a transform is built so bad values fail before any step.

Values may be Python numbers, NumPy or JAX scalars, or (where allowed) schedules. Concrete values
are range-checked; traced values (under ``jit`` or ``inject_hyperparams``) can only be
shape-checked, since their value is not known yet.
"""

from __future__ import annotations

import itertools
import math
import numbers
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple

import jax
import numpy as np


def concrete_scalar(name: str, value: Any) -> float | None:
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
    low_inclusive: bool = True,
) -> Any:
    """Check that ``value`` is a real scalar in ``[low, high]`` (either end may be open) and not
    NaN.

    Returns the value unchanged. With ``allow_schedule`` a callable passes (it is a schedule of the
    update count; its outputs are not known until it runs).
    """
    if allow_schedule and callable(value):
        return value
    number = concrete_scalar(name, value)
    if number is None:
        return value
    lower = "[" if low_inclusive else "("
    upper = "]" if high_inclusive else ")"
    allowed = (
        f"{lower}{low if low is not None else '-inf'}, {high if high is not None else 'inf'}{upper}"
    )
    if math.isnan(number):
        raise ValueError(f"{name} must be in {allowed}, got NaN.")
    too_low = low is not None and (number < low if low_inclusive else number <= low)
    too_high = high is not None and (number > high if high_inclusive else number >= high)
    if too_low or too_high:
        raise ValueError(f"{name} must be in {allowed}, got {value!r}.")
    return value


def non_negative(name: str, value: Any, *, allow_schedule: bool = False) -> Any:
    """Check ``value >= 0`` (and not NaN): learning rates, eps, weight decay, momentum, ..."""
    return scalar(name, value, low=0.0, allow_schedule=allow_schedule)


class Range(NamedTuple):
    """The allowed values of a hyperparameter: ``[low, high]`` (``high`` excluded unless
    ``high_inclusive``, ``low`` excluded unless ``low_inclusive``); ``None`` leaves that side
    open. ``schedule``: the transforms themselves accept a callable (a schedule of their update
    count). Any other numeric hyperparameter takes a schedule through ``inject_hyperparams``,
    which checks the schedule's value at count 0 against this table when it is built.
    ``integer``: a Python integer that fixes the transform's structure (a loop count, a history
    length): static, never injected as an array. ``static``: a Python (or NumPy) real number that
    fixes the formula (a norm's order, where infinity takes another branch): static as well."""

    low: float | None = 0.0
    high: float | None = None
    high_inclusive: bool = True
    schedule: bool = False
    integer: bool = False
    low_inclusive: bool = True
    static: bool = False


_UNIT = Range(0.0, 1.0)
_FLOAT32_MAX = float(np.finfo(np.float32).max)
_INT32_MAX = int(np.iinfo(np.int32).max)
_DECAY = Range(0.0, 1.0, high_inclusive=False)

RANGES: dict[str, Range] = {
    # Step sizes.
    "learning_rate": Range(schedule=True),
    "lr_decay": Range(),
    "step_size": Range(low=None),
    # Regularization.
    "weight_decay": Range(),
    # Denominator offsets and thresholds.
    "eps": Range(),
    "eps_root": Range(),
    "eps1": Range(),  # Adafactor's floor of the root second moment: eps[0]
    "eps2": Range(),  # Adafactor's floor of the parameter scale: eps[1]
    "d": Range(low=1.0),  # Adafactor's update-clipping threshold
    "max_norm": Range(),
    "max_delta": Range(),
    # Order of a p-norm (clip_by_global_norm, global_norm): any p > 0 or inf, as torch's
    # clip_grad_norm_ (its 0 counts non-zero entries and negative orders shrink to 0: no norms).
    "norm_type": Range(low=0.0, low_inclusive=False, static=True),
    # Momentum and moving averages.
    "momentum": Range(),
    "momentum_decay": Range(),
    "decay": Range(),
    "dampening": _UNIT,
    "b1": _DECAY,
    "b2": _DECAY,
    # RMSprop's smoothing constant; ASGD's step-size decay power (eta ~ t^-alpha: above 1 the
    # steps sum to a finite distance, so [0, 1] holds every useful value of both).
    "alpha": _UNIT,
    "rho": _UNIT,
    "beta2_decay": Range(low=None, high=0.0),  # Adafactor: 1 - beta2_t = t**beta2_decay
    # ASGD: the step-size decay rate and the update count at which averaging starts.
    "lambd": Range(),
    "t0": Range(),
    # Accumulators.
    "initial_accumulator_value": Range(),
    # Iterative methods: loop bounds and stopping tolerances.
    "max_iter": Range(low=1, integer=True),
    "max_eval": Range(low=1, integer=True),
    "history_size": Range(low=1, integer=True),
    "tolerance_grad": Range(),
    "tolerance_change": Range(),
    # Iteration counts (structural).
    "ns_steps": Range(0, 99, integer=True),
    # Update counts that place events in the run (structural): gradient accumulation's
    # micro-batches per optimizer step, weight averaging's first averaged update and period.
    "start_step": Range(low=0, integer=True),
    "every_k": Range(low=1, integer=True),
    # Loss scaling (torch.amp.GradScaler): a finite float32 scale, factors on either side of 1,
    # and a period that fits torch's int32 growth tracker.
    "init_scale": Range(0.0, _FLOAT32_MAX, low_inclusive=False),
    "growth_factor": Range(1.0, _FLOAT32_MAX, low_inclusive=False),
    "backoff_factor": Range(0.0, 1.0, high_inclusive=False, low_inclusive=False),
    "growth_interval": Range(1, _INT32_MAX, integer=True),
    # Quantized state (quantize_state): bits per stored value (4 or 8), elements per block with
    # one scale each, and the smallest buffer that is quantized.
    "bits": Range(4, 8, integer=True),
    "block_size": Range(low=1, integer=True),
    "min_size": Range(low=0, integer=True),
}
"""The one table of hyperparameter ranges, keyed by argument name: every optimizer and primitive
checks its numeric arguments here when it is built, and ``set_hyperparams`` checks new values
here, so a range is written once. A name means the same thing wherever it appears."""


def hyperparameters(**values: Any) -> None:
    """Check each value against its entry in :data:`RANGES` (a name missing there is a bug)."""
    for name, value in values.items():
        allowed = RANGES[name]
        if allowed.integer:
            integer_in(name, value, low=allowed.low, high=allowed.high)
            continue
        if allowed.static and static_number(value) is None:
            raise TypeError(
                f"{name} fixes the transform's formula, so it must be a Python number, "
                f"got {type(value).__name__} {value!r}."
            )
        if callable(value) and allowed.schedule:
            schedule(name, value)
            continue
        if callable(value):
            raise TypeError(
                f"{name} must be a number, got the callable {value!r}. To drive {name} by a "
                "schedule of the update count, build the optimizer with "
                f"optkit.inject_hyperparams, e.g. optkit.inject_hyperparams(optkit.sgd)(..., "
                f"{name}=schedule)."
            )
        scalar(
            name,
            value,
            low=allowed.low,
            high=allowed.high,
            high_inclusive=allowed.high_inclusive,
            low_inclusive=allowed.low_inclusive,
            allow_schedule=allowed.schedule,
        )


def schedule(name: str, fn: Callable[[jax.Array], Any]) -> jax.Array | None:
    """Check a schedule given as ``name`` on a concrete update count 0 and return that value.

    A schedule must return a real scalar (not a bool or a complex number, not NaN) in ``name``'s
    range in :data:`RANGES`, if it has one. Later values are traced under ``jit``, so only the
    first is checked. Returns ``None`` when the value is traced (the schedule closes over a
    traced value): then nothing can be checked before it runs.
    """
    try:
        first = fn(jax.numpy.zeros([], jax.numpy.int32))
    except Exception as error:
        raise TypeError(
            f"{name} is callable, so it is taken as a schedule of the update count, but it "
            f"failed on the count 0: {type(error).__name__}: {error}"
        ) from error
    dtype = getattr(first, "dtype", None)
    is_bool = isinstance(first, bool | np.bool_) or dtype == np.bool_
    is_complex = isinstance(first, complex) or (dtype is not None and np.iscomplexobj(first))
    if is_bool or is_complex or not isinstance(first, numbers.Real | np.generic | jax.Array):
        shown = f"an array of dtype {dtype}" if dtype is not None else type(first).__name__
        raise TypeError(
            f"{name} is callable, so it is taken as a schedule of the update count, but at "
            f"count 0 it returned {shown} {first!r} instead of a real scalar."
        )
    if np.ndim(first) != 0:
        raise ValueError(
            f"{name} is callable, so it is taken as a schedule of the update count, but at "
            f"count 0 it returned shape {np.shape(first)} instead of a scalar."
        )
    if isinstance(first, jax.core.Tracer):
        return None
    allowed = RANGES.get(name, Range(low=None))
    try:
        scalar(
            name,
            first,
            low=allowed.low,
            high=allowed.high,
            high_inclusive=allowed.high_inclusive,
            low_inclusive=allowed.low_inclusive,
        )
    except ValueError as error:
        raise ValueError(
            f"{name} is a schedule whose value at count 0 is invalid: {error}"
        ) from None
    return jax.numpy.asarray(first)


def call_schedule(name: str, fn: Callable[[jax.Array], Any], count: jax.Array) -> jax.Array:
    """``fn(count)`` as an array; an error raised by the schedule names the argument it was given
    as, chained to the original (under ``jit`` a schedule sees a traced count: Python control
    flow on it fails there although it ran on the concrete count checked at construction)."""
    try:
        return jax.numpy.asarray(fn(count))
    except Exception as error:
        shown = (
            "the traced update count"
            if isinstance(count, jax.core.Tracer)
            else f"the update count {int(count)}"
        )
        kind = TypeError if isinstance(error, TypeError) else ValueError
        if not isinstance(error, TypeError | ValueError):
            kind = RuntimeError
        raise kind(
            f"the schedule given as {name} failed on {shown}: "
            f"{type(error).__name__}: {error}. A schedule is traced under jax.jit: write it with "
            "jax.numpy operations (jnp.where, not a Python if on the count)."
        ) from error


def is_structural(name: str) -> bool:
    """Whether ``name`` is a static hyperparameter (an integer or a number marked ``static``)
    that fixes a transform's structure or formula, so it is never injected as an array."""
    return name in RANGES and (RANGES[name].integer or RANGES[name].static)


def integer_in(name: str, value: Any, *, low: float | None, high: float | None) -> int:
    """Check ``value`` is a Python (or NumPy) integer in ``[low, high]`` and return it."""
    shown = f"[{'-inf' if low is None else int(low)}, {'inf' if high is None else int(high)}]"
    if (
        not _is_int(value)
        or (low is not None and value < low)
        or (high is not None and value > high)
    ):
        raise ValueError(f"{name} must be an integer in {shown}, got {value!r}.")
    return int(value)


def pair(name: str, value: Any) -> tuple[Any, Any]:
    """Check ``value`` is a tuple (or list) of two real scalars, as torch's ``betas``-style
    arguments (Rprop's ``etas``), and return it as a tuple. Each element is returned as given;
    use :func:`concrete_scalar` on it for range checks (a traced element has no value yet)."""
    if not isinstance(value, tuple | list) or len(value) != 2:
        raise TypeError(f"{name} must be a tuple of two numbers, got {value!r}.")
    for index, element in enumerate(value):
        concrete_scalar(f"{name}[{index}]", element)
    return tuple(value)


def boolean(name: str, value: Any) -> bool:
    """Check a flag is a real bool, so ``amsgrad="no"`` does not silently count as true."""
    if not isinstance(value, bool | np.bool_):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__} {value!r}.")
    return bool(value)


def static_number(value: Any) -> float | None:
    """``value`` as a float if it is a Python or NumPy number, else ``None`` (a run-time value).

    Optimizers make structural decisions (drop a transform, reject a flag combination) only on
    such static numbers. A JAX array counts as dynamic even when it is concrete, so the state's
    structure never depends on a value that may change at run time.
    """
    if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Real | np.generic):
        return None
    return float(value)


def is_static_zero(value: Any) -> bool:
    """Whether ``value`` is a Python or NumPy number equal to zero (see :func:`static_number`)."""
    return static_number(value) == 0.0


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool | np.bool_)


def positive_int(name: str, value: Any) -> int:
    """Check ``value`` is an integer >= 1 (a period or a number of steps) and return it."""
    if not _is_int(value) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    return int(value)


def non_negative_int(name: str, value: Any) -> int:
    """Check ``value`` is an integer >= 0 (a patience, a cooldown, a boundary) and return it."""
    if not _is_int(value) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {value!r}.")
    return int(value)


def positive(name: str, value: Any, *, high: float | None = None) -> Any:
    """Check ``0 < value <= high`` (and not NaN): factors such as ``gamma`` or ``div_factor``."""
    number = concrete_scalar(name, value)
    if number is None:
        return value
    if not (number > 0.0 and (high is None or number <= high)):
        upper = "inf" if high is None else high
        raise ValueError(f"{name} must be in (0.0, {upper}], got {value!r}.")
    return value


def one_of(name: str, value: Any, choices: Sequence[str]) -> str:
    """Check a mode string is one of ``choices``."""
    if value not in choices:
        allowed = ", ".join(repr(c) for c in choices)
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}.")
    return value


def boundaries(name: str, values: Iterable[Any]) -> tuple[int, ...]:
    """Check a sequence of step counts is made of non-negative integers in non-decreasing order."""
    if isinstance(values, str | bytes) or not isinstance(values, Iterable):
        raise TypeError(f"{name} must be a sequence of integers, got {values!r}.")
    values = tuple(values)
    for value in values:
        if not _is_int(value) or value < 0:
            raise ValueError(f"{name} must hold non-negative integers, got {value!r} in {values}.")
    if any(later < earlier for earlier, later in itertools.pairwise(values)):
        raise ValueError(f"{name} must be sorted in non-decreasing order, got {values}.")
    return tuple(int(v) for v in values)


def function(name: str, value: Any) -> Callable[..., Any]:
    """Check ``value`` is callable (a schedule or a multiplicative-factor function)."""
    if not callable(value):
        raise TypeError(f"{name} must be callable, got {type(value).__name__} {value!r}.")
    return value


def state_dtype(name: str, dtype: Any) -> np.dtype | None:
    """Check a state buffer's dtype (``mu_dtype``, ``accumulator_dtype``) and return it as a NumPy
    dtype, or ``None`` (the param's dtype) when it is ``None``.

    Only floating (or complex) dtypes hold a moment or a momentum buffer: an integer or bool
    buffer would truncate every step to nothing, silently.
    """
    if dtype is None:
        return None
    try:
        resolved = jax.numpy.dtype(dtype)
    except TypeError:
        raise TypeError(f"{name} must be a dtype (e.g. jnp.bfloat16), got {dtype!r}.") from None
    if not jax.numpy.issubdtype(resolved, jax.numpy.inexact):
        raise ValueError(
            f"{name} must be a floating dtype (float32, bfloat16, ...), got {resolved}: an "
            "integer or bool buffer would truncate the optimizer's state to nothing."
        )
    return resolved


def finite(name: str, value: Any) -> Any:
    """Check ``value`` is a finite real number, of any sign: a schedule's end value (optax's
    ``end_value``, torch's ``eta_min``), which may sit below zero or above the start."""
    number = concrete_scalar(name, value)
    if number is not None and not math.isfinite(number):
        raise ValueError(f"{name} must be a finite number, got {value!r}.")
    return value
