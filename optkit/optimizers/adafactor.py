"""Adafactor: second moments factored into row and column statistics, steps relative to the
parameters' scale."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from optkit import _numerics, _tree, _validation
from optkit._base import (
    GradientTransformation,
    Params,
    Scalar,
    ScalarOrSchedule,
    Updates,
    require_params,
)
from optkit._kernel import leaf_kernel
from optkit.optimizers._compose import chain_present, described, maybe_negate
from optkit.transforms.scaling import ScaleByScheduleState, scale_by_learning_rate
from optkit.transforms.weight_decay import maybe_decayed_weights


class ScaleByAdafactorState(NamedTuple):
    """Update count and the second-moment estimates, with torch's names and shapes.

    A leaf of two or more dimensions has ``row_var`` (its shape with the last axis reduced to
    size 1) and ``col_var`` (the second-to-last axis reduced), and ``None`` in ``variance``; a
    scalar or vector leaf has ``variance`` (its own shape) and ``None`` in the other two.
    """

    count: jax.Array
    row_var: Updates
    col_var: Updates
    variance: Updates

    # Buffers that are never negative: quantize_state stores them with an unsigned map.
    non_negative_fields = ("row_var", "col_var", "variance")


class FactoredLeaf(NamedTuple):
    row_var: jax.Array
    col_var: jax.Array
    update: jax.Array


class UnfactoredLeaf(NamedTuple):
    variance: jax.Array
    update: jax.Array


def _is_factored(leaf: Any) -> bool:
    """torch factors the second moment of every leaf of two or more dimensions."""
    return jnp.ndim(leaf) >= 2


def _mean_square(g: jax.Array, axis: int) -> jax.Array:
    """``mean(g * g, axis)`` (axis kept) as torch computes it: the norm, squared, over the
    axis' length."""
    norm = jnp.sqrt(jnp.sum(g * g, axis=axis, keepdims=True))
    return norm * norm / g.shape[axis]


def _normalized_and_clipped(g: jax.Array, estimate: jax.Array, eps1: Any, d: Any) -> jax.Array:
    """``U = g / max(sqrt(V), eps1)``, then ``U / max(1, RMS(U) / d)``."""
    update = jax.lax.rsqrt(jnp.maximum(estimate, eps1 * eps1)) * g
    rms_over_d = jnp.sqrt(jnp.sum(update * update)) / (math.sqrt(update.size) * d)
    return update / jnp.maximum(1.0, rms_over_d)


@leaf_kernel
def _factored(row_var, col_var, update, *, one_minus_beta2, eps1, d) -> FactoredLeaf:
    lerp = _numerics.lerp
    row_var = lerp(row_var, _mean_square(update, -1), one_minus_beta2).astype(row_var.dtype)
    col_var = lerp(col_var, _mean_square(update, -2), one_minus_beta2).astype(col_var.dtype)
    row_mean = jnp.maximum(jnp.mean(row_var, axis=-2, keepdims=True), eps1)
    estimate = row_var * col_var / row_mean
    return FactoredLeaf(row_var, col_var, _normalized_and_clipped(update, estimate, eps1, d))


@leaf_kernel
def _unfactored(variance, update, *, one_minus_beta2, eps1, d) -> UnfactoredLeaf:
    lerp = _numerics.lerp
    variance = lerp(variance, update * update, one_minus_beta2).astype(variance.dtype)
    return UnfactoredLeaf(variance, _normalized_and_clipped(update, variance, eps1, d))


def _param_shapes(state: ScaleByAdafactorState) -> Any:
    """The shape of the update each leaf of the state was built for, to check updates against."""

    def shape(row_var: Any, col_var: Any, variance: Any) -> Any:
        if variance is not None:
            return variance
        return jax.ShapeDtypeStruct((*row_var.shape[:-1], col_var.shape[-1]), row_var.dtype)

    return jax.tree.map(
        shape, state.row_var, state.col_var, state.variance, is_leaf=lambda x: x is None
    )


def _eps1_for(eps1: Scalar | None, dtype: Any) -> Scalar:
    """``eps1``, or torch's default for ``None``: the machine epsilon of the leaf's dtype."""
    return float(jnp.finfo(dtype).eps) if eps1 is None else eps1


def _second_moment_step(
    state: ScaleByAdafactorState, updates: Updates, *, one_minus_beta2: Any, eps1: Any, d: Any
) -> dict[str, Any]:
    """Each leaf through the factored or the unfactored kernel, by its rank: the new
    ``row_var``, ``col_var``, ``variance`` and ``update`` trees.

    One kernel call per rank class and dtype: ``eps1=None`` resolves per dtype, and leaves of
    the same type still share one trace inside each call.
    """
    grads, treedef = jax.tree.flatten(updates)
    new = {
        "row_var": treedef.flatten_up_to(state.row_var),
        "col_var": treedef.flatten_up_to(state.col_var),
        "variance": treedef.flatten_up_to(state.variance),
        "update": list(grads),
    }
    groups: dict[tuple[bool, Any], list[int]] = {}
    for index, g in enumerate(grads):
        groups.setdefault((_is_factored(g), jnp.dtype(g.dtype)), []).append(index)
    for (factored, dtype), indices in groups.items():
        kernel, buffers = (
            (_factored, ("row_var", "col_var")) if factored else (_unfactored, ("variance",))
        )
        out = kernel(
            *([new[name][i] for i in indices] for name in (*buffers, "update")),
            one_minus_beta2=one_minus_beta2,
            eps1=_eps1_for(eps1, dtype),
            d=d,
        )
        for name in (*buffers, "update"):
            for index, value in zip(indices, getattr(out, name), strict=True):
                new[name][index] = value
    return {name: treedef.unflatten(values) for name, values in new.items()}


def scale_by_adafactor(
    beta2_decay: Scalar = -0.8, eps1: Scalar | None = None, d: Scalar = 1.0
) -> GradientTransformation:
    r"""Scale updates by Adafactor's factored second moment, then clip their RMS, as torch does.

    For a leaf of two or more dimensions the second moment is factored over its last two axes
    (leading axes are kept, as a batch of matrices): a row statistic :math:`R` (the mean of
    :math:`g^2` over the last axis) and a column statistic :math:`C` (over the second-to-last).
    Scalars and vectors keep a full second moment :math:`V`. With
    :math:`\hat\beta_{2,t} = 1 - t^{\tau}` (``beta2_decay`` :math:`= \tau`):

    .. math::
        R_t &= \hat\beta_{2,t} R_{t-1} + (1 - \hat\beta_{2,t})\, \mathrm{mean}_{-1}(g_t^2),
        \quad C_t = \hat\beta_{2,t} C_{t-1} + (1 - \hat\beta_{2,t})\, \mathrm{mean}_{-2}(g_t^2)
        \\
        \hat V_t &= \frac{R_t C_t}{\max(\mathrm{mean}_{-2}(R_t), \epsilon_1)}
        \quad \text{(or } V_t = \hat\beta_{2,t} V_{t-1} + (1 - \hat\beta_{2,t}) g_t^2
        \text{ for fewer than two dimensions)} \\
        U_t &= \frac{g_t}{\max(\sqrt{\hat V_t}, \epsilon_1)}, \qquad
        \hat U_t = \frac{U_t}{\max(1, \mathrm{RMS}(U_t) / d)}

    The moving averages are torch's ``lerp_`` with the weight :math:`t^{\tau}` (1 at the first
    step). Which of the two kernels a leaf takes is decided by its rank when the transform runs.

    Named after the algorithm rather than optax's ``scale_by_factored_rms``, whose math differs:
    optax factors the two *largest* axes, and only when both have at least 128 entries, adds its
    epsilon to :math:`g^2` before averaging, and leaves the clipping to ``clip_by_block_rms``.

    The math depends on each leaf's shape (row and column statistics, per-leaf RMS), so it
    raises inside :func:`optkit.flatten` rather than silently computing something else.

    Args:
        beta2_decay: :math:`\tau \le 0`; :math:`1 - \hat\beta_{2,t} = t^{\tau}`.
        eps1: :math:`\epsilon_1 \ge 0`, the floor of :math:`\sqrt{\hat V_t}` and of the row
            statistic's mean; ``None`` (torch's default) is the machine epsilon of each leaf's
            dtype.
        d: the clipping threshold :math:`d \ge 1` on the RMS of :math:`U_t`.

    Examples:
        >>> import jax.numpy as jnp, optkit
        >>> tx = optkit.scale_by_adafactor()
        >>> tx.update(jnp.array([0.5, -2.0]), tx.init(jnp.zeros(2)))[0]  # first step: sign(g)
        Array([ 1., -1.], dtype=float32)
    """
    _validation.hyperparameters(beta2_decay=beta2_decay, d=d)
    if eps1 is not None:
        _validation.hyperparameters(eps1=eps1)

    def init(params: Params) -> ScaleByAdafactorState:
        _tree.require_own_leaves("scale_by_adafactor")

        def buffer(make: Any, factored: bool) -> Any:
            return jax.tree.map(lambda p: make(p) if _is_factored(p) == factored else None, params)

        return ScaleByAdafactorState(
            count=_numerics.zero_count(params),
            row_var=buffer(lambda p: _tree.reduced_zeros(p, -1), True),
            col_var=buffer(lambda p: _tree.reduced_zeros(p, -2), True),
            variance=buffer(_tree.zeros_like, False),
        )

    def update(
        updates: Updates,
        state: ScaleByAdafactorState,
        params: Params | None = None,
        **extra_args: Any,
    ) -> tuple[Updates, ScaleByAdafactorState]:
        del params, extra_args
        _tree.require_own_leaves("scale_by_adafactor")
        _tree.check_match(
            _param_shapes(state), updates, "scale_by_adafactor", "optimizer state", "updates"
        )
        count = _numerics.increment(state.count)
        one_minus_beta2 = count.astype(jnp.result_type(float)) ** beta2_decay
        new = _second_moment_step(state, updates, one_minus_beta2=one_minus_beta2, eps1=eps1, d=d)
        return new.pop("update"), ScaleByAdafactorState(count=count, **new)

    return GradientTransformation(init, update)


@leaf_kernel
def _relative_step(update: jax.Array, param: jax.Array, *, eps2: Any, cap: Any) -> jax.Array:
    param_rms = jnp.sqrt(jnp.sum(param * param)) / math.sqrt(param.size)
    return update * (jnp.maximum(eps2, param_rms) * cap)


def scale_by_relative_step_size(
    learning_rate: ScalarOrSchedule = 1e-2, eps2: Scalar = 1e-3
) -> GradientTransformation:
    r"""Scale each leaf by Adafactor's relative step size over the learning rate.

    Adafactor's step size is relative to the parameter's scale,
    :math:`\alpha_t = \max(\epsilon_2, \mathrm{RMS}(\theta_{t-1}))\, \rho_t`, with
    :math:`\rho_t = \min(\gamma_t, 1 / \sqrt{t})` as torch computes it (the paper's constant
    0.01 is torch's default learning rate). This transform multiplies by
    :math:`\alpha_t / \gamma_t`:

    .. math::
        u_t \leftarrow \max(\epsilon_2, \mathrm{RMS}(\theta_{t-1}))\,
        \min\!\left(1, \frac{1}{\gamma_t \sqrt{t}}\right) u_t

    and :func:`optkit.scale_by_learning_rate` with the same ``learning_rate`` multiplies by
    :math:`-\gamma_t` afterwards. Keeping :math:`\gamma_t` outside lets decoupled weight decay
    sit between the two and be scaled by :math:`\gamma_t` alone, as in torch. A zero learning
    rate gives a factor of 1 here and a zero step in the end.

    The RMS is over each leaf, so it raises inside :func:`optkit.flatten`.

    Args:
        learning_rate: :math:`\gamma_t`, a number or a schedule of the 0-based update count
            (the same value as the ``scale_by_learning_rate`` that follows).
        eps2: :math:`\epsilon_2 \ge 0`, the floor of the parameter scale (torch's ``eps[1]``).

    Examples:
        >>> import jax.numpy as jnp, optkit
        >>> tx = optkit.scale_by_relative_step_size(learning_rate=1.0, eps2=1e-3)
        >>> params = jnp.array([3.0, -4.0])  # RMS 3.536
        >>> tx.update(jnp.ones(2), tx.init(params), params)[0]
        Array([3.535534, 3.535534], dtype=float32)

    References:
        Shazeer and Stern, `Adafactor: Adaptive Learning Rates with Sublinear Memory Cost
        <https://arxiv.org/abs/1804.04235>`_, 2018 (section 8, relative step size).
    """
    _validation.hyperparameters(learning_rate=learning_rate, eps2=eps2)

    def init(params: Params) -> ScaleByScheduleState:
        _tree.require_own_leaves("scale_by_relative_step_size")
        return ScaleByScheduleState(count=_numerics.zero_count(params))

    def update(
        updates: Updates,
        state: ScaleByScheduleState,
        params: Params | None = None,
        **extra_args: Any,
    ) -> tuple[Updates, ScaleByScheduleState]:
        del extra_args
        where = "scale_by_relative_step_size"
        _tree.require_own_leaves(where)
        params = require_params(params, where)
        _tree.check_match(params, updates, where, "params", "updates")
        gamma = learning_rate(state.count) if callable(learning_rate) else learning_rate
        count = _numerics.increment(state.count)
        # rho_t / gamma_t; 1 / (0 * sqrt(t)) is inf, so a zero learning rate gives 1, not NaN.
        cap = jnp.minimum(1.0, jax.lax.rsqrt(count.astype(jnp.result_type(float))) / gamma)
        return _relative_step(updates, params, eps2=eps2, cap=cap), ScaleByScheduleState(count)

    return GradientTransformation(init, update)


def _split_eps(eps: Sequence[Scalar | None]) -> tuple[Scalar | None, Scalar]:
    """torch's ``eps = (eps1, eps2)``; ranges are checked by the primitives that use each."""
    if not isinstance(eps, tuple | list) or len(eps) != 2:
        raise TypeError(
            f"eps must be a tuple (eps1, eps2) of two numbers, eps1 possibly None, got {eps!r}."
        )
    return eps[0], eps[1]


def adafactor(
    learning_rate: ScalarOrSchedule = 1e-2,
    beta2_decay: Scalar = -0.8,
    eps: tuple[Scalar | None, Scalar] = (None, 1e-3),
    d: Scalar = 1.0,
    weight_decay: Scalar = 0.0,
    *,
    maximize: bool = False,
) -> GradientTransformation:
    r"""Adafactor. Same math and defaults as ``torch.optim.Adafactor``.

    .. math::
        \hat\beta_{2,t} &= 1 - t^{\tau}, \quad \rho_t = \min(\gamma, 1/\sqrt{t}), \quad
        \alpha_t = \max(\epsilon_2, \mathrm{RMS}(\theta_{t-1}))\, \rho_t \\
        \hat V_t &= \frac{R_t C_t}{\max(\mathrm{mean}_{-2}(R_t), \epsilon_1)}
        \ \text{(two or more dimensions)}, \quad
        V_t = \hat\beta_{2,t} V_{t-1} + (1 - \hat\beta_{2,t}) g_t^2 \ \text{(fewer)} \\
        U_t &= \frac{g_t}{\max(\sqrt{\hat V_t}, \epsilon_1)}, \quad
        \hat U_t = \frac{U_t}{\max(1, \mathrm{RMS}(U_t) / d)} \\
        \theta_t &= \theta_{t-1} - \gamma \lambda \theta_{t-1} - \alpha_t \hat U_t

    with :math:`R_t, C_t` the moving averages (weight :math:`t^{\tau}`) of the row and column
    means of :math:`g_t^2` over each leaf's last two axes (see :func:`scale_by_adafactor`).
    There is no first moment. The learning rate caps the relative step size :math:`\rho_t` and
    scales the decoupled weight decay; :math:`\alpha_t` uses the parameters before the decay.
    ``eps1=None`` (the default) is the machine epsilon of each leaf's dtype. (torch resolves it
    once per param group, from the first parameter it updates, so a torch group mixing dtypes
    gives every parameter the first one's epsilon; optkit gives each leaf its own dtype's.)

    This is torch's Adafactor, not optax's or transformers': both add :math:`\epsilon_1` to
    :math:`g^2` before averaging and scale weight decay differently, and optax factors the two
    largest axes (both at least 128 long) and does not cap its learning rate at
    :math:`1/\sqrt{t}`.
    Its math depends on each leaf's shape, so it cannot run inside :func:`optkit.flatten`
    (which raises a ``ValueError`` rather than change the result).

    The chain is ``negate`` (maximize) -> ``scale_by_adafactor`` ->
    ``scale_by_relative_step_size`` -> ``add_decayed_weights`` -> ``scale_by_learning_rate``.

    Args:
        learning_rate: :math:`\gamma`, a number or a schedule (torch's ``lr``; default ``1e-2``).
        beta2_decay: :math:`\tau \le 0` (default ``-0.8``).
        eps: ``(eps1, eps2)``: :math:`\epsilon_1 \ge 0` or ``None``, the floor of the root
            second moment, and :math:`\epsilon_2 \ge 0`, the floor of the parameter scale
            (default ``(None, 1e-3)``).
        d: the clipping threshold :math:`d \ge 1` (default 1).
        weight_decay: decoupled coefficient :math:`\lambda \ge 0`, multiplied by the learning
            rate (default 0).
        maximize: ascend the objective instead of descending it.

    Examples:
        >>> import jax.numpy as jnp, optkit
        >>> params = {"w": jnp.ones((2, 3)), "b": jnp.zeros(3)}
        >>> tx = optkit.adafactor(learning_rate=0.1)
        >>> state = tx.init(params)
        >>> state[0].row_var["w"].shape, state[0].col_var["w"].shape, state[0].variance["b"].shape
        ((2, 1), (1, 3), (3,))
        >>> updates, state = tx.update({"w": jnp.ones((2, 3)), "b": jnp.ones(3)}, state, params)
        >>> updates["w"][0, 0], updates["b"][0]  # -rho * max(eps2, RMS(param)) * sign(g)
        (Array(-0.1, dtype=float32), Array(-0.0001, dtype=float32))

    References:
        Shazeer and Stern, `Adafactor: Adaptive Learning Rates with Sublinear Memory Cost
        <https://arxiv.org/abs/1804.04235>`_, 2018.
    """
    eps1, eps2 = _split_eps(eps)
    _validation.hyperparameters(learning_rate=learning_rate, weight_decay=weight_decay)
    transform = chain_present(
        maybe_negate(maximize),
        scale_by_adafactor(beta2_decay=beta2_decay, eps1=eps1, d=d),
        scale_by_relative_step_size(learning_rate, eps2=eps2),
        maybe_decayed_weights(weight_decay, mask=None),
        scale_by_learning_rate(learning_rate),
    )
    return described(
        transform,
        "Adafactor",
        learning_rate=learning_rate,
        beta2_decay=beta2_decay,
        eps=eps,
        d=d,
        weight_decay=weight_decay,
        maximize=maximize,
    )
