"""Numeric building blocks shared by the schedules: dtypes and a float32-safe cosine factor.

Every schedule computes in JAX's default float dtype (float32, or float64 under
``jax_enable_x64``), looked up when the schedule runs so the flag may change after import.
Integer step arithmetic (periods, cycles, milestones) stays in integers, where it is exact.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp


def default_float() -> jnp.dtype:
    """JAX's default float dtype right now: float64 under ``jax_enable_x64``, else float32."""
    return jnp.result_type(float)


def as_float(value: Any) -> jax.Array:
    """``value`` as an array of the default float dtype (never forced down to float32)."""
    return jnp.asarray(value, dtype=default_float())


def as_count(count: Any) -> jax.Array:
    """The update count as an array. Integer counts stay integers so step arithmetic is exact."""
    return jnp.asarray(count)


def cosine_weight(remaining: jax.Array) -> jax.Array:
    r"""The cosine-annealing weight :math:`\tfrac12(1 + \cos(\pi (1 - r)))`.

    ``remaining`` is the fraction :math:`r` of the annealing period still ahead: 1 at its start
    (weight 1), 0 at its end (weight 0). Near the end it is evaluated as :math:`\sin^2(\pi r/2)`,
    which keeps full relative precision as the weight approaches 0, where ``1 + cos`` cancels
    catastrophically (in float32 it loses every digit a few steps before the end of a long
    period); elsewhere as :math:`\tfrac12(1 - \cos \pi r)`, exact at the midpoint.
    """
    near_end = jnp.sin(0.5 * jnp.pi * remaining) ** 2
    return jnp.where(remaining < 0.5, near_end, 0.5 - 0.5 * jnp.cos(jnp.pi * remaining))
