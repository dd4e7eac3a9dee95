"""Adam and AdamW: bias-corrected moment estimates, with coupled or decoupled weight decay."""

from __future__ import annotations

from optkit import _validation
from optkit._base import GradientTransformation, Scalar, ScalarOrSchedule
from optkit.optimizers._compose import (
    chain_present,
    check_learning_rate,
    maybe_l2_decay,
    maybe_negate,
)
from optkit.transforms.adaptive import scale_by_adam
from optkit.transforms.scaling import scale_by_learning_rate
from optkit.transforms.weight_decay import Mask, add_decayed_weights


def _check_common(learning_rate, b1, b2, eps, weight_decay) -> None:
    check_learning_rate(learning_rate)
    _validation.decay_rate("b1", b1)
    _validation.decay_rate("b2", b2)
    _validation.non_negative("eps", eps)
    _validation.non_negative("weight_decay", weight_decay)


def adam(
    learning_rate: ScalarOrSchedule = 1e-3,
    b1: Scalar = 0.9,
    b2: Scalar = 0.999,
    eps: Scalar = 1e-8,
    weight_decay: Scalar = 0.0,
    amsgrad: bool = False,
    *,
    maximize: bool = False,
) -> GradientTransformation:
    r"""Adam with L2 weight decay. Same math and defaults as ``torch.optim.Adam``.

    .. math::
        g_t &\leftarrow \nabla_\theta f_t(\theta_{t-1}) + \lambda \theta_{t-1} \\
        m_t &= \beta_1 m_{t-1} + (1 - \beta_1) g_t, \quad
        v_t = \beta_2 v_{t-1} + (1 - \beta_2) g_t^2 \\
        \hat m_t &= m_t / (1 - \beta_1^t), \quad \hat v_t = v_t / (1 - \beta_2^t) \\
        \theta_t &= \theta_{t-1} - \gamma \hat m_t / (\sqrt{\hat v_t} + \epsilon)

    ``eps`` is added outside the square root, after bias correction. With ``amsgrad`` the
    denominator uses the running maximum of the raw :math:`v_t` (torch's rule, not optax's).
    Moments start at zero and are kept in each parameter's dtype.

    The chain is ``negate`` (maximize) -> ``add_l2_decay`` -> ``scale_by_adam`` ->
    ``scale_by_learning_rate``.

    Args:
        learning_rate: :math:`\gamma`, a number or a schedule (torch's ``lr``; default ``1e-3``).
        b1: :math:`\beta_1` in ``[0, 1)`` (torch's ``betas[0]``; default 0.9).
        b2: :math:`\beta_2` in ``[0, 1)`` (torch's ``betas[1]``; default 0.999).
        eps: :math:`\epsilon \ge 0` (default ``1e-8``).
        weight_decay: L2 coefficient :math:`\lambda \ge 0`, added to the gradient (default 0).
            For decoupled decay use :func:`adamw`.
        amsgrad: use the running maximum of the second moment.
        maximize: ascend the objective instead of descending it.

    Examples:
        >>> import jax, jax.numpy as jnp, optkit
        >>> params = jnp.array([1.0, -2.0])
        >>> tx = optkit.adam(learning_rate=0.1)
        >>> state = tx.init(params)
        >>> grads = jax.grad(lambda p: jnp.sum(p**2))(params)
        >>> updates, state = tx.update(grads, state, params)
        >>> optkit.apply_updates(params, updates)
        Array([ 0.9, -1.9], dtype=float32)
    """
    _check_common(learning_rate, b1, b2, eps, weight_decay)
    return chain_present(
        maybe_negate(maximize),
        maybe_l2_decay(weight_decay),
        scale_by_adam(b1=b1, b2=b2, eps=eps, amsgrad=amsgrad),
        scale_by_learning_rate(learning_rate),
    )


def adamw(
    learning_rate: ScalarOrSchedule = 1e-3,
    b1: Scalar = 0.9,
    b2: Scalar = 0.999,
    eps: Scalar = 1e-8,
    weight_decay: Scalar = 1e-2,
    amsgrad: bool = False,
    *,
    maximize: bool = False,
    mask: Mask | None = None,
) -> GradientTransformation:
    r"""Adam with decoupled weight decay. Same math and defaults as ``torch.optim.AdamW``.

    .. math::
        \theta_t &\leftarrow \theta_{t-1} - \gamma \lambda \theta_{t-1} \\
        \theta_t &\leftarrow \theta_t - \gamma \hat m_t / (\sqrt{\hat v_t} + \epsilon)

    with :math:`\hat m_t, \hat v_t` as in :func:`adam` computed from the raw gradient. The decay
    is multiplied by the (possibly scheduled) learning rate, as in torch. The default
    ``weight_decay`` is torch's ``1e-2`` (optax's adamw defaults to ``1e-4``).

    The chain is ``negate`` (maximize) -> ``scale_by_adam`` -> ``add_decayed_weights`` ->
    ``scale_by_learning_rate``.

    Args:
        learning_rate: :math:`\gamma`, a number or a schedule (torch's ``lr``; default ``1e-3``).
        b1: :math:`\beta_1` in ``[0, 1)`` (default 0.9).
        b2: :math:`\beta_2` in ``[0, 1)`` (default 0.999).
        eps: :math:`\epsilon \ge 0` (default ``1e-8``).
        weight_decay: decoupled coefficient :math:`\lambda \ge 0` (default ``1e-2``).
        amsgrad: use the running maximum of the second moment.
        maximize: ascend the objective instead of descending it.
        mask: which leaves are decayed (a bool pytree, a prefix of one, or a function of the
            params returning one); all when ``None``.

    Examples:
        >>> import jax.numpy as jnp, optkit
        >>> params = {"w": jnp.ones((2, 2)), "b": jnp.ones(2)}
        >>> no_bias_decay = lambda p: {"w": True, "b": False}
        >>> tx = optkit.adamw(learning_rate=1e-3, weight_decay=0.1, mask=no_bias_decay)
        >>> state = tx.init(params)
    """
    _check_common(learning_rate, b1, b2, eps, weight_decay)
    return chain_present(
        maybe_negate(maximize),
        scale_by_adam(b1=b1, b2=b2, eps=eps, amsgrad=amsgrad),
        None
        if _validation.is_static_zero(weight_decay)
        else add_decayed_weights(weight_decay, mask=mask),
        scale_by_learning_rate(learning_rate),
    )
