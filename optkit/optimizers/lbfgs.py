"""L-BFGS: quasi-Newton steps from a short history of gradient and parameter differences."""

from __future__ import annotations

from collections.abc import Callable
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
from optkit.combinators.masking import MaskedNode
from optkit.optimizers._compose import described
from optkit.optimizers._line_search import Evaluation, strong_wolfe
from optkit.optimizers._vector import (
    difference,
    dot,
    dtype_of,
    max_abs,
    scalar_op,
    step_along,
    sum_abs,
)
from optkit.transforms.scaling import scale_tree

ValueFn = Callable[[Params], jax.Array]
"""The loss as a pure JAX function of the params tree (torch's closure)."""

# torch accepts a (y, s) pair only when its curvature y.s exceeds this.
_CURVATURE_THRESHOLD = 1e-10


class ScaleByLbfgsState(NamedTuple):
    """torch's ``LBFGS`` state, with the history as a ring buffer.

    The history holds up to ``history_size`` pairs; the newest is at
    ``(history_start + history_length - 1) % history_size``. Each buffer leaf has its param's
    shape and dtype (with a leading ``history_size`` axis for the history); scalars have the
    params' promoted dtype. torch's names: ``direction`` is ``d``, ``step_size`` is ``t``,
    ``grad_diffs`` is ``old_dirs`` (the ``y``), ``param_diffs`` is ``old_stps`` (the ``s``),
    ``rho`` is ``ro``, ``hessian_diag`` is ``H_diag``, ``prev_grad`` is ``prev_flat_grad``.
    """

    count: jax.Array
    func_evals: jax.Array
    n_iter: jax.Array
    direction: Updates
    step_size: jax.Array
    prev_grad: Updates
    prev_loss: jax.Array
    grad_diffs: Updates
    param_diffs: Updates
    rho: jax.Array
    history_start: jax.Array
    history_length: jax.Array
    hessian_diag: jax.Array


class _Settings(NamedTuple):
    """The static part of one update: loop bounds and the line search (hashable, for jit)."""

    max_iter: int
    max_eval: int
    history_size: int
    strong_wolfe: bool


class _Iterate(NamedTuple):
    """The carry of the iteration loop: torch's locals in ``step`` and the state."""

    state: ScaleByLbfgsState
    params: Params  # x, moved by every iteration (torch moves the params in place)
    grad: Updates
    loss: jax.Array
    iteration: jax.Array  # torch's local n_iter
    evals: jax.Array  # torch's current_evals
    done: jax.Array


def _index(history: Updates, slot: jax.Array) -> Updates:
    return jax.tree.map(lambda h: jax.lax.dynamic_index_in_dim(h, slot, keepdims=False), history)


def _store(history: Updates, values: Updates, slot: jax.Array) -> Updates:
    return jax.tree.map(
        lambda h, v: jax.lax.dynamic_update_index_in_dim(h, v.astype(h.dtype), slot, 0),
        history,
        values,
    )


def _remember(state: ScaleByLbfgsState, grad: Updates, settings: _Settings) -> ScaleByLbfgsState:
    """torch's memory update: the pair (y, s) of the last move, kept if its curvature y.s is
    positive enough; the oldest pair is dropped when the history is full."""
    size = settings.history_size
    grad_diff = difference(grad, state.prev_grad)
    param_diff = scale_tree(state.direction, state.step_size)
    curvature = dot(grad_diff, param_diff)
    keep = curvature > _CURVATURE_THRESHOLD
    slot = (state.history_start + state.history_length) % size
    kept = lambda new, old: jax.tree.map(lambda n, o: jnp.where(keep, n, o), new, old)
    full = state.history_length == size
    dtype = state.rho.dtype
    return state._replace(
        grad_diffs=_store(state.grad_diffs, kept(grad_diff, _index(state.grad_diffs, slot)), slot),
        param_diffs=_store(
            state.param_diffs, kept(param_diff, _index(state.param_diffs, slot)), slot
        ),
        rho=state.rho.at[slot].set(
            jnp.where(keep, scalar_op(dtype, lambda c: 1.0 / c, curvature), state.rho[slot])
        ),
        history_start=jnp.where(keep & full, (state.history_start + 1) % size, state.history_start),
        history_length=jnp.where(keep & ~full, state.history_length + 1, state.history_length),
        hessian_diag=jnp.where(
            keep,
            scalar_op(dtype, jnp.divide, curvature, dot(grad_diff, grad_diff)),
            state.hessian_diag,
        ).astype(state.hessian_diag.dtype),
    )


def _two_loop(state: ScaleByLbfgsState, grad: Updates, settings: _Settings) -> Updates:
    """torch's two-loop recursion: the inverse-Hessian approximation times the negative gradient,
    over the pairs from newest to oldest, then from oldest to newest."""
    size, start, length = settings.history_size, state.history_start, state.history_length
    dtype = state.rho.dtype

    def newest_first(k: jax.Array, carry: tuple[Updates, jax.Array]) -> tuple[Updates, jax.Array]:
        q, alphas = carry
        slot = (start + length - 1 - k) % size
        alpha = scalar_op(
            dtype, jnp.multiply, dot(_index(state.param_diffs, slot), q), state.rho[slot]
        )
        q = step_along(q, _index(state.grad_diffs, slot), step_size=-alpha)
        return q, alphas.at[slot].set(alpha)

    q = scale_tree(grad, -1.0)
    q, alphas = jax.lax.fori_loop(0, length, newest_first, (q, jnp.zeros_like(state.rho)))

    def oldest_first(i: jax.Array, r: Updates) -> Updates:
        slot = (start + i) % size
        beta = scalar_op(
            dtype, jnp.multiply, dot(_index(state.grad_diffs, slot), r), state.rho[slot]
        )
        step_size = scalar_op(dtype, jnp.subtract, alphas[slot], beta)
        return step_along(r, _index(state.param_diffs, slot), step_size=step_size)

    r = scale_tree(q, state.hessian_diag)
    return jax.lax.fori_loop(0, length, oldest_first, r)


class _Move(NamedTuple):
    """Where an iteration's step lands: the params, the loss and gradient there (torch's, when
    it does not evaluate), the step taken and the evaluations spent."""

    params: Params
    loss: jax.Array
    grad: Updates
    step_size: jax.Array
    evals: jax.Array


def _fixed_step(
    it: _Iterate,
    direction: Updates,
    step_size: jax.Array,
    evaluate: Callable[[Params], Evaluation],
    last: jax.Array,
) -> _Move:
    """``x + t d``, evaluated unless it is the update's last iteration (as torch does)."""
    params = step_along(it.params, direction, step_size=step_size)
    loss, grad = jax.lax.cond(last, lambda: (it.loss, it.grad), lambda: tuple(evaluate(params)))
    return _Move(params, loss, grad, step_size, jnp.where(last, 0, 1).astype(jnp.int32))


def _searched_step(
    it: _Iterate,
    direction: Updates,
    step_size: jax.Array,
    slope: jax.Array,
    evaluate: Callable[[Params], Evaluation],
    max_ls: jax.Array,
    tolerance_change: jax.Array,
) -> _Move:
    """The strong-Wolfe line search's step from ``step_size``, with its evaluations."""
    found = strong_wolfe(
        lambda t: evaluate(step_along(it.params, direction, step_size=t)),
        step_size,
        direction,
        it.loss,
        it.grad,
        slope,
        max_ls=max_ls,
        tolerance_change=tolerance_change,
    )
    params = step_along(it.params, direction, step_size=found.step_size)
    return _Move(params, found.value, found.grad, found.step_size, found.evals)


def _iterate(
    it: _Iterate,
    evaluate: Callable[[Params], Evaluation],
    settings: _Settings,
    learning_rate: jax.Array,
    tolerance_grad: jax.Array,
    tolerance_change: jax.Array,
) -> _Iterate:
    """One pass of torch's ``while n_iter < max_iter`` loop."""
    iteration = it.iteration + 1
    n_iter = it.state.n_iter + 1
    dtype = it.state.step_size.dtype
    # The fresh state (no pairs, H_diag = 1) makes the first direction -g, as torch's reset does.
    state = _remember(it.state, it.grad, settings)
    direction = _two_loop(state, it.grad, settings)
    inverse_l1 = scalar_op(dtype, lambda n: 1.0 / n, sum_abs(it.grad))
    scaled = scalar_op(dtype, jnp.multiply, inverse_l1, learning_rate)
    first_step = jnp.where(inverse_l1 < 1.0, scaled, learning_rate)
    step_size = jnp.where(n_iter == 1, first_step, learning_rate).astype(dtype)
    state = state._replace(
        n_iter=n_iter,
        direction=direction,
        step_size=step_size,
        prev_grad=it.grad,
        prev_loss=it.loss,
    )
    slope = dot(it.grad, direction)  # torch's gtd

    def move(it: _Iterate) -> _Iterate:
        if settings.strong_wolfe:
            max_ls = settings.max_eval - it.evals
            moved = _searched_step(
                it, direction, step_size, slope, evaluate, max_ls, tolerance_change
            )
        else:
            moved = _fixed_step(it, direction, step_size, evaluate, iteration == settings.max_iter)
        evals = it.evals + moved.evals
        done = (
            (iteration == settings.max_iter)
            | (evals >= settings.max_eval)
            | (max_abs(moved.grad) <= tolerance_grad)
            | (max_abs(scale_tree(direction, moved.step_size)) <= tolerance_change)
            | (jnp.abs(moved.loss - it.loss) < tolerance_change)
        )
        state = it.state._replace(
            func_evals=it.state.func_evals + moved.evals, step_size=moved.step_size.astype(dtype)
        )
        return _Iterate(state, moved.params, moved.grad, moved.loss, iteration, evals, done)

    it = it._replace(state=state, iteration=iteration)
    # A direction that does not descend ends the update before any step.
    stop = lambda it: it._replace(done=jnp.asarray(True))
    return jax.lax.cond(slope > -tolerance_change, stop, move, it)


def _run(
    settings: _Settings,
    value_fn: ValueFn,
    state: ScaleByLbfgsState,
    grad: Updates,
    params: Params,
    value: Any,
    hyperparameters: tuple[Any, Any, Any],
) -> tuple[Updates, ScaleByLbfgsState]:
    """One torch ``step(closure)``: the update and the new state."""
    dtype = state.step_size.dtype
    learning_rate, tolerance_grad, tolerance_change = hyperparameters

    def evaluate(x: Params) -> Evaluation:
        loss, new_grad = jax.value_and_grad(value_fn)(x)
        # JAX's gradient of a complex param is the conjugate of torch's (and of the gradients
        # optkit takes, as optax): conjugated, it points uphill in both parts.
        new_grad = jax.tree.map(jnp.conj, new_grad)
        return Evaluation(jnp.asarray(loss).astype(dtype), _cast_like(new_grad, x))

    grad = _cast_like(grad, params)
    loss = jnp.asarray(value_fn(params) if value is None else value).astype(dtype)
    it = _Iterate(
        state=state._replace(
            count=_numerics.increment(state.count), func_evals=state.func_evals + 1
        ),
        params=params,
        grad=grad,
        loss=loss,
        iteration=jnp.zeros([], jnp.int32),
        evals=jnp.ones([], jnp.int32),
        # torch returns at once when the gradient is already below tolerance_grad.
        done=max_abs(grad) <= tolerance_grad,
    )
    it = jax.lax.while_loop(
        lambda it: ~it.done,
        lambda it: _iterate(
            it, evaluate, settings, learning_rate, tolerance_grad, tolerance_change
        ),
        it,
    )
    return difference(it.params, params), it.state


# Called eagerly, an update runs as one compiled program, cached per settings, loss function and
# shapes; under a trace (jit, scan, grad) it is traced inline.
_run_compiled = jax.jit(_run, static_argnums=(0, 1))


def _cast_like(tree: Updates, reference: Updates) -> Updates:
    return jax.tree.map(lambda x, r: jnp.asarray(x).astype(r.dtype), tree, reference)


def _check_whole(params: Params, where: str) -> None:
    """LBFGS's state spans every param: it cannot run on a part of the tree."""
    is_masked = lambda x: isinstance(x, MaskedNode)
    if any(is_masked(x) for x in jax.tree.leaves(params, is_leaf=is_masked)):
        raise ValueError(
            f"{where}: L-BFGS keeps one state over all the params and evaluates value_fn on the "
            "whole params tree, so it cannot run on a subset of the leaves (optkit.param_groups "
            "with several groups, masked, partition). torch.optim.LBFGS refuses parameter "
            "groups too; to freeze leaves, hold them outside the params and close value_fn "
            "over them."
        )


def _hashable(value: Any) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


def _history_like(params: Params, size: int) -> Updates:
    """Zeros with a leading ``size`` axis per leaf, placed like the params (sharded on the
    param's axes)."""
    return jax.tree.map(
        lambda zeros: jnp.broadcast_to(zeros, (size, *zeros.shape)), _tree.zeros_like(params)
    )


def scale_by_lbfgs(
    learning_rate: ScalarOrSchedule = 1.0,
    max_iter: int = 20,
    max_eval: int | None = None,
    tolerance_grad: Scalar = 1e-7,
    tolerance_change: Scalar = 1e-9,
    history_size: int = 100,
    line_search_fn: str | None = None,
) -> GradientTransformation:
    """One L-BFGS step, inner iterations and line search included: the update that moves the
    params where ``torch.optim.LBFGS.step(closure)`` moves them.

    The whole algorithm is one primitive: the learning rate is the first step each iteration
    tries, so it cannot be applied afterwards by ``scale_by_learning_rate``. :func:`lbfgs`
    documents the math and the arguments.

    Examples:
        >>> import jax.numpy as jnp, optkit
        >>> loss = lambda p: jnp.sum((p - 1.0) ** 2)
        >>> params = jnp.zeros(2)
        >>> tx = optkit.scale_by_lbfgs(line_search_fn="strong_wolfe")
        >>> updates, _ = tx.update(-2.0 + params, tx.init(params), params, value_fn=loss)
        >>> updates
        Array([1., 1.], dtype=float32)
    """
    _validation.hyperparameters(
        learning_rate=learning_rate,
        max_iter=max_iter,
        tolerance_grad=tolerance_grad,
        tolerance_change=tolerance_change,
        history_size=history_size,
    )
    if max_eval is None:
        max_eval = max_iter * 5 // 4  # torch's default
    else:
        _validation.hyperparameters(max_eval=max_eval)
    _validation.one_of("line_search_fn", line_search_fn, (None, "strong_wolfe"))
    settings = _Settings(
        max_iter=int(max_iter),
        max_eval=int(max_eval),
        history_size=int(history_size),
        strong_wolfe=line_search_fn == "strong_wolfe",
    )

    def init(params: Params) -> ScaleByLbfgsState:
        _check_whole(params, "lbfgs")
        dtype = dtype_of(params)
        scalar = lambda value: _tree.place_scalars(jnp.asarray(value, dtype), params)
        return ScaleByLbfgsState(
            count=_numerics.zero_count(params),
            func_evals=_numerics.zero_count(params),
            n_iter=_numerics.zero_count(params),
            direction=_tree.zeros_like(params),
            step_size=scalar(0.0),
            prev_grad=_tree.zeros_like(params),
            prev_loss=scalar(0.0),
            grad_diffs=_history_like(params, settings.history_size),
            param_diffs=_history_like(params, settings.history_size),
            rho=_tree.place_scalars(jnp.zeros([settings.history_size], dtype), params),
            history_start=_numerics.zero_count(params),
            history_length=_numerics.zero_count(params),
            hessian_diag=scalar(1.0),
        )

    def update(
        updates: Updates,
        state: ScaleByLbfgsState,
        params: Params | None = None,
        *,
        value: Any = None,
        value_fn: ValueFn | None = None,
        **extra_args: Any,
    ) -> tuple[Updates, ScaleByLbfgsState]:
        del extra_args  # e.g. optax's grad=: the incoming updates are the gradient.
        params = require_params(params, "lbfgs")
        _check_whole(params, "lbfgs")
        updates = _tree.check_updates(params, updates, "lbfgs", "params")
        _tree.check_match(state.direction, params, "lbfgs", "optimizer state", "params")
        if value_fn is None:
            raise ValueError(
                "lbfgs evaluates the loss at the points it tries, as torch's LBFGS calls its "
                "closure: pass the loss as a function of the params, "
                "`tx.update(grads, state, params, value_fn=loss_fn)` (and `value=loss` to "
                "spare one evaluation)."
            )
        rate = learning_rate(state.count) if callable(learning_rate) else learning_rate
        if jnp.ndim(rate) != 0:
            raise ValueError(
                f"lbfgs: the learning-rate schedule returned shape {jnp.shape(rate)}; it must "
                "return a scalar."
            )
        # As arrays of the state's dtype: one compiled program serves Python and array values.
        dtype = state.step_size.dtype
        value = None if value is None else jnp.asarray(value).astype(dtype)
        hyperparameters = tuple(
            jnp.asarray(h).astype(dtype) for h in (rate, tolerance_grad, tolerance_change)
        )
        arguments = (state, updates, params, value, hyperparameters)
        traced = any(isinstance(x, jax.core.Tracer) for x in jax.tree.leaves(arguments))
        run = _run if traced or not _hashable(value_fn) else _run_compiled
        return run(settings, value_fn, *arguments)

    return GradientTransformation(init, update)


def lbfgs(
    learning_rate: ScalarOrSchedule = 1.0,
    max_iter: int = 20,
    max_eval: int | None = None,
    tolerance_grad: Scalar = 1e-7,
    tolerance_change: Scalar = 1e-9,
    history_size: int = 100,
    line_search_fn: str | None = None,
) -> GradientTransformation:
    r"""L-BFGS. Same math and defaults as ``torch.optim.LBFGS``.

    One update is one ``torch.optim.LBFGS.step(closure)``: up to ``max_iter`` quasi-Newton
    iterations, each evaluating the loss where torch calls the closure. The loss is a pure JAX
    function of the params, passed at each update (optax's extra-argument convention)::

        updates, state = tx.update(grads, state, params, value=loss, value_fn=loss_fn)

    where ``grads`` and ``loss`` are the gradient and loss at ``params`` (``value`` may be left
    out: it is then evaluated). Iteration :math:`k` at :math:`x_k` with gradient :math:`g_k`:

    .. math::
        s_{k-1} &= x_k - x_{k-1}, \quad y_{k-1} = g_k - g_{k-1}, \quad
        \text{kept in the history if } y_{k-1}^\top s_{k-1} > 10^{-10} \\
        d_k &= -H_k g_k \quad \text{(two-loop recursion over the last } m
        \text{ pairs, } H^0_k = \frac{y^\top s}{y^\top y} I \text{ of the newest pair)} \\
        t_k &= \gamma \min(1, 1 / \lVert g_0 \rVert_1) \text{ at the very first iteration,
        else } \gamma \\
        x_{k+1} &= x_k + t_k d_k

    With ``line_search_fn="strong_wolfe"``, :math:`t_k` is the strong-Wolfe line search's step
    (:math:`c_1 = 10^{-4}`, :math:`c_2 = 0.9`, cubic interpolation), starting from the
    :math:`t_k` above. The iterations stop after ``max_iter``, after ``max_eval`` loss
    evaluations, when :math:`\lVert g \rVert_\infty \le` ``tolerance_grad``, when
    :math:`g_k^\top d_k > -` ``tolerance_change``, or when the step
    (:math:`\lVert t_k d_k \rVert_\infty`) or the loss change is at most (below)
    ``tolerance_change``. The history and the last direction carry over to the next update, as
    torch's state does.

    The state mirrors torch's (:class:`ScaleByLbfgsState`): the history is a ring buffer of
    ``history_size`` pairs, each buffer shaped like its param with a leading history axis, so
    the state is sharded like the params; inner products sum over the leaves in JAX's flatten
    order, where torch concatenates the params in the order given (only rounding differs). The
    update is a ``lax.while_loop``: it compiles once, whatever the number of iterations.

    Differences from torch: ``max_iter``, ``max_eval`` and ``history_size`` are fixed when the
    optimizer is built (they size its loops and buffers), so they cannot be changed between
    updates; torch's LBFGS refuses parameter groups, and so does this optimizer
    (``optkit.param_groups`` with more than one group raises). Unlike optax's ``lbfgs``
    (a chain of the direction and a zoom line search that takes one iteration per update), this
    is torch's whole ``step``.

    Args:
        learning_rate: :math:`\gamma`, the first step each iteration tries, a number or a
            schedule of the update count (torch's ``lr``; default 1).
        max_iter: iterations per update (default 20).
        max_eval: loss evaluations per update, at least 1; ``None`` means ``max_iter * 5 // 4``
            (torch's default).
        tolerance_grad: stop when the largest gradient element is at most this (default
            ``1e-7``).
        tolerance_change: stop when the loss or the params change less than this (default
            ``1e-9``).
        history_size: pairs kept in the history, :math:`m` (default 100).
        line_search_fn: ``None`` (fixed steps) or ``"strong_wolfe"``.

    Examples:
        >>> import jax, jax.numpy as jnp, optkit
        >>> def loss_fn(p):
        ...     return jnp.sum((p["w"] - 2.0) ** 2) + (p["w"][0] * p["b"] - 1.0) ** 2
        >>> params = {"w": jnp.zeros(2), "b": jnp.ones(())}
        >>> tx = optkit.lbfgs(line_search_fn="strong_wolfe")
        >>> state = tx.init(params)
        >>> loss, grads = jax.value_and_grad(loss_fn)(params)
        >>> updates, state = tx.update(grads, state, params, value=loss, value_fn=loss_fn)
        >>> params = optkit.apply_updates(params, updates)
        >>> print(f"{float(loss_fn(params)):.6f}")
        0.000000

    References:
        Liu and Nocedal, `On the limited memory BFGS method for large scale optimization
        <https://doi.org/10.1007/BF01589116>`_, 1989; Nocedal and Wright, *Numerical
        Optimization*, 2nd ed., 2006 (algorithms 7.4, 3.5 and 3.6).
    """
    arguments = {
        "learning_rate": learning_rate,
        "max_iter": max_iter,
        "max_eval": max_eval,
        "tolerance_grad": tolerance_grad,
        "tolerance_change": tolerance_change,
        "history_size": history_size,
        "line_search_fn": line_search_fn,
    }
    return described(scale_by_lbfgs(**arguments), "LBFGS", **arguments)
