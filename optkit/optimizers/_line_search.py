"""torch's strong-Wolfe line search (``torch.optim.lbfgs._strong_wolfe``) as one ``lax`` loop.

torch's search is two Python loops, one bracketing an interval that holds an acceptable step and
one zooming into it, each with early exits. Here both are phases of a single
``lax.while_loop``, each pass evaluating the objective once, so the objective (a model's forward
and backward pass) appears once in the compiled program. The decisions, their order and the
arithmetic are torch's, step for step.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from optkit._base import Updates
from optkit.optimizers._vector import dot, max_abs

# Phases of the search.
_BRACKET, _ZOOM, _DONE = 0, 1, 2


class Evaluation(NamedTuple):
    """The objective and its gradient at one point."""

    value: jax.Array
    grad: Updates


class Found(NamedTuple):
    """The line search's result: the step, the objective and gradient there, and how many
    evaluations it took."""

    step_size: jax.Array
    value: jax.Array
    grad: Updates
    evals: jax.Array


def _python_max(a: jax.Array, b: jax.Array) -> jax.Array:
    """Python's ``max(a, b)``: ``b`` only if ``b > a``."""
    return jnp.where(b > a, b, a)


def _python_min(a: jax.Array, b: jax.Array) -> jax.Array:
    """Python's ``min(a, b)``: ``b`` only if ``b < a``."""
    return jnp.where(b < a, b, a)


def cubic_interpolate(
    x1: jax.Array,
    f1: jax.Array,
    g1: jax.Array,
    x2: jax.Array,
    f2: jax.Array,
    g2: jax.Array,
    bounds: tuple[jax.Array, jax.Array] | None = None,
) -> jax.Array:
    """The minimizer of the cubic through two points with values ``f`` and slopes ``g``, clamped
    to ``bounds`` (default: between the points); their midpoint when the cubic has no minimum.
    torch's ``_cubic_interpolate``, operation for operation."""
    if bounds is None:
        ordered = x1 <= x2
        low, high = jnp.where(ordered, x1, x2), jnp.where(ordered, x2, x1)
    else:
        low, high = bounds
    d1 = g1 + g2 - 3 * (f1 - f2) / (x1 - x2)
    d2_square = d1**2 - g1 * g2
    real = d2_square >= 0
    d2 = jnp.sqrt(jnp.where(real, d2_square, 0))
    minimum = jnp.where(
        x1 <= x2,
        x2 - (x2 - x1) * ((g2 + d2 - d1) / (g2 - g1 + 2 * d2)),
        x1 - (x1 - x2) * ((g1 + d2 - d1) / (g1 - g2 + 2 * d2)),
    )
    return jnp.where(real, _python_min(_python_max(minimum, low), high), (low + high) / 2.0)


class _Search(NamedTuple):
    """The search's carry: torch's locals, with both loops' phases in one."""

    phase: jax.Array
    trial: jax.Array  # the step the next pass evaluates
    evals: jax.Array  # ls_func_evals
    ls_iter: jax.Array
    # The bracketing phase's previous point (t_prev, f_prev, g_prev, gtd_prev).
    prev_t: jax.Array
    prev_f: jax.Array
    prev_g: Updates
    prev_gtd: jax.Array
    # The bracket: two points, the lower at position `low`.
    bracket_t: jax.Array
    bracket_f: jax.Array
    bracket_gtd: jax.Array
    bracket_g: Updates
    low: jax.Array
    insufficient_progress: jax.Array


def _phase(value: Any) -> jax.Array:
    return jnp.asarray(value, jnp.int32)


def _stack(a: Updates, b: Updates) -> Updates:
    return jax.tree.map(lambda x, y: jnp.stack([x, y]), a, b)


def _set_at(pair: Updates, position: jax.Array, value: Updates) -> Updates:
    return jax.tree.map(lambda p, v: p.at[position].set(v), pair, value)


def _take(pair: Updates, position: jax.Array) -> Updates:
    return jax.tree.map(lambda p: p[position], pair)


def _lower(values: jax.Array) -> jax.Array:
    """torch's ``low_pos``: 0 unless the second value is strictly lower."""
    return jnp.where(values[0] <= values[1], 0, 1).astype(jnp.int32)


def strong_wolfe(
    evaluate: Callable[[jax.Array], Evaluation],
    step_size: jax.Array,
    direction: Updates,
    value: jax.Array,
    grad: Updates,
    slope: jax.Array,
    *,
    max_ls: jax.Array,
    tolerance_change: Any,
    c1: float = 1e-4,
    c2: float = 0.9,
) -> Found:
    r"""Search along ``direction`` for a step satisfying the strong Wolfe conditions.

    .. math::
        f(x + t d) \le f(x) + c_1 t\, g^\top d, \qquad |g(x + t d)^\top d| \le -c_2\, g^\top d

    Starting from ``step_size``, the step grows by cubic extrapolation until an interval holding
    an acceptable step is bracketed, then the bracket shrinks by safeguarded cubic
    interpolation. At most ``max_ls`` evaluations after the first; the search also stops when
    the bracket is shorter than ``tolerance_change`` (in the max-norm of the move). Same
    decisions and defaults as torch's ``_strong_wolfe``.

    Args:
        evaluate: the objective and its gradient at ``x + t * direction``, as a function of t.
        step_size: the first step tried.
        direction: the search direction ``d`` (a descent direction: ``slope < 0``).
        value: the objective at ``x``.
        grad: its gradient at ``x``.
        slope: ``grad . direction``.
        max_ls: the evaluation budget after the first evaluation.
        tolerance_change: the smallest bracket worth refining.
        c1: the sufficient-decrease constant.
        c2: the curvature constant.
    """
    dtype = jnp.result_type(value)
    as_scalar = lambda x: jnp.asarray(x, dtype)
    direction_norm = max_abs(direction)
    armijo_bound = lambda t: value + c1 * t * slope
    curvature_ok = lambda gtd: jnp.abs(gtd) <= -c2 * slope

    def bracketing(search: _Search, t: jax.Array, new: Evaluation, gtd: jax.Array) -> _Search:
        """One check of torch's first loop on the point just evaluated."""
        checking = search.ls_iter < max_ls
        too_high = (new.value > armijo_bound(t)) | (
            (search.ls_iter > 1) & (new.value >= search.prev_f)
        )
        wolfe = ~too_high & curvature_ok(gtd)
        uphill = ~too_high & ~wolfe & (gtd >= 0)
        bracketed = checking & (too_high | uphill)
        # The previous point and this one bracket a step; or this one is acceptable on its own;
        # or the budget is spent and the bracket is [0, t]; else extrapolate.
        start_t = jnp.where(checking, search.prev_t, 0.0)
        start_f = jnp.where(checking, search.prev_f, value)
        start_g = jax.tree.map(lambda p, g: jnp.where(checking, p, g), search.prev_g, grad)
        accept = checking & wolfe
        bracket_t = jnp.where(accept, jnp.stack([t, t]), jnp.stack([start_t, t]))
        bracket_f = jnp.where(
            accept, jnp.stack([new.value, new.value]), jnp.stack([start_f, new.value])
        )
        bracket_gtd = jnp.stack([search.prev_gtd, gtd])
        bracket_g = _stack(
            jax.tree.map(lambda s, g: jnp.where(accept, g, s), start_g, new.grad), new.grad
        )
        extrapolate = checking & ~too_high & ~wolfe & ~uphill
        next_t = cubic_interpolate(
            search.prev_t,
            search.prev_f,
            search.prev_gtd,
            t,
            new.value,
            gtd,
            bounds=(t + 0.01 * (t - search.prev_t), t * 10),
        )
        ends = ~extrapolate
        return search._replace(
            phase=_phase(jnp.where(extrapolate, _BRACKET, jnp.where(bracketed, _ZOOM, _DONE))),
            trial=jnp.where(extrapolate, next_t, search.trial),
            prev_t=jnp.where(ends, search.prev_t, t),
            prev_f=jnp.where(ends, search.prev_f, new.value),
            prev_g=jax.tree.map(lambda p, g: jnp.where(ends, p, g), search.prev_g, new.grad),
            prev_gtd=jnp.where(ends, search.prev_gtd, gtd),
            bracket_t=jnp.where(ends, bracket_t, search.bracket_t),
            bracket_f=jnp.where(ends, bracket_f, search.bracket_f),
            bracket_gtd=jnp.where(ends, bracket_gtd, search.bracket_gtd),
            bracket_g=jax.tree.map(
                lambda b, old: jnp.where(ends, b, old), bracket_g, search.bracket_g
            ),
            low=jnp.where(ends & ~accept, _lower(bracket_f), 0).astype(jnp.int32),
            insufficient_progress=jnp.asarray(False),
        )

    def zooming(search: _Search, t: jax.Array, new: Evaluation, gtd: jax.Array) -> _Search:
        """torch's update of the bracket with the point just evaluated in the second loop."""
        low, high = search.low, 1 - search.low
        too_high = (new.value > armijo_bound(t)) | (new.value >= search.bracket_f[low])
        wolfe = ~too_high & curvature_ok(gtd)
        # Not too high: the old high end is replaced by the low end if the slope points past it.
        flip = ~too_high & ~wolfe & (gtd * (search.bracket_t[high] - search.bracket_t[low]) >= 0)
        replaced = jnp.where(too_high, high, low)
        bracket_t = search.bracket_t
        bracket_f = search.bracket_f
        bracket_gtd = search.bracket_gtd
        bracket_g = search.bracket_g
        bracket_t = jnp.where(flip, bracket_t.at[high].set(bracket_t[low]), bracket_t)
        bracket_f = jnp.where(flip, bracket_f.at[high].set(bracket_f[low]), bracket_f)
        bracket_gtd = jnp.where(flip, bracket_gtd.at[high].set(bracket_gtd[low]), bracket_gtd)
        bracket_g = jax.tree.map(lambda b: jnp.where(flip, b.at[high].set(b[low]), b), bracket_g)
        bracket_t = bracket_t.at[replaced].set(t)
        bracket_f = bracket_f.at[replaced].set(new.value)
        bracket_gtd = bracket_gtd.at[replaced].set(gtd)
        bracket_g = _set_at(bracket_g, replaced, new.grad)
        return search._replace(
            phase=_phase(jnp.where(wolfe, _DONE, _ZOOM)),
            bracket_t=bracket_t,
            bracket_f=bracket_f,
            bracket_gtd=bracket_gtd,
            bracket_g=bracket_g,
            low=jnp.where(too_high, _lower(bracket_f), low),
        )

    def next_zoom_trial(search: _Search) -> _Search:
        """The top of torch's second loop: stop, or choose the next step inside the bracket."""
        bracket_t = search.bracket_t
        small = jnp.abs(bracket_t[1] - bracket_t[0]) * direction_norm < tolerance_change
        stop = (search.ls_iter >= max_ls) | small
        t = cubic_interpolate(
            bracket_t[0],
            search.bracket_f[0],
            search.bracket_gtd[0],
            bracket_t[1],
            search.bracket_f[1],
            search.bracket_gtd[1],
        )
        # Too close to an end of the bracket: after a second time in a row, or at or past an
        # end, move to a tenth of the bracket's length from the nearer end.
        top = _python_max(bracket_t[0], bracket_t[1])
        bottom = _python_min(bracket_t[0], bracket_t[1])
        margin = 0.1 * (top - bottom)
        close = _python_min(top - t, t - bottom) < margin
        push = close & (search.insufficient_progress | (t >= top) | (t <= bottom))
        pushed = jnp.where(jnp.abs(t - top) < jnp.abs(t - bottom), top - margin, bottom + margin)
        return search._replace(
            phase=_phase(jnp.where(stop, _DONE, _ZOOM)),
            trial=jnp.where(push, pushed, t),
            insufficient_progress=close & ~push,
        )

    def step(search: _Search) -> _Search:
        t = search.trial
        new = evaluate(t)
        gtd = dot(new.grad, direction)
        # The first evaluation is not one of torch's ls_iter.
        search = search._replace(
            evals=search.evals + 1, ls_iter=search.ls_iter + (search.evals > 0)
        )
        search = jax.lax.cond(
            search.phase == _BRACKET,
            lambda s: bracketing(s, t, new, gtd),
            lambda s: zooming(s, t, new, gtd),
            search,
        )
        return jax.lax.cond(search.phase == _ZOOM, next_zoom_trial, lambda s: s, search)

    zero = as_scalar(0)
    search = _Search(
        phase=_phase(_BRACKET),
        trial=as_scalar(step_size),
        evals=jnp.zeros([], jnp.int32),
        ls_iter=jnp.zeros([], jnp.int32),
        prev_t=zero,
        prev_f=value,
        prev_g=grad,
        prev_gtd=slope,
        bracket_t=jnp.zeros([2], dtype),
        bracket_f=jnp.zeros([2], dtype),
        bracket_gtd=jnp.zeros([2], dtype),
        bracket_g=_stack(grad, grad),
        low=jnp.zeros([], jnp.int32),
        insufficient_progress=jnp.asarray(False),
    )
    search = jax.lax.while_loop(lambda s: s.phase != _DONE, step, search)
    low = search.low
    return Found(
        step_size=search.bracket_t[low],
        value=search.bracket_f[low],
        grad=_take(search.bracket_g, low),
        evals=search.evals,
    )
