"""torch's gradient-accumulation loop run live: the values ``accumulate_gradients`` matches.

torch is imported inside the functions, so the golden-file tests import this module without it.
Tests that need torch call ``require_torch()``: it skips when torch is missing, unless
``OPTKIT_REQUIRE_TORCH=1`` (as in CI), where a missing torch is a failure.
"""

from __future__ import annotations

import warnings

import numpy as np

from tests.loop.accumulation_cases import LEAVES, AccumulationCase, initial_params, loss
from tests.loop.accumulation_cases import micro_batches as make_micro_batches
from tests.schedules.oracle import build_scheduler
from tests.support.torch_oracle import require_torch


def torch_trajectory(case: AccumulationCase, dtype: str) -> dict[str, np.ndarray]:
    """The params after each of ``case.steps`` optimizer steps, by leaf, as torch's loop::

    for each step, for each of k micro-batches: (loss / k).backward()
    opt.step(); scheduler.step(); opt.zero_grad()
    """
    torch = require_torch()
    params = {
        name: torch.tensor(value, requires_grad=True)
        for name, value in initial_params(dtype).items()
    }
    spec = case.torch
    if spec.groups:
        groups = [{"params": [params[leaf]], **overrides} for leaf, overrides in spec.groups]
    else:
        groups = [params[leaf] for leaf in LEAVES]
    optimizer = getattr(torch.optim, spec.name)(groups, **spec.kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's notes about scheduler call order
        scheduler = build_scheduler(optimizer, spec.scheduler) if spec.scheduler else None
    xs, ys = make_micro_batches(case.steps * case.every_k, dtype)
    path: dict[str, list[np.ndarray]] = {leaf: [] for leaf in LEAVES}
    for step in range(case.steps):
        for i in range(step * case.every_k, (step + 1) * case.every_k):
            x, y = torch.from_numpy(xs[i]), torch.from_numpy(ys[i])
            (loss(torch, params, x, y) / case.every_k).backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        optimizer.zero_grad()
        for leaf in LEAVES:
            path[leaf].append(params[leaf].detach().numpy().copy())
    return {leaf: np.stack(values) for leaf, values in path.items()}


def torch_accumulated(gradients: np.ndarray, every_k: int, dtype: str) -> list[np.ndarray]:
    """``p.grad`` after each of ``torch.from_numpy(g).to(dtype) * (1 / k)`` is added (the first
    assigned), as float64 arrays: torch's literal accumulation in ``dtype``."""
    torch = require_torch()
    grad = None
    sums = []
    for gradient in gradients:
        term = torch.tensor(gradient).to(getattr(torch, dtype)) * (1 / every_k)
        grad = term if grad is None else grad + term
        sums.append(grad.double().numpy())
    return sums
