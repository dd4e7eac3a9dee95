"""Scaling primitives: constant factors, learning rates (constant or scheduled) and sign flips."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax

from optkit import _numerics, _tree, _validation
from optkit._base import (
    GradientTransformation,
    Params,
    Scalar,
    ScalarOrSchedule,
    Updates,
    stateless,
)
from optkit._kernel import leaf_kernel


class ScaleByScheduleState(NamedTuple):
    """The number of updates applied so far; the schedule is evaluated at this 0-based count."""

    count: jax.Array


@leaf_kernel
def _scale(update: jax.Array, *, factor: Any) -> jax.Array:
    return update * factor


@leaf_kernel
def _scale_as_alpha(update: jax.Array, *, factor: Any) -> jax.Array:
    """torch's ``param.add_(update, alpha=factor)``, whose alpha is rounded to a 16-bit dtype
    (``addcdiv_``'s and ``mul_``'s scalars are not: :func:`_scale`)."""
    return update * _numerics.rounded_scalar(factor)


@leaf_kernel
def _scale_unless_half(update: jax.Array, *, factor: Any) -> jax.Array:
    """:func:`_scale` on float32/float64 leaves; float16/bfloat16 leaves pass unchanged (their
    preconditioner applied the learning rate already, rounding once as torch's last op does)."""
    return update if _numerics.storing_half() else update * factor


def scale_tree(updates: Updates, factor: Any) -> Updates:
    """Multiply every leaf by a scalar, in the leaf's own dtype (a JAX scalar is cast to it)."""
    return _scale(updates, factor=factor)


def scale(step_size: Scalar) -> GradientTransformation:
    """Multiply updates by a constant ``step_size`` (any sign).

    Examples:
        >>> import jax.numpy as jnp, optkit
        >>> tx = optkit.scale(0.5)
        >>> tx.update(jnp.array([2.0, -4.0]), tx.init(None))[0]
        Array([ 1., -2.], dtype=float32)
    """
    _validation.hyperparameters(step_size=step_size)

    return stateless(
        lambda updates, params: scale_tree(_tree.check_floating(updates, "scale"), step_size)
    )


def negate() -> GradientTransformation:
    """Flip the sign of the updates: torch's ``maximize=True``, which negates the gradient first.

    Put it at the start of a chain to ascend the objective instead of descending it.
    """
    return scale(-1.0)


def scale_by_learning_rate(
    learning_rate: ScalarOrSchedule, *, flip_sign: bool = True
) -> GradientTransformation:
    """Scale updates by ``-learning_rate`` (or ``+learning_rate`` with ``flip_sign=False``).

    Updates are deltas to add to the params, so descent needs the minus sign.

    Args:
        learning_rate: a non-negative number, a JAX scalar, or a schedule: a function of the
            0-based update count returning the learning rate for that update (the ``k``-th update
            uses ``schedule(k)``, as torch's lr after ``k`` ``scheduler.step()`` calls).
        flip_sign: negate the learning rate (the default) so that updates descend.

    Examples:
        >>> import jax.numpy as jnp, optkit
        >>> tx = optkit.scale_by_learning_rate(lambda count: 0.1 / (1 + count))
        >>> state = tx.init(jnp.zeros(1))
        >>> u, state = tx.update(jnp.ones(1), state)
        >>> u, state = tx.update(jnp.ones(1), state)
        >>> u
        Array([-0.05], dtype=float32)
    """
    return _by_learning_rate(learning_rate, flip_sign, _scale)


def scale_by_learning_rate_as_alpha(learning_rate: ScalarOrSchedule) -> GradientTransformation:
    """:func:`scale_by_learning_rate` for optimizers whose last torch op is
    ``param.add_(update, alpha=-lr)`` (SGD, RMSprop with momentum, Adadelta): on float16 and
    bfloat16 params the learning rate is rounded to their dtype first, as torch's ``add_``
    rounds its alpha. The same on float32 and float64 params."""
    return _by_learning_rate(learning_rate, True, _scale_as_alpha)


def scale_by_learning_rate_unless_half(learning_rate: ScalarOrSchedule) -> GradientTransformation:
    """:func:`scale_by_learning_rate` (``flip_sign=True``) for float32 and float64 leaves, the
    identity on float16 and bfloat16 leaves: for an optimizer whose preconditioner applies
    ``-learning_rate`` itself on 16-bit leaves, as torch's last op (``param.addcdiv_(m, d,
    value=-lr / bc)``) does in one rounding. Same state as :func:`scale_by_learning_rate`."""
    return _by_learning_rate(learning_rate, True, _scale_unless_half)


def _by_learning_rate(
    learning_rate: ScalarOrSchedule, flip_sign: bool, kernel: Any
) -> GradientTransformation:
    _validation.hyperparameters(learning_rate=learning_rate)
    flip_sign = _validation.boolean("flip_sign", flip_sign)
    sign = -1.0 if flip_sign else 1.0

    if not callable(learning_rate):
        factor = sign * learning_rate
        _validation.hyperparameters(step_size=factor)
        return stateless(lambda updates, params: kernel(updates, factor=factor))

    def init(params: Params) -> ScaleByScheduleState:
        return ScaleByScheduleState(count=_numerics.zero_count(params))

    def update(
        updates: Updates,
        state: ScaleByScheduleState,
        params: Params | None = None,
        **extra_args: Any,
    ) -> tuple[Updates, ScaleByScheduleState]:
        del params, extra_args
        factor = sign * _validation.call_schedule("learning_rate", learning_rate, state.count)
        if factor.ndim != 0:
            raise ValueError(
                f"scale_by_learning_rate: the schedule returned shape {factor.shape}; it must "
                "return a scalar."
            )
        updates = _tree.check_floating(updates, "scale_by_learning_rate")
        new_state = ScaleByScheduleState(_numerics.increment(state.count))
        return kernel(updates, factor=factor), new_state

    return GradientTransformation(init, update)
