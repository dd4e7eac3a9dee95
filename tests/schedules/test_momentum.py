"""Momentum cycling reproduces torch's ``OneCycleLR`` / ``CyclicLR`` with ``cycle_momentum=True``.

Two checks, each against torch's values stored in tests/schedules/golden/torch_momentum.npz (run
without torch) and against torch live (marked ``torch``):

- the momentum schedules equal torch's ``param_groups[0]["momentum"]`` before each of >= 300
  updates, relative 1e-10 in float64 (closed forms against torch's; they differ by rounding);
- an optimizer driven through ``inject_hyperparams`` by both halves (``learning_rate=`` the lr
  schedule, ``momentum=`` or ``b1=`` the momentum schedule) follows torch's optimizer + scheduler
  update for update: float64 to 1e-10, float32 to 1e-5.

The tables are in tests/schedules/momentum_cases.py; regenerate the golden file with
``python -m tests.schedules.generate_momentum_golden``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.parity.runner import compare
from tests.schedules.generate_momentum_golden import MomentumGolden, load_golden
from tests.schedules.momentum_cases import (
    DTYPES,
    MOMENTUM_CASES,
    TRAJECTORY_ROWS,
    MomentumCase,
    optkit_trajectory,
    torch_momentum,
    torch_trajectory,
)
from tests.support.torch_oracle import require_torch

RTOL = 1e-10
TOLERANCES = {"float64": {"rtol": 1e-10, "atol": 1e-12}, "float32": {"rtol": 1e-5, "atol": 1e-6}}
CASE_IDS = [case.id for case in MOMENTUM_CASES]
ROW_IDS = [row.id for row in TRAJECTORY_ROWS]


@pytest.fixture(scope="module")
def golden() -> MomentumGolden:
    return load_golden()


@pytest.fixture(scope="module")
def jitted_values() -> dict[str, np.ndarray]:
    """Every momentum schedule tabulated by one jitted, vmapped program."""
    built = {case.id: case.make_schedule() for case in MOMENTUM_CASES}
    longest = max(case.steps for case in MOMENTUM_CASES)
    values = jax.jit(lambda k: {name: jax.vmap(s)(k) for name, s in built.items()})(
        jnp.arange(longest, dtype=jnp.int32)
    )
    return {case.id: np.asarray(values[case.id][: case.steps]) for case in MOMENTUM_CASES}


@pytest.fixture(scope="module")
def trajectories() -> dict[tuple[str, str], dict[str, np.ndarray]]:
    """optkit's trajectory of every row in both dtypes, shared by the golden and live tests."""
    return {
        (row.id, name): optkit_trajectory(row, dtype)
        for row in TRAJECTORY_ROWS
        for name, dtype in DTYPES.items()
    }


def eager_values(case: MomentumCase) -> np.ndarray:
    return np.asarray(case.make_schedule()(jnp.arange(case.steps, dtype=jnp.int32)))


def test_golden_file_matches_the_tables(golden):
    assert sorted(golden.momentum_specs) == sorted(CASE_IDS), "run generate_momentum_golden.py"
    assert sorted(golden.trajectory_specs) == sorted(ROW_IDS), "run generate_momentum_golden.py"
    stale = [c.id for c in MOMENTUM_CASES if golden.momentum_specs[c.id] != c.torch_spec()]
    stale += [r.id for r in TRAJECTORY_ROWS if golden.trajectory_specs[r.id] != r.torch_spec()]
    assert not stale, f"stale golden values for {stale}; run generate_momentum_golden.py"


@pytest.mark.parametrize("case", MOMENTUM_CASES, ids=CASE_IDS)
def test_momentum_matches_torch_golden(case, golden, jitted_values):
    expected = golden.momentum[case.id]
    assert len(expected) >= 300
    # The momentum must actually cycle, or agreeing proves little.
    assert np.ptp(expected) > 0.05
    values = eager_values(case)
    assert values.dtype == np.float64
    np.testing.assert_allclose(values, expected, rtol=RTOL, atol=0)
    np.testing.assert_allclose(jitted_values[case.id], expected, rtol=RTOL, atol=0)


@pytest.mark.torch
@pytest.mark.parametrize("case", MOMENTUM_CASES, ids=CASE_IDS)
def test_momentum_matches_live_torch(case, jitted_values):
    require_torch()
    np.testing.assert_allclose(jitted_values[case.id], torch_momentum(case), rtol=RTOL, atol=0)


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("row", TRAJECTORY_ROWS, ids=ROW_IDS)
def test_trajectory_matches_torch_golden(row, dtype, golden, trajectories):
    got = trajectories[row.id, dtype]
    assert got["matrix"].dtype == DTYPES[dtype]
    mismatch = compare(got, golden.trajectories[row.id, dtype], **TOLERANCES[dtype])
    assert mismatch is None, f"{row.id} ({dtype}): {mismatch}"


@pytest.mark.torch
@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("row", TRAJECTORY_ROWS, ids=ROW_IDS)
def test_trajectory_matches_live_torch(row, dtype, trajectories):
    require_torch()
    expected = torch_trajectory(row, DTYPES[dtype])
    mismatch = compare(trajectories[row.id, dtype], expected, **TOLERANCES[dtype])
    assert mismatch is None, f"{row.id} ({dtype}): {mismatch}"
    # The cycled momentum must bite: torch's cycle_momentum=False takes another path.
    uncycled = torch_trajectory(row, DTYPES[dtype], cycle_momentum=False)
    assert compare(uncycled, expected, rtol=1e-3, atol=0) is not None
