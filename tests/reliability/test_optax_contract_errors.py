"""Reliability rows of the optax contract: each bad input a user mixing optax and optkit can give,
and the error naming the argument or leaf it must raise."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import optkit
from optkit import schedules
from tests.reliability.table import Refused, check_refused, params_of

PARAMS = {"w": jnp.ones((2, 2)), "b": jnp.ones(2)}


def masked_update(mask):
    """Build ``masked(sgd)`` with ``mask`` and run one update: a bad mask fails at ``init``."""
    tx = optkit.masked(optkit.sgd(0.1), mask)
    return tx.update(PARAMS, tx.init(PARAMS), PARAMS)


def decay_update(updates, params):
    tx = optkit.add_decayed_weights(0.1)
    return tx.update(updates, tx.init(params), params)


def traced_mask():
    def step(flag):
        return masked_update({"w": flag, "b": False})

    return jax.jit(step)(jnp.array(True))


ROWS = [
    # State dtypes must be floating: an int or bool buffer truncates every step to nothing.
    *(
        Refused(f"{name}-mu_dtype-{dtype}", build, ValueError, ("mu_dtype", "floating", dtype))
        for name, build_with in [
            ("adam", lambda d: optkit.adam(0.1, mu_dtype=d)),
            ("adamw", lambda d: optkit.adamw(0.1, mu_dtype=d)),
            ("scale_by_adam", lambda d: optkit.scale_by_adam(mu_dtype=d)),
        ]
        for dtype in ("int32", "bool")
        for build in [lambda build_with=build_with, dtype=dtype: build_with(dtype)]
    ),
    Refused(
        "sgd-accumulator_dtype-int8",
        lambda: optkit.sgd(0.1, momentum=0.9, accumulator_dtype=jnp.int8),
        ValueError,
        ("accumulator_dtype", "floating", "int8"),
    ),
    Refused(
        "trace-accumulator_dtype-uint8",
        lambda: optkit.trace(0.9, accumulator_dtype=np.uint8),
        ValueError,
        ("accumulator_dtype", "floating", "uint8"),
    ),
    Refused(
        "adam-mu_dtype-not-a-dtype",
        lambda: optkit.adam(0.1, mu_dtype="half-ish"),
        TypeError,
        ("mu_dtype", "must be a dtype", "half-ish"),
    ),
    # Masks: bools, 0/1, NumPy and JAX bools; anything else names its entry.
    Refused(
        "masked-mask-int-2",
        lambda: masked_update({"w": 2, "b": False}),
        ValueError,
        ("masked", "'w'", "2", "bool (or 0/1)"),
    ),
    Refused(
        "masked-mask-string",
        lambda: masked_update({"w": True, "b": "yes"}),
        TypeError,
        ("masked", "'b'", "str", "expected a bool"),
    ),
    Refused(
        "masked-mask-float",
        lambda: masked_update({"w": 1.0, "b": True}),
        TypeError,
        ("'w'", "float", "expected a bool"),
    ),
    Refused(
        "masked-mask-array",
        lambda: masked_update({"w": jnp.array([True, False]), "b": True}),
        TypeError,
        ("'w'", "shape (2,)", "expected a bool"),
    ),
    Refused(
        "masked-mask-jax-int-3",
        lambda: masked_update({"w": jnp.array(3), "b": True}),
        ValueError,
        ("'w'", "3", "bool (or 0/1)"),
    ),
    Refused("masked-mask-traced", traced_mask, TypeError, ("'w'", "traced value")),
    Refused(
        "add_decayed_weights-mask-int-5",
        lambda: optkit.add_decayed_weights(0.1, mask={"w": 5, "b": 0}).update(
            PARAMS, optkit.EmptyState(), PARAMS
        ),
        ValueError,
        ("add_decayed_weights", "'w'", "5"),
    ),
    Refused(
        "partition-param_labels-unknown",
        lambda: optkit.partition({"a": optkit.sgd(0.1)}, param_labels={"w": "a", "b": "z"}).init(
            PARAMS
        ),
        ValueError,
        ("partition", "b -> 'z'"),
    ),
    # None updates pass through; a None param under a real update cannot be decayed.
    Refused(
        "add_decayed_weights-none-param-with-update",
        lambda: decay_update(PARAMS, {"w": None, "b": jnp.ones(2)}),
        ValueError,
        ("add_decayed_weights", "'w'", "None", "no weight to decay"),
    ),
    Refused(
        "apply_updates-shape-next-to-none",
        lambda: optkit.apply_updates({"w": None, "b": jnp.ones(2)}, {"w": None, "b": jnp.ones(3)}),
        ValueError,
        ("apply_updates", "'b'", "(3,)", "(2,)"),
    ),
    Refused(
        "apply_updates-missing-leaf",
        lambda: optkit.apply_updates(PARAMS, {"w": None}),
        ValueError,
        ("apply_updates", "'b'", "missing from updates"),
    ),
    # Schedule end values: any finite number; NaN and infinities are refused by name.
    *(
        Refused(f"{name}-{bad}", build, ValueError, (argument, "finite", str(bad)))
        for name, argument, build_with in [
            (
                "warmup_cosine_decay-end_value",
                "end_value",
                lambda v: schedules.warmup_cosine_decay(0.0, 1.0, 2, 10, end_value=v),
            ),
            (
                "cosine_annealing_lr-eta_min",
                "eta_min",
                lambda v: schedules.cosine_annealing_lr(0.1, 10, eta_min=v),
            ),
            (
                "cosine_annealing_warm_restarts-eta_min",
                "eta_min",
                lambda v: schedules.cosine_annealing_warm_restarts(0.1, 10, eta_min=v),
            ),
            ("swa_lr-swa_lr", "swa_lr", lambda v: schedules.swa_lr(0.1, swa_lr=v)),
            (
                "polynomial-lr_end",
                "lr_end",
                lambda v: schedules.get_scheduler(
                    "polynomial", 0.1, 0, 10, scheduler_specific_kwargs={"lr_end": v}
                ),
            ),
            (
                "cosine_with_min_lr-min_lr_rate",
                "min_lr_rate",
                lambda v: schedules.get_scheduler(
                    "cosine_with_min_lr", 0.1, 0, 10, scheduler_specific_kwargs={"min_lr_rate": v}
                ),
            ),
        ]
        for bad in (math.nan, -math.inf)
        for build in [lambda build_with=build_with, bad=bad: build_with(bad)]
    ),
]


@pytest.mark.parametrize("row", params_of(ROWS))
def test_refused(row: Refused) -> None:
    check_refused(row)


def test_rows_have_unique_ids() -> None:
    ids = [row.id for row in ROWS]
    assert len(ids) == len(set(ids))
