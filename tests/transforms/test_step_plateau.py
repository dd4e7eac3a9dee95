"""optkit.step_plateau: torch's ReduceLROnPlateau stepped once per epoch with a validation loss.

The plateau cases of tests/schedules/epoch_cases.py train several updates per epoch (updates
without ``value=``) and call a jitted ``step_plateau`` after each epoch with a scripted validation
loss; torch runs the same loop with ``scheduler.step(val_loss)``. The scripts take every branch:
patience, cooldown, ``min_lr`` (torch's per-group list, as one plateau per param group), ``eps``,
mode min and max, threshold modes rel and abs, NaN and infinite values, and a plateau inside
``inject_hyperparams``. Golden values in tests/schedules/golden/per_epoch.npz; live with torch.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

import optkit
from optkit.transforms.plateau import MODES, THRESHOLD_MODES
from tests.integration.compile_counter import count_compiles
from tests.schedules import epoch_runs
from tests.schedules.epoch_cases import FLOAT32_CASES, PLATEAU_CASES, plateau_states
from tests.schedules.epoch_runs import assert_run_matches, optkit_run
from tests.support.torch_oracle import require_torch

RUNS = [
    *(pytest.param("float64", case, id=f"float64-{case.id}") for case in PLATEAU_CASES),
    *(
        pytest.param("float32", case, id=f"float32-{case.id}")
        for case in FLOAT32_CASES
        if case.values is not None
    ),
]


@pytest.fixture(scope="module")
def golden() -> epoch_runs.Golden:
    return epoch_runs.load_golden()


@pytest.mark.parametrize(("dtype", "case"), RUNS)
def test_trajectory_matches_torch_golden(dtype, case, golden):
    expected = golden.runs[dtype, case.id]
    assert len(np.unique(expected.lrs)) >= 4  # the script reduces several times
    assert_run_matches(optkit_run(dtype, case.id), expected, dtype)


@pytest.mark.torch
@pytest.mark.parametrize(("dtype", "case"), RUNS)
def test_trajectory_matches_live_torch(dtype, case):
    require_torch()
    assert_run_matches(optkit_run(dtype, case.id), epoch_runs.run_torch(case, dtype), dtype)


def sgd_plateau(**kwargs: Any) -> optkit.GradientTransformation:
    return optkit.chain(
        optkit.sgd(0.1, momentum=0.9),
        optkit.reduce_lr_on_plateau(learning_rate=0.1, **{"patience": 1, "factor": 0.5, **kwargs}),
    )


VALUES = (3.0, 2.0, 2.0, 2.0, 1.0, 1.0, math.nan, 1.0, 1.0)
STEPS_PER_EPOCH = 3


def test_value_at_the_epochs_last_update_equals_step_plateau_after_it():
    """``update(..., value=v)`` on an epoch's last update and ``step_plateau(state, v)`` after
    it are the same torch step: bitwise the same run."""
    tx = sgd_plateau(cooldown=1)
    grads = lambda params: params + jnp.cos(params)

    def epoch(params, state, value, per_update: bool):
        for k in range(STEPS_PER_EPOCH):
            last = per_update and k == STEPS_PER_EPOCH - 1
            extra = {"value": value} if last else {}
            updates, state = tx.update(grads(params), state, params, **extra)
            params = optkit.apply_updates(params, updates)
        return params, state

    epoch = jax.jit(epoch, static_argnames="per_update")
    runs = []
    for per_update in (True, False):
        params = jnp.asarray([1.5, -0.5, 2.0])
        state = tx.init(params)
        for value in VALUES:
            params, state = epoch(params, state, value, per_update=per_update)
            if not per_update:
                state = optkit.step_plateau(state, value)
        runs.append((params, state))
    assert float(runs[0][1][1].scale) == 0.25
    jax.tree.map(np.testing.assert_array_equal, runs[0], runs[1])


class Wrapped(NamedTuple):
    """A wrapper's state, as issue #13's wrappers hold theirs."""

    count: jax.Array
    inner_state: Any


def test_every_plateau_is_advanced_wherever_it_is_and_nothing_else():
    groups = optkit.param_groups(
        lambda learning_rate: optkit.chain(
            optkit.sgd(learning_rate),
            optkit.reduce_lr_on_plateau(patience=0, factor=0.5, learning_rate=learning_rate),
        ),
        [{"params": "a", "learning_rate": 0.1}, {"params": "b", "learning_rate": 0.01}],
    )
    injected = optkit.inject_hyperparams(sgd_plateau)(factor=0.5)  # an injected factor
    params = {"a": jnp.ones(2), "b": jnp.ones(1)}
    state = {
        "groups": groups.init(params),
        "injected": injected.init(params),
        "masked": optkit.masked(sgd_plateau(), {"a": True, "b": False}).init(params),
        "flat": optkit.flatten(sgd_plateau()).init(params),
        "wrapped": Wrapped(jnp.zeros([], jnp.int32), sgd_plateau().init(params)),
        "adam": optkit.adam(0.1).init(params),
    }
    assert len(plateau_states(state)) == 6
    for value in (2.0, 2.0, 2.0):
        state = optkit.step_plateau(state, value)
    for found in plateau_states(state):
        assert float(found.best) == 2.0 and int(found.num_bad_epochs) == 0
    # patience 0 (the groups): two reductions; patience 1 (the others): one.
    scales = {key: [float(s.scale) for s in plateau_states(sub)] for key, sub in state.items()}
    assert scales == {
        "groups": [0.25, 0.25],
        **{key: [0.5] for key in ("injected", "masked", "flat", "wrapped")},
        "adam": [],
    }
    # Nothing but the plateau states changed.
    assert int(state["wrapped"].count) == 0 and int(state["injected"].count) == 0
    fresh = optkit.adam(0.1).init(params)
    jax.tree.map(np.testing.assert_array_equal, state["adam"], fresh)


def test_jit_compiles_once_for_every_value():
    tx = sgd_plateau()
    state = tx.init(jnp.ones(3))
    step = jax.jit(optkit.step_plateau)
    state = step(state, 1.0)
    with count_compiles() as compiled:
        for value in (2.0, math.nan, -math.inf, 0.5):
            state = step(state, value)
    assert not compiled
    assert float(state[1].best) == -math.inf  # nothing improves on -inf in min mode
    # A traced value from inside a jitted training step works too.
    traced = jax.jit(lambda s, v: optkit.step_plateau(s, 2.0 * v))(state, jnp.float32(1.0))
    assert int(traced[1].num_bad_epochs) == 0 and int(traced[1].cooldown_counter) == 0


def test_nan_counts_as_a_bad_epoch_as_in_torch():
    state = sgd_plateau(patience=2).init(jnp.ones(1))
    for value in (1.0, math.nan, math.nan):
        state = optkit.step_plateau(state, value)
    assert (float(state[1].best), int(state[1].num_bad_epochs)) == (1.0, 2)
    assert float(optkit.step_plateau(state, math.nan)[1].scale) == 0.5


def test_settings_travel_in_the_state_as_arrays():
    tx = optkit.reduce_lr_on_plateau(
        mode="max", factor=0.3, patience=4, threshold=0.2, threshold_mode="abs", cooldown=2,
        min_lr=1e-4, eps=1e-6, learning_rate=0.05,
    )  # fmt: skip
    settings = tx.init(jnp.ones(2)).settings
    assert isinstance(settings, optkit.ReduceLROnPlateauSettings)
    assert (MODES[int(settings.mode)], THRESHOLD_MODES[int(settings.threshold_mode)]) == (
        "max",
        "abs",
    )
    numbers = {name: float(getattr(settings, name)) for name in settings._fields[2:]}
    assert numbers == {
        "factor": 0.3, "patience": 4, "threshold": 0.2, "cooldown": 2, "min_lr": 1e-4,
        "eps": 1e-6, "learning_rate": 0.05,
    }  # fmt: skip
    dtypes = {name: getattr(settings, name).dtype for name in settings._fields}
    assert {name for name, dtype in dtypes.items() if dtype == jnp.int32} == {
        "mode",
        "threshold_mode",
        "patience",
        "cooldown",
    }
    # Committed params: every scalar of the state is committed next to them (no recompile).
    params = jax.device_put(jnp.ones(2), jax.devices()[0])
    assert all(leaf.committed for leaf in jax.tree.leaves(tx.init(params)))


def test_orbax_round_trip_resumes_bitwise(tmp_path):
    tx = sgd_plateau(mode="max", threshold_mode="abs", factor=0.1, cooldown=1, min_lr=1e-3)
    params = jnp.asarray([0.5, -1.0])
    state = tx.init(params)
    for value in (1.0, 1.0, 1.0, 0.5):
        state = optkit.step_plateau(state, value)
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(tmp_path / "state", state)
    target = jax.tree.map(ocp.utils.to_shape_dtype_struct, tx.init(params))
    with ocp.StandardCheckpointer() as checkpointer:
        restored = checkpointer.restore(tmp_path / "state", target)

    assert jax.tree.structure(restored) == jax.tree.structure(state)
    jax.tree.map(np.testing.assert_array_equal, restored, state)
    for value in (2.0, 2.0, 2.0):
        state, restored = (optkit.step_plateau(s, value) for s in (state, restored))
    jax.tree.map(np.testing.assert_array_equal, restored, state)
    assert float(state[1].scale) == pytest.approx(0.01)  # two reductions: 0.1 -> 0.01 -> 0.001


def test_a_state_without_a_plateau_is_a_clear_error():
    with pytest.raises(ValueError, match=r"step_plateau: the state holds no reduce_lr_on_plateau"):
        optkit.step_plateau(optkit.sgd(0.1, momentum=0.9).init(jnp.ones(2)), 1.0)


@pytest.mark.parametrize(
    ("value", "error", "message"),
    [
        (jnp.ones(2), ValueError, r"value must be a scalar, got an array of shape \(2,\)"),
        (np.ones((1,)), ValueError, "value must be a scalar"),
        (True, TypeError, "value must be a real number, got dtype bool"),
        (1.0 + 2.0j, TypeError, "value must be a real number, got dtype complex"),
    ],
    ids=["vector", "one_element", "bool", "complex"],
)
def test_a_bad_value_is_a_clear_error(value, error, message):
    state = sgd_plateau().init(jnp.ones(2))
    with pytest.raises(error, match=rf"^step_plateau: {message}"):
        optkit.step_plateau(state, value)
