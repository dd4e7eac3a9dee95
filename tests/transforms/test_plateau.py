"""reduce_lr_on_plateau: torch's ReduceLROnPlateau as a transform that scales the updates.

The scripted runs (tests/schedules/cases.py) take every branch: plateaus, improvements below and
above the threshold, cooldown, the min_lr floor, the eps rule, mode max, threshold_mode abs and a
NaN value. Each is an SGD run in float64 compared with torch's, stored in the golden file and
run live when torch is installed.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import optkit
from optkit.transforms.plateau import ReduceLROnPlateauState, reduce_lr_on_plateau
from tests.schedules import oracle
from tests.schedules.cases import PLATEAU_CASES, PlateauCase
from tests.schedules.generate_golden import Golden, load_golden

IDS = [case.id for case in PLATEAU_CASES]


@pytest.fixture(scope="module")
def golden() -> Golden:
    return load_golden()


def run_optkit(case: PlateauCase) -> tuple[np.ndarray, np.ndarray]:
    """The lr each update used and the params after it, from one jitted ``lax.scan``.

    Same problem as the torch run: descend ``sum(p^2 / 2 + sin(p))``, gradient ``p + cos(p)``.
    """
    tx = optkit.chain(
        optkit.sgd(case.lr), reduce_lr_on_plateau(learning_rate=case.lr, **case.kwargs)
    )

    def step(carry, value):
        params, state = carry
        lr_used = case.lr * state[1].scale
        updates, state = tx.update(params + jnp.cos(params), state, params, value=value)
        params = optkit.apply_updates(params, updates)
        return (params, state), (lr_used, params)

    params = jnp.asarray(oracle.PLATEAU_INIT)
    values = jnp.asarray(case.values, dtype=jnp.float64)
    _, (lrs, path) = jax.jit(lambda p, v: jax.lax.scan(step, (p, tx.init(p)), v))(params, values)
    return np.asarray(lrs), np.asarray(path)


def test_golden_file_matches_the_case_table(golden):
    assert sorted(golden.plateau_specs) == sorted(IDS), "regenerate: generate_golden.py"
    stale = [c.id for c in PLATEAU_CASES if golden.plateau_specs[c.id] != c.torch_spec()]
    assert not stale, f"golden values are stale for {stale}; run tests/schedules/generate_golden.py"


@pytest.mark.parametrize("case", PLATEAU_CASES, ids=IDS)
def test_matches_torch_golden(case, golden):
    lrs, path = run_optkit(case)
    np.testing.assert_allclose(lrs, golden.plateau_lrs[case.id], rtol=1e-12, atol=0)
    np.testing.assert_allclose(path, golden.plateau_params[case.id], rtol=1e-10, atol=1e-14)


@pytest.mark.torch
@pytest.mark.parametrize("case", PLATEAU_CASES, ids=IDS)
def test_matches_live_torch(case):
    expected_lrs, expected_path = oracle.torch_plateau(case)
    lrs, path = run_optkit(case)
    np.testing.assert_allclose(lrs, expected_lrs, rtol=1e-12, atol=0)
    np.testing.assert_allclose(path, expected_path, rtol=1e-10, atol=1e-14)


def test_scripted_runs_reduce_and_stop_as_designed(golden):
    """The scripts exercise what they claim to (a guard against a script that never reduces)."""
    lrs = golden.plateau_lrs
    assert len(np.unique(lrs["min_rel_plateaus"])) >= 4
    assert lrs["min_lr_floor"][-1] == 0.003
    assert lrs["eps_stops_tiny_reductions"][-1] == pytest.approx(1e-8)
    assert lrs["large_eps"][-1] == pytest.approx(0.025)  # 0.025 -> 0.0125 is below eps
    assert np.all(np.diff(lrs["cooldown"]) <= 0) and len(np.unique(lrs["cooldown"])) >= 3
    # -0.95 and -0.9 count as improvements (torch's rel rule on a negative best), so the first
    # reduction comes after the third bad-looking value, not the second.
    assert np.all(lrs["negative_values_rel"][:5] == 0.1) and lrs["negative_values_rel"][5] == 0.05


def test_value_given_at_update_k_changes_the_scale_from_update_k_plus_1():
    tx = reduce_lr_on_plateau(factor=0.5, patience=0, learning_rate=1.0)
    state = tx.init(None)
    seen = []
    for value in [1.0, 2.0, 3.0]:
        updates, state = tx.update(jnp.ones(()), state, value=value)
        seen.append(float(updates))
    assert seen == [1.0, 1.0, 0.5]
    assert float(state.scale) == 0.25


def test_state_is_a_typed_named_tuple_with_stable_dtypes():
    tx = reduce_lr_on_plateau(mode="max", learning_rate=0.1)
    state = tx.init(jnp.zeros(2, jnp.float32))
    assert isinstance(state, ReduceLROnPlateauState)
    assert state.best == -math.inf and state.scale == 1.0
    updates, new_state = jax.jit(tx.update)(jnp.ones(2, jnp.float32), state, value=jnp.float32(1))
    assert updates.dtype == jnp.float32  # the scale does not promote float32 updates
    assert jax.tree.map(lambda x: x.dtype, new_state) == jax.tree.map(lambda x: x.dtype, state)
    assert new_state.num_bad_epochs.dtype == jnp.int32


def test_update_without_value_applies_the_scale_and_leaves_the_rule_alone():
    """Without ``value=`` (the per-epoch form, values given by step_plateau) the state is
    returned as it came: torch's optimizer.step() without a scheduler.step()."""
    tx = optkit.chain(optkit.sgd(0.1), reduce_lr_on_plateau(learning_rate=0.1))
    state = tx.init(jnp.zeros(2))
    state = (state[0], state[1]._replace(scale=jnp.asarray(0.5), best=jnp.asarray(2.0)))
    updates, new_state = jax.jit(tx.update)(jnp.ones(2), state, jnp.zeros(2))
    np.testing.assert_array_equal(updates, np.full(2, -0.05))
    jax.tree.map(np.testing.assert_array_equal, new_state, state)


def test_non_scalar_value_is_rejected():
    tx = reduce_lr_on_plateau(learning_rate=0.1)
    with pytest.raises(ValueError, match="value must be a scalar"):
        tx.update(jnp.ones(2), tx.init(None), value=jnp.ones(2))


def test_learning_rate_is_required_and_must_be_a_number():
    with pytest.raises(TypeError, match="learning_rate"):
        reduce_lr_on_plateau()
    with pytest.raises(TypeError, match="not a schedule"):
        reduce_lr_on_plateau(learning_rate=lambda count: 0.1)


NEGATIVE = r"must be in \[0.0, inf\]"
BAD = [
    ("mode", "minimum", "must be one of 'min', 'max'"),
    ("factor", 1.0, r"must be in \[0.0, 1.0\)"),
    ("factor", -0.1, r"must be in \[0.0, 1.0\)"),
    ("patience", -1, "must be a non-negative integer"),
    ("patience", 2.5, "must be a non-negative integer"),
    ("threshold", -1e-4, NEGATIVE),
    ("threshold_mode", "relative", "must be one of 'rel', 'abs'"),
    ("cooldown", -1, "must be a non-negative integer"),
    ("min_lr", -1e-6, NEGATIVE),
    ("eps", math.nan, NEGATIVE),
    ("learning_rate", -0.1, NEGATIVE),
]


@pytest.mark.parametrize(("argument", "bad", "message"), BAD, ids=[f"{a}-{b}" for a, b, _ in BAD])
def test_bad_argument_is_rejected_with_its_name(argument, bad, message):
    kwargs = {"learning_rate": 0.1, argument: bad}
    with pytest.raises(ValueError, match=rf"^{argument} {message}"):
        reduce_lr_on_plateau(**kwargs)
