"""float32 parity at JAX's default precision, where ``jax_enable_x64`` is off.

The rest of the suite enables float64, which changes how scalars such as bias corrections are
computed (float64, then cast). Most users never turn x64 on, so the float32 golden trajectories
are also checked in a fresh interpreter with the default configuration.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.parity.cases import CASES

ROOT = Path(__file__).resolve().parents[2]

_RUNNER = """
import json
import jax
assert not jax.config.jax_enable_x64
from tests.optimizers.test_parity import TOLERANCES, golden
from tests.parity.cases import CASES
from tests.parity.runner import DTYPES, compare, run_optkit, stack
results = {}
for case in CASES:
    ours = stack(run_optkit(case, DTYPES["float32"]))
    leaf_dtypes = sorted({str(values.dtype) for values in ours.values()})
    expected = golden("float32").trajectories[case.id]
    mismatch = compare(ours, expected, **TOLERANCES["float32"]._asdict())
    results[case.id] = {"mismatch": mismatch and str(mismatch), "dtypes": leaf_dtypes}
print(json.dumps(results))
"""


@pytest.fixture(scope="module")
def default_precision_results() -> dict[str, dict]:
    env = {**os.environ, "JAX_ENABLE_X64": "0", "JAX_PLATFORMS": "cpu"}
    completed = subprocess.run(
        [sys.executable, "-c", _RUNNER],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    return json.loads(completed.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
def test_float32_matches_torch_golden_without_x64(case, default_precision_results):
    result = default_precision_results[case.id]
    assert result["dtypes"] == ["float32"]
    assert result["mismatch"] is None, f"{case.id} [float32, x64 off]: {result['mismatch']}"
