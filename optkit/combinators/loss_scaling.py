"""fp16 loss scaling as ``torch.amp.GradScaler`` does it, and skipping non-finite steps.

The user differentiates ``loss * loss_scale(opt_state)``; :func:`grad_scaler` unscales those
gradients, skips the step when any is inf or NaN, and grows or backs off the scale. A skipped
step (here and in :func:`skip_nonfinite`) returns zero updates and keeps the wrapped transform's
state as it was, bit for bit.
"""

from __future__ import annotations

import functools
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
    check_transform,
    takes_extra_args,
)


class GradScalerState(NamedTuple):
    """The loss scale and its bookkeeping, around the wrapped transform's state."""

    scale: jax.Array
    """float32 scalar: multiply the loss by it before differentiating (see :func:`loss_scale`)."""
    growth_tracker: jax.Array
    """int32: finite steps since the scale last changed (torch's ``_growth_tracker``)."""
    skipped_steps: jax.Array
    """int32: how many updates were skipped for a non-finite gradient, in total."""
    inner_state: OptState


class SkipNonfiniteState(NamedTuple):
    """Counters of skipped updates, around the wrapped transform's state."""

    skipped_steps: jax.Array
    """int32: how many updates were skipped for a non-finite gradient, in total."""
    consecutive_skips: jax.Array
    """int32: how many of the latest updates in a row were skipped (0 after a finite one)."""
    inner_state: OptState


def _all_finite(tree: Updates) -> jax.Array:
    """Whether every element of every leaf is finite (``True`` for a tree without leaves).

    One reduction per leaf, as torch's kernel checks each gradient: a sharded leaf is reduced
    where it lives (concatenating the leaves first would gather them).
    """
    finite = [jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree.leaves(tree)]
    return functools.reduce(jnp.logical_and, finite, jnp.asarray(True))


def _step_unless(
    skip: jax.Array,
    inner: GradientTransformation,
    forward_extra: bool,
    updates: Updates,
    inner_state: OptState,
    params: Params | None,
    extra_args: dict[str, Any],
) -> tuple[Updates, OptState]:
    """``inner.update(...)``, or when ``skip`` is true zero updates and ``inner_state`` as given.

    ``lax.cond`` rather than a tree-wide ``jnp.where``: a skipped step runs no optimizer math on
    inf/NaN gradients and returns the state arrays themselves, untouched by construction; and
    XLA compiles a select of every buffer on a flag reduced from every leaf far more slowly
    than the conditional (superlinearly in the number of leaves, on CPU). The zeros are
    negative (``-0.0``) so that ``apply_updates`` keeps every param bit, even a param at
    ``-0.0`` (``-0.0 + 0.0`` would give ``+0.0``).
    """

    def run() -> tuple[Updates, OptState]:
        if forward_extra:
            return inner.update(updates, inner_state, params, **extra_args)
        return inner.update(updates, inner_state, params)

    # The zeros take the dtypes inner's updates have, which may differ from the gradients'.
    outputs = jax.eval_shape(run)

    def skipped() -> tuple[Updates, OptState]:
        zeros = jax.tree.map(lambda s: jnp.full(s.shape, -0.0, s.dtype), outputs[0])
        return zeros, inner_state

    return jax.lax.cond(skip, skipped, run)


def _unscale(grad: jax.Array, inverse_scale: jax.Array) -> jax.Array:
    """``grad * inverse_scale`` as torch's ``_amp_foreach_non_finite_check_and_unscale_``:
    in float64 for float64 gradients, else in float32, rounded back to the gradient's dtype.

    A plain map, not a ``leaf_kernel``: a kernel would cast the scalar to a bfloat16 leaf's
    dtype, where torch multiplies bfloat16 gradients in float32.
    """
    compute = jnp.promote_types(grad.dtype, jnp.float32)
    return (grad.astype(compute) * inverse_scale.astype(compute)).astype(grad.dtype)


def _check_not_float16(updates: Updates) -> None:
    halves = [p for p, leaf in _tree.leaves_with_paths(updates) if leaf.dtype == jnp.float16]
    if halves:
        raise TypeError(
            f"grad_scaler: the gradients of {_tree.listed(halves)} are float16. Keep the params "
            "(and so their gradients) in float32 and compute in float16; torch's GradScaler "
            "refuses float16 gradients too ('Attempting to unscale FP16 gradients')."
        )


def grad_scaler(
    inner: GradientTransformation,
    *,
    init_scale: Scalar = 65536.0,
    growth_factor: Scalar = 2.0,
    backoff_factor: Scalar = 0.5,
    growth_interval: int = 2000,
) -> GradientTransformation:
    r"""Dynamic loss scaling for float16 training: ``torch.amp.GradScaler`` around ``inner``.

    Differentiate the loss multiplied by :func:`loss_scale` of the optimizer state, and pass
    those scaled gradients :math:`\tilde g` to ``update``. With :math:`s` the scale,
    :math:`\gamma` ``growth_factor``, :math:`\beta` ``backoff_factor``, :math:`N`
    ``growth_interval`` and :math:`k` the growth tracker:

    .. math::
        \hat g &= \tilde g \cdot \mathrm{fl_{32}}(1 / s) \\
        \text{if } \hat g \text{ has an inf or NaN:}\quad
            &\text{updates} = 0,\ \text{inner state kept},\
            s \leftarrow \mathrm{fl_{32}}(s \beta),\ k \leftarrow 0 \\
        \text{else:}\quad &\text{updates, inner state} = \text{inner}(\hat g),\
            k \leftarrow k + 1, \\
        &\text{if } k = N:\ s \leftarrow \mathrm{fl_{32}}(s \gamma)
            \text{ (unless that overflows)},\ k \leftarrow 0

    Same as torch's::

        scaler = torch.amp.GradScaler(init_scale=..., growth_factor=..., ...)
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)                 # optional: to clip unscaled gradients
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
        scaler.step(optimizer)
        scaler.update()

    with ``grad_scaler(chain(clip_by_global_norm(max_norm), adamw(...)))``: anything inside
    ``inner``, clipping included, sees the unscaled gradients, as after ``scaler.unscale_``.
    The reciprocal, the unscaling (in float64 for float64 gradients, else in float32) and the
    new scale (the product in double, then float32, emulated in 32-bit integers without
    ``jax_enable_x64``) round as torch's kernels do, so the scale trajectory is torch's bit for
    bit. One difference: torch checks the *scaled* gradients, so a
    gradient that overflows only when unscaled (a scale below 1) reaches its optimizer as inf;
    here every unscaled gradient is checked, and such a step is skipped.

    **Skipped steps leave everything inside ``inner`` untouched**, its step counts and schedule
    counts included (as torch leaves ``optimizer.state`` untouched). torch's plain loop still
    calls ``scheduler.step()`` after a skipped ``scaler.step``, so its learning rate moves on;
    to get that, keep the schedule's count outside the scaler with ``inject_hyperparams``::

        optkit.inject_hyperparams(
            lambda learning_rate: optkit.grad_scaler(optkit.adamw(learning_rate))
        )(learning_rate=schedule)

    Schedules inside ``inner`` instead follow the loops that step the scheduler only when the
    optimizer ran (Hugging Face's ``optimizer_was_run``).

    optax has no dynamic loss scaling; ``optax.apply_if_finite`` skips non-finite steps without
    scaling and applies them anyway after ``max_consecutive_errors`` (see
    :func:`skip_nonfinite`).

    Args:
        inner: the transform to run on the unscaled gradients (optkit or optax).
        init_scale: the first scale, :math:`> 0` and finite in float32 (default ``2**16``).
        growth_factor: :math:`\gamma > 1` (default 2).
        backoff_factor: :math:`0 < \beta < 1` (default 0.5).
        growth_interval: :math:`N \ge 1`, consecutive finite steps between two growths
            (default 2000).

    Raises:
        TypeError: at ``update``, for float16 gradients (torch refuses them too: keep float32
            params and compute in float16).

    Examples:
        >>> import jax, jax.numpy as jnp, optkit
        >>> tx = optkit.grad_scaler(optkit.sgd(learning_rate=0.25), growth_interval=2)
        >>> params = jnp.array([1.0, -2.0])
        >>> state = tx.init(params)
        >>> loss_fn = lambda p: jnp.sum(p**2)
        >>> for step in range(3):
        ...     scaled_loss = lambda p: loss_fn(p) * optkit.loss_scale(state)
        ...     grads = jax.grad(scaled_loss)(params)
        ...     updates, state = tx.update(grads, state, params)
        ...     params = optkit.apply_updates(params, updates)
        >>> params, optkit.loss_scale(state)  # the scale grew after 2 finite steps
        (Array([ 0.125, -0.25 ], dtype=float32), Array(131072., dtype=float32))
        >>> grads = jnp.array([jnp.inf, 1.0])  # an overflow: skipped, the scale backs off
        >>> updates, state = tx.update(grads, state, params)
        >>> updates, optkit.loss_scale(state), state.skipped_steps
        (Array([-0., -0.], dtype=float32), Array(65536., dtype=float32), Array(1, dtype=int32))
    """
    check_transform(inner, "grad_scaler", 0)
    _validation.hyperparameters(
        init_scale=init_scale,
        growth_factor=growth_factor,
        backoff_factor=backoff_factor,
        growth_interval=growth_interval,
    )
    forward_extra = takes_extra_args(inner)

    def init(params: Params) -> GradScalerState:
        scale = _tree.place_scalars(jnp.asarray(init_scale, jnp.float32), params)
        return GradScalerState(
            scale=scale,
            growth_tracker=_numerics.zero_count(params),
            skipped_steps=_numerics.zero_count(params),
            inner_state=inner.init(params),
        )

    def update(
        updates: Updates,
        state: GradScalerState,
        params: Params | None = None,
        **extra_args: Any,
    ) -> tuple[Updates, GradScalerState]:
        updates = _tree.check_floating(updates, "grad_scaler")
        _check_not_float16(updates)
        # torch takes the reciprocal in double, then rounds to float32. For division, rounding
        # twice (53 then 24 bits) equals rounding once since 53 >= 2 * 24 + 2 (Figueroa, 1995),
        # so a float32 division gives the same bits with or without float64.
        inverse_scale = jnp.float32(1.0) / state.scale
        unscaled = jax.tree.map(lambda g: _unscale(g, inverse_scale), updates)
        found_inf = jnp.logical_not(_all_finite(unscaled))
        updates, inner_state = _step_unless(
            found_inf, inner, forward_extra, unscaled, state.inner_state, params, extra_args
        )
        scale, growth_tracker = next_scale(state.scale, state.growth_tracker, found_inf)
        return updates, GradScalerState(
            scale=scale,
            growth_tracker=growth_tracker,
            skipped_steps=jnp.where(
                found_inf, _numerics.increment(state.skipped_steps), state.skipped_steps
            ),
            inner_state=inner_state,
        )

    def next_scale(
        scale: jax.Array, growth_tracker: jax.Array, found_inf: jax.Array
    ) -> tuple[jax.Array, jax.Array]:
        """torch's ``_amp_update_scale_``: back off on inf/NaN, grow after N finite steps."""
        finite_steps = growth_tracker + 1  # < growth_interval <= int32 max: no overflow
        grow = finite_steps == growth_interval
        grown = _numerics.times_in_double(scale, growth_factor)
        grown = jnp.where(jnp.isfinite(grown), grown, scale)  # never grow past float32 to inf
        new_scale = jnp.where(
            found_inf,
            _numerics.times_in_double(scale, backoff_factor),
            jnp.where(grow, grown, scale),
        )
        reset = jnp.logical_or(found_inf, grow)
        return new_scale, jnp.where(reset, jnp.zeros_like(finite_steps), finite_steps)

    return GradientTransformation(init, update)


def loss_scale(opt_state: OptState) -> jax.Array:
    """The current loss scale of the :func:`grad_scaler` in ``opt_state``: multiply the loss by
    it before differentiating.

    torch's ``scaler.get_scale()`` (here a float32 array, with no device-to-host copy). The
    scaler may sit anywhere in the state: at its root, inside a chain, ``param_groups``,
    ``inject_hyperparams`` or another wrapper.

    Examples:
        >>> import jax.numpy as jnp, optkit
        >>> tx = optkit.chain(optkit.grad_scaler(optkit.adam(1e-3), init_scale=1024.0))
        >>> optkit.loss_scale(tx.init(jnp.zeros(2)))
        Array(1024., dtype=float32)

    Raises:
        ValueError: if ``opt_state`` holds no grad_scaler state, or more than one.
    """
    scaler = _tree.only_state(
        opt_state,
        GradScalerState,
        where="loss_scale",
        what="grad_scaler",
        if_none="wrap the optimizer in optkit.grad_scaler(...)",
        if_several="; use one grad_scaler around the whole optimizer",
    )
    return scaler.scale


def skip_nonfinite(inner: GradientTransformation) -> GradientTransformation:
    """Skip every update whose gradient holds an inf or NaN: zero updates, ``inner``'s state kept.

    The skip of :func:`grad_scaler` without the scaling, for bfloat16 or float32 training where
    an occasional bad batch should not corrupt the params or the optimizer's moments. Like
    torch's ``scaler.step(optimizer)`` on a non-finite gradient, a skipped update leaves
    everything inside ``inner`` untouched, step and schedule counts included (see
    :func:`grad_scaler` for keeping a schedule's count outside). The state counts skipped updates
    in total and in a row, e.g. to stop a run that only produces NaNs.

    Differs from ``optax.apply_if_finite(inner, max_consecutive_errors)``, which, after that
    many non-finite updates in a row, gives up and applies them (the params become NaN), and
    zeroes updates in the gradient's dtype rather than ``inner``'s output dtype.

    Examples:
        >>> import jax.numpy as jnp, optkit
        >>> tx = optkit.skip_nonfinite(optkit.adam(learning_rate=0.1))
        >>> params = jnp.ones(2)
        >>> state = tx.init(params)
        >>> updates, state = tx.update(jnp.array([jnp.nan, 1.0]), state, params)
        >>> updates, state.skipped_steps, state.consecutive_skips
        (Array([-0., -0.], dtype=float32), Array(1, dtype=int32), Array(1, dtype=int32))
        >>> updates, state = tx.update(jnp.array([1.0, 1.0]), state, params)
        >>> updates, state.skipped_steps, state.consecutive_skips
        (Array([-0.1, -0.1], dtype=float32), Array(1, dtype=int32), Array(0, dtype=int32))
    """
    check_transform(inner, "skip_nonfinite", 0)
    forward_extra = takes_extra_args(inner)

    def init(params: Params) -> SkipNonfiniteState:
        return SkipNonfiniteState(
            skipped_steps=_numerics.zero_count(params),
            consecutive_skips=_numerics.zero_count(params),
            inner_state=inner.init(params),
        )

    def update(
        updates: Updates,
        state: SkipNonfiniteState,
        params: Params | None = None,
        **extra_args: Any,
    ) -> tuple[Updates, SkipNonfiniteState]:
        found_inf = jnp.logical_not(_all_finite(updates))
        updates, inner_state = _step_unless(
            found_inf, inner, forward_extra, updates, state.inner_state, params, extra_args
        )
        return updates, SkipNonfiniteState(
            skipped_steps=jnp.where(
                found_inf, _numerics.increment(state.skipped_steps), state.skipped_steps
            ),
            consecutive_skips=jnp.where(
                found_inf,
                _numerics.increment(state.consecutive_skips),
                jnp.zeros_like(state.consecutive_skips),
            ),
            inner_state=inner_state,
        )

    return GradientTransformation(init, update)
