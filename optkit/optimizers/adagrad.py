"""Adagrad: per-element step sizes from the running sum of squared gradients."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from optkit import _numerics, _tree, _validation
from optkit._base import GradientTransformation, Params, Scalar, ScalarOrSchedule, Updates
from optkit._kernel import leaf_kernel
from optkit.optimizers._compose import chain_present, described, maybe_l2_decay, maybe_negate
from optkit.transforms.scaling import scale_by_learning_rate_unless_half


class ScaleByRssState(NamedTuple):
    """Update count (torch's ``step``) and the running sum of squared gradients (Adagrad's
    accumulator, torch's ``sum``)."""

    count: jax.Array
    sum_of_squares: Updates

    # Buffers that are never negative: quantize_state stores them with an unsigned map.
    non_negative_fields = ("sum_of_squares",)


class RssLeaf(NamedTuple):
    sum_of_squares: jax.Array
    update: jax.Array


@leaf_kernel
def _rss(sum_of_squares, update, *, eps, step_size) -> RssLeaf:
    # torch's sum.addcmul_(g, g), then sum.sqrt().add_(eps), rounded as its ops are (a float16
    # sum overflows to inf past 65504, as torch's does).
    rounded = _numerics.rounded
    sum_of_squares = rounded(sum_of_squares + update * update).astype(sum_of_squares.dtype)
    root = rounded(jnp.sqrt(sum_of_squares))
    step = update / rounded(root + _numerics.rounded_scalar(eps))
    if _numerics.storing_half() and step_size is not None:
        # torch's param.addcdiv_(g, std, value=-clr): the learning rate applied before rounding.
        step = step_size * step
    return RssLeaf(sum_of_squares, step)


def scale_by_rss(
    initial_accumulator_value: Scalar = 0.0,
    eps: Scalar = 1e-10,
) -> GradientTransformation:
    r"""Divide updates by the root of the running sum of squared gradients (Adagrad).

    .. math::
        s_t = s_{t-1} + g_t^2, \quad s_0 = \text{initial\_accumulator\_value}, \qquad
        u_t = \frac{g_t}{\sqrt{s_t} + \epsilon}

    Same accumulator and eps placement as ``torch.optim.Adagrad`` (optax's ``scale_by_rss``
    starts at 0.1 and puts eps inside the square root).

    Args:
        initial_accumulator_value: starting value of the sum (``>= 0``).
        eps: added to the denominator, outside the square root (``>= 0``).

    Examples:
        >>> import jax.numpy as jnp, optkit
        >>> tx = optkit.scale_by_rss(eps=0.0)
        >>> tx.update(jnp.array([3.0, -4.0]), tx.init(jnp.zeros(2)))[0]
        Array([ 1., -1.], dtype=float32)
    """
    return _scale_by_rss(initial_accumulator_value, eps, None)


def _scale_by_rss(
    initial_accumulator_value: Scalar, eps: Scalar, learning_rate: ScalarOrSchedule | None
) -> GradientTransformation:
    """:func:`scale_by_rss`; given ``learning_rate``, its float16/bfloat16 leaves' updates are
    the whole step, ``-learning_rate`` included (:func:`scale_by_learning_rate_unless_half`
    follows it)."""
    _validation.hyperparameters(initial_accumulator_value=initial_accumulator_value, eps=eps)

    def init(params: Params) -> ScaleByRssState:
        return ScaleByRssState(
            count=_numerics.zero_count(params),
            sum_of_squares=_tree.full_like(params, initial_accumulator_value),
        )

    def update(
        updates: Updates, state: ScaleByRssState, params: Params | None = None, **extra_args: Any
    ) -> tuple[Updates, ScaleByRssState]:
        del params, extra_args
        updates = _tree.check_updates(state.sum_of_squares, updates, "scale_by_rss")
        step_size = None
        if learning_rate is not None:
            lr = _numerics.value_at(learning_rate, state.count, "adagrad: learning_rate")
            step_size = -lr
        new = _rss(state.sum_of_squares, updates, eps=eps, step_size=step_size)
        return new.update, ScaleByRssState(
            count=_numerics.increment(state.count), sum_of_squares=new.sum_of_squares
        )

    return GradientTransformation(init, update)


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

    References:
        Duchi, Hazan and Singer, `Adaptive Subgradient Methods for Online Learning and
        Stochastic Optimization <https://jmlr.org/papers/v12/duchi11a.html>`_, 2011.
    """
    _validation.hyperparameters(
        learning_rate=learning_rate, lr_decay=lr_decay, weight_decay=weight_decay
    )
    decayed = _decayed_learning_rate(learning_rate, lr_decay)
    transform = chain_present(
        maybe_negate(maximize),
        maybe_l2_decay(weight_decay),
        _scale_by_rss(initial_accumulator_value, eps, decayed),
        scale_by_learning_rate_unless_half(decayed),
    )
    return described(
        transform,
        "Adagrad",
        elementwise=True,
        learning_rate=learning_rate,
        lr_decay=lr_decay,
        weight_decay=weight_decay,
        initial_accumulator_value=initial_accumulator_value,
        eps=eps,
        maximize=maximize,
    )
