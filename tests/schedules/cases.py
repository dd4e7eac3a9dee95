"""The tables that drive the schedule tests: each optkit schedule next to its torch scheduler.

A schedule row is written once with optkit's keyword arguments; the torch scheduler takes the
same keywords (optkit keeps torch's names) except ``learning_rate``, which becomes the torch
optimizer's ``lr``. Adding a schedule is one variants dict plus one ``_rows`` call.

Plateau rows script the monitored values (plateaus, improvements, cooldown, floors) so that every
branch of ReduceLROnPlateau is taken.

torch is referenced by class name only, so this module imports without torch: the golden-file
tests need only optkit and numpy.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from optkit import schedules
from optkit._base import Schedule
from tests.schedules import chained_cases

STEPS = 300
Kwargs = Mapping[str, Any]


@dataclasses.dataclass(frozen=True)
class TorchScheduler:
    """A class in ``torch.optim.lr_scheduler`` (or ``SWALR``, in ``torch.optim.swa_utils``) and
    its keyword arguments (minus the optimizer).

    For ``SequentialLR``, ``kwargs["schedulers"]`` holds nested ``TorchScheduler`` specs.
    """

    name: str
    kwargs: Kwargs


@dataclasses.dataclass(frozen=True)
class ScheduleCase:
    """One optkit schedule, the torch scheduler it reproduces and the torch optimizer's lr."""

    id: str
    make_schedule: Callable[[], Schedule]
    torch: TorchScheduler
    lr: float
    steps: int = STEPS

    def torch_spec(self) -> str:
        """The torch side as canonical JSON; stored with the goldens to detect stale files."""
        return json.dumps(
            {"lr": self.lr, "steps": self.steps, "scheduler": _plain(self.torch)}, sort_keys=True
        )


def _plain(value: Any) -> Any:
    """A JSON-ready copy of a spec: functions by name, nested schedulers as dicts."""
    if isinstance(value, TorchScheduler):
        return {"name": value.name, "kwargs": _plain(dict(value.kwargs))}
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    if callable(value):
        return value.__name__
    return value


# lr_lambda functions: plain arithmetic, so torch (Python ints) and optkit (traced int arrays)
# call the same function.
def geometric(k):
    return 0.97**k


def inverse_time(k):
    return 1.0 / (1.0 + 0.05 * k)


def sawtooth(k):
    return (k % 7 + 1) / 7


STEP_LR = {
    "torch_default_gamma": {"learning_rate": 0.1, "step_size": 30},
    "gamma_0.8": {"learning_rate": 0.5, "step_size": 7, "gamma": 0.8},
    "every_step": {"learning_rate": 1.0, "step_size": 1, "gamma": 0.98},
    "growing": {"learning_rate": 0.01, "step_size": 100, "gamma": 1.5},
}
MULTISTEP_LR = {
    "three_milestones": {"learning_rate": 0.1, "milestones": [30, 80, 150]},
    "repeated_milestone": {"learning_rate": 0.2, "milestones": [5, 5, 50], "gamma": 0.5},
    "milestone_at_zero": {"learning_rate": 1.0, "milestones": [0, 100, 299], "gamma": 0.3},
}
CONSTANT_LR = {
    "torch_defaults": {"learning_rate": 0.1},
    "long": {"learning_rate": 0.3, "factor": 0.5, "total_iters": 100},
    "factor_one": {"learning_rate": 0.05, "factor": 1.0, "total_iters": 10},
}
LINEAR_LR = {
    "torch_defaults": {"learning_rate": 0.1},
    "warmup": {"learning_rate": 0.2, "start_factor": 0.1, "total_iters": 50},
    "decay": {"learning_rate": 0.5, "start_factor": 1.0, "end_factor": 0.05, "total_iters": 200},
    "flat": {"learning_rate": 0.1, "start_factor": 0.5, "end_factor": 0.5, "total_iters": 3},
}
EXPONENTIAL_LR = {
    "gamma_0.99": {"learning_rate": 0.1, "gamma": 0.99},
    "gamma_0.9": {"learning_rate": 1.0, "gamma": 0.9},
    "growing": {"learning_rate": 1e-3, "gamma": 1.01},
}
POLYNOMIAL_LR = {
    "torch_defaults": {"learning_rate": 0.1},
    "quadratic": {"learning_rate": 0.5, "total_iters": 200, "power": 2.0},
    "square_root": {"learning_rate": 0.1, "total_iters": 250, "power": 0.5},
}
COSINE_ANNEALING_LR = {
    "t_max_100": {"learning_rate": 0.1, "T_max": 100},
    "t_max_37_eta_min": {"learning_rate": 0.05, "T_max": 37, "eta_min": 1e-3},
    "t_max_300": {"learning_rate": 1.0, "T_max": 300, "eta_min": 0.01},
    "t_max_3": {"learning_rate": 0.1, "T_max": 3},
    "t_max_1": {"learning_rate": 0.1, "T_max": 1, "eta_min": 0.02},
}
WARM_RESTARTS = {
    "t0_10": {"learning_rate": 0.1, "T_0": 10},
    "t0_7_doubling": {"learning_rate": 0.1, "T_0": 7, "T_mult": 2, "eta_min": 0.01},
    "t0_1_tripling": {"learning_rate": 0.5, "T_0": 1, "T_mult": 3},
    "t0_50": {"learning_rate": 0.2, "T_0": 50, "eta_min": 0.05},
}
CYCLIC_LR = {
    "triangular": {"base_lr": 1e-3, "max_lr": 0.1, "step_size_up": 20},
    "triangular2_asymmetric": {
        "base_lr": 0.01,
        "max_lr": 0.2,
        "step_size_up": 15,
        "step_size_down": 40,
        "mode": "triangular2",
    },
    "exp_range": {
        "base_lr": 1e-3,
        "max_lr": 0.05,
        "step_size_up": 25,
        "mode": "exp_range",
        "gamma": 0.99,
    },
    "one_step_halves": {"base_lr": 0.1, "max_lr": 0.3, "step_size_up": 1},
}
ONE_CYCLE_LR = {
    "torch_defaults": {"max_lr": 0.1, "total_steps": STEPS},
    "linear": {"max_lr": 0.5, "total_steps": STEPS, "pct_start": 0.25, "anneal_strategy": "linear"},
    "three_phase": {"max_lr": 0.1, "total_steps": STEPS, "three_phase": True},
    "three_phase_linear_divs": {
        "max_lr": 1.0,
        "total_steps": STEPS,
        "pct_start": 0.4,
        "anneal_strategy": "linear",
        "div_factor": 10.0,
        "final_div_factor": 100.0,
        "three_phase": True,
    },
    "fractional_phase_end": {"max_lr": 0.2, "total_steps": 301, "pct_start": 0.33},
}
# SWALR anneals from the optimizer's lr: down (the usual case), up, at once (0 and 1 epochs), and
# down to zero over a long cosine, where torch's recursion drifts most from the closed form.
SWA_LR = {
    "torch_defaults": {"learning_rate": 0.1, "swa_lr": 0.05},
    "linear_20": {
        "learning_rate": 0.5,
        "swa_lr": 0.05,
        "anneal_epochs": 20,
        "anneal_strategy": "linear",
    },
    "rising_cos_37": {"learning_rate": 0.01, "swa_lr": 0.1, "anneal_epochs": 37},
    "cos_250_to_zero": {"learning_rate": 1.0, "swa_lr": 0.0, "anneal_epochs": 250},
    "anneal_0": {"learning_rate": 0.1, "swa_lr": 0.02, "anneal_epochs": 0},
    "anneal_0_linear": {
        "learning_rate": 0.1,
        "swa_lr": 0.02,
        "anneal_epochs": 0,
        "anneal_strategy": "linear",
    },
    "anneal_1": {"learning_rate": 0.1, "swa_lr": 0.02, "anneal_epochs": 1},
    "anneal_1_linear": {
        "learning_rate": 0.2,
        "swa_lr": 0.3,
        "anneal_epochs": 1,
        "anneal_strategy": "linear",
    },
}
LAMBDA_LR = {
    "geometric": {"learning_rate": 0.1, "lr_lambda": geometric},
    "inverse_time": {"learning_rate": 0.5, "lr_lambda": inverse_time},
    "sawtooth": {"learning_rate": 0.1, "lr_lambda": sawtooth},
}


def _split(kwargs: Kwargs) -> tuple[float, dict[str, Any]]:
    """The torch optimizer's lr and the scheduler's kwargs, from one optkit kwargs dict.

    CyclicLR and OneCycleLR set the optimizer's lr themselves; any lr does there.
    """
    torch_kwargs = dict(kwargs)
    return torch_kwargs.pop("learning_rate", 1.0), torch_kwargs


def _rows(
    family: str, factory: Callable[..., Schedule], torch_name: str, variants: Mapping[str, Kwargs]
) -> list[ScheduleCase]:
    rows = []
    for name, kwargs in variants.items():
        lr, torch_kwargs = _split(kwargs)
        rows.append(
            ScheduleCase(
                id=f"{family}-{name}",
                make_schedule=functools.partial(factory, **kwargs),
                torch=TorchScheduler(torch_name, torch_kwargs),
                lr=lr,
                steps=kwargs.get("total_steps", STEPS),
            )
        )
    return rows


Child = tuple[Callable[..., Schedule], str, Kwargs]


def _sequential(name: str, lr: float, children: Sequence[Child], milestones: list[int]):
    """A SequentialLR row; every child shares the optimizer's lr, as in torch."""

    def make() -> Schedule:
        built = [factory(lr, **kwargs) for factory, _, kwargs in children]
        return schedules.sequential_lr(built, milestones)

    torch_children = [TorchScheduler(torch_name, kwargs) for _, torch_name, kwargs in children]
    return ScheduleCase(
        id=f"sequential_lr-{name}",
        make_schedule=make,
        torch=TorchScheduler(
            "SequentialLR", {"schedulers": torch_children, "milestones": milestones}
        ),
        lr=lr,
    )


SEQUENTIAL_LR = [
    _sequential(
        "warmup_cosine",
        0.1,
        [
            (schedules.linear_lr, "LinearLR", {"start_factor": 0.1, "total_iters": 10}),
            (schedules.cosine_annealing_lr, "CosineAnnealingLR", {"T_max": 100}),
        ],
        [10],
    ),
    _sequential(
        "constant_exponential_step",
        0.2,
        [
            (schedules.constant_lr, "ConstantLR", {"factor": 0.5, "total_iters": 3}),
            (schedules.exponential_lr, "ExponentialLR", {"gamma": 0.95}),
            (schedules.step_lr, "StepLR", {"step_size": 20, "gamma": 0.5}),
        ],
        [5, 50],
    ),
    _sequential(
        "linear_warm_restarts",
        0.05,
        [
            (schedules.linear_lr, "LinearLR", {"start_factor": 0.2, "total_iters": 20}),
            (
                schedules.cosine_annealing_warm_restarts,
                "CosineAnnealingWarmRestarts",
                {"T_0": 15, "T_mult": 2, "eta_min": 1e-3},
            ),
        ],
        [20],
    ),
    _sequential(
        "multistep_lambda_polynomial",
        0.1,
        [
            (schedules.multistep_lr, "MultiStepLR", {"milestones": [10, 20], "gamma": 0.5}),
            (schedules.lambda_lr, "LambdaLR", {"lr_lambda": inverse_time}),
            (schedules.polynomial_lr, "PolynomialLR", {"total_iters": 100, "power": 1.5}),
        ],
        [40, 120],
    ),
]

# optax's warmup_cosine_decay is torch's LinearLR then CosineAnnealingLR (optimizer lr = peak)
# up to decay_steps, where torch's cosine turns back up: compared over counts 0..decay_steps.
WARMUP_COSINE_DECAY = ScheduleCase(
    id="warmup_cosine_decay-as_sequential_lr",
    make_schedule=functools.partial(
        schedules.warmup_cosine_decay, 0.01, 0.1, warmup_steps=20, decay_steps=320, end_value=1e-3
    ),
    torch=TorchScheduler(
        "SequentialLR",
        {
            "schedulers": [
                TorchScheduler("LinearLR", {"start_factor": 0.1, "total_iters": 20}),
                TorchScheduler("CosineAnnealingLR", {"T_max": 300, "eta_min": 1e-3}),
            ],
            "milestones": [20],
        },
    ),
    lr=0.1,
    steps=321,
)

SCHEDULE_CASES: tuple[ScheduleCase, ...] = (
    *_rows("step_lr", schedules.step_lr, "StepLR", STEP_LR),
    *_rows("multistep_lr", schedules.multistep_lr, "MultiStepLR", MULTISTEP_LR),
    *_rows("constant_lr", schedules.constant_lr, "ConstantLR", CONSTANT_LR),
    *_rows("linear_lr", schedules.linear_lr, "LinearLR", LINEAR_LR),
    *_rows("exponential_lr", schedules.exponential_lr, "ExponentialLR", EXPONENTIAL_LR),
    *_rows("polynomial_lr", schedules.polynomial_lr, "PolynomialLR", POLYNOMIAL_LR),
    *_rows(
        "cosine_annealing_lr",
        schedules.cosine_annealing_lr,
        "CosineAnnealingLR",
        COSINE_ANNEALING_LR,
    ),
    *_rows(
        "cosine_annealing_warm_restarts",
        schedules.cosine_annealing_warm_restarts,
        "CosineAnnealingWarmRestarts",
        WARM_RESTARTS,
    ),
    *_rows("cyclic_lr", schedules.cyclic_lr, "CyclicLR", CYCLIC_LR),
    *_rows("one_cycle_lr", schedules.one_cycle_lr, "OneCycleLR", ONE_CYCLE_LR),
    *_rows("lambda_lr", schedules.lambda_lr, "LambdaLR", LAMBDA_LR),
    *_rows("swa_lr", schedules.swa_lr, "SWALR", SWA_LR),
    *SEQUENTIAL_LR,
    WARMUP_COSINE_DECAY,
)


@dataclasses.dataclass(frozen=True)
class PlateauCase:
    """A scripted run of ReduceLROnPlateau: the monitored values fed after each SGD step."""

    id: str
    lr: float
    kwargs: Kwargs
    values: tuple[float, ...]

    def torch_spec(self) -> str:
        spec = {"lr": self.lr, "kwargs": dict(self.kwargs), "values": list(self.values)}
        return json.dumps(spec, sort_keys=True)


def _script(*parts: float | tuple[float, int]) -> tuple[float, ...]:
    """A value sequence from single values and ``(value, repeats)`` plateaus."""
    values: list[float] = []
    for part in parts:
        values.extend([part[0]] * part[1] if isinstance(part, tuple) else [part])
    return tuple(values)


PLATEAU_CASES: tuple[PlateauCase, ...] = (
    PlateauCase(
        "min_rel_plateaus",
        0.1,
        {"factor": 0.5, "patience": 2},
        _script(5.0, 4.0, 3.0, (3.0, 6), (2.0, 2), (2.0, 8), 1.9999, 1.5, math.nan),
    ),
    PlateauCase(
        "torch_defaults",
        0.05,
        {},
        _script(*(1.0 / (1 + k) for k in range(10)), (0.1, 30)),
    ),
    PlateauCase(
        "cooldown",
        0.1,
        {"factor": 0.5, "patience": 1, "cooldown": 3},
        _script(3.0, 2.0, (2.0, 12), (1.0, 11)),
    ),
    PlateauCase(
        "min_lr_floor",
        1.0,
        {"factor": 0.1, "patience": 0, "min_lr": 0.003},
        _script((1.0, 12)),
    ),
    PlateauCase(
        "eps_stops_tiny_reductions",
        1e-3,
        {"factor": 0.1, "patience": 0},
        _script((1.0, 12)),
    ),
    PlateauCase(
        "large_eps",
        0.1,
        {"factor": 0.5, "patience": 0, "eps": 0.02},
        _script((1.0, 8)),
    ),
    PlateauCase(
        "mode_max_rel",
        0.2,
        {"mode": "max", "factor": 0.3, "patience": 2, "threshold": 0.1},
        _script(1.0, 1.2, 1.25, 1.3, 1.35, 1.5, 1.6, 1.7, (2.0, 11)),
    ),
    PlateauCase(
        "mode_max_abs",
        0.2,
        {"mode": "max", "factor": 0.5, "patience": 1, "threshold": 0.5, "threshold_mode": "abs"},
        (0.0, 0.4, 0.6, 1.2, 1.5, 1.6, 2.0, 2.6, 2.7, 2.8, 2.9, 3.0, 3.2, 3.4, 3.6),
    ),
    PlateauCase(
        "min_abs",
        0.1,
        {"factor": 0.2, "patience": 1, "threshold": 0.25, "threshold_mode": "abs"},
        (4.0, 3.9, 3.8, 3.5, 3.3, 3.2, 2.0, 1.9, 1.8, 1.7, 1.0, 0.9, 0.85, 0.8),
    ),
    # torch's rel rule on a negative best: best * (1 - threshold) lies above best, so a slightly
    # worse value (-0.95 after -1.0) still counts as an improvement. Reproduced, not fixed.
    PlateauCase(
        "negative_values_rel",
        0.1,
        {"factor": 0.5, "patience": 1, "threshold": 0.1},
        (-1.0, -0.95, -0.9, -0.7, -0.7, -0.7, -0.7, -0.7, -0.7, -0.7),
    ),
)


# The MultiplicativeLR and ChainedScheduler rows, appended to the table above.
SCHEDULE_CASES = (*SCHEDULE_CASES, *chained_cases.rows())
