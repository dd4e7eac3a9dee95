"""RMSprop: gradients divided by a running root-mean-square, with torch's momentum buffer."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from optkit import _numerics, _tree, _validation
from optkit._base import GradientTransformation, Params, Scalar, ScalarOrSchedule, Updates
from optkit._kernel import leaf_kernel
from optkit.optimizers._compose import chain_present, described, maybe_l2_decay, maybe_negate
from optkit.transforms.momentum import TraceState, trace
from optkit.transforms.scaling import (
    scale_by_learning_rate_as_alpha,
    scale_by_learning_rate_unless_half,
)


class ScaleByRmsState(NamedTuple):
    """Update count (torch's ``step``), running average of squared gradients ``nu`` and, when
    centered, of gradients ``mu``."""

    count: jax.Array
    nu: Updates
    mu: Updates | None

    # Buffers that are never negative: quantize_state stores them with an unsigned map.
    non_negative_fields = ("nu",)


class RmsLeaf(NamedTuple):
    nu: jax.Array
    update: jax.Array


class CenteredRmsLeaf(NamedTuple):
    nu: jax.Array
    mu: jax.Array
    update: jax.Array


def _average_of_squares(nu, g, *, alpha, one_minus_alpha):
    """torch's ``nu.mul_(alpha).addcmul_(g, g, value=1 - alpha)``, rounded as its ops are."""
    rounded = _numerics.rounded
    return rounded(rounded(alpha * nu) + one_minus_alpha * (g * g)).astype(nu.dtype)


def _plus_eps(root, eps):
    """torch's ``avg.add_(eps)``: eps is rounded to a 16-bit dtype, as the sum is."""
    return _numerics.rounded(root + _numerics.rounded_scalar(eps))


@leaf_kernel
def _rms(nu, update, *, alpha, one_minus_alpha, eps, step_size) -> RmsLeaf:
    nu = _average_of_squares(nu, update, alpha=alpha, one_minus_alpha=one_minus_alpha)
    step = update / _plus_eps(_numerics.rounded(jnp.sqrt(nu)), eps)
    return RmsLeaf(nu, _times_step_size(step, step_size))


def _times_step_size(step, step_size):
    """On float16/bfloat16 leaves given ``step_size``, ``step_size * step`` unrounded between:
    torch's ``param.addcdiv_(g, avg, value=-lr)`` (RMSprop without momentum)."""
    if _numerics.storing_half() and step_size is not None:
        return step_size * step
    return step


@leaf_kernel
def _centered_rms(nu, mu, update, *, alpha, one_minus_alpha, eps, step_size) -> CenteredRmsLeaf:
    nu = _average_of_squares(nu, update, alpha=alpha, one_minus_alpha=one_minus_alpha)
    rounded = _numerics.rounded
    mu = rounded(_numerics.lerp(mu, update, one_minus_alpha)).astype(mu.dtype)
    root = rounded(jnp.sqrt(rounded(nu - mu * mu)))
    return CenteredRmsLeaf(nu, mu, _times_step_size(update / _plus_eps(root, eps), step_size))


def scale_by_rms(
    alpha: Scalar = 0.99,
    eps: Scalar = 1e-8,
    centered: bool = False,
) -> GradientTransformation:
    r"""Divide updates by the root of a running average of squared gradients (RMSprop).

    .. math::
        v_t = \alpha v_{t-1} + (1 - \alpha) g_t^2, \qquad
        u_t = \frac{g_t}{\sqrt{v_t} + \epsilon}

    Centered, :math:`\bar g_t = \bar g_{t-1} + (1 - \alpha)(g_t - \bar g_{t-1})` and the
    denominator is :math:`\sqrt{v_t - \bar g_t^2} + \epsilon`. Both buffers start at zero and
    ``eps`` sits outside the square root, as in ``torch.optim.RMSprop`` (optax's ``scale_by_rms``
    puts it inside and starts differently).

    Args:
        alpha: smoothing constant in ``[0, 1]``.
        eps: added to the denominator, outside the square root (``>= 0``).
        centered: normalize by the estimated variance instead of the raw second moment.

    Examples:
        >>> import jax.numpy as jnp, optkit
        >>> tx = optkit.scale_by_rms(alpha=0.0, eps=0.0)
        >>> tx.update(jnp.array([2.0, -3.0]), tx.init(jnp.zeros(2)))[0]
        Array([ 1., -1.], dtype=float32)
    """
    return _scale_by_rms(alpha, eps, centered, None)


def _scale_by_rms(
    alpha: Scalar, eps: Scalar, centered: bool, learning_rate: ScalarOrSchedule | None
) -> GradientTransformation:
    """:func:`scale_by_rms`; given ``learning_rate``, its float16/bfloat16 leaves' updates are
    the whole step, ``-learning_rate`` included (:func:`scale_by_learning_rate_unless_half`
    follows it)."""
    _validation.hyperparameters(alpha=alpha, eps=eps)
    centered = _validation.boolean("centered", centered)

    def init(params: Params) -> ScaleByRmsState:
        return ScaleByRmsState(
            count=_numerics.zero_count(params),
            nu=_tree.zeros_like(params),
            mu=_tree.zeros_like(params) if centered else None,
        )

    def update(
        updates: Updates, state: ScaleByRmsState, params: Params | None = None, **extra_args: Any
    ) -> tuple[Updates, ScaleByRmsState]:
        del params, extra_args
        updates = _tree.check_updates(state.nu, updates, "scale_by_rms")
        scalars = {"alpha": alpha, "one_minus_alpha": 1.0 - alpha, "eps": eps, "step_size": None}
        if learning_rate is not None:
            lr = _numerics.value_at(learning_rate, state.count, "rmsprop: learning_rate")
            scalars["step_size"] = -lr
        count = _numerics.increment(state.count)
        if centered:
            new = _centered_rms(state.nu, state.mu, updates, **scalars)
            return new.update, ScaleByRmsState(count=count, nu=new.nu, mu=new.mu)
        new = _rms(state.nu, updates, **scalars)
        return new.update, ScaleByRmsState(count=count, nu=new.nu, mu=None)

    return GradientTransformation(init, update)


class RmsMomentumLeaf(NamedTuple):
    nu: jax.Array
    trace: jax.Array
    update: jax.Array


class CenteredRmsMomentumLeaf(NamedTuple):
    nu: jax.Array
    mu: jax.Array
    trace: jax.Array
    update: jax.Array


def _momentum_step(trace, step, param, *, momentum, step_size):
    """torch's ``buf.mul_(momentum).addcdiv_(g, avg)`` given ``step = g / avg`` (not rounded:
    ``addcdiv_`` rounds once), and the update: ``buf`` on float32/float64 leaves (the learning
    rate follows), on float16/bfloat16 leaves the whole step ``param.add_(buf, alpha=step_size)``
    (its alpha rounded to the param's dtype) as the new param minus the old."""
    rounded = _numerics.rounded
    trace = rounded(rounded(momentum * trace) + step).astype(trace.dtype)
    if not _numerics.storing_half():
        return trace, trace
    new = _numerics.rounded(param + _numerics.rounded_scalar(step_size) * trace)
    # An infinite param that torch leaves as it is moves by 0 (inf - inf would be NaN).
    return trace, jnp.where(new == param, 0.0, new - param)


@leaf_kernel
def _rms_momentum(
    nu, trace, update, param, *, alpha, one_minus_alpha, eps, momentum, step_size
) -> RmsMomentumLeaf:
    nu = _average_of_squares(nu, update, alpha=alpha, one_minus_alpha=one_minus_alpha)
    step = update / _plus_eps(_numerics.rounded(jnp.sqrt(nu)), eps)
    trace, update = _momentum_step(trace, step, param, momentum=momentum, step_size=step_size)
    return RmsMomentumLeaf(nu, trace, update)


@leaf_kernel
def _centered_rms_momentum(
    nu, mu, trace, update, param, *, alpha, one_minus_alpha, eps, momentum, step_size
) -> CenteredRmsMomentumLeaf:
    nu = _average_of_squares(nu, update, alpha=alpha, one_minus_alpha=one_minus_alpha)
    rounded = _numerics.rounded
    mu = rounded(_numerics.lerp(mu, update, one_minus_alpha)).astype(mu.dtype)
    root = rounded(jnp.sqrt(rounded(nu - mu * mu)))
    step = update / _plus_eps(root, eps)
    trace, update = _momentum_step(trace, step, param, momentum=momentum, step_size=step_size)
    return CenteredRmsMomentumLeaf(nu, mu, trace, update)


def _rmsprop_with_momentum(
    head: GradientTransformation,
    learning_rate: ScalarOrSchedule,
    alpha: Scalar,
    eps: Scalar,
    momentum: float,
    centered: bool,
) -> GradientTransformation:
    """The chain ``head`` -> ``scale_by_rms`` -> ``trace(momentum)`` ->
    ``scale_by_learning_rate`` (same state, transform by transform), for a Python ``momentum``
    > 0, taken in one kernel per leaf: on float16/bfloat16 leaves torch's
    ``buf.mul_(momentum).addcdiv_(g, avg)`` rounds once (``g / avg`` is not rounded) and the
    update is the whole step, ``param.add_(buf, alpha=-lr)``; float32/float64 leaves get the
    chain's math."""
    rms = scale_by_rms(alpha=alpha, eps=eps, centered=centered)
    momentum_tx = trace(momentum)
    # Same state as scale_by_learning_rate_as_alpha; 16-bit leaves' updates already hold -lr.
    tail = scale_by_learning_rate_unless_half(learning_rate)

    def init(params: Params) -> tuple[Any, ...]:
        return (*head.init(params), rms.init(params), momentum_tx.init(params), tail.init(params))

    def update(
        updates: Updates, state: tuple[Any, ...], params: Params | None = None, **extra_args: Any
    ) -> tuple[Updates, tuple[Any, ...]]:
        *head_state, rms_state, trace_state, tail_state = state
        updates, head_state = head.update(updates, tuple(head_state), params, **extra_args)
        updates = _tree.check_updates(rms_state.nu, updates, "scale_by_rms")
        updates = _tree.check_updates(trace_state.trace, updates, "trace", "momentum buffer")
        if params is None:
            # A 16-bit leaf's update is then its rounded step, -lr included, from a zero param.
            params = _tree.zeros_like(rms_state.nu)
        else:
            _tree.check_match(params, updates, "rmsprop", "params", "updates")
        lr = learning_rate
        if callable(learning_rate):
            lr = _numerics.value_at(learning_rate, tail_state.count, "rmsprop: learning_rate")
        scalars = {
            "alpha": alpha,
            "one_minus_alpha": 1.0 - alpha,
            "eps": eps,
            "momentum": momentum,
            "step_size": -lr,
        }
        if centered:
            new = _centered_rms_momentum(
                rms_state.nu, rms_state.mu, trace_state.trace, updates, params, **scalars
            )
            mu = new.mu
        else:
            new = _rms_momentum(rms_state.nu, trace_state.trace, updates, params, **scalars)
            mu = None
        rms_state = ScaleByRmsState(count=_numerics.increment(rms_state.count), nu=new.nu, mu=mu)
        trace_state = TraceState(count=_numerics.increment(trace_state.count), trace=new.trace)
        updates, tail_state = tail.update(new.update, tail_state, params)
        return updates, (*head_state, rms_state, trace_state, tail_state)

    return GradientTransformation(init, update)


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
        alpha: smoothing constant :math:`\alpha` in ``[0, 1]`` (default 0.99).
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

    References:
        Hinton, `Lecture 6e: rmsprop <https://www.cs.toronto.edu/~tijmen/csc321/slides/lecture_slides_lec6.pdf>`_,
        2012; Graves, `Generating Sequences With Recurrent Neural Networks
        <https://arxiv.org/abs/1308.0850>`_, 2013 (centered).
    """
    _validation.hyperparameters(
        learning_rate=learning_rate, weight_decay=weight_decay, momentum=momentum
    )
    if _validation.is_static_zero(momentum) or _validation.static_number(momentum) is None:
        transform = _rmsprop_chain(
            learning_rate, alpha, eps, weight_decay, momentum, centered, maximize
        )
    else:
        transform = _rmsprop_with_momentum(
            chain_present(maybe_negate(maximize), maybe_l2_decay(weight_decay)),
            learning_rate,
            alpha,
            eps,
            momentum,
            centered,
        )
    return described(
        transform,
        "RMSprop",
        elementwise=True,
        learning_rate=learning_rate,
        alpha=alpha,
        eps=eps,
        weight_decay=weight_decay,
        momentum=momentum,
        centered=centered,
        maximize=maximize,
    )


def _rmsprop_chain(
    learning_rate: ScalarOrSchedule,
    alpha: Scalar,
    eps: Scalar,
    weight_decay: Scalar,
    momentum: Scalar,
    centered: bool,
    maximize: bool,
) -> GradientTransformation:
    """:func:`rmsprop` as a chain: without momentum, or with a run-time (array) momentum, whose
    first-step and count rules ``trace`` keeps."""
    without_momentum = _validation.is_static_zero(momentum)
    return chain_present(
        maybe_negate(maximize),
        maybe_l2_decay(weight_decay),
        # torch's last op: param.addcdiv_(g, avg, value=-lr) (taken whole on 16-bit leaves),
        # or param.add_(buf, alpha=-lr).
        _scale_by_rms(alpha, eps, centered, learning_rate)
        if without_momentum
        else scale_by_rms(alpha=alpha, eps=eps, centered=centered),
        None if without_momentum else trace(momentum),
        scale_by_learning_rate_unless_half(learning_rate)
        if without_momentum
        else scale_by_learning_rate_as_alpha(learning_rate),
    )
