"""Schedules run one after another: torch's SequentialLR and optax's join_schedules.

Both hand over at fixed counts, and the schedule taking over starts again from count 0, so the
two are the same function under their libraries' argument names.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import jax
import jax.numpy as jnp

from optkit import _validation
from optkit._base import Schedule
from optkit.schedules._curves import as_count, as_float


def _sequence(schedules: Sequence[Schedule], switches: Iterable[int], name: str) -> Schedule:
    """Run ``schedules[i + 1]`` from count ``switches[i]`` on, restarted at its count 0."""
    if isinstance(schedules, str | bytes) or not isinstance(schedules, Sequence):
        raise TypeError(f"schedules must be a sequence of schedules, got {schedules!r}.")
    schedules = tuple(_validation.function(f"schedules[{i}]", s) for i, s in enumerate(schedules))
    if not schedules:
        raise ValueError("schedules must hold at least one schedule, got none.")
    switches = _validation.boundaries(name, switches)
    if len(switches) != len(schedules) - 1:
        raise ValueError(
            f"{name} must hold one entry fewer than schedules: got {len(switches)} {name} for "
            f"{len(schedules)} schedules."
        )

    def schedule(count: jax.Array) -> jax.Array:
        count = as_count(count)
        value = as_float(schedules[0](count))
        for switch, later in zip(switches, schedules[1:], strict=True):
            # Clamped so a schedule is never asked for a negative count, even where unused.
            restarted = as_float(later(jnp.maximum(count - switch, 0)))
            value = jnp.where(count < switch, value, restarted)
        return value

    return schedule


def sequential_lr(schedules: Sequence[Schedule], milestones: Iterable[int]) -> Schedule:
    r"""Switch between schedules at milestones, each restarting from count 0. Same values as
    ``torch.optim.lr_scheduler.SequentialLR`` over the corresponding torch schedulers.

    .. math::
        \eta_k = S_i(k - m_i) \quad \text{for } m_i \le k < m_{i+1}
        \qquad (m_0 = 0,\ m_{n} = \infty)

    Give every schedule the same initial learning rate, as torch's schedulers share the
    optimizer's. Each schedule takes over at its own count 0, as torch does (it evaluates the
    incoming scheduler's closed form at epoch 0), so a milestone is a restart, not a handover of
    the current value.

    Args:
        schedules: :math:`S_0, \dots, S_n`, any functions of the count (optkit, optax or your own).
        milestones: :math:`m_1, \dots, m_n`, non-negative integers in non-decreasing order, one
            fewer than ``schedules``.

    Examples:
        >>> import jax.numpy as jnp
        >>> from optkit import schedules
        >>> warmup = schedules.linear_lr(1.0, start_factor=0.25, total_iters=3)
        >>> decay = schedules.exponential_lr(1.0, gamma=0.5)
        >>> schedules.sequential_lr([warmup, decay], milestones=[3])(jnp.arange(6))
        Array([0.25, 0.5 , 0.75, 1.  , 0.5 , 0.25], dtype=float32)
    """
    return _sequence(schedules, milestones, "milestones")


def join_schedules(schedules: Sequence[Schedule], boundaries: Iterable[int]) -> Schedule:
    r"""Switch between schedules at boundaries, each restarting from count 0. Same semantics and
    arguments as ``optax.join_schedules`` (which is :func:`sequential_lr` under optax's names).

    .. math::
        \eta_k = S_i(k - b_i) \quad \text{for } b_i \le k < b_{i+1}
        \qquad (b_0 = 0,\ b_{n} = \infty)

    Args:
        schedules: :math:`S_0, \dots, S_n`, any functions of the count.
        boundaries: :math:`b_1, \dots, b_n`, non-negative integers in non-decreasing order, one
            fewer than ``schedules``.

    Examples:
        >>> import jax.numpy as jnp
        >>> from optkit import schedules
        >>> hold = schedules.constant_lr(1.0, factor=1.0)
        >>> decay = schedules.polynomial_lr(1.0, total_iters=2)
        >>> schedules.join_schedules([hold, decay], boundaries=[2])(jnp.arange(5))
        Array([1. , 1. , 1. , 0.5, 0. ], dtype=float32)
    """
    return _sequence(schedules, boundaries, "boundaries")
