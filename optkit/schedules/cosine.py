r"""Cosine schedules: torch's annealing with and without warm restarts, and optax's warmup + decay.

The cosine factor :math:`\tfrac12(1 + \cos)` is evaluated in a form that keeps its relative
precision near the minimum, even in float32 (``_curves.cosine_weight``); periods and restarts
are located in integer arithmetic.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from optkit import _validation
from optkit._base import Scalar, Schedule
from optkit.schedules._curves import as_count, as_float, cosine_weight

_INT32_MAX = 2**31 - 1


def cosine_annealing_lr(learning_rate: Scalar, T_max: int, eta_min: Scalar = 0.0) -> Schedule:
    r"""Cosine annealing from ``learning_rate`` to ``eta_min`` over ``T_max`` updates. Same values
    as ``torch.optim.lr_scheduler.CosineAnnealingLR``.

    .. math::
        \eta_k = \eta_{\min} + \tfrac12 (\eta_0 - \eta_{\min})
            \left(1 + \cos\frac{\pi k}{T_{\max}}\right)

    Past ``T_max`` the value follows the cosine back up (period :math:`2 T_{\max}`) rather than
    restarting or holding: that is what torch's recursive ``step()`` produces, and these closed
    form values agree with it to relative 1e-11 in float64. For restarts use
    :func:`cosine_annealing_warm_restarts`; to hold the minimum, :func:`warmup_cosine_decay`.

    Args:
        learning_rate: the initial (maximum) learning rate :math:`\eta_0 \ge 0`.
        T_max: the half period :math:`T_{\max}`, a positive integer.
        eta_min: the minimum learning rate :math:`\eta_{\min}`, any finite number, as in torch
            (default 0).

    Examples:
        >>> import jax.numpy as jnp
        >>> from optkit import schedules
        >>> schedule = schedules.cosine_annealing_lr(1.0, T_max=4)
        >>> schedule(jnp.arange(9))
        Array([1.        , 0.8535534 , 0.5       , 0.14644663, 0.        ,
               0.14644663, 0.5       , 0.8535534 , 1.        ], dtype=float32)
    """
    _validation.non_negative("learning_rate", learning_rate)
    T_max = _validation.positive_int("T_max", T_max)
    _validation.finite("eta_min", eta_min)

    def schedule(count: jax.Array) -> jax.Array:
        # Distance to the nearest minimum, in [0, T_max]: the cosine is symmetric about it.
        to_minimum = jnp.abs(T_max - jnp.remainder(as_count(count), 2 * T_max))
        low = as_float(eta_min)
        return low + (as_float(learning_rate) - low) * cosine_weight(as_float(to_minimum) / T_max)

    return schedule


def _restart_table(T_0: int, T_mult: int) -> tuple[list[int], list[int]]:
    """The first update of every cycle that starts within int32 range, and each cycle's length."""
    starts, lengths = [0], [T_0]
    while starts[-1] + lengths[-1] <= _INT32_MAX:
        starts.append(starts[-1] + lengths[-1])
        lengths.append(lengths[-1] * T_mult)
    return starts, lengths


def cosine_annealing_warm_restarts(
    learning_rate: Scalar,
    T_0: int,
    T_mult: int = 1,
    eta_min: Scalar = 0.0,
) -> Schedule:
    r"""Cosine annealing that restarts at ``learning_rate``, each cycle ``T_mult`` times longer
    than the last (SGDR). Same values as ``torch.optim.lr_scheduler.CosineAnnealingWarmRestarts``
    stepped once per update.

    .. math::
        \eta_k = \eta_{\min} + \tfrac12 (\eta_0 - \eta_{\min})
            \left(1 + \cos\frac{\pi T_{cur}}{T_i}\right)

    where cycle :math:`i = 0, 1, \dots` has length :math:`T_i = T_0 T_{mult}^i` and
    :math:`T_{cur} \in [0, T_i)` counts the updates since it began.

    Args:
        learning_rate: the learning rate :math:`\eta_0 \ge 0` at every restart.
        T_0: the length of the first cycle, a positive integer.
        T_mult: the growth factor of the cycle length, an integer >= 1 (default 1).
        eta_min: the minimum learning rate :math:`\eta_{\min}`, any finite number, as in torch
            (default 0).

    Examples:
        >>> import jax.numpy as jnp
        >>> from optkit import schedules
        >>> schedule = schedules.cosine_annealing_warm_restarts(1.0, T_0=2, T_mult=2)
        >>> schedule(jnp.arange(8))
        Array([1.        , 0.5       , 1.        , 0.8535534 , 0.5       ,
               0.14644663, 1.        , 0.9619398 ], dtype=float32)
    """
    _validation.non_negative("learning_rate", learning_rate)
    T_0 = _validation.positive_int("T_0", T_0)
    T_mult = _validation.positive_int("T_mult", T_mult)
    _validation.finite("eta_min", eta_min)
    starts, lengths = _restart_table(T_0, T_mult) if T_mult > 1 else ([0], [T_0])

    def cycle_position(count: jax.Array) -> tuple[jax.Array, jax.Array]:
        """(updates since the last restart, length of the current cycle as a float)."""
        if T_mult == 1:
            return jnp.remainder(count, T_0), as_float(T_0)
        # The last cycle may be longer than int32 allows, so lengths are tabulated as floats.
        cycle = jnp.searchsorted(jnp.asarray(starts, dtype=jnp.int32), count, side="right") - 1
        since_restart = count - jnp.asarray(starts, dtype=jnp.int32)[cycle]
        return since_restart, as_float(lengths)[cycle]

    def schedule(count: jax.Array) -> jax.Array:
        since_restart, length = cycle_position(as_count(count))
        remaining = (length - as_float(since_restart)) / length
        low = as_float(eta_min)
        return low + (as_float(learning_rate) - low) * cosine_weight(remaining)

    return schedule


def warmup_cosine_decay(
    init_value: Scalar,
    peak_value: Scalar,
    warmup_steps: int,
    decay_steps: int,
    end_value: Scalar = 0.0,
    exponent: Scalar = 1.0,
) -> Schedule:
    r"""Linear warmup to ``peak_value``, then cosine decay to ``end_value``, then hold. Same
    semantics and arguments as ``optax.warmup_cosine_decay_schedule``.

    With :math:`W` = ``warmup_steps``, :math:`D` = ``decay_steps`` (which counts the warmup too)
    and :math:`c = \min(k - W, D - W)`:

    .. math::
        \eta_k = \begin{cases}
            \eta_{init} + (\eta_{peak} - \eta_{init}) \, k / W & k < W \\
            \eta_{end} + (\eta_{peak} - \eta_{end})
                \left[\tfrac12 \left(1 + \cos\frac{\pi c}{D - W}\right)\right]^{p} & k \ge W
        \end{cases}

    torch has no single class for this: with the optimizer's lr at ``peak_value`` it equals
    ``SequentialLR`` of ``LinearLR(start_factor=init_value / peak_value, total_iters=W)`` and
    ``CosineAnnealingLR(T_max=D - W, eta_min=end_value)`` with milestone :math:`W`, up to count
    :math:`D`; past it torch's cosine climbs back up while this schedule holds ``end_value``.

    Args:
        init_value: the value at count 0 (>= 0).
        peak_value: the value reached at the end of the warmup (>= 0).
        warmup_steps: :math:`W`, a non-negative integer (0 starts at the peak).
        decay_steps: :math:`D`, an integer greater than ``warmup_steps``: the count at which
            ``end_value`` is reached.
        end_value: the final value, any finite number, as in optax (default 0). As in optax,
            it has no effect when ``peak_value`` is 0: the decay phase is then 0.
        exponent: :math:`p \ge 0`, the power of the cosine factor (default 1).

    Examples:
        >>> import jax.numpy as jnp
        >>> from optkit import schedules
        >>> schedule = schedules.warmup_cosine_decay(0.0, 1.0, warmup_steps=2, decay_steps=6)
        >>> schedule(jnp.arange(8))
        Array([0.        , 0.5       , 1.        , 0.8535534 , 0.5       ,
               0.14644663, 0.        , 0.        ], dtype=float32)
    """
    _validation.non_negative("init_value", init_value)
    _validation.non_negative("peak_value", peak_value)
    _validation.finite("end_value", end_value)
    _validation.non_negative("exponent", exponent)
    warmup_steps = _validation.non_negative_int("warmup_steps", warmup_steps)
    decay_steps = _validation.positive_int("decay_steps", decay_steps)
    if decay_steps <= warmup_steps:
        raise ValueError(
            f"decay_steps must be greater than warmup_steps={warmup_steps} (it counts the "
            f"warmup too), got {decay_steps}."
        )
    decay_length = decay_steps - warmup_steps
    if _validation.is_static_zero(peak_value):
        # optax scales the decay by peak_value (end_value enters as end / peak), so with a zero
        # peak the decay phase is 0 whatever end_value says.
        end_value = 0.0

    def schedule(count: jax.Array) -> jax.Array:
        count = as_count(count)
        init, peak, end = as_float(init_value), as_float(peak_value), as_float(end_value)
        warming = init + (peak - init) * (as_float(count) / max(warmup_steps, 1))
        remaining = decay_length - jnp.clip(count - warmup_steps, 0, decay_length)
        weight = cosine_weight(as_float(remaining) / decay_length) ** as_float(exponent)
        return jnp.where(count < warmup_steps, warming, end + (peak - end) * weight)

    return schedule
