"""The per-epoch training runs of tests/schedules/epoch_cases.py, in torch and in optkit, and their
golden file.

torch's loop is the one its examples write: ``optimizer.step()`` for each minibatch, then
``scheduler.step()`` (or ``scheduler.step(val_loss)``) after each epoch. optkit's is a jitted
``lax.scan`` over an epoch's updates and, for plateau cases, a jitted ``optkit.step_plateau``
between epochs. Both record the learning rate of each update (one per param group) and the params
after it.

Regenerate the golden file after changing the case tables, from the repository root::

    python -m tests.schedules.epoch_runs

Format: ``golden/per_epoch.npz`` holds, for each case and precision, ``<dtype>:<id>:lrs``
(updates x groups), ``<dtype>:<id>:w`` and ``<dtype>:<id>:b``; ``spec:<id>`` is the case's torch
set-up as JSON, so a stale file is caught; ``torch_version`` records where the values came from.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

import optkit
from tests.schedules.epoch_cases import (
    FLOAT32_CASES,
    INIT,
    PLATEAU_CASES,
    SCHEDULE_CASES,
    EpochCase,
    jax_loss,
    plateau_states,
    shifts,
    torch_loss,
)

GOLDEN_PATH = Path(__file__).resolve().parent / "golden" / "per_epoch.npz"


class Run(NamedTuple):
    """A run's record: the lr of every update per group, and the params after every update."""

    lrs: np.ndarray
    w: np.ndarray
    b: np.ndarray


def run_torch(case: EpochCase, dtype: str = "float64") -> Run:
    """torch's training loop for ``case``, its scheduler stepped after each epoch."""
    import torch

    from tests.schedules.oracle import build_scheduler

    torch_dtype = getattr(torch, dtype)
    params = {n: torch.tensor(v, dtype=torch_dtype, requires_grad=True) for n, v in INIT.items()}
    if case.torch.groups is None:
        groups: Any = list(params.values())
    else:
        groups = [
            {"params": [p], **g} for p, g in zip(params.values(), case.torch.groups, strict=True)
        ]
    optimizer = getattr(torch.optim, case.torch.optimizer)(groups, **case.torch.kwargs)
    scheduler = build_scheduler(optimizer, case.torch.scheduler)
    batch_shifts = torch.tensor(shifts(case.updates), dtype=torch_dtype)
    lrs, path = [], []
    for epoch in range(case.epochs):
        for k in range(epoch * case.steps_per_epoch, (epoch + 1) * case.steps_per_epoch):
            lrs.append([float(group["lr"]) for group in optimizer.param_groups])
            optimizer.zero_grad()
            torch_loss(params, batch_shifts[k]).backward()
            optimizer.step()
            path.append({n: p.detach().numpy().copy() for n, p in params.items()})
        if case.values is None:
            scheduler.step()
        else:
            scheduler.step(case.values[epoch])
    return Run(np.asarray(lrs), *(np.stack([step[n] for step in path]) for n in INIT))


def _learning_rates(state: optkit.OptState) -> jax.Array:
    """Each plateau's current learning rate (one per param group); none for schedule cases."""
    found = plateau_states(state)
    if not found:
        return jnp.zeros(0)
    return jnp.stack([s.settings.learning_rate * s.scale for s in found])


def run_optkit(case: EpochCase, dtype: str = "float64") -> Run:
    """optkit's run of ``case`` at JAX's current precision, params in ``dtype``.

    Schedule cases scan all updates at once (``per_epoch`` counts the epochs); plateau cases scan
    one epoch at a time and call a jitted ``optkit.step_plateau`` after each.
    """
    tx = case.make_optkit(case.steps_per_epoch)

    def update(carry, shift):
        params, state = carry
        lrs = _learning_rates(state)
        updates, state = tx.update(jax.grad(jax_loss)(params, shift), state, params)
        params = optkit.apply_updates(params, updates)
        return (params, state), (lrs, params)

    train = jax.jit(lambda carry, batch_shifts: jax.lax.scan(update, carry, batch_shifts))
    step_plateau = jax.jit(optkit.step_plateau)
    params = {n: jnp.asarray(v, dtype) for n, v in INIT.items()}
    carry = (params, tx.init(params))
    batch_shifts = jnp.asarray(shifts(case.updates), dtype)
    if case.values is None:
        _, (lrs, path) = train(carry, batch_shifts)
    else:
        records = []
        for epoch, value in enumerate(case.values):
            epoch_slice = slice(epoch * case.steps_per_epoch, (epoch + 1) * case.steps_per_epoch)
            carry, record = train(carry, batch_shifts[epoch_slice])
            carry = (carry[0], step_plateau(carry[1], value))
            records.append(record)
        lrs, path = jax.tree.map(lambda *parts: jnp.concatenate(parts), *records)
    return Run(np.asarray(lrs), np.asarray(path["w"]), np.asarray(path["b"]))


LR_RTOL = 1e-12
# float32 learning rates are torch's Python-double values rounded to float32.
LR_RTOLS = {"float64": LR_RTOL, "float32": 1e-7}
TOLERANCES = {"float64": {"rtol": 1e-10, "atol": 1e-13}, "float32": {"rtol": 1e-5, "atol": 1e-6}}


@functools.cache
def optkit_run(dtype: str, case_id: str) -> Run:
    """optkit's run of a case, computed once per test session (float32 at JAX's default
    precision, with float64 switched off)."""
    case = next(c for c in (*SCHEDULE_CASES, *PLATEAU_CASES) if c.id == case_id)
    if dtype == "float32":
        with jax.enable_x64(False):
            return run_optkit(case, dtype)
    return run_optkit(case, dtype)


def assert_run_matches(actual: Run, expected: Run, dtype: str) -> None:
    """Params within ``TOLERANCES[dtype]``; each plateau's learning rates within ``LR_RTOLS``."""
    assert actual.w.dtype == np.dtype(dtype)
    if actual.lrs.size:  # plateau cases record each group's learning rate
        np.testing.assert_allclose(actual.lrs, expected.lrs, rtol=LR_RTOLS[dtype], atol=0)
    for name in ("w", "b"):
        np.testing.assert_allclose(
            getattr(actual, name), getattr(expected, name), **TOLERANCES[dtype], err_msg=name
        )


class Golden(NamedTuple):
    torch_version: str
    specs: dict[str, str]
    runs: dict[tuple[str, str], Run]
    """By ``(dtype, case id)``."""


def load_golden() -> Golden:
    """Read the golden file (plain arrays and strings only; no pickles)."""
    with np.load(GOLDEN_PATH, allow_pickle=False) as data:
        arrays = {key: data[key] for key in data.files}
    runs = {}
    for key in arrays:
        if key.endswith(":lrs"):
            dtype, case_id, _ = key.split(":")
            runs[dtype, case_id] = Run(*(arrays[f"{dtype}:{case_id}:{f}"] for f in Run._fields))
    specs = {k.removeprefix("spec:"): str(v) for k, v in arrays.items() if k.startswith("spec:")}
    return Golden(str(arrays["torch_version"]), specs, runs)


def golden_runs() -> list[tuple[str, EpochCase]]:
    """Every ``(dtype, case)`` the golden file holds."""
    return [
        *(("float64", case) for case in (*SCHEDULE_CASES, *PLATEAU_CASES)),
        *(("float32", case) for case in FLOAT32_CASES),
    ]


def main() -> None:
    """Run torch for every case and write the golden file."""
    import torch

    arrays: dict[str, np.ndarray] = {"torch_version": np.array(torch.__version__)}
    for dtype, case in golden_runs():
        arrays[f"spec:{case.id}"] = np.array(case.torch_spec())
        for field, value in zip(Run._fields, run_torch(case, dtype), strict=True):
            arrays[f"{dtype}:{case.id}:{field}"] = value
    GOLDEN_PATH.parent.mkdir(exist_ok=True)
    np.savez_compressed(GOLDEN_PATH, **arrays)
    print(f"wrote {GOLDEN_PATH} ({len(golden_runs())} runs)")


if __name__ == "__main__":
    main()
