"""torch.optim.lr_scheduler run live: the values optkit's schedules and plateau transform match.

torch is imported inside the functions, so the golden-file tests import this module without it.
Tests that need torch call ``require_torch()``: it skips when torch is missing, unless
``OPTKIT_REQUIRE_TORCH=1`` (as in CI), where a missing torch is a failure.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from tests.schedules.cases import PlateauCase, ScheduleCase, TorchScheduler
from tests.support.torch_oracle import require_torch


def build_scheduler(optimizer: Any, spec: TorchScheduler) -> Any:
    """Build ``spec`` on ``optimizer``, the children of SequentialLR and ChainedScheduler first."""
    import torch

    kwargs = dict(spec.kwargs)
    if spec.name == "ChainedScheduler":
        children = [build_scheduler(optimizer, child) for child in kwargs["schedulers"]]
        return torch.optim.lr_scheduler.ChainedScheduler(children, optimizer=optimizer)
    if spec.name == "SequentialLR":
        kwargs["schedulers"] = [build_scheduler(optimizer, child) for child in kwargs["schedulers"]]
    module = torch.optim.swa_utils if spec.name == "SWALR" else torch.optim.lr_scheduler
    return getattr(module, spec.name)(optimizer, **kwargs)


def _one_param_sgd(lr: float) -> tuple[Any, Any]:
    import torch

    param = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    return param, torch.optim.SGD([param], lr=lr)


def torch_schedule(case: ScheduleCase) -> np.ndarray:
    """``param_groups[0]["lr"]`` before each of ``case.steps`` updates (after k scheduler steps)."""
    require_torch()
    _, optimizer = _one_param_sgd(case.lr)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's deprecation notes about chained schedulers
        scheduler = build_scheduler(optimizer, case.torch)
        lrs = []
        for _ in range(case.steps):
            lrs.append(float(optimizer.param_groups[0]["lr"]))
            optimizer.step()
            scheduler.step()
    return np.asarray(lrs)


PLATEAU_INIT = np.array([1.5, -0.5, 2.0])
"""The plateau runs descend ``sum(p^2 / 2 + sin(p))`` from here; its gradient is ``p + cos(p)``."""


def torch_plateau(case: PlateauCase) -> tuple[np.ndarray, np.ndarray]:
    """A float64 SGD run with ReduceLROnPlateau fed ``case.values``.

    Returns the lr used by each update and the params after each update.
    """
    torch = require_torch()
    param = torch.tensor(PLATEAU_INIT, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.SGD([param], lr=case.lr)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, **case.kwargs)
    lrs, params = [], []
    for value in case.values:
        lrs.append(float(optimizer.param_groups[0]["lr"]))
        optimizer.zero_grad()
        param.grad = param.detach() + torch.cos(param.detach())
        optimizer.step()
        scheduler.step(value)
        params.append(param.detach().numpy().copy())
    return np.asarray(lrs), np.stack(params)
