"""Weight averaging: an EMA or SWA of the params kept in the optimizer state, as torch's
``torch.optim.swa_utils.AveragedModel``."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from optkit import _numerics, _tree, _validation
from optkit._base import (
    GradientTransformation,
    OptState,
    Params,
    Scalar,
    Updates,
    apply_updates,
    check_transform,
    require_params,
    takes_extra_args,
)
from optkit._kernel import leaf_kernel

MODES = ("ema", "swa")
_INT32_MAX = 2**31 - 1


class WeightAveragingState(NamedTuple):
    """The averaged params (a tree shaped like the params, in each param's dtype; read it with
    :func:`get_averaged_params`), torch's ``n_averaged`` (how many times the average has been
    updated), the 0-based update count, and the wrapped optimizer's state. Counts are int32."""

    averaged_params: Params
    n_averaged: jax.Array
    count: jax.Array
    inner_state: OptState


def _compute_dtype(dtype: jnp.dtype) -> jnp.dtype:
    """torch's ``opmath`` type: half-precision leaves are averaged in float32, then rounded."""
    return jnp.promote_types(dtype, jnp.float32) if jnp.finfo(dtype).bits < 32 else dtype


@leaf_kernel
def _ema(average: jax.Array, param: jax.Array, *, weight: Any, first: jax.Array) -> jax.Array:
    # torch: get_ema_multi_avg_fn(decay) is torch._foreach_lerp_(average, param, 1 - decay).
    compute = _compute_dtype(average.dtype)
    blended = _numerics.lerp(average.astype(compute), param.astype(compute), weight)
    return jnp.where(first, param.astype(compute), blended)


@leaf_kernel
def _swa(average: jax.Array, param: jax.Array, *, n_averaged: jax.Array) -> jax.Array:
    # torch: get_swa_multi_avg_fn() lerps with weight 1 / (n_averaged + 1), an int64 tensor
    # divided in torch's default dtype: a float32 weight, even for float64 params.
    weight = jnp.float32(1) / (n_averaged + 1).astype(jnp.float32)
    compute = _compute_dtype(average.dtype)
    blended = _numerics.lerp(average.astype(compute), param.astype(compute), weight.astype(compute))
    return jnp.where(n_averaged == 0, param.astype(compute), blended)


def weight_averaging(
    inner: Any,
    *,
    mode: str = "ema",
    decay: Scalar = 0.999,
    start_step: int = 0,
    every_k: int = 1,
) -> GradientTransformation:
    r"""Keep an exponential moving average (EMA) or a running mean (SWA) of the params.

    ``inner``'s updates pass through unchanged; the state also holds an average of the *new*
    params :math:`\theta_t` = ``optkit.apply_updates(params, updates)``, updated after update
    :math:`c` (0-based) when :math:`c \ge` ``start_step`` and ``(c - start_step) % every_k == 0``.
    The first such update copies :math:`\theta_t`; after it, with :math:`n` the number of
    averages so far (torch's ``n_averaged``):

    .. math::
        \text{ema:}\quad \bar\theta &\leftarrow \operatorname{lerp}(\bar\theta, \theta_t,
            1 - \text{decay}) = \text{decay}\,\bar\theta + (1 - \text{decay})\,\theta_t \\
        \text{swa:}\quad \bar\theta &\leftarrow \operatorname{lerp}(\bar\theta, \theta_t,
            \tfrac{1}{n + 1}) = \bar\theta + \tfrac{\theta_t - \bar\theta}{n + 1}

    Read the average with :func:`get_averaged_params` (evaluate with it; keep training with the
    params). Before the first averaging it is a copy of the params given to ``init``, as torch's
    ``AveragedModel`` starts as a copy of the model. Each leaf keeps its param's dtype.

    Same as torch's ``AveragedModel`` with ``update_parameters(model)`` called after
    ``optimizer.step()`` (``use_buffers=False``, the default)::

        ema_model = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(0.999))  # mode="ema"
        swa_model = AveragedModel(model, multi_avg_fn=get_swa_multi_avg_fn())       # mode="swa"
        for c, (x, y) in enumerate(loader):
            loss_fn(model(x), y).backward(); optimizer.step(); optimizer.zero_grad()
            if c >= start_step and (c - start_step) % every_k == 0:
                ema_model.update_parameters(model)

    with torch's rounding: both formulas of its CPU lerp (``torch._foreach_lerp_``), a float32
    SWA weight :math:`1/(n+1)` even for float64 params (torch divides its int64 ``n_averaged`` in
    float32), half-precision leaves averaged in float32. ``AveragedModel(model)`` without an
    averaging function runs ``get_swa_multi_avg_fn`` on CUDA but, on CPU, divides by
    :math:`n + 1` in the params' dtype (``get_swa_avg_fn``): the same mean up to the float32
    rounding of the weight, which float64 params show.

    Wrap the whole optimizer (chain, param groups, ``inject_hyperparams``, ``flatten``): the
    average is of ``params + updates`` with the updates ``inner`` returns, so nothing after this
    wrapper may change them. ``update`` needs the params.

    optax has no average of the params beside an unchanged optimizer: ``optax.ema`` replaces
    the *updates* passing through it by their moving average (from zero, debiased by default),
    and ``optax.contrib.schedule_free`` averages iterates as part of a different algorithm
    (``schedule_free_eval_params``). :func:`optkit.averaged_params` is different too: ASGD's
    built-in average of its own iterates.

    Args:
        inner: the optimizer whose params are averaged (an optkit or optax transform).
        mode: ``"ema"`` (torch's ``get_ema_multi_avg_fn``) or ``"swa"`` (the equal-weight
            running mean of ``get_swa_multi_avg_fn``).
        decay: the EMA's decay in ``[0, 1]`` (default 0.999); unused by ``"swa"``.
        start_step: the 0-based update count of the first averaging, an integer >= 0.
        every_k: average after every ``every_k``-th update from ``start_step`` on, an integer
            >= 1 (torch's per-epoch SWA: the number of updates per epoch).

    Examples:
        >>> import jax, jax.numpy as jnp, optkit
        >>> tx = optkit.weight_averaging(optkit.sgd(learning_rate=0.25), mode="ema", decay=0.5)
        >>> params = jnp.array([1.0, -2.0])
        >>> state = tx.init(params)
        >>> for _ in range(3):  # each step halves the params
        ...     grads = jax.grad(lambda p: jnp.sum(p**2))(params)
        ...     updates, state = tx.update(grads, state, params)
        ...     params = optkit.apply_updates(params, updates)
        >>> params
        Array([ 0.125, -0.25 ], dtype=float32)
        >>> optkit.get_averaged_params(state)  # 1/2, (1/2 + 1/4) / 2, (3/8 + 1/8) / 2
        Array([ 0.25, -0.5 ], dtype=float32)

    References:
        Izmailov et al., `Averaging Weights Leads to Wider Optima and Better Generalization
        <https://arxiv.org/abs/1803.05407>`_, 2018 (SWA); Polyak and Juditsky, `Acceleration of
        Stochastic Approximation by Averaging <https://doi.org/10.1137/0330046>`_, 1992.
    """
    check_transform(inner, "weight_averaging", 0)
    _validation.one_of("mode", mode, MODES)
    # Not RANGES["decay"]: that name is trace's momentum coefficient, in [0, inf). torch's EMA
    # decay is an interpolation weight and get_ema_multi_avg_fn checks [0, 1].
    _validation.scalar("decay", decay, low=0.0, high=1.0)
    _validation.hyperparameters(start_step=start_step, every_k=every_k)
    # The count is int32 and saturates: larger settings mean "never" (or "once"), as they would.
    start_step, every_k = min(int(start_step), _INT32_MAX), min(int(every_k), _INT32_MAX)
    forward_extra = takes_extra_args(inner)

    def init(params: Params) -> WeightAveragingState:
        params = _tree.as_arrays(params)
        _tree.check_params(params, "weight_averaging")
        return WeightAveragingState(
            # A copy, not the params' own buffers: a step that donates both must not donate one
            # buffer twice. jnp.copy keeps each leaf's dtype and placement.
            averaged_params=jax.tree.map(jnp.copy, params),
            n_averaged=_numerics.zero_count(params),
            count=_numerics.zero_count(params),
            inner_state=inner.init(params),
        )

    def average(averaged: Params, new_params: Params, n_averaged: jax.Array) -> Params:
        if mode == "swa":
            return _swa(averaged, new_params, n_averaged=n_averaged)
        return _ema(averaged, new_params, weight=1 - decay, first=n_averaged == 0)

    def update(
        updates: Updates,
        state: WeightAveragingState,
        params: Params | None = None,
        **extra_args: Any,
    ) -> tuple[Updates, WeightAveragingState]:
        params = _tree.as_arrays(require_params(params, "weight_averaging"))
        updates = _tree.check_floating(updates, "weight_averaging")
        _tree.check_match(
            state.averaged_params, params, "weight_averaging", "optimizer state", "params"
        )
        if forward_extra:
            updates, inner_state = inner.update(updates, state.inner_state, params, **extra_args)
        else:
            updates, inner_state = inner.update(updates, state.inner_state, params)
        _tree.check_match(params, updates, "weight_averaging", "params", "updates")

        count = state.count
        due = (count >= start_step) & ((count - start_step) % every_k == 0)
        # lax.cond rather than a tree-wide jnp.where: XLA runs one branch, so the updates that do
        # not average (every_k - 1 of every every_k) never read or write the averaged params.
        averaged_params = jax.lax.cond(
            due,
            lambda: average(
                state.averaged_params, apply_updates(params, updates), state.n_averaged
            ),
            lambda: state.averaged_params,
        )
        n_averaged = jnp.where(due, _numerics.increment(state.n_averaged), state.n_averaged)
        return updates, WeightAveragingState(
            averaged_params=averaged_params,
            n_averaged=n_averaged,
            count=_numerics.increment(count),
            inner_state=inner_state,
        )

    return GradientTransformation(init, update)


def get_averaged_params(opt_state: OptState) -> Params:
    """The averaged params of the :func:`weight_averaging` state in ``opt_state``.

    torch's ``averaged_model.module.parameters()``, as a tree shaped like the params. The state
    may be a :func:`weight_averaging` state or hold one anywhere: in a chain, a param group,
    ``inject_hyperparams`` or another wrapper's ``inner_state``.

    Examples:
        >>> import jax.numpy as jnp, optkit
        >>> tx = optkit.weight_averaging(optkit.sgd(learning_rate=0.25), mode="swa")
        >>> params = {"w": jnp.array([1.0, 2.0])}
        >>> state = tx.init(params)
        >>> for _ in range(2):
        ...     updates, state = tx.update({"w": jnp.ones(2)}, state, params)
        ...     params = optkit.apply_updates(params, updates)
        >>> optkit.get_averaged_params(state)  # the mean of [0.75, 1.75] and [0.5, 1.5]
        {'w': Array([0.625, 1.625], dtype=float32)}

    Raises:
        ValueError: if ``opt_state`` holds no weight-averaging state, or several (one per param
            group, or nested wrappers: pass the one you mean, e.g. ``state.groups[i]``).
    """
    averaging = _tree.only_state(
        opt_state,
        WeightAveragingState,
        where="get_averaged_params",
        what="averaging",
        if_none="wrap the optimizer with optkit.weight_averaging",
        if_several=(
            " (one per param group, or nested wrappers?): pass the state of the one you mean, "
            "e.g. state.groups[i]"
        ),
    )
    return averaging.averaged_params
