"""float32 parity at JAX's default precision, where ``jax_enable_x64`` is off.

The rest of the suite enables float64, which changes how scalars such as bias corrections are
computed (float64, then cast). Most users never turn x64 on, so the float32 golden trajectories
are also checked in a fresh interpreter with the default configuration, on every optkit path
(per-leaf and ``optkit.flatten``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.optimizers.test_parity import by_case_and_path
from tests.parity.cases import Case
from tests.parity.runner import run_id

ROOT = Path(__file__).resolve().parents[2]

_RUNNER = """
import json
import jax
assert not jax.config.jax_enable_x64
from tests.optimizers.test_parity import CASES_AND_PATHS, TOLERANCES, golden
from tests.parity.runner import DTYPES, compare, run_id, run_optkit, stack
results = {}
for case, path in CASES_AND_PATHS:
        ours = stack(run_optkit(case, DTYPES["float32"], path=path))
        leaf_dtypes = sorted({str(values.dtype) for values in ours.values()})
        expected = golden(case.family, "float32").trajectories[case.id]
        mismatch = compare(ours, expected, **TOLERANCES["float32"]._asdict())
        result = {"mismatch": mismatch and str(mismatch), "dtypes": leaf_dtypes}
        results[run_id(case.id, path)] = result
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


@by_case_and_path
def test_float32_matches_torch_golden_without_x64(
    case: Case, path: str, default_precision_results: dict[str, dict]
) -> None:
    result = default_precision_results[run_id(case.id, path)]
    assert result["dtypes"] == ["float32"]
    assert result["mismatch"] is None, f"{case.id} [float32, x64 off, {path}]: {result['mismatch']}"
