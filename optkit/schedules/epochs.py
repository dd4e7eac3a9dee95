"""Schedules stepped once per epoch: torch's ``scheduler.step()`` after each epoch.

optkit's schedules are functions of the update count, as torch's schedulers are when stepped after
every ``optimizer.step()``. Much torch code steps its scheduler once per epoch instead (PyTorch's
MNIST and ImageNet examples, timm's default, Lightning's default), so the scheduler's own count
is the number of epochs done: :func:`per_epoch` turns the update count into that epoch count.
"""

from __future__ import annotations

import jax

from optkit import _validation
from optkit._base import Schedule
from optkit.schedules._curves import as_count


def per_epoch(schedule: Schedule, steps_per_epoch: int) -> Schedule:
    r"""Step ``schedule`` once per epoch of ``steps_per_epoch`` updates, as torch code that
    calls ``scheduler.step()`` after each epoch does.

    .. math::
        \eta_c = S\left(\left\lfloor c / \text{steps\_per\_epoch} \right\rfloor\right)

    for the 0-based update count :math:`c`: every update of epoch :math:`e` (0-based) uses
    :math:`S(e)`, the learning rate torch's optimizer holds after :math:`e` calls of
    ``scheduler.step()``. Build ``schedule`` with torch's arguments as they are, counted in
    epochs (``step_size``, ``T_max``, ``milestones``, ``total_steps``)::

        # torch (PyTorch's MNIST example)
        optimizer = optim.Adadelta(model.parameters(), lr=1.0)
        scheduler = StepLR(optimizer, step_size=1, gamma=0.7)
        for epoch in range(epochs):
            train(...)            # optimizer.step() for each of the len(train_loader) batches
            scheduler.step()

        # optkit
        schedule = schedules.per_epoch(
            schedules.step_lr(1.0, step_size=1, gamma=0.7), steps_per_epoch=len(train_loader)
        )
        tx = optkit.adadelta(learning_rate=schedule)

    ``step_lr(1.0, step_size=1, gamma=0.7)`` alone, the literal translation, would decay
    after every *update*, not every epoch. ``steps_per_epoch`` is the number of optimizer
    updates in one epoch: ``len(train_loader)`` (the last, smaller batch counts, unless the
    loader drops it); with gradient accumulation, the number of optimizer steps, not of
    micro-batches. Epochs of different lengths need :func:`optkit.inject_hyperparams` and
    :func:`optkit.set_hyperparams` once per epoch instead.

    Any schedule works (optkit's, optax's, a function of the count), and so does passing the
    result wherever a schedule is accepted, :func:`optkit.inject_hyperparams` included.
    optax has no counterpart; ``lambda count: schedule(count // steps_per_epoch)`` is the same
    function.

    Args:
        schedule: :math:`S`, a function of the epoch count.
        steps_per_epoch: the updates per epoch, a positive integer.

    Examples:
        >>> import jax.numpy as jnp
        >>> from optkit import schedules
        >>> schedule = schedules.per_epoch(schedules.step_lr(1.0, step_size=1, gamma=0.5), 3)
        >>> schedule(jnp.arange(7))
        Array([1.  , 1.  , 1.  , 0.5 , 0.5 , 0.5 , 0.25], dtype=float32)
    """
    schedule = _validation.function("schedule", schedule)
    steps_per_epoch = _validation.positive_int("steps_per_epoch", steps_per_epoch)

    def stepped(count: jax.Array) -> jax.Array:
        return schedule(as_count(count) // steps_per_epoch)

    return stepped
