"""optkit and optax optimizers configured to do the same math, and the bytes each step must move.

Each pair is checked to agree numerically by ``tests/benchmarks/test_benchmarks_smoke.py``, so a
speed difference is a difference in the generated program, not in the algorithm.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import optax

import optkit

LEARNING_RATE = 1e-3


@dataclasses.dataclass(frozen=True)
class OptimizerPair:
    """One algorithm in both libraries.

    Attributes:
        name: the optimizer's label in the results.
        optkit: builds the optkit transformation.
        optax: builds the optax transformation with the same math.
        bytes_per_param: float32 bytes one step must read and write per parameter (see
            ``traffic``); the numerator of the effective bandwidth.
        traffic: which arrays that count covers.
        note: how the two configurations were matched.
    """

    name: str
    optkit: Callable[[], Any]
    optax: Callable[[], Any]
    bytes_per_param: int
    traffic: str
    note: str

    def factory(self, library: str) -> Callable[[], Any]:
        return {
            "optkit": self.optkit,
            "optkit.flatten": lambda: optkit.flatten(self.optkit()),
            "optax": self.optax,
        }[library]


# optkit's two paths: per leaf (the default) and the opt-in flat path; each is compared to optax.
OPTKIT_PATHS = ("optkit", "optkit.flatten")
LIBRARIES = (*OPTKIT_PATHS, "optax")

# apply_updates comes from the same library as the optimizer, as a user of either would write it.
APPLY_UPDATES = {
    "optkit": optkit.apply_updates,
    "optkit.flatten": optkit.apply_updates,
    "optax": optax.apply_updates,
}

PAIRS: dict[str, OptimizerPair] = {
    pair.name: pair
    for pair in (
        OptimizerPair(
            name="adamw",
            optkit=lambda: optkit.adamw(LEARNING_RATE, weight_decay=1e-2),
            optax=lambda: optax.adamw(LEARNING_RATE, weight_decay=1e-2),
            bytes_per_param=28,
            traffic="read p, g, m, v; write p, m, v",
            note="weight_decay=1e-2 given to both (the defaults differ: torch 1e-2, optax 1e-4)",
        ),
        OptimizerPair(
            name="adam",
            optkit=lambda: optkit.adam(LEARNING_RATE),
            optax=lambda: optax.adam(LEARNING_RATE),
            bytes_per_param=28,
            traffic="read p, g, m, v; write p, m, v",
            note="defaults agree: b1=0.9, b2=0.999, eps=1e-8 outside the square root",
        ),
        OptimizerPair(
            name="sgd",
            optkit=lambda: optkit.sgd(LEARNING_RATE, momentum=0.9),
            optax=lambda: optax.sgd(LEARNING_RATE, momentum=0.9),
            bytes_per_param=20,
            traffic="read p, g, b; write p, b",
            note="momentum 0.9, no dampening or Nesterov: optax's trace starting at 0 gives "
            "torch's first buffer b = g",
        ),
        OptimizerPair(
            name="rmsprop",
            optkit=lambda: optkit.rmsprop(LEARNING_RATE, alpha=0.99, eps=1e-8),
            optax=lambda: optax.rmsprop(LEARNING_RATE, decay=0.99, eps=1e-8, eps_in_sqrt=False),
            bytes_per_param=20,
            traffic="read p, g, v; write p, v",
            note="optax.rmsprop(decay=0.99, eps_in_sqrt=False) without momentum is torch's "
            "RMSprop(alpha=0.99) exactly; with momentum optax applies it after the learning rate "
            "(different math), so momentum is left out",
        ),
    )
}
