"""Every registry optimizer's state crosses to torch and back, and the run goes on as at home.

Per registry row (all but LBFGS, whose torch state is one flat record), in float64 on the row's
parity problem with its typical set-up (every state buffer on):

* import: torch runs 7 steps, ``from_torch_state_dict`` reads its ``state_dict()``, and 7 more
  optkit updates follow torch's 7 more steps to 1e-10;
* export: optkit runs 7 updates, ``to_torch_state_dict`` writes a dict equal to torch's own after
  its 7 steps (param groups entry for entry, tensors to 1e-10), a fresh torch optimizer loads it,
  and its 7 more steps follow optkit's 7 more;
* golden: the import again without torch, from the torch state_dicts stored as NumPy arrays in
  ``tests/interop/golden/`` (``python -m tests.interop.generate_golden`` writes them).
"""

from __future__ import annotations

import numpy as np
import pytest

import optkit
from tests.interop import runs
from tests.interop.generate_golden import load_golden, row_spec
from tests.parity import problem
from tests.support.registry import BY_NAME
from tests.support.torch_oracle import require_torch

by_row = pytest.mark.parametrize("name", runs.NAMES)


@by_row
def test_import_continues_torchs_run(name):
    require_torch()
    info = BY_NAME[name]
    reference = runs.torch_reference(name)
    tx, step = runs.optkit_run(name)
    params = runs.as_jax(reference.params)

    state = optkit.from_torch_state_dict(tx, params, reference.state_dict, runs.paths(info))
    continued, _, _ = runs.continue_optkit(step, params, state)

    runs.assert_same_path(continued, reference.continued)


def _assert_same_state_dict(ours, torchs) -> None:
    assert ours["param_groups"] == torchs["param_groups"]
    assert ours["state"].keys() == torchs["state"].keys()
    for index, record in torchs["state"].items():
        assert ours["state"][index].keys() == record.keys(), index
        for key, value in record.items():
            mine = ours["state"][index][key]
            if isinstance(value, int):  # SparseAdam's step
                assert mine == value and isinstance(mine, int)
                continue
            assert mine.dtype == value.dtype and mine.shape == value.shape, (index, key)
            np.testing.assert_allclose(mine.numpy(), value.numpy(), rtol=runs.RTOL, atol=runs.ATOL)


@by_row
def test_export_is_torchs_state_dict_and_torch_continues(name):
    require_torch()
    info = BY_NAME[name]
    tx, step = runs.optkit_run(name)
    start = problem.PROBLEMS[info.problem].initial_params(np.float64)
    params = runs.as_jax(start)
    _, params, state = runs.continue_optkit(step, params, tx.init(params))

    exported = optkit.to_torch_state_dict(tx, state, params, runs.paths(info))
    _assert_same_state_dict(exported, runs.torch_reference(name).state_dict)

    resumed = runs.torch_params(params, runs.paths(info))
    optimizer = runs.torch_optimizer(info, resumed)
    optimizer.load_state_dict(exported)
    expected = runs.row_steps(info, optimizer, resumed)
    continued, _, _ = runs.continue_optkit(step, params, state)
    # torch's load_state_dict casts NAdam's float32 mu_product to the params' float64, and a
    # resumed torch multiplies it unrounded from then on: 4.5e-11 after 7 steps, the same
    # difference as between torch's own uninterrupted and saved-and-loaded runs.
    runs.assert_same_path(continued, expected)


# --- without torch: the stored state_dicts ------------------------------------------------------


@pytest.fixture(scope="module")
def golden():
    return load_golden()


def test_golden_file_matches_the_registry(golden):
    assert sorted(golden.specs) == sorted(runs.NAMES), "run python -m tests.interop.generate_golden"
    stale = [name for name in runs.NAMES if golden.specs[name] != row_spec(BY_NAME[name])]
    assert not stale, f"golden state_dicts are stale for {stale}: run tests.interop.generate_golden"


@by_row
def test_import_from_stored_state_dict_continues_torchs_run(name, golden):
    info = BY_NAME[name]
    tx, step = runs.optkit_run(name)
    params = runs.as_jax(golden.params[name])

    state = optkit.from_torch_state_dict(tx, params, golden.state_dicts[name], runs.paths(info))
    continued, _, _ = runs.continue_optkit(step, params, state)

    runs.assert_same_path(continued, golden.continued[name])
