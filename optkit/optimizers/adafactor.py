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
from optkit.transforms.scaling import ScaleByScheduleState, scale_by_learning_rate_unless_half
from optkit.transforms.weight_decay import add_decayed_weights_unless_half


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


# Why torch.optim.Adafactor refuses complex params, and so optkit's does.
_NO_COMPLEX = (
    "torch.optim.Adafactor refuses complex params too (its row and column statistics factor "
    "a real second moment)."
)


def _is_factored(leaf: Any) -> bool:
    """torch factors the second moment of every leaf of two or more dimensions."""
    return jnp.ndim(leaf) >= 2


def _mean_square(g: jax.Array, axis: int) -> jax.Array:
    """``mean(g * g, axis)`` (axis kept) as torch computes it: the norm, squared, over the
    axis' length (``norm(g).square_().div_(n)``, each op rounded on 16-bit leaves)."""
    rounded = _numerics.rounded
    norm = rounded(jnp.sqrt(jnp.sum(g * g, axis=axis, keepdims=True)))
    return rounded(rounded(norm * norm) / g.shape[axis])


def _normalized(g: jax.Array, estimate: jax.Array, eps1: Any) -> jax.Array:
    """``U = g / max(sqrt(V), eps1)``: torch's ``V.clamp_(min=eps1**2).rsqrt_().mul_(g)``."""
    rounded = _numerics.rounded
    floor = rounded(jnp.maximum(estimate, eps1 * eps1))
    return rounded(rounded(jax.lax.rsqrt(floor)) * g)


def _clip_denominator(update: jax.Array, d: Any) -> jax.Array:
    """``max(1, RMS(U) / d)``, from torch's ``update.norm(2)`` (rounded on 16-bit leaves)."""
    norm = _numerics.rounded(jnp.sqrt(jnp.sum(update * update)))
    return _python_max(1.0, norm / (math.sqrt(update.size) * d))


def _python_max(floor: Any, value: jax.Array) -> jax.Array:
    """torch's Python ``max(floor, value)`` of a ``.item()``: ``floor`` when ``value`` is NaN
    (a float16 square that overflowed), where ``jnp.maximum`` would give NaN."""
    return jnp.where(value > floor, value, floor)


def _factored_estimate(row_var, col_var, update, *, one_minus_beta2, eps1):
    """The new row and column statistics and the factored estimate of the second moment."""
    rounded, lerp = _numerics.rounded, _numerics.lerp
    row_var = rounded(lerp(row_var, _mean_square(update, -1), one_minus_beta2))
    col_var = rounded(lerp(col_var, _mean_square(update, -2), one_minus_beta2))
    row_mean = rounded(jnp.maximum(rounded(jnp.mean(row_var, axis=-2, keepdims=True)), eps1))
    estimate = rounded(rounded(row_var * col_var) / row_mean)
    return row_var, col_var, estimate


def _unfactored_estimate(variance, update, *, one_minus_beta2):
    rounded = _numerics.rounded
    return rounded(_numerics.lerp(variance, rounded(update * update), one_minus_beta2))


@leaf_kernel
def _factored(row_var, col_var, update, *, one_minus_beta2, eps1, d) -> FactoredLeaf:
    new_row, new_col, estimate = _factored_estimate(
        row_var, col_var, update, one_minus_beta2=one_minus_beta2, eps1=eps1
    )
    normalized = _normalized(update, estimate, eps1)
    return FactoredLeaf(
        new_row.astype(row_var.dtype),
        new_col.astype(col_var.dtype),
        normalized / _clip_denominator(normalized, d),
    )


@leaf_kernel
def _unfactored(variance, update, *, one_minus_beta2, eps1, d) -> UnfactoredLeaf:
    new = _unfactored_estimate(variance, update, one_minus_beta2=one_minus_beta2)
    normalized = _normalized(update, new, eps1)
    return UnfactoredLeaf(new.astype(variance.dtype), normalized / _clip_denominator(normalized, d))


def _whole_step(normalized, param, *, d, eps2, rho, shrink):
    """On a float16/bfloat16 leaf, the update that takes ``param`` to torch's result:
    ``param.mul_(shrink)`` (weight decay), then ``param.add_(U, alpha=-alpha / denom)`` with
    ``alpha = max(eps2, RMS(param)) * rho`` from the param before the decay, the alpha rounded
    to the leaf's dtype as ``add_`` rounds it."""
    rounded = _numerics.rounded
    param_norm = rounded(jnp.sqrt(jnp.sum(param * param)))
    alpha = _python_max(eps2, param_norm / math.sqrt(param.size)) * rho
    step_size = _numerics.rounded_scalar(-alpha / _clip_denominator(normalized, d))
    new = param if shrink is None else rounded(param * shrink)
    new = rounded(new + step_size * normalized)
    # An infinite param that torch leaves as it is moves by 0 (inf - inf would be NaN).
    return jnp.where(new == param, 0.0, new - param)


class _FactoredStepLeaf(NamedTuple):
    row_var: jax.Array
    col_var: jax.Array
    update: jax.Array
    param: jax.Array


class _UnfactoredStepLeaf(NamedTuple):
    variance: jax.Array
    update: jax.Array
    param: jax.Array


@leaf_kernel
def _factored_step(
    row_var, col_var, update, param, *, one_minus_beta2, eps1, d, eps2, rho, shrink
) -> _FactoredStepLeaf:
    """:func:`_factored`, except that on float16/bfloat16 leaves the update is the whole step
    (:func:`_whole_step`)."""
    if not _numerics.storing_half():
        new = _factored.fn(
            row_var, col_var, update, one_minus_beta2=one_minus_beta2, eps1=eps1, d=d
        )
        return _FactoredStepLeaf(*new, param)
    new_row, new_col, estimate = _factored_estimate(
        row_var, col_var, update, one_minus_beta2=one_minus_beta2, eps1=eps1
    )
    normalized = _normalized(update, estimate, eps1)
    step = _whole_step(normalized, param, d=d, eps2=eps2, rho=rho, shrink=shrink)
    return _FactoredStepLeaf(new_row, new_col, step, param)


@leaf_kernel
def _unfactored_step(
    variance, update, param, *, one_minus_beta2, eps1, d, eps2, rho, shrink
) -> _UnfactoredStepLeaf:
    """:func:`_unfactored`, except that on float16/bfloat16 leaves the update is the whole step
    (:func:`_whole_step`)."""
    if not _numerics.storing_half():
        new = _unfactored.fn(variance, update, one_minus_beta2=one_minus_beta2, eps1=eps1, d=d)
        return _UnfactoredStepLeaf(*new, param)
    new = _unfactored_estimate(variance, update, one_minus_beta2=one_minus_beta2)
    normalized = _normalized(update, new, eps1)
    step = _whole_step(normalized, param, d=d, eps2=eps2, rho=rho, shrink=shrink)
    return _UnfactoredStepLeaf(new, step, param)


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
    state: ScaleByAdafactorState,
    updates: Updates,
    *,
    one_minus_beta2: Any,
    eps1: Any,
    d: Any,
    params: Params | None = None,
    whole_step: dict[str, Any] | None = None,
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
    param_leaves = None if whole_step is None else treedef.flatten_up_to(params)
    for (factored, dtype), indices in groups.items():
        buffers = ("row_var", "col_var") if factored else ("variance",)
        leaves = [[new[name][i] for i in indices] for name in (*buffers, "update")]
        scalars = {"one_minus_beta2": one_minus_beta2, "eps1": _eps1_for(eps1, dtype), "d": d}
        if whole_step is None or not _numerics.is_half(dtype):
            out = (_factored if factored else _unfactored)(*leaves, **scalars)
        else:
            kernel = _factored_step if factored else _unfactored_step
            out = kernel(*leaves, [param_leaves[i] for i in indices], **scalars, **whole_step)
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
    return _scale_by_adafactor(beta2_decay, eps1, d, None)


def _scale_by_adafactor(
    beta2_decay: Scalar, eps1: Scalar | None, d: Scalar, whole_step: dict[str, Any] | None
) -> GradientTransformation:
    """:func:`scale_by_adafactor`; given ``whole_step`` (``learning_rate``, ``eps2`` and
    ``weight_decay`` of :func:`adafactor`) and params, the updates of float16 and bfloat16
    leaves are the whole step, rounded where torch's ops round: the transforms that follow it
    in :func:`adafactor` leave those leaves alone."""
    _validation.hyperparameters(beta2_decay=beta2_decay, d=d)
    if eps1 is not None:
        _validation.hyperparameters(eps1=eps1)

    def init(params: Params) -> ScaleByAdafactorState:
        _tree.require_own_leaves("scale_by_adafactor")
        _tree.refuse_complex(params, "scale_by_adafactor", _NO_COMPLEX)

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
        del extra_args
        _tree.require_own_leaves("scale_by_adafactor")
        _tree.check_match(
            _param_shapes(state), updates, "scale_by_adafactor", "optimizer state", "updates"
        )
        count = _numerics.increment(state.count)
        step = count.astype(jnp.result_type(float))
        one_minus_beta2 = step**beta2_decay
        scalars = None
        if whole_step is not None and params is not None:
            _tree.check_match(params, updates, "adafactor", "params", "updates")
            lr = _numerics.value_at(
                whole_step["learning_rate"], state.count, "adafactor: learning_rate"
            )
            weight_decay = whole_step["weight_decay"]
            scalars = {
                "eps2": whole_step["eps2"],
                # torch's rho_t = min(lr, 1 / sqrt(t)).
                "rho": jnp.minimum(lr, jax.lax.rsqrt(step)),
                "shrink": None
                if _validation.is_static_zero(weight_decay)
                else 1.0 - lr * weight_decay,
            }
        new = _second_moment_step(
            state,
            updates,
            one_minus_beta2=one_minus_beta2,
            eps1=eps1,
            d=d,
            params=params,
            whole_step=scalars,
        )
        return new.pop("update"), ScaleByAdafactorState(count=count, **new)

    return GradientTransformation(init, update)


@leaf_kernel
def _relative_step_unless_half(
    update: jax.Array, param: jax.Array, *, eps2: Any, cap: Any
) -> jax.Array:
    """:func:`_relative_step`, the identity on float16/bfloat16 leaves."""
    if _numerics.storing_half():
        return update
    return _relative_step.fn(update, param, eps2=eps2, cap=cap)


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
    return _relative_step_size(learning_rate, eps2, unless_half=False)


def _relative_step_size(
    learning_rate: ScalarOrSchedule, eps2: Scalar, *, unless_half: bool
) -> GradientTransformation:
    """:func:`scale_by_relative_step_size`, the identity on float16/bfloat16 leaves with
    ``unless_half`` (whose step :func:`adafactor`'s preconditioner takes whole)."""
    kernel = _relative_step_unless_half if unless_half else _relative_step
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
        updates = _tree.check_updates(params, updates, where, "params")
        gamma = learning_rate(state.count) if callable(learning_rate) else learning_rate
        count = _numerics.increment(state.count)
        # rho_t / gamma_t; 1 / (0 * sqrt(t)) is inf, so a zero learning rate gives 1, not NaN.
        cap = jnp.minimum(1.0, jax.lax.rsqrt(count.astype(jnp.result_type(float))) / gamma)
        return kernel(updates, params, eps2=eps2, cap=cap), ScaleByScheduleState(count)

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
        _scale_by_adafactor(
            beta2_decay,
            eps1,
            d,
            {"learning_rate": learning_rate, "eps2": eps2, "weight_decay": weight_decay},
        ),
        _relative_step_size(learning_rate, eps2, unless_half=True),
        None
        if _validation.is_static_zero(weight_decay)
        else add_decayed_weights_unless_half(weight_decay),
        scale_by_learning_rate_unless_half(learning_rate),
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
