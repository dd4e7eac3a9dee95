"""The table that drives the gradient-accumulation parity tests, and the problem they train on.

Each case is one optimizer (optkit and torch, same settings) and one ``every_k``: torch runs its
accumulation loop, ``(loss / k).backward()`` on each of k micro-batches then ``opt.step();
scheduler.step(); opt.zero_grad()``, and optkit runs ``accumulate_gradients(inner, k)`` on the
plain gradient of each micro-batch. Both see the same micro-batches of a small linear regression,
whose loss is written once against an array namespace ``xp`` (``torch`` or ``jax.numpy``).

torch is referenced by class name only, so this module imports without torch: the golden-file
tests need only optkit and numpy.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

import optkit
from optkit import schedules
from tests.schedules.cases import TorchScheduler

SEED = 20250613
FEATURES, OUTPUTS, MICRO_BATCH = 4, 3, 6
STEPS = 10
"""Optimizer steps per run: RAdam's rectified branch starts at its 6th step."""
EVERY_K = (1, 3, 4)
DTYPES = ("float32", "float64")
LEAVES = ("w", "b")

Kwargs = Mapping[str, Any]


def _problem() -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, np.ndarray]:
    """float64 initial params, teacher weights, teacher bias and the input stream."""
    rng = np.random.default_rng(SEED)
    w_true = rng.normal(size=(FEATURES, OUTPUTS))
    b_true = rng.normal(size=OUTPUTS)
    # 0.5 to 1.5 away from the teacher, so no gradient entry starts near zero.
    offset = rng.uniform(0.5, 1.5, size=FEATURES * OUTPUTS + OUTPUTS)
    offset *= rng.choice([-1.0, 1.0], size=offset.shape)
    params = {
        "w": w_true + offset[: FEATURES * OUTPUTS].reshape(FEATURES, OUTPUTS),
        "b": b_true + offset[FEATURES * OUTPUTS :],
    }
    inputs = rng.normal(size=(max(EVERY_K) * STEPS, MICRO_BATCH, FEATURES))
    return params, w_true, b_true, inputs


def initial_params(dtype: str) -> dict[str, np.ndarray]:
    params, _, _, _ = _problem()
    return {name: value.astype(dtype) for name, value in params.items()}


def micro_batches(count: int, dtype: str) -> tuple[np.ndarray, np.ndarray]:
    """``count`` micro-batches ``(x, y)``, stacked: y is a noisy linear teacher of x."""
    _, w_true, b_true, inputs = _problem()
    x = inputs[:count]
    noise = np.random.default_rng(SEED + 1).normal(scale=0.1, size=(count, MICRO_BATCH, OUTPUTS))
    return x.astype(dtype), (x @ w_true + b_true + noise).astype(dtype)


def loss(xp: Any, params: Mapping[str, Any], x: Any, y: Any) -> Any:
    """Mean squared error of the linear model ``x @ w + b``, in ``xp`` (torch or jax.numpy)."""
    return xp.mean((x @ params["w"] + params["b"] - y) ** 2)


@dataclasses.dataclass(frozen=True)
class TorchOptimizer:
    """A class in ``torch.optim`` with its keyword arguments (minus the params), optional
    groups (one per leaf name, with overrides) and an optional LR scheduler stepped after each
    ``opt.step()``."""

    name: str
    kwargs: Kwargs
    groups: tuple[tuple[str, Kwargs], ...] = ()
    scheduler: TorchScheduler | None = None


@dataclasses.dataclass(frozen=True)
class AccumulationCase:
    """One optimizer around ``accumulate_gradients(inner, every_k)`` and its torch loop."""

    id: str
    every_k: int
    make_inner: Callable[[], optkit.GradientTransformation]
    torch: TorchOptimizer
    steps: int = STEPS

    def make(self) -> optkit.GradientTransformation:
        return optkit.accumulate_gradients(self.make_inner(), self.every_k)

    def torch_spec(self) -> str:
        """The torch side and the problem as canonical JSON; stored with the goldens so that a
        stale file is caught."""
        spec = dataclasses.asdict(self.torch)
        problem = [SEED, FEATURES, OUTPUTS, MICRO_BATCH]
        return json.dumps(
            {"every_k": self.every_k, "steps": self.steps, "problem": problem, "torch": spec},
            sort_keys=True,
        )


GROUPS = [{"params": "w"}, {"params": "b", "learning_rate": 0.02, "weight_decay": 0.0}]

# id -> (optkit inner factory, torch optimizer).
OPTIMIZERS: dict[str, tuple[Callable[[], optkit.GradientTransformation], TorchOptimizer]] = {
    "sgd_momentum": (
        lambda: optkit.sgd(learning_rate=0.05, momentum=0.9, weight_decay=0.01),
        TorchOptimizer("SGD", {"lr": 0.05, "momentum": 0.9, "weight_decay": 0.01}),
    ),
    "adamw": (
        lambda: optkit.adamw(learning_rate=0.05, weight_decay=0.1),
        TorchOptimizer("AdamW", {"lr": 0.05, "weight_decay": 0.1}),
    ),
    "radam": (
        lambda: optkit.radam(learning_rate=0.05, weight_decay=0.01),
        TorchOptimizer("RAdam", {"lr": 0.05, "weight_decay": 0.01}),
    ),
    # Schedules count optimizer steps: torch steps its scheduler once per opt.step().
    "sgd_step_lr_injected": (
        lambda: optkit.inject_hyperparams(optkit.sgd)(
            learning_rate=schedules.step_lr(0.1, step_size=3, gamma=0.5), momentum=0.9
        ),
        TorchOptimizer(
            "SGD",
            {"lr": 0.1, "momentum": 0.9},
            scheduler=TorchScheduler("StepLR", {"step_size": 3, "gamma": 0.5}),
        ),
    ),
    "adamw_cosine": (
        lambda: optkit.adamw(
            learning_rate=schedules.cosine_annealing_lr(0.05, T_max=STEPS), weight_decay=0.1
        ),
        TorchOptimizer(
            "AdamW",
            {"lr": 0.05, "weight_decay": 0.1},
            scheduler=TorchScheduler("CosineAnnealingLR", {"T_max": STEPS}),
        ),
    ),
    "sgd_param_groups": (
        lambda: optkit.param_groups(
            optkit.sgd, GROUPS, learning_rate=0.05, momentum=0.9, weight_decay=0.01
        ),
        TorchOptimizer(
            "SGD",
            {"lr": 0.05, "momentum": 0.9, "weight_decay": 0.01},
            groups=(("w", {}), ("b", {"lr": 0.02, "weight_decay": 0.0})),
        ),
    ),
}

CASES = [
    AccumulationCase(f"{name}-k{every_k}", every_k, make_inner, torch)
    for name, (make_inner, torch) in OPTIMIZERS.items()
    for every_k in EVERY_K
]
BY_ID = {case.id: case for case in CASES}
