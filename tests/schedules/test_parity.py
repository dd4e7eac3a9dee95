"""Every schedule reproduces its torch.optim.lr_scheduler class, eagerly and under jit.

One table (tests/schedules/cases.py) drives every case. The golden tests compare with torch's
values stored in tests/schedules/golden/ and run without torch; the live tests run torch itself.

The bound is relative 1e-10 in float64: torch updates most schedulers recursively
(``lr *= ...``), and its values drift from the closed forms by rounding only (up to ~1e-12 over
these 300 steps), so anything looser would hide a wrong formula at a few steps.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.schedules import oracle
from tests.schedules.cases import SCHEDULE_CASES, ScheduleCase
from tests.schedules.generate_golden import Golden, load_golden

RTOL = 1e-10
IDS = [case.id for case in SCHEDULE_CASES]


@pytest.fixture(scope="module")
def golden() -> Golden:
    return load_golden()


@pytest.fixture(scope="module")
def jitted_values() -> dict[str, np.ndarray]:
    """Every schedule tabulated by one jitted, vmapped program (one compile for the table)."""
    built = {case.id: case.make_schedule() for case in SCHEDULE_CASES}
    longest = max(case.steps for case in SCHEDULE_CASES)

    @jax.jit
    def tabulate(counts: jax.Array) -> dict[str, jax.Array]:
        return {name: jax.vmap(schedule)(counts) for name, schedule in built.items()}

    values = tabulate(jnp.arange(longest, dtype=jnp.int32))
    return {case.id: np.asarray(values[case.id][: case.steps]) for case in SCHEDULE_CASES}


def eager_values(case: ScheduleCase) -> np.ndarray:
    """The schedule applied to all counts at once, op by op (no tracing)."""
    return np.asarray(case.make_schedule()(jnp.arange(case.steps, dtype=jnp.int32)))


def test_golden_file_matches_the_case_table(golden):
    assert sorted(golden.schedule_specs) == sorted(IDS), "regenerate: generate_golden.py"
    stale = [c.id for c in SCHEDULE_CASES if golden.schedule_specs[c.id] != c.torch_spec()]
    assert not stale, f"golden values are stale for {stale}; run tests/schedules/generate_golden.py"


@pytest.mark.parametrize("case", SCHEDULE_CASES, ids=IDS)
def test_eager_matches_torch_golden(case, golden):
    values = eager_values(case)
    assert values.dtype == np.float64
    np.testing.assert_allclose(values, golden.schedules[case.id], rtol=RTOL, atol=0)


@pytest.mark.parametrize("case", SCHEDULE_CASES, ids=IDS)
def test_jit_matches_torch_golden(case, golden, jitted_values):
    np.testing.assert_allclose(jitted_values[case.id], golden.schedules[case.id], rtol=RTOL, atol=0)


@pytest.mark.torch
@pytest.mark.parametrize("case", SCHEDULE_CASES, ids=IDS)
def test_matches_live_torch(case, jitted_values):
    expected = oracle.torch_schedule(case)
    np.testing.assert_allclose(eager_values(case), expected, rtol=RTOL, atol=0)
    np.testing.assert_allclose(jitted_values[case.id], expected, rtol=RTOL, atol=0)
