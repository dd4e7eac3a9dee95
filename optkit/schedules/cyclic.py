"""Cyclical schedules of torch.optim.lr_scheduler: CyclicLR and OneCycleLR.

Both torch classes also cycle the optimizer's momentum (or Adam's ``beta1``) inversely to the
learning rate unless ``cycle_momentum=False``. ``cyclic_lr`` and ``one_cycle_lr`` give the learning
rate, which momentum cycling never changes; alone they are torch's ``cycle_momentum=False``.
``cyclic_momentum`` and ``one_cycle_momentum`` give the momentum that torch's default
``cycle_momentum=True`` writes into the optimizer before each step: pass both schedules through
``optkit.inject_hyperparams`` (``momentum=`` for SGD and RMSprop, ``b1=`` for the Adam family).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from optkit import _validation
from optkit._base import Scalar, Schedule
from optkit.schedules._curves import as_count, as_float, cosine_weight


def cyclic_lr(
    base_lr: Scalar,
    max_lr: Scalar,
    step_size_up: int = 2000,
    step_size_down: int | None = None,
    mode: str = "triangular",
    gamma: Scalar = 1.0,
) -> Schedule:
    r"""Triangular cycles between ``base_lr`` and ``max_lr`` (CLR). Same learning rates as
    ``torch.optim.lr_scheduler.CyclicLR`` (see the module note on momentum).

    With :math:`U` = ``step_size_up``, :math:`D` = ``step_size_down``, the cycle position
    :math:`r = k \bmod (U + D)` and the cycle number :math:`c = \lfloor k / (U + D) \rfloor + 1`:

    .. math::
        h_k = \begin{cases} r / U & r \le U \\ (U + D - r) / D & r > U \end{cases}, \qquad
        \eta_k = \eta_{base} + (\eta_{max} - \eta_{base}) \, h_k \, s_k

    where the amplitude scale :math:`s_k` is 1 (``"triangular"``), :math:`2^{1-c}`
    (``"triangular2"``: halved every cycle) or :math:`\gamma^k` (``"exp_range"``).

    Args:
        base_lr: the lower end of the cycle (>= 0); torch sets the optimizer's lr to it.
        max_lr: the upper end of the cycle (>= 0).
        step_size_up: :math:`U`, updates in the increasing half, a positive integer
            (default 2000).
        step_size_down: :math:`D`, updates in the decreasing half, a positive integer; ``None``
            (the default) means :math:`D = U`.
        mode: ``"triangular"``, ``"triangular2"`` or ``"exp_range"``.
        gamma: :math:`\gamma > 0`, used by ``"exp_range"`` only (default 1).

    Examples:
        >>> import jax.numpy as jnp
        >>> from optkit import schedules
        >>> schedule = schedules.cyclic_lr(0.0, 1.0, step_size_up=2, mode="triangular2")
        >>> schedule(jnp.arange(9))
        Array([0.  , 0.5 , 1.  , 0.5 , 0.  , 0.25, 0.5 , 0.25, 0.  ], dtype=float32)
    """
    _validation.non_negative("base_lr", base_lr)
    _validation.non_negative("max_lr", max_lr)
    return _triangle_wave(base_lr, max_lr, step_size_up, step_size_down, mode, gamma)


def _triangle_wave(
    start: Scalar, peak: Scalar, step_size_up: int, step_size_down: int | None, mode: str, gamma
) -> Schedule:
    """CyclicLR's wave from ``start`` to ``peak`` and back: its lr goes from ``base_lr`` up to
    ``max_lr``, its momentum from ``max_momentum`` down to ``base_momentum`` (torch's
    ``max_momentum - (max_momentum - base_momentum) * ...`` is this with negated height)."""
    up = _validation.positive_int("step_size_up", step_size_up)
    down = (
        up if step_size_down is None else _validation.positive_int("step_size_down", step_size_down)
    )
    mode = _validation.one_of("mode", mode, ("triangular", "triangular2", "exp_range"))
    _validation.positive("gamma", gamma)
    period = up + down

    def amplitude_scale(count: jax.Array, cycle: jax.Array) -> jax.Array:
        if mode == "triangular":
            return as_float(1.0)
        if mode == "triangular2":
            return as_float(0.5) ** as_float(cycle - 1)
        return as_float(gamma) ** as_float(count)

    def schedule(count: jax.Array) -> jax.Array:
        count = as_count(count)
        position, cycle = jnp.remainder(count, period), count // period + 1
        height = jnp.where(
            position <= up, as_float(position) / up, as_float(period - position) / down
        )
        low = as_float(start)
        return low + (as_float(peak) - low) * height * amplitude_scale(count, cycle)

    return schedule


def _phases(
    total_steps: int, pct_start: float, three_phase: bool, initial: float, peak: float, final: float
) -> list[tuple[float, float, float, float]]:
    """torch's phases as (start step, end step, start lr, end lr); each begins where the last ends.

    The end steps are fractional, computed in double exactly as torch does.
    """
    warmup_end = float(pct_start * total_steps) - 1
    if three_phase:
        mirror_end = float(2 * pct_start * total_steps) - 2
        ends = [
            (warmup_end, initial, peak),
            (mirror_end, peak, initial),
            (total_steps - 1, initial, final),
        ]
    else:
        ends = [(warmup_end, initial, peak), (total_steps - 1, peak, final)]
    starts = [0.0] + [end for end, _, _ in ends[:-1]]
    return [(start, end, lr0, lr1) for start, (end, lr0, lr1) in zip(starts, ends, strict=True)]


def one_cycle_lr(
    max_lr: Scalar,
    total_steps: int,
    pct_start: Scalar = 0.3,
    anneal_strategy: str = "cos",
    div_factor: Scalar = 25.0,
    final_div_factor: Scalar = 1e4,
    three_phase: bool = False,
) -> Schedule:
    r"""The 1cycle policy: warm up to ``max_lr``, then anneal far below the start. Same learning
    rates as ``torch.optim.lr_scheduler.OneCycleLR`` with ``total_steps`` (see the module note on
    momentum).

    The schedule runs through phases :math:`[a_j, b_j]` with :math:`b_0 = p N - 1` (:math:`p` =
    ``pct_start``, :math:`N` = ``total_steps``) and the last ending at :math:`N - 1`; within a phase
    going from :math:`\eta_{a}` to :math:`\eta_{b}`, with :math:`t = (k - a_j) / (b_j - a_j)`:

    .. math::
        \eta_k = \eta_b + \tfrac12 (\eta_a - \eta_b)(1 + \cos \pi t) \quad \text{(cos)}, \qquad
        \eta_k = \eta_a + (\eta_b - \eta_a)\, t \quad \text{(linear)}

    Two phases: :math:`\eta_{max}/d \to \eta_{max} \to \eta_{max}/(d f)` (:math:`d` =
    ``div_factor``, :math:`f` = ``final_div_factor``). Three phases: up to :math:`\eta_{max}`, back
    down to :math:`\eta_{max}/d` by :math:`2 p N - 2`, then to :math:`\eta_{max}/(d f)`.

    torch raises once stepped past ``total_steps``; here the count is clamped to
    ``total_steps - 1``, so the schedule holds its final value.

    Args:
        max_lr: the peak learning rate (>= 0).
        total_steps: :math:`N`, the number of updates in the cycle, a positive integer.
        pct_start: :math:`p \in [0, 1]`, the fraction of the cycle spent warming up (default
            0.3). ``p * N == 1`` is rejected: torch divides by zero there.
        anneal_strategy: ``"cos"`` (default) or ``"linear"``.
        div_factor: :math:`d > 0`; the schedule starts at :math:`\eta_{max}/d` (default 25).
        final_div_factor: :math:`f > 0`; it ends at :math:`\eta_{max}/(d f)` (default 1e4).
        three_phase: use torch's three-phase variant (default ``False``).

    Examples:
        >>> import jax.numpy as jnp
        >>> from optkit import schedules
        >>> schedule = schedules.one_cycle_lr(1.0, total_steps=10, pct_start=0.2,
        ...     anneal_strategy="linear", div_factor=4.0, final_div_factor=2.0)
        >>> schedule(jnp.arange(11))
        Array([0.25    , 1.      , 0.890625, 0.78125 , 0.671875, 0.5625  ,
               0.453125, 0.34375 , 0.234375, 0.125   , 0.125   ], dtype=float32)
    """
    _validation.non_negative("max_lr", max_lr)
    _validation.positive("div_factor", div_factor)
    _validation.positive("final_div_factor", final_div_factor)
    initial = max_lr / div_factor
    return _one_cycle(
        total_steps,
        pct_start,
        anneal_strategy,
        three_phase,
        initial,
        max_lr,
        initial / final_div_factor,
    )


def _one_cycle(
    total_steps: int,
    pct_start: Scalar,
    anneal_strategy: str,
    three_phase: bool,
    initial: Scalar,
    peak: Scalar,
    final: Scalar,
) -> Schedule:
    """OneCycleLR's phases through ``initial -> peak (-> initial) -> final``: its lr's
    ``initial_lr -> max_lr -> min_lr``, its momentum's ``max_momentum -> base_momentum ->
    max_momentum``."""
    total_steps = _validation.positive_int("total_steps", total_steps)
    _validation.scalar("pct_start", pct_start, low=0.0, high=1.0)
    anneal_strategy = _validation.one_of("anneal_strategy", anneal_strategy, ("cos", "linear"))
    three_phase = _validation.boolean("three_phase", three_phase)
    if float(pct_start * total_steps) - 1 == 0:
        raise ValueError(
            f"pct_start * total_steps must not equal 1 (got pct_start={pct_start}, "
            f"total_steps={total_steps}): the warmup phase would have zero length, where torch's "
            "OneCycleLR divides by zero."
        )
    phases = _phases(total_steps, pct_start, three_phase, initial, peak, final)

    def anneal(count: jax.Array, start: float, end: float, lr0: float, lr1: float) -> jax.Array:
        # Written from the phase's end (1 - t), so that a tiny final lr keeps its digits in
        # float32 instead of emerging from the cancellation of two large terms.
        remaining = (end - as_float(count)) / (end - start)
        weight = cosine_weight(remaining) if anneal_strategy == "cos" else remaining
        lr0, lr1 = as_float(lr0), as_float(lr1)
        return lr1 + (lr0 - lr1) * weight

    def schedule(count: jax.Array) -> jax.Array:
        count = jnp.minimum(as_count(count), total_steps - 1)
        # torch uses the first phase whose end step is >= the count, else the last phase;
        # selecting from the last phase backwards lets earlier phases take precedence.
        value = anneal(count, *phases[-1])
        for start, end, lr0, lr1 in reversed(phases[:-1]):
            value = jnp.where(count <= math.floor(end), anneal(count, start, end, lr0, lr1), value)
        return value

    return schedule


def cyclic_momentum(
    step_size_up: int = 2000,
    step_size_down: int | None = None,
    mode: str = "triangular",
    gamma: Scalar = 1.0,
    base_momentum: Scalar = 0.8,
    max_momentum: Scalar = 0.9,
) -> Schedule:
    r"""The momentum that ``torch.optim.lr_scheduler.CyclicLR`` cycles inversely to the learning
    rate (its default ``cycle_momentum=True``): down from ``max_momentum`` while
    :func:`cyclic_lr` rises, back up while it falls.

    With the cycle height :math:`h_k` and amplitude scale :math:`s_k` of :func:`cyclic_lr` (same
    ``step_size_up``, ``step_size_down``, ``mode`` and ``gamma``):

    .. math::
        \mu_k = \mu_{max} - (\mu_{max} - \mu_{base}) \, h_k \, s_k

    so ``"triangular2"`` halves the momentum's swing every cycle and ``"exp_range"`` shrinks it
    by :math:`\gamma^k`, as in torch. Pass it through ``optkit.inject_hyperparams`` as ``momentum=``
    (SGD, RMSprop) or ``b1=`` (Adam family; torch's ``betas[0]``), next to :func:`cyclic_lr` with
    the same cycle arguments. torch overwrites the optimizer's momentum when the scheduler is
    built, so the momentum given to torch's optimizer plays no part (and with
    ``inject_hyperparams`` the momentum buffer exists whatever the schedule's values). optax has
    no cyclical schedules.

    Same as torch's::

        opt = torch.optim.SGD(params, lr=0.1, momentum=0.9)
        sched = torch.optim.lr_scheduler.CyclicLR(opt, base_lr=0.01, max_lr=0.1, step_size_up=20)

    is ``inject_hyperparams(optkit.sgd)(learning_rate=cyclic_lr(0.01, 0.1, step_size_up=20),
    momentum=cyclic_momentum(step_size_up=20))``.

    Args:
        step_size_up: updates in the increasing half of the lr's cycle (the momentum's
            decreasing half), a positive integer (default 2000).
        step_size_down: updates in the other half; ``None`` (the default) means
            ``step_size_up``.
        mode: ``"triangular"`` (default), ``"triangular2"`` or ``"exp_range"``.
        gamma: :math:`\gamma > 0`, used by ``"exp_range"`` only (default 1).
        base_momentum: :math:`\mu_{base}` in ``[0, 1]``, the momentum at the lr's peak
            (default 0.8).
        max_momentum: :math:`\mu_{max}` in ``[0, 1]``, the momentum at the start of each cycle
            (default 0.9).

    Examples:
        >>> import jax.numpy as jnp, optkit
        >>> from optkit import schedules
        >>> momentum = schedules.cyclic_momentum(step_size_up=2, base_momentum=0.5,
        ...     max_momentum=0.9)
        >>> momentum(jnp.arange(5))
        Array([0.9, 0.7, 0.5, 0.7, 0.9], dtype=float32)
        >>> tx = optkit.inject_hyperparams(optkit.sgd)(
        ...     learning_rate=schedules.cyclic_lr(0.01, 0.1, step_size_up=2),
        ...     momentum=momentum,
        ... )

    References:
        Smith, `Cyclical Learning Rates for Training Neural Networks
        <https://arxiv.org/abs/1506.01186>`_, 2017.
    """
    _validation.scalar("base_momentum", base_momentum, low=0.0, high=1.0)
    _validation.scalar("max_momentum", max_momentum, low=0.0, high=1.0)
    return _triangle_wave(max_momentum, base_momentum, step_size_up, step_size_down, mode, gamma)


def one_cycle_momentum(
    total_steps: int,
    pct_start: Scalar = 0.3,
    anneal_strategy: str = "cos",
    base_momentum: Scalar = 0.85,
    max_momentum: Scalar = 0.95,
    three_phase: bool = False,
) -> Schedule:
    r"""The momentum that ``torch.optim.lr_scheduler.OneCycleLR`` cycles inversely to the learning
    rate (its default ``cycle_momentum=True``): down from ``max_momentum`` to ``base_momentum``
    while :func:`one_cycle_lr` warms up, back up while it anneals.

    On the phases of :func:`one_cycle_lr` (same ``total_steps``, ``pct_start``,
    ``anneal_strategy`` and ``three_phase``), annealed the same way (cosine or linear):

    - two phases: :math:`\mu_{max} \to \mu_{base}` by step :math:`pN - 1`, then
      :math:`\mu_{base} \to \mu_{max}` by :math:`N - 1`;
    - three phases: :math:`\mu_{max} \to \mu_{base}`, back to :math:`\mu_{max}` by
      :math:`2pN - 2`, then :math:`\mu_{max}` to the end.

    As :func:`one_cycle_lr`, the value holds from step :math:`N - 1` on. Pass it through
    ``optkit.inject_hyperparams`` as ``momentum=`` (SGD, RMSprop) or ``b1=`` (Adam family;
    torch's ``betas[0]``). torch overwrites the optimizer's momentum with ``max_momentum`` when
    the scheduler is built, so the momentum given to torch's optimizer plays no part (and with
    ``inject_hyperparams`` the momentum buffer exists whatever the schedule's values). optax's
    ``cosine_onecycle_schedule`` is a learning rate only.

    Same as torch's::

        opt = torch.optim.AdamW(params, lr=1e-3)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1e-3, total_steps=1000)

    is ``inject_hyperparams(optkit.adamw)(learning_rate=one_cycle_lr(1e-3, total_steps=1000),
    b1=one_cycle_momentum(total_steps=1000))`` (the example below).

    Args:
        total_steps: :math:`N`, the number of updates in the cycle, a positive integer.
        pct_start: :math:`p \in [0, 1]`, the fraction of the cycle spent warming up the lr
            (default 0.3); ``p * N == 1`` is rejected, as in :func:`one_cycle_lr`.
        anneal_strategy: ``"cos"`` (default) or ``"linear"``.
        base_momentum: :math:`\mu_{base}` in ``[0, 1]``, the momentum at the lr's peak
            (default 0.85).
        max_momentum: :math:`\mu_{max}` in ``[0, 1]``, the momentum at the start (default 0.95).
        three_phase: torch's three-phase variant (default ``False``).

    Examples:
        >>> import jax.numpy as jnp, optkit
        >>> from optkit import schedules
        >>> momentum = schedules.one_cycle_momentum(5, pct_start=0.6, anneal_strategy="linear",
        ...     base_momentum=0.5, max_momentum=0.9)
        >>> momentum(jnp.arange(5))
        Array([0.9, 0.7, 0.5, 0.7, 0.9], dtype=float32)
        >>> tx = optkit.inject_hyperparams(optkit.adamw)(
        ...     learning_rate=schedules.one_cycle_lr(1e-3, total_steps=1000),
        ...     b1=schedules.one_cycle_momentum(total_steps=1000),
        ... )

    References:
        Smith, `A disciplined approach to neural network hyper-parameters: Part 1
        <https://arxiv.org/abs/1803.09820>`_, 2018.
    """
    _validation.scalar("base_momentum", base_momentum, low=0.0, high=1.0)
    _validation.scalar("max_momentum", max_momentum, low=0.0, high=1.0)
    return _one_cycle(
        total_steps,
        pct_start,
        anneal_strategy,
        three_phase,
        max_momentum,
        base_momentum,
        max_momentum,
    )
