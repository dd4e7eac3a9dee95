"""Parity with torch.optim: every case of tests/parity/cases.py (every variant of every registry
row, a tensor learning rate and two param groups per row, the clip rows), 30 steps, float64 and
float32, on every path of ``PATHS`` (the per-leaf transform, and the same transform under
``optkit.flatten`` for rows whose math is elementwise).

Each case runs the same non-convex problem (tests/parity/problem.py) through optkit (jitted) and
through torch.optim, and compares the params after every step: float64 to rtol 1e-10 (atol 1e-12
for entries near zero), float32 to rtol 1e-5 / atol 1e-6. These tolerances are the spec; a failure
means optkit's math differs from torch's, not that the tolerance is tight.

Live tests (marked ``torch``) run torch itself and are skipped without it, unless
OPTKIT_REQUIRE_TORCH=1 (set in CI), which turns a missing torch into a failure. The golden tests
compare against torch trajectories stored in tests/parity/golden/ and need no torch; regenerate
those with ``python -m tests.parity.generate_golden``. torch's trajectories do not depend on the
optkit path, so every path is compared with the same live run and the same golden file.

Per-leaf test ids are the case ids (``sgd-plain``); the other paths append theirs
(``sgd-plain-flatten``).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import numpy as np
import pytest

from tests.parity import problem
from tests.parity.cases import CASES, CASES_BY_ID, CLIP_NORM, CLIP_VALUE, FAMILIES, Case
from tests.parity.generate_golden import Golden, load_golden
from tests.parity.runner import (
    DTYPES,
    PATHS,
    STEPS,
    compare,
    make_optkit_step,
    run_id,
    run_optkit,
    run_torch,
    stack,
)
from tests.support.registry import REGISTRY
from tests.support.torch_oracle import require_torch

REGENERATE = "regenerate with `python -m tests.parity.generate_golden FAMILY`"
NOT_FLATTENED = {info.name for info in REGISTRY if not info.flatten}


class Tolerance(NamedTuple):
    rtol: float
    atol: float


TOLERANCES = {
    "float64": Tolerance(rtol=1e-10, atol=1e-12),
    "float32": Tolerance(rtol=1e-5, atol=1e-6),
}
# Every leaf must travel at least this far (max abs change) in 30 steps, so that agreeing with
# torch says something: the table's learning rates move each leaf by 0.25 or more.
MIN_LEAF_TRAVEL = 0.1

# optkit.flatten runs a transform on one vector per dtype: only elementwise math keeps its meaning.
FLATTENS = {case.family: case.family not in NOT_FLATTENED for case in CASES}
CASES_AND_PATHS = [
    (case, path) for path in PATHS for case in CASES if path == "per-leaf" or FLATTENS[case.family]
]
by_case_and_path = pytest.mark.parametrize(
    ("case", "path"),
    [pytest.param(case, path, id=run_id(case.id, path)) for case, path in CASES_AND_PATHS],
)
by_dtype = pytest.mark.parametrize("dtype_name", list(DTYPES))


# Each trajectory is computed once per session and shared by the tests below: jit compilation
# dominates the suite's run time.
@functools.cache
def optkit_path(case_id: str, dtype_name: str, path: str) -> dict[str, np.ndarray]:
    return stack(run_optkit(CASES_BY_ID[case_id], DTYPES[dtype_name], path=path))


@functools.cache
def torch_path(case_id: str, dtype_name: str) -> dict[str, np.ndarray]:
    return stack(run_torch(CASES_BY_ID[case_id], DTYPES[dtype_name]))


@functools.cache
def golden(family: str, dtype_name: str) -> Golden:
    return load_golden(family, dtype_name)


def describe(case: Case, dtype_name: str, path: str) -> str:
    return (
        f"{case.id} [{dtype_name}, {path}] vs "
        f"torch.optim.{case.torch_optimizer}({case.torch_spec()})"
    )


@pytest.mark.torch
@by_dtype
@by_case_and_path
def test_matches_torch_live(case: Case, path: str, dtype_name: str) -> None:
    require_torch()
    mismatch = compare(
        optkit_path(case.id, dtype_name, path),
        torch_path(case.id, dtype_name),
        **TOLERANCES[dtype_name]._asdict(),
    )
    assert mismatch is None, f"{describe(case, dtype_name, path)}: {mismatch}"


@by_dtype
@by_case_and_path
def test_matches_torch_golden(case: Case, path: str, dtype_name: str) -> None:
    expected = golden(case.family, dtype_name).trajectories.get(case.id)
    assert expected is not None, f"no golden trajectory for {case.id}; {REGENERATE}"
    mismatch = compare(
        optkit_path(case.id, dtype_name, path), expected, **TOLERANCES[dtype_name]._asdict()
    )
    assert mismatch is None, (
        f"{describe(case, dtype_name, path)}, golden from torch "
        f"{golden(case.family, dtype_name).torch_version}: {mismatch}"
    )


@by_dtype
@pytest.mark.parametrize("family", list(FAMILIES))
def test_golden_files_cover_the_table(family: str, dtype_name: str) -> None:
    """The goldens hold exactly the table's cases, with its current settings and start point."""
    stored = golden(family, dtype_name)
    assert stored.torch_version, "golden file does not record the torch version"
    assert stored.steps == STEPS, (
        f"golden has {stored.steps} steps, runner uses {STEPS}; {REGENERATE}"
    )
    table_specs = {case.id: case.torch_spec() for case in FAMILIES[family]}
    assert stored.specs == table_specs, f"golden cases differ from the table; {REGENERATE}"
    assert stored.trajectories.keys() == table_specs.keys()
    for case_id, path in stored.trajectories.items():
        start = problem.PROBLEMS[CASES_BY_ID[case_id].problem].initial_params(DTYPES[dtype_name])
        assert path.keys() == start.keys(), case_id
        for leaf, values in path.items():
            assert values.shape == (STEPS + 1, *start[leaf].shape), (case_id, leaf)
            assert values.dtype == start[leaf].dtype, (case_id, leaf)
            np.testing.assert_array_equal(
                values[0], start[leaf], err_msg=f"{case_id}: {REGENERATE}"
            )


@pytest.mark.torch
@by_dtype
@pytest.mark.parametrize("family", list(FAMILIES))
def test_golden_files_match_live_torch(family: str, dtype_name: str) -> None:
    """The goldens are what the script produces from torch today (within the parity tolerance)."""
    require_torch()
    stored = golden(family, dtype_name)
    stale = {
        case.id: str(mismatch)
        for case in FAMILIES[family]
        if (
            mismatch := compare(
                stored.trajectories[case.id],
                torch_path(case.id, dtype_name),
                **TOLERANCES[dtype_name]._asdict(),
            )
        )
        is not None
    }
    assert not stale, f"golden (torch {stored.torch_version}) differs from live torch: {stale}"


@by_dtype
@by_case_and_path
def test_every_leaf_moves(case: Case, path: str, dtype_name: str) -> None:
    """Parity is only meaningful if the optimizer goes somewhere; a no-op must not pass."""
    trajectory = optkit_path(case.id, dtype_name, path)
    travel = {
        leaf: float(np.max(np.abs(values[-1] - values[0]))) for leaf, values in trajectory.items()
    }
    assert min(travel.values()) >= MIN_LEAF_TRAVEL, f"{case.id} [{dtype_name}, {path}]: {travel}"


@by_dtype
@by_case_and_path
def test_step_keeps_state_shapes_and_dtypes(case: Case, path: str, dtype_name: str) -> None:
    """A step returns params and state of the same shapes and dtypes, so jit compiles it once.

    (torch keeps optimizer state in the param's dtype; a float32 state promoted to float64 would
    also retrace every step.)
    """
    params, tx, step = make_optkit_step(case, DTYPES[dtype_name], path)
    state = tx.init(params)
    before = jax.eval_shape(lambda *carry: carry, params, state)
    loss = jax.numpy.zeros((), DTYPES[dtype_name])
    after = jax.eval_shape(step, params, loss, params, state)
    assert after == before


def test_clip_thresholds_bite() -> None:
    """The clip rows would test nothing if the thresholds never clipped the problem's gradients."""
    _, grads = problem.jax_loss_and_grads(problem.initial_params(np.float64))
    flat = np.concatenate([g.ravel() for g in grads.values()])
    assert np.max(np.abs(flat)) > 2 * CLIP_VALUE
    assert np.linalg.norm(flat) > 2 * CLIP_NORM
