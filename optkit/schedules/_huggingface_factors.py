r"""The factors of Hugging Face transformers' schedules, one builder per ``get_scheduler`` name.

Each builder takes the concrete learning rate, ``num_warmup_steps`` and ``num_training_steps``
(``None`` where the name does not use it), then the name's options as keywords (exactly the
``scheduler_specific_kwargs`` transformers accepts for it), checks them, and returns the factor
:math:`f` of the count: the lr after :math:`c` steps of transformers' ``LambdaLR`` is
``lr * f(c)``. Each is transformers' formula written operation for operation in ``jax.numpy``
(transformers 5.24, ``transformers/optimization.py``), so float64 values agree to rounding.
"""

from __future__ import annotations

import math
import warnings

import jax
import jax.numpy as jnp

from optkit import _validation
from optkit.schedules._curves import as_count, as_float
from optkit.schedules._factor import Factor

_WARMUP_STABLE_DECAY_SHAPES = ("linear", "cosine", "1-sqrt")


def _divide(numerator: jax.Array, denominator: float) -> jax.Array:
    """``numerator / denominator``, rounded as Python rounds it, under XLA too.

    XLA turns a division by a constant (or a broadcast scalar) into a multiplication by its
    reciprocal, an ulp off at times: enough to move one of transformers' restarts by a step,
    where ``(n p) mod 1`` lands just below 1 instead of on 0. A divisor computed from the
    numerator behind an optimization barrier is not a constant, so XLA divides.
    """
    numerator = as_float(numerator)
    return numerator / jax.lax.optimization_barrier(numerator * 0.0 + denominator)


def _warmup(count: jax.Array, warmup: int) -> jax.Array:
    """transformers' linear warmup factor ``c / max(1, W)``."""
    return _divide(count, max(1, warmup))


def _cosine_wave(progress: jax.Array, num_cycles: float, min_lr_rate: float) -> jax.Array:
    """``max(0, (1 + cos(2 pi num_cycles progress)) / 2 * (1 - r) + r)``, as transformers does."""
    wave = 0.5 * (1.0 + jnp.cos(math.pi * float(num_cycles) * 2.0 * progress))
    return jnp.maximum(0.0, wave * (1 - min_lr_rate) + min_lr_rate)


def linear(learning_rate: float, warmup: int, total: int) -> Factor:
    def factor(count: jax.Array) -> jax.Array:
        count = as_count(count)
        decay = jnp.maximum(0.0, _divide(total - count, max(1, total - warmup)))
        return jnp.where(count < warmup, _warmup(count, warmup), decay)

    return factor


def cosine(learning_rate: float, warmup: int, total: int, *, num_cycles: float = 0.5) -> Factor:
    _validation.non_negative("num_cycles", num_cycles)

    def factor(count: jax.Array) -> jax.Array:
        count = as_count(count)
        progress = _divide(count - warmup, max(1, total - warmup))
        return jnp.where(
            count < warmup, _warmup(count, warmup), _cosine_wave(progress, num_cycles, 0.0)
        )

    return factor


def cosine_with_restarts(
    learning_rate: float, warmup: int, total: int, *, num_cycles: float = 1
) -> Factor:
    _validation.non_negative("num_cycles", num_cycles)

    def factor(count: jax.Array) -> jax.Array:
        count = as_count(count)
        length = max(1, total - warmup)
        progress = _divide(count - warmup, length)
        position = jnp.remainder(float(num_cycles) * progress, 1.0)
        wave = jnp.maximum(0.0, 0.5 * (1.0 + jnp.cos(math.pi * position)))
        # transformers' progress >= 1, decided in integers.
        decay = jnp.where(count - warmup >= length, 0.0, wave)
        return jnp.where(count < warmup, _warmup(count, warmup), decay)

    return factor


def polynomial(
    learning_rate: float, warmup: int, total: int, *, lr_end: float = 1e-7, power: float = 1.0
) -> Factor:
    _validation.finite("lr_end", lr_end)
    _validation.non_negative("power", power)
    lr_end, power = float(lr_end), float(power)
    if not learning_rate > lr_end:
        raise ValueError(f"lr_end ({lr_end}) must be smaller than initial lr ({learning_rate}).")
    if total == warmup:
        raise ValueError(
            f"polynomial needs num_training_steps != num_warmup_steps (both {total}): "
            "transformers divides by their difference at step num_warmup_steps."
        )
    decay_steps = total - warmup

    def factor(count: jax.Array) -> jax.Array:
        count = as_count(count)
        # Clipped to the decay phase so that the branches not taken stay finite.
        done = jnp.minimum(jnp.maximum(count, warmup), total) - warmup
        decay = (learning_rate - lr_end) * (1 - _divide(done, decay_steps)) ** power + lr_end
        after = jnp.where(count > total, lr_end / learning_rate, _divide(decay, learning_rate))
        return jnp.where(count < warmup, _warmup(count, warmup), after)

    return factor


def constant(learning_rate: float, warmup: int | None, total: int | None) -> Factor:
    return lambda count: jnp.ones_like(as_float(count))


def constant_with_warmup(learning_rate: float, warmup: int, total: int | None) -> Factor:
    def factor(count: jax.Array) -> jax.Array:
        count = as_count(count)
        return jnp.where(count < warmup, _warmup(count, warmup), 1.0)

    return factor


def inverse_sqrt(
    learning_rate: float, warmup: int, total: int | None, *, timescale: float | None = None
) -> Factor:
    if timescale is None:
        timescale = warmup or 10_000
    _validation.positive("timescale", timescale)
    shift = timescale - warmup

    def factor(count: jax.Array) -> jax.Array:
        count = as_count(count)
        decay = 1.0 / jnp.sqrt(_divide(as_float(jnp.maximum(count, warmup)) + shift, timescale))
        return jnp.where(count < warmup, _warmup(count, warmup), decay)

    return factor


def _min_lr_rate(learning_rate: float, min_lr: float | None, min_lr_rate: float | None) -> float:
    """transformers' ``min_lr_rate``, given directly or as ``min_lr / learning_rate``."""
    if min_lr is not None and min_lr_rate is not None:
        raise ValueError("Only one of min_lr or min_lr_rate should be set, got both.")
    if min_lr is not None:
        _validation.finite("min_lr", min_lr)
        if learning_rate == 0:
            raise ValueError("min_lr needs a nonzero learning_rate: it sets min_lr / lr.")
        return float(min_lr) / learning_rate
    if min_lr_rate is None:
        raise ValueError(
            "One of min_lr or min_lr_rate should be set through scheduler_specific_kwargs "
            "(the Trainer's lr_scheduler_kwargs)."
        )
    return float(_validation.finite("min_lr_rate", min_lr_rate))


def cosine_with_min_lr(
    learning_rate: float,
    warmup: int,
    total: int,
    *,
    num_cycles: float = 0.5,
    min_lr: float | None = None,
    min_lr_rate: float | None = None,
) -> Factor:
    _validation.non_negative("num_cycles", num_cycles)
    rate = _min_lr_rate(learning_rate, min_lr, min_lr_rate)

    def factor(count: jax.Array) -> jax.Array:
        count = as_count(count)
        progress = _divide(count - warmup, max(1, total - warmup))
        return jnp.where(
            count < warmup, _warmup(count, warmup), _cosine_wave(progress, num_cycles, rate)
        )

    return factor


def cosine_warmup_with_min_lr(
    learning_rate: float,
    warmup: int,
    total: int,
    *,
    num_cycles: float = 0.5,
    min_lr: float | None = None,
    min_lr_rate: float | None = None,
    warmup_lr_rate: float | None = None,
) -> Factor:
    _validation.non_negative("num_cycles", num_cycles)
    rate = _min_lr_rate(learning_rate, min_lr, min_lr_rate)
    if warmup_lr_rate is not None:
        warmup_lr_rate = float(_validation.scalar("warmup_lr_rate", warmup_lr_rate, high=1.0))

    def factor(count: jax.Array) -> jax.Array:
        count = as_count(count)
        # This schedule counts from one: its warmup reaches the peak at step W - 1, its decay
        # starts one step into the cosine.
        if warmup_lr_rate is None:
            warm = _divide(as_float(count) + 1.0, max(1.0, warmup))
        else:
            rise = (1.0 - warmup_lr_rate) * as_float(count)
            warm = warmup_lr_rate + _divide(rise, max(1, warmup - 1))
        progress = _divide(as_float(count - warmup) + 1.0, max(1.0, total - warmup))
        return jnp.where(count < warmup, warm, _cosine_wave(progress, num_cycles, rate))

    return factor


def warmup_stable_decay(
    learning_rate: float,
    warmup: int,
    total: int | None,
    *,
    num_decay_steps: int | None = None,
    num_stable_steps: int | None = None,
    warmup_type: str = "linear",
    decay_type: str = "cosine",
    min_lr_ratio: float = 0.0,
    num_cycles: float = 0.5,
) -> Factor:
    if num_decay_steps is None:
        raise TypeError(
            "warmup_stable_decay requires num_decay_steps in scheduler_specific_kwargs."
        )
    decay = _validation.non_negative_int("num_decay_steps", num_decay_steps)
    if total is None and num_stable_steps is None:
        raise ValueError("Either num_training_steps or num_stable_steps must be specified.")
    if num_stable_steps is None:
        stable = total - warmup - decay
    else:
        if total is not None:
            warnings.warn(
                "Both num_training_steps and num_stable_steps are specified. num_stable_steps "
                "will be used.",
                stacklevel=3,
            )
        stable = _validation.non_negative_int("num_stable_steps", num_stable_steps)
    _validation.one_of("warmup_type", warmup_type, _WARMUP_STABLE_DECAY_SHAPES)
    _validation.one_of("decay_type", decay_type, _WARMUP_STABLE_DECAY_SHAPES)
    ratio = float(_validation.finite("min_lr_ratio", min_lr_ratio))
    _validation.non_negative("num_cycles", num_cycles)

    def rising(progress: jax.Array) -> jax.Array:
        if warmup_type == "linear":
            return progress
        if warmup_type == "cosine":
            return 0.5 * (1.0 - jnp.cos(math.pi * progress))
        return 1.0 - jnp.sqrt(1.0 - progress)

    def falling(progress: jax.Array) -> jax.Array:
        if decay_type == "linear":
            return 1.0 - progress
        if decay_type == "cosine":
            return 0.5 * (1.0 + jnp.cos(math.pi * float(num_cycles) * 2.0 * progress))
        return 1.0 - jnp.sqrt(progress)

    def factor(count: jax.Array) -> jax.Array:
        count = as_count(count)
        # Each phase's progress is clipped to [0, 1] so the branches not taken stay finite.
        warm = rising(jnp.minimum(_warmup(count, warmup), 1.0))
        cool = falling(jnp.maximum(_divide(count - warmup - stable, max(1, decay)), 0.0))
        warm, cool = (jnp.maximum(0.0, f * (1.0 - ratio) + ratio) for f in (warm, cool))
        after_warmup = jnp.where(
            count < warmup + stable, 1.0, jnp.where(count < warmup + stable + decay, cool, ratio)
        )
        return jnp.where(count < warmup, warm, after_warmup)

    return factor
