"""Reduce the learning rate when a monitored value stops improving (torch's ReduceLROnPlateau).

Unlike a schedule, the reduction depends on the loss, not on the count, so it is a transform with
state: it multiplies the updates by a scale that it lowers after ``patience`` evaluations without
improvement. Placed after the optimizer, the scale multiplies the whole step, exactly as torch's
scheduler lowers ``lr`` (decoupled weight decay included, since torch multiplies it by ``lr``).

The monitored value reaches the state in one of two ways: ``update(..., value=loss)`` at every
update (torch's ``scheduler.step(loss)`` after each ``optimizer.step()``), or
:func:`step_plateau` whenever the loop has a value, typically once per epoch after validation.
For the second, the state carries the transform's settings (torch's scheduler attributes), so
that a state alone can be advanced: the numbers as arrays, the two modes as int32 codes. Every
leaf is an array, so the state jits, shards, donates and checkpoints like any other, and one
compiled ``step_plateau`` serves every setting.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from optkit import _tree, _validation
from optkit._base import GradientTransformation, OptState, Params, Scalar, Updates
from optkit.schedules._curves import as_float
from optkit.transforms.scaling import scale_tree

MODES = ("min", "max")
"""``mode`` by its code in :attr:`ReduceLROnPlateauSettings.mode`: ``MODES[code]``."""
THRESHOLD_MODES = ("rel", "abs")
"""``threshold_mode`` by its code in :attr:`ReduceLROnPlateauSettings.threshold_mode`."""


class ReduceLROnPlateauSettings(NamedTuple):
    """The arguments of :func:`reduce_lr_on_plateau`, as arrays (torch's scheduler attributes).

    Set by ``init`` and never changed by an update: both ``update(..., value=)`` and
    :func:`step_plateau` read the settings from here, so a restored state continues with the
    settings it was saved with, as torch's ``scheduler.load_state_dict`` restores them. To change
    one mid-run (torch's ``scheduler.factor = 0.5``), replace it in the state:
    ``state._replace(settings=state.settings._replace(factor=jnp.asarray(0.5)))``; arguments
    injected with :func:`optkit.inject_hyperparams` are likewise read at ``init`` only.
    """

    mode: jax.Array
    """int32 code: 0 for ``"min"``, 1 for ``"max"`` (see :data:`MODES`)."""
    threshold_mode: jax.Array
    """int32 code: 0 for ``"rel"``, 1 for ``"abs"`` (see :data:`THRESHOLD_MODES`)."""
    factor: jax.Array
    """The reduction factor."""
    patience: jax.Array
    """Values without improvement tolerated before a reduction (int32)."""
    threshold: jax.Array
    """The least change counted as an improvement."""
    cooldown: jax.Array
    """Values to wait after a reduction before counting bad values again (int32)."""
    min_lr: jax.Array
    """The lowest learning rate (absolute)."""
    eps: jax.Array
    """Reductions of the learning rate smaller than this are skipped (absolute)."""
    learning_rate: jax.Array
    """The learning rate at scale 1, in which ``min_lr`` and ``eps`` are measured."""


class ReduceLROnPlateauState(NamedTuple):
    """The scale applied to the updates, torch's bookkeeping of the monitored value, and the
    settings it follows."""

    scale: jax.Array
    """Current learning rate / ``learning_rate``; starts at 1."""
    best: jax.Array
    """Best value seen so far (``+inf`` for ``mode="min"``, ``-inf`` for ``"max"`` at first)."""
    num_bad_epochs: jax.Array
    """Values since the last improvement (int32), reset by a reduction and during cooldown."""
    cooldown_counter: jax.Array
    """Values of cooldown left (int32); no bad values are counted while it is positive."""
    settings: ReduceLROnPlateauSettings
    """The transform's arguments, so that :func:`step_plateau` can act on the state alone."""


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

    Each monitored value (torch's ``scheduler.step(value)``) advances the rule; the next updates
    use the new scale. Give the value in either of two ways:

    - once per epoch (or whenever torch calls ``scheduler.step(val_loss)``), outside the update:
      ``opt_state = optkit.step_plateau(opt_state, val_loss)``; updates without ``value=`` then
      only apply the current scale and leave the rule's state alone;
    - at every update, as ``update(..., value=loss)``: the value given at update :math:`k`
      affects the scale from update :math:`k + 1` on, as torch's ``optimizer.step();
      scheduler.step(loss)``.

    Per value, with :math:`\eta = \eta_0 s` the current learning rate (:math:`\eta_0` =
    ``learning_rate``, :math:`s` the scale):

    1. ``value`` improves on ``best`` if (min mode) it is below :math:`best (1 - \tau)` (rel)
       or :math:`best - \tau` (abs), or (max mode) above :math:`best (1 + \tau)` or
       :math:`best + \tau`; then it becomes ``best`` and the bad count resets, else the count
       grows by one. A NaN never improves (it counts as bad), as in torch.
    2. During cooldown the cooldown counter drops by one and bad values are not counted.
    3. When the bad count exceeds ``patience``:
       :math:`\eta' = \max(\eta \cdot \text{factor}, \text{min\_lr})`, applied only if
       :math:`\eta - \eta' > \epsilon`; the cooldown restarts and the bad count resets.

    Chain it after the optimizer, whose learning rate it scales::

        tx = optkit.chain(optkit.sgd(0.1), optkit.reduce_lr_on_plateau(learning_rate=0.1))
        updates, state = tx.update(grads, state, params)     # each minibatch
        state = optkit.step_plateau(state, val_loss)         # each epoch

    Use :func:`optkit.chain` for the per-update form: ``optax.chain`` does not forward
    ``value=`` to transforms that are not optax's own, and an update without ``value=`` leaves
    the rule where it is. ``init`` copies the settings into the state
    (:class:`ReduceLROnPlateauState`), where ``update`` and :func:`step_plateau` read them.

    torch's ``min_lr`` and ``eps`` are absolute learning rates, while this transform only sees a
    scale, so it takes the optimizer's ``learning_rate`` to convert them: the scale never falls
    below ``min_lr / learning_rate``. torch's per-group ``min_lr`` list is a plateau per group:
    chain one inside the factory given to :func:`optkit.param_groups`, each with its group's
    ``learning_rate`` and ``min_lr`` (all of them see the same values, so their bookkeeping
    agrees, as torch's one scheduler's does). With a scheduled learning rate the scale
    multiplies the schedule's value (the reductions compound with it, as two torch schedulers on
    one optimizer do); pass the learning rate in which ``min_lr`` and ``eps`` should be measured,
    e.g. the schedule's initial value. The floor and the eps rule then agree with torch only
    where the schedule is at that value.

    optax's ``contrib.reduce_on_plateau`` has no ``threshold_mode``, ``min_lr`` or ``eps``,
    counts patience in updates and averages the values over ``accumulation_size`` updates.

    Args:
        mode: ``"min"`` (the value should decrease, default) or ``"max"``.
        factor: the reduction factor, in ``[0, 1)`` (default 0.1).
        patience: values without improvement tolerated before a reduction, an integer >= 0
            (default 10).
        threshold: :math:`\tau \ge 0`, the least change counted as an improvement (default 1e-4).
        threshold_mode: ``"rel"`` (default) or ``"abs"``.
        cooldown: values to wait after a reduction before counting bad values again, an
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
    mode = _validation.one_of("mode", mode, MODES)
    _validation.scalar("factor", factor, low=0.0, high=1.0, high_inclusive=False)
    patience = _validation.non_negative_int("patience", patience)
    _validation.non_negative("threshold", threshold)
    threshold_mode = _validation.one_of("threshold_mode", threshold_mode, THRESHOLD_MODES)
    cooldown = _validation.non_negative_int("cooldown", cooldown)
    _validation.non_negative("min_lr", min_lr)
    _validation.non_negative("eps", eps)
    if callable(learning_rate):
        raise TypeError(
            "learning_rate must be a number (the learning rate at scale 1, in which min_lr and "
            "eps are measured), not a schedule."
        )
    _validation.non_negative("learning_rate", learning_rate)

    def init(params: Params) -> ReduceLROnPlateauState:
        settings = ReduceLROnPlateauSettings(
            mode=jnp.asarray(MODES.index(mode), jnp.int32),
            threshold_mode=jnp.asarray(THRESHOLD_MODES.index(threshold_mode), jnp.int32),
            factor=as_float(factor),
            patience=jnp.asarray(patience, jnp.int32),
            threshold=as_float(threshold),
            cooldown=jnp.asarray(cooldown, jnp.int32),
            min_lr=as_float(min_lr),
            eps=as_float(eps),
            learning_rate=as_float(learning_rate),
        )
        state = ReduceLROnPlateauState(
            scale=as_float(1.0),
            best=as_float(jnp.inf if mode == "min" else -jnp.inf),
            num_bad_epochs=jnp.zeros([], jnp.int32),
            cooldown_counter=jnp.zeros([], jnp.int32),
            settings=settings,
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
        scaled = scale_tree(updates, state.scale)
        if value is None:
            return scaled, state
        return scaled, _advance(state, _monitored("reduce_lr_on_plateau", value))

    return GradientTransformation(init, update)


def _monitored(where: str, value: jax.typing.ArrayLike) -> jax.Array:
    """The monitored value as a real scalar array (torch's ``float(metrics)``)."""
    value = jnp.asarray(value)
    if value.ndim != 0:
        raise ValueError(f"{where}: value must be a scalar, got an array of shape {value.shape}.")
    if value.dtype == jnp.bool_ or not (
        jnp.issubdtype(value.dtype, jnp.floating) or jnp.issubdtype(value.dtype, jnp.integer)
    ):
        raise TypeError(f"{where}: value must be a real number, got dtype {value.dtype}.")
    return value


def _improves(value: jax.Array, best: jax.Array, settings: ReduceLROnPlateauSettings) -> jax.Array:
    """torch's ``_is_better(value, best)`` for the modes the settings encode (NaN: False)."""
    threshold = settings.threshold
    relative = settings.threshold_mode == THRESHOLD_MODES.index("rel")
    below = jnp.where(relative, value < best * (1.0 - threshold), value < best - threshold)
    above = jnp.where(relative, value > best * (threshold + 1.0), value > best + threshold)
    return jnp.where(settings.mode == MODES.index("max"), above, below)


def _advance(state: ReduceLROnPlateauState, value: jax.Array) -> ReduceLROnPlateauState:
    """torch's ``ReduceLROnPlateau.step(value)`` on one state."""
    settings = state.settings
    better = _improves(value, state.best, settings)
    best = jnp.where(better, _tree.cast_like(value, state.best), state.best)
    bad = jnp.where(better, 0, state.num_bad_epochs + 1)
    in_cooldown = state.cooldown_counter > 0
    cooldown_left = jnp.where(in_cooldown, state.cooldown_counter - 1, state.cooldown_counter)
    bad = jnp.where(in_cooldown, 0, bad)

    reduce = bad > settings.patience
    learning_rate = settings.learning_rate
    lr = learning_rate * state.scale
    reduced_lr = jnp.maximum(lr * settings.factor, settings.min_lr)
    # With learning_rate == 0, lr - reduced_lr <= 0 never passes, so the division is unused.
    applied = reduce & (lr - reduced_lr > settings.eps)
    scale = jnp.where(applied, reduced_lr / learning_rate, state.scale)
    return state._replace(
        scale=_tree.cast_like(scale, state.scale),
        best=best,
        num_bad_epochs=jnp.where(reduce, 0, bad).astype(jnp.int32),
        cooldown_counter=jnp.where(reduce, settings.cooldown, cooldown_left).astype(jnp.int32),
    )


def _is_plateau(node: Any) -> bool:
    return isinstance(node, ReduceLROnPlateauState)


_PLAIN = jax.tree.structure(ReduceLROnPlateauState(0, 0, 0, 0, ReduceLROnPlateauSettings(*[0] * 9)))


def _advance_wrapped(state: ReduceLROnPlateauState, value: jax.Array) -> ReduceLROnPlateauState:
    """:func:`_advance` on a state whose arrays may sit inside wrappers (Flax nnx's
    ``OptArray``): computed on the bare arrays, returned in the same wrappers."""
    bare = jax.tree.unflatten(_PLAIN, jax.tree.leaves(state))
    return jax.tree.unflatten(jax.tree.structure(state), jax.tree.leaves(_advance(bare, value)))


def step_plateau(opt_state: OptState, value: jax.typing.ArrayLike) -> OptState:
    """Advance every :func:`reduce_lr_on_plateau` state in ``opt_state`` by one monitored value.

    Same as torch's ``scheduler.step(val_loss)`` on a ``ReduceLROnPlateau``: call it wherever
    torch's loop does, typically after each epoch's validation, outside the update::

        # torch
        scheduler = optim.lr_scheduler.ReduceLROnPlateau(optimizer, patience=5)
        for epoch in range(epochs):
            train(...)                     # optimizer.step() per batch
            scheduler.step(validate(...))

        # optkit
        tx = optkit.chain(optkit.sgd(0.1), optkit.reduce_lr_on_plateau(patience=5,
                                                                       learning_rate=0.1))
        for epoch in range(epochs):
            params, opt_state = train(params, opt_state)   # tx.update without value=
            opt_state = optkit.step_plateau(opt_state, validate(params))

    Each plateau state is found wherever it sits (chains, :func:`optkit.param_groups`,
    :func:`optkit.inject_hyperparams`, masks, wrappers whose state holds an ``inner_state``)
    and advanced with the settings it carries; everything else is returned as it was. Several
    plateau states (one per param group) all see ``value``. The rule is that of
    :func:`reduce_lr_on_plateau`, so updates after the call use the new scale.

    ``value`` is a real scalar: a Python number or a JAX or NumPy scalar, traced or not, so
    ``jax.jit(optkit.step_plateau)`` compiles once for all values. A non-finite value is
    handled as torch handles it: a NaN never improves on the best value (it counts as a bad
    epoch), an infinity is compared as any number (in min mode, ``-inf`` becomes the best and
    nothing improves on it afterwards).

    optax has no counterpart: its ``contrib.reduce_on_plateau`` reads the value inside every
    update.

    Examples:
        >>> import jax.numpy as jnp, optkit
        >>> tx = optkit.chain(
        ...     optkit.sgd(1.0), optkit.reduce_lr_on_plateau(patience=1, learning_rate=1.0)
        ... )
        >>> params = jnp.zeros(1)
        >>> state = tx.init(params)
        >>> for val_loss in [3.0, 2.0, 2.0, 2.0]:  # one value per epoch
        ...     for _ in range(5):  # the epoch's updates
        ...         updates, state = tx.update(jnp.ones(1), state, params)
        ...     state = optkit.step_plateau(state, val_loss)
        >>> float(state[1].scale), int(state[1].num_bad_epochs)
        (0.10000000149011612, 0)

    Raises:
        ValueError: if ``opt_state`` holds no plateau state, or ``value`` is not a scalar.
        TypeError: if ``value`` is not a real number (a bool, a complex number).
    """
    value = _monitored("step_plateau", value)
    if not any(_is_plateau(node) for node in jax.tree.leaves(opt_state, is_leaf=_is_plateau)):
        raise ValueError(
            "step_plateau: the state holds no reduce_lr_on_plateau state; chain "
            "optkit.reduce_lr_on_plateau(..., learning_rate=...) after the optimizer, e.g. "
            "optkit.chain(optkit.sgd(0.1), optkit.reduce_lr_on_plateau(learning_rate=0.1))."
        )
    return jax.tree.map(
        lambda node: _advance_wrapped(node, value) if _is_plateau(node) else node,
        opt_state,
        is_leaf=_is_plateau,
    )
