"""``optkit.quantize_state`` against torchao's 8-bit and 4-bit Adam and AdamW.

Over 50 float32 steps (``quant_cases.py``) the params agree with torchao's to ``1e-4`` relative on
all but 1% of the quantized elements, and to ``1e-4`` everywhere on the leaves neither side
quantizes. Every case is checked against the golden file; two also run torchao live. The golden
file also pins torchao's quantization tables, which optkit's must match to 2 float32 ulps.
"""

from __future__ import annotations

import numpy as np
import pytest

from optkit.combinators import _block_codes
from tests.memory import quant_cases
from tests.memory.quant_cases import CASES, LIVE, QUANTIZED, RTOL, SHAPES
from tests.support.torch_oracle import require_torchao

BY_ID = {case.id: case for case in CASES}


@pytest.fixture(scope="module")
def golden() -> dict[str, np.ndarray]:
    with np.load(quant_cases.GOLDEN, allow_pickle=False) as data:
        return {key: data[key] for key in data.files}


@pytest.fixture(scope="module")
def optkit_results() -> dict[str, dict[str, np.ndarray]]:
    return {case.id: quant_cases.run_optkit(case.make()) for case in CASES}


def check_parity(ours: dict[str, np.ndarray], reference: dict[str, np.ndarray]) -> None:
    for leaf in SHAPES:
        share, largest = quant_cases.mismatch(ours[leaf], reference[leaf])
        if leaf in QUANTIZED:
            assert share <= quant_cases.MISMATCH_FRACTION, (leaf, share, largest)
        else:
            assert largest <= RTOL, (leaf, largest)


@pytest.mark.parametrize("case_id", sorted(BY_ID))
def test_matches_torchao_golden(case_id, golden, optkit_results):
    case = BY_ID[case_id]
    assert str(golden[f"spec:{case_id}"]) == case.torch_spec(), (
        "stale golden: run python -m tests.memory.generate_quant_golden"
    )
    reference = {leaf: golden[f"{case_id}:{leaf}"] for leaf in SHAPES}
    check_parity(optkit_results[case_id], reference)


@pytest.mark.torch
@pytest.mark.parametrize("case_id", LIVE)
def test_matches_torchao_live(case_id, optkit_results):
    require_torchao()
    check_parity(optkit_results[case_id], quant_cases.run_torchao(BY_ID[case_id]))


def test_golden_cases_are_current(golden):
    stored = {key.removeprefix("spec:") for key in golden if key.startswith("spec:")}
    assert stored == set(BY_ID), "stale golden: run python -m tests.memory.generate_quant_golden"


def ulps_apart(ours: np.ndarray, theirs: np.ndarray) -> int:
    """The largest distance in float32 units in the last place (same-sign values)."""
    assert np.all(np.sign(ours) == np.sign(theirs))
    return int(np.max(np.abs(ours.view(np.int32).astype(np.int64) - theirs.view(np.int32))))


@pytest.mark.parametrize("bits", [8, 4])
@pytest.mark.parametrize("signed", [True, False])
def test_maps_match_torchao_golden(bits, signed, golden):
    name = f"{bits}-{'signed' if signed else 'unsigned'}"
    assert ulps_apart(_block_codes.quantization_map(bits, signed), golden[f"map:{name}"]) <= 2


@pytest.mark.torch
def test_maps_match_torchao_live():
    require_torchao()
    for name, table in quant_cases.torchao_maps().items():
        bits, kind = name.split("-")
        ours = _block_codes.quantization_map(int(bits), kind == "signed")
        assert ulps_apart(ours, table) <= 2, name
