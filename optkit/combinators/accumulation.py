"""Gradient accumulation: one optimizer step per ``every_k`` micro-batches, as torch's loop.

torch accumulates by calling ``backward`` several times before one ``step``: gradients add up in
``p.grad``. :func:`accumulate_gradients` keeps that sum in its state and runs the wrapped
optimizer once per ``every_k`` updates on the mean; :func:`optimizer_stepped` tells which updates
were real optimizer steps.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from optkit import _base, _numerics, _tree, _validation
from optkit._base import GradientTransformation, OptState, Params, Updates
from optkit._kernel import leaf_kernel


class AccumulateGradientsState(NamedTuple):
    """The micro-batch gradients summed so far and the wrapped optimizer's state."""

    micro_step: jax.Array
    """How many micro-batch gradients ``accumulator`` holds: 0 to ``every_k - 1`` (int32)."""
    accumulator: Updates
    """The running sum of ``gradient / every_k``, shaped like the params (float32 for float16
    and bfloat16 params unless ``accumulator_dtype`` says otherwise)."""
    stepped: jax.Array
    """Whether the latest update ran the wrapped optimizer (a bool scalar; False after init)."""
    inner_state: OptState
    """The wrapped optimizer's state, changed only by the updates that run it."""


def _default_accumulator_dtype(param: Any) -> jnp.dtype:
    """float32 for floating params narrower than 32 bits (float16, bfloat16, float8), where
    summing in the param's own dtype would lose the small micro-batch terms; else the param's
    dtype."""
    dtype = jnp.result_type(param)
    if jnp.issubdtype(dtype, jnp.floating) and jnp.finfo(dtype).bits < 32:
        return jnp.dtype(jnp.float32)
    return dtype


def _check_accumulator_dtype(value: Any) -> jnp.dtype | None:
    if value is None:
        return None
    try:
        dtype = jnp.dtype(value)
    except TypeError:
        dtype = None
    if dtype is None or not jnp.issubdtype(dtype, jnp.inexact):
        raise TypeError(
            "accumulate_gradients: accumulator_dtype must be None or a floating-point dtype such "
            f"as jnp.float32, got {value!r}."
        )
    return dtype


@leaf_kernel
def _accumulate(accumulator: jax.Array, gradient: jax.Array, *, scale: float) -> jax.Array:
    # torch's ``(loss / k).backward()`` leaves p.grad = sum of g_i / k, added in order, the first
    # assigned (0 + x is x). We keep that in-order sum of scaled terms: optax's running mean
    # a + (g - a) / i, or one division of the plain sum, rounds differently. The scale is a
    # multiplication by fl(1/k): XLA's algebraic simplifier rewrites a division by a broadcast
    # scalar into exactly that (seen on CPU with jax 0.10.2), and torch's backward of loss / k
    # seeds the chain rule with the same fl(1/k). The product is formed in at least float32
    # (``scale``, a Python float, becomes fl32(1/k), not a bfloat16 1/k that is 0.2% off for
    # k = 3) and rounded to the accumulator's dtype before the add, as torch's half-precision
    # arithmetic does ("opmath"). So a bfloat16 accumulator
    # equals torch's ``p.grad += g * (1 / k)`` bitwise. In float32 and float64 XLA fuses the
    # multiply and the add into one fused multiply-add, and on CPU float16 intermediates stay in
    # float32, so there a sum may round once where torch rounds twice and differ from torch's in
    # its last bit per term (not for k a power of two, where the product is exact).
    # The kernel computes 16-bit rows in float32 (optkit._kernel): ``rounded`` is the rounding to
    # a 16-bit accumulator's dtype (a no-op for a float32 one).
    wide = jnp.promote_types(accumulator.dtype, jnp.float32)
    term = _numerics.rounded((gradient.astype(wide) * scale).astype(accumulator.dtype))
    return accumulator + term


def accumulate_gradients(
    inner: Any, every_k: int, *, accumulator_dtype: Any = None
) -> GradientTransformation:
    r"""Run ``inner`` once per ``every_k`` updates, on the mean of their gradients.

    Pass each micro-batch's plain gradient :math:`g_i` (of the loss, not of ``loss / every_k``).
    Updates :math:`1, \dots, k-1` of each cycle of :math:`k` = ``every_k`` add
    :math:`g_i \cdot (1/k)` to an accumulator and return zero updates (in the dtype ``inner``
    returns, the params' for optkit's optimizers), leaving ``inner``'s state untouched; update
    :math:`k` runs ``inner`` on the accumulated mean and resets the accumulator:

    .. math::
        a_i = a_{i-1} + g_i \cdot \operatorname{fl}(1/k), \quad a_0 = 0, \qquad
        (u, s') = \operatorname{inner}(a_k, s) \text{ at } i = k, \quad u = 0 \text{ before.}

    Same as torch's accumulation loop::

        for i, (x, y) in enumerate(loader):
            (loss_fn(model(x), y) / k).backward()      # p.grad += grad / k
            if (i + 1) % k == 0:
                opt.step()
                opt.zero_grad()

    Schedules and step counts inside ``inner`` (``learning_rate=schedule``,
    :func:`inject_hyperparams`, Adam's bias corrections) count optimizer steps, not micro-batches,
    as torch's ``scheduler.step()`` after each ``opt.step()`` does: ``inner`` only runs on the
    :math:`k`-th update. ``every_k=1`` runs ``inner`` on every gradient, unchanged.

    Dtypes: the accumulator is float32 for float16 and bfloat16 params (torch sums ``p.grad`` in
    the param's dtype), or ``accumulator_dtype`` for every leaf when given. Each gradient is cast
    to the accumulator's dtype before it is scaled and added. ``inner`` receives the mean in the
    dtype of the gradients passed in, rounded once from the accumulator, so it sees the dtypes it
    would see without accumulation.

    Extra keyword arguments of ``update`` (e.g. ``value=loss`` for
    :func:`reduce_lr_on_plateau`) reach ``inner`` only on the :math:`k`-th update, the one that
    runs it; on the others they are ignored. Pass there the value ``inner`` should see for the
    whole optimizer step (e.g. the mean loss of the :math:`k` micro-batches).

    With loss scaling, ``accumulate_gradients(grad_scaler(opt), k)`` is torch's
    ``scaler.scale(loss / k).backward()`` over :math:`k` micro-batches then one
    ``scaler.step(opt); scaler.update()``: the scaler sees the accumulated gradient once per
    step. The other order, ``grad_scaler(accumulate_gradients(opt, k))``, checks every
    micro-batch instead.

    The state's structure does not depend on ``every_k`` (``every_k=1`` keeps an accumulator of
    zeros), so a checkpoint taken at an optimizer step resumes under another ``every_k``.
    :func:`optimizer_stepped` tells whether the latest update ran ``inner``.

    Differences from ``optax.MultiSteps`` (optax 0.2.8), which keeps a running mean
    :math:`a_i = a_{i-1} + (g_i - a_{i-1}) / i` in ``accumulator_dtype``, float32 by default:

    - Precision. For float64 params its default float32 accumulator rounds every partial mean
      to float32, so it matches torch to 1e-8 to 1e-7 (relative), not 1e-10; only with
      ``accumulator_dtype=jnp.float64`` does it agree with torch to rounding. Its running mean
      also rounds differently from torch's in-order sum of ``g / k``, which this wrapper keeps:
      the same sum of the same terms.
    - Cost and non-finite gradients. It runs ``inner`` on every micro-batch and keeps the
      result on the :math:`k`-th only (a ``jnp.where`` over the inner state, the updates
      multiplied by 0 or 1), so the optimizer's cost is paid :math:`k` times per step, and an
      inf in one micro-batch's gradient returns NaN updates at once (:math:`0 \cdot \infty`),
      corrupting the params before any optimizer step (or a loss scaler inside ``inner``) sees
      it. Here a ``lax.cond`` runs ``inner`` on the :math:`k`-th update only: the others return
      exact zeros, and a non-finite sum reaches ``inner`` once, as ``p.grad`` reaches torch's
      ``opt.step()``.
    - It reports a real step with the method ``MultiSteps.has_updated(state)``; here
      :func:`optimizer_stepped` finds the accumulation state inside any nested state.

    Args:
        inner: the optimizer (an optkit or optax gradient transformation) to run once per
            ``every_k`` updates.
        every_k: the number of micro-batches per optimizer step, a positive integer.
        accumulator_dtype: the dtype of the accumulator for every leaf; by default float32 for
            float16 and bfloat16 params and the param's dtype otherwise.

    Returns:
        A transform whose state is an :class:`AccumulateGradientsState`.

    Examples:
        >>> import jax.numpy as jnp, optkit
        >>> tx = optkit.accumulate_gradients(optkit.sgd(learning_rate=1.0), every_k=2)
        >>> params = jnp.zeros(2)
        >>> state = tx.init(params)
        >>> updates, state = tx.update(jnp.array([1.0, 2.0]), state, params)
        >>> updates, optkit.optimizer_stepped(state)
        (Array([0., 0.], dtype=float32), Array(False, dtype=bool))
        >>> updates, state = tx.update(jnp.array([3.0, 6.0]), state, params)
        >>> updates, optkit.optimizer_stepped(state)  # -(1 + 3) / 2, -(2 + 6) / 2
        (Array([-2., -4.], dtype=float32), Array(True, dtype=bool))

    Raises:
        ValueError: if ``every_k`` is not a positive integer; at ``update``, if the gradients'
            tree does not match the params' (the message names the leaf).
        TypeError: if ``inner`` is not a gradient transformation or ``accumulator_dtype`` not a
            floating-point dtype.
    """
    _base.check_transform(inner, "accumulate_gradients", 0)
    _validation.hyperparameters(every_k=every_k)
    requested_dtype = _check_accumulator_dtype(accumulator_dtype)
    forwards_extra = _base.takes_extra_args(inner)
    scale = 1.0 / every_k

    def run_inner(
        gradients: Updates, inner_state: OptState, params: Params | None, extra: dict[str, Any]
    ) -> tuple[Updates, OptState]:
        if forwards_extra:
            return inner.update(gradients, inner_state, params, **extra)
        return inner.update(gradients, inner_state, params)

    def init(params: Params) -> AccumulateGradientsState:
        params = _tree.as_arrays(params)
        _tree.check_params(params, "accumulate_gradients")
        accumulator = jax.tree.map(
            lambda p: _tree.zeros_like(p, requested_dtype or _default_accumulator_dtype(p)),
            params,
        )
        return AccumulateGradientsState(
            micro_step=_numerics.zero_count(params),
            accumulator=accumulator,
            stepped=_tree.place_scalars(jnp.zeros([], jnp.bool_), params),
            inner_state=inner.init(params),
        )

    def update(
        updates: Updates,
        state: AccumulateGradientsState,
        params: Params | None = None,
        **extra_args: Any,
    ) -> tuple[Updates, AccumulateGradientsState]:
        if not isinstance(state, AccumulateGradientsState):
            raise TypeError(
                "accumulate_gradients: state must be an AccumulateGradientsState, got "
                f"{type(state).__name__}. Was it made by this transform's init?"
            )
        _tree.check_match(
            state.accumulator, updates, "accumulate_gradients", "accumulator", "updates"
        )
        updates = _tree.check_floating(updates, "accumulate_gradients")
        held = _numerics.increment(state.micro_step)  # micro-batches summed, this one included
        # ">=", not "==": a state saved under a larger every_k steps at once rather than never.
        boundary = held >= every_k
        if every_k == 1:
            new_updates, inner_state = run_inner(updates, state.inner_state, params, extra_args)
            accumulator = state.accumulator
        else:
            total = _accumulate(state.accumulator, updates, scale=scale)
            mean = jax.tree.map(_tree.cast_like, total, updates)

            def step(mean: Updates, inner_state: OptState) -> tuple[Updates, OptState]:
                new_updates, new_state = run_inner(mean, inner_state, params, extra_args)
                # Both branches must return the same types: keep each buffer's dtype (optkit's
                # do; an optax moment of bfloat16 params fed float32 gradients would promote).
                return new_updates, jax.tree.map(_tree.cast_like, new_state, inner_state)

            def hold(mean: Updates, inner_state: OptState) -> tuple[Updates, OptState]:
                shapes, _ = jax.eval_shape(step, mean, inner_state)
                zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
                return zeros, inner_state

            # lax.cond rather than a tree-wide jnp.where: on CPU and GPU it runs one branch, so
            # the inner optimizer costs nothing on the k - 1 accumulating updates, and the held
            # branch returns the inner state as it came in, bitwise, with exact zero updates.
            new_updates, inner_state = jax.lax.cond(boundary, step, hold, mean, state.inner_state)
            accumulator = jax.tree.map(lambda t: jnp.where(boundary, jnp.zeros_like(t), t), total)
        return new_updates, AccumulateGradientsState(
            micro_step=jnp.where(boundary, jnp.zeros_like(held), held),
            accumulator=accumulator,
            stepped=boundary,
            inner_state=inner_state,
        )

    return GradientTransformation(init, update)


def optimizer_stepped(opt_state: OptState) -> jax.Array:
    """Whether the latest update was a real optimizer step (a bool scalar array).

    With :func:`accumulate_gradients`, True after the updates that ran the wrapped optimizer
    (every ``every_k``-th), False after the ones that only accumulated, and after ``init``:
    torch's ``(i + 1) % k == 0`` in the loop, for logging the learning rate or the step count
    once per step. ``opt_state`` may be the accumulation state or hold it anywhere (a chain,
    param groups, ``inject_hyperparams``, another wrapper's ``inner_state``). Works under
    ``jax.jit``.

    Examples:
        >>> import jax.numpy as jnp, optkit
        >>> tx = optkit.chain(
        ...     optkit.clip(1.0), optkit.accumulate_gradients(optkit.adam(1e-3), every_k=4)
        ... )
        >>> state = tx.init(jnp.zeros(3))
        >>> optkit.optimizer_stepped(state)
        Array(False, dtype=bool)

    Raises:
        ValueError: if ``opt_state`` holds no :func:`accumulate_gradients` state, or several
            (one per param group, or one inside another).
    """
    accumulation = _tree.only_state(
        opt_state,
        AccumulateGradientsState,
        where="optimizer_stepped",
        what="accumulate_gradients",
        if_none="wrap the optimizer in optkit.accumulate_gradients",
        if_several=" (one per param group, or nested): pass the state of one of them",
    )
    return accumulation.stepped
