"""NAdam: Adam with Nesterov momentum and Dozat's warming momentum schedule, and NAdamW."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from optkit import _numerics, _tree, _validation
from optkit._base import GradientTransformation, Params, Scalar, ScalarOrSchedule, Updates
from optkit._kernel import leaf_kernel
from optkit.optimizers._compose import chain_present, described, maybe_l2_decay, maybe_negate
from optkit.optimizers.adam import AdamLeaf, moments
from optkit.transforms.scaling import scale_by_learning_rate_unless_half
from optkit.transforms.weight_decay import add_decayed_weights_unless_half

# torch keeps the product of the momentum schedule in float32 (its ``_get_scalar_dtype()`` under
# torch's default dtype), whatever the parameters' dtype.
MU_PRODUCT_DTYPE = jnp.float32


class ScaleByNadamState(NamedTuple):
    """Update count, the running product of the momentum schedule ``mu_product`` (a float32
    scalar, as torch keeps it), first moment ``mu`` and second moment ``nu``."""

    count: jax.Array
    mu_product: jax.Array
    mu: Updates
    nu: Updates

    # Buffers that are never negative: quantize_state stores them with an unsigned map.
    non_negative_fields = ("nu",)


def _denominator(nu, *, eps, bias_correction2):
    """torch's ``exp_avg_sq.div(bias_correction2).sqrt()`` then ``add_(eps)``, rounded as its
    ops are (eps rounded to a 16-bit dtype first: 1e-8 is 0 in float16). torch divides by the
    bias correction before the square root."""
    rounded = _numerics.rounded
    root = rounded(jnp.sqrt(rounded(nu / bias_correction2)))
    return rounded(root + _numerics.rounded_scalar(eps))


@leaf_kernel
def _nadam(
    mu,
    nu,
    update,
    *,
    one_minus_b1,
    b2,
    one_minus_b2,
    eps,
    bias_correction2,
    gradient_coefficient,
    momentum_coefficient,
    learning_rate,
) -> AdamLeaf:
    mu, nu = moments(mu, nu, update, one_minus_b1=one_minus_b1, b2=b2, one_minus_b2=one_minus_b2)
    denominator = _denominator(nu, eps=eps, bias_correction2=bias_correction2)
    step = (gradient_coefficient * update) / denominator + (momentum_coefficient * mu) / denominator
    if _numerics.storing_half() and learning_rate is not None:
        # nadam() without params: the whole step on a 16-bit leaf, without torch's rounding of
        # the param between its two addcdiv_ (scale_by_learning_rate_unless_half follows).
        step = -learning_rate * step
    return AdamLeaf(mu, nu, step)


class _NadamStepLeaf(NamedTuple):
    mu: jax.Array
    nu: jax.Array
    update: jax.Array
    param: jax.Array


@leaf_kernel
def _nadam_step(
    mu,
    nu,
    update,
    param,
    *,
    one_minus_b1,
    b2,
    one_minus_b2,
    eps,
    bias_correction2,
    gradient_coefficient,
    momentum_coefficient,
    learning_rate,
    shrink,
) -> _NadamStepLeaf:
    """:func:`_nadam`, except on float16/bfloat16 leaves: there the update is the whole step,
    learning rate and decoupled decay included, rounded where torch's ops round the param:
    ``param.mul_(shrink)`` (NAdamW), then two ``param.addcdiv_`` (gradient, then momentum)."""
    if not _numerics.storing_half():
        new = _nadam.fn(
            mu,
            nu,
            update,
            one_minus_b1=one_minus_b1,
            b2=b2,
            one_minus_b2=one_minus_b2,
            eps=eps,
            bias_correction2=bias_correction2,
            gradient_coefficient=gradient_coefficient,
            momentum_coefficient=momentum_coefficient,
            learning_rate=None,
        )
        return _NadamStepLeaf(new.mu, new.nu, new.update, param)
    rounded = _numerics.rounded
    mu, nu = moments(mu, nu, update, one_minus_b1=one_minus_b1, b2=b2, one_minus_b2=one_minus_b2)
    denominator = _denominator(nu, eps=eps, bias_correction2=bias_correction2)
    new = param if shrink is None else rounded(param * shrink)
    new = rounded(new + (-learning_rate * gradient_coefficient) * (update / denominator))
    new = rounded(new + (-learning_rate * momentum_coefficient) * (mu / denominator))
    # An infinite param that torch leaves as it is moves by 0 (inf - inf would be NaN).
    return _NadamStepLeaf(mu, nu, jnp.where(new == param, 0.0, new - param), param)


def _momentum_schedule(b1: Any, momentum_decay: Any, step: jax.Array) -> jax.Array:
    r"""Dozat's :math:`\mu_t = \beta_1 (1 - 0.96^{t \psi} / 2)` at the 1-based ``step``."""
    return b1 * (1.0 - 0.5 * jnp.power(0.96, step * momentum_decay))


def scale_by_nadam(
    b1: Scalar = 0.9,
    b2: Scalar = 0.999,
    eps: Scalar = 1e-8,
    momentum_decay: Scalar = 4e-3,
) -> GradientTransformation:
    r"""Scale updates by NAdam's Nesterov-corrected moments, as ``torch.optim.NAdam`` does.

    .. math::
        \mu_t &= \beta_1 \bigl(1 - \tfrac12\, 0.96^{t \psi}\bigr), \quad
        \mu_{t+1} = \beta_1 \bigl(1 - \tfrac12\, 0.96^{(t + 1) \psi}\bigr), \quad
        \Pi_t = \textstyle\prod_{i=1}^{t} \mu_i \\
        m_t &= m_{t-1} + (1 - \beta_1)(g_t - m_{t-1}), \qquad
        v_t = \beta_2 v_{t-1} + (1 - \beta_2) g_t^2 \\
        d_t &= \sqrt{v_t / (1 - \beta_2^t)} + \epsilon \\
        u_t &= \frac{1 - \mu_t}{1 - \Pi_t} \frac{g_t}{d_t}
            + \frac{\mu_{t+1}}{1 - \Pi_t \mu_{t+1}} \frac{m_t}{d_t}

    :math:`\Pi_t` is kept in the state as a float32 scalar (``mu_product``), as torch keeps it
    (one per parameter, all equal), even for float64 parameters: each step multiplies it by
    :math:`\mu_t` rounded to float32. The schedule :math:`\mu_t` and the two coefficients are
    computed at the default float precision, as torch computes them in Python double. Unlike
    Adam, the bias correction divides :math:`v_t` before the square root.

    optax's ``nadam`` (``scale_by_adam(nesterov=True)``) is this rule with a constant
    :math:`\mu_t = \beta_1`: no warm-up schedule and no ``momentum_decay``.

    Args:
        b1: first-moment decay :math:`\beta_1` in ``[0, 1)``.
        b2: second-moment decay :math:`\beta_2` in ``[0, 1)``.
        eps: added to the denominator, outside the square root (``>= 0``).
        momentum_decay: :math:`\psi \ge 0`, how fast :math:`\mu_t` warms up to :math:`\beta_1`.

    Examples:
        >>> import jax.numpy as jnp, optkit
        >>> tx = optkit.scale_by_nadam(b1=0.0)  # no momentum: g / sqrt(g^2), the sign
        >>> tx.update(jnp.array([0.5, -2.0]), tx.init(jnp.zeros(2)))[0]
        Array([ 1., -1.], dtype=float32)
    """
    return _scale_by_nadam(b1, b2, eps, momentum_decay, None, None)


def _scale_by_nadam(
    b1: Scalar,
    b2: Scalar,
    eps: Scalar,
    momentum_decay: Scalar,
    learning_rate: ScalarOrSchedule | None,
    decoupled_weight_decay: Scalar | None,
) -> GradientTransformation:
    """:func:`scale_by_nadam`; given ``learning_rate`` and params, the updates of float16 and
    bfloat16 leaves are the whole step (the learning rate and, given
    ``decoupled_weight_decay``, NAdamW's shrink included), rounded where torch's ops round:
    ``scale_by_learning_rate_unless_half`` and ``add_decayed_weights_unless_half`` follow it."""
    _validation.hyperparameters(b1=b1, b2=b2, eps=eps, momentum_decay=momentum_decay)

    def init(params: Params) -> ScaleByNadamState:
        return ScaleByNadamState(
            count=_numerics.zero_count(params),
            mu_product=_tree.place_scalars(jnp.ones([], MU_PRODUCT_DTYPE), params),
            mu=_tree.zeros_like(params),
            nu=_tree.zeros_like(params),
        )

    def update(
        updates: Updates, state: ScaleByNadamState, params: Params | None = None, **extra_args: Any
    ) -> tuple[Updates, ScaleByNadamState]:
        del extra_args
        updates = _tree.check_updates(state.nu, updates, "scale_by_nadam")
        count = _numerics.increment(state.count)
        step = count.astype(jnp.result_type(float))
        mu_t = _momentum_schedule(b1, momentum_decay, step)
        mu_next = _momentum_schedule(b1, momentum_decay, step + 1)
        # torch: a float32 tensor times a Python double, which it rounds to float32 first.
        mu_product = state.mu_product * mu_t.astype(MU_PRODUCT_DTYPE)
        product = mu_product.astype(mu_t.dtype)
        scalars = dict(
            one_minus_b1=1.0 - b1,
            b2=b2,
            one_minus_b2=1.0 - b2,
            eps=eps,
            bias_correction2=_numerics.bias_correction(b2, count),
            gradient_coefficient=(1.0 - mu_t) / (1.0 - product),
            momentum_coefficient=mu_next / (1.0 - product * mu_next),
        )
        lr = None
        if learning_rate is not None:
            lr = _numerics.value_at(learning_rate, state.count, "nadam: learning_rate")
        if lr is None or params is None:
            new = _nadam(state.mu, state.nu, updates, learning_rate=lr, **scalars)
        else:
            _tree.check_match(params, updates, "nadam", "params", "updates")
            shrink = None
            if decoupled_weight_decay is not None:
                shrink = 1.0 - lr * decoupled_weight_decay
            new = _nadam_step(
                state.mu, state.nu, updates, params, learning_rate=lr, shrink=shrink, **scalars
            )
        return new.update, ScaleByNadamState(
            count=count, mu_product=mu_product, mu=new.mu, nu=new.nu
        )

    return GradientTransformation(init, update)


def nadam(
    learning_rate: ScalarOrSchedule = 2e-3,
    b1: Scalar = 0.9,
    b2: Scalar = 0.999,
    eps: Scalar = 1e-8,
    weight_decay: Scalar = 0.0,
    momentum_decay: Scalar = 4e-3,
    decoupled_weight_decay: bool = False,
    *,
    maximize: bool = False,
) -> GradientTransformation:
    r"""NAdam (and NAdamW). Same math and defaults as ``torch.optim.NAdam``.

    .. math::
        g_t &\leftarrow \nabla_\theta f_t(\theta_{t-1}) + \lambda \theta_{t-1}
            \quad (\text{coupled decay only}) \\
        \mu_t &= \beta_1 \bigl(1 - \tfrac12\, 0.96^{t \psi}\bigr), \quad
        \Pi_t = \textstyle\prod_{i=1}^{t} \mu_i \\
        m_t &= \beta_1 m_{t-1} + (1 - \beta_1) g_t, \quad
        v_t = \beta_2 v_{t-1} + (1 - \beta_2) g_t^2 \\
        \theta_t &= \theta_{t-1} - \gamma \left(
            \frac{1 - \mu_t}{1 - \Pi_t} g_t + \frac{\mu_{t+1}}{1 - \Pi_t \mu_{t+1}} m_t
            \right) \Big/ \left(\sqrt{v_t / (1 - \beta_2^t)} + \epsilon\right)

    With ``decoupled_weight_decay=True`` (torch's NAdamW), the gradient is left alone and the
    parameters shrink first, :math:`\theta \leftarrow \theta (1 - \gamma \lambda)`, with the
    decay following the (scheduled) learning rate as in torch. :math:`\Pi_t` is a float32 scalar
    whatever the parameters' dtype, as in torch (see :func:`scale_by_nadam`).

    The chain is ``negate`` (maximize) -> ``add_l2_decay`` (coupled) -> ``scale_by_nadam`` ->
    ``add_decayed_weights`` (decoupled) -> ``scale_by_learning_rate``. optax's ``nadam`` keeps
    :math:`\mu_t = \beta_1` constant: it has neither the warm-up schedule nor ``momentum_decay``.

    Args:
        learning_rate: :math:`\gamma`, a number or a schedule (torch's ``lr``; default ``2e-3``).
        b1: :math:`\beta_1` in ``[0, 1)`` (torch's ``betas[0]``; default 0.9).
        b2: :math:`\beta_2` in ``[0, 1)`` (torch's ``betas[1]``; default 0.999).
        eps: :math:`\epsilon \ge 0` (default ``1e-8``).
        weight_decay: :math:`\lambda \ge 0` (default 0), L2 unless ``decoupled_weight_decay``.
        momentum_decay: :math:`\psi \ge 0` (default ``4e-3``).
        decoupled_weight_decay: shrink the parameters instead of adding to the gradient (NAdamW).
        maximize: ascend the objective instead of descending it.

    Examples:
        >>> import jax, jax.numpy as jnp, optkit
        >>> params = jnp.array([1.0, -2.0])
        >>> tx = optkit.nadam(learning_rate=0.1)
        >>> state = tx.init(params)
        >>> grads = jax.grad(lambda p: jnp.sum(p**2))(params)
        >>> updates, state = tx.update(grads, state, params)
        >>> optkit.apply_updates(params, updates).round(4)  # first step: about 1.056 * lr * sign(g)
        Array([ 0.8944, -1.8944], dtype=float32)

    References:
        Dozat, `Incorporating Nesterov Momentum into Adam
        <https://openreview.net/forum?id=OM0jvwB8jIp57ZJjtNEZ>`_, 2016; Loshchilov and Hutter,
        `Decoupled Weight Decay Regularization <https://arxiv.org/abs/1711.05101>`_, 2019.
    """
    _validation.hyperparameters(learning_rate=learning_rate, weight_decay=weight_decay)
    decoupled = _validation.boolean("decoupled_weight_decay", decoupled_weight_decay)
    decay = decoupled and not _validation.is_static_zero(weight_decay)
    transform = chain_present(
        maybe_negate(maximize),
        None if decoupled else maybe_l2_decay(weight_decay),
        _scale_by_nadam(
            b1, b2, eps, momentum_decay, learning_rate, weight_decay if decay else None
        ),
        add_decayed_weights_unless_half(weight_decay) if decay else None,
        scale_by_learning_rate_unless_half(learning_rate),
    )
    return described(
        transform,
        "NAdam",
        elementwise=True,
        learning_rate=learning_rate,
        b1=b1,
        b2=b2,
        eps=eps,
        weight_decay=weight_decay,
        momentum_decay=momentum_decay,
        decoupled_weight_decay=decoupled_weight_decay,
        maximize=maximize,
    )
