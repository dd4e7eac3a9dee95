"""Stochastic gradient descent with torch's momentum, dampening, Nesterov and L2 weight decay."""

from __future__ import annotations

from typing import Any

from optkit import _validation
from optkit._base import GradientTransformation, Scalar, ScalarOrSchedule
from optkit.optimizers._compose import chain_present, described, maybe_l2_decay, maybe_negate
from optkit.transforms.momentum import check_nesterov, trace
from optkit.transforms.scaling import scale_by_learning_rate_as_alpha


def sgd(
    learning_rate: ScalarOrSchedule = 1e-3,
    momentum: Scalar | None = 0.0,
    dampening: Scalar = 0.0,
    weight_decay: Scalar = 0.0,
    nesterov: bool = False,
    *,
    maximize: bool = False,
    accumulator_dtype: Any = None,
) -> GradientTransformation:
    r"""Stochastic gradient descent, optionally with momentum. Same math and defaults as
    ``torch.optim.SGD``.

    .. math::
        g_t &\leftarrow \pm \nabla_\theta f_t(\theta_{t-1}) \quad (- \text{ if maximize}) \\
        g_t &\leftarrow g_t + \lambda \theta_{t-1} \\
        b_1 &= g_1, \quad b_t = \mu b_{t-1} + (1 - \tau) g_t \\
        g_t &\leftarrow g_t + \mu b_t \text{ (nesterov) or } b_t \text{ (momentum)} \\
        \theta_t &= \theta_{t-1} - \gamma g_t

    The chain is ``negate`` (maximize) -> ``add_l2_decay`` -> ``trace`` ->
    ``scale_by_learning_rate``; transforms whose hyperparameter is a Python zero are left out.

    Args:
        learning_rate: :math:`\gamma`, a number or a schedule of the 0-based update count
            (torch's ``lr``; default ``1e-3``).
        momentum: :math:`\mu \ge 0` (default 0: no momentum buffer). ``None`` means the same
            (optax's spelling of "no momentum").
        dampening: :math:`\tau` in ``[0, 1]`` (default 0).
        weight_decay: L2 coefficient :math:`\lambda \ge 0` (default 0).
        nesterov: Nesterov momentum; needs ``momentum > 0`` and ``dampening == 0``.
        maximize: ascend the objective instead of descending it.
        accumulator_dtype: dtype of the momentum buffer, a floating dtype (optax's
            ``accumulator_dtype``); the parameter's dtype when ``None`` (torch's).

    Examples:
        >>> import jax, jax.numpy as jnp, optkit
        >>> params = {"w": jnp.array([1.0, -2.0])}
        >>> loss = lambda p: jnp.sum(p["w"] ** 2)
        >>> tx = optkit.sgd(learning_rate=0.1, momentum=0.9)
        >>> state = tx.init(params)
        >>> for _ in range(3):
        ...     grads = jax.grad(loss)(params)
        ...     updates, state = tx.update(grads, state, params)
        ...     params = optkit.apply_updates(params, updates)
        >>> params["w"]
        Array([ 0.06200001, -0.12400001], dtype=float32)

    References:
        Sutskever et al., `On the importance of initialization and momentum in deep learning
        <https://proceedings.mlr.press/v28/sutskever13.html>`_, 2013 (Nesterov momentum).
    """
    if momentum is None:  # optax's "no momentum": torch's momentum=0
        momentum = 0.0
    _validation.hyperparameters(
        learning_rate=learning_rate,
        momentum=momentum,
        dampening=dampening,
        weight_decay=weight_decay,
    )
    nesterov = _validation.boolean("nesterov", nesterov)
    check_nesterov(momentum, dampening, nesterov)
    _validation.state_dtype("accumulator_dtype", accumulator_dtype)
    transform = chain_present(
        maybe_negate(maximize),
        maybe_l2_decay(weight_decay),
        None
        if _validation.is_static_zero(momentum)
        else trace(momentum, dampening, nesterov, accumulator_dtype),
        scale_by_learning_rate_as_alpha(learning_rate),  # torch's param.add_(g, alpha=-lr)
    )
    return described(
        transform,
        "SGD",
        elementwise=True,
        learning_rate=learning_rate,
        momentum=momentum,
        dampening=dampening,
        weight_decay=weight_decay,
        nesterov=nesterov,
        maximize=maximize,
        accumulator_dtype=accumulator_dtype,
    )
