"""Adagrad: per-element step sizes from the running sum of squared gradients."""

from __future__ import annotations

import jax

from optkit import _validation
from optkit._base import GradientTransformation, Scalar, ScalarOrSchedule
from optkit.optimizers._compose import (
    chain_present,
    check_learning_rate,
    maybe_l2_decay,
    maybe_negate,
)
from optkit.transforms.adaptive import scale_by_rss
from optkit.transforms.scaling import scale_by_learning_rate


def _decayed_learning_rate(learning_rate: ScalarOrSchedule, lr_decay: Scalar) -> ScalarOrSchedule:
    """torch's ``clr = lr / (1 + (t - 1) * lr_decay)`` as a schedule of the 0-based count."""
    if _validation.is_static_zero(lr_decay):
        return learning_rate

    def schedule(count: jax.Array) -> jax.Array:
        base = learning_rate(count) if callable(learning_rate) else learning_rate
        return base / (1 + count * lr_decay)

    return schedule


def adagrad(
    learning_rate: ScalarOrSchedule = 1e-2,
    lr_decay: Scalar = 0.0,
    weight_decay: Scalar = 0.0,
    initial_accumulator_value: Scalar = 0.0,
    eps: Scalar = 1e-10,
    *,
    maximize: bool = False,
) -> GradientTransformation:
    r"""Adagrad. Same math and defaults as ``torch.optim.Adagrad``.

    .. math::
        g_t &\leftarrow \nabla_\theta f_t(\theta_{t-1}) + \lambda \theta_{t-1} \\
        \tilde\gamma_t &= \gamma / (1 + (t - 1)\,\eta) \\
        s_t &= s_{t-1} + g_t^2, \quad s_0 = \text{initial\_accumulator\_value} \\
        \theta_t &= \theta_{t-1} - \tilde\gamma_t\, g_t / (\sqrt{s_t} + \epsilon)

    ``eps`` is outside the square root and the accumulator starts at 0 by default (optax's
    adagrad uses 0.1 and puts ``eps`` inside).

    The chain is ``negate`` (maximize) -> ``add_l2_decay`` -> ``scale_by_rss`` ->
    ``scale_by_learning_rate`` (with the ``lr_decay`` schedule).

    Args:
        learning_rate: :math:`\gamma`, a number or a schedule (torch's ``lr``; default ``1e-2``).
        lr_decay: :math:`\eta \ge 0`, the learning-rate decay (default 0).
        weight_decay: L2 coefficient :math:`\lambda \ge 0` (default 0).
        initial_accumulator_value: :math:`s_0 \ge 0` (default 0).
        eps: :math:`\epsilon \ge 0` (default ``1e-10``).
        maximize: ascend the objective instead of descending it.

    Examples:
        >>> import jax.numpy as jnp, optkit
        >>> params = jnp.array([1.0, -2.0])
        >>> tx = optkit.adagrad(learning_rate=0.5)
        >>> updates, _ = tx.update(2 * params, tx.init(params), params)
        >>> optkit.apply_updates(params, updates)
        Array([ 0.5, -1.5], dtype=float32)
    """
    check_learning_rate(learning_rate)
    _validation.non_negative("lr_decay", lr_decay)
    _validation.non_negative("weight_decay", weight_decay)
    _validation.non_negative("initial_accumulator_value", initial_accumulator_value)
    _validation.non_negative("eps", eps)
    return chain_present(
        maybe_negate(maximize),
        maybe_l2_decay(weight_decay),
        scale_by_rss(initial_accumulator_value=initial_accumulator_value, eps=eps),
        scale_by_learning_rate(_decayed_learning_rate(learning_rate, lr_decay)),
    )
