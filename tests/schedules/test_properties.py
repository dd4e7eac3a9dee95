"""What every schedule promises beyond torch's values: scalars, dtypes, jit, composition, optax.

Runs without torch: the expected values come from the golden file or from optax.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optkit
from optkit import schedules
from tests.schedules.cases import SCHEDULE_CASES
from tests.schedules.generate_golden import load_golden

PROBE = 37  # a count inside every case's range, past most warmups and milestones
IDS = [case.id for case in SCHEDULE_CASES]


@pytest.fixture(scope="module")
def golden_schedules() -> dict[str, np.ndarray]:
    return load_golden().schedules


@pytest.fixture(scope="module")
def built():
    return {case.id: case.make_schedule() for case in SCHEDULE_CASES}


@pytest.fixture(scope="module")
def jitted_at_probe(built) -> dict[str, jax.Array]:
    """Every schedule at one int32 scalar count, from one jitted program."""
    return jax.jit(lambda k: {name: s(k) for name, s in built.items()})(jnp.int32(PROBE))


@pytest.mark.parametrize("case", SCHEDULE_CASES, ids=IDS)
def test_jitted_scalar_count_gives_a_default_float_scalar(case, jitted_at_probe, golden_schedules):
    value = jitted_at_probe[case.id]
    assert value.shape == ()
    assert value.dtype == jnp.float64  # the default float dtype: x64 is on in this session
    np.testing.assert_allclose(value, golden_schedules[case.id][PROBE], rtol=1e-9)


@pytest.mark.parametrize("count", [PROBE, np.int64(PROBE), jnp.int32(PROBE)], ids=type)
def test_plain_and_numpy_int_counts_work_eagerly(count, built, golden_schedules):
    for name in ("cosine_annealing_warm_restarts-t0_7_doubling", "one_cycle_lr-three_phase"):
        value = built[name](count)
        assert value.shape == () and value.dtype == jnp.float64
        np.testing.assert_allclose(value, golden_schedules[name][PROBE], rtol=1e-9)


def test_schedule_drives_an_optimizer_under_jit():
    schedule = schedules.step_lr(0.5, step_size=2, gamma=0.1)
    tx = optkit.sgd(learning_rate=schedule)
    params = jnp.zeros(2)
    state = tx.init(params)
    step = jax.jit(tx.update)
    seen = []
    for _ in range(5):
        updates, state = step(jnp.ones(2), state, params)
        seen.append(-float(updates[0]))
    np.testing.assert_allclose(seen, [0.5, 0.5, 0.05, 0.05, 0.005], rtol=1e-12)


def test_cosine_annealing_climbs_back_up_past_t_max():
    schedule = schedules.cosine_annealing_lr(1.0, T_max=10, eta_min=0.1)
    values = np.asarray(jax.jit(schedule)(jnp.arange(41)))
    assert values[10] == pytest.approx(0.1, abs=1e-15)
    np.testing.assert_allclose(values[11:21], values[9::-1], rtol=1e-13)  # mirrored about T_max
    np.testing.assert_allclose(values[20:40], values[:20], rtol=1e-13)  # period 2 * T_max


def test_warm_restarts_restart_exactly_and_stay_bounded_at_huge_counts():
    schedule = jax.jit(schedules.cosine_annealing_warm_restarts(1.0, T_0=3, T_mult=2, eta_min=0.25))
    restarts = np.asarray([3 * (2**n - 1) for n in range(28)])
    counts = np.concatenate([restarts, restarts[1:] - 1, [2**31 - 2, 2**31 - 1]])
    values = np.asarray(schedule(jnp.asarray(counts, dtype=jnp.int32)))
    at_restarts, last_of_cycles, late = np.split(values, [28, 55])
    np.testing.assert_array_equal(at_restarts, 1.0)
    lengths = 3.0 * 2.0 ** np.arange(27)
    expected_last = 0.25 + 0.75 * (1 + np.cos(np.pi * (lengths - 1) / lengths)) / 2
    np.testing.assert_allclose(last_of_cycles, expected_last, rtol=1e-12)
    assert np.all((late >= 0.25) & (late <= 1.0))


def test_one_cycle_holds_its_final_value_past_total_steps():
    schedule = schedules.one_cycle_lr(0.1, total_steps=50, anneal_strategy="linear")
    final, *later = jax.jit(schedule)(jnp.asarray([49, 50, 51, 10_000]))
    np.testing.assert_array_equal(later, final)
    assert float(final) == pytest.approx(0.1 / 25 / 1e4, rel=1e-12)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"init_value": 0.0, "peak_value": 1.0, "warmup_steps": 50, "decay_steps": 300},
        {"init_value": 0.1, "peak_value": 0.5, "warmup_steps": 0, "decay_steps": 120},
        {
            "init_value": 1e-3,
            "peak_value": 0.02,
            "warmup_steps": 17,
            "decay_steps": 230,
            "end_value": 1e-4,
            "exponent": 2.0,
        },
    ],
    ids=["warmup_50", "no_warmup", "end_value_exponent"],
)
def test_warmup_cosine_decay_matches_optax(kwargs):
    counts = jnp.arange(320)
    ours = jax.jit(schedules.warmup_cosine_decay(**kwargs))(counts)
    theirs = jax.jit(optax.warmup_cosine_decay_schedule(**kwargs))(counts)
    # optax forms 1 + cos near the end of the decay, which cancels: compare absolutely there.
    np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-15 * kwargs["peak_value"])


def test_join_schedules_matches_optax_with_optax_schedules_inside():
    parts = [
        optax.linear_schedule(0.0, 0.1, transition_steps=20),
        optax.constant_schedule(0.1),
        optax.exponential_decay(0.1, transition_steps=5, decay_rate=0.8),
    ]
    counts = jnp.arange(200)
    ours = jax.jit(schedules.join_schedules(parts, boundaries=[20, 60]))(counts)
    theirs = jax.jit(optax.join_schedules(parts, boundaries=[20, 60]))(counts)
    np.testing.assert_allclose(ours, theirs, rtol=1e-12)
    assert ours.dtype == jnp.float64


def test_later_schedules_never_see_a_negative_count():
    def strict(count):
        return jnp.where(count < 0, jnp.nan, 0.5)

    schedule = schedules.sequential_lr([schedules.exponential_lr(1.0, 0.9), strict], [10])
    values = jax.jit(jax.vmap(schedule))(jnp.arange(20))
    assert not np.any(np.isnan(values))


def test_lambda_gets_a_default_int_count_so_division_keeps_float64():
    schedule = schedules.lambda_lr(1.0, lambda k: 1 / (k + 3))
    value = jax.jit(schedule)(jnp.int32(4))
    assert value.dtype == jnp.float64
    assert float(value) == 1 / 7
