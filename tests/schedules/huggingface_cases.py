"""The Hugging Face schedule table: ``schedules.get_scheduler`` next to transformers' own.

Each row is one call of ``get_scheduler(name, lr, num_warmup_steps, num_training_steps,
scheduler_specific_kwargs)``, made with the same arguments on optkit's side and on
transformers' (over a torch SGD optimizer with that lr). Every name has rows with and without
warmup, and every row runs past ``num_training_steps``. transformers is imported only inside
:func:`transformers_schedule`, so the golden-file tests need neither torch nor transformers.
"""

from __future__ import annotations

import dataclasses
import json
import os
import warnings
from collections.abc import Mapping
from types import ModuleType
from typing import Any

import numpy as np
import pytest

from optkit import schedules
from optkit._base import Schedule
from tests.support.torch_oracle import require_torch

STEPS = 400


@dataclasses.dataclass(frozen=True)
class HuggingFaceCase:
    """The arguments of one ``get_scheduler`` call, shared by optkit and transformers."""

    id: str
    name: str
    lr: float
    num_warmup_steps: int | None
    num_training_steps: int | None
    kwargs: Mapping[str, Any] | None = None
    steps: int = STEPS

    def make_schedule(self) -> Schedule:
        with warnings.catch_warnings():  # giving both of warmup_stable_decay's lengths warns
            warnings.simplefilter("ignore", UserWarning)
            return schedules.get_scheduler(
                self.name, self.lr, self.num_warmup_steps, self.num_training_steps, self.kwargs
            )

    def spec(self) -> str:
        """The call as canonical JSON; stored with the goldens to detect stale files."""
        fields = dataclasses.asdict(self)
        fields.pop("id")
        return json.dumps(fields, sort_keys=True)


def _rows(name: str, *rows: tuple[str, float, int | None, int | None, dict | None]):
    return [HuggingFaceCase(f"{name}-{row_id}", name, *args) for row_id, *args in rows]


WSD = "warmup_stable_decay"
HUGGINGFACE_CASES: tuple[HuggingFaceCase, ...] = (
    *_rows(
        "linear",
        ("warmup_30", 0.1, 30, 300, None),
        ("no_warmup", 5e-5, 0, 250, None),
        ("warmup_past_training_steps", 0.1, 50, 40, None),
    ),
    *_rows(
        "cosine",
        ("warmup_20", 0.1, 20, 300, None),
        ("no_warmup_one_and_a_half_cycles", 3e-4, 0, 200, {"num_cycles": 1.5}),
        ("rises_again_twice", 0.1, 5, 120, None),
    ),
    *_rows(
        "cosine_with_restarts",
        ("three_restarts", 0.1, 25, 300, {"num_cycles": 3}),
        ("no_warmup_one_cycle", 0.1, 0, 320, None),
        ("fractional_cycles", 0.02, 10, 290, {"num_cycles": 2.5}),
    ),
    *_rows(
        "polynomial",
        ("defaults", 0.1, 20, 300, None),
        ("no_warmup_quadratic", 0.1, 0, 250, {"lr_end": 1e-4, "power": 2.0}),
        ("integer_power", 0.05, 10, 200, {"lr_end": 0.01, "power": 3}),
        ("warmup_past_training_steps", 0.1, 50, 30, {"power": 0.5, "lr_end": 0.0}),
    ),
    *_rows(
        "constant",
        ("plain", 0.1, None, None, None),
        ("ignores_warmup_and_options", 0.1, 100, 300, {"num_cycles": 2}),
    ),
    *_rows(
        "constant_with_warmup",
        ("warmup_50", 0.1, 50, None, None),
        ("no_warmup", 0.1, 0, 300, None),
    ),
    *_rows(
        "inverse_sqrt",
        ("timescale_is_warmup", 0.1, 100, None, None),
        ("no_warmup_timescale_10000", 0.1, 0, None, None),
        ("timescale_50", 0.1, 20, 300, {"timescale": 50}),
        ("timescale_below_warmup", 0.1, 60, None, {"timescale": 30}),
    ),
    *_rows(
        "cosine_with_min_lr",
        ("min_lr", 0.1, 20, 300, {"min_lr": 1e-4}),
        ("no_warmup_min_lr_rate_one_cycle", 0.1, 0, 250, {"min_lr_rate": 0.1, "num_cycles": 1.0}),
    ),
    *_rows(
        "cosine_warmup_with_min_lr",
        ("min_lr_rate", 0.1, 20, 300, {"min_lr_rate": 0.05}),
        ("no_warmup_min_lr", 0.1, 0, 250, {"min_lr": 1e-3}),
        (
            "warmup_lr_rate",
            0.1,
            30,
            280,
            {"min_lr_rate": 0.1, "warmup_lr_rate": 0.2, "num_cycles": 0.75},
        ),
        ("one_warmup_step", 0.1, 1, 300, {"min_lr_rate": 0.0, "warmup_lr_rate": 0.5}),
    ),
    *_rows(
        WSD,
        ("from_training_steps", 0.1, 30, 300, {"num_decay_steps": 100}),
        (
            "no_warmup_linear_decay_floor",
            0.1,
            0,
            None,
            {
                "num_decay_steps": 50,
                "num_stable_steps": 100,
                "decay_type": "linear",
                "min_lr_ratio": 0.1,
            },
        ),
        (
            "cosine_warmup_sqrt_decay",
            0.1,
            40,
            None,
            {
                "num_decay_steps": 80,
                "num_stable_steps": 60,
                "warmup_type": "cosine",
                "decay_type": "1-sqrt",
            },
        ),
        (
            "sqrt_warmup_negative_stable",
            0.1,
            50,
            120,
            {"num_decay_steps": 100, "warmup_type": "1-sqrt"},
        ),
        (
            "both_lengths_given",
            0.1,
            20,
            300,
            {
                "num_decay_steps": 60,
                "num_stable_steps": 100,
                "num_cycles": 1.0,
                "min_lr_ratio": 0.05,
            },
        ),
    ),
)


def require_transformers() -> ModuleType:
    """``transformers.optimization``; skipped without it, a failure where torch is required."""
    require_torch()
    if os.environ.get("OPTKIT_REQUIRE_TORCH") != "1":
        return pytest.importorskip("transformers.optimization", reason="transformers is missing")
    try:
        import transformers.optimization
    except ImportError as error:
        pytest.fail(f"OPTKIT_REQUIRE_TORCH=1 but transformers cannot be imported: {error}")
    return transformers.optimization


def transformers_optimizer(lr: float) -> Any:
    """A float64 torch SGD optimizer over one parameter, with learning rate ``lr``."""
    import torch

    param = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    return torch.optim.SGD([param], lr=lr)


def stepped_lrs(optimizer: Any, scheduler: Any, steps: int) -> np.ndarray:
    """``param_groups[0]["lr"]`` before each of ``steps`` updates (after k scheduler steps)."""
    lrs = []
    for _ in range(steps):
        lrs.append(float(optimizer.param_groups[0]["lr"]))
        optimizer.step()
        scheduler.step()
    return np.asarray(lrs)


def transformers_schedule(case: HuggingFaceCase) -> np.ndarray:
    """transformers' lr before each of ``case.steps`` updates."""
    optimization = require_transformers()
    optimizer = transformers_optimizer(case.lr)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scheduler = optimization.get_scheduler(
            case.name,
            optimizer,
            num_warmup_steps=case.num_warmup_steps,
            num_training_steps=case.num_training_steps,
            scheduler_specific_kwargs=None if case.kwargs is None else dict(case.kwargs),
        )
    return stepped_lrs(optimizer, scheduler, case.steps)
