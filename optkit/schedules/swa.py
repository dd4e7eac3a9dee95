r"""The learning rate of stochastic weight averaging: torch's ``SWALR``.

torch updates the learning rate recursively, recovering the rate it started from out of the
current one at every step. In exact arithmetic that is the closed form below, which agrees with
torch's values to relative 1e-10 in float64: they differ by the recursion's rounding only,
amplified near the end of a long cosine annealing.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from optkit import _validation
from optkit._base import Scalar, Schedule
from optkit.schedules._curves import as_count, as_float, cosine_weight

ANNEAL_STRATEGIES = ("cos", "linear")


def swa_lr(
    learning_rate: Scalar,
    swa_lr: Scalar,
    anneal_epochs: int = 10,
    anneal_strategy: str = "cos",
) -> Schedule:
    r"""Anneal from ``learning_rate`` to ``swa_lr`` over ``anneal_epochs`` updates, then hold it.
    Same values as ``torch.optim.swa_utils.SWALR`` stepped once per update.

    With :math:`A` = ``anneal_epochs``, :math:`t_k = \min(1, k / \max(1, A))` and
    :math:`\alpha = t` (``"linear"``) or :math:`\alpha = \tfrac12 (1 - \cos \pi t)` (``"cos"``):

    .. math::
        \eta_k = \alpha(t_k)\, \eta_{swa} + (1 - \alpha(t_k))\, \eta_0

    so :math:`\eta_0` = ``learning_rate`` at count 0 and ``swa_lr`` from count :math:`A` on.
    ``anneal_epochs=0`` gives ``swa_lr`` from count 0 (torch's SWALR sets it when created);
    ``anneal_epochs=1`` gives ``learning_rate`` at count 0, then ``swa_lr``.

    ``learning_rate`` is the optimizer's lr when torch's SWALR is created or, in torch's usual
    loop, when it takes over from another scheduler: SWALR anneals from whatever the lr is at its
    first ``step()``. To reproduce an SGD schedule that hands over to SWALR after update ``b``,
    join the two at ``b`` with the first schedule's value there::

        # torch: if c >= b: swa_scheduler.step() else: scheduler.step(), after optimizer.step()
        cosine = schedules.cosine_annealing_lr(0.1, T_max=100)
        lr = schedules.join_schedules(
            [cosine, schedules.swa_lr(float(cosine(b)), swa_lr=0.05)], boundaries=[b]
        )

    torch steps SWALR once per epoch in its examples; for that, evaluate the schedule at the
    epoch count: ``lambda count: schedule(count // steps_per_epoch)``.

    Args:
        learning_rate: the learning rate :math:`\eta_0 \ge 0` annealing starts from.
        swa_lr: the learning rate :math:`\eta_{swa}` annealing ends at and then holds, any
            finite number, as in torch.
        anneal_epochs: :math:`A`, the length of the annealing in updates, an integer >= 0
            (default 10).
        anneal_strategy: ``"cos"`` (default) or ``"linear"``.

    Examples:
        >>> import jax.numpy as jnp
        >>> from optkit import schedules
        >>> schedule = schedules.swa_lr(1.0, swa_lr=0.5, anneal_epochs=4, anneal_strategy="linear")
        >>> schedule(jnp.arange(6))
        Array([1.   , 0.875, 0.75 , 0.625, 0.5  , 0.5  ], dtype=float32)

    References:
        Izmailov et al., `Averaging Weights Leads to Wider Optima and Better Generalization
        <https://arxiv.org/abs/1803.05407>`_, 2018.
    """
    _validation.non_negative("learning_rate", learning_rate)
    _validation.finite("swa_lr", swa_lr)
    anneal_epochs = _validation.non_negative_int("anneal_epochs", anneal_epochs)
    _validation.one_of("anneal_strategy", anneal_strategy, ANNEAL_STRATEGIES)
    length = max(1, anneal_epochs)

    def schedule(count: jax.Array) -> jax.Array:
        count = as_count(count)
        # torch evaluates SWALR at step max(1, k) when anneal_epochs is 0: already annealed.
        step = jnp.maximum(count, 1) if anneal_epochs == 0 else count
        done = jnp.clip(step, 0, length)
        # The weights of swa_lr and of learning_rate, each computed directly (not as 1 - the
        # other) so that both keep their relative precision in float32.
        if anneal_strategy == "cos":
            to_swa = cosine_weight(as_float(done) / length)
            to_start = cosine_weight(as_float(length - done) / length)
        else:
            to_swa = as_float(done) / length
            to_start = as_float(length - done) / length
        return as_float(swa_lr) * to_swa + as_float(learning_rate) * to_start

    return schedule
