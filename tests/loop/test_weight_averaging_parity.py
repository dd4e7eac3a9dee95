"""weight_averaging reproduces torch's ``AveragedModel`` after each ``optimizer.step()``.

Runs (tests/loop/averaging_cases.py): SGD with Nesterov momentum, AdamW (under SWALR from the
start) and NAdam on the standard parity problem, each watched by several EMA and SWA set-ups
(start_step 0 and later, every_k 1 and more), and torch's SWA recipe, SGD with SWALR after a
cosine schedule, stepped per update and per epoch. Each is compared step by step, the params and
every average, float64 to relative 1e-10 and float32 to 1e-5. The golden tests use torch's
values stored in tests/loop/golden/ and run without torch; the live tests run torch itself.

Scripted runs set the params to a fixed sequence and compare the averages alone, in bfloat16,
float16, float32 and float64: they are torch's bit for bit (same lerp formulas, same float32 SWA
weight, half precision averaged in float32).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import optkit
from tests.loop import averaging_oracle
from tests.loop.averaging_cases import BY_ID, RUNS, AveragingRun, averaging_states
from tests.loop.averaging_oracle import SCRIPT_AVERAGINGS, scripted_params
from tests.loop.generate_averaging_golden import (
    RUN_DTYPES,
    SCRIPT_DTYPES,
    load_golden,
    scripted_spec,
)
from tests.parity import problem
from tests.parity.runner import compare
from tests.support.torch_oracle import require_torch

TOLERANCES = {"float64": {"rtol": 1e-10, "atol": 1e-12}, "float32": {"rtol": 1e-5, "atol": 1e-6}}
REGENERATE = "regenerate with `python -m tests.loop.generate_averaging_golden`"
Arrays = dict[str, np.ndarray]

by_run_and_dtype = pytest.mark.parametrize(
    ("run", "dtype_name"),
    [pytest.param(run, d, id=f"{run.id}-{d}") for run in RUNS for d in RUN_DTYPES],
)


@pytest.fixture(scope="module")
def golden() -> Arrays:
    return load_golden()


def optkit_run(run: AveragingRun, dtype_name: str) -> Arrays:
    """The params and every set-up's average after each update, keyed as the oracle's."""
    return _optkit_run(run.id, dtype_name)


@functools.cache
def _optkit_run(run_id: str, dtype_name: str) -> Arrays:
    """One jitted scan per run and dtype, cached: the nested wrappers run every set-up at once."""
    run = BY_ID[run_id]
    task = problem.STANDARD
    params = {k: jnp.asarray(v) for k, v in task.initial_params(RUN_DTYPES[dtype_name]).items()}
    tx = run.make_optkit()

    def body(carry, _):
        params, state = carry
        _, grads = jax.value_and_grad(task.jax_loss)(params)
        updates, state = tx.update(grads, state, params)
        params = optkit.apply_updates(params, updates)
        averages = [s.averaged_params for s in averaging_states(run, state)]
        return (params, state), (params, averages)

    trajectory = jax.jit(lambda p: jax.lax.scan(body, (p, tx.init(p)), length=run.steps)[1])
    params_path, averages = trajectory(params)
    arrays = {f"params:{leaf}": np.asarray(v) for leaf, v in params_path.items()}
    for averaging, average in zip(run.averagings, averages, strict=True):
        arrays.update({f"{averaging.id}:{leaf}": np.asarray(v) for leaf, v in average.items()})
    return arrays


def by_path(arrays: Arrays) -> dict[str, Arrays]:
    """``{"params": {leaf: ...}, "<averaging id>": {leaf: ...}}`` from ``<path>:<leaf>`` keys."""
    grouped: dict[str, Arrays] = {}
    for key, value in arrays.items():
        path, leaf = key.rsplit(":", 1)
        grouped.setdefault(path, {})[leaf] = value
    return grouped


def assert_run_matches(ours: Arrays, expected: Arrays, dtype_name: str) -> None:
    expected_paths = by_path(expected)
    ours_paths = by_path(ours)
    assert ours_paths.keys() == expected_paths.keys()
    for path, leaves in expected_paths.items():
        mismatch = compare(ours_paths[path], leaves, **TOLERANCES[dtype_name])
        assert mismatch is None, f"{path}: {mismatch}"


def run_golden(golden: Arrays, run: AveragingRun, dtype_name: str) -> Arrays:
    prefix = f"run:{run.id}:{dtype_name}:"
    return {k.removeprefix(prefix): v for k, v in golden.items() if k.startswith(prefix)}


def test_golden_file_matches_the_tables(golden):
    stored = {k.removeprefix("spec:run:") for k in golden if k.startswith("spec:run:")}
    assert stored == {run.id for run in RUNS}, REGENERATE
    stale = [run.id for run in RUNS if str(golden[f"spec:run:{run.id}"]) != run.torch_spec()]
    assert not stale, f"golden values are stale for {stale}; {REGENERATE}"
    assert str(golden["spec:scripted"]) == scripted_spec(), REGENERATE


def test_every_average_moves_and_differs_from_the_params(golden):
    """The table says something: each set-up averages several distinct iterates."""
    for run in RUNS:
        expected = by_path(run_golden(golden, run, "float64"))
        params = expected["params"]["matrix"]
        assert np.abs(params[-1] - params[0]).max() > 0.1, run.id
        for averaging in run.averagings:
            average = expected[averaging.id]["matrix"]
            if averaging.start_step < run.steps - 1:
                assert np.abs(average[-1] - params[-1]).max() > 1e-3, (run.id, averaging.id)


@by_run_and_dtype
def test_matches_torch_golden(run, dtype_name, golden):
    assert_run_matches(optkit_run(run, dtype_name), run_golden(golden, run, dtype_name), dtype_name)


@pytest.mark.torch
@by_run_and_dtype
def test_matches_live_torch(run, dtype_name):
    require_torch()
    expected = averaging_oracle.torch_run(run, RUN_DTYPES[dtype_name])
    assert_run_matches(optkit_run(run, dtype_name), expected, dtype_name)


@pytest.mark.torch
def test_torch_cpu_default_swa_is_the_same_mean_in_float32():
    """``AveragedModel(model)`` on CPU divides by n + 1 instead of lerping with a float32 weight:
    in float32 that is within the parity tolerance of optkit (and of torch's CUDA path)."""
    require_torch()
    run = RUNS[0]
    expected = averaging_oracle.torch_run(run, np.float32, cpu_default_swa=True)
    assert_run_matches(optkit_run(run, "float32"), expected, "float32")


# --- scripted params: the averaging arithmetic alone, in every float dtype --------------------


@functools.cache
def optkit_scripted(dtype_name: str) -> Arrays:
    """Each scripted set-up's average after every step, the params following the script."""
    sequence = scripted_params(dtype_name)
    dtype = jnp.dtype(dtype_name)
    update_dtype = jnp.float32 if dtype.itemsize < 4 else dtype
    tx = optkit.identity()
    for averaging in reversed(SCRIPT_AVERAGINGS):
        tx = optkit.weight_averaging(tx, **averaging.kwargs())

    @jax.jit
    def step(params, state, target):
        # params + (target - params), added as apply_updates adds, lands exactly on the target.
        updates = {
            k: target[k].astype(update_dtype) - params[k].astype(update_dtype) for k in target
        }
        updates, state = tx.update(updates, state, params)
        return optkit.apply_updates(params, updates), state

    params = {k: jnp.asarray(v, dtype) for k, v in sequence[0].items()}
    state = tx.init(params)
    records: dict[str, list] = {}
    for target in sequence[1:]:
        params, state = step(params, state, {k: jnp.asarray(v) for k, v in target.items()})
        assert all(np.array_equal(np.asarray(params[k], np.float64), target[k]) for k in target)
        nested = state
        for averaging in SCRIPT_AVERAGINGS:
            for leaf, value in nested.averaged_params.items():
                assert value.dtype == dtype
                records.setdefault(f"{averaging.id}:{leaf}", []).append(np.asarray(value))
            nested = nested.inner_state
    return {key: np.stack(values) for key, values in records.items()}


def assert_bitwise(ours: Arrays, expected: Arrays) -> None:
    assert ours.keys() == expected.keys()
    for key, value in expected.items():
        np.testing.assert_array_equal(ours[key].astype(value.dtype), value, err_msg=key)


@pytest.mark.parametrize("dtype_name", SCRIPT_DTYPES)
def test_scripted_averages_are_torch_golden_bit_for_bit(dtype_name, golden):
    prefix = f"scripted:{dtype_name}:"
    expected = {k.removeprefix(prefix): v for k, v in golden.items() if k.startswith(prefix)}
    assert_bitwise(optkit_scripted(dtype_name), expected)


@pytest.mark.torch
@pytest.mark.parametrize("dtype_name", SCRIPT_DTYPES)
def test_scripted_averages_are_live_torch_bit_for_bit(dtype_name):
    require_torch()
    assert_bitwise(optkit_scripted(dtype_name), averaging_oracle.torch_scripted(dtype_name))
