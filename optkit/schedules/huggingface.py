r"""Hugging Face transformers' learning-rate schedules, by name: ``transformers.get_scheduler``.

transformers builds each of its schedules as torch's ``LambdaLR`` over a factor :math:`f` of the
step, so the lr after :math:`c` calls of ``scheduler.step()`` is ``lr * f(c)``. Here each factor
is written in ``jax.numpy`` with transformers' formulas, operation for operation (transformers
computes in Python floats, i.e. float64), so under ``jax_enable_x64`` the values agree with
transformers' to the last digits, past ``num_training_steps`` too (the factors are in
``_huggingface_factors``). transformers is not imported.

The Trainer steps its scheduler once per optimizer update, so a Trainer run's lr at update
:math:`c` is this schedule at count :math:`c`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

from optkit import _validation
from optkit._base import Scalar, Schedule
from optkit.schedules import _huggingface_factors as factors
from optkit.schedules._factor import Factor, FactorSchedule

_Builder = Callable[..., Factor]
# name -> (builder, needs num_warmup_steps, needs num_training_steps, reads the specific kwargs),
# as transformers' get_scheduler dispatches them.
_SCHEDULES: dict[str, tuple[_Builder, bool, bool, bool]] = {
    "linear": (factors.linear, True, True, True),
    "cosine": (factors.cosine, True, True, True),
    "cosine_with_restarts": (factors.cosine_with_restarts, True, True, True),
    "polynomial": (factors.polynomial, True, True, True),
    "constant": (factors.constant, False, False, False),
    "constant_with_warmup": (factors.constant_with_warmup, True, False, False),
    "inverse_sqrt": (factors.inverse_sqrt, True, False, True),
    "cosine_with_min_lr": (factors.cosine_with_min_lr, True, True, True),
    "cosine_warmup_with_min_lr": (factors.cosine_warmup_with_min_lr, True, True, True),
    "warmup_stable_decay": (factors.warmup_stable_decay, True, False, True),
}
_NOT_SCHEDULES = {
    "reduce_lr_on_plateau": (
        "it lowers the lr when a monitored metric stops improving, which no function of the "
        "count can do: use the transform optkit.reduce_lr_on_plateau(...) chained after the "
        "optimizer (torch's ReduceLROnPlateau, which transformers builds with "
        "scheduler_specific_kwargs as its arguments), fed the metric through update(..., value=)"
    ),
    "greedy": (
        "transformers' GreedyLR raises and lowers the lr with a monitored metric; optkit has no "
        "counterpart (optkit.reduce_lr_on_plateau only lowers it)"
    ),
}


def get_scheduler(
    name: str,
    learning_rate: Scalar,
    num_warmup_steps: int | None = None,
    num_training_steps: int | None = None,
    scheduler_specific_kwargs: Mapping[str, Any] | None = None,
) -> Schedule:
    r"""A Hugging Face schedule by name. Same values as ``transformers.get_scheduler(name,
    optimizer, ...)`` (the Trainer's ``lr_scheduler_type``), transformers 5.24.

    The value at count :math:`c` is the optimizer's lr after :math:`c` calls of
    ``scheduler.step()``: :math:`\eta_c = \eta_0 f(c)`, with :math:`W` = ``num_warmup_steps``,
    :math:`T` = ``num_training_steps``, the linear warmup :math:`c / \max(1, W)` for
    :math:`c < W` and, from :math:`c = W` on, the progress :math:`p = (c - W) / \max(1, T - W)`:

    - ``"linear"``: :math:`f = \max(0, (T - c) / \max(1, T - W))`, 0 from :math:`T` on.
    - ``"cosine"``: :math:`f = \tfrac12 (1 + \cos(2 \pi n p))` with :math:`n` = ``num_cycles``
      (0.5): half a cosine down to 0 at :math:`T`, then back up, as in transformers.
    - ``"cosine_with_restarts"``: :math:`f = \tfrac12 (1 + \cos(\pi ((n p) \bmod 1)))` for
      :math:`p < 1`, then 0; ``num_cycles`` :math:`n` (1) hard restarts.
    - ``"polynomial"``: :math:`f = ((\eta_0 - e)(1 - p)^q + e) / \eta_0` up to :math:`T`, then
      :math:`e / \eta_0`; ``lr_end`` :math:`e` (1e-7, below :math:`\eta_0`), ``power``
      :math:`q` (1).
    - ``"constant"``: :math:`f = 1`; like transformers, it ignores ``num_warmup_steps``,
      ``num_training_steps`` and ``scheduler_specific_kwargs``.
    - ``"constant_with_warmup"``: the warmup, then 1; it ignores ``num_training_steps`` and
      ``scheduler_specific_kwargs``.
    - ``"inverse_sqrt"``: :math:`f = 1 / \sqrt{(c + \tau - W) / \tau}` with ``timescale``
      :math:`\tau` (default :math:`W`, or 10000 when :math:`W = 0`); ``num_training_steps``
      is ignored.
    - ``"cosine_with_min_lr"``: ``"cosine"`` rescaled to end at the rate :math:`r`:
      :math:`f = \max(0, \tfrac12 (1 + \cos(2 \pi n p)) (1 - r) + r)`; ``min_lr_rate``
      :math:`r`, or ``min_lr`` :math:`= r \eta_0` (one of them), ``num_cycles`` (0.5).
    - ``"cosine_warmup_with_min_lr"``: the same, counted from one: warmup
      :math:`(c + 1) / \max(1, W)`, or :math:`w + (1 - w) c / \max(1, W - 1)` with
      ``warmup_lr_rate`` :math:`w`; then :math:`p = (c - W + 1) / \max(1, T - W)`.
    - ``"warmup_stable_decay"``: warmup over :math:`W` steps from ``min_lr_ratio`` :math:`m`
      (0) up to 1, hold 1 for ``num_stable_steps`` :math:`S` (default :math:`T - W - D`),
      decay back to :math:`m` over ``num_decay_steps`` :math:`D` (required), then hold
      :math:`m`; ``warmup_type`` and ``decay_type`` are ``"linear"``, ``"cosine"`` or
      ``"1-sqrt"`` (defaults ``"linear"``, ``"cosine"``), ``num_cycles`` (0.5) shapes the
      cosine decay. :math:`T` may be ``None`` when :math:`S` is given; given both, :math:`S`
      is used, with transformers' warning.

    Values have JAX's default float dtype. In float64 they equal transformers' to rounding; in
    float32, near the zeros of the cosines, where transformers' ``1 + cos`` cancels, they are
    accurate to about 1e-6 of the peak learning rate (absolute).

    optax's ``warmup_cosine_decay_schedule`` and ``linear_schedule`` are close to ``"cosine"``
    and ``"linear"`` but hold their end value past the decay, where transformers' cosine rises
    again, and start their warmup from ``init_value`` rather than from 0.

    transformers' ``"reduce_lr_on_plateau"`` and ``"greedy"`` follow a monitored metric, not
    the count: they raise an error naming optkit's counterpart (``optkit.reduce_lr_on_plateau``)
    where there is one. ``last_epoch`` (resuming a torch scheduler) is refused: an optkit
    schedule resumes with the count in the optimizer state.

    Args:
        name: one of the names above (a ``transformers.SchedulerType`` works too).
        learning_rate: the optimizer's learning rate :math:`\eta_0 \ge 0` (the Trainer's
            ``learning_rate``).
        num_warmup_steps: :math:`W`, a non-negative integer; every name but ``"constant"``
            requires it. The Trainer's ``warmup_steps`` below 1 is a ratio: it passes
            ``math.ceil(warmup_steps * num_training_steps)``.
        num_training_steps: :math:`T`, a non-negative integer; required by ``"linear"``, the
            cosines and ``"polynomial"``.
        scheduler_specific_kwargs: the options of each name above (the Trainer's
            ``lr_scheduler_kwargs``).

    Returns:
        The schedule: a function of the count, which ``chained_scheduler`` can chain (as
        torch's ChainedScheduler chains transformers' LambdaLR).

    Examples:
        >>> import jax.numpy as jnp
        >>> from optkit import schedules
        >>> schedule = schedules.get_scheduler("linear", 1.0, num_warmup_steps=2,
        ...                                    num_training_steps=6)
        >>> schedule(jnp.arange(8))
        Array([0.  , 0.5 , 1.  , 0.75, 0.5 , 0.25, 0.  , 0.  ], dtype=float32)
    """
    name = _schedule_name(name)
    _validation.non_negative("learning_rate", learning_rate)
    builder, needs_warmup, needs_training_steps, reads_kwargs = _SCHEDULES[name]
    if needs_warmup and num_warmup_steps is None:
        raise ValueError(f"{name} requires `num_warmup_steps`, please provide that argument.")
    if needs_training_steps and num_training_steps is None:
        raise ValueError(f"{name} requires `num_training_steps`, please provide that argument.")
    warmup = _optional_count("num_warmup_steps", num_warmup_steps)
    total = _optional_count("num_training_steps", num_training_steps)
    options = _options(name, builder, scheduler_specific_kwargs) if reads_kwargs else {}
    rate = _validation.concrete_scalar("learning_rate", learning_rate)
    if rate is None:
        raise ValueError("learning_rate must be a concrete number: build the schedule outside jit.")
    factor = builder(rate, warmup, total, **options)
    # Every transformers schedule is a LambdaLR: it sets the lr from the initial lr.
    return FactorSchedule(learning_rate, factor, f"transformers' {name!r}", sets_lr=True)


def _schedule_name(name: Any) -> str:
    """The name as a plain string; transformers' other names raise with optkit's counterpart."""
    name = getattr(name, "value", name)  # transformers.SchedulerType, a str enum
    if not isinstance(name, str):
        raise TypeError(f"name must be a string, got {type(name).__name__} {name!r}.")
    if name in _NOT_SCHEDULES:
        raise ValueError(f"{name!r} is not a schedule of the update count: {_NOT_SCHEDULES[name]}.")
    if name not in _SCHEDULES:
        raise ValueError(
            f"{name!r} is not a valid SchedulerType, please select one of {list(_SCHEDULES)} "
            f"(or, for a monitored metric, {list(_NOT_SCHEDULES)}, which are not schedules)."
        )
    return name


def _optional_count(name: str, value: int | None) -> int | None:
    return None if value is None else _validation.non_negative_int(name, value)


def _options(name: str, builder: _Builder, options: Mapping[str, Any] | None) -> dict[str, Any]:
    """The scheduler-specific options, each a keyword the builder for ``name`` accepts."""
    if options is None:
        return {}
    if not isinstance(options, Mapping):
        raise TypeError(
            f"scheduler_specific_kwargs must be a dict, got {type(options).__name__} {options!r}."
        )
    accepted = [
        parameter.name
        for parameter in inspect.signature(builder).parameters.values()
        if parameter.kind is inspect.Parameter.KEYWORD_ONLY
    ]
    for key in options:
        if key == "last_epoch":
            raise ValueError(
                "scheduler_specific_kwargs['last_epoch'] resumes a torch scheduler; an optkit "
                "schedule is a function of the optimizer's update count, which resumes with the "
                "optimizer state."
            )
        if key not in accepted:
            takes = ", ".join(accepted) if accepted else "no options"
            raise TypeError(
                f"{name} got an unexpected keyword argument {key!r} in scheduler_specific_kwargs "
                f"(it takes {takes}; num_warmup_steps and num_training_steps are arguments of "
                "get_scheduler)."
            )
    return dict(options)
