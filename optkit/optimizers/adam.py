"""Adam and AdamW: bias-corrected moment estimates, with coupled or decoupled weight decay."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from optkit import _numerics, _tree, _validation
from optkit._base import GradientTransformation, Params, Scalar, ScalarOrSchedule, Updates
from optkit._kernel import leaf_kernel
from optkit.optimizers._compose import chain_present, described, maybe_l2_decay, maybe_negate
from optkit.transforms.scaling import (
    scale_by_learning_rate,
    scale_by_learning_rate_unless_half,
)
from optkit.transforms.weight_decay import (
    Mask,
    add_decayed_weights_unless_half,
    maybe_decayed_weights,
)


class ScaleByAdamState(NamedTuple):
    """Update count, first moment ``mu``, second moment ``nu``, and (amsgrad) the running max of
    ``nu`` (``None`` without amsgrad)."""

    count: jax.Array
    mu: Updates
    nu: Updates
    nu_max: Updates | None = None

    # Buffers that are never negative: quantize_state stores them with an unsigned map.
    non_negative_fields = ("nu", "nu_max")


class AdamLeaf(NamedTuple):
    """A leaf's new moments and update (Adam's, NAdam's and RAdam's kernels)."""

    mu: jax.Array
    nu: jax.Array
    update: jax.Array


class AmsgradLeaf(NamedTuple):
    mu: jax.Array
    nu: jax.Array
    nu_max: jax.Array
    update: jax.Array


def moments(mu, nu, g, *, one_minus_b1, b2, one_minus_b2):
    """Adam's new moments (also NAdam's and RAdam's), each rounded to its stored dtype before
    the step reads it: torch's ``mu.lerp_(g, 1 - b1)`` and ``nu.mul_(b2).addcmul_(g, g,
    value=1 - b2)``, the square scaled before it is added (so it does not overflow float16)."""
    rounded = _numerics.rounded
    mu = rounded(_numerics.lerp(mu, g, one_minus_b1)).astype(mu.dtype)
    nu = rounded(rounded(b2 * nu) + one_minus_b2 * (g * g)).astype(nu.dtype)
    return mu, nu


def denominator(nu, *, eps, sqrt_bias_correction2):
    """torch's ``(nu.sqrt() / sqrt_bias_correction2).add_(eps)``, rounded as its ops are."""
    rounded = _numerics.rounded
    return rounded(
        rounded(rounded(jnp.sqrt(nu)) / sqrt_bias_correction2) + _numerics.rounded_scalar(eps)
    )


@leaf_kernel
def _adam(
    mu, nu, update, *, one_minus_b1, b2, one_minus_b2, eps, bias_correction1, sqrt_bias_correction2
) -> AdamLeaf:
    mu, nu = moments(mu, nu, update, one_minus_b1=one_minus_b1, b2=b2, one_minus_b2=one_minus_b2)
    step = denominator(nu, eps=eps, sqrt_bias_correction2=sqrt_bias_correction2)
    return AdamLeaf(mu, nu, (mu / bias_correction1) / step)


@leaf_kernel
def _adam_eps_root(
    mu,
    nu,
    update,
    *,
    one_minus_b1,
    b2,
    one_minus_b2,
    eps,
    eps_root,
    bias_correction1,
    sqrt_bias_correction2,
) -> AdamLeaf:
    mu, nu = moments(mu, nu, update, one_minus_b1=one_minus_b1, b2=b2, one_minus_b2=one_minus_b2)
    denominator = jnp.sqrt(nu / (sqrt_bias_correction2 * sqrt_bias_correction2) + eps_root) + eps
    return AdamLeaf(mu, nu, (mu / bias_correction1) / denominator)


@leaf_kernel
def _amsgrad(
    mu,
    nu,
    nu_max,
    update,
    *,
    one_minus_b1,
    b2,
    one_minus_b2,
    eps,
    bias_correction1,
    sqrt_bias_correction2,
) -> AmsgradLeaf:
    mu, nu = moments(mu, nu, update, one_minus_b1=one_minus_b1, b2=b2, one_minus_b2=one_minus_b2)
    nu_max = jnp.maximum(nu_max, nu)
    step = denominator(nu_max, eps=eps, sqrt_bias_correction2=sqrt_bias_correction2)
    return AmsgradLeaf(mu, nu, nu_max, (mu / bias_correction1) / step)


@leaf_kernel
def _amsgrad_eps_root(
    mu,
    nu,
    nu_max,
    update,
    *,
    one_minus_b1,
    b2,
    one_minus_b2,
    eps,
    eps_root,
    bias_correction1,
    sqrt_bias_correction2,
) -> AmsgradLeaf:
    mu, nu = moments(mu, nu, update, one_minus_b1=one_minus_b1, b2=b2, one_minus_b2=one_minus_b2)
    nu_max = jnp.maximum(nu_max, nu)
    denominator = (
        jnp.sqrt(nu_max / (sqrt_bias_correction2 * sqrt_bias_correction2) + eps_root) + eps
    )
    return AmsgradLeaf(mu, nu, nu_max, (mu / bias_correction1) / denominator)


class _AdamStepLeaf(NamedTuple):
    mu: jax.Array
    nu: jax.Array
    update: jax.Array
    param: jax.Array


class _AmsgradStepLeaf(NamedTuple):
    mu: jax.Array
    nu: jax.Array
    nu_max: jax.Array
    update: jax.Array
    param: jax.Array


def _half_step(mu, denominator, param, decayed, *, step_size, shrink):
    """A float16/bfloat16 leaf's whole AdamW step, rounded where torch's ops round the param:
    ``param.mul_(1 - lr * wd)`` (on decayed leaves), then ``param.addcdiv_(mu, denominator,
    value=step_size)`` (``-lr / bias_correction1``) in one rounding. Returns the new param minus
    the old."""
    rounded = _numerics.rounded
    new = param
    if shrink is not None:
        new = jnp.where(decayed, rounded(param * shrink), param)
    new = rounded(new + (step_size * mu) / denominator)
    # An infinite param that torch leaves as it is moves by 0 (inf - inf would be NaN).
    return jnp.where(new == param, 0.0, new - param)


@leaf_kernel
def _adamw_step(
    mu,
    nu,
    update,
    param,
    decayed,
    *,
    one_minus_b1,
    b2,
    one_minus_b2,
    eps,
    bias_correction1,
    sqrt_bias_correction2,
    step_size,
    shrink,
) -> _AdamStepLeaf:
    """:func:`_adam`, except on float16/bfloat16 leaves, whose update is the whole step
    (:func:`_half_step`)."""
    mu, nu = moments(mu, nu, update, one_minus_b1=one_minus_b1, b2=b2, one_minus_b2=one_minus_b2)
    step = denominator(nu, eps=eps, sqrt_bias_correction2=sqrt_bias_correction2)
    if not _numerics.storing_half():
        return _AdamStepLeaf(mu, nu, (mu / bias_correction1) / step, param)
    update = _half_step(
        mu,
        step,
        param,
        decayed,
        step_size=step_size,
        shrink=shrink,
    )
    return _AdamStepLeaf(mu, nu, update, param)


@leaf_kernel
def _amsgradw_step(
    mu,
    nu,
    nu_max,
    update,
    param,
    decayed,
    *,
    one_minus_b1,
    b2,
    one_minus_b2,
    eps,
    bias_correction1,
    sqrt_bias_correction2,
    step_size,
    shrink,
) -> _AmsgradStepLeaf:
    """:func:`_amsgrad`, except on float16/bfloat16 leaves (:func:`_adamw_step`)."""
    mu, nu = moments(mu, nu, update, one_minus_b1=one_minus_b1, b2=b2, one_minus_b2=one_minus_b2)
    nu_max = jnp.maximum(nu_max, nu)
    step = denominator(nu_max, eps=eps, sqrt_bias_correction2=sqrt_bias_correction2)
    if not _numerics.storing_half():
        return _AmsgradStepLeaf(mu, nu, nu_max, (mu / bias_correction1) / step, param)
    update = _half_step(
        mu,
        step,
        param,
        decayed,
        step_size=step_size,
        shrink=shrink,
    )
    return _AmsgradStepLeaf(mu, nu, nu_max, update, param)


def _scale_by_adamw(
    b1: Scalar,
    b2: Scalar,
    eps: Scalar,
    amsgrad: bool,
    learning_rate: ScalarOrSchedule,
    weight_decay: Scalar | None,
    mask: Mask | None,
) -> GradientTransformation:
    """:func:`scale_by_adam` (``eps_root = 0``, moments in the params' dtype) for :func:`adamw`:
    given params, the updates of float16 and bfloat16 leaves are the whole step, the learning
    rate and (given ``weight_decay``, on the leaves ``mask`` selects) the decoupled decay
    included, rounded where torch's ops round (:func:`_half_step`);
    ``add_decayed_weights_unless_half`` and ``scale_by_learning_rate_unless_half`` follow it.
    Same state as :func:`scale_by_adam`."""
    plain = scale_by_adam(b1=b1, b2=b2, eps=eps, amsgrad=amsgrad)
    kernel = _amsgradw_step if amsgrad else _adamw_step

    def update(
        updates: Updates, state: ScaleByAdamState, params: Params | None = None, **extra_args: Any
    ) -> tuple[Updates, ScaleByAdamState]:
        del extra_args
        updates = _tree.check_updates(state.nu, updates, "scale_by_adam")
        if params is None or weight_decay is None or mask is None:
            decayed = jax.tree.map(lambda _: jnp.asarray(True), state.nu)
        else:
            decayed = jax.tree.map(jnp.asarray, _tree.resolve_mask(mask, params, "adamw"))
        if params is None:
            # Without params (and so without decay: add_decayed_weights needs them) a 16-bit
            # leaf's update is its rounded step, -lr included, as if from a zero param.
            params, weight_decay_now = _tree.zeros_like(state.nu), None
        else:
            _tree.check_match(params, updates, "adamw", "params", "updates")
            weight_decay_now = weight_decay
        lr = _numerics.value_at(learning_rate, state.count, "adamw: learning_rate")
        count = _numerics.increment(state.count)
        bias_correction1 = _numerics.bias_correction(b1, count)
        buffers = (state.mu, state.nu, state.nu_max) if amsgrad else (state.mu, state.nu)
        new = kernel(
            *buffers,
            updates,
            params,
            decayed,
            one_minus_b1=1.0 - b1,
            b2=b2,
            one_minus_b2=1.0 - b2,
            eps=eps,
            bias_correction1=bias_correction1,
            sqrt_bias_correction2=jnp.sqrt(_numerics.bias_correction(b2, count)),
            # torch's -lr / bias_correction1 and 1 - lr * wd, in double, then float32.
            step_size=-lr / bias_correction1,
            shrink=None if weight_decay_now is None else 1.0 - lr * weight_decay_now,
        )
        nu_max = new.nu_max if amsgrad else None
        return new.update, ScaleByAdamState(count=count, mu=new.mu, nu=new.nu, nu_max=nu_max)

    return GradientTransformation(plain.init, update)


def scale_by_adam(
    b1: Scalar = 0.9,
    b2: Scalar = 0.999,
    eps: Scalar = 1e-8,
    eps_root: Scalar = 0.0,
    amsgrad: bool = False,
    mu_dtype: Any = None,
) -> GradientTransformation:
    r"""Scale updates by Adam's bias-corrected moments, with torch's eps placement and amsgrad.

    .. math::
        m_t = m_{t-1} + (1 - \beta_1)(g_t - m_{t-1}), \qquad
        v_t = \beta_2 v_{t-1} + (1 - \beta_2) g_t^2

        u_t = \frac{m_t / (1 - \beta_1^t)}{\sqrt{v_t} / \sqrt{1 - \beta_2^t} + \epsilon}

    With ``amsgrad``, :math:`v^{\max}_t = \max(v^{\max}_{t-1}, v_t)` over the *raw* second moment
    replaces :math:`v_t` in the denominator (torch's rule; optax's amsgrad takes the max after bias
    correction). ``eps_root`` (0 in torch) is added inside the square root, to the bias-corrected
    second moment.

    Args:
        b1: first-moment decay in ``[0, 1)``.
        b2: second-moment decay in ``[0, 1)``.
        eps: added to the denominator, outside the square root (``>= 0``).
        eps_root: added inside the square root (``>= 0``); useful when differentiating through.
        amsgrad: keep the running maximum of the second moment.
        mu_dtype: dtype of the first moment (a floating dtype, e.g. ``jnp.bfloat16`` to halve
            its memory); the parameter's dtype when ``None``. As optax's ``mu_dtype``.

    Examples:
        >>> import jax.numpy as jnp, optkit
        >>> tx = optkit.scale_by_adam()
        >>> tx.update(jnp.array([0.5, -2.0]), tx.init(jnp.zeros(2)))[0]  # first step: sign(g)
        Array([ 1., -1.], dtype=float32)
    """
    _validation.hyperparameters(b1=b1, b2=b2, eps=eps, eps_root=eps_root)
    amsgrad = _validation.boolean("amsgrad", amsgrad)
    with_eps_root = not _validation.is_static_zero(eps_root)
    kernel = {
        (False, False): _adam,
        (False, True): _adam_eps_root,
        (True, False): _amsgrad,
        (True, True): _amsgrad_eps_root,
    }[amsgrad, with_eps_root]
    mu_dtype = _validation.state_dtype("mu_dtype", mu_dtype)

    def init(params: Params) -> ScaleByAdamState:
        return ScaleByAdamState(
            count=_numerics.zero_count(params),
            mu=_tree.zeros_like(params, dtype=mu_dtype),
            nu=_tree.zeros_like(params),
            nu_max=_tree.zeros_like(params) if amsgrad else None,
        )

    def update(
        updates: Updates, state: ScaleByAdamState, params: Params | None = None, **extra_args: Any
    ) -> tuple[Updates, ScaleByAdamState]:
        del params, extra_args
        updates = _tree.check_updates(state.nu, updates, "scale_by_adam")
        count = _numerics.increment(state.count)
        buffers = (state.mu, state.nu, state.nu_max) if amsgrad else (state.mu, state.nu)
        new = kernel(
            *buffers,
            updates,
            one_minus_b1=1.0 - b1,
            b2=b2,
            one_minus_b2=1.0 - b2,
            eps=eps,
            **({"eps_root": eps_root} if with_eps_root else {}),
            bias_correction1=_numerics.bias_correction(b1, count),
            sqrt_bias_correction2=jnp.sqrt(_numerics.bias_correction(b2, count)),
        )
        nu_max = new.nu_max if amsgrad else None
        return new.update, ScaleByAdamState(count=count, mu=new.mu, nu=new.nu, nu_max=nu_max)

    return GradientTransformation(init, update)


def adam(
    learning_rate: ScalarOrSchedule = 1e-3,
    b1: Scalar = 0.9,
    b2: Scalar = 0.999,
    eps: Scalar = 1e-8,
    weight_decay: Scalar = 0.0,
    amsgrad: bool = False,
    *,
    maximize: bool = False,
    mu_dtype: Any = None,
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
        mu_dtype: dtype of the first moment, a floating dtype (optax's ``mu_dtype``); the
            parameter's dtype when ``None`` (torch's, and the default).

    Examples:
        >>> import jax, jax.numpy as jnp, optkit
        >>> params = jnp.array([1.0, -2.0])
        >>> tx = optkit.adam(learning_rate=0.1)
        >>> state = tx.init(params)
        >>> grads = jax.grad(lambda p: jnp.sum(p**2))(params)
        >>> updates, state = tx.update(grads, state, params)
        >>> optkit.apply_updates(params, updates)
        Array([ 0.9, -1.9], dtype=float32)

    References:
        Kingma and Ba, `Adam: A Method for Stochastic Optimization
        <https://arxiv.org/abs/1412.6980>`_, 2014; Reddi et al., `On the Convergence of Adam and
        Beyond <https://openreview.net/forum?id=ryQu7f-RZ>`_, 2018 (amsgrad).
    """
    _validation.hyperparameters(learning_rate=learning_rate, weight_decay=weight_decay)
    transform = chain_present(
        maybe_negate(maximize),
        maybe_l2_decay(weight_decay),
        scale_by_adam(b1=b1, b2=b2, eps=eps, amsgrad=amsgrad, mu_dtype=mu_dtype),
        scale_by_learning_rate(learning_rate),
    )
    return described(
        transform,
        "Adam",
        elementwise=True,
        learning_rate=learning_rate,
        b1=b1,
        b2=b2,
        eps=eps,
        weight_decay=weight_decay,
        amsgrad=amsgrad,
        maximize=maximize,
        mu_dtype=mu_dtype,
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
    mu_dtype: Any = None,
) -> GradientTransformation:
    r"""Adam with decoupled weight decay. Same math and defaults as ``torch.optim.AdamW``.

    .. math::
        \theta_t &\leftarrow \theta_{t-1} - \gamma \lambda \theta_{t-1} \\
        \theta_t &\leftarrow \theta_t - \gamma \hat m_t / (\sqrt{\hat v_t} + \epsilon)

    with :math:`\hat m_t, \hat v_t` as in :func:`adam` computed from the raw gradient. The decay
    is multiplied by the (possibly scheduled) learning rate, as in torch. The default
    ``weight_decay`` is torch's ``1e-2`` (optax's adamw defaults to ``1e-4``).

    The chain is ``negate`` (maximize) -> ``scale_by_adam`` -> ``add_decayed_weights`` ->
    ``scale_by_learning_rate``. On float16 and bfloat16 params (without ``mu_dtype``) the
    first of those takes a leaf's whole step, rounding where torch's ``param.mul_(1 - lr * wd)``
    and ``param.addcdiv_`` round, and the other two pass the leaf through; same state.

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
        mu_dtype: dtype of the first moment, a floating dtype (optax's ``mu_dtype``); the
            parameter's dtype when ``None`` (torch's, and the default).

    Examples:
        >>> import jax.numpy as jnp, optkit
        >>> params = {"w": jnp.ones((2, 2)), "b": jnp.ones(2)}
        >>> no_bias_decay = lambda p: {"w": True, "b": False}
        >>> tx = optkit.adamw(learning_rate=1e-3, weight_decay=0.1, mask=no_bias_decay)
        >>> state = tx.init(params)

    References:
        Loshchilov and Hutter, `Decoupled Weight Decay Regularization
        <https://arxiv.org/abs/1711.05101>`_, 2019.
    """
    _validation.hyperparameters(learning_rate=learning_rate, weight_decay=weight_decay)
    if mu_dtype is not None:
        transform = chain_present(
            maybe_negate(maximize),
            scale_by_adam(b1=b1, b2=b2, eps=eps, amsgrad=amsgrad, mu_dtype=mu_dtype),
            maybe_decayed_weights(weight_decay, mask),
            scale_by_learning_rate(learning_rate),
        )
    else:
        # On float16/bfloat16 leaves the whole step is taken in _scale_by_adamw, rounded where
        # torch's param.mul_ and param.addcdiv_ round; the two after it skip those leaves.
        decay = not _validation.is_static_zero(weight_decay)
        transform = chain_present(
            maybe_negate(maximize),
            _scale_by_adamw(
                b1, b2, eps, amsgrad, learning_rate, weight_decay if decay else None, mask
            ),
            add_decayed_weights_unless_half(weight_decay, mask=mask) if decay else None,
            scale_by_learning_rate_unless_half(learning_rate),
        )
    return described(
        transform,
        "AdamW",
        elementwise=mask is None,
        learning_rate=learning_rate,
        b1=b1,
        b2=b2,
        eps=eps,
        weight_decay=weight_decay,
        amsgrad=amsgrad,
        maximize=maximize,
        mask=mask,
        mu_dtype=mu_dtype,
    )
