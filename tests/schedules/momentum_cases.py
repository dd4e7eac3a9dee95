"""Momentum cycling: optkit's momentum schedules next to torch's ``cycle_momentum=True``.

Two tables. ``MOMENTUM_CASES``: each ``OneCycleLR`` / ``CyclicLR`` set-up (torch's keywords) and
the optkit momentum schedule built from the same keywords minus the learning-rate ones; torch's
value is ``param_groups[0]["momentum"]`` before each update. ``TRAJECTORY_ROWS``: an optimizer
driven by both halves, ``inject_hyperparams(factory)(learning_rate=<lr schedule>, momentum=`` (or
``b1=``) ``<momentum schedule>)``, against the torch optimizer with the scheduler stepped after
each update, on the parity suite's standard problem, in float64 and float32.

torch is imported inside the torch runners only: the golden tests import this module without it.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import warnings
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import optkit
from optkit import schedules
from optkit._base import Schedule
from tests.parity import problem
from tests.schedules.cases import STEPS, Kwargs, TorchScheduler, _plain
from tests.support.optimizer_info import to_torch_kwargs

# Keywords of the torch schedulers that set the learning rate only.
LR_ONLY = frozenset({"base_lr", "max_lr", "div_factor", "final_div_factor"})
LR_SCHEDULES = {"OneCycleLR": schedules.one_cycle_lr, "CyclicLR": schedules.cyclic_lr}
MOMENTUM_SCHEDULES = {
    "OneCycleLR": schedules.one_cycle_momentum,
    "CyclicLR": schedules.cyclic_momentum,
}


def lr_schedule(scheduler: TorchScheduler) -> Schedule:
    """optkit's learning-rate half of a torch scheduler (every keyword but the momentum ones)."""
    kwargs = {k: v for k, v in scheduler.kwargs.items() if "momentum" not in k}
    return LR_SCHEDULES[scheduler.name](**kwargs)


def momentum_schedule(scheduler: TorchScheduler) -> Schedule:
    """optkit's momentum half of a torch scheduler (every keyword but the lr-only ones)."""
    kwargs = {k: v for k, v in scheduler.kwargs.items() if k not in LR_ONLY}
    return MOMENTUM_SCHEDULES[scheduler.name](**kwargs)


@dataclasses.dataclass(frozen=True)
class MomentumCase:
    """One torch scheduler with ``cycle_momentum=True`` and the momentum it writes."""

    id: str
    torch: TorchScheduler

    @property
    def steps(self) -> int:
        return self.torch.kwargs.get("total_steps", STEPS)

    def make_schedule(self) -> Schedule:
        return momentum_schedule(self.torch)

    def torch_spec(self) -> str:
        return json.dumps({"steps": self.steps, "scheduler": _plain(self.torch)}, sort_keys=True)


ONE_CYCLE = {
    "torch_defaults": {"max_lr": 0.1, "total_steps": STEPS},
    "linear_wide": {
        "max_lr": 0.5,
        "total_steps": STEPS,
        "pct_start": 0.25,
        "anneal_strategy": "linear",
        "base_momentum": 0.5,
        "max_momentum": 0.99,
    },
    "three_phase": {"max_lr": 0.1, "total_steps": STEPS, "three_phase": True},
    "three_phase_linear": {
        "max_lr": 1.0,
        "total_steps": STEPS,
        "pct_start": 0.4,
        "anneal_strategy": "linear",
        "base_momentum": 0.6,
        "max_momentum": 0.9,
        "three_phase": True,
    },
    "fractional_phase_end": {"max_lr": 0.2, "total_steps": 301, "pct_start": 0.33},
    # torch does not order the two: the momentum then rises while the lr does.
    "inverted": {"max_lr": 0.1, "total_steps": STEPS, "base_momentum": 0.9, "max_momentum": 0.8},
}
CYCLIC = {
    "torch_defaults": {"base_lr": 1e-3, "max_lr": 0.1, "step_size_up": 20},
    "triangular2_asymmetric": {
        "base_lr": 0.01,
        "max_lr": 0.2,
        "step_size_up": 15,
        "step_size_down": 40,
        "mode": "triangular2",
        "base_momentum": 0.7,
        "max_momentum": 0.95,
    },
    "exp_range": {
        "base_lr": 1e-3,
        "max_lr": 0.05,
        "step_size_up": 25,
        "mode": "exp_range",
        "gamma": 0.99,
    },
    "one_step_halves": {
        "base_lr": 0.1,
        "max_lr": 0.3,
        "step_size_up": 1,
        "base_momentum": 0.5,
        "max_momentum": 0.6,
    },
}

MOMENTUM_CASES: tuple[MomentumCase, ...] = (
    *(
        MomentumCase(f"one_cycle_momentum-{name}", TorchScheduler("OneCycleLR", kwargs))
        for name, kwargs in ONE_CYCLE.items()
    ),
    *(
        MomentumCase(f"cyclic_momentum-{name}", TorchScheduler("CyclicLR", kwargs))
        for name, kwargs in CYCLIC.items()
    ),
)


def torch_momentum(case: MomentumCase) -> np.ndarray:
    """SGD's ``param_groups[0]["momentum"]`` before each update (torch's scheduler writes it)."""
    import torch

    param = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.SGD([param], lr=0.1, momentum=0.5)
    scheduler = getattr(torch.optim.lr_scheduler, case.torch.name)(optimizer, **case.torch.kwargs)
    values = []
    for _ in range(case.steps):
        values.append(float(optimizer.param_groups[0]["momentum"]))
        optimizer.step()
        scheduler.step()
    return np.asarray(values)


# --- full trajectories --------------------------------------------------------------------------

TRAJECTORY_STEPS = 60
DTYPES = {"float64": np.float64, "float32": np.float32}


@dataclasses.dataclass(frozen=True)
class TrajectoryRow:
    """An optimizer (optkit's name and keywords, lr and momentum excluded), which of its
    arguments is torch's cycled momentum, and the torch scheduler."""

    id: str
    optimizer: str
    kwargs: Kwargs
    momentum_name: str  # "momentum" (torch's group["momentum"]) or "b1" (group["betas"][0])
    scheduler: TorchScheduler
    torch_momentum: float | None = None  # the torch optimizer's own, overwritten by the scheduler

    def make_optkit(self) -> optkit.GradientTransformation:
        return optkit.inject_hyperparams(getattr(optkit, self.optimizer))(
            learning_rate=lr_schedule(self.scheduler),
            **{self.momentum_name: momentum_schedule(self.scheduler)},
            **self.kwargs,
        )

    def torch_spec(self) -> str:
        spec = {**dataclasses.asdict(self), "scheduler": _plain(self.scheduler)}
        return json.dumps({**spec, "steps": TRAJECTORY_STEPS}, sort_keys=True)


TRAJECTORY_ROWS: tuple[TrajectoryRow, ...] = (
    # torch's SGD built without momentum: OneCycleLR writes one before the first step, so the
    # buffer exists from the start.
    TrajectoryRow(
        "sgd-one_cycle",
        "sgd",
        {"weight_decay": 1e-3},
        "momentum",
        TorchScheduler("OneCycleLR", {"max_lr": 0.02, "total_steps": TRAJECTORY_STEPS}),
    ),
    TrajectoryRow(
        "sgd_nesterov-cyclic_triangular2",
        "sgd",
        {"nesterov": True},
        "momentum",
        TorchScheduler(
            "CyclicLR",
            {
                "base_lr": 0.002,
                "max_lr": 0.02,
                "step_size_up": 8,
                "step_size_down": 12,
                "mode": "triangular2",
            },
        ),
        torch_momentum=0.9,  # torch's nesterov check needs one at construction
    ),
    TrajectoryRow(
        "adamw-one_cycle_three_phase",
        "adamw",
        {"b2": 0.99, "weight_decay": 0.1},
        "b1",
        TorchScheduler(
            "OneCycleLR",
            {
                "max_lr": 0.02,
                "total_steps": TRAJECTORY_STEPS,
                "three_phase": True,
                "base_momentum": 0.8,
            },
        ),
    ),
    TrajectoryRow(
        "adamw_amsgrad-cyclic_exp_range",
        "adamw",
        {"amsgrad": True, "b2": 0.9},
        "b1",
        TorchScheduler(
            "CyclicLR",
            {
                "base_lr": 0.002,
                "max_lr": 0.02,
                "step_size_up": 10,
                "mode": "exp_range",
                "gamma": 0.98,
                "base_momentum": 0.85,
                "max_momentum": 0.95,
            },
        ),
    ),
    TrajectoryRow(
        "rmsprop_centered-one_cycle_linear",
        "rmsprop",
        {"centered": True},
        "momentum",
        TorchScheduler(
            "OneCycleLR",
            {"max_lr": 0.005, "total_steps": TRAJECTORY_STEPS, "anneal_strategy": "linear"},
        ),
    ),
)

TORCH_OPTIMIZERS = {"sgd": "SGD", "adamw": "AdamW", "rmsprop": "RMSprop"}


def torch_trajectory(
    row: TrajectoryRow, dtype: type[np.floating], *, cycle_momentum: bool = True
) -> dict[str, np.ndarray]:
    """torch's params before and after each update, per leaf, on the standard problem."""
    import torch

    task = problem.STANDARD
    params = {
        name: torch.tensor(value, requires_grad=True)
        for name, value in task.initial_params(dtype).items()
    }
    kwargs = to_torch_kwargs(row.kwargs)
    if row.torch_momentum is not None:
        kwargs["momentum"] = row.torch_momentum
    optimizer = getattr(torch.optim, TORCH_OPTIMIZERS[row.optimizer])(params.values(), **kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scheduler = getattr(torch.optim.lr_scheduler, row.scheduler.name)(
            optimizer, **row.scheduler.kwargs, cycle_momentum=cycle_momentum
        )
    path = [{name: p.detach().numpy().copy() for name, p in params.items()}]
    for _ in range(TRAJECTORY_STEPS):
        optimizer.zero_grad()
        task.torch_loss(params).backward()
        optimizer.step()
        scheduler.step()
        path.append({name: p.detach().numpy().copy() for name, p in params.items()})
    return {name: np.stack([step[name] for step in path]) for name in params}


def optkit_trajectory(row: TrajectoryRow, dtype: type[np.floating]) -> dict[str, np.ndarray]:
    """The same run with optkit, compiled as one ``lax.scan``."""
    task = problem.STANDARD
    tx = row.make_optkit()

    def step(carry: Any, _: Any) -> tuple[Any, Any]:
        params, state = carry
        updates, state = tx.update(jax.grad(task.jax_loss)(params), state, params)
        params = optkit.apply_updates(params, updates)
        return (params, state), params

    start = {name: jnp.asarray(v) for name, v in task.initial_params(dtype).items()}
    scan = functools.partial(jax.lax.scan, step, length=TRAJECTORY_STEPS)
    _, path = jax.jit(scan)((start, tx.init(start)))
    return {
        name: np.concatenate([np.asarray(start[name])[None], np.asarray(leaf)])
        for name, leaf in path.items()
    }
