"""Adadelta: steps scaled by the ratio of running RMS of past steps to running RMS of gradients."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from optkit import _numerics, _tree, _validation
from optkit._base import GradientTransformation, Params, Scalar, ScalarOrSchedule, Updates
from optkit._kernel import leaf_kernel
from optkit.optimizers._compose import chain_present, described, maybe_l2_decay, maybe_negate
from optkit.transforms.scaling import scale_by_learning_rate_as_alpha


class ScaleByAdadeltaState(NamedTuple):
    """Update count (torch's ``step``), running average of squared gradients ``square_avg`` and
    of squared steps ``acc_delta`` (torch's state names)."""

    count: jax.Array
    square_avg: Updates
    acc_delta: Updates

    # Buffers that are never negative: quantize_state stores them with an unsigned map.
    non_negative_fields = ("square_avg", "acc_delta")


class AdadeltaLeaf(NamedTuple):
    square_avg: jax.Array
    acc_delta: jax.Array
    update: jax.Array


def _average_of_squares(average, x, *, rho, one_minus_rho):
    """torch's ``average.mul_(rho).addcmul_(x, x, value=1 - rho)``, rounded as its ops are."""
    rounded = _numerics.rounded
    return rounded(rounded(rho * average) + one_minus_rho * (x * x)).astype(average.dtype)


def _root(average, eps):
    """torch's ``average.add(eps).sqrt_()``: eps is rounded to a 16-bit dtype, as the sum is."""
    rounded = _numerics.rounded
    return rounded(jnp.sqrt(rounded(average + _numerics.rounded_scalar(eps))))


@leaf_kernel
def _adadelta(square_avg, acc_delta, update, *, rho, one_minus_rho, eps) -> AdadeltaLeaf:
    rounded = _numerics.rounded
    square_avg = _average_of_squares(square_avg, update, rho=rho, one_minus_rho=one_minus_rho)
    # torch's delta.div_(std).mul_(g): the step is formed, and rounded to the leaf's dtype,
    # before it enters acc_delta.
    ratio = rounded(_root(acc_delta, eps) / _root(square_avg, eps))
    delta = rounded(ratio * update).astype(update.dtype)
    acc_delta = _average_of_squares(acc_delta, delta, rho=rho, one_minus_rho=one_minus_rho)
    return AdadeltaLeaf(square_avg, acc_delta, delta)


def scale_by_adadelta(rho: Scalar = 0.9, eps: Scalar = 1e-6) -> GradientTransformation:
    r"""Scale updates by Adadelta's ratio of running root mean squares.

    .. math::
        v_t = \rho v_{t-1} + (1 - \rho) g_t^2, \qquad
        \Delta_t = \frac{\sqrt{u_{t-1} + \epsilon}}{\sqrt{v_t + \epsilon}}\, g_t, \qquad
        u_t = \rho u_{t-1} + (1 - \rho) \Delta_t^2

    and the update is :math:`\Delta_t`. Both averages start at zero; ``eps`` is inside both
    square roots, as in ``torch.optim.Adadelta`` (and optax's ``scale_by_adadelta``).

    Args:
        rho: decay of both running averages, in ``[0, 1]``.
        eps: added inside both square roots (``>= 0``); with the averages at zero it sets the
            first steps' size, :math:`\sqrt{\epsilon / (\epsilon + (1 - \rho) g^2)}\, g`.

    Examples:
        >>> import jax.numpy as jnp, optkit
        >>> tx = optkit.scale_by_adadelta(rho=0.0, eps=16.0)
        >>> updates, _ = tx.update(jnp.array([3.0, 0.0]), tx.init(jnp.zeros(2)))
        >>> updates  # sqrt(0 + 16) / sqrt(3**2 + 16) * 3
        Array([2.4, 0. ], dtype=float32)
    """
    _validation.hyperparameters(rho=rho, eps=eps)

    def init(params: Params) -> ScaleByAdadeltaState:
        return ScaleByAdadeltaState(
            count=_numerics.zero_count(params),
            square_avg=_tree.zeros_like(params),
            acc_delta=_tree.zeros_like(params),
        )

    def update(
        updates: Updates,
        state: ScaleByAdadeltaState,
        params: Params | None = None,
        **extra_args: Any,
    ) -> tuple[Updates, ScaleByAdadeltaState]:
        del params, extra_args
        updates = _tree.check_updates(state.square_avg, updates, "scale_by_adadelta")
        new = _adadelta(
            state.square_avg, state.acc_delta, updates, rho=rho, one_minus_rho=1.0 - rho, eps=eps
        )
        return new.update, ScaleByAdadeltaState(
            count=_numerics.increment(state.count),
            square_avg=new.square_avg,
            acc_delta=new.acc_delta,
        )

    return GradientTransformation(init, update)


def adadelta(
    learning_rate: ScalarOrSchedule = 1.0,
    rho: Scalar = 0.9,
    eps: Scalar = 1e-6,
    weight_decay: Scalar = 0.0,
    *,
    maximize: bool = False,
) -> GradientTransformation:
    r"""Adadelta. Same math and defaults as ``torch.optim.Adadelta``.

    .. math::
        g_t &\leftarrow \nabla_\theta f_t(\theta_{t-1}) + \lambda \theta_{t-1} \\
        v_t &= \rho v_{t-1} + (1 - \rho) g_t^2 \\
        \Delta_t &= \frac{\sqrt{u_{t-1} + \epsilon}}{\sqrt{v_t + \epsilon}}\, g_t \\
        u_t &= \rho u_{t-1} + (1 - \rho) \Delta_t^2 \\
        \theta_t &= \theta_{t-1} - \gamma \Delta_t

    :math:`v` and :math:`u` start at zero and are kept in each parameter's dtype. The learning
    rate :math:`\gamma` multiplies the step but does not enter :math:`u_t`, so a schedule
    rescales the steps without changing their history (torch's rule). optax's ``adadelta`` has
    the same math, but its ``learning_rate`` defaults to ``None``, which skips the
    learning-rate scale and its minus sign (its default steps uphill), it has no ``maximize``,
    and it takes a mask for its (also coupled) weight decay.

    The chain is ``negate`` (maximize) -> ``add_l2_decay`` -> ``scale_by_adadelta`` ->
    ``scale_by_learning_rate``.

    Args:
        learning_rate: :math:`\gamma`, a number or a schedule (torch's ``lr``; default 1.0).
        rho: :math:`\rho` in ``[0, 1]``, the decay of both running averages (default 0.9).
        eps: :math:`\epsilon \ge 0`, inside both square roots (default ``1e-6``).
        weight_decay: L2 coefficient :math:`\lambda \ge 0`, added to the gradient (default 0).
        maximize: ascend the objective instead of descending it.

    Examples:
        >>> import jax.numpy as jnp, optkit
        >>> params = jnp.array([1.0, -2.0])
        >>> tx = optkit.adadelta(rho=0.0, eps=1.0)  # step: sqrt(1) / sqrt(g**2 + 1) * g
        >>> updates, _ = tx.update(2 * params, tx.init(params), params)
        >>> [round(float(p), 4) for p in optkit.apply_updates(params, updates)]
        [0.1056, -1.0299]

    References:
        Zeiler, `ADADELTA: An Adaptive Learning Rate Method
        <https://arxiv.org/abs/1212.5701>`_, 2012.
    """
    _validation.hyperparameters(learning_rate=learning_rate, weight_decay=weight_decay)
    transform = chain_present(
        maybe_negate(maximize),
        maybe_l2_decay(weight_decay),
        scale_by_adadelta(rho=rho, eps=eps),
        scale_by_learning_rate_as_alpha(learning_rate),  # torch's param.add_(delta, alpha=-lr)
    )
    return described(
        transform,
        "Adadelta",
        elementwise=True,
        learning_rate=learning_rate,
        rho=rho,
        eps=eps,
        weight_decay=weight_decay,
        maximize=maximize,
    )
