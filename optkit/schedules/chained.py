r"""torch's ChainedScheduler: several schedulers stepped one after the other on the same lr.

Chaining reproduces torch only for schedules whose torch scheduler scales the lr by a factor of
the step (see ``_factor``): the step, multistep, constant, linear, exponential, polynomial,
multiplicative and lambda schedules, Hugging Face's (``get_scheduler``) and chains of them. The
others move the lr in other ways, so torch's chain of them is no product of the schedules, and
these refuse them with the reason.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax

from optkit import _validation
from optkit._base import Schedule
from optkit.schedules._factor import FactorSchedule

_CHAINABLE = (
    "step_lr, multistep_lr, constant_lr, linear_lr, exponential_lr, polynomial_lr, lambda_lr, "
    "multiplicative_lr, get_scheduler's schedules and chained_scheduler's own"
)

# Why torch's chain of each other optkit schedule is not a product of factors, by the name of the
# function that builds it (the qualified name of the schedule it returns starts with it).
_NOT_A_FACTOR = {
    "cosine_annealing_lr": (
        "cosine_annealing_lr",
        "torch's CosineAnnealingLR moves the current lr towards eta_min by the ratio of two "
        "consecutive cosine values (an affine step, not a factor, unless eta_min is 0) and, one "
        "step past each minimum, adds a multiple of the initial lr, dropping the other "
        "schedulers' factors",
    ),
    "cosine_annealing_warm_restarts": (
        "cosine_annealing_warm_restarts",
        "torch's CosineAnnealingWarmRestarts computes the lr from the initial lr and eta_min at "
        "every step, an affine value that discards the other schedulers' factors",
    ),
    # one_cycle_lr and one_cycle_momentum share their phases in _one_cycle.
    "_one_cycle": (
        "one_cycle_lr",
        "torch's OneCycleLR sets the lr from its own phases (max_lr, div_factor, ...) at every "
        "step, discarding the other schedulers' factors",
    ),
    # cyclic_lr and cyclic_momentum share their wave in _triangle_wave.
    "_triangle_wave": (
        "cyclic_lr",
        "torch's CyclicLR sets the lr between base_lr and max_lr at every step, discarding the "
        "other schedulers' factors",
    ),
    "_sequence": (
        "sequential_lr or join_schedules",
        "torch's SequentialLR restarts its schedulers from their closed forms at each milestone",
    ),
    "warmup_cosine_decay": (
        "warmup_cosine_decay",
        "it is torch's SequentialLR of LinearLR and CosineAnnealingLR, which restarts the cosine "
        "at its milestone, and the cosine steps affinely towards its end value",
    ),
}


def chained_scheduler(schedules: Sequence[Schedule]) -> Schedule:
    r"""Step several schedules together, each on the learning rate the one before left. Same
    values as ``torch.optim.lr_scheduler.ChainedScheduler`` over the corresponding torch
    schedulers, built on one optimizer in the order of the list.

    Build every schedule with the optimizer's learning rate :math:`\eta_0`. torch's
    ``StepLR``, ``MultiStepLR``, ``ConstantLR``, ``LinearLR``, ``ExponentialLR``,
    ``PolynomialLR`` and ``MultiplicativeLR`` multiply the current lr by a factor at each step,
    so chained they give the product of their schedules' factors :math:`f_i`:

    .. math::
        \eta_k = \eta_0 \prod_i f_i(k)

    ``LambdaLR`` (and every Hugging Face schedule, a ``LambdaLR``) instead *sets* the lr to
    :math:`\eta_0 \lambda(k)` at each step, which is what a chain holding one gets: the
    schedulers before the last such one have no effect, and those after it multiply by their
    step's ratio only, :math:`r_i(k) = f_i(k) / f_i(k - 1)` (:math:`r_i(0) = f_i(0)`; 1 once
    a decay has reached 0), so :math:`\eta_k = \eta_0 \lambda(k) \prod_{i \text{ after}} r_i(k)`.
    That is torch's behaviour, reproduced: for the product of a lambda's factor with others,
    put it all in one ``lr_lambda``.

    The other schedules raise an error that says why: torch's ``CosineAnnealingLR`` steps the
    lr affinely towards ``eta_min`` and, past ``T_max``, adds a multiple of the initial lr;
    ``OneCycleLR``, ``CyclicLR`` and ``CosineAnnealingWarmRestarts`` set it from their own
    parameters; ``SequentialLR`` restarts its schedulers. None of their chains is a product.
    A function whose initial learning rate and factor are unknown (an optax schedule, your own)
    raises too: wrap a factor of your own in :func:`lambda_lr`. optax has no counterpart (its
    ``join_schedules`` is torch's ``SequentialLR``).

    Args:
        schedules: a non-empty sequence of optkit's step_lr, multistep_lr, constant_lr,
            linear_lr, exponential_lr, polynomial_lr, lambda_lr, multiplicative_lr,
            get_scheduler or chained_scheduler schedules, all with the same learning rate.

    Returns:
        The chain, itself a schedule that can be chained again.

    Examples:
        >>> import jax.numpy as jnp
        >>> from optkit import schedules
        >>> warmup = schedules.constant_lr(1.0, factor=0.5, total_iters=2)
        >>> decay = schedules.exponential_lr(1.0, gamma=0.5)
        >>> schedules.chained_scheduler([warmup, decay])(jnp.arange(5))
        Array([0.5   , 0.25  , 0.25  , 0.125 , 0.0625], dtype=float32)
    """
    schedules = _checked(schedules)
    learning_rate = schedules[0].learning_rate
    last_setter = max((i for i, s in enumerate(schedules) if s.sets_lr), default=None)

    if last_setter is None:

        def product(count: jax.Array) -> jax.Array:
            value = schedules[0].factor(count)
            for schedule in schedules[1:]:
                value = value * schedule.factor(count)
            return value

        def ratio(count: jax.Array) -> jax.Array:
            value = schedules[0].step_ratio(count)
            for schedule in schedules[1:]:
                value = value * schedule.step_ratio(count)
            return value

        return FactorSchedule(learning_rate, product, "ChainedScheduler", ratio=ratio)

    setter, later = schedules[last_setter], schedules[last_setter + 1 :]

    def set_then_scale(count: jax.Array) -> jax.Array:
        value = setter.factor(count)
        for schedule in later:
            value = value * schedule.step_ratio(count)
        return value

    return FactorSchedule(learning_rate, set_then_scale, "ChainedScheduler", sets_lr=True)


def _checked(schedules: Sequence[Schedule]) -> tuple[FactorSchedule, ...]:
    """The schedules, if each is a factor schedule and they share one learning rate."""
    if isinstance(schedules, str | bytes) or not isinstance(schedules, Sequence):
        raise TypeError(f"schedules must be a sequence of schedules, got {schedules!r}.")
    if not schedules:
        raise ValueError("schedules must hold at least one schedule, got none.")
    for index, schedule in enumerate(schedules):
        _validation.function(f"schedules[{index}]", schedule)
        if not isinstance(schedule, FactorSchedule):
            raise TypeError(_not_a_factor(index, schedule))
    rates = [_learning_rate(i, s) for i, s in enumerate(schedules)]
    for index, (schedule, rate) in enumerate(zip(schedules, rates, strict=True)):
        if rate != rates[0]:
            raise ValueError(
                f"schedules[{index}] ({schedule.torch_name}) has learning_rate {rate}, but "
                f"schedules[0] ({schedules[0].torch_name}) has {rates[0]}: torch's chained "
                "schedulers share their optimizer's lr, so build every schedule with the same "
                "learning_rate."
            )
    return tuple(schedules)


def _learning_rate(index: int, schedule: FactorSchedule) -> float:
    rate = _validation.concrete_scalar(f"schedules[{index}].learning_rate", schedule.learning_rate)
    if rate is None:
        raise ValueError(
            f"schedules[{index}] has a traced learning_rate: build the schedules outside jit, "
            "so that chained_scheduler can check that they share one learning rate."
        )
    return rate


def _not_a_factor(index: int, schedule: Schedule) -> str:
    """Why ``schedule`` cannot be chained: its factory's reason, or that its factor is unknown."""
    qualified = getattr(schedule, "__qualname__", type(schedule).__qualname__)
    known = _NOT_A_FACTOR.get(qualified.split(".<locals>", 1)[0])
    if known is None:
        return (
            f"schedules[{index}] ({qualified}) is a function whose initial learning rate and "
            f"factor are unknown, so torch's chain of it cannot be reproduced. chained_scheduler "
            f"chains {_CHAINABLE}: their torch schedulers scale the lr by a factor of the step. "
            "Wrap a factor of your own in lambda_lr(learning_rate, factor)."
        )
    factory, reason = known
    return (
        f"schedules[{index}] comes from {factory}, which cannot be chained: {reason}, so torch's "
        f"ChainedScheduler over it is not a product of factors. chained_scheduler chains "
        f"{_CHAINABLE}."
    )
