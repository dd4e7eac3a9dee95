"""Every numeric hyperparameter driven by a schedule through ``inject_hyperparams``.

torch's idiom is ``optimizer.param_groups[0][name] = schedule(step)`` before each step (what
``OneCycleLR`` and ``CyclicLR`` do to the momentum). For every registry optimizer, every
hyperparameter that torch reads at each step (the names of the row's ``runtime_changes``) follows
its own schedule, all at once; the float64 trajectory must equal torch's to 1e-10. The runners
(one jitted step per optimizer, traced once) are the runtime-hyperparameter suite's.

Construction checks run on each schedule's value at count 0; the static decisions an optimizer
makes from a Python number (a zero momentum prunes the buffer) are never made from a schedule.
"""

from __future__ import annotations

import math
from typing import Any

import jax.numpy as jnp
import numpy as np
import pytest

import optkit
from optkit import schedules
from tests.combinators import test_hyperparams as runs
from tests.parity import problem
from tests.parity.runner import compare
from tests.support.optimizer_info import OptimizerInfo
from tests.support.registry import REGISTRY
from tests.support.torch_oracle import require_torch

STEPS = runs.STEPS
PERIOD = 12  # each schedule goes from its start to its end value and back every 12 updates
# Schedules that cannot move the params on the registry's problems; torch must agree.
NO_EFFECT_ON_PARAMS = {
    ("asgd", "t0"): "t0 moves only the averaged params (tests/optimizers/test_asgd.py)",
    ("lbfgs", "tolerance_grad"): "LBFGS stops early only once every gradient is this small",
    ("muon", "eps"): "Muon's eps only floors a gradient norm, far larger here",
}


def scheduled_names(info: OptimizerInfo) -> dict[str, float]:
    """The hyperparameters torch reads at each step, with the row's last value for each."""
    return {name: value for values in info.runtime_changes for name, value in values.items()}


def swing(start: float, end: float) -> np.ndarray:
    """``STEPS`` values moving smoothly from ``start`` to ``end`` and back, every ``PERIOD``."""
    weights = 0.5 - 0.5 * np.cos(2.0 * math.pi * np.arange(STEPS) / PERIOD)
    return start + (end - start) * weights


def tabulated(values: np.ndarray) -> optkit.Schedule:
    """The schedule whose k-th value is ``values[k]``, as torch is given it (no rounding)."""
    table = jnp.asarray(values)
    return lambda count: table[count]


def setup(info: OptimizerInfo) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The runtime suite's set-up for ``info``, and a table of values for each scheduled name.

    Each schedule swings from the set-up's value (its default where the set-up has none) to the
    row's runtime value, or to half the start where those agree (SGD's momentum)."""
    base = runs.runtime_case(info).kwargs
    tables = {
        name: swing(base[name], end if end != base[name] else 0.5 * end)
        for name, end in scheduled_names(info).items()
    }
    return base, tables


def torch_path(
    info: OptimizerInfo, tables: dict[str, np.ndarray], base: dict[str, Any]
) -> dict[str, np.ndarray]:
    """torch's trajectory with ``param_groups[0][name] = table[step]`` before each step."""
    task = problem.PROBLEMS[info.problem]
    first = {name: float(table[0]) for name, table in tables.items()}
    changes = [
        (step, 0, {name: float(table[step]) for name, table in tables.items()})
        for step in range(STEPS)
    ]
    return runs.run_torch(
        info.torch_class,
        {**base, **first},
        changes,
        task=task,
        closure=info.closure,
        sparse_grads=info.sparse_gradients,
    )


@pytest.mark.torch
@pytest.mark.parametrize("info", REGISTRY, ids=lambda info: info.name)
def test_every_hyperparameter_on_a_schedule_matches_torch(info: OptimizerInfo) -> None:
    require_torch()
    base, tables = setup(info)
    task = problem.PROBLEMS[info.problem]
    scheduled = {name: tabulated(table) for name, table in tables.items()}
    tx = optkit.inject_hyperparams(info.factory)(**{**base, **scheduled})
    got = runs.run_optkit(tx, task=task, extra=info.update_args(task.jax_loss))
    expected = torch_path(info, tables, base)
    mismatch = compare(got, expected, **runs.TORCH_FLOAT64)
    assert mismatch is None, f"{info.name} vs torch.optim.{info.torch_class}: {mismatch}"
    # Each schedule must bite (or agreeing proves nothing): with its value held at the start,
    # torch's trajectory changes. Rprop's lr only seeds its step sizes (see the registry).
    for name in tables:
        held = {**tables, name: np.full(STEPS, tables[name][0])}
        differs = compare(torch_path(info, held, base), expected, rtol=1e-6, atol=1e-8)
        bites = info.runtime_changes_matter and (info.name, name) not in NO_EFFECT_ON_PARAMS
        assert (differs is not None) == bites, name


# --- what a schedule means at construction (no torch) -------------------------------------------


@pytest.mark.parametrize(
    ("factory", "name", "first"),
    [
        (optkit.adamw, "b1", 1.0),
        (optkit.adam, "b2", -0.5),
        (optkit.sgd, "momentum", -0.1),
        (optkit.sgd, "dampening", 1.5),
        (optkit.rmsprop, "eps", math.nan),
        (optkit.adamw, "weight_decay", -1.0),
    ],
)
def test_schedule_out_of_range_at_count_zero_fails_at_construction(factory, name, first):
    schedule = lambda count: first + 0.0 * count
    with pytest.raises(ValueError, match=rf"^{name} is a schedule whose value at count 0.*{name}"):
        optkit.inject_hyperparams(factory)(learning_rate=0.1, **{name: schedule})


def test_plain_optimizer_refuses_a_schedule_and_points_to_inject_hyperparams():
    with pytest.raises(TypeError, match=r"^momentum must be a number.*inject_hyperparams"):
        optkit.sgd(learning_rate=0.1, momentum=lambda count: 0.9)
    with pytest.raises(TypeError, match=r"^b1 must be a number.*inject_hyperparams"):
        optkit.adamw(learning_rate=1e-3, b1=lambda count: 0.9)


def test_momentum_schedule_keeps_a_buffer_and_follows_torch_at_zero():
    """A scheduled momentum is a run-time value: the buffer exists even if the schedule starts at
    0, and torch's rules apply step by step (hand-computed with gradient 1 and lr 1, as in the
    set_hyperparams test): no buffer use at momentum 0, the first non-zero step clones the
    gradient, nesterov is plain SGD at momentum 0 (torch checks it at construction only)."""
    momenta = jnp.asarray([0.0, 0.9, 0.9, 0.0, 0.0, 0.9])
    expected = {
        False: [-1.0, -1.0, -1.9, -1.0, -1.0, -2.71],
        True: [-1.0, -1.9, -2.71, -1.0, -1.0, -3.439],
    }
    for nesterov, path in expected.items():
        tx = optkit.inject_hyperparams(optkit.sgd)(
            learning_rate=1.0, momentum=lambda count: momenta[count], nesterov=nesterov
        )
        params = jnp.zeros(1)
        state = tx.init(params)
        got = []
        for k in range(len(momenta)):
            updates, state = tx.update(jnp.ones(1), state, params)
            got.append(float(updates[0]))
            assert float(optkit.get_hyperparams(state)["momentum"]) == float(momenta[k])
        np.testing.assert_allclose(got, path, rtol=1e-14)


def test_scheduled_beta_is_reported_and_cannot_be_set():
    b1 = schedules.one_cycle_momentum(total_steps=10)
    tx = optkit.inject_hyperparams(optkit.adamw)(learning_rate=1e-3, b1=b1, b2=0.99)
    params = jnp.ones(3)
    state = tx.init(params)
    for k in range(3):
        _, state = tx.update(jnp.ones(3), state, params)
        assert float(optkit.get_hyperparams(state)["b1"]) == pytest.approx(float(b1(k)), 1e-15)
    with pytest.raises(ValueError, match="b1 is driven by a schedule"):
        optkit.set_hyperparams(state, b1=0.9)
    state = optkit.set_hyperparams(state, b2=0.9)
    assert float(optkit.get_hyperparams(state)["b2"]) == 0.9
