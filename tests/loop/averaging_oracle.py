"""torch's ``AveragedModel`` run live: the averages optkit's ``weight_averaging`` must match.

torch is imported inside the functions, so the golden-file tests import this module without it.
Tests that run torch call ``require_torch()`` first.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from tests.loop.averaging_cases import Averaging, AveragingRun
from tests.parity import problem

Arrays = dict[str, np.ndarray]

SCRIPT_SEED = 13
SCRIPT_STEPS = 12
SCRIPT_SHAPES = {"w": (3, 5), "b": (5,)}
SCRIPT_AVERAGINGS = (
    Averaging("ema", decay=0.9),
    Averaging("ema", decay=0.5, every_k=2),
    Averaging("ema", decay=0.0, start_step=2),
    Averaging("ema", decay=1.0),
    Averaging("swa"),
    Averaging("swa", start_step=3, every_k=2),
)
"""The scripted runs' set-ups: the EMA's edge decays (0 copies, 1 keeps the first copy) too."""


def scripted_params(dtype_name: str) -> list[Arrays]:
    """A fixed sequence of params after each update, as float32 (or float64) numpy arrays.

    Every value is a multiple of 2**-7 below 2 in magnitude, exact in bfloat16 and float16, so
    each dtype holds the same sequence and ``params + (next - params)`` lands on ``next``
    exactly (in float32 for the half-precision dtypes, as ``apply_updates`` adds).
    """
    rng = np.random.default_rng(SCRIPT_SEED)
    numpy_dtype = np.float64 if dtype_name == "float64" else np.float32
    return [
        {
            name: (rng.integers(-250, 250, size=shape) / 128).astype(numpy_dtype)
            for name, shape in SCRIPT_SHAPES.items()
        }
        for _ in range(SCRIPT_STEPS + 1)
    ]


def _module(torch: Any, params: Arrays, dtype: Any) -> Any:
    """A module holding ``params`` in order, as ``AveragedModel`` needs."""
    module = torch.nn.Module()
    module.p = torch.nn.ParameterDict(
        {name: torch.nn.Parameter(torch.tensor(value).to(dtype)) for name, value in params.items()}
    )
    return module


def _averaged_model(torch: Any, model: Any, averaging: Averaging, cpu_default: bool) -> Any:
    swa_utils = torch.optim.swa_utils
    if averaging.mode == "ema":
        return swa_utils.AveragedModel(
            model, multi_avg_fn=swa_utils.get_ema_multi_avg_fn(averaging.decay)
        )
    if cpu_default:  # torch's default on CPU: get_swa_avg_fn, a division in the params' dtype
        return swa_utils.AveragedModel(model)
    return swa_utils.AveragedModel(model, multi_avg_fn=swa_utils.get_swa_multi_avg_fn())


def _numpy_exact(model: Any) -> Arrays:
    """float64 stays float64; other dtypes go to float32, which holds them exactly."""
    return {
        name: (p.detach() if p.dtype.itemsize == 8 else p.detach().float()).numpy().copy()
        for name, p in model.p.items()
    }


def _epoch(run: AveragingRun, count: int) -> tuple[int, bool]:
    """The epoch of update ``count`` and whether it is the epoch's last update."""
    per_epoch = 1 if run.swa_lr is None else run.swa_lr.steps_per_epoch
    epoch, position = divmod(count, per_epoch)
    return epoch, position == per_epoch - 1


def _torch_due(run: AveragingRun, averaging: Averaging, count: int) -> bool:
    """Whether torch's loop averages after update ``count``: per epoch in a per-epoch SWA run
    (``if epoch > swa_start``, at the epoch's end, whatever the set-up's optkit settings say),
    else the set-up's condition."""
    if run.swa_lr is None or run.swa_lr.steps_per_epoch == 1:
        return averaging.due(count)
    epoch, last_of_epoch = _epoch(run, count)
    return last_of_epoch and epoch >= run.swa_lr.handover


def torch_run(run: AveragingRun, dtype: type[np.floating], *, cpu_default_swa: bool = False):
    """torch's loop for ``run``: the params and each set-up's average after every update.

    Returns arrays keyed ``params:<leaf>`` and ``<averaging id>:<leaf>``, shaped
    ``(steps, *leaf_shape)``.
    """
    import torch

    task = problem.STANDARD
    model = _module(torch, task.initial_params(dtype), getattr(torch, np.dtype(dtype).name))
    optimizer = getattr(torch.optim, run.torch_optimizer)(model.parameters(), **run.torch_kwargs())
    models = [_averaged_model(torch, model, a, cpu_default_swa) for a in run.averagings]
    before = after = None
    if run.swa_lr is not None:
        if run.swa_lr.handover:
            before = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=run.swa_lr.T_max)
        after = torch.optim.swa_utils.SWALR(
            optimizer,
            swa_lr=run.swa_lr.swa_lr,
            anneal_epochs=run.swa_lr.anneal_epochs,
            anneal_strategy=run.swa_lr.anneal_strategy,
        )
    records: dict[str, list[Arrays]] = {"params": []}
    for count in range(run.steps):
        optimizer.zero_grad()
        task.torch_loss(dict(model.p.items())).backward()
        optimizer.step()
        for averaging, averaged in zip(run.averagings, models, strict=True):
            if _torch_due(run, averaging, count):
                averaged.update_parameters(model)
        epoch, last_of_epoch = _epoch(run, count)
        if after is not None and last_of_epoch:
            (after if epoch >= run.swa_lr.handover else before).step()
        records["params"].append(_numpy_exact(model))
        for averaging, averaged in zip(run.averagings, models, strict=True):
            records.setdefault(averaging.id, []).append(_numpy_exact(averaged.module))
    return _stacked(records)


def torch_scripted(dtype_name: str, averagings: Sequence[Averaging] = SCRIPT_AVERAGINGS) -> Arrays:
    """Each set-up's average after every step of :func:`scripted_params`, the model's params
    being set to the sequence in ``dtype_name`` (float32 holds the half-precision values)."""
    import torch

    dtype = getattr(torch, dtype_name)
    sequence = scripted_params(dtype_name)
    model = _module(torch, sequence[0], dtype)
    models = [_averaged_model(torch, model, a, cpu_default=False) for a in averagings]
    records: dict[str, list[Arrays]] = {}
    for count, params in enumerate(sequence[1:]):
        with torch.no_grad():
            for name, p in model.p.items():
                p.copy_(torch.tensor(params[name]).to(dtype))
        for averaging, averaged in zip(averagings, models, strict=True):
            if averaging.due(count):
                averaged.update_parameters(model)
            records.setdefault(averaging.id, []).append(_numpy_exact(averaged.module))
    return _stacked(records)


def _stacked(records: dict[str, list[Arrays]]) -> Arrays:
    return {
        f"{key}:{leaf}": np.stack([step[leaf] for step in steps])
        for key, steps in records.items()
        for leaf in steps[0]
    }
