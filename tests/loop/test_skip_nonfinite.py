"""skip_nonfinite: torch's skip of a non-finite step, without the scaling.

The expected params come from torch: in the grad_scaler cases whose scale stays a power of two,
torch's unscaled gradients are exactly the plain ones, so torch's golden trajectory is also that
of an optimizer stepped only on finite gradients, which ``skip_nonfinite`` is fed here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest

import optkit
from tests.loop.generate_grad_scaler_golden import Golden, load_golden
from tests.loop.grad_scaler_cases import (
    BAD_STEPS,
    CASES,
    RTOL,
    START,
    STEPS,
    ScalerCase,
    bitwise_equal,
    gradient,
)
from tests.support.torch_buffers import find_state

# Default factors (2 and 1/2) keep every scale a power of two: unscaling is then exact.
POWER_OF_TWO_CASES = [c for c in CASES if not c.scaler and c.schedule != "outside"]
by_case = pytest.mark.parametrize(
    "case", POWER_OF_TWO_CASES, ids=[c.id for c in POWER_OF_TWO_CASES]
)


class Run(NamedTuple):
    params: np.ndarray
    skipped: np.ndarray
    consecutive: np.ndarray
    changed_on_skip: list[str]
    compiles: int
    final_state: Any


def skip_run(case: ScalerCase) -> Run:
    tx = optkit.skip_nonfinite(case.make_inner())

    @jax.jit
    def step(params, state, grads):
        updates, state = tx.update(grads, state, params)
        return optkit.apply_updates(params, updates), state

    params = {name: jnp.asarray(value, case.dtype) for name, value in START.items()}
    state = jax.jit(tx.init)(params)
    trajectory, skipped, consecutive, changed = [], [], [], []
    for t in range(STEPS):
        grads = gradient({k: np.asarray(v) for k, v in params.items()}, t)
        new_params, new_state = step(params, state, grads)
        if new_state.skipped_steps > state.skipped_steps:
            if not bitwise_equal(new_params, params):
                changed.append(f"step {t}: params")
            if not bitwise_equal(new_state.inner_state, state.inner_state):
                changed.append(f"step {t}: inner state")
        params, state = new_params, new_state
        trajectory.append(np.concatenate([np.ravel(params[k]) for k in START]))
        skipped.append(int(state.skipped_steps))
        consecutive.append(int(state.consecutive_skips))
    return Run(
        np.stack(trajectory),
        np.asarray(skipped),
        np.asarray(consecutive),
        changed,
        step._cache_size(),
        state,
    )


@pytest.fixture(scope="module")
def runs() -> dict[str, Run]:
    return {case.id: skip_run(case) for case in POWER_OF_TWO_CASES}


@pytest.fixture(scope="module")
def golden() -> Golden:
    return load_golden()


def test_the_cases_keep_a_power_of_two_scale(golden):
    for case in POWER_OF_TWO_CASES:
        mantissas, _ = np.frexp(golden.scales[case.id])
        assert np.all(mantissas == 0.5), case.id


@by_case
def test_matches_torchs_trajectory(case, runs, golden):
    run = runs[case.id]
    np.testing.assert_allclose(run.params, golden.params[case.id], rtol=RTOL[case.dtype], atol=0)
    np.testing.assert_array_equal(run.skipped, golden.skipped[case.id])


@by_case
def test_counts_skips_in_total_and_in_a_row(case, runs):
    expected_total, expected_row, row = [], [], 0
    for t in range(STEPS):
        row = row + 1 if t in BAD_STEPS else 0
        expected_row.append(row)
        expected_total.append(sum(1 for bad in BAD_STEPS if bad <= t))
    np.testing.assert_array_equal(runs[case.id].consecutive, expected_row)
    np.testing.assert_array_equal(runs[case.id].skipped, expected_total)
    assert max(expected_row) == 3


@by_case
def test_skipped_steps_change_no_param_and_no_inner_buffer(case, runs):
    assert runs[case.id].changed_on_skip == []


@by_case
def test_each_case_compiles_its_step_once(case, runs):
    assert runs[case.id].compiles == 1


def test_a_schedule_inside_does_not_count_skipped_steps(runs):
    state = runs["adamw_schedule_inside"].final_state
    assert int(find_state(state, optkit.InjectHyperparamsState).count) == STEPS - len(BAD_STEPS)


def test_orbax_round_trip(runs, tmp_path: Path):
    case = next(c for c in POWER_OF_TWO_CASES if c.id == "sgd_param_groups")
    state = runs[case.id].final_state
    tx = optkit.skip_nonfinite(case.make_inner())
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(tmp_path / "state", state)
    target = jax.eval_shape(tx.init, {name: jnp.asarray(v) for name, v in START.items()})
    with ocp.StandardCheckpointer() as checkpointer:
        restored = checkpointer.restore(tmp_path / "state", target)
    assert isinstance(restored, optkit.SkipNonfiniteState)
    assert bitwise_equal(restored, state)


def test_keeps_skipping_where_optax_apply_if_finite_gives_up():
    """optax applies the update after ``max_consecutive_errors`` non-finite ones in a row (the
    params become NaN); skip_nonfinite never does."""
    params = jnp.ones(2)
    nan_grads = jnp.array([jnp.nan, 1.0])
    ours, theirs = optkit.skip_nonfinite(optkit.sgd(0.1)), optax.apply_if_finite(optax.sgd(0.1), 2)
    ours_params, theirs_params = params, params
    ours_state, theirs_state = ours.init(params), theirs.init(params)
    for _ in range(4):
        updates, ours_state = ours.update(nan_grads, ours_state, ours_params)
        ours_params = optkit.apply_updates(ours_params, updates)
        updates, theirs_state = theirs.update(nan_grads, theirs_state, theirs_params)
        theirs_params = optax.apply_updates(theirs_params, updates)
    assert bitwise_equal(ours_params, params)
    assert int(ours_state.consecutive_skips) == 4
    assert np.isnan(theirs_params[0])


def test_zero_updates_have_the_inner_output_dtype():
    """Zeros in the dtype ``inner`` returns, not the gradient's (optax's apply_if_finite would
    fail to trace here: its two branches would return different dtypes)."""
    to_float32 = optkit.stateless(lambda u, p: jax.tree.map(lambda x: x.astype(jnp.float32), u))
    tx = optkit.skip_nonfinite(to_float32)
    grads = jnp.array([jnp.inf, 1.0], jnp.bfloat16)
    updates, _ = jax.jit(tx.update)(grads, tx.init(grads))
    assert updates.dtype == jnp.float32
    np.testing.assert_array_equal(updates, [0.0, 0.0])


def test_optax_inner_and_extra_arguments():
    params = jnp.ones(2)
    tx = optkit.skip_nonfinite(optax.adam(0.1))
    state = tx.init(params)
    _, state = tx.update(jnp.array([1.0, jnp.inf]), state, params, value=1.0)
    assert int(state.inner_state[0].count) == 0
    _, state = tx.update(jnp.array([1.0, 1.0]), state, params, value=1.0)
    assert int(state.inner_state[0].count) == 1


def test_errors():
    with pytest.raises(TypeError, match="skip_nonfinite: argument 0 is 'function'"):
        optkit.skip_nonfinite(optkit.sgd)
    tx = optkit.skip_nonfinite(optkit.adam(0.1))
    state = tx.init({"w": jnp.ones(2), "b": jnp.ones(1)})
    with pytest.raises(ValueError, match="'b'"):
        tx.update({"w": jnp.ones(2)}, state)
