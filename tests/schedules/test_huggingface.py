"""``schedules.get_scheduler`` reproduces transformers' ``get_scheduler``, eagerly and under jit.

The table (tests/schedules/huggingface_cases.py) covers every name with and without warmup and
runs past ``num_training_steps``; the golden tests compare with transformers' values stored in
tests/schedules/golden/transformers_lr.npz and need neither torch nor transformers, the live
tests run transformers itself. The bound is relative 1e-10 in float64: transformers computes
its factors in Python floats and optkit the same formulas in float64, so they agree to rounding
(~1e-13), and exact zeros stay exact.
"""

from __future__ import annotations

import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import optkit
from optkit import schedules
from tests.schedules.generate_huggingface_golden import Golden, load_golden
from tests.schedules.huggingface_cases import (
    HUGGINGFACE_CASES,
    HuggingFaceCase,
    require_transformers,
    stepped_lrs,
    transformers_optimizer,
    transformers_schedule,
)

RTOL = 1e-10
IDS = [case.id for case in HUGGINGFACE_CASES]
NAMES = (
    "linear",
    "cosine",
    "cosine_with_restarts",
    "polynomial",
    "constant",
    "constant_with_warmup",
    "inverse_sqrt",
    "cosine_with_min_lr",
    "cosine_warmup_with_min_lr",
    "warmup_stable_decay",
)


@pytest.fixture(scope="module")
def golden() -> Golden:
    return load_golden()


@pytest.fixture(scope="module")
def jitted_values() -> dict[str, np.ndarray]:
    """Every schedule tabulated by one jitted, vmapped program (one compile for the table)."""
    built = {case.id: case.make_schedule() for case in HUGGINGFACE_CASES}

    @jax.jit
    def tabulate(counts: jax.Array) -> dict[str, jax.Array]:
        return {name: jax.vmap(schedule)(counts) for name, schedule in built.items()}

    values = tabulate(jnp.arange(max(case.steps for case in HUGGINGFACE_CASES), dtype=jnp.int32))
    return {case.id: np.asarray(values[case.id][: case.steps]) for case in HUGGINGFACE_CASES}


def eager_values(case: HuggingFaceCase) -> np.ndarray:
    return np.asarray(case.make_schedule()(jnp.arange(case.steps, dtype=jnp.int32)))


def test_golden_file_matches_the_case_table(golden):
    assert sorted(golden.specs) == sorted(IDS), "run tests/schedules/generate_huggingface_golden.py"
    stale = [case.id for case in HUGGINGFACE_CASES if golden.specs[case.id] != case.spec()]
    assert not stale, f"stale goldens for {stale}: run generate_huggingface_golden.py"


def test_the_table_covers_every_name_with_and_without_warmup_past_training_steps():
    assert {case.name for case in HUGGINGFACE_CASES} == set(NAMES)
    for name in NAMES:
        cases = [case for case in HUGGINGFACE_CASES if case.name == name]
        warmups = {case.num_warmup_steps or 0 for case in cases}
        assert 0 in warmups and max(warmups) > 0, name
        assert all(case.steps >= 300 for case in cases)
        assert all(case.steps > (case.num_training_steps or 0) for case in cases), name


@pytest.mark.parametrize("case", HUGGINGFACE_CASES, ids=IDS)
def test_eager_matches_transformers_golden(case, golden):
    values = eager_values(case)
    assert values.dtype == np.float64
    np.testing.assert_allclose(values, golden.lrs[case.id], rtol=RTOL, atol=0)


@pytest.mark.parametrize("case", HUGGINGFACE_CASES, ids=IDS)
def test_jit_matches_transformers_golden(case, golden, jitted_values):
    np.testing.assert_allclose(jitted_values[case.id], golden.lrs[case.id], rtol=RTOL, atol=0)


@pytest.mark.torch
@pytest.mark.parametrize("case", HUGGINGFACE_CASES, ids=IDS)
def test_matches_live_transformers(case, jitted_values):
    expected = transformers_schedule(case)
    np.testing.assert_allclose(eager_values(case), expected, rtol=RTOL, atol=0)
    np.testing.assert_allclose(jitted_values[case.id], expected, rtol=RTOL, atol=0)


def test_jitted_scalar_count_gives_a_float64_scalar(golden):
    case = HUGGINGFACE_CASES[IDS.index("cosine-warmup_20")]
    value = jax.jit(case.make_schedule())(jnp.int32(310))
    assert value.shape == () and value.dtype == jnp.float64
    np.testing.assert_allclose(value, golden.lrs[case.id][310], rtol=RTOL)


def test_cosine_rises_again_past_training_steps(golden):
    # transformers' half cosine keeps going: back up to the peak at 2T - W (T = 120, W = 5).
    values = golden.lrs["cosine-rises_again_twice"]
    assert values[120] == 0.0
    np.testing.assert_allclose(values[121:236], values[119:4:-1], rtol=1e-12)
    np.testing.assert_allclose(values[235], 0.1, rtol=1e-15)


def test_schedule_drives_an_optimizer_under_jit(golden):
    case = HUGGINGFACE_CASES[IDS.index("linear-warmup_30")]
    tx = optkit.sgd(learning_rate=case.make_schedule())
    params = jnp.zeros(())
    state = tx.init(params)
    step = jax.jit(tx.update)
    for count in range(40):
        updates, state = step(jnp.ones(()), state, params)
        np.testing.assert_allclose(-updates, golden.lrs[case.id][count], rtol=RTOL)


def test_giving_both_lengths_to_warmup_stable_decay_warns_and_uses_the_stable_steps():
    kwargs = {"num_decay_steps": 10, "num_stable_steps": 5}
    with pytest.warns(UserWarning, match="num_stable_steps will be used"):
        both = schedules.get_scheduler("warmup_stable_decay", 1.0, 3, 100, kwargs)
    stable_only = schedules.get_scheduler("warmup_stable_decay", 1.0, 3, None, kwargs)
    counts = jnp.arange(30)
    np.testing.assert_array_equal(both(counts), stable_only(counts))


@pytest.mark.torch
def test_transformers_scheduler_type_enum_is_a_name():
    require_transformers()
    from transformers.trainer_utils import SchedulerType

    by_enum = schedules.get_scheduler(SchedulerType.COSINE, 0.1, 10, 100)
    by_name = schedules.get_scheduler("cosine", 0.1, 10, 100)
    np.testing.assert_array_equal(by_enum(jnp.arange(150)), by_name(jnp.arange(150)))


@pytest.mark.torch
def test_chains_as_torch_chains_transformers_lambda_lr():
    # transformers' schedules are LambdaLRs: chained, they set the lr, the next scheduler scales.
    optimization = require_transformers()
    import torch

    optimizer = transformers_optimizer(0.1)
    cosine = optimization.get_scheduler("cosine", optimizer, 20, 200)
    decay = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=0.99)
    step = torch.optim.lr_scheduler.StepLR(optimizer, step_size=50, gamma=0.5)
    chain = torch.optim.lr_scheduler.ChainedScheduler([step, cosine, decay], optimizer=optimizer)
    expected = stepped_lrs(optimizer, chain, 300)
    ours = schedules.chained_scheduler(
        [
            schedules.step_lr(0.1, step_size=50, gamma=0.5),
            schedules.get_scheduler("cosine", 0.1, 20, 200),
            schedules.exponential_lr(0.1, gamma=0.99),
        ]
    )
    np.testing.assert_allclose(jax.jit(ours)(jnp.arange(300)), expected, rtol=RTOL, atol=0)


LINEAR = ("linear", 0.1, 10, 100)
# (name, learning_rate, num_warmup_steps, num_training_steps, kwargs, error, message)
BAD = [
    ("cosine_annealing", 0.1, 10, 100, None, ValueError, "not a valid SchedulerType"),
    ("reduce_lr_on_plateau", 0.1, 10, 100, None, ValueError, "optkit.reduce_lr_on_plateau"),
    ("greedy", 0.1, 10, 100, None, ValueError, "GreedyLR .* no counterpart"),
    (3, 0.1, 10, 100, None, TypeError, "name must be a string"),
    ("linear", 0.1, None, 100, None, ValueError, "linear requires `num_warmup_steps`"),
    ("constant_with_warmup", 0.1, None, 100, None, ValueError, "requires `num_warmup_steps`"),
    ("cosine", 0.1, 10, None, None, ValueError, "cosine requires `num_training_steps`"),
    ("polynomial", 0.1, 10, None, None, ValueError, "requires `num_training_steps`"),
    (*LINEAR[:2], -1, 100, None, ValueError, "num_warmup_steps must be a non-negative integer"),
    (*LINEAR[:2], 0.1, 100, None, ValueError, "num_warmup_steps must be a non-negative integer"),
    (*LINEAR[:3], -5, None, ValueError, "num_training_steps must be a non-negative integer"),
    ("linear", -0.1, 10, 100, None, ValueError, r"learning_rate must be in \[0.0, inf\]"),
    (*LINEAR, {"num_cycles": 2}, TypeError, "unexpected keyword argument 'num_cycles'"),
    ("cosine", 0.1, 10, 100, {"power": 2}, TypeError, "'power' .* takes num_cycles"),
    (*LINEAR, {"last_epoch": 5}, ValueError, "resumes with the optimizer state"),
    (*LINEAR, [("power", 2)], TypeError, "scheduler_specific_kwargs must be a dict"),
    ("inverse_sqrt", 0.1, 10, None, {"timescale": 0}, ValueError, r"timescale must be in \(0.0"),
    ("cosine", 0.1, 10, 100, {"num_cycles": -1}, ValueError, "num_cycles must be in"),
    ("polynomial", 0.1, 10, 100, {"lr_end": 0.1}, ValueError, "must be smaller than initial lr"),
    ("polynomial", 0.1, 10, 10, None, ValueError, "num_training_steps != num_warmup_steps"),
    ("polynomial", 0.1, 10, 100, {"power": -1.0}, ValueError, "power must be in"),
    ("polynomial", 0.1, 10, 100, {"lr_end": -math.inf}, ValueError, "lr_end must be a finite"),
    ("cosine_with_min_lr", 0.1, 10, 100, None, ValueError, "One of min_lr or min_lr_rate"),
    (
        "cosine_with_min_lr",
        *LINEAR[1:],
        {"min_lr": 1e-3, "min_lr_rate": 0.1},
        ValueError,
        "Only one of min_lr or min_lr_rate",
    ),
    ("cosine_with_min_lr", 0.0, 10, 100, {"min_lr": 1e-3}, ValueError, "nonzero learning_rate"),
    (
        "cosine_with_min_lr",
        0.1,
        10,
        100,
        {"min_lr_rate": math.nan},
        ValueError,
        "min_lr_rate must be a finite",
    ),
    (
        "cosine_warmup_with_min_lr",
        *LINEAR[1:],
        {"min_lr_rate": 0.1, "warmup_lr_rate": 2.0},
        ValueError,
        "warmup_lr_rate must be in",
    ),
    ("warmup_stable_decay", 0.1, 10, 100, None, TypeError, "requires num_decay_steps"),
    ("warmup_stable_decay", 0.1, 10, None, {"num_decay_steps": 5}, ValueError, "Either num_"),
    (
        "warmup_stable_decay",
        *LINEAR[1:],
        {"num_decay_steps": 5, "warmup_type": "exp"},
        ValueError,
        "warmup_type must be one of 'linear', 'cosine', '1-sqrt'",
    ),
    (
        "warmup_stable_decay",
        *LINEAR[1:],
        {"num_decay_steps": 5, "decay_type": "step"},
        ValueError,
        "decay_type must be one of",
    ),
    (
        "warmup_stable_decay",
        *LINEAR[1:],
        {"num_decay_steps": 5, "min_lr_ratio": math.inf},
        ValueError,
        "min_lr_ratio must be a finite",
    ),
    (
        "warmup_stable_decay",
        *LINEAR[1:],
        {"num_decay_steps": 5, "num_training_steps": 50},
        TypeError,
        "num_training_steps are arguments of get_scheduler",
    ),
]


@pytest.mark.parametrize(
    ("name", "learning_rate", "warmup", "total", "kwargs", "error", "message"),
    BAD,
    ids=[f"{row[0]}-{row[4]}-{row[2]}-{row[3]}" for row in BAD],
)
def test_bad_arguments_raise_a_clear_error(
    name, learning_rate, warmup, total, kwargs, error, message
):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning instead of the error
        with pytest.raises(error, match=message):
            schedules.get_scheduler(name, learning_rate, warmup, total, kwargs)


def test_constant_schedules_ignore_what_transformers_ignores():
    counts = jnp.arange(50)
    constant = schedules.get_scheduler("constant", 0.1, 10, 20, {"anything": 1})
    np.testing.assert_array_equal(constant(counts), 0.1)
    warm = schedules.get_scheduler("constant_with_warmup", 0.1, 10, None, {"num_cycles": 3})
    np.testing.assert_allclose(warm(counts[:10]), 0.1 * np.arange(10) / 10, rtol=1e-15)
    np.testing.assert_array_equal(warm(counts[10:]), 0.1)
