"""The MultiplicativeLR and ChainedScheduler rows of the schedule table (cases.py appends them).

The rows are built by :func:`rows`, which reads the table's types from cases.py when it is
called: cases.py imports this module, so neither may need the other while it is being imported.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from optkit import schedules

if TYPE_CHECKING:
    from tests.schedules.cases import ScheduleCase, TorchScheduler

STEPS = 300


# MultiplicativeLR's lr_lambda is a Python function of the int epoch (an `if` is fine): optkit
# tabulates it for epochs 1..total_steps and holds the value past them, which torch matches when
# lr_lambda is 1 there ("holds_past_total_steps").
def shrink(k):
    return 0.99


def halve_every_50(k):
    return 0.5 if k % 50 == 0 else 1.0


def grow_until_40(k):
    return 1.05 if k <= 40 else 1.0


# lr_lambda functions for LambdaLR: plain arithmetic, traced by optkit, called with ints by torch.
def inverse_time(k):
    return 1.0 / (1.0 + 0.05 * k)


def sawtooth(k):
    return (k % 7 + 1) / 7


def geometric(k):
    return 0.97**k


MULTIPLICATIVE_LR = {
    "constant_factor": {"learning_rate": 0.1, "lr_lambda": shrink, "total_steps": STEPS},
    "python_if": {"learning_rate": 0.3, "lr_lambda": halve_every_50, "total_steps": STEPS},
    "holds_past_total_steps": {
        "learning_rate": 0.01,
        "lr_lambda": grow_until_40,
        "total_steps": 40,
    },
}

# A chain's child: (optkit factory, torch class, kwargs without the lr), or a list of children for
# a ChainedScheduler inside the chain. Every child is built with the chain's lr.
Child = tuple[Callable[..., Any], str, dict[str, Any]]
ChainChild = Child | list

EXPONENTIAL = (schedules.exponential_lr, "ExponentialLR", {"gamma": 0.99})
HALVING = (
    schedules.multiplicative_lr,
    "MultiplicativeLR",
    {"lr_lambda": halve_every_50, "total_steps": STEPS},
)
# (lr, children) by row name. Products of factors first, then torch's LambdaLR, which sets the lr
# from the initial lr: the schedulers before it are lost, the ones after it apply their step's
# ratio only.
CHAINS: dict[str, tuple[float, list[ChainChild]]] = {
    "torch_docs_constant_exponential": (
        0.05,
        [
            (schedules.constant_lr, "ConstantLR", {"factor": 0.1, "total_iters": 20}),
            (schedules.exponential_lr, "ExponentialLR", {"gamma": 0.9}),
        ],
    ),
    "warmup_step_polynomial_to_zero": (
        0.1,
        [
            (schedules.linear_lr, "LinearLR", {"start_factor": 0.1, "total_iters": 10}),
            (schedules.step_lr, "StepLR", {"step_size": 30, "gamma": 0.5}),
            (schedules.polynomial_lr, "PolynomialLR", {"total_iters": 250, "power": 2.0}),
        ],
    ),
    "multistep_multiplicative_linear_decay": (
        0.2,
        [
            (schedules.multistep_lr, "MultiStepLR", {"milestones": [0, 100, 200], "gamma": 0.5}),
            HALVING,
            (
                schedules.linear_lr,
                "LinearLR",
                {"start_factor": 1.0, "end_factor": 0.2, "total_iters": 150},
            ),
        ],
    ),
    "lambda_then_factors": (
        0.1,
        [
            (schedules.lambda_lr, "LambdaLR", {"lr_lambda": inverse_time}),
            EXPONENTIAL,
            (schedules.polynomial_lr, "PolynomialLR", {"total_iters": 100}),
        ],
    ),
    "factors_then_lambda": (
        0.1,
        [
            (schedules.step_lr, "StepLR", {"step_size": 10, "gamma": 0.5}),
            EXPONENTIAL,
            (schedules.lambda_lr, "LambdaLR", {"lr_lambda": sawtooth}),
        ],
    ),
    "lambda_between_factors": (
        0.1,
        [
            (schedules.step_lr, "StepLR", {"step_size": 10}),
            (schedules.lambda_lr, "LambdaLR", {"lr_lambda": sawtooth}),
            (schedules.constant_lr, "ConstantLR", {"factor": 0.5, "total_iters": 30}),
            (schedules.multistep_lr, "MultiStepLR", {"milestones": [0, 40, 40], "gamma": 0.7}),
            HALVING,
        ],
    ),
    "nested_chains": (
        0.1,
        [
            [
                (schedules.linear_lr, "LinearLR", {"start_factor": 0.2, "total_iters": 30}),
                (schedules.lambda_lr, "LambdaLR", {"lr_lambda": geometric}),
            ],
            EXPONENTIAL,
            [
                (schedules.polynomial_lr, "PolynomialLR", {"total_iters": 120, "power": 0.5}),
                (schedules.exponential_lr, "ExponentialLR", {"gamma": 1.01}),
            ],
        ],
    ),
    "single": (0.3, [EXPONENTIAL]),
}


def _torch_kwargs(torch_name: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """optkit's kwargs minus what torch does not take: MultiplicativeLR has no total_steps."""
    drop = (
        {"learning_rate", "total_steps"} if torch_name == "MultiplicativeLR" else {"learning_rate"}
    )
    return {key: value for key, value in kwargs.items() if key not in drop}


def _chain_parts(lr: float, children: Sequence[ChainChild]) -> tuple[list, list[TorchScheduler]]:
    """The optkit schedules and torch specs of ``children``, all on the optimizer's lr."""
    from tests.schedules.cases import TorchScheduler

    built, specs = [], []
    for child in children:
        if isinstance(child, list):
            inner, inner_specs = _chain_parts(lr, child)
            built.append(schedules.chained_scheduler(inner))
            specs.append(TorchScheduler("ChainedScheduler", {"schedulers": inner_specs}))
        else:
            factory, torch_name, kwargs = child
            built.append(factory(lr, **kwargs))
            specs.append(TorchScheduler(torch_name, _torch_kwargs(torch_name, kwargs)))
    return built, specs


def rows() -> list[ScheduleCase]:
    """A row per MultiplicativeLR variant and per chain (torch builds children in list order)."""
    from tests.schedules.cases import ScheduleCase, TorchScheduler

    table = [
        ScheduleCase(
            id=f"multiplicative_lr-{name}",
            make_schedule=lambda kwargs=kwargs: schedules.multiplicative_lr(**kwargs),
            torch=TorchScheduler("MultiplicativeLR", _torch_kwargs("MultiplicativeLR", kwargs)),
            lr=kwargs["learning_rate"],
        )
        for name, kwargs in MULTIPLICATIVE_LR.items()
    ]
    for name, (lr, children) in CHAINS.items():
        table.append(
            ScheduleCase(
                id=f"chained_scheduler-{name}",
                make_schedule=lambda lr=lr, children=children: schedules.chained_scheduler(
                    _chain_parts(lr, children)[0]
                ),
                torch=TorchScheduler(
                    "ChainedScheduler", {"schedulers": _chain_parts(lr, children)[1]}
                ),
                lr=lr,
            )
        )
    return table
