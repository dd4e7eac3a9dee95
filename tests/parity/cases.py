"""The one table that drives every parity case: optkit optimizer vs the torch.optim setup.

Each optimizer has a dict of named hyperparameter variants, written with optkit's argument names;
together they switch on every flag, alone and combined. ``to_torch_kwargs`` derives torch's
arguments from the same dict, so a row cannot disagree with itself. Adding an optimizer is one
variants dict plus one ``_rows`` call.

Learning rates are chosen so that 30 steps move every leaf noticeably while staying well
conditioned in float32 (no chaotic amplification of rounding differences). The amsgrad variants use
b2=0.9 so the second moment actually shrinks and the running max differs from plain Adam. Rows
with maximize use smaller learning rates: gradient ascent on this mostly convex loss amplifies any
difference, rounding included, at every step.

torch is referenced by name (``"SGD"``, ``"clip_grad_norm_"``) so this table imports without torch:
the golden-file tests need only optkit and numpy.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Callable, Mapping
from typing import Any

import optkit

Kwargs = Mapping[str, Any]


@dataclasses.dataclass(frozen=True)
class Case:
    """One parity case: an optkit optimizer and the torch.optim setup it must reproduce.

    Attributes:
        id: Unique name, used for test ids and golden-file keys.
        make_optkit: Builds the optkit transform (a fresh one per run).
        torch_optimizer: Class name in ``torch.optim``.
        torch_kwargs: Keyword arguments for that class (everything except the params).
        torch_clip: Optional ``(function name in torch.nn.utils, threshold)`` applied to the
            gradients before each ``optimizer.step()``.
    """

    id: str
    make_optkit: Callable[[], optkit.GradientTransformation]
    torch_optimizer: str
    torch_kwargs: Kwargs
    torch_clip: tuple[str, float] | None = None

    def torch_spec(self) -> str:
        """The torch side as canonical JSON; stored with the goldens to detect stale files."""
        spec = {
            "optimizer": self.torch_optimizer,
            "kwargs": dict(self.torch_kwargs),
            "clip": self.torch_clip,
        }
        return json.dumps(spec, sort_keys=True)


def to_torch_kwargs(kwargs: Kwargs) -> dict[str, Any]:
    """Translate optkit keyword arguments to torch.optim's names (lr, betas); the rest match."""
    torch_kwargs = dict(kwargs)
    if "learning_rate" in torch_kwargs:
        torch_kwargs["lr"] = torch_kwargs.pop("learning_rate")
    if "b1" in torch_kwargs or "b2" in torch_kwargs:
        # torch takes both betas together; fill the missing one with the shared default.
        torch_kwargs["betas"] = (torch_kwargs.pop("b1", 0.9), torch_kwargs.pop("b2", 0.999))
    return torch_kwargs


SGD_VARIANTS: dict[str, Kwargs] = {
    "plain": {"learning_rate": 0.05},
    "momentum": {"learning_rate": 0.02, "momentum": 0.9},
    "dampening": {"learning_rate": 0.02, "momentum": 0.9, "dampening": 0.3},
    "nesterov": {"learning_rate": 0.02, "momentum": 0.9, "nesterov": True},
    "weight_decay": {"learning_rate": 0.05, "weight_decay": 0.1},
    "maximize": {"learning_rate": 0.005, "maximize": True},
    # torch forbids nesterov with dampening, so "everything on" takes two rows.
    "dampening_wd_maximize": {
        "learning_rate": 0.002,
        "momentum": 0.8,
        "dampening": 0.5,
        "weight_decay": 0.1,
        "maximize": True,
    },
    "nesterov_wd_maximize": {
        "learning_rate": 0.001,
        "momentum": 0.8,
        "nesterov": True,
        "weight_decay": 0.1,
        "maximize": True,
    },
}

ADAM_VARIANTS: dict[str, Kwargs] = {
    "plain": {"learning_rate": 0.01},
    "amsgrad": {"learning_rate": 0.01, "b2": 0.9, "amsgrad": True},
    "weight_decay": {"learning_rate": 0.01, "weight_decay": 0.1},
    "maximize": {"learning_rate": 0.01, "maximize": True},
    "betas_eps": {"learning_rate": 0.01, "b1": 0.8, "b2": 0.99, "eps": 1e-4},
    "amsgrad_wd_maximize": {
        "learning_rate": 0.01,
        "b2": 0.9,
        "amsgrad": True,
        "weight_decay": 0.1,
        "maximize": True,
    },
}

ADAMW_VARIANTS: dict[str, Kwargs] = {
    "default_wd": {"learning_rate": 0.01},
    "amsgrad": {"learning_rate": 0.01, "b2": 0.9, "amsgrad": True},
    "maximize": {"learning_rate": 0.01, "maximize": True},
    "wd": {"learning_rate": 0.01, "weight_decay": 0.1},
    "combined": {
        "learning_rate": 0.01,
        "b1": 0.8,
        "b2": 0.9,
        "eps": 1e-4,
        "weight_decay": 0.1,
        "amsgrad": True,
        "maximize": True,
    },
}

ADAGRAD_VARIANTS: dict[str, Kwargs] = {
    "plain": {"learning_rate": 0.1},
    "lr_decay": {"learning_rate": 0.1, "lr_decay": 0.05},
    "initial_accumulator": {"learning_rate": 0.1, "initial_accumulator_value": 0.5},
    "weight_decay": {"learning_rate": 0.1, "weight_decay": 0.1},
    "eps": {"learning_rate": 0.1, "eps": 1e-2},
    "maximize": {"learning_rate": 0.05, "maximize": True},
    "combined": {
        "learning_rate": 0.1,
        "lr_decay": 0.05,
        "initial_accumulator_value": 0.5,
        "weight_decay": 0.1,
        "eps": 1e-2,
        "maximize": True,
    },
}

RMSPROP_VARIANTS: dict[str, Kwargs] = {
    "plain": {"learning_rate": 0.01},
    "alpha_eps": {"learning_rate": 0.01, "alpha": 0.9, "eps": 1e-3},
    "centered": {"learning_rate": 0.01, "centered": True},
    "momentum": {"learning_rate": 0.01, "momentum": 0.5},
    "weight_decay": {"learning_rate": 0.01, "weight_decay": 0.1},
    "maximize": {"learning_rate": 0.005, "maximize": True},
    "centered_momentum_wd": {
        "learning_rate": 0.01,
        "centered": True,
        "momentum": 0.5,
        "weight_decay": 0.1,
    },
}

# Thresholds well below the problem's gradients (max |g| ~ 4.4, norm ~ 14 at the start), so
# clipping stays active for (nearly) all 30 steps; test_parity.py checks that it bites.
CLIP_VALUE = 0.5
CLIP_NORM = 2.0
CLIPPED_SGD: Kwargs = {"learning_rate": 0.05, "momentum": 0.5}


def _rows(
    family: str,
    factory: Callable[..., optkit.GradientTransformation],
    torch_optimizer: str,
    variants: Mapping[str, Kwargs],
) -> list[Case]:
    """One case per variant, with the torch kwargs derived from the optkit ones."""
    return [
        Case(
            id=f"{family}-{name}",
            make_optkit=functools.partial(factory, **kwargs),
            torch_optimizer=torch_optimizer,
            torch_kwargs=to_torch_kwargs(kwargs),
        )
        for name, kwargs in variants.items()
    ]


def _clip_then_sgd(
    clip: Callable[[float], optkit.GradientTransformation], threshold: float
) -> optkit.GradientTransformation:
    """optkit's side of a clip row: the clip primitive chained before the same SGD."""
    return optkit.chain(clip(threshold), optkit.sgd(**CLIPPED_SGD))


CASES: tuple[Case, ...] = (
    *_rows("sgd", optkit.sgd, "SGD", SGD_VARIANTS),
    *_rows("adam", optkit.adam, "Adam", ADAM_VARIANTS),
    *_rows("adamw", optkit.adamw, "AdamW", ADAMW_VARIANTS),
    *_rows("adagrad", optkit.adagrad, "Adagrad", ADAGRAD_VARIANTS),
    *_rows("rmsprop", optkit.rmsprop, "RMSprop", RMSPROP_VARIANTS),
    Case(
        id="clip_value-sgd",
        make_optkit=functools.partial(_clip_then_sgd, optkit.clip, CLIP_VALUE),
        torch_optimizer="SGD",
        torch_kwargs=to_torch_kwargs(CLIPPED_SGD),
        torch_clip=("clip_grad_value_", CLIP_VALUE),
    ),
    Case(
        id="clip_global_norm-sgd",
        make_optkit=functools.partial(_clip_then_sgd, optkit.clip_by_global_norm, CLIP_NORM),
        torch_optimizer="SGD",
        torch_kwargs=to_torch_kwargs(CLIPPED_SGD),
        torch_clip=("clip_grad_norm_", CLIP_NORM),
    ),
)

CASES_BY_ID: dict[str, Case] = {case.id: case for case in CASES}
if len(CASES_BY_ID) != len(CASES):
    raise ValueError("parity case ids must be unique")
