"""An optimizer driven by a schedule follows torch's optimizer + scheduler step for step.

float64, relative 1e-10 over 60 steps of a small non-convex problem: this checks that the count
a schedule sees lines up with torch's ``optimizer.step(); scheduler.step()`` order (an
off-by-one would show at the first decay), and that the scheduled lr reaches every place torch
uses it (AdamW's decoupled decay, Adagrad's lr_decay).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import optkit
from optkit import schedules
from tests.schedules import oracle
from tests.schedules.cases import Kwargs, TorchScheduler

STEPS = 60
TARGET = np.array([1.0, -2.0, 0.5])
INIT = {"w": np.array([0.2, 0.4, -1.0]), "b": np.array(1.5)}


def jax_loss(params: dict[str, jax.Array]) -> jax.Array:
    """A wavy bowl in ``w``, coupled to a wavy bowl in ``b``: non-convex, smooth, bounded below."""
    w, b = params["w"], params["b"]
    bowl = jnp.sum((w - TARGET) ** 2 * (1.0 + 0.3 * jnp.sin(2.0 * w)))
    return bowl + 0.2 * b * jnp.sum(jnp.tanh(w)) + (b - 0.5) ** 2 * (1.0 + 0.1 * jnp.cos(3.0 * b))


def torch_loss(params: dict) -> object:
    """The same loss in torch, term for term."""
    import torch

    w, b = params["w"], params["b"]
    bowl = torch.sum((w - torch.as_tensor(TARGET)) ** 2 * (1.0 + 0.3 * torch.sin(2.0 * w)))
    return (
        bowl
        + 0.2 * b * torch.sum(torch.tanh(w))
        + (b - 0.5) ** 2 * (1.0 + 0.1 * torch.cos(3.0 * b))
    )


@dataclasses.dataclass(frozen=True)
class Row:
    """An optkit optimizer built on a schedule, and the torch optimizer + scheduler it mirrors."""

    id: str
    make_optkit: Callable[[], optkit.GradientTransformation]
    torch_optimizer: str
    torch_kwargs: Kwargs
    torch_scheduler: TorchScheduler


ROWS = [
    Row(
        "sgd_momentum-step_lr",
        lambda: optkit.sgd(schedules.step_lr(0.05, step_size=10, gamma=0.5), momentum=0.9),
        "SGD",
        {"lr": 0.05, "momentum": 0.9},
        TorchScheduler("StepLR", {"step_size": 10, "gamma": 0.5}),
    ),
    Row(
        "adam-cosine_annealing_lr",
        lambda: optkit.adam(schedules.cosine_annealing_lr(0.05, T_max=20, eta_min=1e-3)),
        "Adam",
        {"lr": 0.05},
        TorchScheduler("CosineAnnealingLR", {"T_max": 20, "eta_min": 1e-3}),
    ),
    Row(
        "adamw-one_cycle_lr",
        lambda: optkit.adamw(schedules.one_cycle_lr(0.1, total_steps=STEPS), weight_decay=0.1),
        "AdamW",
        {"lr": 0.1, "weight_decay": 0.1},
        TorchScheduler(
            "OneCycleLR", {"max_lr": 0.1, "total_steps": STEPS, "cycle_momentum": False}
        ),
    ),
    Row(
        "rmsprop_momentum-warm_restarts",
        lambda: optkit.rmsprop(
            schedules.cosine_annealing_warm_restarts(0.01, T_0=8, T_mult=2), momentum=0.5
        ),
        "RMSprop",
        {"lr": 0.01, "momentum": 0.5},
        TorchScheduler("CosineAnnealingWarmRestarts", {"T_0": 8, "T_mult": 2}),
    ),
    Row(
        "adagrad_lr_decay-multistep_lr",
        lambda: optkit.adagrad(schedules.multistep_lr(0.3, [15, 40], gamma=0.3), lr_decay=0.01),
        "Adagrad",
        {"lr": 0.3, "lr_decay": 0.01},
        TorchScheduler("MultiStepLR", {"milestones": [15, 40], "gamma": 0.3}),
    ),
]


def run_torch(row: Row) -> dict[str, np.ndarray]:
    """The params after each of ``STEPS`` torch steps, per leaf, stacked on a leading axis."""
    torch = oracle.require_torch()
    params = {name: torch.tensor(value, requires_grad=True) for name, value in INIT.items()}
    optimizer = getattr(torch.optim, row.torch_optimizer)(params.values(), **row.torch_kwargs)
    scheduler = oracle.build_scheduler(optimizer, row.torch_scheduler)
    path = []
    for _ in range(STEPS):
        optimizer.zero_grad()
        torch_loss(params).backward()
        optimizer.step()
        scheduler.step()
        path.append({name: p.detach().numpy().copy() for name, p in params.items()})
    return {name: np.stack([step[name] for step in path]) for name in INIT}


def run_optkit(row: Row) -> dict[str, np.ndarray]:
    """The same ``STEPS`` steps with optkit, the whole loop compiled as one ``lax.scan``."""
    tx = row.make_optkit()

    def step(carry, _):
        params, state = carry
        updates, state = tx.update(jax.grad(jax_loss)(params), state, params)
        params = optkit.apply_updates(params, updates)
        return (params, state), params

    params = {name: jnp.asarray(value) for name, value in INIT.items()}
    _, path = jax.jit(functools.partial(jax.lax.scan, step, length=STEPS))(
        (params, tx.init(params))
    )
    return {name: np.asarray(leaf) for name, leaf in path.items()}


@pytest.mark.torch
@pytest.mark.parametrize("row", ROWS, ids=[row.id for row in ROWS])
def test_scheduled_optimizer_follows_torch(row):
    expected, actual = run_torch(row), run_optkit(row)
    for name in INIT:
        np.testing.assert_allclose(actual[name], expected[name], rtol=1e-10, atol=1e-13)
