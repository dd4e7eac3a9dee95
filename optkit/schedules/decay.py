"""Decay schedules of torch.optim.lr_scheduler: step, multistep, constant, linear, exponential,
polynomial, lambda and multiplicative.

Each factory returns a pure function of the 0-based update count :math:`k` whose value is the
learning rate the :math:`k`-th update uses: torch's ``optimizer.param_groups[0]["lr"]`` after
:math:`k` calls of ``scheduler.step()`` (which follow each ``optimizer.step()``). torch updates
most of these recursively (``lr *= ...``); the closed forms here agree with its actual values to
rounding (relative 1e-12 in float64 over thousands of steps).

Schedules evaluate elementwise, so ``schedule(jnp.arange(n))`` gives the first ``n`` values.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable

import jax
import jax.numpy as jnp
import numpy as np

from optkit import _validation
from optkit._base import Scalar, Schedule
from optkit.schedules._curves import as_count, as_float
from optkit.schedules._factor import FactorSchedule


def step_lr(learning_rate: Scalar, step_size: int, gamma: Scalar = 0.1) -> Schedule:
    r"""Decay by ``gamma`` every ``step_size`` updates. Same values as
    ``torch.optim.lr_scheduler.StepLR``.

    .. math::
        \eta_k = \eta_0 \, \gamma^{\lfloor k / \text{step\_size} \rfloor}

    Args:
        learning_rate: the initial learning rate :math:`\eta_0 \ge 0` (torch's optimizer ``lr``).
        step_size: the period of the decay, a positive integer.
        gamma: the multiplicative factor :math:`\gamma > 0` (default 0.1).

    Examples:
        >>> import jax.numpy as jnp
        >>> from optkit import schedules
        >>> schedule = schedules.step_lr(1.0, step_size=2, gamma=0.5)
        >>> schedule(jnp.arange(6))
        Array([1.  , 1.  , 0.5 , 0.5 , 0.25, 0.25], dtype=float32)
    """
    _validation.non_negative("learning_rate", learning_rate)
    step_size = _validation.positive_int("step_size", step_size)
    _validation.positive("gamma", gamma)

    def factor(count: jax.Array) -> jax.Array:
        decays = as_count(count) // step_size
        return as_float(gamma) ** as_float(decays)

    return FactorSchedule(learning_rate, factor, "StepLR")


def multistep_lr(learning_rate: Scalar, milestones: Iterable[int], gamma: Scalar = 0.1) -> Schedule:
    r"""Decay by ``gamma`` at each milestone. Same values as
    ``torch.optim.lr_scheduler.MultiStepLR``.

    .. math::
        \eta_k = \eta_0 \, \gamma^{\#\{i \,:\, m_i \le k\}}

    A milestone listed twice decays twice, as in torch.

    Args:
        learning_rate: the initial learning rate :math:`\eta_0 \ge 0`.
        milestones: the update counts :math:`m_i` at which to decay: non-negative integers in
            non-decreasing order.
        gamma: the multiplicative factor :math:`\gamma > 0` (default 0.1).

    Examples:
        >>> import jax.numpy as jnp
        >>> from optkit import schedules
        >>> schedule = schedules.multistep_lr(1.0, milestones=[1, 3], gamma=0.5)
        >>> schedule(jnp.arange(5))
        Array([1.  , 0.5 , 0.5 , 0.25, 0.25], dtype=float32)
    """
    _validation.non_negative("learning_rate", learning_rate)
    milestones = _validation.boundaries("milestones", milestones)
    _validation.positive("gamma", gamma)

    def factor(count: jax.Array) -> jax.Array:
        passed = jnp.searchsorted(jnp.asarray(milestones, dtype=jnp.int32), count, side="right")
        return as_float(gamma) ** as_float(passed)

    return FactorSchedule(learning_rate, factor, "MultiStepLR")


def constant_lr(learning_rate: Scalar, factor: Scalar = 1.0 / 3, total_iters: int = 5) -> Schedule:
    r"""Scale by ``factor`` for the first ``total_iters`` updates. Same values as
    ``torch.optim.lr_scheduler.ConstantLR``.

    .. math::
        \eta_k = \eta_0 \cdot \begin{cases} f & k < T \\ 1 & k \ge T \end{cases}

    Args:
        learning_rate: the initial learning rate :math:`\eta_0 \ge 0`.
        factor: :math:`f \in [0, 1]` (default 1/3).
        total_iters: :math:`T`, a positive integer (default 5).

    Examples:
        >>> import jax.numpy as jnp
        >>> from optkit import schedules
        >>> schedules.constant_lr(1.0, factor=0.5, total_iters=2)(jnp.arange(4))
        Array([0.5, 0.5, 1. , 1. ], dtype=float32)
    """
    _validation.non_negative("learning_rate", learning_rate)
    _validation.scalar("factor", factor, low=0.0, high=1.0)
    total_iters = _validation.positive_int("total_iters", total_iters)

    def scale(count: jax.Array) -> jax.Array:
        return jnp.where(as_count(count) < total_iters, as_float(factor), as_float(1.0))

    return FactorSchedule(learning_rate, scale, "ConstantLR")


def linear_lr(
    learning_rate: Scalar,
    start_factor: Scalar = 1.0 / 3,
    end_factor: Scalar = 1.0,
    total_iters: int = 5,
) -> Schedule:
    r"""Interpolate the factor linearly over ``total_iters`` updates, then hold it. Same values
    as ``torch.optim.lr_scheduler.LinearLR``.

    .. math::
        \eta_k = \eta_0 \left(s + (e - s) \frac{\min(k, T)}{T}\right)

    Args:
        learning_rate: the initial learning rate :math:`\eta_0 \ge 0`.
        start_factor: :math:`s \in (0, 1]` (default 1/3; torch's range: its recursive update
            divides by it).
        end_factor: :math:`e \in [0, 1]` (default 1).
        total_iters: :math:`T`, a positive integer (default 5).

    Examples:
        >>> import jax.numpy as jnp
        >>> from optkit import schedules
        >>> schedules.linear_lr(1.0, start_factor=0.25, total_iters=3)(jnp.arange(5))
        Array([0.25, 0.5 , 0.75, 1.  , 1.  ], dtype=float32)
    """
    _validation.non_negative("learning_rate", learning_rate)
    _validation.positive("start_factor", start_factor, high=1.0)
    _validation.scalar("end_factor", end_factor, low=0.0, high=1.0)
    total_iters = _validation.positive_int("total_iters", total_iters)

    def factor(count: jax.Array) -> jax.Array:
        progress = as_float(jnp.minimum(as_count(count), total_iters)) / total_iters
        start, end = as_float(start_factor), as_float(end_factor)
        return start + (end - start) * progress

    return FactorSchedule(learning_rate, factor, "LinearLR")


def exponential_lr(learning_rate: Scalar, gamma: Scalar) -> Schedule:
    r"""Decay by ``gamma`` every update. Same values as ``torch.optim.lr_scheduler.ExponentialLR``.

    .. math::
        \eta_k = \eta_0 \, \gamma^k

    Args:
        learning_rate: the initial learning rate :math:`\eta_0 \ge 0`.
        gamma: the multiplicative factor :math:`\gamma > 0`.

    Examples:
        >>> import jax.numpy as jnp
        >>> from optkit import schedules
        >>> schedules.exponential_lr(1.0, gamma=0.5)(jnp.arange(4))
        Array([1.   , 0.5  , 0.25 , 0.125], dtype=float32)
    """
    _validation.non_negative("learning_rate", learning_rate)
    _validation.positive("gamma", gamma)

    def factor(count: jax.Array) -> jax.Array:
        return as_float(gamma) ** as_float(count)

    return FactorSchedule(learning_rate, factor, "ExponentialLR")


def polynomial_lr(learning_rate: Scalar, total_iters: int = 5, power: Scalar = 1.0) -> Schedule:
    r"""Decay polynomially to zero over ``total_iters`` updates, then stay at zero. Same values
    as ``torch.optim.lr_scheduler.PolynomialLR``.

    .. math::
        \eta_k = \eta_0 \left(1 - \frac{\min(k, T)}{T}\right)^p

    Args:
        learning_rate: the initial learning rate :math:`\eta_0 \ge 0`.
        total_iters: :math:`T`, a positive integer (default 5).
        power: :math:`p \ge 0` (default 1).

    Examples:
        >>> import jax.numpy as jnp
        >>> from optkit import schedules
        >>> schedules.polynomial_lr(1.0, total_iters=4, power=2.0)(jnp.arange(6))
        Array([1.    , 0.5625, 0.25  , 0.0625, 0.    , 0.    ], dtype=float32)
    """
    _validation.non_negative("learning_rate", learning_rate)
    total_iters = _validation.positive_int("total_iters", total_iters)
    _validation.non_negative("power", power)

    def factor(count: jax.Array) -> jax.Array:
        # The remaining steps are counted in integers, so the base is exact until the division.
        remaining = total_iters - jnp.minimum(as_count(count), total_iters)
        return (as_float(remaining) / total_iters) ** as_float(power)

    return FactorSchedule(learning_rate, factor, "PolynomialLR")


def lambda_lr(
    learning_rate: Scalar, lr_lambda: Callable[[jax.Array], jax.typing.ArrayLike]
) -> Schedule:
    r"""Multiply the initial learning rate by a function of the count. Same values as
    ``torch.optim.lr_scheduler.LambdaLR``.

    .. math::
        \eta_k = \eta_0 \, \lambda(k)

    Args:
        learning_rate: the initial learning rate :math:`\eta_0 \ge 0`.
        lr_lambda: :math:`\lambda`, called with the count as a JAX array of the default integer
            dtype (torch passes a Python int). It is traced under ``jit``, so it must use
            ``jax.numpy`` operations (``jnp.where``, not ``if``). Plain arithmetic such as
            ``lambda k: 0.95**k`` works for torch and here alike.

    Examples:
        >>> import jax.numpy as jnp
        >>> from optkit import schedules
        >>> schedule = schedules.lambda_lr(0.5, lambda k: 1.0 / (1.0 + k))
        >>> schedule(jnp.arange(4))
        Array([0.5       , 0.25      , 0.16666667, 0.125     ], dtype=float32)
    """
    _validation.non_negative("learning_rate", learning_rate)
    lr_lambda = _validation.function("lr_lambda", lr_lambda)

    def factor(count: jax.Array) -> jax.Array:
        # The default int dtype (int64 under x64), so ``k / 10`` in the lambda gives the default
        # float dtype: an int32 count would make it float32 even under ``jax_enable_x64``.
        return as_float(lr_lambda(jnp.asarray(count, dtype=jnp.result_type(int))))

    # torch's LambdaLR sets the lr from the initial lr instead of scaling the current one.
    return FactorSchedule(learning_rate, factor, "LambdaLR", sets_lr=True)


def multiplicative_lr(
    learning_rate: Scalar, lr_lambda: Callable[[int], float], total_steps: int
) -> Schedule:
    r"""Multiply the learning rate by ``lr_lambda(k)`` at every update ``k`` up to ``total_steps``.
    Same values as ``torch.optim.lr_scheduler.MultiplicativeLR`` over ``total_steps`` updates.

    .. math::
        \eta_k = \eta_0 \prod_{j=1}^{\min(k, N)} \lambda(j)

    torch calls ``lr_lambda`` with the epoch at each ``scheduler.step()`` and multiplies the
    current lr by its value. Here ``lr_lambda`` is evaluated once for each epoch
    :math:`1, \dots, N` when the schedule is built, so it may be any Python function of an
    ``int`` (``if`` statements included, unlike :func:`lambda_lr`'s traced one); the products
    are tabulated in float64 and looked up at the count under ``jit``.

    Past :math:`N` = ``total_steps`` the value holds at :math:`\eta_N` (torch would go on
    multiplying by ``lr_lambda(N + 1), ...``): give ``total_steps`` at least the number of
    updates of the run (the table holds ``total_steps + 1`` factors). optax has no counterpart.

    Args:
        learning_rate: the initial learning rate :math:`\eta_0 \ge 0`.
        lr_lambda: :math:`\lambda`, a Python function of the integer epoch returning a finite
            real number (the factor of that step).
        total_steps: :math:`N`, the number of updates tabulated, a positive integer.

    Examples:
        >>> import jax.numpy as jnp
        >>> from optkit import schedules
        >>> halve_every_2 = lambda epoch: 0.5 if epoch % 2 == 0 else 1.0
        >>> schedule = schedules.multiplicative_lr(1.0, halve_every_2, total_steps=4)
        >>> schedule(jnp.arange(7))
        Array([1.  , 1.  , 0.5 , 0.5 , 0.25, 0.25, 0.25], dtype=float32)
    """
    _validation.non_negative("learning_rate", learning_rate)
    lr_lambda = _validation.function("lr_lambda", lr_lambda)
    total_steps = _validation.positive_int("total_steps", total_steps)
    ratios = np.ones(total_steps + 2)  # step 0 (construction) and past total_steps: 1
    for epoch in range(1, total_steps + 1):
        ratios[epoch] = _factor_value(lr_lambda, epoch)
    # Multiplied in torch's order, step after step, in float64.
    factors = np.cumprod(ratios[: total_steps + 1])

    def lookup(table: np.ndarray, count: jax.Array) -> jax.Array:
        return as_float(table)[jnp.clip(as_count(count), 0, len(table) - 1)]

    return FactorSchedule(
        learning_rate,
        functools.partial(lookup, factors),
        "MultiplicativeLR",
        ratio=functools.partial(lookup, ratios),
    )


def _factor_value(lr_lambda: Callable[[int], float], epoch: int) -> float:
    """``lr_lambda(epoch)`` as a Python float, or an error naming the epoch."""
    value = lr_lambda(epoch)
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = None
    if number is None or not np.isfinite(number):
        raise ValueError(f"lr_lambda({epoch}) must return a finite real number, got {value!r}.")
    return number
