"""The tables of the per-epoch tests: torch training loops that step their scheduler once per
epoch, and the optkit set-ups that reproduce them.

Every case is a full training run on one small problem (a wavy bowl whose minimum moves from one
minibatch to the next), ``steps_per_epoch`` updates per epoch, recorded as the learning rate of
each update and the params after it. Schedule cases step a torch scheduler after each epoch
(``schedules.per_epoch`` on the optkit side); plateau cases feed ``ReduceLROnPlateau`` one scripted
validation loss per epoch (``optkit.step_plateau``). The scripts take every branch: patience,
cooldown, ``min_lr`` (per param group too), ``eps``, both modes, both threshold modes, NaN and inf.

torch is imported only inside :func:`torch_loss`, so the golden-file tests run without it.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import optkit
from optkit import schedules
from optkit._base import Schedule
from tests.schedules.cases import Kwargs, TorchScheduler, _plain, _script

TARGET = np.array([1.0, -2.0, 0.5])
INIT = {"w": np.array([0.2, 0.4, -1.0]), "b": np.array(1.5)}


def shifts(updates: int) -> np.ndarray:
    """The minibatch of update k, reduced to one number: how far it moves the minimum."""
    return 0.3 * np.sin(0.7 * np.arange(updates))


def jax_loss(params: dict[str, jax.Array], shift: jax.Array) -> jax.Array:
    """A wavy bowl in ``w`` coupled to one in ``b``, both centred ``shift`` away from the target."""
    w, b = params["w"], params["b"]
    bowl = jnp.sum((w - TARGET - shift) ** 2 * (1.0 + 0.3 * jnp.sin(2.0 * w)))
    coupling = 0.2 * b * jnp.sum(jnp.tanh(w))
    return bowl + coupling + (b - 0.5 - shift) ** 2 * (1.0 + 0.1 * jnp.cos(3.0 * b))


def torch_loss(params: dict, shift: Any) -> Any:
    """The same loss in torch, term for term."""
    import torch

    w, b = params["w"], params["b"]
    target = torch.as_tensor(TARGET, dtype=w.dtype)
    bowl = torch.sum((w - target - shift) ** 2 * (1.0 + 0.3 * torch.sin(2.0 * w)))
    coupling = 0.2 * b * torch.sum(torch.tanh(w))
    return bowl + coupling + (b - 0.5 - shift) ** 2 * (1.0 + 0.1 * torch.cos(3.0 * b))


@dataclasses.dataclass(frozen=True)
class TorchRun:
    """A torch optimizer on ``w`` and ``b``: one param group, or one per name in ``groups``
    (each a dict of the group's own options), and the scheduler stepped after each epoch."""

    optimizer: str
    kwargs: Kwargs
    scheduler: TorchScheduler
    groups: tuple[Kwargs, ...] | None = None
    """Per-group options for ``w`` then ``b``; ``None``: both in one group."""


@dataclasses.dataclass(frozen=True)
class EpochCase:
    """A training run whose scheduler steps once per epoch.

    ``values``: the validation losses given to ``ReduceLROnPlateau.step`` (plateau cases) or
    ``None`` (a scheduler stepped without one). ``make_optkit(steps_per_epoch)`` builds the
    optkit optimizer.
    """

    id: str
    torch: TorchRun
    make_optkit: Callable[[int], optkit.GradientTransformation]
    steps_per_epoch: int
    epochs: int
    values: tuple[float, ...] | None = None
    make_schedule: Callable[[int], Schedule] | None = None
    """Schedule cases: ``steps_per_epoch -> per_epoch(...)``, the learning rate of each update."""

    @property
    def updates(self) -> int:
        return self.steps_per_epoch * self.epochs

    def torch_spec(self) -> str:
        """The torch side as canonical JSON; stored with the goldens to detect stale files."""
        spec = {
            "optimizer": self.torch.optimizer,
            "kwargs": _plain(dict(self.torch.kwargs)),
            "groups": _plain(self.torch.groups),
            "scheduler": _plain(self.torch.scheduler),
            "steps_per_epoch": self.steps_per_epoch,
            "epochs": self.epochs,
            "values": None if self.values is None else list(self.values),
        }
        return json.dumps(spec, sort_keys=True)


# --- schedules stepped per epoch ------------------------------------------------------------------


def _per_epoch(
    id: str,
    torch: TorchRun,
    schedule: Callable[[], Schedule],
    optimizer: Callable[[Schedule], optkit.GradientTransformation],
    steps_per_epoch: int,
    epochs: int,
) -> EpochCase:
    """A case whose optimizer takes ``per_epoch(schedule(), steps_per_epoch)``: ``schedule`` is
    built with torch's arguments as they are, counted in epochs."""

    def make_schedule(spe: int) -> Schedule:
        return schedules.per_epoch(schedule(), spe)

    return EpochCase(
        id,
        torch,
        lambda spe: optimizer(make_schedule(spe)),
        steps_per_epoch,
        epochs,
        make_schedule=make_schedule,
    )


# PyTorch's MNIST example: Adadelta(lr=1.0) and StepLR(step_size=1, gamma=0.7) once per epoch.
MNIST = _per_epoch(
    "step_lr-mnist_adadelta",
    TorchRun("Adadelta", {"lr": 1.0}, TorchScheduler("StepLR", {"step_size": 1, "gamma": 0.7})),
    lambda: schedules.step_lr(1.0, step_size=1, gamma=0.7),
    lambda lr: optkit.adadelta(lr),
    steps_per_epoch=8,
    epochs=38,
)

SCHEDULE_CASES: tuple[EpochCase, ...] = (
    MNIST,
    _per_epoch(
        "cosine_annealing_lr-sgd_momentum",
        TorchRun(
            "SGD",
            {"lr": 0.05, "momentum": 0.9},
            TorchScheduler("CosineAnnealingLR", {"T_max": 30, "eta_min": 1e-3}),
        ),
        lambda: schedules.cosine_annealing_lr(0.05, T_max=30, eta_min=1e-3),
        lambda lr: optkit.sgd(lr, momentum=0.9),
        steps_per_epoch=10,
        epochs=30,
    ),
    _per_epoch(
        "multistep_lr-adam",
        TorchRun(
            "Adam",
            {"lr": 0.01},
            TorchScheduler("MultiStepLR", {"milestones": [5, 12, 20], "gamma": 0.3}),
        ),
        lambda: schedules.multistep_lr(0.01, [5, 12, 20], gamma=0.3),
        lambda lr: optkit.adam(lr),
        steps_per_epoch=13,
        epochs=24,
    ),
    _per_epoch(
        "one_cycle_lr-adamw",
        TorchRun(
            "AdamW",
            {"lr": 0.05, "weight_decay": 0.1},
            TorchScheduler(
                "OneCycleLR", {"max_lr": 0.05, "total_steps": 20, "cycle_momentum": False}
            ),
        ),
        lambda: schedules.one_cycle_lr(0.05, total_steps=20),
        lambda lr: optkit.adamw(lr, weight_decay=0.1),
        steps_per_epoch=15,
        epochs=20,
    ),
    _per_epoch(
        "exponential_lr-injected_sgd_nesterov",
        TorchRun(
            "SGD",
            {"lr": 0.1, "momentum": 0.9, "nesterov": True},
            TorchScheduler("ExponentialLR", {"gamma": 0.85}),
        ),
        lambda: schedules.exponential_lr(0.1, gamma=0.85),
        lambda lr: optkit.inject_hyperparams(optkit.sgd)(
            learning_rate=lr, momentum=0.9, nesterov=True
        ),
        steps_per_epoch=20,
        epochs=15,
    ),
    _per_epoch(
        "linear_lr-rmsprop_one_update_per_epoch",
        TorchRun(
            "RMSprop",
            {"lr": 0.01},
            TorchScheduler("LinearLR", {"start_factor": 0.1, "total_iters": 40}),
        ),
        lambda: schedules.linear_lr(0.01, start_factor=0.1, total_iters=40),
        lambda lr: optkit.rmsprop(lr),
        steps_per_epoch=1,
        epochs=300,
    ),
)


# --- ReduceLROnPlateau stepped per epoch ----------------------------------------------------------


def _plateau(**kwargs: Any) -> TorchScheduler:
    return TorchScheduler("ReduceLROnPlateau", kwargs)


def _plateau_case(
    id: str,
    torch: TorchRun,
    make_optkit: Callable[[int], optkit.GradientTransformation],
    steps_per_epoch: int,
    values: tuple[float, ...],
) -> EpochCase:
    """A run of one epoch per validation loss in ``values``."""
    return EpochCase(id, torch, make_optkit, steps_per_epoch, len(values), values)


def _chained(
    make_optimizer: Callable[[], optkit.GradientTransformation], lr: float, **kwargs: Any
) -> Callable[[int], optkit.GradientTransformation]:
    """``chain(optimizer, reduce_lr_on_plateau(**kwargs, learning_rate=lr))``."""
    return lambda spe: optkit.chain(
        make_optimizer(), optkit.reduce_lr_on_plateau(learning_rate=lr, **kwargs)
    )


MIN_REL = {"factor": 0.5, "patience": 2, "cooldown": 2, "min_lr": 0.01}
MIN_ABS = {"factor": 0.2, "patience": 1, "threshold": 0.25, "threshold_mode": "abs", "eps": 1e-4}
MAX_REL = {"mode": "max", "factor": 0.3, "patience": 1, "threshold": 0.05, "cooldown": 1}
MAX_ABS = {
    "mode": "max",
    "factor": 0.5,
    "patience": 0,
    "threshold": 0.1,
    "threshold_mode": "abs",
    "min_lr": 0.002,
}
GROUPS = {"factor": 0.5, "patience": 1, "eps": 1e-3}
GROUP_MIN_LRS = (0.02, 0.001)
INJECTED = {"factor": 0.5, "patience": 2, "cooldown": 1}


def _param_groups(spe: int) -> optkit.GradientTransformation:
    """torch's ``SGD([{w, lr 0.1}, {b, lr 0.02}], momentum=0.9)`` with
    ``ReduceLROnPlateau(min_lr=[0.02, 0.001])``: a plateau in each group, with its own lr and
    min_lr."""

    def group(learning_rate: float, momentum: float, min_lr: float) -> Any:
        return optkit.chain(
            optkit.sgd(learning_rate, momentum=momentum),
            optkit.reduce_lr_on_plateau(learning_rate=learning_rate, min_lr=min_lr, **GROUPS),
        )

    return optkit.param_groups(
        group,
        [
            {"params": "w", "learning_rate": 0.1, "min_lr": GROUP_MIN_LRS[0]},
            {"params": "b", "learning_rate": 0.02, "min_lr": GROUP_MIN_LRS[1]},
        ],
        momentum=0.9,
    )


def _injected(spe: int) -> optkit.GradientTransformation:
    """The plateau inside an injected optimizer: its state sits in ``inner_state``."""

    def make(learning_rate: Any, momentum: Any) -> optkit.GradientTransformation:
        return optkit.chain(
            optkit.sgd(learning_rate, momentum=momentum),
            optkit.reduce_lr_on_plateau(learning_rate=0.05, **INJECTED),
        )

    return optkit.inject_hyperparams(make)(learning_rate=0.05, momentum=0.9)


PLATEAU_CASES: tuple[EpochCase, ...] = (
    _plateau_case(
        "min_rel-patience_cooldown_floor-sgd_momentum",
        TorchRun("SGD", {"lr": 0.1, "momentum": 0.9}, _plateau(**MIN_REL)),
        _chained(lambda: optkit.sgd(0.1, momentum=0.9), 0.1, **MIN_REL),
        steps_per_epoch=5,
        # 2.9999 is no improvement on 3.0 (rel threshold 1e-4): three of them reduce.
        values=_script(5.0, 4.0, 3.0, (3.0, 5), (2.9999, 3), 2.5, (2.5, 9), math.inf, (2.4, 8)),
    ),
    _plateau_case(
        "min_abs-eps-adam",
        TorchRun("Adam", {"lr": 0.01}, _plateau(**MIN_ABS)),
        _chained(lambda: optkit.adam(0.01), 0.01, **MIN_ABS),
        steps_per_epoch=4,
        values=(4.0, 3.9, 3.8, 3.5, 3.3, 3.2, 2.0, 1.9, 1.8, 1.7, 1.0, 0.9, 0.85, 0.8, *[0.8] * 6),
    ),
    _plateau_case(
        "max_rel-cooldown-adamw",
        TorchRun("AdamW", {"lr": 0.02, "weight_decay": 0.1}, _plateau(**MAX_REL)),
        _chained(lambda: optkit.adamw(0.02, weight_decay=0.1), 0.02, **MAX_REL),
        steps_per_epoch=3,
        values=_script(0.5, 0.6, 0.62, 0.7, 0.71, 0.72, (0.8, 5), 0.9, -math.inf, (0.9, 10)),
    ),
    _plateau_case(
        "max_abs-min_lr-rmsprop",
        TorchRun("RMSprop", {"lr": 0.01, "momentum": 0.5}, _plateau(**MAX_ABS)),
        _chained(lambda: optkit.rmsprop(0.01, momentum=0.5), 0.01, **MAX_ABS),
        steps_per_epoch=6,
        values=(0.0, 0.4, 0.45, 0.6, 0.65, 0.7, 0.75, 1.0, 1.05, 1.1, 1.15, 1.2),
    ),
    _plateau_case(
        "param_groups-min_lr_list-sgd",
        TorchRun(
            "SGD",
            {"lr": 0.1, "momentum": 0.9},
            _plateau(**GROUPS, min_lr=list(GROUP_MIN_LRS)),
            groups=({"lr": 0.1}, {"lr": 0.02}),
        ),
        _param_groups,
        steps_per_epoch=5,
        values=_script(3.0, (3.0, 15)),
    ),
    _plateau_case(
        "injected_sgd-nan",
        TorchRun("SGD", {"lr": 0.05, "momentum": 0.9}, _plateau(**INJECTED)),
        _injected,
        steps_per_epoch=7,
        values=_script(2.0, 1.5, math.nan, 1.6, 1.4, (math.nan, 4), (1.4, 4), 1.0, (1.0, 4)),
    ),
)

# The float32 runs: torch in float32, optkit at JAX's default precision.
FLOAT32_CASES: tuple[EpochCase, ...] = (MNIST, PLATEAU_CASES[0])


def plateau_states(state: optkit.OptState) -> list[optkit.ReduceLROnPlateauState]:
    """Every plateau state in ``state``, in tree order (param groups in order)."""
    is_plateau = lambda node: isinstance(node, optkit.ReduceLROnPlateauState)
    return [s for s in jax.tree.leaves(state, is_leaf=is_plateau) if is_plateau(s)]


def case_ids(cases: Sequence[EpochCase]) -> list[str]:
    return [case.id for case in cases]
