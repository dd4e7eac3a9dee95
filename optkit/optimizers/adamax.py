"""Adamax: Adam with the second moment replaced by an exponentially weighted infinity norm."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from optkit import _numerics, _tree, _validation
from optkit._base import GradientTransformation, Params, Scalar, ScalarOrSchedule, Updates
from optkit._kernel import leaf_kernel
from optkit.optimizers._compose import chain_present, described, maybe_l2_decay, maybe_negate
from optkit.transforms.scaling import scale_by_learning_rate_unless_half


class ScaleByAdamaxState(NamedTuple):
    """Update count, first moment ``mu`` (torch's ``exp_avg``) and the weighted infinity norm
    ``inf_norm`` (torch's ``exp_inf``)."""

    count: jax.Array
    mu: Updates
    inf_norm: Updates

    # Buffers that are never negative: quantize_state stores them with an unsigned map.
    non_negative_fields = ("inf_norm",)


class AdamaxLeaf(NamedTuple):
    mu: jax.Array
    inf_norm: jax.Array
    update: jax.Array


@leaf_kernel
def _adamax(
    mu, inf_norm, update, *, one_minus_b1, b2, eps, bias_correction1, step_size
) -> AdamaxLeaf:
    # torch's exp_avg.lerp_(g, 1 - b1) and maximum(exp_inf.mul_(b2), g.abs().add_(eps)), rounded
    # as its ops are (eps rounded to a 16-bit dtype first: 1e-8 is 0 in float16).
    rounded = _numerics.rounded
    mu = rounded(_numerics.lerp(mu, update, one_minus_b1)).astype(mu.dtype)
    # eps is added to |g| before the maximum (torch's rule), not to the norm afterwards.
    abs_plus_eps = rounded(jnp.abs(update) + _numerics.rounded_scalar(eps))
    inf_norm = jnp.maximum(rounded(b2 * inf_norm), abs_plus_eps).astype(inf_norm.dtype)
    if _numerics.storing_half() and step_size is not None:
        # torch's param.addcdiv_(exp_avg, exp_inf, value=-lr / bias_correction1), one rounding.
        return AdamaxLeaf(mu, inf_norm, step_size * (mu / inf_norm))
    return AdamaxLeaf(mu, inf_norm, (mu / inf_norm) / bias_correction1)


def scale_by_adamax(
    b1: Scalar = 0.9,
    b2: Scalar = 0.999,
    eps: Scalar = 1e-8,
) -> GradientTransformation:
    r"""Scale updates by Adamax's bias-corrected first moment over the weighted infinity norm.

    .. math::
        m_t = m_{t-1} + (1 - \beta_1)(g_t - m_{t-1}), \qquad
        u_t = \max(\beta_2 u_{t-1}, |g_t| + \epsilon)

        \text{update}_t = \frac{m_t}{(1 - \beta_1^t)\, u_t}

    Both buffers start at zero; :math:`u` needs no bias correction. Same rule as
    ``torch.optim.Adamax`` and optax's ``scale_by_adamax``.

    Args:
        b1: first-moment decay in ``[0, 1)``.
        b2: infinity-norm decay in ``[0, 1)``.
        eps: added to :math:`|g_t|` inside the maximum (``>= 0``).

    Examples:
        >>> import jax.numpy as jnp, optkit
        >>> tx = optkit.scale_by_adamax(eps=0.0)
        >>> updates, _ = tx.update(jnp.array([0.5, -2.0]), tx.init(jnp.zeros(2)))
        >>> updates.round(6)  # first step: sign(g), to float32 rounding
        Array([ 1., -1.], dtype=float32)
    """
    return _scale_by_adamax(b1, b2, eps, None)


def _scale_by_adamax(
    b1: Scalar, b2: Scalar, eps: Scalar, learning_rate: ScalarOrSchedule | None
) -> GradientTransformation:
    """:func:`scale_by_adamax`; given ``learning_rate``, its float16/bfloat16 leaves' updates are
    the whole step, ``-learning_rate`` included (:func:`scale_by_learning_rate_unless_half`
    follows it)."""
    _validation.hyperparameters(b1=b1, b2=b2, eps=eps)

    def init(params: Params) -> ScaleByAdamaxState:
        return ScaleByAdamaxState(
            count=_numerics.zero_count(params),
            mu=_tree.zeros_like(params),
            inf_norm=_tree.zeros_like(params),
        )

    def update(
        updates: Updates, state: ScaleByAdamaxState, params: Params | None = None, **extra_args: Any
    ) -> tuple[Updates, ScaleByAdamaxState]:
        del params, extra_args
        updates = _tree.check_updates(state.mu, updates, "scale_by_adamax")
        count = _numerics.increment(state.count)
        bias_correction1 = _numerics.bias_correction(b1, count)
        step_size = None
        if learning_rate is not None:
            lr = _numerics.value_at(learning_rate, state.count, "adamax: learning_rate")
            step_size = -lr / bias_correction1
        new = _adamax(
            state.mu,
            state.inf_norm,
            updates,
            one_minus_b1=1.0 - b1,
            b2=b2,
            eps=eps,
            bias_correction1=bias_correction1,
            step_size=step_size,
        )
        return new.update, ScaleByAdamaxState(count=count, mu=new.mu, inf_norm=new.inf_norm)

    return GradientTransformation(init, update)


def adamax(
    learning_rate: ScalarOrSchedule = 2e-3,
    b1: Scalar = 0.9,
    b2: Scalar = 0.999,
    eps: Scalar = 1e-8,
    weight_decay: Scalar = 0.0,
    *,
    maximize: bool = False,
) -> GradientTransformation:
    r"""Adamax with L2 weight decay. Same math and defaults as ``torch.optim.Adamax``.

    .. math::
        g_t &\leftarrow \nabla_\theta f_t(\theta_{t-1}) + \lambda \theta_{t-1} \\
        m_t &= \beta_1 m_{t-1} + (1 - \beta_1) g_t \\
        u_t &= \max(\beta_2 u_{t-1}, |g_t| + \epsilon) \\
        \theta_t &= \theta_{t-1} - \frac{\gamma}{1 - \beta_1^t} \frac{m_t}{u_t}

    ``eps`` is added to :math:`|g_t|` *inside* the maximum, so it only matters while the
    gradients are smaller than it. Both buffers start at zero and are kept in each parameter's
    dtype; the first step is :math:`\gamma\, g_1 / (|g_1| + \epsilon)`, about
    :math:`\gamma \operatorname{sign}(g_1)`. optax's ``adamax`` has the same math but no
    default learning rate, weight decay or ``maximize``.

    The chain is ``negate`` (maximize) -> ``add_l2_decay`` -> ``scale_by_adamax`` ->
    ``scale_by_learning_rate``.

    Args:
        learning_rate: :math:`\gamma`, a number or a schedule (torch's ``lr``; default ``2e-3``).
        b1: :math:`\beta_1` in ``[0, 1)`` (torch's ``betas[0]``; default 0.9).
        b2: :math:`\beta_2` in ``[0, 1)`` (torch's ``betas[1]``; default 0.999).
        eps: :math:`\epsilon \ge 0` (default ``1e-8``).
        weight_decay: L2 coefficient :math:`\lambda \ge 0`, added to the gradient (default 0).
        maximize: ascend the objective instead of descending it.

    Examples:
        >>> import jax, jax.numpy as jnp, optkit
        >>> params = jnp.array([1.0, -2.0])
        >>> tx = optkit.adamax(learning_rate=0.5, eps=0.0)
        >>> state = tx.init(params)
        >>> grads = jax.grad(lambda p: jnp.sum(p**2))(params)
        >>> updates, state = tx.update(grads, state, params)
        >>> optkit.apply_updates(params, updates).round(6)  # p - lr * sign(g)
        Array([ 0.5, -1.5], dtype=float32)

    References:
        Kingma and Ba, `Adam: A Method for Stochastic Optimization
        <https://arxiv.org/abs/1412.6980>`_, 2014 (section 7.1, AdaMax).
    """
    _validation.hyperparameters(learning_rate=learning_rate, weight_decay=weight_decay)
    transform = chain_present(
        maybe_negate(maximize),
        maybe_l2_decay(weight_decay),
        _scale_by_adamax(b1, b2, eps, learning_rate),
        scale_by_learning_rate_unless_half(learning_rate),
    )
    return described(
        transform,
        "Adamax",
        elementwise=True,
        learning_rate=learning_rate,
        b1=b1,
        b2=b2,
        eps=eps,
        weight_decay=weight_decay,
        maximize=maximize,
    )
