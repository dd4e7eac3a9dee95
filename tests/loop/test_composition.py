"""The wrappers together reproduce torch's AMP + accumulation + EMA loop (see composition.py).

``weight_averaging(accumulate_gradients(grad_scaler(chain(clip, param_groups(...))), k))`` is
updated once per micro-batch; torch's loop runs ``scaler.scale(loss / k).backward()`` per
micro-batch and one ``unscale_`` / ``clip_grad_norm_`` / ``scaler.step`` / ``scaler.update`` /
``ema.update_parameters`` per optimizer step. Both are compared after every optimizer step:
params, loss scale and EMA params, float64 to 1e-10 and float32 to 1e-5 (relative), against
torch's stored trajectories and, where torch is installed, against torch itself.
"""

from __future__ import annotations

import functools

import jax.numpy as jnp
import numpy as np
import pytest

import optkit
from tests.loop import composition
from tests.loop.composition import CASES, LEAVES, LoopCase, Trajectory
from tests.loop.generate_composition_golden import DTYPES, load_golden
from tests.support.torch_oracle import require_torch

RTOL = {"float64": 1e-10, "float32": 1e-5}
# Relative bounds need a floor for entries that pass near zero.
ATOL = {"float64": 1e-12, "float32": 1e-6}
PAIRS = [(case, dtype) for case in CASES for dtype in DTYPES]
IDS = [f"{case.id}-{dtype}" for case, dtype in PAIRS]


@functools.cache
def optkit_run(case_id: str, dtype: str) -> Trajectory:
    return composition.run_optkit(composition.BY_ID[case_id], np.dtype(dtype).type)


@pytest.fixture(scope="module")
def golden() -> dict[str, np.ndarray]:
    return load_golden()


def golden_run(golden: dict[str, np.ndarray], case: LoopCase, dtype: str) -> Trajectory:
    prefix = f"{case.id}:{dtype}"
    return Trajectory(
        params={name: golden[f"{prefix}:params:{name}"] for name in LEAVES},
        averaged={name: golden[f"{prefix}:averaged:{name}"] for name in LEAVES},
        scale=golden[f"{prefix}:scale"],
    )


def assert_same_trajectory(actual: Trajectory, expected: Trajectory, dtype: str) -> None:
    np.testing.assert_array_equal(actual.scale, expected.scale, err_msg="loss scale")
    for name in LEAVES:
        for what in ("params", "averaged"):
            np.testing.assert_allclose(
                getattr(actual, what)[name],
                getattr(expected, what)[name],
                rtol=RTOL[dtype],
                atol=ATOL[dtype],
                err_msg=f"{what} {name}",
            )


def test_golden_file_matches_the_cases(golden):
    stale = [case.id for case in CASES if str(golden.get(f"spec:{case.id}")) != case.spec()]
    assert not stale, f"stale golden for {stale}: python -m tests.loop.generate_composition_golden"


def test_cases_skip_grow_and_back_off(golden):
    """The set-up exercises what it is meant to: skipped steps, back-off and several growths."""
    for case in CASES:
        scale = golden[f"{case.id}:float64:scale"]
        ratios = scale[1:] / scale[:-1]
        assert (ratios == 0.5).sum() >= 3 and (ratios == 2.0).sum() >= 2, (case.id, scale)


@pytest.mark.parametrize(("case", "dtype"), PAIRS, ids=IDS)
def test_loop_matches_torch_golden(case, dtype, golden):
    assert_same_trajectory(optkit_run(case.id, dtype), golden_run(golden, case, dtype), dtype)


@pytest.mark.parametrize(("case", "dtype"), PAIRS, ids=IDS)
def test_loop_matches_live_torch(case, dtype):
    require_torch()
    expected = composition.run_torch(case, np.dtype(dtype).type)
    assert_same_trajectory(optkit_run(case.id, dtype), expected, dtype)


def test_skipped_steps_leave_params_and_average_alone():
    """Where torch's scaler skipped, the params did not move (and the EMA still averaged)."""
    case = CASES[0]
    run = optkit_run(case.id, "float64")
    skipped = {index // case.every_k for index in (*case.inf_at, *case.nan_at)}
    for step in sorted(skipped):
        for name in LEAVES:
            np.testing.assert_array_equal(run.params[name][step], run.params[name][step - 1])


def test_scaler_outside_accumulation_checks_every_micro_batch():
    """The other order: a non-finite micro-batch is dropped alone; the cycle waits for k others."""
    case = CASES[0]
    k = case.every_k
    inner = optkit.sgd(0.1)
    outside = optkit.grad_scaler(optkit.accumulate_gradients(inner, k), init_scale=4.0)
    params = {"w": jnp.ones(2)}
    state = outside.init(params)
    grads = [jnp.ones(2), jnp.array([jnp.nan, 1.0]), jnp.ones(2), jnp.ones(2)]
    moved = []
    for grad in grads:
        scaled = {"w": grad * optkit.loss_scale(state)}
        updates, state = outside.update(scaled, state, params)
        moved.append(bool(jnp.any(updates["w"] != 0)))
    # The NaN micro-batch backed the scale off at once and did not count towards the k.
    assert float(optkit.loss_scale(state)) == 2.0
    assert moved == [False, False, False, True]
