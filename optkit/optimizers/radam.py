"""RAdam: Adam whose adaptive step is switched on, and rectified, once its variance is tractable."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from optkit import _numerics, _tree, _validation
from optkit._base import GradientTransformation, Params, Scalar, ScalarOrSchedule, Updates
from optkit._kernel import leaf_kernel
from optkit.optimizers._compose import chain_present, described, maybe_l2_decay, maybe_negate
from optkit.optimizers.adam import AdamLeaf, moments
from optkit.transforms.scaling import scale_by_learning_rate
from optkit.transforms.weight_decay import maybe_decayed_weights

# torch rectifies once the length of the approximated simple moving average exceeds 5.
RECTIFY_ABOVE = 5.0


class ScaleByRadamState(NamedTuple):
    """Update count, first moment ``mu`` and second moment ``nu``."""

    count: jax.Array
    mu: Updates
    nu: Updates

    # Buffers that are never negative: quantize_state stores them with an unsigned map.
    non_negative_fields = ("nu",)


@leaf_kernel
def _radam(
    mu,
    nu,
    update,
    *,
    one_minus_b1,
    b2,
    one_minus_b2,
    eps,
    bias_correction1,
    sqrt_bias_correction2,
    rectify,
    rectification,
) -> AdamLeaf:
    mu, nu = moments(mu, nu, update, one_minus_b1=one_minus_b1, b2=b2, one_minus_b2=one_minus_b2)
    corrected = mu / bias_correction1
    # torch's ``scalar / tensor`` is ``tensor.reciprocal() * scalar``.
    adaptive = (1.0 / (jnp.sqrt(nu) + eps)) * sqrt_bias_correction2
    # ``rectify`` is a traced boolean scalar (it depends on the step), not a static flag.
    return AdamLeaf(mu, nu, jnp.where(rectify, corrected * adaptive * rectification, corrected))


def _rectification(b2: Any, count: jax.Array) -> tuple[jax.Array, jax.Array]:
    r"""Whether step ``count`` (1-based) is rectified, and its rectification term :math:`r_t`.

    .. math::
        \rho_\infty = \frac{2}{1 - \beta_2} - 1, \qquad
        \rho_t = \rho_\infty - \frac{2 t \beta_2^t}{1 - \beta_2^t}, \qquad
        r_t = \sqrt{\frac{(\rho_t - 4)(\rho_t - 2)\,\rho_\infty}
                         {(\rho_\infty - 4)(\rho_\infty - 2)\,\rho_t}}

    Step ``t`` is rectified when :math:`\rho_t > 5`. Both are arrays, so one compiled step serves
    every step; :math:`r_t` is only meaningful where the step is rectified (like torch's
    ``capturable`` path, it is computed at every step and selected with ``where``).

    :math:`\rho_t` is a small difference of two numbers near :math:`\rho_\infty`, which
    magnifies the rounding of :math:`\beta_2^t` by up to :math:`\rho_\infty / \rho_t`. In
    float64 (``jax_enable_x64``) it is therefore computed as torch computes it in Python double,
    operation for operation (at :math:`\beta_2 = 0.9999` a more accurate :math:`1 - \beta_2^t`
    would move :math:`r_t` by 3e-10 from torch's). In float32, where ``1 - b2**t`` would lose
    digits, :math:`\beta_2^t` comes from the accurate bias correction instead.

    Examples:
        >>> import jax.numpy as jnp
        >>> from optkit.optimizers.radam import _rectification
        >>> [bool(_rectification(0.999, jnp.asarray(t))[0]) for t in range(4, 8)]
        [False, False, True, True]
    """
    step = count.astype(jnp.result_type(float))
    if jnp.finfo(step.dtype).bits >= 64:
        decay_power = b2**step
        bias_correction2 = 1.0 - decay_power
    else:
        bias_correction2 = _numerics.bias_correction(b2, count)
        decay_power = 1.0 - bias_correction2
    rho_infinity = 2.0 / (1.0 - b2) - 1.0
    rho = rho_infinity - 2.0 * step * decay_power / bias_correction2
    term = jnp.sqrt(
        (rho - 4.0)
        * (rho - 2.0)
        * rho_infinity
        / ((rho_infinity - 4.0) * (rho_infinity - 2.0) * rho)
    )
    return rho > RECTIFY_ABOVE, term


def scale_by_radam(
    b1: Scalar = 0.9,
    b2: Scalar = 0.999,
    eps: Scalar = 1e-8,
) -> GradientTransformation:
    r"""Scale updates by RAdam's rectified Adam step, as ``torch.optim.RAdam`` does.

    .. math::
        m_t &= m_{t-1} + (1 - \beta_1)(g_t - m_{t-1}), \qquad
        v_t = \beta_2 v_{t-1} + (1 - \beta_2) g_t^2, \qquad
        \hat m_t = m_t / (1 - \beta_1^t) \\
        u_t &= \begin{cases}
            \hat m_t \cdot \dfrac{\sqrt{1 - \beta_2^t}}{\sqrt{v_t} + \epsilon} \cdot r_t
                & \rho_t > 5 \\
            \hat m_t & \text{otherwise}
        \end{cases}

    where

    .. math::
        \rho_\infty = \frac{2}{1 - \beta_2} - 1, \qquad
        \rho_t = \rho_\infty - \frac{2 t \beta_2^t}{1 - \beta_2^t}, \qquad
        r_t = \sqrt{\frac{(\rho_t - 4)(\rho_t - 2)\,\rho_\infty}
                         {(\rho_\infty - 4)(\rho_\infty - 2)\,\rho_t}}

    Until the second moment's approximated moving average is long enough (:math:`\rho_t \le 5`:
    the first 5 steps with :math:`\beta_2 = 0.999`) the update is the bias-corrected momentum
    alone, SGD with momentum. The switch is traced (``jnp.where`` on the step count), not a Python
    branch, so a jitted step compiles once. ``eps`` sits outside the square root of the *raw*
    second moment and the bias correction multiplies afterwards, as in torch. In float64,
    :math:`\rho_t` is computed operation for operation as torch computes it in Python double:
    its cancellation would magnify any other rounding of :math:`\beta_2^t`.

    optax's ``scale_by_radam`` differs: it adds ``eps`` to the square root of the bias-corrected
    second moment (torch to that of the raw one, then corrects) and rectifies when
    :math:`\rho_t \ge` ``threshold`` (5.0), where torch needs :math:`\rho_t > 5`.

    Args:
        b1: first-moment decay :math:`\beta_1` in ``[0, 1)``.
        b2: second-moment decay :math:`\beta_2` in ``[0, 1)``.
        eps: added to the denominator, outside the square root (``>= 0``).

    Examples:
        >>> import jax.numpy as jnp, optkit
        >>> tx = optkit.scale_by_radam()
        >>> u, _ = tx.update(jnp.array([0.5, -2.0]), tx.init(jnp.zeros(2)))
        >>> u.round(4)  # step 1 is not rectified: m_1 / (1 - b1) = g
        Array([ 0.5, -2. ], dtype=float32)
    """
    _validation.hyperparameters(b1=b1, b2=b2, eps=eps)

    def init(params: Params) -> ScaleByRadamState:
        return ScaleByRadamState(
            count=_numerics.zero_count(params),
            mu=_tree.zeros_like(params),
            nu=_tree.zeros_like(params),
        )

    def update(
        updates: Updates, state: ScaleByRadamState, params: Params | None = None, **extra_args: Any
    ) -> tuple[Updates, ScaleByRadamState]:
        del params, extra_args
        updates = _tree.check_updates(state.nu, updates, "scale_by_radam")
        count = _numerics.increment(state.count)
        rectify, term = _rectification(b2, count)
        new = _radam(
            state.mu,
            state.nu,
            updates,
            one_minus_b1=1.0 - b1,
            b2=b2,
            one_minus_b2=1.0 - b2,
            eps=eps,
            bias_correction1=_numerics.bias_correction(b1, count),
            sqrt_bias_correction2=jnp.sqrt(_numerics.bias_correction(b2, count)),
            rectify=rectify,
            rectification=term,
        )
        return new.update, ScaleByRadamState(count=count, mu=new.mu, nu=new.nu)

    return GradientTransformation(init, update)


def radam(
    learning_rate: ScalarOrSchedule = 1e-3,
    b1: Scalar = 0.9,
    b2: Scalar = 0.999,
    eps: Scalar = 1e-8,
    weight_decay: Scalar = 0.0,
    decoupled_weight_decay: bool = False,
    *,
    maximize: bool = False,
) -> GradientTransformation:
    r"""RAdam (and RAdamW). Same math and defaults as ``torch.optim.RAdam``.

    .. math::
        g_t &\leftarrow \nabla_\theta f_t(\theta_{t-1}) + \lambda \theta_{t-1}
            \quad (\text{coupled decay only}) \\
        m_t &= \beta_1 m_{t-1} + (1 - \beta_1) g_t, \quad
        v_t = \beta_2 v_{t-1} + (1 - \beta_2) g_t^2, \quad
        \hat m_t = m_t / (1 - \beta_1^t) \\
        \rho_\infty &= \frac{2}{1 - \beta_2} - 1, \quad
        \rho_t = \rho_\infty - \frac{2 t \beta_2^t}{1 - \beta_2^t} \\
        \theta_t &= \begin{cases}
            \theta_{t-1} - \gamma\, \hat m_t\, \dfrac{\sqrt{1 - \beta_2^t}}{\sqrt{v_t} + \epsilon}
                \, r_t & \rho_t > 5, \quad
                r_t = \sqrt{\dfrac{(\rho_t - 4)(\rho_t - 2)\rho_\infty}
                                  {(\rho_\infty - 4)(\rho_\infty - 2)\rho_t}} \\
            \theta_{t-1} - \gamma\, \hat m_t & \text{otherwise}
        \end{cases}

    With the default :math:`\beta_2 = 0.999` the first 5 steps are plain SGD with (bias-corrected)
    momentum; from step 6 on the Adam step is scaled by the rectification :math:`r_t < 1`, which
    rises towards 1. With ``decoupled_weight_decay=True`` the gradient is left alone and the
    parameters shrink first, :math:`\theta \leftarrow \theta (1 - \gamma \lambda)`, with the decay
    following the (scheduled) learning rate as in torch.

    The chain is ``negate`` (maximize) -> ``add_l2_decay`` (coupled) -> ``scale_by_radam`` ->
    ``add_decayed_weights`` (decoupled) -> ``scale_by_learning_rate``. optax's ``radam`` adds
    ``eps`` after the bias correction (see :func:`scale_by_radam`) and has no weight decay.

    Args:
        learning_rate: :math:`\gamma`, a number or a schedule (torch's ``lr``; default ``1e-3``).
        b1: :math:`\beta_1` in ``[0, 1)`` (torch's ``betas[0]``; default 0.9).
        b2: :math:`\beta_2` in ``[0, 1)`` (torch's ``betas[1]``; default 0.999).
        eps: :math:`\epsilon \ge 0` (default ``1e-8``).
        weight_decay: :math:`\lambda \ge 0` (default 0), L2 unless ``decoupled_weight_decay``.
        decoupled_weight_decay: shrink the parameters instead of adding to the gradient (RAdamW).
        maximize: ascend the objective instead of descending it.

    Examples:
        >>> import jax, jax.numpy as jnp, optkit
        >>> params = jnp.array([1.0, -2.0])
        >>> tx = optkit.radam(learning_rate=0.25)
        >>> state = tx.init(params)
        >>> grads = jax.grad(lambda p: jnp.sum(p**2))(params)
        >>> updates, state = tx.update(grads, state, params)
        >>> optkit.apply_updates(params, updates).round(4)  # first step: SGD, p - lr * g
        Array([ 0.5, -1. ], dtype=float32)

    References:
        Liu et al., `On the Variance of the Adaptive Learning Rate and Beyond
        <https://arxiv.org/abs/1908.03265>`_, 2020; Loshchilov and Hutter, `Decoupled Weight
        Decay Regularization <https://arxiv.org/abs/1711.05101>`_, 2019.
    """
    _validation.hyperparameters(learning_rate=learning_rate, weight_decay=weight_decay)
    decoupled = _validation.boolean("decoupled_weight_decay", decoupled_weight_decay)
    transform = chain_present(
        maybe_negate(maximize),
        None if decoupled else maybe_l2_decay(weight_decay),
        scale_by_radam(b1=b1, b2=b2, eps=eps),
        maybe_decayed_weights(weight_decay, None) if decoupled else None,
        scale_by_learning_rate(learning_rate),
    )
    return described(
        transform,
        "RAdam",
        elementwise=True,
        learning_rate=learning_rate,
        b1=b1,
        b2=b2,
        eps=eps,
        weight_decay=weight_decay,
        decoupled_weight_decay=decoupled_weight_decay,
        maximize=maximize,
    )
