"""The table that drives the weight-averaging parity tests: optimizer runs, each with the
averaging set-ups that watch it, next to torch's optimizer + ``AveragedModel`` loop.

A run is one optimizer (optkit's keyword arguments; torch's are derived) on the standard parity
problem. Its averaging set-ups all watch the same trajectory, so optkit runs them together: the
wrappers nest, ``weight_averaging(weight_averaging(optimizer, b), a)``, each averaging the same
new params (the updates pass through them unchanged), and one compiled step per run and dtype
serves every set-up. torch runs one ``AveragedModel`` per set-up on the same model, updated after
``optimizer.step()`` when the set-up's condition holds.

A run may drive its learning rate with SWALR (``SwaLr``): torch's usual loop, another scheduler
until the hand-over, then ``SWALR`` stepped once per update.

torch is named by class only, so this module imports without torch.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any

import optkit
from optkit import schedules
from tests.parity.cases import to_torch_kwargs

STEPS = 40
Kwargs = Mapping[str, Any]


@dataclasses.dataclass(frozen=True)
class Averaging:
    """One ``weight_averaging`` set-up; torch's side is ``AveragedModel(model, multi_avg_fn=
    get_ema_multi_avg_fn(decay))`` (``"ema"``) or ``get_swa_multi_avg_fn()`` (``"swa"``),
    whose ``update_parameters(model)`` follows update ``c`` when :meth:`due` says so."""

    mode: str
    decay: float = 0.999
    start_step: int = 0
    every_k: int = 1

    @property
    def id(self) -> str:
        decay = f"{self.decay:g}-" if self.mode == "ema" else ""
        return f"{self.mode}-{decay}from{self.start_step}-every{self.every_k}"

    def kwargs(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def due(self, count: int) -> bool:
        """Whether torch's loop averages after update ``count`` (0-based): plain Python."""
        return count >= self.start_step and (count - self.start_step) % self.every_k == 0


@dataclasses.dataclass(frozen=True)
class SwaLr:
    """torch: ``CosineAnnealingLR(T_max)`` until epoch ``handover`` (none when 0), then
    ``SWALR(swa_lr, anneal_epochs, anneal_strategy)``; one of them is stepped at the end of each
    epoch of ``steps_per_epoch`` updates (``if epoch >= handover``, torch's ``epoch >
    swa_start``). With several updates per epoch, torch's loop also averages at the end of those
    epochs, which the run's set-ups must reproduce with ``start_step`` and ``every_k``."""

    T_max: int
    handover: int
    swa_lr: float
    anneal_epochs: int
    anneal_strategy: str
    steps_per_epoch: int = 1

    def schedule(self, learning_rate: float) -> optkit.Schedule:
        """The same learning rates as an optkit schedule of the update count."""
        swa_args = (self.swa_lr, self.anneal_epochs, self.anneal_strategy)
        if self.handover == 0:
            per_epoch = schedules.swa_lr(learning_rate, *swa_args)
        else:
            cosine = schedules.cosine_annealing_lr(learning_rate, T_max=self.T_max)
            # SWALR anneals from the lr in force when it takes over: the cosine's there.
            swa = schedules.swa_lr(float(cosine(self.handover)), *swa_args)
            per_epoch = schedules.join_schedules([cosine, swa], boundaries=[self.handover])
        if self.steps_per_epoch == 1:
            return per_epoch
        return lambda count: per_epoch(count // self.steps_per_epoch)


@dataclasses.dataclass(frozen=True)
class AveragingRun:
    """An optimizer run and the averaging set-ups that watch it."""

    id: str
    optimizer: str
    torch_optimizer: str
    kwargs: Kwargs
    averagings: tuple[Averaging, ...]
    swa_lr: SwaLr | None = None
    inject: bool = False  # build the optimizer with optkit.inject_hyperparams
    steps: int = STEPS

    def torch_kwargs(self) -> dict[str, Any]:
        return to_torch_kwargs(self.kwargs)

    def make_optimizer(self) -> optkit.GradientTransformation:
        kwargs = dict(self.kwargs)
        if self.swa_lr is not None:
            kwargs["learning_rate"] = self.swa_lr.schedule(kwargs["learning_rate"])
        factory = getattr(optkit, self.optimizer)
        return (optkit.inject_hyperparams(factory) if self.inject else factory)(**kwargs)

    def make_optkit(self) -> optkit.GradientTransformation:
        """Every set-up around the optimizer, ``averagings[0]`` outermost."""
        tx = self.make_optimizer()
        for averaging in reversed(self.averagings):
            tx = optkit.weight_averaging(tx, **averaging.kwargs())
        return tx

    def torch_spec(self) -> str:
        """The torch side as canonical JSON; stored with the goldens to detect stale files."""
        spec = {
            "optimizer": self.torch_optimizer,
            "kwargs": self.torch_kwargs(),
            "averagings": [a.kwargs() for a in self.averagings],
            "swa_lr": None if self.swa_lr is None else dataclasses.asdict(self.swa_lr),
            "steps": self.steps,
        }
        return json.dumps(spec, sort_keys=True)


def averaging_states(run: AveragingRun, state: Any) -> list[Any]:
    """The run's nested averaging states, outermost (``averagings[0]``) first."""
    found = []
    for _ in run.averagings:
        assert isinstance(state, optkit.WeightAveragingState)
        found.append(state)
        state = state.inner_state
    return found


RUNS: tuple[AveragingRun, ...] = (
    AveragingRun(
        id="sgd_momentum",
        optimizer="sgd",
        torch_optimizer="SGD",
        kwargs={"learning_rate": 0.02, "momentum": 0.9, "nesterov": True},
        averagings=(
            Averaging("ema", decay=0.9),
            Averaging("ema", decay=0.5, start_step=3, every_k=2),  # lerp's weight >= 0.5 branch
            Averaging("ema", decay=0.999, every_k=5),
            Averaging("swa"),
            Averaging("swa", start_step=10, every_k=4),
        ),
    ),
    AveragingRun(
        id="nadam",
        optimizer="nadam",
        torch_optimizer="NAdam",
        kwargs={"learning_rate": 0.05, "momentum_decay": 0.1},
        averagings=(
            Averaging("ema", decay=0.99, every_k=2),
            Averaging("swa", start_step=1),
            Averaging("swa", start_step=STEPS - 1),  # a single averaging: a copy
        ),
    ),
    # torch's SWA recipe: SGD under a cosine schedule, then SWALR and an equal-weight average
    # from the hand-over on; the optimizer is injected, as a loop that logs its lr would build it.
    AveragingRun(
        id="sgd_swalr_after_cosine",
        optimizer="sgd",
        torch_optimizer="SGD",
        kwargs={"learning_rate": 0.05, "momentum": 0.9},
        averagings=(Averaging("swa", start_step=15), Averaging("ema", decay=0.9, start_step=15)),
        swa_lr=SwaLr(T_max=60, handover=15, swa_lr=0.01, anneal_epochs=5, anneal_strategy="cos"),
        inject=True,
    ),
    # The example of torch's AveragedModel docs, scaled down: epochs of 4 updates, SWA from the
    # end of epoch swa_start + 1 = 7 on, schedulers stepped once per epoch.
    AveragingRun(
        id="sgd_swalr_per_epoch",
        optimizer="sgd",
        torch_optimizer="SGD",
        kwargs={"learning_rate": 0.05, "momentum": 0.9},
        averagings=(Averaging("swa", start_step=(6 + 2) * 4 - 1, every_k=4),),
        swa_lr=SwaLr(
            T_max=12,
            handover=6 + 1,
            swa_lr=0.02,
            anneal_epochs=2,
            anneal_strategy="cos",
            steps_per_epoch=4,
        ),
        steps=48,
    ),
    # AdamW under SWALR from the first update (a linear anneal), watched by EMAs too.
    AveragingRun(
        id="adamw_swalr_linear",
        optimizer="adamw",
        torch_optimizer="AdamW",
        kwargs={"learning_rate": 0.05, "weight_decay": 0.1},
        averagings=(
            Averaging("ema", decay=0.95),
            Averaging("ema", decay=0.8, start_step=20),
            Averaging("swa", start_step=7, every_k=3),
        ),
        swa_lr=SwaLr(T_max=0, handover=0, swa_lr=0.005, anneal_epochs=10, anneal_strategy="linear"),
    ),
)
BY_ID = {run.id: run for run in RUNS}
