"""torch.amp.GradScaler run live: the values optkit's grad_scaler must reproduce.

torch is imported inside the functions, so the golden-file tests import this module without it.
"""

from __future__ import annotations

import warnings
from typing import Any, NamedTuple

import numpy as np

from tests.loop.grad_scaler_cases import SCHEDULE_GAMMA, START, STEPS, ScalerCase, gradient
from tests.support.optimizer_info import to_torch_kwargs
from tests.support.torch_oracle import require_torch


class Trajectory(NamedTuple):
    """After each step: the scale, the number of skipped steps, and the params (``w`` then
    ``b``, flattened)."""

    scales: np.ndarray
    skipped: np.ndarray
    params: np.ndarray


def _param_groups(case: ScalerCase, tensors: dict[str, Any]) -> list[Any]:
    if case.group_b is None:
        return list(tensors.values())
    return [{"params": [tensors["w"]]}, {"params": [tensors["b"]], **to_torch_kwargs(case.group_b)}]


def torch_run(case: ScalerCase) -> Trajectory:
    """The loop of ``case`` in torch: ``scaler.scale(loss).backward()``, optionally
    ``scaler.unscale_(opt)`` and ``clip_grad_norm_``, ``scaler.step(opt)``, ``scaler.update()``,
    and the scheduler stepped as the case says."""
    torch = require_torch()
    dtype = getattr(torch, case.dtype)
    tensors = {
        name: torch.tensor(value, dtype=dtype, requires_grad=True) for name, value in START.items()
    }
    optimizer = getattr(torch.optim, case.torch_class)(
        _param_groups(case, tensors), **to_torch_kwargs(case.kwargs)
    )
    scaler = torch.amp.GradScaler("cpu", **case.scaler_kwargs)
    scheduler = None
    if case.schedule is not None:
        scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=SCHEDULE_GAMMA)
    scales, skipped, params = [], [], []
    skips = 0
    for step in range(STEPS):
        optimizer.zero_grad()
        grads = gradient({k: t.detach().numpy() for k, t in tensors.items()}, step)
        loss = sum((t * torch.tensor(grads[k], dtype=dtype)).sum() for k, t in tensors.items())
        scaler.scale(loss).backward()
        if case.clip is not None:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(tensors.values(), case.clip)
        before = scaler.get_scale()
        scaler.step(optimizer)
        scaler.update()
        # A backoff factor below 1 shrinks the scale exactly when the step was skipped.
        optimizer_was_run = scaler.get_scale() >= before
        skips += not optimizer_was_run
        if scheduler is not None and (case.schedule == "outside" or optimizer_was_run):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "lr_scheduler.step() before optimizer.step()"
                scheduler.step()
        scales.append(scaler.get_scale())
        skipped.append(skips)
        params.append(np.concatenate([t.detach().numpy().ravel() for t in tensors.values()]))
    return Trajectory(np.asarray(scales), np.asarray(skipped), np.stack(params).astype(np.float64))


# (scale, growth tracker, found inf, growth factor, backoff factor, growth interval): every branch
# of _amp_update_scale_, with factors that are float32 numbers and factors that are not, and a
# growth that would overflow float32 (torch keeps the scale).
UPDATE_SCALE_INPUTS: tuple[tuple[float, int, bool, float, float, int], ...] = (
    (65536.0, 0, False, 2.0, 0.5, 3),
    (65536.0, 2, False, 2.0, 0.5, 3),
    (65536.0, 2, True, 2.0, 0.5, 3),
    (1234.5677, 4, False, 1.1, 0.3, 5),
    (1234.5677, 1, True, 1.1, 0.3, 5),
    (3.0e-5, 0, False, 1.0001, 0.999, 1),
    (3.0e-5, 0, True, 1.0001, 0.999, 1),
    (7.0, 6, False, 1.9, 0.7, 7),
    (3.0e38, 0, False, 2.0, 0.5, 1),
    (3.0e38, 0, False, 1.1, 0.5, 1),
    (3.0e38, 0, False, 1.13, 0.5, 1),
    (2.0e38, 0, False, 1.7, 0.5, 1),
    (3.2e38, 0, False, 1.1, 0.5, 1),
    (3.4028e38, 0, False, 1.0001, 0.5, 1),
    (1.0, 0, True, 2.0, 1e-3, 1),
)


def torch_update_scale() -> np.ndarray:
    """torch's new (scale, growth tracker) for each of :data:`UPDATE_SCALE_INPUTS`."""
    torch = require_torch()
    out = []
    for scale, tracker, found_inf, growth, backoff, interval in UPDATE_SCALE_INPUTS:
        scale_t = torch.tensor(scale, dtype=torch.float32)
        tracker_t = torch.tensor(tracker, dtype=torch.int32)
        found_t = torch.tensor(float(found_inf), dtype=torch.float32)
        torch._amp_update_scale_(scale_t, tracker_t, found_t, growth, backoff, interval)
        out.append((scale_t.item(), tracker_t.item()))
    return np.asarray(out, dtype=np.float64)
