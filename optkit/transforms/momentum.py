"""Momentum: torch's SGD momentum buffer, with dampening and Nesterov."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from optkit import _numerics, _tree, _validation
from optkit._base import GradientTransformation, Params, Scalar, Updates
from optkit._kernel import leaf_kernel


class TraceState(NamedTuple):
    """The update count and the momentum buffer (one per param leaf, in the param's dtype unless
    ``accumulator_dtype`` says otherwise)."""

    count: jax.Array
    trace: Updates


def check_nesterov(decay, dampening, nesterov: bool) -> None:
    """torch's rule: Nesterov momentum needs a non-zero momentum and no dampening.

    Only Python and NumPy numbers are checked: a JAX array is a run-time value (an injected
    hyperparameter may be set to 0 later, which torch treats as plain SGD).
    """
    if not nesterov:
        return
    momentum = _validation.static_number(decay)
    if momentum is not None and momentum <= 0:
        raise ValueError("nesterov=True requires momentum (decay) > 0, got 0.")
    damping = _validation.static_number(dampening)
    if damping is not None and damping != 0:
        raise ValueError(f"nesterov=True requires dampening=0, got dampening={dampening!r}.")


class TraceLeaf(NamedTuple):
    trace: jax.Array
    update: jax.Array


@leaf_kernel
def _momentum(trace, update, *, decay) -> TraceLeaf:
    """Undampened momentum; the buffer starts at zero, so the first step is torch's clone."""
    trace = _buffer(trace, update, decay, 1.0)
    return TraceLeaf(trace, trace)


@leaf_kernel
def _nesterov_momentum(trace, update, *, decay) -> TraceLeaf:
    trace = _buffer(trace, update, decay, 1.0)
    return TraceLeaf(trace, update + _numerics.rounded_scalar(decay) * trace)


@leaf_kernel
def _weighted_momentum(
    trace, update, *, buffer_weight, grad_weight, out_grad, out_buffer
) -> TraceLeaf:
    """The general momentum step, with torch's cases folded into scalar weights."""
    trace = _buffer(trace, update, buffer_weight, grad_weight)
    return TraceLeaf(trace, out_grad * update + _numerics.rounded_scalar(out_buffer) * trace)


def _buffer(trace, update, buffer_weight, grad_weight):
    """torch's ``buf.mul_(momentum).add_(g, alpha=1 - dampening)``, rounded as its ops are."""
    rounded = _numerics.rounded
    scaled = rounded(buffer_weight * trace)
    return rounded(scaled + _numerics.rounded_scalar(grad_weight) * update).astype(trace.dtype)


def trace(
    decay: Scalar,
    dampening: Scalar = 0.0,
    nesterov: bool = False,
    accumulator_dtype: Any = None,
) -> GradientTransformation:
    r"""Accumulate a momentum buffer, exactly as ``torch.optim.SGD`` does.

    .. math::
        b_1 = g_1, \qquad b_t = \mu\, b_{t-1} + (1 - \tau)\, g_t \quad (t > 1)

    and the output is :math:`b_t`, or :math:`g_t + \mu b_t` with ``nesterov``. The first buffer is
    the gradient itself, undampened (torch's ``clone``); optax's ``trace`` has no dampening.

    Args:
        decay: the momentum coefficient :math:`\mu \ge 0`.
        dampening: :math:`\tau` in ``[0, 1]``, the share of the gradient held back.
        nesterov: use Nesterov momentum (requires ``decay > 0`` and ``dampening == 0``).
        accumulator_dtype: dtype of the momentum buffer, a floating dtype (optax's
            ``accumulator_dtype``); the parameter's dtype when ``None`` (torch's).

    Examples:
        >>> import jax.numpy as jnp, optkit
        >>> tx = optkit.trace(0.9)
        >>> state = tx.init(jnp.zeros(1))
        >>> u, state = tx.update(jnp.ones(1), state)
        >>> u, state = tx.update(jnp.ones(1), state)
        >>> u
        Array([1.9], dtype=float32)
    """
    _validation.hyperparameters(decay=decay, dampening=dampening)
    nesterov = _validation.boolean("nesterov", nesterov)
    check_nesterov(decay, dampening, nesterov)
    static_decay = _validation.static_number(decay)
    undampened = _validation.is_static_zero(dampening)
    accumulator_dtype = _validation.state_dtype("accumulator_dtype", accumulator_dtype)

    def init(params: Params) -> TraceState:
        return TraceState(
            count=_numerics.zero_count(params),
            trace=_tree.zeros_like(params, dtype=accumulator_dtype),
        )

    def update(
        updates: Updates, state: TraceState, params: Params | None = None, **extra_args: Any
    ) -> tuple[Updates, TraceState]:
        del params, extra_args
        if accumulator_dtype is None:
            updates = _tree.check_updates(state.trace, updates, "trace", "momentum buffer")
        else:
            # The buffer's dtype is the caller's choice, not the params': a float32 gradient
            # meets a bfloat16 buffer by design, so only the structure and the kind are checked.
            _tree.check_match(state.trace, updates, "trace", "momentum buffer", "updates")
            updates = _tree.check_floating(updates, "trace")
        if static_decay == 0.0:
            # torch keeps no buffer at momentum 0: plain gradient, buffer untouched.
            return updates, state
        if static_decay is not None and undampened:
            # The buffer starts at zero, so decay * 0 + g is torch's first-step clone of g.
            kernel = _nesterov_momentum if nesterov else _momentum
            new = kernel(state.trace, updates, decay=decay)
            return new.update, TraceState(count=_numerics.increment(state.count), trace=new.trace)
        return _general_update(updates, state, decay, dampening, nesterov)

    return GradientTransformation(init, update)


def _general_update(
    updates: Updates, state: TraceState, decay: Scalar, dampening: Scalar, nesterov: bool
) -> tuple[Updates, TraceState]:
    """The momentum step for a dampened or run-time (array) momentum, with torch's rules.

    torch keeps no buffer while momentum is 0: the gradient passes through, an existing buffer
    is kept as is, and the first step with a non-zero momentum starts the buffer from the
    gradient. ``count`` counts the steps that used the buffer. Everything is folded into scalar
    weights, so each leaf costs the same few multiply-adds whatever the case.
    """
    active = decay != 0
    first = state.count == 0
    buffer_weight = jnp.where(active, jnp.where(first, 0.0, decay), 1.0)
    grad_weight = jnp.where(active, jnp.where(first, 1.0, 1.0 - dampening), 0.0)
    # Output = out_grad * g + out_buffer * new buffer.
    out_grad = jnp.where(active, 1.0 if nesterov else 0.0, 1.0)
    out_buffer = jnp.where(active, decay if nesterov else 1.0, 0.0)

    new = _weighted_momentum(
        state.trace,
        updates,
        buffer_weight=buffer_weight,
        grad_weight=grad_weight,
        out_grad=out_grad,
        out_buffer=out_buffer,
    )
    count = jnp.where(active, _numerics.increment(state.count), state.count)
    return new.update, TraceState(count=count, trace=new.trace)
