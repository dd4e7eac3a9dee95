"""At JAX's default precision every schedule is float32 and still close to torch's float64 values.

This session enables float64 (tests/conftest.py), so the float32 run happens in a fresh
interpreter with ``jax_enable_x64`` off. The bound, relative 2e-5, is float32 rounding carried
through a power (``gamma**k`` rounds ``gamma`` to float32 first): it checks that no formula loses
more digits than that, e.g. at a cosine's minimum or at the end of a one-cycle anneal.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.schedules.cases import SCHEDULE_CASES
from tests.schedules.generate_golden import Golden, load_golden

RTOL = 2e-5
ROOT = Path(__file__).resolve().parents[2]

_RUNNER = """
import sys
import jax, jax.numpy as jnp, numpy as np
from tests.schedules.cases import SCHEDULE_CASES
built = {case.id: case.make_schedule() for case in SCHEDULE_CASES}
counts = jnp.arange(max(case.steps for case in SCHEDULE_CASES), dtype=jnp.int32)
values = jax.jit(lambda k: {name: jax.vmap(s)(k) for name, s in built.items()})(counts)
np.savez(sys.argv[1], **{name: np.asarray(v) for name, v in values.items()})
"""


@pytest.fixture(scope="module")
def float32_values(tmp_path_factory) -> dict[str, np.ndarray]:
    path = tmp_path_factory.mktemp("float32") / "values.npz"
    env = {**os.environ, "JAX_ENABLE_X64": "0", "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(ROOT)}
    completed = subprocess.run(
        [sys.executable, "-c", _RUNNER, str(path)],
        capture_output=True,
        text=True,
        check=False,
        env=env,
        cwd=ROOT,
    )
    assert completed.returncode == 0, completed.stderr
    with np.load(path) as data:
        return {name: data[name] for name in data.files}


@pytest.fixture(scope="module")
def golden() -> Golden:
    return load_golden()


@pytest.mark.parametrize("case", SCHEDULE_CASES, ids=[case.id for case in SCHEDULE_CASES])
def test_float32_schedule_is_float32_and_accurate(case, float32_values, golden):
    values = float32_values[case.id][: case.steps]
    assert values.dtype == np.float32
    expected = golden.schedules[case.id]
    np.testing.assert_allclose(values.astype(np.float64), expected, rtol=RTOL, atol=0)
