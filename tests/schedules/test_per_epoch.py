"""schedules.per_epoch: torch's scheduler stepped once per epoch, as full training runs.

Each case of tests/schedules/epoch_cases.py trains on the same problem in torch (the scheduler
stepped after each epoch of ``steps_per_epoch`` updates) and in optkit (``per_epoch`` around the
schedule built with torch's arguments). The learning rate of every update and the params after it
must match torch's: relative 1e-12 for the learning rates, 1e-10 for float64 params, 1e-5
(absolute 1e-6) for float32 ones, over at least 300 updates. The golden tests read torch's values
from tests/schedules/golden/per_epoch.npz and run without torch.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optkit
from optkit import schedules
from tests.schedules import cases, epoch_runs
from tests.schedules.epoch_cases import (
    FLOAT32_CASES,
    MNIST,
    SCHEDULE_CASES,
    EpochCase,
    case_ids,
)
from tests.schedules.epoch_runs import LR_RTOL, assert_run_matches, optkit_run
from tests.support.torch_oracle import require_torch

RUNS = [
    *(pytest.param("float64", case, id=f"float64-{case.id}") for case in SCHEDULE_CASES),
    *(
        pytest.param("float32", case, id=f"float32-{case.id}")
        for case in FLOAT32_CASES
        if case.values is None
    ),
]


@pytest.fixture(scope="module")
def golden() -> epoch_runs.Golden:
    return epoch_runs.load_golden()


def schedule_values(case: EpochCase) -> np.ndarray:
    counts = jnp.arange(case.updates, dtype=jnp.int32)
    return np.asarray(case.make_schedule(case.steps_per_epoch)(counts))


def test_golden_file_matches_the_case_tables(golden):
    runs = epoch_runs.golden_runs()
    assert sorted(golden.runs) == sorted((d, c.id) for d, c in runs), "regenerate: epoch_runs.py"
    stale = sorted({c.id for _, c in runs if golden.specs[c.id] != c.torch_spec()})
    assert not stale, (
        f"golden values are stale for {stale}; run python -m tests.schedules.epoch_runs"
    )


@pytest.mark.parametrize("case", SCHEDULE_CASES, ids=case_ids(SCHEDULE_CASES))
def test_learning_rates_match_torch_golden(case, golden):
    expected = golden.runs["float64", case.id].lrs[:, 0]
    assert len(np.unique(expected)) >= 4  # the schedule moves, epoch by epoch
    np.testing.assert_allclose(schedule_values(case), expected, rtol=LR_RTOL, atol=0)
    jitted = jax.jit(case.make_schedule(case.steps_per_epoch))(jnp.arange(case.updates))
    np.testing.assert_allclose(jitted, expected, rtol=LR_RTOL, atol=0)


@pytest.mark.parametrize(("dtype", "case"), RUNS)
def test_trajectory_matches_torch_golden(dtype, case, golden):
    assert case.updates >= 300 or dtype == "float32"
    assert_run_matches(optkit_run(dtype, case.id), golden.runs[dtype, case.id], dtype)


@pytest.mark.torch
@pytest.mark.parametrize(("dtype", "case"), RUNS)
def test_trajectory_matches_live_torch(dtype, case):
    require_torch()
    expected = epoch_runs.run_torch(case, dtype)
    np.testing.assert_allclose(schedule_values(case), expected.lrs[:, 0], rtol=LR_RTOL, atol=0)
    assert_run_matches(optkit_run(dtype, case.id), expected, dtype)


def test_mnist_literal_translation_decays_every_update(golden):
    """The pitfall: torch's StepLR(step_size=1) stepped per epoch is not step_lr(step_size=1),
    which decays after every update (0.7**7 ~ 0.08 by the end of the first 8-update epoch)."""
    torch_lrs = golden.runs["float64", MNIST.id].lrs[:, 0]
    literal = np.asarray(schedules.step_lr(1.0, step_size=1, gamma=0.7)(jnp.arange(MNIST.updates)))
    np.testing.assert_allclose(literal, 0.7 ** np.arange(MNIST.updates), rtol=1e-12)
    assert np.all(torch_lrs[: MNIST.steps_per_epoch] == 1.0) and literal[7] < 0.1
    epoch_lr = schedules.step_lr(1.0, step_size=MNIST.steps_per_epoch, gamma=0.7)
    np.testing.assert_allclose(epoch_lr(jnp.arange(MNIST.updates)), torch_lrs, rtol=LR_RTOL)


@pytest.mark.parametrize("steps_per_epoch", [1, 7])
def test_every_schedule_is_evaluated_at_the_epoch_count(steps_per_epoch):
    """For every schedule of tests/schedules/cases.py and an optax one, at int32 counts."""
    built = {case.id: case.make_schedule() for case in cases.SCHEDULE_CASES}
    built["optax_cosine"] = optax.cosine_decay_schedule(0.1, decay_steps=50)

    @jax.jit
    def both(counts: jax.Array) -> tuple[dict, dict]:
        stepped = {k: schedules.per_epoch(s, steps_per_epoch)(counts) for k, s in built.items()}
        return stepped, {k: s(counts // steps_per_epoch) for k, s in built.items()}

    stepped, expected = both(jnp.arange(700, dtype=jnp.int32))
    for name in built:
        np.testing.assert_array_equal(stepped[name], expected[name], err_msg=name)
    identity = schedules.per_epoch(lambda count: count, steps_per_epoch)
    epochs = identity(jnp.arange(700, dtype=jnp.int32))
    assert epochs.dtype == jnp.int32
    np.testing.assert_array_equal(epochs, np.arange(700) // steps_per_epoch)


def test_inside_inject_hyperparams_the_value_is_the_epochs():
    schedule = schedules.per_epoch(schedules.step_lr(1.0, step_size=1, gamma=0.5), 3)
    tx = optkit.inject_hyperparams(optkit.sgd)(learning_rate=schedule, momentum=0.9)
    params = jnp.zeros(2)
    update = jax.jit(tx.update)
    state, seen = tx.init(params), []
    for _ in range(7):
        _, state = update(jnp.ones(2), state, params)
        seen.append(float(optkit.get_hyperparams(state)["learning_rate"]))
    assert seen == [1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.25]


BAD_STEPS = [0, -3, 2.5, True, "8", None]


@pytest.mark.parametrize("bad", BAD_STEPS, ids=repr)
def test_bad_steps_per_epoch_is_rejected_with_its_name(bad):
    with pytest.raises(ValueError, match=r"^steps_per_epoch must be a positive integer"):
        schedules.per_epoch(schedules.step_lr(0.1, step_size=1), bad)


def test_a_schedule_that_is_not_callable_is_rejected_with_its_name():
    with pytest.raises(TypeError, match=r"^schedule must be callable"):
        schedules.per_epoch(0.1, 10)
