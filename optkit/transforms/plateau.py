"""Reduce the learning rate when a monitored value stops improving (torch's ReduceLROnPlateau).

Unlike a schedule, the reduction depends on the loss, not on the count, so it is a transform with
state: it multiplies the updates by a scale that it lowers after ``patience`` updates without
improvement. Placed after the optimizer, the scale multiplies the whole step, exactly as torch's
scheduler lowers ``lr`` (decoupled weight decay included, since torch multiplies it by ``lr``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from optkit import _tree, _validation
from optkit._base import GradientTransformation, Params, Scalar, Updates
from optkit.schedules._curves import as_float
from optkit.transforms.scaling import scale_tree


class ReduceLROnPlateauState(NamedTuple):
    """The scale applied to the updates and torch's bookkeeping of the monitored value."""

    scale: jax.Array
    """Current learning rate / ``learning_rate``; starts at 1."""
    best: jax.Array
    """Best value seen so far (``+inf`` for ``mode="min"``, ``-inf`` for ``"max"`` at first)."""
    num_bad_epochs: jax.Array
    """Updates since the last improvement (int32), reset by a reduction and during cooldown."""
    cooldown_counter: jax.Array
    """Updates of cooldown left (int32); no bad updates are counted while it is positive."""


def _improves(
    mode: str, threshold_mode: str, threshold: Scalar
) -> Callable[[jax.Array, jax.Array], jax.Array]:
    """torch's ``_is_better(value, best)`` for one mode, as a jnp comparison."""
    if mode == "min":
        if threshold_mode == "rel":
            return lambda value, best: value < best * (1.0 - threshold)
        return lambda value, best: value < best - threshold
    if threshold_mode == "rel":
        return lambda value, best: value > best * (1.0 + threshold)
    return lambda value, best: value > best + threshold


def reduce_lr_on_plateau(
    mode: str = "min",
    factor: Scalar = 0.1,
    patience: int = 10,
    threshold: Scalar = 1e-4,
    threshold_mode: str = "rel",
    cooldown: int = 0,
    min_lr: Scalar = 0.0,
    eps: Scalar = 1e-8,
    *,
    learning_rate: Scalar,
) -> GradientTransformation:
    r"""Scale the updates down by ``factor`` when the monitored value plateaus. Same rule and
    defaults as ``torch.optim.lr_scheduler.ReduceLROnPlateau``.

    Pass the monitored value (e.g. the loss) to every update as ``value=``; the value given at
    update :math:`k` affects the scale from update :math:`k + 1` on, as torch's
    ``optimizer.step(); scheduler.step(loss)``. Per update, with :math:`\eta = \eta_0 s` the
    current learning rate (:math:`\eta_0` = ``learning_rate``, :math:`s` the scale):

    1. ``value`` improves on ``best`` if (min mode) it is below :math:`best (1 - \tau)` (rel)
       or :math:`best - \tau` (abs), or (max mode) above :math:`best (1 + \tau)` or
       :math:`best + \tau`; then it becomes ``best`` and the bad count resets, else the count
       grows by one.
    2. During cooldown the cooldown counter drops by one and bad updates are not counted.
    3. When the bad count exceeds ``patience``:
       :math:`\eta' = \max(\eta \cdot \text{factor}, \text{min\_lr})`, applied only if
       :math:`\eta - \eta' > \epsilon`; the cooldown restarts and the bad count resets.

    Chain it after the optimizer, whose learning rate it scales::

        tx = optkit.chain(optkit.sgd(0.1), optkit.reduce_lr_on_plateau(learning_rate=0.1))
        updates, state = tx.update(grads, state, params, value=loss)

    torch's ``min_lr`` and ``eps`` are absolute learning rates, while this transform only sees a
    scale, so it takes the optimizer's ``learning_rate`` to convert them: the scale never falls
    below ``min_lr / learning_rate``. With a scheduled learning rate the scale multiplies the
    schedule's value (the reductions compound with it, as two torch schedulers on one optimizer
    do); pass the learning rate in which ``min_lr`` and ``eps`` should be measured, e.g. the
    schedule's initial value. The floor and the eps rule then agree with torch only where the
    schedule is at that value.

    Args:
        mode: ``"min"`` (the value should decrease, default) or ``"max"``.
        factor: the reduction factor, in ``[0, 1)`` (default 0.1).
        patience: updates without improvement tolerated before a reduction, an integer >= 0
            (default 10).
        threshold: :math:`\tau \ge 0`, the least change counted as an improvement (default 1e-4).
        threshold_mode: ``"rel"`` (default) or ``"abs"``.
        cooldown: updates to wait after a reduction before counting bad updates again, an
            integer >= 0 (default 0).
        min_lr: the lowest learning rate, an absolute value >= 0 (default 0).
        eps: :math:`\epsilon \ge 0`, reductions of the learning rate smaller than this are
            skipped (default 1e-8).
        learning_rate: the learning rate of the optimizer this transform follows (>= 0): the
            learning rate at scale 1, in which ``min_lr`` and ``eps`` are measured. Required.

    Examples:
        >>> import jax.numpy as jnp, optkit
        >>> tx = optkit.chain(
        ...     optkit.sgd(1.0), optkit.reduce_lr_on_plateau(patience=1, learning_rate=1.0)
        ... )
        >>> params = jnp.zeros(1)
        >>> state = tx.init(params)
        >>> for loss in [3.0, 2.0, 2.0, 2.0, 2.0]:
        ...     updates, state = tx.update(jnp.ones(1), state, params, value=loss)
        >>> updates, state[1].scale
        (Array([-0.1], dtype=float32), Array(0.1, dtype=float32))
    """
    mode = _validation.one_of("mode", mode, ("min", "max"))
    _validation.scalar("factor", factor, low=0.0, high=1.0, high_inclusive=False)
    patience = _validation.non_negative_int("patience", patience)
    _validation.non_negative("threshold", threshold)
    threshold_mode = _validation.one_of("threshold_mode", threshold_mode, ("rel", "abs"))
    cooldown = _validation.non_negative_int("cooldown", cooldown)
    _validation.non_negative("min_lr", min_lr)
    _validation.non_negative("eps", eps)
    if callable(learning_rate):
        raise TypeError(
            "learning_rate must be a number (the learning rate at scale 1, in which min_lr and "
            "eps are measured), not a schedule."
        )
    _validation.non_negative("learning_rate", learning_rate)
    improves = _improves(mode, threshold_mode, threshold)

    def init(params: Params) -> ReduceLROnPlateauState:
        worst = jnp.inf if mode == "min" else -jnp.inf
        state = ReduceLROnPlateauState(
            scale=as_float(1.0),
            best=as_float(worst),
            num_bad_epochs=jnp.zeros([], jnp.int32),
            cooldown_counter=jnp.zeros([], jnp.int32),
        )
        return _tree.place_scalars(state, params)

    def update(
        updates: Updates,
        state: ReduceLROnPlateauState,
        params: Params | None = None,
        *,
        value: jax.typing.ArrayLike | None = None,
        **extra_args: Any,
    ) -> tuple[Updates, ReduceLROnPlateauState]:
        del params, extra_args
        if value is None:
            raise ValueError(
                "reduce_lr_on_plateau needs the monitored value at every update: call "
                "`update(updates, state, params, value=loss)`. optkit.chain forwards `value`; "
                "optax.chain drops it for transforms that are not optax's own, so combine this "
                "transform with optkit.chain."
            )
        value = jnp.asarray(value)
        if value.ndim != 0:
            raise ValueError(
                f"reduce_lr_on_plateau: value must be a scalar, got an array of shape "
                f"{value.shape}."
            )
        scaled = scale_tree(updates, state.scale)

        better = improves(value, state.best)
        best = jnp.where(better, _tree.cast_like(value, state.best), state.best)
        bad = jnp.where(better, 0, state.num_bad_epochs + 1)
        in_cooldown = state.cooldown_counter > 0
        cooldown_left = jnp.where(in_cooldown, state.cooldown_counter - 1, state.cooldown_counter)
        bad = jnp.where(in_cooldown, 0, bad)

        reduce = bad > patience
        lr = learning_rate * state.scale
        reduced_lr = jnp.maximum(lr * factor, min_lr)
        # With learning_rate == 0, lr - reduced_lr <= 0 never passes, so the division is unused.
        scale = jnp.where(reduce & (lr - reduced_lr > eps), reduced_lr / learning_rate, state.scale)
        new_state = ReduceLROnPlateauState(
            scale=_tree.cast_like(scale, state.scale),
            best=best,
            num_bad_epochs=jnp.where(reduce, 0, bad).astype(jnp.int32),
            cooldown_counter=jnp.where(reduce, cooldown, cooldown_left).astype(jnp.int32),
        )
        return scaled, new_state

    return GradientTransformation(init, update)
