"""RMSprop: gradients divided by a running root-mean-square, with torch's momentum buffer."""

from __future__ import annotations

from optkit import _validation
from optkit._base import GradientTransformation, Scalar, ScalarOrSchedule
from optkit.optimizers._compose import (
    chain_present,
    check_learning_rate,
    maybe_l2_decay,
    maybe_negate,
)
from optkit.transforms.adaptive import scale_by_rms
from optkit.transforms.momentum import trace
from optkit.transforms.scaling import scale_by_learning_rate


def rmsprop(
    learning_rate: ScalarOrSchedule = 1e-2,
    alpha: Scalar = 0.99,
    eps: Scalar = 1e-8,
    weight_decay: Scalar = 0.0,
    momentum: Scalar = 0.0,
    centered: bool = False,
    *,
    maximize: bool = False,
) -> GradientTransformation:
    r"""RMSprop. Same math and defaults as ``torch.optim.RMSprop``.

    .. math::
        g_t &\leftarrow \nabla_\theta f_t(\theta_{t-1}) + \lambda \theta_{t-1} \\
        v_t &= \alpha v_{t-1} + (1 - \alpha) g_t^2 \\
        d_t &= \sqrt{v_t} + \epsilon \quad
            (\text{centered: } \sqrt{v_t - \bar g_t^2} + \epsilon,\
            \bar g_t = \alpha \bar g_{t-1} + (1 - \alpha) g_t) \\
        b_t &= \mu b_{t-1} + g_t / d_t, \quad \theta_t = \theta_{t-1} - \gamma b_t
            \quad (\text{or } \theta_{t-1} - \gamma g_t / d_t \text{ without momentum})

    ``eps`` is outside the square root, and the momentum buffer holds :math:`g/d` before the
    learning rate is applied, so a scheduled learning rate scales the whole buffer as in torch
    (optax's rmsprop puts eps inside, defaults ``decay=0.9``, and applies momentum after the
    learning rate).

    The chain is ``negate`` (maximize) -> ``add_l2_decay`` -> ``scale_by_rms`` -> ``trace`` ->
    ``scale_by_learning_rate``.

    Args:
        learning_rate: :math:`\gamma`, a number or a schedule (torch's ``lr``; default ``1e-2``).
        alpha: smoothing constant :math:`\alpha` in ``[0, 1)`` (default 0.99).
        eps: :math:`\epsilon \ge 0` (default ``1e-8``).
        weight_decay: L2 coefficient :math:`\lambda \ge 0` (default 0).
        momentum: :math:`\mu \ge 0` (default 0).
        centered: normalize by the estimated variance of the gradient.
        maximize: ascend the objective instead of descending it.

    Examples:
        >>> import jax.numpy as jnp, optkit
        >>> params = jnp.array([1.0, -2.0])
        >>> tx = optkit.rmsprop(learning_rate=0.01, alpha=0.0, eps=0.0)
        >>> updates, _ = tx.update(2 * params, tx.init(params), params)
        >>> optkit.apply_updates(params, updates)
        Array([ 0.99, -1.99], dtype=float32)
    """
    check_learning_rate(learning_rate)
    _validation.decay_rate("alpha", alpha)
    _validation.non_negative("eps", eps)
    _validation.non_negative("weight_decay", weight_decay)
    _validation.non_negative("momentum", momentum)
    return chain_present(
        maybe_negate(maximize),
        maybe_l2_decay(weight_decay),
        scale_by_rms(alpha=alpha, eps=eps, centered=centered),
        None if _validation.is_static_zero(momentum) else trace(momentum),
        scale_by_learning_rate(learning_rate),
    )
