"""Adaptive per-element scaling: Adam's moments, RMSprop's running square, Adagrad's sum."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from optkit import _numerics, _tree, _validation
from optkit._base import GradientTransformation, Params, Updates


class ScaleByAdamState(NamedTuple):
    """Update count, first moment ``mu``, second moment ``nu``, and (amsgrad) the running max of
    ``nu`` (``None`` without amsgrad)."""

    count: jax.Array
    mu: Updates
    nu: Updates
    nu_max: Updates | None


class ScaleByRmsState(NamedTuple):
    """Running average of squared gradients ``nu`` and, when centered, of gradients ``mu``."""

    nu: Updates
    mu: Updates | None


class ScaleByRssState(NamedTuple):
    """Running sum of squared gradients (Adagrad's accumulator)."""

    sum_of_squares: Updates


def _lerp(start: jax.Array, end: jax.Array, weight: Any) -> jax.Array:
    """torch's ``start.lerp_(end, weight)`` for the small weights moment updates use."""
    return start + weight * (end - start)


def _check_updates(state_tree: Updates, updates: Updates, where: str) -> None:
    _tree.check_match(state_tree, updates, where, "optimizer state", "updates")


def _adam_moments(m, v, g, *, b1, b2):
    return (
        _tree.cast_like(_lerp(m, g, 1.0 - b1), m),
        _tree.cast_like(b2 * v + (1.0 - b2) * (g * g), v),
    )


def _adam_direction(m, v, g, *, eps, eps_root, no_eps_root, bc1, sbc2):
    bc1 = _tree.cast_like(bc1, v)
    sbc2 = _tree.cast_like(sbc2, v)
    if no_eps_root:
        denom = jnp.sqrt(v) / sbc2 + eps
    else:
        denom = jnp.sqrt(v / (sbc2 * sbc2) + eps_root) + eps
    return _tree.cast_like((m / bc1) / denom, g)


def _adam_leaf(m, v, g, *, b1, b2, bias_correction1, sqrt_bias_correction2, **eps):
    """One leaf of Adam: new moments and the bias-corrected direction."""
    m, v = _adam_moments(m, v, g, b1=b1, b2=b2)
    out = _adam_direction(m, v, g, bc1=bias_correction1, sbc2=sqrt_bias_correction2, **eps)
    return m, v, out


def _amsgrad_leaf(m, v, v_max, g, *, b1, b2, bias_correction1, sqrt_bias_correction2, **eps):
    """One leaf of AMSGrad: Adam's, with the direction taken from the running max of ``v``."""
    m, v = _adam_moments(m, v, g, b1=b1, b2=b2)
    v_max = jnp.maximum(v_max, v)
    out = _adam_direction(m, v_max, g, bc1=bias_correction1, sbc2=sqrt_bias_correction2, **eps)
    return m, v, v_max, out


def _rms_leaf(v, g, *, alpha, eps):
    """One leaf of RMSprop: the new running square and the scaled update."""
    v = _tree.cast_like(alpha * v + (1.0 - alpha) * (g * g), v)
    return v, _tree.cast_like(g / (jnp.sqrt(v) + eps), g)


def _centered_rms_leaf(v, m, g, *, alpha, eps):
    """One leaf of centered RMSprop: both running averages and the update."""
    v = _tree.cast_like(alpha * v + (1.0 - alpha) * (g * g), v)
    m = _tree.cast_like(_lerp(m, g, 1.0 - alpha), m)
    return v, m, _tree.cast_like(g / (jnp.sqrt(v - m * m) + eps), g)


def _rss_leaf(s, g, *, eps):
    """One leaf of Adagrad: the new sum of squares and the scaled update."""
    s = _tree.cast_like(s + g * g, s)
    return s, _tree.cast_like(g / (jnp.sqrt(s) + eps), g)


def scale_by_adam(
    b1: float | jax.typing.ArrayLike = 0.9,
    b2: float | jax.typing.ArrayLike = 0.999,
    eps: float | jax.typing.ArrayLike = 1e-8,
    eps_root: float | jax.typing.ArrayLike = 0.0,
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
        mu_dtype: dtype of the first moment; the parameter's dtype when ``None``.

    Examples:
        >>> import jax.numpy as jnp, optkit
        >>> tx = optkit.scale_by_adam()
        >>> tx.update(jnp.array([0.5, -2.0]), tx.init(jnp.zeros(2)))[0]  # first step: sign(g)
        Array([ 1., -1.], dtype=float32)
    """
    _validation.decay_rate("b1", b1)
    _validation.decay_rate("b2", b2)
    _validation.non_negative("eps", eps)
    _validation.non_negative("eps_root", eps_root)
    amsgrad = _validation.boolean("amsgrad", amsgrad)
    no_eps_root = _validation.is_static_zero(eps_root)
    if mu_dtype is not None:
        mu_dtype = jnp.dtype(mu_dtype)

    def init(params: Params) -> ScaleByAdamState:
        nu = _tree.zeros_like(params)
        return ScaleByAdamState(
            count=_numerics.zero_count(params),
            mu=_tree.zeros_like(params, dtype=mu_dtype),
            nu=nu,
            nu_max=_tree.zeros_like(params) if amsgrad else None,
        )

    def update(updates, state, params=None, **extra_args):
        del params, extra_args
        _check_updates(state.nu, updates, "scale_by_adam")
        count = _numerics.increment(state.count)
        bias_correction1 = _numerics.bias_correction(b1, count)
        sqrt_bias_correction2 = jnp.sqrt(_numerics.bias_correction(b2, count))

        hyper = dict(
            b1=b1,
            b2=b2,
            eps=eps,
            eps_root=eps_root,
            no_eps_root=no_eps_root,
            bias_correction1=bias_correction1,
            sqrt_bias_correction2=sqrt_bias_correction2,
        )
        if amsgrad:
            mu, nu, nu_max, out = _tree.map_leaves(
                _amsgrad_leaf, state.mu, state.nu, state.nu_max, updates, outputs=4, **hyper
            )
        else:
            mu, nu, out = _tree.map_leaves(
                _adam_leaf, state.mu, state.nu, updates, outputs=3, **hyper
            )
            nu_max = None
        return out, ScaleByAdamState(count=count, mu=mu, nu=nu, nu_max=nu_max)

    return GradientTransformation(init, update)


def scale_by_rms(
    alpha: float | jax.typing.ArrayLike = 0.99,
    eps: float | jax.typing.ArrayLike = 1e-8,
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
        alpha: smoothing constant in ``[0, 1)``.
        eps: added to the denominator, outside the square root (``>= 0``).
        centered: normalize by the estimated variance instead of the raw second moment.

    Examples:
        >>> import jax.numpy as jnp, optkit
        >>> tx = optkit.scale_by_rms(alpha=0.0, eps=0.0)
        >>> tx.update(jnp.array([2.0, -3.0]), tx.init(jnp.zeros(2)))[0]
        Array([ 1., -1.], dtype=float32)
    """
    _validation.decay_rate("alpha", alpha)
    _validation.non_negative("eps", eps)
    centered = _validation.boolean("centered", centered)

    def init(params: Params) -> ScaleByRmsState:
        return ScaleByRmsState(
            nu=_tree.zeros_like(params), mu=_tree.zeros_like(params) if centered else None
        )

    def update(updates, state, params=None, **extra_args):
        del params, extra_args
        _check_updates(state.nu, updates, "scale_by_rms")
        if centered:
            nu, mu, out = _tree.map_leaves(
                _centered_rms_leaf, state.nu, state.mu, updates, outputs=3, alpha=alpha, eps=eps
            )
        else:
            nu, out = _tree.map_leaves(
                _rms_leaf, state.nu, updates, outputs=2, alpha=alpha, eps=eps
            )
            mu = None
        return out, ScaleByRmsState(nu=nu, mu=mu)

    return GradientTransformation(init, update)


def scale_by_rss(
    initial_accumulator_value: float | jax.typing.ArrayLike = 0.0,
    eps: float | jax.typing.ArrayLike = 1e-10,
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
    _validation.non_negative("initial_accumulator_value", initial_accumulator_value)
    _validation.non_negative("eps", eps)

    def init(params: Params) -> ScaleByRssState:
        return ScaleByRssState(sum_of_squares=_tree.full_like(params, initial_accumulator_value))

    def update(updates, state, params=None, **extra_args):
        del params, extra_args
        _check_updates(state.sum_of_squares, updates, "scale_by_rss")
        sums, out = _tree.map_leaves(_rss_leaf, state.sum_of_squares, updates, outputs=2, eps=eps)
        return out, ScaleByRssState(sum_of_squares=sums)

    return GradientTransformation(init, update)
